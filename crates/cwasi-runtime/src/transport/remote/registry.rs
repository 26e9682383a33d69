//! The cluster registry: which node serves which function. A server
//! announces its function every [`HEARTBEAT`], for [`ANNOUNCE_TTL`]; callers
//! look it up with [`Broker::find`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::codec::{now_ms, strings};
use super::conn::Broker;
use super::keys::{fn_nodes_key, fn_ns_key, fn_records_key, v3};
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
            // One key, so one slot: the records of the live nodes.
            let mut hmget = redis::cmd("HMGET");
            hmget.arg(fn_records_key(&ns, name)).arg(&nodes);
            let records = match self.query(&hmget).await? {
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
        if out.is_empty() {
            if let Some(ns) = self.served_by_version_3(name).await? {
                return Err(CallError::new(
                    ErrorCode::Transport,
                    format!(
                        "'{name}' is served in namespace '{ns}' by a node that speaks broker \
                         protocol version 3; this node speaks version 4 (docs/protocol.md, \
                         \"Versions\"): upgrade the nodes together"
                    ),
                ));
            }
        }
        out.sort_by(|a, b| (&a.namespace, &a.node).cmp(&(&b.namespace, &b.node)));
        Ok(out)
    }

    /// A namespace `name` is served in by a live node of protocol version
    /// 3 (whose keys this version no longer reads), if there is one.
    async fn served_by_version_3(&self, name: &str) -> Result<Option<String>, CallError> {
        let ns = self
            .query(redis::cmd("SMEMBERS").arg(v3::fn_ns_key(name)))
            .await?;
        for ns in strings(ns).into_iter().filter(|n| validate_name(n).is_ok()) {
            let live = self
                .query(
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(v3::fn_nodes_key(&ns, name))
                        .arg(now_ms())
                        .arg("+inf")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(1),
                )
                .await?;
            if !strings(live).is_empty() {
                return Ok(Some(ns));
            }
        }
        Ok(None)
    }

    /// Announces this node's `name` in `ns` with `record`, for
    /// [`ANNOUNCE_TTL`]. The function's nodes and records are updated by one
    /// script on their one slot (which also drops the records of nodes
    /// whose announcement expired); the name's namespaces, in another slot,
    /// by one `SADD`.
    async fn announce(&self, ns: &str, name: &str, record: &str) -> Result<(), CallError> {
        let now = now_ms();
        let ttl = ANNOUNCE_TTL.as_millis() as u64;
        let mut script = redis::cmd("EVAL");
        script
            .arg(ANNOUNCE_SCRIPT)
            .arg(2)
            .arg(fn_records_key(ns, name))
            .arg(fn_nodes_key(ns, name))
            .arg(self.node())
            .arg(record)
            .arg(now + ttl)
            .arg(now)
            .arg(ttl);
        let changed = self.query(&script).await?;
        // Another slot: a command of its own, not one pipeline.
        self.query(redis::cmd("SADD").arg(fn_ns_key(name)).arg(ns))
            .await?;
        if changed == redis::Value::Int(1) {
            self.publish_placement(ns, name).await;
        }
        Ok(())
    }

    /// Withdraws this node's announcement of `name` in `ns`: one `MULTI` on
    /// the function's slot.
    pub(super) async fn unannounce(&self, ns: &str, name: &str) -> Result<(), CallError> {
        let node = self.node();
        let mut p = redis::pipe();
        p.atomic()
            .cmd("HDEL")
            .arg(fn_records_key(ns, name))
            .arg(node)
            .cmd("ZREM")
            .arg(fn_nodes_key(ns, name))
            .arg(node);
        self.query_pipe(&p).await?;
        self.publish_placement(ns, name).await;
        Ok(())
    }
}

/// What an announcement does, on the function's one slot: drop the records
/// of nodes whose announcement expired, then set this node's record and
/// expiry, and keep both keys alive as long as one node announces. It
/// returns 1 when the placement changed (this node was not announced, its
/// record changed, or another node's expired announcement was dropped),
/// else 0: a heartbeat that only renews publishes nothing.
/// KEYS: records, nodes. ARGV: node, record, expires (ms), now (ms), TTL (ms).
const ANNOUNCE_SCRIPT: &str = r"
local changed = 0
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
for _, node in ipairs(dead) do
    if node ~= ARGV[1] then
        redis.call('HDEL', KEYS[1], node)
        changed = 1
    end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
local live = redis.call('ZSCORE', KEYS[2], ARGV[1])
local old = redis.call('HGET', KEYS[1], ARGV[1])
if (not live) or old ~= ARGV[2] then changed = 1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return changed
";

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
        let d = if failing { HEARTBEAT_RETRY } else { HEARTBEAT };
        sleep_unless_stopped(d, || stop.load(Ordering::Relaxed));
    }
}

/// Sleeps for `d`, or until `stopped()` says to stop: the heartbeat's
/// pause, and the backoff of the consumers and of the placement follower.
pub(super) fn sleep_unless_stopped(d: Duration, stopped: impl Fn() -> bool) {
    let mut left = d;
    while !stopped() && !left.is_zero() {
        let s = left.min(STOP_POLL);
        std::thread::sleep(s);
        left -= s;
    }
}
