//! Who makes a call: the [`CallerIdentity`] every call carries to its
//! callee, on every path, and the callee's [`CallPolicy`] over it
//! (`docs/architecture.md`, "Trust model").
//!
//! An identity is asserted by the runtime, never by guest code: a route
//! is made for one calling function, and the route's transport sends that
//! function's identity with every call. How far a callee trusts it depends
//! on how the transport proves it (the peer's uid on a local socket, the
//! node certificate on the direct data plane, the entry's signature
//! through the broker).

pub(crate) mod policy;

use std::fmt;
use std::sync::Arc;

use cwasi_abi::MAX_NAME_LEN;

/// Longest identity on the wire: three names, a `/` and an `@`.
pub const MAX_IDENTITY_LEN: usize = 3 * MAX_NAME_LEN + 2;

/// Who calls: a function (or the host, which has no function name) of a
/// namespace, running on a node. Its text form, on the wire and in
/// messages, is `<namespace>/<function>@<node>`; the host's own calls
/// (`cwasi call`, `Runtime::call`) have an empty function:
/// `<namespace>/@<node>`. It says the same as the SPIFFE id
/// `spiffe://<cluster>/ns/<namespace>/fn/<function>` of a workload on
/// `<node>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CallerIdentity {
    /// The text form, kept whole: what is sent and compared.
    text: Box<str>,
    /// Where the function name starts in `text`.
    function_at: u16,
    /// Where the node name starts in `text` (after the `@`).
    node_at: u16,
}

/// Why a text is not a caller identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid caller identity {shown:?}: {why}")]
pub struct IdentityError {
    shown: String,
    why: String,
}

impl IdentityError {
    fn new(text: &[u8], why: impl Into<String>) -> IdentityError {
        let shown = String::from_utf8_lossy(&text[..text.len().min(96)]).into_owned();
        IdentityError {
            shown,
            why: why.into(),
        }
    }
}

impl CallerIdentity {
    /// The identity of `function` (`None`: the host) of `namespace` on
    /// `node`; each must follow the name rule.
    pub fn new(
        namespace: &str,
        function: Option<&str>,
        node: &str,
    ) -> Result<CallerIdentity, IdentityError> {
        let text = format!("{namespace}/{}@{node}", function.unwrap_or(""));
        CallerIdentity::parse(text.as_bytes())
    }

    /// Reads the text form, as it comes from another process or node:
    /// every part is checked against the name rule.
    pub fn parse(bytes: &[u8]) -> Result<CallerIdentity, IdentityError> {
        if bytes.len() > MAX_IDENTITY_LEN {
            return Err(IdentityError::new(
                bytes,
                format!("{} bytes, over {MAX_IDENTITY_LEN}", bytes.len()),
            ));
        }
        let text =
            std::str::from_utf8(bytes).map_err(|_| IdentityError::new(bytes, "not UTF-8"))?;
        let (namespace, rest) = text
            .split_once('/')
            .ok_or_else(|| IdentityError::new(bytes, "no '/' after the namespace"))?;
        let (function, node) = rest
            .split_once('@')
            .ok_or_else(|| IdentityError::new(bytes, "no '@' before the node"))?;
        let check = |what: &str, name: &str| {
            cwasi_abi::validate_name(name)
                .map_err(|e| IdentityError::new(bytes, format!("its {what}: {}", e.rule())))
        };
        check("namespace", namespace)?;
        if !function.is_empty() {
            check("function", function)?;
        }
        check("node", node)?;
        Ok(CallerIdentity {
            text: text.into(),
            function_at: (namespace.len() + 1) as u16,
            node_at: (namespace.len() + 1 + function.len() + 1) as u16,
        })
    }

    /// The same caller, as seen from `node` (a local server puts its own
    /// node: a local peer is on it, whatever it claims).
    pub fn on_node(&self, node: &str) -> Result<CallerIdentity, IdentityError> {
        if self.node() == node {
            return Ok(self.clone());
        }
        CallerIdentity::new(self.namespace(), self.function(), node)
    }

    /// The caller's namespace.
    pub fn namespace(&self) -> &str {
        &self.text[..self.function_at as usize - 1]
    }

    /// The calling function; `None` for the host's own calls.
    pub fn function(&self) -> Option<&str> {
        let f = &self.text[self.function_at as usize..self.node_at as usize - 1];
        (!f.is_empty()).then_some(f)
    }

    /// The node the caller runs on.
    pub fn node(&self) -> &str {
        &self.text[self.node_at as usize..]
    }

    /// The text form (`<namespace>/<function>@<node>`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The text form's bytes, as they are sent.
    pub fn as_bytes(&self) -> &[u8] {
        self.text.as_bytes()
    }
}

impl fmt::Display for CallerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for CallerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallerIdentity({})", self.text)
    }
}

/// The last claim a connection's peer made and the caller it resolved
/// to: a server resolves (parses and checks) a claim only when it differs
/// from the one before, so a connection whose caller does not change
/// resolves it once.
#[derive(Debug, Default)]
pub(crate) struct ClaimMemo(Option<(Box<[u8]>, Arc<CallerIdentity>)>);

impl ClaimMemo {
    /// The caller `claim` resolves to: the last one if the claim is the
    /// same, else what `resolve` makes of it (remembered if it is a
    /// caller).
    pub fn resolve<E>(
        &mut self,
        claim: &[u8],
        resolve: impl FnOnce(&[u8]) -> Result<CallerIdentity, E>,
    ) -> Result<Arc<CallerIdentity>, E> {
        if let Some((last, id)) = &self.0 {
            if **last == *claim {
                return Ok(id.clone());
            }
        }
        let id = Arc::new(resolve(claim)?);
        self.0 = Some((claim.into(), id.clone()));
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_parse_into_their_parts() {
        let id = CallerIdentity::parse(b"ns-a/resize@node1").unwrap();
        assert_eq!(
            (id.namespace(), id.function(), id.node()),
            ("ns-a", Some("resize"), "node1")
        );
        assert_eq!(id.to_string(), "ns-a/resize@node1");
        let host = CallerIdentity::new("ns-a", None, "n2").unwrap();
        assert_eq!(host.as_str(), "ns-a/@n2");
        assert_eq!((host.function(), host.node()), (None, "n2"));
        assert_eq!(host.on_node("n3").unwrap().as_str(), "ns-a/@n3");
        assert_eq!(CallerIdentity::parse(host.as_bytes()).unwrap(), host);
    }

    #[test]
    fn bad_identities_are_refused_with_the_reason() {
        let long = format!("{}/f@n", "a".repeat(MAX_IDENTITY_LEN));
        let cases: [(&[u8], &str); 9] = [
            (b"", "no '/'"),
            (b"ns", "no '/'"),
            (b"ns/f", "no '@'"),
            (b"/f@n", "its namespace"),
            (b"ns/f@", "its node"),
            (b"ns/.f@n", "its function"),
            (b"ns/f@n@m", "its node"),
            (b"n\xffs/f@n", "not UTF-8"),
            (long.as_bytes(), "over"),
        ];
        for (bytes, why) in cases {
            let e = CallerIdentity::parse(bytes).unwrap_err().to_string();
            assert!(e.contains(why), "{bytes:?}: {e}");
        }
        assert!(CallerIdentity::parse(b"a/b/c@n").is_err());
    }

    #[test]
    fn a_claim_is_resolved_once_while_it_does_not_change() {
        let mut memo = ClaimMemo::default();
        let mut resolved = 0;
        let mut read = |memo: &mut ClaimMemo, claim: &[u8]| {
            memo.resolve(claim, |c| {
                resolved += 1;
                CallerIdentity::parse(c)
            })
        };
        let a = read(&mut memo, b"ns/f@n").unwrap();
        let b = read(&mut memo, b"ns/f@n").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(read(&mut memo, b"ns/g@n").unwrap().function(), Some("g"));
        assert!(read(&mut memo, b"bad").is_err());
        assert_eq!(read(&mut memo, b"ns/g@n").unwrap().function(), Some("g"));
        assert_eq!(resolved, 3);
    }
}
