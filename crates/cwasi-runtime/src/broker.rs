//! Remote mode's broker: Redis streams for requests, per-request reply keys,
//! and the cluster registry of which node serves what (`docs/protocol.md`).
//!
//! Keys:
//! - `cwasi:fn:{ns}:{name}`: the request stream of a function, read by the
//!   consumer group `cwasi`;
//! - `cwasi:payload:{id}`: the payload of one large request, kept out of the
//!   stream (see [`PAYLOAD_KEY_MIN`]);
//! - `cwasi:reply:{id}`: the reply list of one request (`LPUSH` + expiry);
//! - `cwasi:response:{id}`: the response to one request, when it is large;
//! - `cwasi:claim:{id}`: which consumer runs a reclaimed request;
//! - `cwasi:node:{node}`: a hash of the functions a node serves (TTL);
//! - `cwasi:fn-nodes:{ns}:{name}`: nodes serving a function, scored by the
//!   time their announcement expires; `cwasi:fn-ns:{name}`: its namespaces.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Value};

use crate::error::{CallError, ErrorCode, RuntimeError};

/// The consumer group every server of a function joins.
pub const GROUP: &str = "cwasi";
/// Safety bound on a stream's length (entries are deleted once answered).
pub const STREAM_MAXLEN: u64 = 100_000;
/// How long an announcement lives without a heartbeat.
pub const ANNOUNCE_TTL: Duration = Duration::from_secs(15);
/// How often a server renews its announcement.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// Requests at least this large travel in a key of their own
/// (`cwasi:payload:{id}`), named by the stream entry, instead of inside it:
/// Redis copies a stream entry's fields into the stream and again into every
/// read, where a string value keeps the buffer it was received in. Below
/// this size the extra round trip to fetch the key costs more than the copy
/// (docs/benchmarks.md).
pub const PAYLOAD_KEY_MIN: usize = 256 * 1024;
/// How long a reply waits for its caller.
const REPLY_TTL: Duration = Duration::from_secs(120);
/// How long a large request's payload key outlives the request's deadline,
/// for clocks that differ a little between nodes.
const LATE_MARGIN_MS: u64 = 5_000;
/// Time for one broker round trip that is not a blocking wait.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Time to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How to reach the broker, from `CWASI_REDIS_URL` and friends.
#[derive(Clone)]
pub struct BrokerConfig {
    /// `redis://` or `rediss://` URL; may carry `user:password@`.
    pub url: String,
    /// ACL user name, if not in the URL (`CWASI_REDIS_USERNAME`).
    pub username: Option<String>,
    /// Password, if not in the URL (`CWASI_REDIS_PASSWORD`).
    pub password: Option<String>,
    /// This node's name (`CWASI_NODE`, else the hostname).
    pub node: String,
    /// For `rediss://`: the PEM certificate(s) of the CA that signed the
    /// server's certificate (`CWASI_REDIS_CA_FILE`), for brokers behind a
    /// private CA; default: the public web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// For `rediss://` with client authentication (Redis's default
    /// `tls-auth-clients yes`): this client's PEM certificate and key
    /// (`CWASI_REDIS_CLIENT_CERT`, `CWASI_REDIS_CLIENT_KEY`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("url", &redact(&self.url))
            .field("username", &self.username)
            .field("node", &self.node)
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert.as_ref().map(|(c, _)| c))
            .finish_non_exhaustive()
    }
}

impl BrokerConfig {
    /// A broker at `url` (credentials, if any, in the URL) for node `node`.
    pub fn new(url: impl Into<String>, node: impl Into<String>) -> BrokerConfig {
        BrokerConfig {
            url: url.into(),
            username: None,
            password: None,
            node: node.into(),
            ca_file: None,
            client_cert: None,
        }
    }

    /// The configuration in the environment, if `CWASI_REDIS_URL` is set.
    pub fn from_env() -> Option<BrokerConfig> {
        BrokerConfig::from_vars(&|k| std::env::var(k).ok())
    }

    /// The same, from variables looked up by `var`: the shim reads them from
    /// the container's environment, not its own.
    pub fn from_vars(var: &dyn Fn(&str) -> Option<String>) -> Option<BrokerConfig> {
        let var = |k: &str| var(k).filter(|v| !v.is_empty());
        let url = var("CWASI_REDIS_URL")?;
        let cert = var("CWASI_REDIS_CLIENT_CERT").map(PathBuf::from);
        let key = var("CWASI_REDIS_CLIENT_KEY").map(PathBuf::from);
        Some(BrokerConfig {
            username: var("CWASI_REDIS_USERNAME"),
            password: var("CWASI_REDIS_PASSWORD"),
            ca_file: var("CWASI_REDIS_CA_FILE").map(PathBuf::from),
            // One without the other is reported by `Broker::new`.
            client_cert: match (cert, key) {
                (None, None) => None,
                (c, k) => Some((c.unwrap_or_default(), k.unwrap_or_default())),
            },
            ..BrokerConfig::new(url, crate::registry::node_name_from(&var))
        })
    }
}

/// The TLS files of `config`, read, if it names any.
fn tls_files(config: &BrokerConfig) -> Result<Option<redis::TlsCertificates>, RuntimeError> {
    let read = |what: &str, path: &Path| {
        if path.as_os_str().is_empty() {
            return Err(RuntimeError::Config(format!(
                "{what} is not set, but its pair is (set both CWASI_REDIS_CLIENT_CERT and \
                 CWASI_REDIS_CLIENT_KEY)"
            )));
        }
        std::fs::read(path).map_err(|e| {
            RuntimeError::Config(format!("cannot read {what} {}: {e}", path.display()))
        })
    };
    if config.ca_file.is_none() && config.client_cert.is_none() {
        return Ok(None);
    }
    Ok(Some(redis::TlsCertificates {
        root_cert: match &config.ca_file {
            Some(p) => Some(read("CWASI_REDIS_CA_FILE", p)?),
            None => None,
        },
        client_tls: match &config.client_cert {
            Some((cert, key)) => Some(redis::ClientTlsConfig {
                client_cert: read("CWASI_REDIS_CLIENT_CERT", cert)?,
                client_key: read("CWASI_REDIS_CLIENT_KEY", key)?,
            }),
            None => None,
        },
    }))
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// A live announcement of a function on some node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEndpoint {
    /// The function's namespace.
    pub namespace: String,
    /// The node serving it.
    pub node: String,
}

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

/// One request read from a stream.
struct Entry {
    entry_id: String,
    id: String,
    reply: String,
    deadline_ms: u64,
    payload: Payload,
}

/// Where a request's payload is.
enum Payload {
    /// In the stream entry.
    Inline(Vec<u8>),
    /// In a key of its own, for large requests.
    Key(String),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn stream_key(ns: &str, name: &str) -> String {
    format!("cwasi:fn:{ns}:{name}")
}

impl Broker {
    /// Prepares a broker client; connections are made on first use, so a
    /// broker that is down now does not stop a server from starting.
    pub fn new(config: BrokerConfig) -> Result<Arc<Broker>, RuntimeError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut info: redis::ConnectionInfo = config.url.as_str().parse().map_err(|e| {
            RuntimeError::Config(format!("bad CWASI_REDIS_URL {}: {e}", redact(&config.url)))
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
        .map_err(|e| RuntimeError::Config(format!("bad broker settings: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cwasi-broker")
            .enable_all()
            .build()
            .map_err(|e| RuntimeError::Config(format!("cannot start the broker runtime: {e}")))?;
        let display = redact(&config.url);
        Ok(Arc::new(Broker {
            rt,
            client,
            mux: tokio::sync::Mutex::new(None),
            blocking: Mutex::new(Vec::new()),
            config,
            display,
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

    fn down(&self, e: impl std::fmt::Display) -> CallError {
        CallError::new(
            ErrorCode::Transport,
            format!("broker {} unreachable: {e}", self.display),
        )
    }

    async fn mux(&self) -> Result<ConnectionManager, CallError> {
        let mut slot = self.mux.lock().await;
        if let Some(m) = &*slot {
            return Ok(m.clone());
        }
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let m = tokio::time::timeout(
            OP_TIMEOUT,
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
    fn sync_conn(&self, read_timeout: Duration) -> Result<redis::Connection, CallError> {
        let pooled = self
            .blocking
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let conn = match pooled {
            Some(c) => c,
            None => self
                .client
                .get_connection_with_timeout(CONNECT_TIMEOUT)
                .map_err(|e| self.down(e))?,
        };
        conn.set_read_timeout(Some(read_timeout))
            .and_then(|()| conn.set_write_timeout(Some(OP_TIMEOUT)))
            .map_err(|e| self.down(e))?;
        Ok(conn)
    }

    /// Returns a connection whose last exchange completed, for reuse.
    fn give_back(&self, c: redis::Connection) {
        let mut pool = self.blocking.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < 64 {
            pool.push(c);
        }
    }

    async fn query(&self, cmd: &redis::Cmd) -> Result<Value, CallError> {
        let mut m = self.mux().await?;
        self.bounded(cmd.query_async::<Value>(&mut m)).await
    }

    /// Runs a pipeline on the multiplexed connection.
    async fn query_pipe(&self, p: &redis::Pipeline) -> Result<Value, CallError> {
        let mut m = self.mux().await?;
        self.bounded(p.query_async::<Value>(&mut m)).await
    }

    /// Bounds one broker operation by [`OP_TIMEOUT`].
    async fn bounded(
        &self,
        op: impl std::future::Future<Output = redis::RedisResult<Value>>,
    ) -> Result<Value, CallError> {
        match tokio::time::timeout(OP_TIMEOUT, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.down(e)),
            Err(_) => Err(self.down("no answer in time")),
        }
    }

    fn new_request_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!(
            "{}-{}-{nanos:x}-{n:x}",
            self.config.node,
            std::process::id()
        )
    }

    /// Calls `name` of namespace `ns` through its stream and waits for the
    /// reply up to `timeout`.
    pub fn call(
        &self,
        ns: &str,
        name: &str,
        request: &[u8],
        timeout: Duration,
        max_payload: usize,
    ) -> Result<Vec<u8>, CallError> {
        let id = self.new_request_id();
        let reply = format!("cwasi:reply:{id}");
        let deadline = now_ms() + timeout.as_millis() as u64;
        let mut add = redis::cmd("XADD");
        add.arg(stream_key(ns, name))
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAXLEN)
            .arg("*")
            .arg("id")
            .arg(&id)
            .arg("reply")
            .arg(&reply)
            .arg("deadline")
            .arg(deadline);
        let mut p = redis::pipe();
        if request.len() >= PAYLOAD_KEY_MIN {
            // It lives until the request's deadline; a server deletes it
            // when it answers.
            let key = format!("cwasi:payload:{id}");
            p.cmd("SET")
                .arg(&key)
                .arg(request)
                .arg("PX")
                .arg(timeout.as_millis().max(1) as u64 + LATE_MARGIN_MS);
            add.arg("payload_key").arg(key);
        } else {
            add.arg("payload").arg(request);
        }
        // The request and the wait go out together, on a connection of their
        // own: one round trip to the broker. A popped list is gone; an
        // unanswered key expires with its reply.
        p.add_command(add)
            .cmd("BLPOP")
            .arg(&reply)
            .arg(timeout.as_secs_f64().max(0.01));
        let timed_out = || {
            CallError::new(
                ErrorCode::Timeout,
                format!(
                    "'{name}' (namespace '{ns}') did not answer within {timeout:?} through the \
                     broker"
                ),
            )
        };
        let mut conn = self.sync_conn(timeout + Duration::from_secs(2))?;
        let value = match p.query::<Vec<Value>>(&mut conn) {
            Ok(mut replies) if replies.len() == p.len() => replies.pop().unwrap_or(Value::Nil),
            Ok(other) => return Err(self.down(format!("unexpected reply {other:?}"))),
            // The socket's own bound, past BLPOP's: the connection, which may
            // still have the wait pending, is dropped.
            Err(e) if e.is_timeout() => return Err(timed_out()),
            Err(e) => return Err(self.down(e)),
        };
        let envelope = match value {
            Value::Array(mut items) if items.len() == 2 => match items.pop() {
                Some(Value::BulkString(b)) => b,
                _ => return Err(self.down("malformed reply")),
            },
            Value::Nil => {
                self.give_back(conn);
                return Err(timed_out());
            }
            other => return Err(self.down(format!("unexpected reply {other:?}"))),
        };
        let response = match decode_reply(envelope) {
            Ok(Reply::Body(body)) => body,
            Err(e) => {
                self.give_back(conn);
                return Err(e);
            }
            // A large response waits in a key of its own; taking it deletes it.
            Ok(Reply::InKey(key)) => match redis::cmd("GETDEL")
                .arg(&key)
                .query::<Option<Vec<u8>>>(&mut conn)
            {
                Ok(Some(body)) => body,
                Ok(None) => {
                    return Err(CallError::new(
                        ErrorCode::Transport,
                        format!("the response in {key} is no longer in the broker (expired)"),
                    ))
                }
                Err(e) => return Err(self.down(e)),
            },
        };
        self.give_back(conn);
        if response.len() > max_payload {
            return Err(CallError::too_large(
                "response",
                response.len(),
                max_payload,
            ));
        }
        Ok(response)
    }

    /// Nodes that serve `name` right now, in any namespace.
    pub fn find(&self, name: &str) -> Result<Vec<RemoteEndpoint>, CallError> {
        self.rt.block_on(async {
            let ns = self
                .query(redis::cmd("SMEMBERS").arg(format!("cwasi:fn-ns:{name}")))
                .await?;
            let mut out = Vec::new();
            for ns in strings(ns) {
                let nodes = self
                    .query(
                        redis::cmd("ZRANGEBYSCORE")
                            .arg(format!("cwasi:fn-nodes:{ns}:{name}"))
                            .arg(now_ms())
                            .arg("+inf"),
                    )
                    .await?;
                for node in strings(nodes) {
                    out.push(RemoteEndpoint {
                        namespace: ns.clone(),
                        node,
                    });
                }
            }
            out.sort_by(|a, b| (&a.namespace, &a.node).cmp(&(&b.namespace, &b.node)));
            Ok(out)
        })
    }

    async fn announce(&self, ns: &str, name: &str, record: &str) -> Result<(), CallError> {
        let node = &self.config.node;
        let expires = now_ms() + ANNOUNCE_TTL.as_millis() as u64;
        let mut p = redis::pipe();
        p.atomic()
            .cmd("HSET")
            .arg(format!("cwasi:node:{node}"))
            .arg(format!("{ns}/{name}"))
            .arg(record)
            .cmd("PEXPIRE")
            .arg(format!("cwasi:node:{node}"))
            .arg(ANNOUNCE_TTL.as_millis() as u64)
            .cmd("ZADD")
            .arg(format!("cwasi:fn-nodes:{ns}:{name}"))
            .arg(expires)
            .arg(node)
            .cmd("ZREMRANGEBYSCORE")
            .arg(format!("cwasi:fn-nodes:{ns}:{name}"))
            .arg("-inf")
            .arg(now_ms())
            .cmd("SADD")
            .arg(format!("cwasi:fn-ns:{name}"))
            .arg(ns);
        self.query_pipe(&p).await.map(|_| ())
    }

    async fn unannounce(&self, ns: &str, name: &str) -> Result<(), CallError> {
        let node = &self.config.node;
        let mut p = redis::pipe();
        p.cmd("HDEL")
            .arg(format!("cwasi:node:{node}"))
            .arg(format!("{ns}/{name}"))
            .cmd("ZREM")
            .arg(format!("cwasi:fn-nodes:{ns}:{name}"))
            .arg(node);
        self.query_pipe(&p).await.map(|_| ())
    }

    /// Creates the consumer group (from the stream's start, so requests
    /// added before any server existed are served too).
    async fn ensure_group(&self, stream: &str) -> Result<(), CallError> {
        let mut c = redis::cmd("XGROUP");
        c.arg("CREATE")
            .arg(stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM");
        match self.query(&c).await {
            Ok(_) => Ok(()),
            Err(e) if e.message.contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The status of a reply whose response is in a key of its own, named by
/// the rest of the envelope (responses from [`PAYLOAD_KEY_MIN`] on).
const STATUS_IN_KEY: i32 = 1;

/// `status (i32 LE) ‖ bytes`: 0 and the response, [`STATUS_IN_KEY`] and the
/// key holding it, or an ABI error code and the error message.
fn envelope(status: i32, bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + bytes.len());
    v.extend_from_slice(&status.to_le_bytes());
    v.extend_from_slice(bytes);
    v
}

/// What a reply envelope carries.
#[derive(Debug, PartialEq)]
enum Reply {
    /// The response itself.
    Body(Vec<u8>),
    /// The key that holds the response.
    InKey(String),
}

fn decode_reply(mut envelope: Vec<u8>) -> Result<Reply, CallError> {
    if envelope.len() < 4 {
        return Err(CallError::new(
            ErrorCode::Transport,
            "a reply shorter than its status",
        ));
    }
    let status = i32::from_le_bytes(envelope[..4].try_into().expect("4 bytes"));
    match status {
        0 => {
            envelope.drain(..4);
            Ok(Reply::Body(envelope))
        }
        STATUS_IN_KEY => String::from_utf8(envelope.split_off(4))
            .map(Reply::InKey)
            .map_err(|_| CallError::new(ErrorCode::Transport, "a reply naming a bad key")),
        _ => Err(CallError::new(
            ErrorCode::from_raw(status).unwrap_or(ErrorCode::Transport),
            String::from_utf8_lossy(&envelope[4..]).into_owned(),
        )),
    }
}

fn strings(v: Value) -> Vec<String> {
    match v {
        Value::Array(items) | Value::Set(items) => items
            .into_iter()
            .filter_map(|i| match i {
                Value::BulkString(b) => String::from_utf8(b).ok(),
                Value::SimpleString(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn field_map(fields: Vec<Value>) -> Option<Entry> {
    let mut id = None;
    let mut reply = None;
    let mut deadline = None;
    let mut payload = None;
    let mut it = fields.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let Value::BulkString(k) = k else { continue };
        let Value::BulkString(v) = v else { continue };
        match k.as_slice() {
            b"id" => id = String::from_utf8(v).ok(),
            b"reply" => reply = String::from_utf8(v).ok(),
            b"deadline" => deadline = std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()),
            b"payload" => payload = Some(Payload::Inline(v)),
            b"payload_key" => payload = String::from_utf8(v).ok().map(Payload::Key),
            _ => {}
        }
    }
    Some(Entry {
        entry_id: String::new(),
        id: id?,
        reply: reply?,
        deadline_ms: deadline?,
        payload: payload?,
    })
}

/// Parses `[ [entry-id, [field, value, ...]], ... ]`, keeping malformed
/// entries as ids only (so they can be acknowledged and dropped).
fn entries(list: Value) -> Vec<Result<Entry, String>> {
    let Value::Array(items) = list else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|e| {
            let Value::Array(mut pair) = e else {
                return None;
            };
            if pair.len() != 2 {
                return None;
            }
            let fields = pair.pop()?;
            let eid = match pair.pop()? {
                Value::BulkString(b) => String::from_utf8(b).ok()?,
                Value::SimpleString(s) => s,
                _ => return None,
            };
            Some(match fields {
                Value::Array(f) => match field_map(f) {
                    Some(mut entry) => {
                        entry.entry_id = eid;
                        Ok(entry)
                    }
                    None => Err(eid),
                },
                _ => Err(eid),
            })
        })
        .collect()
}

/// Serves one function from its stream: consumer threads, a reclaimer of
/// entries left by dead consumers, and the announcement heartbeat. Dropping
/// it stops them and unannounces the function.
pub struct StreamServer {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    broker: Arc<Broker>,
    namespace: String,
    name: String,
}

/// What a stream server runs for each request.
pub type Handler = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, CallError> + Send + Sync>;

impl StreamServer {
    /// Starts `workers` consumers of `cwasi:fn:{ns}:{name}` running `handler`,
    /// announcing the function with `record` (JSON) every heartbeat.
    pub fn start(
        broker: Arc<Broker>,
        ns: &str,
        name: &str,
        record: String,
        workers: usize,
        lease: Duration,
        handler: Handler,
    ) -> Result<StreamServer, RuntimeError> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let stream = stream_key(ns, name);
        let spawn = |label: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(label)
                .spawn(f)
                .map_err(|e| RuntimeError::Config(format!("cannot start a broker thread: {e}")))
        };
        for w in 0..workers.max(1) {
            let (b, s, st, h) = (
                broker.clone(),
                stream.clone(),
                stop.clone(),
                handler.clone(),
            );
            let consumer = format!("{}:{}:{w}", broker.node(), std::process::id());
            threads.push(spawn(
                format!("cwasi-consume-{w}"),
                Box::new(move || consume(&b, &s, &consumer, lease, &h, &st)),
            )?);
        }
        let (b, ns2, name2, st) = (
            broker.clone(),
            ns.to_string(),
            name.to_string(),
            stop.clone(),
        );
        threads.push(spawn(
            "cwasi-heartbeat".into(),
            Box::new(move || heartbeat(&b, &ns2, &name2, &record, &st)),
        )?);
        Ok(StreamServer {
            stop,
            threads,
            broker,
            namespace: ns.to_string(),
            name: name.to_string(),
        })
    }
}

impl Drop for StreamServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let b = &self.broker;
        let _ = b.rt.block_on(async {
            tokio::time::timeout(OP_TIMEOUT, b.unannounce(&self.namespace, &self.name)).await
        });
        tracing::info!(name = %self.name, namespace = %self.namespace, "unannounced");
    }
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let step = Duration::from_millis(50);
    let mut left = d;
    while !stop.load(Ordering::Relaxed) && !left.is_zero() {
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
}

fn heartbeat(b: &Broker, ns: &str, name: &str, record: &str, stop: &AtomicBool) {
    let mut failing = false;
    while !stop.load(Ordering::Relaxed) {
        match b.rt.block_on(b.announce(ns, name, record)) {
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
        sleep_unless_stopped(
            if failing {
                Duration::from_millis(500)
            } else {
                HEARTBEAT
            },
            stop,
        );
    }
}

/// One consumer of one stream, as `process` and `admit` need it.
#[derive(Clone, Copy)]
struct Consumer<'a> {
    broker: &'a Broker,
    stream: &'a str,
    name: &'a str,
    lease: Duration,
}

fn consume(
    b: &Broker,
    stream: &str,
    consumer: &str,
    lease: Duration,
    handler: &Handler,
    stop: &AtomicBool,
) {
    let at = Consumer {
        broker: b,
        stream,
        name: consumer,
        lease,
    };
    let mut backoff = Duration::from_millis(100);
    let mut group_ready = false;
    let mut last_reclaim = std::time::Instant::now();
    // This consumer's own connection for its reads and replies.
    let mut conn: Option<redis::Connection> = None;
    // The answer to the request just run: it goes out with the next read, in
    // one write, unless something else comes first.
    let mut owed: Option<redis::Pipeline> = None;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let reclaim_due = last_reclaim.elapsed() >= lease / 2;
        if stopping || reclaim_due || !group_ready {
            if let Some(p) = owed.take() {
                send_answer(at, &mut conn, p);
            }
        }
        if stopping {
            break;
        }
        let step = (|| {
            if !group_ready {
                b.rt.block_on(b.ensure_group(stream))?;
                group_ready = true;
            }
            // Entries left pending by dead consumers, once they are past
            // their lease.
            if reclaim_due {
                last_reclaim = std::time::Instant::now();
                let mut c = redis::cmd("XAUTOCLAIM");
                c.arg(stream)
                    .arg(GROUP)
                    .arg(consumer)
                    .arg(lease.as_millis() as u64)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(16);
                if let Value::Array(mut parts) = b.rt.block_on(b.query(&c))? {
                    if parts.len() >= 2 {
                        let claimed = parts.swap_remove(1);
                        let list = entries(claimed);
                        if !list.is_empty() {
                            tracing::info!(count = list.len(), "reclaimed pending requests");
                        }
                        return Ok::<_, CallError>((list, true));
                    }
                }
            }
            let c = consumer_conn(b, &mut conn)?;
            let mut read = redis::cmd("XREADGROUP");
            read.arg("GROUP")
                .arg(GROUP)
                .arg(consumer)
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(1000)
                .arg("STREAMS")
                .arg(stream)
                .arg(">");
            let answering = owed.is_some();
            let mut p = owed.take().unwrap_or_else(answer_pipe);
            p.add_command(read);
            let mut values = p.query::<Vec<Value>>(c).map_err(|e| {
                conn = None;
                if answering {
                    tracing::warn!(
                        stream,
                        "could not send an answer (its request stays pending and will be \
                         reclaimed): {e}"
                    );
                }
                b.down(e)
            })?;
            let v = values.pop().unwrap_or(Value::Nil);
            if answering {
                check_answer(at, values.pop());
            }
            // [[stream, [entries...]]] or nil
            let list = match v {
                Value::ServerError(e) => {
                    if e.code() == "NOGROUP" {
                        group_ready = false;
                    }
                    return Err(b.down(e));
                }
                Value::Array(mut streams) if !streams.is_empty() => match streams.swap_remove(0) {
                    Value::Array(mut pair) if pair.len() == 2 => entries(pair.swap_remove(1)),
                    _ => Vec::new(),
                },
                Value::Map(mut m) if !m.is_empty() => entries(m.swap_remove(0).1),
                _ => Vec::new(),
            };
            Ok((list, false))
        })();
        match step {
            Ok((list, reclaimed)) => {
                backoff = Duration::from_millis(100);
                for e in list {
                    if let Some(p) = owed.take() {
                        send_answer(at, &mut conn, p);
                    }
                    owed = process(at, handler, e, reclaimed, &mut conn);
                }
            }
            Err(e) => {
                tracing::warn!(stream, "broker error, retrying in {backoff:?}: {e}");
                group_ready = false;
                conn = None;
                sleep_unless_stopped(backoff, stop);
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

fn ack_pipe(stream: &str, eid: &str) -> redis::Pipeline {
    let mut p = redis::pipe();
    p.cmd("XACK")
        .arg(stream)
        .arg(GROUP)
        .arg(eid)
        .cmd("XDEL")
        .arg(stream)
        .arg(eid);
    p
}

/// An empty pipeline for an answer: server errors come back as values, so
/// that the answer's and the next read's can be told apart.
fn answer_pipe() -> redis::Pipeline {
    let mut p = redis::pipe();
    p.ignore_errors();
    p
}

/// The commands that answer a request, as one `MULTI`: store the reply and
/// its expiry (a large response in a key of its own, which the reply names),
/// acknowledge and delete the entry, and delete the request's claim (if
/// reclaimed) and payload key (if any). Only the `EXEC` has a value in the
/// pipeline's result.
fn answer(
    stream: &str,
    e: &Entry,
    result: Result<Vec<u8>, CallError>,
    reclaimed: bool,
) -> redis::Pipeline {
    let ttl = REPLY_TTL.as_millis() as u64;
    let mut p = answer_pipe();
    p.cmd("MULTI").ignore();
    let reply = match result {
        Ok(body) if body.len() >= PAYLOAD_KEY_MIN => {
            let key = format!("cwasi:response:{}", e.id);
            p.cmd("SET").arg(&key).arg(body).arg("PX").arg(ttl).ignore();
            envelope(STATUS_IN_KEY, key.as_bytes())
        }
        Ok(body) => envelope(0, &body),
        Err(err) => envelope(err.code.as_raw(), err.message.as_bytes()),
    };
    p.cmd("LPUSH")
        .arg(&e.reply)
        .arg(reply)
        .ignore()
        .cmd("PEXPIRE")
        .arg(&e.reply)
        .arg(ttl)
        .ignore()
        .cmd("XACK")
        .arg(stream)
        .arg(GROUP)
        .arg(&e.entry_id)
        .ignore()
        .cmd("XDEL")
        .arg(stream)
        .arg(&e.entry_id)
        .ignore();
    if reclaimed {
        p.cmd("DEL").arg(claim_key(&e.id)).ignore();
    }
    if let Payload::Key(key) = &e.payload {
        p.cmd("DEL").arg(key).ignore();
    }
    p.cmd("EXEC");
    p
}

fn claim_key(id: &str) -> String {
    format!("cwasi:claim:{id}")
}

/// The consumer's own connection for its reads and answers, opened if it
/// has none (after a failure, it is dropped and opened again).
fn consumer_conn<'c>(
    b: &Broker,
    conn: &'c mut Option<redis::Connection>,
) -> Result<&'c mut redis::Connection, CallError> {
    match conn {
        Some(c) => Ok(c),
        None => Ok(conn.insert(b.sync_conn(OP_TIMEOUT)?)),
    }
}

/// Sends an answer on its own (when no read follows it at once).
fn send_answer(at: Consumer<'_>, conn: &mut Option<redis::Connection>, p: redis::Pipeline) {
    let sent = consumer_conn(at.broker, conn)
        .and_then(|c| p.query::<Vec<Value>>(c).map_err(|e| at.broker.down(e)));
    match sent {
        Ok(mut values) => check_answer(at, values.pop()),
        Err(err) => {
            *conn = None;
            tracing::warn!(
                stream = at.stream,
                "could not send an answer (its request stays pending and will be reclaimed): \
                 {err}"
            );
        }
    }
}

/// Logs an answer's `EXEC` that failed (the request then stays pending, to
/// be reclaimed) or whose commands partly failed.
fn check_answer(at: Consumer<'_>, exec: Option<Value>) {
    let failure = match exec {
        Some(Value::Array(items)) => items.into_iter().find_map(|v| match v {
            Value::ServerError(e) => Some(e.to_string()),
            _ => None,
        }),
        Some(Value::ServerError(e)) => Some(e.to_string()),
        other => Some(format!("unexpected reply {other:?}")),
    };
    if let Some(failure) = failure {
        tracing::warn!(
            stream = at.stream,
            "an answer was not stored in full (its request may be reclaimed): {failure}"
        );
    }
}

/// Runs one request and returns the commands that answer it, or `None` if
/// it is not run here (expired, malformed, answered or held elsewhere) or
/// must stay pending (its payload could not be read).
///
/// A fresh entry (delivered by `>`) was never given to another consumer, so
/// it runs at once. A `reclaimed` one may have been answered by a consumer
/// whose answer raced the reclaim (then the entry is gone, since the answer
/// deletes it), or may still be running elsewhere (the claim): it runs only
/// if neither holds. A consumer cannot keep a fresh entry past the lease
/// while alive, since its call is stopped at the call timeout and the lease
/// is longer.
fn process(
    at: Consumer<'_>,
    handler: &Handler,
    entry: Result<Entry, String>,
    reclaimed: bool,
    conn: &mut Option<redis::Connection>,
) -> Option<redis::Pipeline> {
    let Consumer {
        broker: b, stream, ..
    } = at;
    // A fresh entry needs no broker round trip before it runs.
    let admitted = match entry {
        Ok(e) if !reclaimed && now_ms() <= e.deadline_ms => Ok(Some(e)),
        entry => b.rt.block_on(admit(at, entry, reclaimed)),
    };
    let e = match admitted {
        Ok(Some(e)) => e,
        Ok(None) => return None,
        Err(err) => {
            tracing::warn!(
                stream,
                "could not admit a request (it stays pending): {err}"
            );
            return None;
        }
    };
    let result = match &e.payload {
        Payload::Inline(bytes) => handler(bytes),
        Payload::Key(key) => match fetch(b, conn, key) {
            Ok(Some(bytes)) => handler(&bytes),
            Ok(None) => Err(CallError::new(
                ErrorCode::Transport,
                "the request's payload is no longer in the broker (expired or evicted)",
            )),
            Err(err) => {
                *conn = None;
                tracing::warn!(
                    stream,
                    "could not read a request's payload (it stays pending): {err}"
                );
                return None;
            }
        },
    };
    Some(answer(stream, &e, result, reclaimed))
}

/// Reads a large request's payload key on the consumer's connection.
fn fetch(
    b: &Broker,
    conn: &mut Option<redis::Connection>,
    key: &str,
) -> Result<Option<Vec<u8>>, CallError> {
    let c = consumer_conn(b, conn)?;
    redis::cmd("GET")
        .arg(key)
        .query::<Option<Vec<u8>>>(c)
        .map_err(|e| b.down(e))
}

/// Decides whether a reclaimed, expired or malformed entry runs here; the
/// ones that do not are acknowledged or left to their claim holder.
async fn admit(
    at: Consumer<'_>,
    entry: Result<Entry, String>,
    reclaimed: bool,
) -> Result<Option<Entry>, CallError> {
    let Consumer {
        broker: b,
        stream,
        name: consumer,
        lease,
    } = at;
    let e = match entry {
        Ok(e) => e,
        Err(eid) => {
            tracing::warn!(stream, entry = %eid, "dropping a malformed request");
            b.query_pipe(&ack_pipe(stream, &eid)).await?;
            return Ok(None);
        }
    };
    if now_ms() > e.deadline_ms {
        // The caller has given up and reported the failure.
        tracing::debug!(id = %e.id, "dropping an expired request");
        b.query_pipe(&ack_pipe(stream, &e.entry_id)).await?;
        return Ok(None);
    }
    if !reclaimed {
        return Ok(Some(e));
    }
    let still_there = b
        .query(
            redis::cmd("XRANGE")
                .arg(stream)
                .arg(&e.entry_id)
                .arg(&e.entry_id),
        )
        .await?;
    if matches!(&still_there, Value::Array(items) if items.is_empty()) {
        // Answered (the answer deletes the entry) by a consumer that finished
        // just as it was reclaimed.
        b.query_pipe(&ack_pipe(stream, &e.entry_id)).await?;
        return Ok(None);
    }
    let mut claim = redis::cmd("SET");
    claim
        .arg(claim_key(&e.id))
        .arg(consumer)
        .arg("NX")
        .arg("PX")
        .arg(lease.as_millis() as u64);
    if b.query(&claim).await? == Value::Nil {
        // Another consumer runs it; if that one dies, the entry is
        // reclaimed once the claim's lease is over.
        return Ok(None);
    }
    Ok(Some(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip() {
        assert_eq!(
            decode_reply(envelope(0, b"abc")).unwrap(),
            Reply::Body(b"abc".to_vec())
        );
        assert_eq!(
            decode_reply(envelope(STATUS_IN_KEY, b"cwasi:response:x")).unwrap(),
            Reply::InKey("cwasi:response:x".into())
        );
        let err = CallError::new(ErrorCode::CalleeTrapped, "boom");
        let e = decode_reply(envelope(err.code.as_raw(), err.message.as_bytes())).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::CalleeTrapped, "boom")
        );
        assert!(decode_reply(vec![1]).is_err());
        assert!(decode_reply(envelope(STATUS_IN_KEY, &[0xff])).is_err());
    }

    #[test]
    fn tls_settings_come_from_the_environment() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = BrokerConfig::from_vars(&vars(&[
            ("CWASI_REDIS_URL", "rediss://h:1"),
            ("CWASI_REDIS_CA_FILE", "/ca.pem"),
            ("CWASI_REDIS_CLIENT_CERT", "/c.pem"),
            ("CWASI_REDIS_CLIENT_KEY", "/k.pem"),
            ("CWASI_NODE", "n1"),
        ]))
        .unwrap();
        assert_eq!(c.ca_file, Some(PathBuf::from("/ca.pem")));
        assert_eq!(
            c.client_cert,
            Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem")))
        );
        // Half a pair is kept, so that `Broker::new` can say what is missing.
        let half = BrokerConfig::from_vars(&vars(&[
            ("CWASI_REDIS_URL", "rediss://h:1"),
            ("CWASI_REDIS_CLIENT_KEY", "/k.pem"),
        ]))
        .unwrap();
        assert_eq!(
            half.client_cert,
            Some((PathBuf::new(), PathBuf::from("/k.pem")))
        );
        let e = Broker::new(half).unwrap_err().to_string();
        assert!(e.contains("CWASI_REDIS_CLIENT_CERT is not set"), "{e}");
        assert!(BrokerConfig::from_vars(&vars(&[])).is_none());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://u:secret@h:1"), "redis://***@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
