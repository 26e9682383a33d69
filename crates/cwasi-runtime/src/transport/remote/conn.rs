//! The [`Broker`] client and its connections: one multiplexed connection
//! for ordinary commands, a pool of synchronous ones for the hot path.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Value};

use super::config::{redact, tls_files, BrokerConfig};
use super::keys::id_part;
use crate::deadline::{BROKER_CONNECT_TIMEOUT, BROKER_OP_TIMEOUT};
use crate::error::{CallError, ErrorCode, RuntimeError};

/// Most synchronous connections kept for reuse.
const POOL_MAX: usize = 64;
/// Longest wait between two attempts of the multiplexed connection to
/// reconnect (its backoff).
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(2);
/// Attempts of the multiplexed connection to reconnect before a command
/// fails.
const RECONNECT_RETRIES: usize = 3;

/// A connection to the broker: one multiplexed connection for ordinary
/// commands (reconnecting with backoff), and plain synchronous connections
/// for the hot path (a caller's request and wait, a consumer's read and
/// reply), pooled. The hot path runs its round trips on the calling thread:
/// going through the tokio runtime cost two thread hand-offs per round trip.
pub struct Broker {
    rt: tokio::runtime::Runtime,
    client: Client,
    mux: tokio::sync::Mutex<Option<ConnectionManager>>,
    blocking: Mutex<Vec<redis::Connection>>,
    config: BrokerConfig,
    display: String,
    /// `{node}-{pid}`, the start of this process's request ids.
    id_prefix: String,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("url", &self.display)
            .field("node", &self.config.node)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Prepares a broker client; connections are made on first use, so a
    /// broker that is down now does not stop a server from starting.
    pub fn new(config: BrokerConfig) -> Result<Arc<Broker>, RuntimeError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut info: redis::ConnectionInfo = config.url.as_str().parse().map_err(|e| {
            RuntimeError::broker(format!("bad CWASI_REDIS_URL {}", redact(&config.url)), e)
        })?;
        let mut redis_settings = info.redis_settings().clone();
        if let Some(u) = &config.username {
            redis_settings = redis_settings.set_username(u);
        }
        if let Some(p) = &config.password {
            redis_settings = redis_settings.set_password(p);
        }
        info = info.set_redis_settings(redis_settings);
        let client = match tls_files(&config)? {
            None => Client::open(info),
            Some(certs) => {
                if !config.url.starts_with("rediss://") {
                    return Err(RuntimeError::Config(format!(
                        "CWASI_REDIS_CA_FILE and CWASI_REDIS_CLIENT_CERT/KEY need a rediss:// \
                         URL, not {}",
                        redact(&config.url)
                    )));
                }
                Client::build_with_tls(info, certs)
            }
        }
        .map_err(|e| RuntimeError::broker("bad broker settings", e))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cwasi-broker")
            .enable_all()
            .build()
            .map_err(|source| RuntimeError::Spawn {
                what: "the broker's runtime",
                source,
            })?;
        let display = redact(&config.url);
        let id_prefix = format!("{}-{}", id_part(&config.node, 64), std::process::id());
        Ok(Arc::new(Broker {
            rt,
            client,
            mux: tokio::sync::Mutex::new(None),
            blocking: Mutex::new(Vec::new()),
            config,
            display,
            id_prefix,
            next_id: AtomicU64::new(0),
        }))
    }

    /// The broker's URL, without its password.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.config.node
    }

    /// The error of a broker that cannot be reached, or answered wrong.
    pub(super) fn down(&self, e: impl std::fmt::Display) -> CallError {
        CallError::new(
            ErrorCode::Transport,
            format!("broker {} unreachable: {e}", self.display),
        )
    }

    /// Runs `f` on the broker's runtime, from a thread outside it.
    pub(super) fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    async fn mux(&self) -> Result<ConnectionManager, CallError> {
        let mut slot = self.mux.lock().await;
        if let Some(m) = &*slot {
            return Ok(m.clone());
        }
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(BROKER_CONNECT_TIMEOUT))
            .set_response_timeout(Some(BROKER_OP_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(RECONNECT_MAX_DELAY);
        let m = tokio::time::timeout(
            BROKER_OP_TIMEOUT,
            self.client.get_connection_manager_with_config(cfg),
        )
        .await
        .map_err(|_| self.down("connecting timed out"))?
        .map_err(|e| self.down(e))?;
        *slot = Some(m.clone());
        Ok(m)
    }

    /// A synchronous connection from the pool, or a new one; `read_timeout`
    /// bounds every reply read on it.
    pub(super) fn sync_conn(&self, read_timeout: Duration) -> Result<redis::Connection, CallError> {
        let pooled = self
            .blocking
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let conn = match pooled {
            Some(c) => c,
            None => self
                .client
                .get_connection_with_timeout(BROKER_CONNECT_TIMEOUT)
                .map_err(|e| self.down(e))?,
        };
        conn.set_read_timeout(Some(read_timeout))
            .and_then(|()| conn.set_write_timeout(Some(BROKER_OP_TIMEOUT)))
            .map_err(|e| self.down(e))?;
        Ok(conn)
    }

    /// Returns a connection whose last exchange completed, for reuse.
    pub(super) fn give_back(&self, c: redis::Connection) {
        let mut pool = self.blocking.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(c);
        }
    }

    /// Runs a command on the multiplexed connection.
    pub(super) async fn query(&self, cmd: &redis::Cmd) -> Result<Value, CallError> {
        let mut m = self.mux().await?;
        self.bounded(cmd.query_async::<Value>(&mut m)).await
    }

    /// Runs a pipeline on the multiplexed connection.
    pub(super) async fn query_pipe(&self, p: &redis::Pipeline) -> Result<Value, CallError> {
        let mut m = self.mux().await?;
        self.bounded(p.query_async::<Value>(&mut m)).await
    }

    /// Bounds one broker operation by [`BROKER_OP_TIMEOUT`].
    async fn bounded(
        &self,
        op: impl Future<Output = redis::RedisResult<Value>>,
    ) -> Result<Value, CallError> {
        match tokio::time::timeout(BROKER_OP_TIMEOUT, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.down(e)),
            Err(_) => Err(self.down("no answer in time")),
        }
    }

    /// A request id unique in the cluster: `{node}-{pid}-{time}-{counter}`
    /// (numbers in hex), which a server accepts: the node name's bytes
    /// that a name may not have become `_`, and it is cut to 64 bytes.
    pub(super) fn new_request_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{}-{nanos:x}-{n:x}", self.id_prefix)
    }
}

/// Sends the pipeline `p` on `conn` and reads every reply by `until`; `None`
/// if time ran out first (then the connection, out of step, must be
/// dropped). A pipeline's own `query` waits up to the read timeout once per
/// reply, so a stalled broker would hold it for several times as long.
pub(super) fn exchange(
    conn: &mut redis::Connection,
    p: &redis::Pipeline,
    until: Instant,
) -> redis::RedisResult<Option<Vec<Value>>> {
    conn.send_packed_command(&p.get_packed_pipeline())?;
    let mut replies = Vec::with_capacity(p.len());
    while replies.len() < p.len() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        conn.set_read_timeout(Some(left))?;
        match conn.recv_response() {
            // RESP3 pushes are not replies.
            Ok(Value::Push { .. }) => {}
            Ok(v) => replies.push(v),
            Err(e) if e.is_timeout() => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(replies))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_a_client_certificate_is_refused() {
        let half = BrokerConfig {
            client_cert: Some((Default::default(), "/k.pem".into())),
            ..BrokerConfig::new("rediss://h:1", "n1")
        };
        let e = Broker::new(half).unwrap_err().to_string();
        assert!(e.contains("CWASI_REDIS_CLIENT_CERT is not set"), "{e}");
    }

    #[test]
    fn request_ids_are_unique() {
        let b = Broker::new(BrokerConfig::new("redis://127.0.0.1:1", "n1")).unwrap();
        let (a, c) = (b.new_request_id(), b.new_request_id());
        assert_ne!(a, c);
        assert!(a.starts_with(&format!("n1-{}-", std::process::id())), "{a}");
        // A node name with bytes an id may not have still gives valid ids.
        let odd = Broker::new(BrokerConfig::new("redis://127.0.0.1:1", "n 1:x")).unwrap();
        let id = odd.new_request_id();
        assert!(id.starts_with("n_1_x-"), "{id}");
        assert!(super::super::keys::check_request_id(&id).is_ok(), "{id}");
    }
}
