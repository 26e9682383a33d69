//! Who a direct connection's requests come from, as far as the peer's
//! certificate proves it: over mutual TLS, the node a request claims must
//! be one the peer's certificate names (`DNS:<node>`, from the cluster
//! CA), or the call is refused with `DENIED`. Over plain TCP, asked for
//! on a trusted network, a claim is taken as it is.

use std::sync::Arc;

use crate::error::{CallError, ErrorCode};
use crate::identity::{CallerIdentity, ClaimMemo};
use crate::transport::node_identity::NodeIdentity;

/// The callers of one connection.
pub(super) struct PeerCallers {
    /// The peer's certificate and what checks it (TLS), or `None` (plain).
    proof: Option<(Vec<u8>, Arc<NodeIdentity>)>,
    /// The last claim and the caller it resolved to: a connection whose
    /// caller does not change checks its certificate once.
    last: ClaimMemo,
}

impl PeerCallers {
    /// The callers of a peer that presented `cert`, checked by `identity`
    /// (both, over TLS), or of a plain TCP peer (neither).
    pub fn new(proof: Option<(Vec<u8>, Arc<NodeIdentity>)>) -> PeerCallers {
        PeerCallers {
            proof,
            last: ClaimMemo::default(),
        }
    }

    /// The caller of a request that claims `claim`.
    pub fn identify(&mut self, claim: &[u8]) -> Result<Arc<CallerIdentity>, CallError> {
        let proof = &self.proof;
        self.last.resolve(claim, |claim| {
            let denied = |why: String| CallError::new(ErrorCode::Denied, why);
            let id = CallerIdentity::parse(claim).map_err(|e| denied(e.to_string()))?;
            if let Some((cert, identity)) = proof {
                identity.names_node(cert, id.node()).map_err(|why| {
                    denied(format!(
                        "the request claims caller {id}, but the peer's certificate does not \
                         name node '{}': {why}",
                        id.node()
                    ))
                })?;
            }
            Ok(id)
        })
    }
}
