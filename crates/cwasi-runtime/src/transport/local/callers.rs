//! Who a local connection's requests come from, as far as the peer's
//! credentials prove it. A peer of the server's own uid or root may
//! assert any caller identity: it could run any function of this user
//! anyway. A peer of another uid that the server admits (`--allow-uid`)
//! is the caller `uid.<uid>/@<node>`, whatever it claims. Either way the
//! node is this one: a local peer runs here.

use std::sync::Arc;

use crate::error::{CallError, ErrorCode};
use crate::identity::{CallerIdentity, ClaimMemo};

/// The callers of one connection.
pub(super) struct PeerCallers {
    /// This node's name.
    node: Arc<str>,
    /// The one caller of a peer that may not assert identities.
    fixed: Option<Arc<CallerIdentity>>,
    /// The last claim of a peer that may, and the caller it resolved to.
    last: ClaimMemo,
}

impl PeerCallers {
    /// The callers of a peer of `uid`, on `node`.
    pub fn new(uid: u32, node: Arc<str>) -> Result<PeerCallers, CallError> {
        let asserts = uid == 0 || uid == rustix::process::getuid().as_raw();
        let fixed = if asserts {
            None
        } else {
            let id =
                CallerIdentity::new(&format!("uid.{uid}"), None, &node).map_err(|e| denied(&e))?;
            Some(Arc::new(id))
        };
        Ok(PeerCallers {
            node,
            fixed,
            last: ClaimMemo::default(),
        })
    }

    /// The caller of a request that claims `claim`.
    pub fn identify(&mut self, claim: &[u8]) -> Result<Arc<CallerIdentity>, CallError> {
        if let Some(id) = &self.fixed {
            return Ok(id.clone());
        }
        let node = &self.node;
        self.last.resolve(claim, |claim| {
            CallerIdentity::parse(claim)
                .and_then(|id| id.on_node(node))
                .map_err(|e| denied(&e))
        })
    }
}

fn denied(e: &dyn std::fmt::Display) -> CallError {
    CallError::new(ErrorCode::Denied, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_uid_asserts_and_others_are_named_by_uid() {
        let own = rustix::process::getuid().as_raw();
        let mut callers = PeerCallers::new(own, "n1".into()).unwrap();
        let id = callers.identify(b"ns-a/f@elsewhere").unwrap();
        assert_eq!(id.as_str(), "ns-a/f@n1");
        assert!(Arc::ptr_eq(
            &id,
            &callers.identify(b"ns-a/f@elsewhere").unwrap()
        ));
        assert_eq!(callers.identify(b"ns-b/@n1").unwrap().as_str(), "ns-b/@n1");
        let e = callers.identify(b"no identity").unwrap_err();
        assert_eq!(e.code, ErrorCode::Denied);

        let other = if own == 4242 { 4343 } else { 4242 };
        let mut callers = PeerCallers::new(other, "n1".into()).unwrap();
        let id = callers.identify(b"ns-a/f@n1").unwrap();
        assert_eq!(id.as_str(), format!("uid.{other}/@n1"));
    }
}
