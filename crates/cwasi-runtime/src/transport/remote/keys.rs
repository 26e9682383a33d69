//! Every key name of remote mode, derived in this one place
//! (`docs/protocol.md`, "Keys"). The keys of a call are derived from the
//! function (namespace and name) and the request id, on the caller's side
//! and on the server's alike; a stream entry names no key. The function's
//! names and the id are checked (letters, digits, `-`, `_`, `.`; no `:`,
//! no braces), so a derived key never leaves its function's prefix: a
//! server can touch the keys of the calls to its own function, and no
//! other key.
//!
//! Version 4: every key of a function and of its calls carries the hash
//! tag `{<ns>/<name>}`, so that all the keys one operation touches (a
//! call's `XADD` and `BLPOP`, an answer's `MULTI`, an announcement) hash to
//! one slot of a Redis Cluster.

use cwasi_abi::validate_name;

/// Longest request id, in bytes.
pub(super) const MAX_REQUEST_ID_LEN: usize = 128;

/// Why a function's or a call's keys could not be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum KeyError {
    /// The namespace or the function name is not a valid name.
    #[error("{0}")]
    BadName(String),
    /// The request id is empty, too long or has a byte outside the
    /// allowed set.
    #[error(
        "request id {shown:?} is not 1 to {MAX_REQUEST_ID_LEN} letters, digits, '-', '_' or '.'"
    )]
    BadId {
        /// The id's first characters.
        shown: String,
    },
}

/// The hash tag of a function's keys: `{<ns>/<name>}`, both checked
/// names (which hold neither braces nor `/`).
fn tag(ns: &str, name: &str) -> String {
    format!("{{{ns}/{name}}}")
}

/// The request stream of a function.
fn stream_key(ns: &str, name: &str) -> String {
    format!("cwasi:{}:stream", tag(ns, name))
}

/// The nodes serving a function, scored by when their announcement
/// expires (milliseconds since the epoch).
pub(super) fn fn_nodes_key(ns: &str, name: &str) -> String {
    format!("cwasi:{}:nodes", tag(ns, name))
}

/// The endpoint records of a function, by node; in the slot of
/// [`fn_nodes_key`], so that an announcement updates both at once.
pub(super) fn fn_records_key(ns: &str, name: &str) -> String {
    format!("cwasi:{}:records", tag(ns, name))
}

/// The namespaces a function name is served in (a slot of its own, by the
/// name: one `SADD` or `SMEMBERS` touches it alone).
pub(super) fn fn_ns_key(name: &str) -> String {
    format!("cwasi:{{{name}}}:namespaces")
}

/// The version of the broker's key layout and entries (`docs/protocol.md`,
/// "Versions"): every key of a function under one hash tag, and signed
/// request entries. Callers and servers of other versions do not meet.
pub const BROKER_VERSION: u32 = 4;

/// Version 3's keys, read only to tell a caller that a function is served
/// by a node of that version (`docs/protocol.md`, "Versions").
pub(super) mod v3 {
    /// The namespaces a function name was served in.
    pub(in super::super) fn fn_ns_key(name: &str) -> String {
        format!("cwasi:fn-ns:{name}")
    }

    /// The nodes serving a function.
    pub(in super::super) fn fn_nodes_key(ns: &str, name: &str) -> String {
        format!("cwasi:fn-nodes:{ns}:{name}")
    }
}

/// Checks a request id: what [`validate_name`] accepts, at most
/// [`MAX_REQUEST_ID_LEN`] bytes.
pub(super) fn check_request_id(id: &str) -> Result<(), KeyError> {
    if id.len() <= MAX_REQUEST_ID_LEN && validate_name(id).is_ok() {
        return Ok(());
    }
    Err(KeyError::BadId {
        shown: id.chars().take(40).collect(),
    })
}

/// `text` made fit for a request id: bytes a name may not have become `_`,
/// and it is cut to `max` bytes.
pub(super) fn id_part(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| {
            let mut buf = [0; 4];
            match validate_name(c.encode_utf8(&mut buf)) {
                Ok(()) => c,
                Err(_) => '_',
            }
        })
        .collect()
}

/// The keys of one function: its request stream, and the scope of the keys
/// of its calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FnKeys {
    stream: String,
    /// `cwasi:{<ns>/<name>}`.
    scope: String,
}

impl FnKeys {
    /// The keys of `name` in namespace `ns`, both checked names.
    pub(super) fn new(ns: &str, name: &str) -> Result<FnKeys, KeyError> {
        for n in [ns, name] {
            validate_name(n).map_err(|e| KeyError::BadName(e.to_string()))?;
        }
        Ok(FnKeys {
            stream: stream_key(ns, name),
            scope: format!("cwasi:{}", tag(ns, name)),
        })
    }

    /// The function's request stream, `cwasi:{<ns>/<name>}:stream`.
    pub(super) fn stream(&self) -> &str {
        &self.stream
    }

    /// The keys of the call with request id `id`, if the id is valid.
    pub(super) fn call(&self, id: &str) -> Result<CallKeys, KeyError> {
        check_request_id(id)?;
        Ok(CallKeys {
            scope: self.scope.clone(),
            id: id.to_string(),
        })
    }
}

/// The keys of one call: each is `cwasi:{<ns>/<name>}:<kind>:<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CallKeys {
    /// `cwasi:{<ns>/<name>}`.
    scope: String,
    /// The request id, checked.
    id: String,
}

impl CallKeys {
    fn key(&self, kind: &str) -> String {
        format!("{}:{kind}:{}", self.scope, self.id)
    }

    /// The reply list, which the server pushes the answer on.
    pub(super) fn reply(&self) -> String {
        self.key("reply")
    }

    /// The payload of a large request.
    pub(super) fn payload(&self) -> String {
        self.key("payload")
    }

    /// The response to the request, when it is large.
    pub(super) fn response(&self) -> String {
        self.key("response")
    }

    /// Which consumer runs the request, once reclaimed.
    pub(super) fn claim(&self) -> String {
        self.key("claim")
    }

    /// The stream entry that took a signed request's id first, until its
    /// deadline: a copy of the entry added again (a replay) finds another
    /// entry there and runs nothing.
    pub(super) fn taken(&self) -> String {
        self.key("taken")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_keys_stay_in_their_functions_scope() {
        let f = FnKeys::new("ns", "echo").unwrap();
        assert_eq!(f.stream(), "cwasi:{ns/echo}:stream");
        let k = f.call("n1-7-ab-0").unwrap();
        assert_eq!(k.reply(), "cwasi:{ns/echo}:reply:n1-7-ab-0");
        assert_eq!(k.payload(), "cwasi:{ns/echo}:payload:n1-7-ab-0");
        assert_eq!(k.response(), "cwasi:{ns/echo}:response:n1-7-ab-0");
        assert_eq!(k.claim(), "cwasi:{ns/echo}:claim:n1-7-ab-0");
        assert_eq!(fn_nodes_key("ns", "echo"), "cwasi:{ns/echo}:nodes");
        assert_eq!(fn_records_key("ns", "echo"), "cwasi:{ns/echo}:records");
        assert_eq!(fn_ns_key("echo"), "cwasi:{echo}:namespaces");
        // The same id on another function's stream names other keys.
        let other = FnKeys::new("ns", "other")
            .unwrap()
            .call("n1-7-ab-0")
            .unwrap();
        assert_ne!(other.reply(), k.reply());
        for bad in [
            "",
            "a:b",
            "a b",
            "x*",
            "../x",
            "{x}",
            "é",
            &"x".repeat(MAX_REQUEST_ID_LEN + 1),
        ] {
            assert!(
                matches!(f.call(bad), Err(KeyError::BadId { .. })),
                "{bad:?}"
            );
        }
        assert!(f.call(&"x".repeat(MAX_REQUEST_ID_LEN)).is_ok());
        assert!(matches!(
            FnKeys::new("a:b", "echo"),
            Err(KeyError::BadName(_))
        ));
        assert!(matches!(FnKeys::new("ns", ""), Err(KeyError::BadName(_))));
        assert_eq!(id_part("node:1 é/x", 8), "node_1__");
        assert!(check_request_id(&id_part(&"ü:".repeat(200), 64)).is_ok());
    }

    /// Every group of keys that one operation touches hashes to one slot,
    /// as a real Redis Cluster computes it.
    #[test]
    fn each_operation_touches_one_slot_of_a_cluster() {
        let cluster = test_support::RedisCluster::start(3, 1);
        let slot = |key: &str| {
            cluster
                .slot(key)
                .unwrap_or_else(|| panic!("no slot for {key}"))
        };
        for (ns, name) in [("ns", "echo"), ("team-a", "resize.v2"), ("x", "y")] {
            let f = FnKeys::new(ns, name).unwrap();
            let k = f.call("node1-1f-2a-0").unwrap();
            let function = [
                f.stream().to_string(),
                k.reply(),
                k.payload(),
                k.response(),
                k.claim(),
                fn_nodes_key(ns, name),
                fn_records_key(ns, name),
            ];
            let first = slot(&function[0]);
            for key in &function {
                assert_eq!(
                    slot(key),
                    first,
                    "{key} is not in the slot of {}",
                    function[0]
                );
            }
        }
        // The namespaces of a name: one key, its own slot.
        assert!(slot(&fn_ns_key("echo")) < 16384);
    }
}
