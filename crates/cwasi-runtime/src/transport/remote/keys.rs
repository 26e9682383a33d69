//! Every key name of remote mode, derived in this one place
//! (`docs/protocol.md`, "Keys"). The keys of a call are derived from the
//! function (namespace and name) and the request id, on the caller's side
//! and on the server's alike; a stream entry names no key. The function's
//! names and the id are checked (letters, digits, `-`, `_`, `.`; no `:`),
//! so a derived key never leaves its function's prefix: a server can touch
//! the keys of the calls to its own function, and no other key.

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

/// The request stream of a function.
fn stream_key(ns: &str, name: &str) -> String {
    format!("cwasi:fn:{ns}:{name}")
}

/// The functions a node serves.
pub(super) fn node_key(node: &str) -> String {
    format!("cwasi:node:{node}")
}

/// The nodes serving a function.
pub(super) fn fn_nodes_key(ns: &str, name: &str) -> String {
    format!("cwasi:fn-nodes:{ns}:{name}")
}

/// The namespaces a function name is served in.
pub(super) fn fn_ns_key(name: &str) -> String {
    format!("cwasi:fn-ns:{name}")
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
    /// `{ns}:{name}`.
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
            scope: format!("{ns}:{name}"),
        })
    }

    /// The function's request stream, `cwasi:fn:{ns}:{name}`.
    pub(super) fn stream(&self) -> &str {
        &self.stream
    }

    /// The keys of the call with request id `id`, if the id is valid.
    pub(super) fn call(&self, id: &str) -> Result<CallKeys, KeyError> {
        check_request_id(id)?;
        Ok(CallKeys {
            scoped_id: format!("{}:{id}", self.scope),
        })
    }
}

/// The keys of one call: each is `cwasi:{kind}:{ns}:{name}:{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CallKeys {
    /// `{ns}:{name}:{id}`.
    scoped_id: String,
}

impl CallKeys {
    /// The reply list, which the server pushes the answer on.
    pub(super) fn reply(&self) -> String {
        format!("cwasi:reply:{}", self.scoped_id)
    }

    /// The payload of a large request.
    pub(super) fn payload(&self) -> String {
        format!("cwasi:payload:{}", self.scoped_id)
    }

    /// The response to the request, when it is large.
    pub(super) fn response(&self) -> String {
        format!("cwasi:response:{}", self.scoped_id)
    }

    /// Which consumer runs the request, once reclaimed.
    pub(super) fn claim(&self) -> String {
        format!("cwasi:claim:{}", self.scoped_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_keys_stay_in_their_functions_scope() {
        let f = FnKeys::new("ns", "echo").unwrap();
        assert_eq!(f.stream(), "cwasi:fn:ns:echo");
        let k = f.call("n1-7-ab-0").unwrap();
        assert_eq!(k.reply(), "cwasi:reply:ns:echo:n1-7-ab-0");
        assert_eq!(k.payload(), "cwasi:payload:ns:echo:n1-7-ab-0");
        assert_eq!(k.response(), "cwasi:response:ns:echo:n1-7-ab-0");
        assert_eq!(k.claim(), "cwasi:claim:ns:echo:n1-7-ab-0");
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
}
