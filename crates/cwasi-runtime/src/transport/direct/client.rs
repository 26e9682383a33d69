//! The direct data plane, caller side: [`DirectClient`] calls a function
//! on whichever live node serves it, spreading calls over them. A node
//! that cannot be reached is passed over; a call whose connection fails
//! before its answer is retried once, with the same request id, on another
//! node or through the broker; when no node can be reached directly, calls
//! go through the broker, and that is logged and reported.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::balance::two_choices;
use super::peer::{ClientSetup, Failure, Peer};
use crate::call::{CallMeta, CallerIo, VecIo};
use crate::deadline::Deadline;
use crate::error::{CallError, ErrorCode};
use crate::transport::remote::{Broker, RemoteClient};
use crate::transport::{on_worker, PathCounts, PendingCall, Transport};

/// How often the nodes serving the callee are looked up again.
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// The longest a refresh may hold up a call.
const REFRESH_TIMEOUT: Duration = Duration::from_millis(500);

/// Says that the route left the direct path, or came back to it (for
/// `--explain` and the logs).
pub(crate) type PathReport = Arc<dyn Fn(String) + Send + Sync>;

/// Calls one function on the nodes that serve it.
pub(crate) struct DirectClient(Arc<Inner>);

struct Inner {
    target: String,
    namespace: String,
    max_payload: usize,
    setup: ClientSetup,
    broker: Arc<Broker>,
    fallback: RemoteClient,
    peers: Mutex<Peers>,
    on_broker: AtomicBool,
    report: PathReport,
    retried: AtomicU64,
    via_broker: AtomicU64,
}

struct Peers {
    list: Arc<[Arc<Peer>]>,
    refreshed: Instant,
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
    /// A client of `target` in `namespace` over `peers` (the reachable
    /// nodes found when the route was chosen), with `broker` for lookups
    /// and as the last resort.
    pub fn new(
        target: String,
        namespace: String,
        max_payload: usize,
        setup: ClientSetup,
        broker: Arc<Broker>,
        peers: Vec<Arc<Peer>>,
        report: PathReport,
    ) -> DirectClient {
        let fallback = RemoteClient::new(
            broker.clone(),
            namespace.clone(),
            target.clone(),
            max_payload,
        );
        DirectClient(Arc::new(Inner {
            target,
            namespace,
            max_payload,
            setup,
            broker,
            fallback,
            peers: Mutex::new(Peers {
                list: peers.into(),
                refreshed: Instant::now(),
            }),
            on_broker: AtomicBool::new(false),
            report,
            retried: AtomicU64::new(0),
            via_broker: AtomicU64::new(0),
        }))
    }
}

impl Inner {
    /// A live peer not yet tried, the less loaded of two drawn with the
    /// random number `draw` (see `balance`); the list is looked up again
    /// when it is old. Down peers are tried too when nothing else is left:
    /// down is only a guess, and trying costs no more than a connect.
    fn pick(&self, tried: &[Arc<Peer>], deadline: Deadline, draw: u64) -> Option<Arc<Peer>> {
        let list = self.live_list(deadline);
        let untried: Vec<&Arc<Peer>> = list
            .iter()
            .filter(|p| !tried.iter().any(|t| Arc::ptr_eq(t, p)))
            .collect();
        let up: Vec<&Arc<Peer>> = untried.iter().copied().filter(|p| !p.is_down()).collect();
        let pool = if up.is_empty() { &untried } else { &up };
        two_choices(pool, |p| p.load.score(), draw).map(|p| Arc::clone(p))
    }

    /// The peers, refreshed from the cluster registry when older than
    /// [`REFRESH_EVERY`] (by one caller at a time; the others use the
    /// list as it is).
    fn live_list(&self, deadline: Deadline) -> Arc<[Arc<Peer>]> {
        let (list, stale) = {
            let p = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            (p.list.clone(), p.refreshed.elapsed() >= REFRESH_EVERY)
        };
        if !stale {
            return list;
        }
        {
            // Claim the refresh; others keep going meanwhile.
            let mut p = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            if p.refreshed.elapsed() < REFRESH_EVERY {
                return p.list.clone();
            }
            p.refreshed = Instant::now();
        }
        let by = deadline.nested(REFRESH_TIMEOUT);
        let found = match self.broker.find(&self.target, by) {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(target = %self.target, "cannot refresh the nodes serving it: {e}");
                return list;
            }
        };
        let mut fresh = Vec::new();
        for r in found
            .iter()
            .filter(|r| r.namespace == self.namespace && r.node != self.broker.node())
        {
            let same = |p: &&Arc<Peer>| p.node == r.node && Some(p.addr.to_string()) == r.data_addr;
            match list.iter().find(same) {
                Some(p) => fresh.push(p.clone()),
                None => match Peer::new(&r.node, r.data_addr.as_deref(), &self.setup) {
                    Ok(p) => {
                        tracing::info!(target = %self.target, node = %r.node, addr = %p.addr, "a node serves it directly");
                        fresh.push(Arc::new(p));
                    }
                    Err(why) => tracing::debug!(target = %self.target, "{why}"),
                },
            }
        }
        let fresh: Arc<[Arc<Peer>]> = fresh.into();
        let mut p = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        p.list = fresh.clone();
        fresh
    }

    fn call(&self, io: &mut dyn CallerIo, call: &CallMeta) -> Result<(), CallError> {
        let id = request_id();
        let mut tried: Vec<Arc<Peer>> = Vec::new();
        let mut retried = false;
        let mut why_not: Vec<String> = Vec::new();
        loop {
            let draw = id.rotate_left(tried.len() as u32 * 7);
            let Some(peer) = self.pick(&tried, call.deadline, draw) else {
                return self.through_broker(io, call, &why_not);
            };
            let busy = peer.load.begin();
            let started = Instant::now();
            let result = peer.call(id, &self.target, io, call, self.max_payload);
            drop(busy);
            match result {
                Ok(()) => {
                    peer.load.record(started.elapsed());
                    if self.on_broker.swap(false, Ordering::Relaxed) {
                        (self.report)(format!(
                            "remote-direct again: node '{}' at {} answers directly",
                            peer.node, peer.addr
                        ));
                    }
                    return Ok(());
                }
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::NotSent(e)) => {
                    peer.mark_down();
                    why_not.push(e.message);
                }
                Err(Failure::Lost(e)) => {
                    peer.mark_down();
                    if retried || call.deadline.is_expired() {
                        return Err(e);
                    }
                    retried = true;
                    self.retried.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(target = %self.target, id, "{}; retrying once elsewhere", e.message);
                    why_not.push(e.message);
                }
            }
            tried.push(peer);
        }
    }

    /// The path of last resort: the broker, because no node could be
    /// reached directly (`why_not`).
    fn through_broker(
        &self,
        io: &mut dyn CallerIo,
        call: &CallMeta,
        why_not: &[String],
    ) -> Result<(), CallError> {
        if call.deadline.is_expired() {
            return Err(CallError::new(
                ErrorCode::Timeout,
                format!(
                    "'{}' could not be reached in time: {}",
                    self.target,
                    why_not.join("; ")
                ),
            ));
        }
        if !self.on_broker.swap(true, Ordering::Relaxed) {
            let why = if why_not.is_empty() {
                "no node serving it announces a data address this node can use".to_string()
            } else {
                why_not.join("; ")
            };
            (self.report)(format!(
                "remote-broker (fell back from remote-direct: {why})"
            ));
        }
        self.via_broker.fetch_add(1, Ordering::Relaxed);
        use crate::transport::Transport as _;
        self.fallback.call(io, call)
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
        // The call may be retried elsewhere, so it keeps its own copy of
        // the request, and runs on a worker thread.
        let request = io.request().to_vec();
        let inner = self.0.clone();
        let meta = *call;
        on_worker(format!("cwasi-direct-{}", inner.target), meta, move || {
            let mut io = VecIo {
                request: &request,
                response: Vec::new(),
            };
            inner.call(&mut io, &meta).map(|()| io.response)
        })
    }

    fn paths(&self) -> PathCounts {
        PathCounts {
            retried: self.0.retried.load(Ordering::Relaxed),
            via_broker: self.0.via_broker.load(Ordering::Relaxed),
        }
    }
}
