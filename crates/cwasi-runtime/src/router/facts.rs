//! What a path is chosen from, as plain values: the placement facts one
//! look at the node directory and the registry found, their fingerprint
//! (whether a look found anything new), and where a full local server's
//! calls spill. Pure, with table tests; the looking and the building of
//! clients are `choose.rs`'s.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use crate::error::CallError;
use crate::node_dir::EndpointRecord;
use crate::selector::{select, Choice, Placement, Selection};
use crate::transport::remote::RemoteEndpoint;

/// Where a callee is, as one look at the node directory and the registry
/// found it: what a path is chosen from.
#[derive(Clone)]
pub(super) struct Facts {
    /// Its live records on this node, the caller's namespace first.
    pub local: Vec<EndpointRecord>,
    /// Its announcements on other nodes (asked only when nothing on this
    /// node serves the call), the caller's namespace first.
    pub remote: Vec<RemoteEndpoint>,
    /// Why the registry could not be asked, if it could not.
    pub registry_error: Option<CallError>,
}

impl Facts {
    /// A digest of the facts a choice depends on: the same digest, the
    /// same choice, so a route whose callee did not move is not chosen
    /// again (and its peers are not probed again).
    pub fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        for r in &self.local {
            (&r.namespace, &r.socket, &r.digest, r.embed.is_some()).hash(&mut h);
        }
        0xff_u8.hash(&mut h);
        for r in &self.remote {
            (&r.namespace, &r.node, &r.data_addr).hash(&mut h);
        }
        self.registry_error
            .as_ref()
            .map(|e| e.code as i32)
            .hash(&mut h);
        h.finish()
    }
}

/// Where calls to the local server `local` spill while this caller's calls
/// fill its call slots: the path the selector picks among the other nodes
/// (the next tier), if the server says how many slots it has and the
/// callee is served on another node of the same namespace. Pure policy:
/// the same placement with this node's tier left out.
pub(super) fn spill_tier<'a>(
    placement: &Placement<'a>,
    local: &EndpointRecord,
) -> Option<(Selection, Choice<'a>)> {
    local.slots?;
    let next = Placement {
        loaded: None,
        local: &[],
        ..*placement
    };
    match select(&next) {
        Ok((s, c @ (Choice::RemoteDirect(r) | Choice::RemoteBroker(r))))
            if r.namespace == local.namespace =>
        {
            Some((s, c))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Mode, ModeOverride};
    use crate::error::ErrorCode;
    use crate::selector::DirectProbe;

    fn record(ns: &str, slots: Option<u32>) -> EndpointRecord {
        EndpointRecord {
            slots,
            ..EndpointRecord::sample(ns)
        }
    }

    fn remote(ns: &str, addr: Option<&str>) -> RemoteEndpoint {
        RemoteEndpoint {
            namespace: ns.into(),
            node: "n2".into(),
            data_addr: addr.map(String::from),
        }
    }

    fn placement<'a>(
        local: &'a [EndpointRecord],
        remote: &'a [RemoteEndpoint],
        direct: Option<&'a DirectProbe>,
    ) -> Placement<'a> {
        Placement {
            caller_namespace: "a",
            target: "b",
            loaded: None,
            loaded_names: &[],
            local,
            node_dir: None,
            remote,
            registry_error: None,
            broker: Some(("redis://r", "n1")),
            direct,
            mode: ModeOverride::Auto,
        }
    }

    #[test]
    fn a_full_local_server_spills_to_the_next_tier_of_its_namespace_only() {
        let reachable = DirectProbe {
            reachable: vec!["node 'n2' at tcp://10.0.0.2:7000".into()],
            ..DirectProbe::default()
        };
        let nothing = DirectProbe::default();
        let with_slots = [record("a", Some(4))];
        let no_slots = [record("a", None)];
        let direct_a = [remote("a", Some("tcp://10.0.0.2:7000"))];
        let broker_a = [remote("a", None)];
        let direct_c = [remote("c", Some("tcp://10.0.0.2:7000"))];
        let cases: [(&str, Placement<'_>, Option<Mode>); 5] = [
            (
                "direct node of the same namespace",
                placement(&with_slots, &direct_a, Some(&reachable)),
                Some(Mode::RemoteDirect),
            ),
            (
                "only the broker reaches it",
                placement(&with_slots, &broker_a, Some(&nothing)),
                Some(Mode::RemoteBroker),
            ),
            (
                "the server says nothing of its slots",
                placement(&no_slots, &direct_a, Some(&reachable)),
                None,
            ),
            (
                "another namespace serves it elsewhere",
                placement(&with_slots, &direct_c, Some(&reachable)),
                None,
            ),
            (
                "served nowhere else",
                placement(&with_slots, &[], None),
                None,
            ),
        ];
        for (what, p, expected) in cases {
            let got = spill_tier(&p, &p.local[0]).map(|(s, _)| s.mode);
            assert_eq!(got, expected, "{what}");
        }
    }

    #[test]
    fn the_fingerprint_changes_with_the_placement_and_only_with_it() {
        let facts = |local: Vec<EndpointRecord>, remote: Vec<RemoteEndpoint>| Facts {
            local,
            remote,
            registry_error: None,
        };
        let base = facts(vec![record("a", Some(4))], vec![remote("a", None)]);
        let same = facts(vec![record("a", Some(4))], vec![remote("a", None)]);
        assert_eq!(base.fingerprint(), same.fingerprint());
        let changes = [
            (
                "a local replica goes",
                facts(vec![], vec![remote("a", None)]),
            ),
            (
                "a data address appears",
                facts(
                    vec![record("a", Some(4))],
                    vec![remote("a", Some("tcp://x:1"))],
                ),
            ),
            (
                "a node withdraws",
                facts(vec![record("a", Some(4))], vec![]),
            ),
            (
                "another namespace's replica",
                facts(vec![record("c", Some(4))], vec![remote("a", None)]),
            ),
        ];
        for (what, changed) in changes {
            assert_ne!(base.fingerprint(), changed.fingerprint(), "{what}");
        }
        let unreachable = Facts {
            registry_error: Some(CallError::new(ErrorCode::Transport, "down")),
            ..base.clone()
        };
        assert_ne!(
            base.fingerprint(),
            unreachable.fingerprint(),
            "the registry fails"
        );
    }
}
