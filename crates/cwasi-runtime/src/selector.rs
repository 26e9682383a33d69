//! The mode policy of `docs/architecture.md`: where a callee lives and whom
//! it trusts decide the data path; the guest never names a mode. The policy
//! is a pure function over plain values (what is loaded here, what the node
//! directory and the cluster registry say, the forced mode), so every rule
//! and every refusal is tested on its own, below.

use std::fmt;
use std::path::Path;

use crate::config::{Mode, ModeOverride};
use crate::error::{CallError, ErrorCode};
use crate::node_dir::EndpointRecord;
use crate::transport::remote::RemoteEndpoint;

/// The mode chosen for a call, and why; shown by `--explain` and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The data path.
    pub mode: Mode,
    /// Why this path, in words.
    pub reason: String,
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.mode, self.reason)
    }
}

/// A function of the target's name that this process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loaded<'a> {
    /// Its namespace.
    pub namespace: &'a str,
    /// The node-directory record it was embedded from, when it is a function
    /// another process of this node serves.
    pub adopted_from: Option<&'a EndpointRecord>,
}

/// Everything the policy looks at for one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placement<'a> {
    /// The caller's namespace.
    pub caller_namespace: &'a str,
    /// The callee's name.
    pub target: &'a str,
    /// A function of that name this process can run, if any.
    pub loaded: Option<Loaded<'a>>,
    /// Names of everything loaded, for the not-found message.
    pub loaded_names: &'a [&'a str],
    /// Live endpoints of that name on this node, the caller's namespace first.
    pub local: &'a [EndpointRecord],
    /// The node directory searched, if any.
    pub node_dir: Option<&'a Path>,
    /// Live announcements on other nodes, the caller's namespace first.
    pub remote: &'a [RemoteEndpoint],
    /// Why the cluster registry could not be asked, if it could not: then
    /// a callee found nowhere else may still be on another node, and the
    /// call fails with this error (`TRANSPORT`, `TIMEOUT`), not as unknown.
    pub registry_error: Option<&'a CallError>,
    /// The broker asked (its URL without password) and this node's name.
    pub broker: Option<(&'a str, &'a str)>,
    /// What probing the direct data plane found for the nodes of
    /// `remote`'s first namespace (`None`: not probed, for example
    /// without a broker or when the broker path is forced).
    pub direct: Option<&'a DirectProbe>,
    /// The forced mode, if any.
    pub mode: ModeOverride,
}

/// What the router found when it tried the direct data plane to the nodes
/// serving a remote callee: plain values, so that the policy stays pure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DirectProbe {
    /// The nodes reachable directly ("node 'n2' at tls://10.0.0.2:7000").
    pub reachable: Vec<String>,
    /// Why each other node is not.
    pub unreachable: Vec<String>,
    /// A node that refused this node's identity, or whose identity this
    /// node refused: the call fails with that, and never falls back.
    pub denied: Option<CallError>,
}

/// Where the chosen callee is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choice<'a> {
    /// The function loaded here.
    Embedded,
    /// This endpoint on this node.
    Local(&'a EndpointRecord),
    /// This announcement on another node, over the direct data plane.
    RemoteDirect(&'a RemoteEndpoint),
    /// This announcement on another node, through the broker.
    RemoteBroker(&'a RemoteEndpoint),
}

/// Applies the policy:
/// 1. embedded, if the callee's module is loaded here and shares the caller's
///    namespace;
/// 2. local, if a live endpoint is on this node;
/// 3. remote, if the callee is registered on another node: directly when
///    one of its nodes can be reached at its data address, else through
///    the broker (a refused identity is an error, never a fallback);
/// 4. otherwise "function X not found (looked in: ...)", or, when the
///    registry could not be asked, its error.
///
/// A forced mode is honoured only where it is possible.
pub(crate) fn select<'a>(p: &Placement<'a>) -> Result<(Selection, Choice<'a>), CallError> {
    let target = p.target;
    let caller_ns = p.caller_namespace;
    let wants = |m: Mode| p.mode.allows(m);
    let forced = |reason: String| match p.mode {
        ModeOverride::Auto => reason,
        ModeOverride::Force(_) | ModeOverride::AnyRemote => format!("forced; {reason}"),
    };
    let chosen = |mode: Mode, reason: String| Selection {
        mode,
        reason: forced(reason),
    };

    let embeddable = p.loaded.filter(|f| f.namespace == caller_ns);
    if let (Some(f), true) = (embeddable, wants(Mode::Embedded)) {
        let ns = f.namespace;
        let reason = match f.adopted_from {
            Some(r) => format!(
                "'{target}' is served on this node (pid {}) in the caller's namespace '{ns}'; \
                 its module ({}) was loaded from the node directory and runs in this process",
                r.pid, r.digest
            ),
            None => format!("'{target}' is loaded in this process and shares namespace '{ns}'"),
        };
        return Ok((chosen(Mode::Embedded, reason), Choice::Embedded));
    }
    if p.mode == ModeOverride::Force(Mode::Embedded) {
        let elsewhere = p
            .loaded
            .map(|f| f.namespace)
            .or_else(|| p.local.first().map(|r| r.namespace.as_str()))
            .filter(|ns| *ns != caller_ns);
        let why = match elsewhere {
            Some(ns) => format!(
                "'{target}' is in namespace '{ns}' and the caller in '{caller_ns}'; \
                 functions of different namespaces never share a VM"
            ),
            None => format!(
                "the module of '{target}' is not loaded here ({})",
                looked_in(p)
            ),
        };
        return Err(CallError::new(
            ErrorCode::Denied,
            format!("mode 'embedded' is impossible: {why}"),
        ));
    }
    if let (Some(r), true) = (p.local.first(), wants(Mode::Local)) {
        let mut reason = format!(
            "'{target}' is served on this node (namespace '{}', pid {}, {})",
            r.namespace,
            r.pid,
            r.socket.display()
        );
        if p.mode == ModeOverride::Auto {
            match p.loaded {
                Some(f) => reason.push_str(&format!(
                    "; not embedded: it is in namespace '{}', the caller in '{caller_ns}'",
                    f.namespace
                )),
                None => reason.push_str("; its module is not loaded in this process"),
            }
        }
        return Ok((chosen(Mode::Local, reason), Choice::Local(r)));
    }
    if let Some(r) = p.remote.first() {
        let nodes = || {
            let ns = &r.namespace;
            let mut n: Vec<&str> = p
                .remote
                .iter()
                .filter(|e| &e.namespace == ns)
                .map(|e| e.node.as_str())
                .collect();
            n.dedup();
            format!(
                "'{target}' is served on node(s) {} (namespace '{ns}')",
                n.join(", ")
            )
        };
        let not_here = if p.mode == ModeOverride::Auto {
            "; it is neither loaded in this process nor served on this node"
        } else {
            ""
        };
        let probe = p.direct.cloned().unwrap_or_default();
        if !probe.reachable.is_empty() && wants(Mode::RemoteDirect) {
            let reason = format!(
                "{}, reachable directly: {}{not_here}",
                nodes(),
                probe.reachable.join(", ")
            );
            return Ok((chosen(Mode::RemoteDirect, reason), Choice::RemoteDirect(r)));
        }
        if let (Some(e), true) = (&probe.denied, wants(Mode::RemoteDirect)) {
            if p.mode != ModeOverride::Force(Mode::RemoteBroker) {
                return Err(e.clone());
            }
        }
        let why_not = match (p.direct, probe.unreachable.is_empty()) {
            (None, _) => "the direct path was not tried".to_string(),
            (Some(_), true) => "no node serving it announces a data address".to_string(),
            (Some(_), false) => probe.unreachable.join("; "),
        };
        if wants(Mode::RemoteBroker) {
            let reason = format!(
                "{}, through the broker: not directly, {why_not}{not_here}",
                nodes()
            );
            return Ok((chosen(Mode::RemoteBroker, reason), Choice::RemoteBroker(r)));
        }
        if p.mode == ModeOverride::Force(Mode::RemoteDirect) {
            return Err(CallError::new(
                ErrorCode::Denied,
                format!(
                    "mode 'remote-direct' is impossible: {}, but {why_not}",
                    nodes()
                ),
            ));
        }
    }
    let any_remote = wants(Mode::RemoteDirect) || wants(Mode::RemoteBroker);
    if let (Some(e), true) = (p.registry_error, any_remote) {
        return Err(CallError::new(
            e.code,
            format!(
                "function '{target}' not found on this node, and the cluster registry could \
                 not be asked: {} ({})",
                e.message,
                looked_in(p)
            ),
        ));
    }
    let forced_mode = match p.mode {
        ModeOverride::Auto => None,
        ModeOverride::Force(m) => Some(m.name()),
        ModeOverride::AnyRemote => Some("remote"),
    };
    if let Some(m) = forced_mode {
        return Err(CallError::new(
            ErrorCode::Denied,
            format!(
                "mode '{m}' is impossible: no {m} endpoint serves '{target}' ({})",
                looked_in(p)
            ),
        ));
    }
    let detail = match p.loaded {
        Some(f) => format!(
            ": it is loaded here in namespace '{}', but the caller is in '{caller_ns}', \
             so it cannot be embedded, and no process on this node serves it",
            f.namespace
        ),
        None => String::new(),
    };
    Err(CallError::new(
        ErrorCode::UnknownFunction,
        format!("function '{target}' not found{detail} ({})", looked_in(p)),
    ))
}

/// "looked in: ...": every place the selector searched.
fn looked_in(p: &Placement<'_>) -> String {
    let mut places = vec![format!("this process [{}]", p.loaded_names.join(", "))];
    match p.node_dir {
        Some(d) => places.push(format!("node directory {}", d.display())),
        None => places.push("no node directory".to_string()),
    }
    match p.broker {
        Some((url, node)) => places.push(format!("cluster registry at {url} (this node: {node})")),
        None => places.push("no broker (CWASI_REDIS_URL unset)".to_string()),
    }
    format!("looked in: {}", places.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ns: &str) -> EndpointRecord {
        EndpointRecord::sample(ns)
    }

    fn remote(ns: &str) -> RemoteEndpoint {
        RemoteEndpoint {
            namespace: ns.into(),
            node: "n2".into(),
            data_addr: Some("tls://10.0.0.2:7000".into()),
        }
    }

    /// A placement with nothing anywhere, for the caller in namespace "a".
    fn nowhere() -> Placement<'static> {
        Placement {
            caller_namespace: "a",
            target: "b",
            loaded: None,
            loaded_names: &["x"],
            local: &[],
            node_dir: Some(Path::new("/run/cwasi")),
            remote: &[],
            registry_error: None,
            broker: Some(("redis://h:1", "n1")),
            direct: None,
            mode: ModeOverride::Auto,
        }
    }

    fn loaded(ns: &str) -> Option<Loaded<'_>> {
        Some(Loaded {
            namespace: ns,
            adopted_from: None,
        })
    }

    const FORCE_EMBEDDED: ModeOverride = ModeOverride::Force(Mode::Embedded);
    const FORCE_LOCAL: ModeOverride = ModeOverride::Force(Mode::Local);
    const FORCE_REMOTE: ModeOverride = ModeOverride::AnyRemote;
    const FORCE_DIRECT: ModeOverride = ModeOverride::Force(Mode::RemoteDirect);
    const FORCE_BROKER: ModeOverride = ModeOverride::Force(Mode::RemoteBroker);

    /// The mode chosen, or the error code, and a word the reason must hold.
    fn outcome(p: &Placement<'_>) -> (Result<Mode, ErrorCode>, String) {
        match select(p) {
            Ok((s, choice)) => {
                let expected = match choice {
                    Choice::Embedded => Mode::Embedded,
                    Choice::Local(_) => Mode::Local,
                    Choice::RemoteDirect(_) => Mode::RemoteDirect,
                    Choice::RemoteBroker(_) => Mode::RemoteBroker,
                };
                assert_eq!(s.mode, expected, "the choice matches the selection");
                (Ok(s.mode), s.reason)
            }
            Err(e) => (Err(e.code), e.message),
        }
    }

    #[test]
    fn every_rule_and_refusal() {
        let local_a = [record("a")];
        let local_c = [record("c")];
        let remote_a = [remote("a")];
        let down = CallError::new(ErrorCode::Transport, "down");
        let slow = CallError::new(ErrorCode::Timeout, "slow");
        let adopted = record("a");
        let reachable = DirectProbe {
            reachable: vec!["node 'n2' at tls://10.0.0.2:7000".into()],
            ..DirectProbe::default()
        };
        let unreachable = DirectProbe {
            unreachable: vec!["node 'n2' at tls://10.0.0.2:7000: cannot connect: no route".into()],
            ..DirectProbe::default()
        };
        let refused = DirectProbe {
            denied: Some(CallError::new(
                ErrorCode::Denied,
                "mutual TLS refused: UnknownCA",
            )),
            ..DirectProbe::default()
        };
        type Case<'a> = (&'a str, Placement<'a>, Result<Mode, ErrorCode>, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (
                "1: loaded in the caller's namespace -> embedded",
                Placement { loaded: loaded("a"), local: &local_a, remote: &remote_a, ..nowhere() },
                Ok(Mode::Embedded),
                "shares namespace 'a'",
            ),
            (
                "1: served here in the caller's namespace, module adopted -> embedded",
                Placement {
                    loaded: Some(Loaded { namespace: "a", adopted_from: Some(&adopted) }),
                    local: &local_a,
                    ..nowhere()
                },
                Ok(Mode::Embedded),
                "loaded from the node directory",
            ),
            (
                "2: loaded in another namespace, served here -> local",
                Placement { loaded: loaded("c"), local: &local_c, ..nowhere() },
                Ok(Mode::Local),
                "not embedded: it is in namespace 'c'",
            ),
            (
                "2: not loaded, served here -> local",
                Placement { local: &local_a, remote: &remote_a, ..nowhere() },
                Ok(Mode::Local),
                "its module is not loaded in this process",
            ),
            (
                "3: only on another node, not probed -> remote-broker",
                Placement { remote: &remote_a, ..nowhere() },
                Ok(Mode::RemoteBroker),
                "served on node(s) n2",
            ),
            (
                "3: on another node, reachable at its data address -> remote-direct",
                Placement { remote: &remote_a, direct: Some(&reachable), ..nowhere() },
                Ok(Mode::RemoteDirect),
                "reachable directly: node 'n2' at tls://10.0.0.2:7000",
            ),
            (
                "3: on another node, its data address unreachable -> remote-broker, says why",
                Placement { remote: &remote_a, direct: Some(&unreachable), ..nowhere() },
                Ok(Mode::RemoteBroker),
                "through the broker: not directly, node 'n2' at tls://10.0.0.2:7000: cannot connect",
            ),
            (
                "3: a node refused this node's certificate -> denied, no fallback",
                Placement { remote: &remote_a, direct: Some(&refused), ..nowhere() },
                Err(ErrorCode::Denied),
                "UnknownCA",
            ),
            (
                "forced remote-broker, though reachable directly -> remote-broker",
                Placement { remote: &remote_a, direct: Some(&reachable), mode: FORCE_BROKER, ..nowhere() },
                Ok(Mode::RemoteBroker),
                "forced; ",
            ),
            (
                "forced remote-broker, though refused directly -> remote-broker",
                Placement { remote: &remote_a, direct: Some(&refused), mode: FORCE_BROKER, ..nowhere() },
                Ok(Mode::RemoteBroker),
                "forced; ",
            ),
            (
                "forced remote-direct, unreachable -> denied, says why",
                Placement { remote: &remote_a, direct: Some(&unreachable), mode: FORCE_DIRECT, ..nowhere() },
                Err(ErrorCode::Denied),
                "mode 'remote-direct' is impossible",
            ),
            (
                "4: nowhere -> unknown function, with where it looked",
                nowhere(),
                Err(ErrorCode::UnknownFunction),
                "looked in: this process [x], node directory /run/cwasi, cluster registry at redis://h:1",
            ),
            (
                "4: the registry unreachable -> its error, not unknown",
                Placement { registry_error: Some(&down), ..nowhere() },
                Err(ErrorCode::Transport),
                "not found on this node, and the cluster registry could not be asked: down",
            ),
            (
                "4: the registry too slow for the deadline -> timeout",
                Placement { registry_error: Some(&slow), mode: FORCE_REMOTE, ..nowhere() },
                Err(ErrorCode::Timeout),
                "could not be asked: slow (looked in: ",
            ),
            (
                "forced local, the registry unreachable -> denied, as it does not matter",
                Placement { registry_error: Some(&down), mode: FORCE_LOCAL, ..nowhere() },
                Err(ErrorCode::Denied),
                "no local endpoint",
            ),
            (
                "4: loaded in another namespace and served nowhere -> unknown, says why",
                Placement { loaded: loaded("c"), ..nowhere() },
                Err(ErrorCode::UnknownFunction),
                "cannot be embedded",
            ),
            (
                "4: no node directory, no broker -> says so",
                Placement { node_dir: None, broker: None, ..nowhere() },
                Err(ErrorCode::UnknownFunction),
                "no node directory, no broker",
            ),
            (
                "forced embedded, loaded here -> embedded, marked forced",
                Placement { loaded: loaded("a"), mode: FORCE_EMBEDDED, ..nowhere() },
                Ok(Mode::Embedded),
                "forced; ",
            ),
            (
                "forced embedded across namespaces -> denied",
                Placement { loaded: loaded("c"), local: &local_c, mode: FORCE_EMBEDDED, ..nowhere() },
                Err(ErrorCode::Denied),
                "never share a VM",
            ),
            (
                "forced embedded, served here in another namespace only -> denied",
                Placement { local: &local_c, mode: FORCE_EMBEDDED, ..nowhere() },
                Err(ErrorCode::Denied),
                "namespace 'c'",
            ),
            (
                "forced embedded, not loaded -> denied",
                Placement { remote: &remote_a, mode: FORCE_EMBEDDED, ..nowhere() },
                Err(ErrorCode::Denied),
                "is not loaded here",
            ),
            (
                "forced local, though embeddable -> local",
                Placement { loaded: loaded("a"), local: &local_a, mode: FORCE_LOCAL, ..nowhere() },
                Ok(Mode::Local),
                "forced; ",
            ),
            (
                "forced local, not served here -> denied",
                Placement { loaded: loaded("a"), remote: &remote_a, mode: FORCE_LOCAL, ..nowhere() },
                Err(ErrorCode::Denied),
                "no local endpoint",
            ),
            (
                "forced remote, though served here -> remote",
                Placement { local: &local_a, remote: &remote_a, mode: FORCE_REMOTE, ..nowhere() },
                Ok(Mode::RemoteBroker),
                "forced; ",
            ),
            (
                "forced remote, on no other node -> denied",
                Placement { loaded: loaded("a"), local: &local_a, mode: FORCE_REMOTE, ..nowhere() },
                Err(ErrorCode::Denied),
                "no remote endpoint",
            ),
        ];
        for (name, placement, mode, needle) in cases {
            let (got, reason) = outcome(&placement);
            assert_eq!(got, mode, "{name}: {reason}");
            assert!(
                reason.contains(needle),
                "{name}: '{needle}' not in: {reason}"
            );
        }
    }

    #[test]
    fn the_first_candidate_is_taken() {
        let local = [record("a"), record("c")];
        let remote = [remote("a"), remote("c")];
        let p = Placement {
            local: &local,
            ..nowhere()
        };
        assert_eq!(select(&p).unwrap().1, Choice::Local(&local[0]));
        let p = Placement {
            remote: &remote,
            ..nowhere()
        };
        assert_eq!(select(&p).unwrap().1, Choice::RemoteBroker(&remote[0]));
    }
}
