//! The cluster registry: which node serves which function. A server
//! announces its function every [`HEARTBEAT`], for [`ANNOUNCE_TTL`]; callers
//! look it up with [`Broker::find`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::codec::{now_ms, strings};
use super::conn::Broker;
use super::keys::{fn_nodes_key, fn_ns_key, node_key};
use crate::deadline::Deadline;
use crate::error::{CallError, ErrorCode};
use cwasi_abi::validate_name;

/// How long an announcement lives without a heartbeat.
pub const ANNOUNCE_TTL: Duration = Duration::from_secs(15);
/// How often a server renews its announcement.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// How soon a failed announcement is tried again.
const HEARTBEAT_RETRY: Duration = Duration::from_millis(500);
/// How often a sleeping thread looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);

/// A live announcement of a function on some node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEndpoint {
    /// The function's namespace.
    pub namespace: String,
    /// The node serving it.
    pub node: String,
    /// Where that node takes direct calls (`tls://IP:PORT` or
    /// `tcp://IP:PORT`), if it announced an address; unchecked text from
    /// the broker, parsed by whoever uses it.
    pub data_addr: Option<String>,
}

/// The longest announcement record read from the registry.
const MAX_RECORD_BYTES: usize = 64 << 10;

/// The data address in an announcement `record` (JSON), if it has one.
pub(crate) fn data_addr_of(record: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Announced {
        data_addr: Option<String>,
    }
    if record.len() > MAX_RECORD_BYTES {
        return None;
    }
    serde_json::from_slice::<Announced>(record).ok()?.data_addr
}

impl Broker {
    /// Nodes that serve `name` right now, in any namespace, as the registry
    /// says by `deadline`: a broker that cannot be reached is a `TRANSPORT`
    /// error, one that has not answered by then a `TIMEOUT`.
    pub fn find(&self, name: &str, deadline: Deadline) -> Result<Vec<RemoteEndpoint>, CallError> {
        let within = deadline.remaining();
        let lookup = async { tokio::time::timeout(within, self.lookup(name)).await };
        self.block_on(lookup).unwrap_or_else(|_| {
            Err(CallError::new(
                ErrorCode::Timeout,
                format!(
                    "the cluster registry at {} did not answer within {within:?}",
                    self.display()
                ),
            ))
        })
    }

    /// [`Broker::find`], unbounded but for each command's own bound.
    async fn lookup(&self, name: &str) -> Result<Vec<RemoteEndpoint>, CallError> {
        let ns = self
            .query(redis::cmd("SMEMBERS").arg(fn_ns_key(name)))
            .await?;
        let mut out = Vec::new();
        // A namespace that is not a valid name was not written by a server.
        for ns in strings(ns).into_iter().filter(|n| validate_name(n).is_ok()) {
            let nodes = self
                .query(
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(fn_nodes_key(&ns, name))
                        .arg(now_ms())
                        .arg("+inf"),
                )
                .await?;
            let nodes = strings(nodes);
            if nodes.is_empty() {
                continue;
            }
            let mut p = redis::pipe();
            for node in &nodes {
                p.cmd("HGET")
                    .arg(node_key(node))
                    .arg(format!("{ns}/{name}"));
            }
            let records = match self.query_pipe(&p).await? {
                redis::Value::Array(v) => v,
                _ => Vec::new(),
            };
            for (i, node) in nodes.into_iter().enumerate() {
                let data_addr = match records.get(i) {
                    Some(redis::Value::BulkString(b)) => data_addr_of(b),
                    _ => None,
                };
                out.push(RemoteEndpoint {
                    namespace: ns.clone(),
                    node,
                    data_addr,
                });
            }
        }
        out.sort_by(|a, b| (&a.namespace, &a.node).cmp(&(&b.namespace, &b.node)));
        Ok(out)
    }

    /// Announces that this node serves `name` in `ns`, with its endpoint
    /// `record` (JSON), for [`ANNOUNCE_TTL`].
    async fn announce(&self, ns: &str, name: &str, record: &str) -> Result<(), CallError> {
        let node = self.node();
        let expires = now_ms() + ANNOUNCE_TTL.as_millis() as u64;
        let mut p = redis::pipe();
        p.atomic()
            .cmd("HSET")
            .arg(node_key(node))
            .arg(format!("{ns}/{name}"))
            .arg(record)
            .cmd("PEXPIRE")
            .arg(node_key(node))
            .arg(ANNOUNCE_TTL.as_millis() as u64)
            .cmd("ZADD")
            .arg(fn_nodes_key(ns, name))
            .arg(expires)
            .arg(node)
            .cmd("ZREMRANGEBYSCORE")
            .arg(fn_nodes_key(ns, name))
            .arg("-inf")
            .arg(now_ms())
            .cmd("SADD")
            .arg(fn_ns_key(name))
            .arg(ns);
        self.query_pipe(&p).await.map(|_| ())
    }

    /// Withdraws this node's announcement of `name` in `ns`.
    pub(super) async fn unannounce(&self, ns: &str, name: &str) -> Result<(), CallError> {
        let node = self.node();
        let mut p = redis::pipe();
        p.cmd("HDEL")
            .arg(node_key(node))
            .arg(format!("{ns}/{name}"))
            .cmd("ZREM")
            .arg(fn_nodes_key(ns, name))
            .arg(node);
        self.query_pipe(&p).await.map(|_| ())
    }
}

/// Announces `name` in `ns` every [`HEARTBEAT`] until `stop` (more often
/// while the broker cannot be reached), logging when that starts and ends.
pub(super) fn heartbeat(b: &Broker, ns: &str, name: &str, record: &str, stop: &AtomicBool) {
    let mut failing = false;
    while !stop.load(Ordering::Relaxed) {
        match b.block_on(b.announce(ns, name, record)) {
            Ok(()) if failing => {
                tracing::info!("broker reachable again; announced");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!("cannot announce '{name}': {e}");
                failing = true;
            }
            Err(_) => {}
        }
        sleep_unless_stopped(if failing { HEARTBEAT_RETRY } else { HEARTBEAT }, stop);
    }
}

/// Sleeps for `d`, or until `stop` is set (the consumers' backoff too).
pub(super) fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let mut left = d;
    while !stop.load(Ordering::Relaxed) && !left.is_zero() {
        let s = left.min(STOP_POLL);
        std::thread::sleep(s);
        left -= s;
    }
}
