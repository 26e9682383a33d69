//! The direct data plane, caller side: [`DirectClient`] calls a function
//! on whichever of its nodes is reachable, spreading calls over them. A
//! node that cannot be reached is passed over; a call whose connection
//! fails before its answer is retried once, with the same request id, on
//! another node (whose server cannot have run it; the first one answers a
//! retry from memory). When no node could be reached at all, the call fails
//! as one that nothing ran, and the router's composition of the route
//! decides what comes next (the broker, or another path): this client
//! knows only its nodes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::balance::two_choices;
use super::peer::{Failure, Peer};
use crate::call::{CallMeta, CallerIo};
use crate::error::{CallError, ErrorCode};
use crate::identity::CallerIdentity;
use crate::transport::local::wire::RequestNames;
use crate::transport::{start_copied, PathCounts, PendingCall, Transport};

/// Calls one function on the nodes that serve it.
pub(crate) struct DirectClient(Arc<Inner>);

struct Inner {
    target: String,
    /// The target's name and the caller's identity, sent in every request.
    names: RequestNames,
    max_payload: usize,
    peers: Vec<Arc<Peer>>,
    retried: AtomicU64,
}

/// A request id: unique per call and hard to guess, since a server answers
/// a retry of `(caller address, id)` from memory.
fn request_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static KEYS: std::collections::hash_map::RandomState = std::collections::hash_map::RandomState::new();
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = KEYS.with(|k| {
        let mut h = k.build_hasher();
        h.write_u64(n);
        h.finish()
    });
    id.max(1)
}

impl DirectClient {
    /// A client of `target` over `peers`, the reachable nodes found when
    /// the path was chosen (the router chooses again when they change),
    /// for calls of `caller`.
    pub fn new(
        target: String,
        caller: &CallerIdentity,
        max_payload: usize,
        peers: Vec<Arc<Peer>>,
    ) -> DirectClient {
        DirectClient(Arc::new(Inner {
            names: RequestNames::new(&target, caller),
            target,
            max_payload,
            peers,
            retried: AtomicU64::new(0),
        }))
    }
}

impl Inner {
    /// A peer not yet tried, the less loaded of two drawn with the random
    /// number `draw` (see `balance`). Down peers are tried too when nothing
    /// else is left: down is only a guess, and trying costs no more than a
    /// connect.
    fn pick(&self, tried: &[Arc<Peer>], draw: u64) -> Option<Arc<Peer>> {
        let untried: Vec<&Arc<Peer>> = self
            .peers
            .iter()
            .filter(|p| !tried.iter().any(|t| Arc::ptr_eq(t, p)))
            .collect();
        let up: Vec<&Arc<Peer>> = untried.iter().copied().filter(|p| !p.is_down()).collect();
        let pool = if up.is_empty() { &untried } else { &up };
        two_choices(pool, |p| p.load.score(), draw).map(|p| Arc::clone(p))
    }

    fn call(&self, io: &mut dyn CallerIo, call: &CallMeta) -> Result<(), CallError> {
        let id = request_id();
        let mut tried: Vec<Arc<Peer>> = Vec::new();
        let mut lost: Option<CallError> = None;
        let mut why_not: Vec<String> = Vec::new();
        loop {
            let draw = id.rotate_left(tried.len() as u32 * 7);
            let Some(peer) = self.pick(&tried, draw) else {
                return Err(self.unreachable(call, lost, &why_not));
            };
            let busy = peer.load.begin();
            let started = Instant::now();
            let result = peer.call(id, &self.names, io, call, self.max_payload);
            drop(busy);
            match result {
                Ok(()) => {
                    peer.load.record(started.elapsed());
                    return Ok(());
                }
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::NotSent(e)) => {
                    peer.mark_down();
                    why_not.push(e.message);
                }
                Err(Failure::Lost(e)) => {
                    peer.mark_down();
                    if lost.is_some() || call.deadline.is_expired() {
                        return Err(e);
                    }
                    self.retried.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(target = %self.target, id, "{}; retrying once elsewhere", e.message);
                    lost = Some(e);
                }
            }
            tried.push(peer);
        }
    }

    /// The error of a call that no node took: `lost`, the loss of a call
    /// that may have run, if there was one; else a timeout once the
    /// deadline passed; else one that nothing ran (`why_not`, why each
    /// node could not be reached).
    fn unreachable(
        &self,
        call: &CallMeta,
        lost: Option<CallError>,
        why_not: &[String],
    ) -> CallError {
        if let Some(e) = lost {
            return e;
        }
        let why = if why_not.is_empty() {
            "no node serving it announces a data address this node can use".to_string()
        } else {
            why_not.join("; ")
        };
        if call.deadline.is_expired() {
            return CallError::new(
                ErrorCode::Timeout,
                format!("'{}' could not be reached in time: {why}", self.target),
            );
        }
        CallError::new(
            ErrorCode::Transport,
            format!(
                "no node serving '{}' could be reached directly: {why}",
                self.target
            ),
        )
        .before_taken()
    }
}

impl Transport for DirectClient {
    fn call(&self, io: &mut dyn CallerIo, call: &CallMeta) -> Result<(), CallError> {
        self.0.call(io, call)
    }

    fn start(
        &self,
        io: &mut dyn CallerIo,
        call: &CallMeta,
    ) -> Result<Box<dyn PendingCall>, CallError> {
        // The call may be retried elsewhere.
        let inner = self.0.clone();
        let name = format!("cwasi-direct-{}", inner.target);
        start_copied(name, io, *call, move |io, call| inner.call(io, call))
    }

    fn paths(&self) -> PathCounts {
        PathCounts {
            retried: self.0.retried.load(Ordering::Relaxed),
            via_broker: 0,
        }
    }
}
