//! The [`Broker`] client and its connections: one multiplexed connection
//! for ordinary commands, a pool of synchronous ones for the hot path; to
//! one Redis, or to a Redis Cluster through redis-rs's cluster client
//! (which follows `MOVED` and `ASK` and finds a promoted replica). Every
//! operation of remote mode touches one slot (`keys.rs`), so a cluster
//! connection sends each one whole to the node that owns it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConnection};
use redis::{Client, Value};

use super::config::{redact, seeds, tls_files, BrokerConfig};
use super::keys::id_part;
use crate::deadline::{BROKER_CONNECT_TIMEOUT, BROKER_OP_TIMEOUT};
use crate::error::{CallError, ErrorCode, RuntimeError};
use crate::transport::node_identity::NodeIdentity;

/// Most synchronous connections kept for reuse.
const POOL_MAX: usize = 64;
/// Longest wait between two attempts of the multiplexed connection to
/// reconnect (its backoff).
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(2);
/// Attempts of the multiplexed connection to reconnect before a command
/// fails.
const RECONNECT_RETRIES: usize = 3;
/// Attempts of a cluster connection at one command, across redirections
/// and reconnections (a failover takes a node timeout and an election).
const CLUSTER_RETRIES: u32 = 6;

/// The Redis the broker runs on. One per broker, so the size of its
/// variants does not matter (clippy's `large_enum_variant`).
#[allow(clippy::large_enum_variant)]
enum Backend {
    /// One server.
    Single(Client),
    /// A cluster, by its seed nodes.
    Cluster(ClusterClient),
}

/// The multiplexed connection of either backend (both are cheap clones).
#[derive(Clone)]
enum Mux {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Mux {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Mux::Single(c) => c.req_packed_command(cmd),
            Mux::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Mux::Single(c) => c.req_packed_commands(cmd, offset, count),
            Mux::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// A synchronous connection of either backend, for the hot path.
pub(crate) enum SyncConn {
    /// To the one server.
    Single(redis::Connection),
    /// To the cluster: one connection per node it has talked to, each
    /// command sent to the node that owns its slot (boxed: it is the
    /// larger by far).
    Cluster(Box<ClusterConnection>),
}

impl SyncConn {
    /// Bounds every reply read on it.
    pub(super) fn set_read_timeout(&self, d: Option<Duration>) -> redis::RedisResult<()> {
        match self {
            SyncConn::Single(c) => c.set_read_timeout(d),
            SyncConn::Cluster(c) => c.set_read_timeout(d),
        }
    }

    fn set_write_timeout(&self, d: Option<Duration>) -> redis::RedisResult<()> {
        match self {
            SyncConn::Single(c) => c.set_write_timeout(d),
            SyncConn::Cluster(c) => c.set_write_timeout(d),
        }
    }
}

impl redis::ConnectionLike for SyncConn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<Value> {
        match self {
            SyncConn::Single(c) => c.req_packed_command(cmd),
            SyncConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<Value>> {
        match self {
            SyncConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            SyncConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }

    fn check_connection(&mut self) -> bool {
        match self {
            SyncConn::Single(c) => c.check_connection(),
            SyncConn::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            SyncConn::Single(c) => c.is_open(),
            SyncConn::Cluster(c) => c.is_open(),
        }
    }
}

/// A connection to the broker: one multiplexed connection for ordinary
/// commands (reconnecting with backoff), and plain synchronous connections
/// for the hot path (a caller's request and wait, a consumer's read and
/// reply), pooled. The hot path runs its round trips on the calling thread:
/// going through the tokio runtime cost two thread hand-offs per round trip.
pub struct Broker {
    rt: tokio::runtime::Runtime,
    backend: Backend,
    mux: tokio::sync::Mutex<Option<Mux>>,
    blocking: Mutex<Vec<SyncConn>>,
    config: BrokerConfig,
    display: String,
    /// `{node}-{pid}`, the start of this process's request ids.
    id_prefix: String,
    next_id: AtomicU64,
    /// This node's certificate and key, once the runtime has them: the
    /// requests it sends are signed, and the ones it serves checked.
    identity: OnceLock<Arc<NodeIdentity>>,
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
        if let Some(why) = &config.invalid {
            return Err(RuntimeError::Config(why.clone()));
        }
        let backend = if config.cluster {
            Backend::Cluster(cluster_client(&config)?)
        } else {
            Backend::Single(single_client(&config)?)
        };
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
            backend,
            mux: tokio::sync::Mutex::new(None),
            blocking: Mutex::new(Vec::new()),
            config,
            display,
            id_prefix,
            next_id: AtomicU64::new(0),
            identity: OnceLock::new(),
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

    /// Signs the requests this broker client sends, and requires the
    /// requests its stream servers take to be signed by a node of the
    /// same CA, from now on (the first identity given is kept).
    pub(crate) fn authenticate_as(&self, identity: Arc<NodeIdentity>) {
        let _ = self.identity.set(identity);
    }

    /// This node's identity, if requests are signed and checked.
    pub(crate) fn identity(&self) -> Option<&Arc<NodeIdentity>> {
        self.identity.get()
    }

    /// How many replicas must hold a request before its caller waits for
    /// the answer, and for how long it waits for them (0: no wait).
    pub(super) fn durability(&self) -> (u32, Duration) {
        (self.config.wait_replicas, self.config.wait_timeout)
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

    async fn mux(&self) -> Result<Mux, CallError> {
        let mut slot = self.mux.lock().await;
        if let Some(m) = &*slot {
            return Ok(m.clone());
        }
        let connect = async {
            match &self.backend {
                Backend::Single(client) => {
                    let cfg = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(BROKER_CONNECT_TIMEOUT))
                        .set_response_timeout(Some(BROKER_OP_TIMEOUT))
                        .set_number_of_retries(RECONNECT_RETRIES)
                        .set_max_delay(RECONNECT_MAX_DELAY);
                    client
                        .get_connection_manager_with_config(cfg)
                        .await
                        .map(Mux::Single)
                }
                Backend::Cluster(client) => client.get_async_connection().await.map(Mux::Cluster),
            }
        };
        let m = tokio::time::timeout(BROKER_OP_TIMEOUT, connect)
            .await
            .map_err(|_| self.down("connecting timed out"))?
            .map_err(|e| self.down(e))?;
        *slot = Some(m.clone());
        Ok(m)
    }

    /// A synchronous connection from the pool, or a new one; `read_timeout`
    /// bounds every reply read on it.
    pub(super) fn sync_conn(&self, read_timeout: Duration) -> Result<SyncConn, CallError> {
        self.open_sync(read_timeout).map_err(|e| self.down(e))
    }

    /// Whether `e` is what a Redis Cluster gives while a master is down and
    /// its replica not yet promoted (or the slot map is stale): refused or
    /// dropped connections, `CLUSTERDOWN`, `TRYAGAIN`, redirections. A
    /// single Redis that is down is not in failover: its calls fail at once.
    pub(super) fn in_failover(&self, e: &redis::RedisError) -> bool {
        matches!(self.backend, Backend::Cluster(_))
            && (e.is_io_error()
                || e.is_connection_refusal()
                || e.is_connection_dropped()
                || e.is_cluster_error())
    }

    /// [`Self::sync_conn`] with the broker's own error.
    pub(super) fn open_sync(&self, read_timeout: Duration) -> redis::RedisResult<SyncConn> {
        let pooled = self
            .blocking
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let conn = match pooled {
            Some(c) => c,
            None => match &self.backend {
                Backend::Single(client) => client
                    .get_connection_with_timeout(BROKER_CONNECT_TIMEOUT)
                    .map(SyncConn::Single),
                Backend::Cluster(client) => client
                    .get_connection()
                    .map(|c| SyncConn::Cluster(Box::new(c))),
            }?,
        };
        conn.set_read_timeout(Some(read_timeout))?;
        conn.set_write_timeout(Some(BROKER_OP_TIMEOUT))?;
        Ok(conn)
    }

    /// Returns a connection whose last exchange completed, for reuse.
    pub(super) fn give_back(&self, c: SyncConn) {
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

    /// A client of each server a subscriber may listen on: the one Redis,
    /// or each seed node of the cluster (a cluster forwards every `PUBLISH`
    /// to all its nodes, so any one of them hears every message).
    pub(super) fn node_clients(&self) -> Vec<Client> {
        match &self.backend {
            Backend::Single(client) => vec![client.clone()],
            Backend::Cluster(_) => seeds(&self.config.url)
                .into_iter()
                .filter_map(|url| node_client(&self.config, url).ok())
                .collect(),
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
/// reply, so a stalled broker would hold it for several times as long: on
/// one server, each reply is read with what is left of the time. A cluster
/// connection sends the pipeline whole to the node of its first key and
/// reads its replies under one read timeout, what is left of the time.
pub(super) fn exchange(
    conn: &mut SyncConn,
    p: &redis::Pipeline,
    until: Instant,
) -> redis::RedisResult<Option<Vec<Value>>> {
    if let SyncConn::Cluster(c) = conn {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        c.set_read_timeout(Some(left))?;
        // Through the wrapper, which takes a pipeline whole (the cluster
        // connection itself refuses `Pipeline::query`, as it cannot know
        // the pipeline stays in one slot; ours always does).
        return match p.query::<Vec<Value>>(conn) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_timeout() => Ok(None),
            Err(e) => Err(e),
        };
    }
    let SyncConn::Single(conn) = conn else {
        unreachable!("the cluster connection returned above")
    };
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

/// The client of one Redis at `config.url`, with its credentials and TLS.
fn single_client(config: &BrokerConfig) -> Result<Client, RuntimeError> {
    node_client(config, &config.url)
}

/// The client of the one Redis at `url` (the broker's, or one node of its
/// cluster), with the configured credentials and TLS.
fn node_client(config: &BrokerConfig, url: &str) -> Result<Client, RuntimeError> {
    let info = connection_info(config, url)?;
    match tls_files(config)? {
        None => Client::open(info),
        Some(certs) => {
            require_rediss(config, url)?;
            Client::build_with_tls(info, certs)
        }
    }
    .map_err(|e| RuntimeError::broker("bad broker settings", e))
}

/// The client of the cluster whose seed nodes `config.url` lists, with the
/// same credentials and TLS for every node.
fn cluster_client(config: &BrokerConfig) -> Result<ClusterClient, RuntimeError> {
    let nodes = seeds(&config.url)
        .into_iter()
        .map(|url| connection_info(config, url))
        .collect::<Result<Vec<_>, _>>()?;
    if nodes.is_empty() {
        return Err(RuntimeError::Config(
            "CWASI_REDIS_URL lists no cluster node".to_string(),
        ));
    }
    let mut b = ClusterClientBuilder::new(nodes)
        .retries(CLUSTER_RETRIES)
        .connection_timeout(BROKER_CONNECT_TIMEOUT)
        .response_timeout(BROKER_OP_TIMEOUT);
    if let Some(u) = &config.username {
        b = b.username(u);
    }
    if let Some(p) = &config.password {
        b = b.password(p);
    }
    if let Some(certs) = tls_files(config)? {
        for url in seeds(&config.url) {
            require_rediss(config, url)?;
        }
        b = b.certs(certs);
    }
    b.build()
        .map_err(|e| RuntimeError::broker("bad broker cluster settings", e))
}

/// `url` parsed, with the configured user and password.
fn connection_info(
    config: &BrokerConfig,
    url: &str,
) -> Result<redis::ConnectionInfo, RuntimeError> {
    let info: redis::ConnectionInfo = url
        .parse()
        .map_err(|e| RuntimeError::broker(format!("bad CWASI_REDIS_URL {}", redact(url)), e))?;
    let mut redis_settings = info.redis_settings().clone();
    if let Some(u) = &config.username {
        redis_settings = redis_settings.set_username(u);
    }
    if let Some(p) = &config.password {
        redis_settings = redis_settings.set_password(p);
    }
    Ok(info.set_redis_settings(redis_settings))
}

/// TLS files need a `rediss://` URL.
fn require_rediss(config: &BrokerConfig, url: &str) -> Result<(), RuntimeError> {
    let _ = config;
    if url.starts_with("rediss://") {
        return Ok(());
    }
    Err(RuntimeError::Config(format!(
        "CWASI_REDIS_CA_FILE and CWASI_REDIS_CLIENT_CERT/KEY need a rediss:// URL, not {}",
        redact(url)
    )))
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
