//! Hosting a function for other processes (`cwasi serve`, the shim): the
//! orchestration only. It registers the function in the node directory,
//! publishes its module for same-namespace callers to embed, starts the
//! local server on its socket and, with a broker, the stream server that
//! other nodes reach; both servers answer through `guest::invoke`.

use std::any::Any;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::call::{CallMeta, Incoming, VecIo};
use crate::config::Mode;
use crate::deadline::{DEFAULT_MIN_PAYLOAD_RATE, LEASE_GRACE};
use crate::error::{CallError, ErrorCode, RuntimeError};
use crate::guest::function::Function;
use crate::guest::invoke::{serve_call, CallerExchange};
use crate::guest::trim::IdleTrimmer;
use crate::node_dir::{EmbedInfo, EndpointRecord, NodeDirectory, Registration, RECORD_VERSION};
use crate::transport::direct::{DirectServer, DirectSettings};
use crate::transport::local::server::{LocalServer, ServerSettings, Taking};
use crate::transport::node_identity::NodeIdentity;
use crate::transport::remote::{Broker, Handler, RequestMeta, StreamServer};

/// Most consumers of a function's request stream on one server. A server
/// runs one per call it may run at once (`ServeOptions::max_concurrent_calls`),
/// as the local server has that many call slots: each level of a chain of
/// nested calls holds one while it waits, so a call cycle among servers
/// reaches the depth limit (and is refused there) when the servers have
/// that many consumers between them.
const MAX_STREAM_CONSUMERS: usize = 64;

/// How a server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Calls that may run at once; more wait for a slot.
    pub max_concurrent_calls: usize,
    /// Connections open at once; more are refused with `RESOURCE_LIMIT`.
    /// Callers pool connections, so a few per caller process suffice.
    pub max_connections: usize,
    /// Uids allowed besides the server's own and root.
    pub allowed_uids: Vec<u32>,
    /// How long an idle connection is kept open (callers reopen one when
    /// they need it).
    pub idle_timeout: Duration,
    /// A network address to take direct calls from other nodes on
    /// (`--listen`, `CWASI_LISTEN`), announced in the cluster registry;
    /// port 0 picks a free one. Needs a broker, and TLS files or plain TCP
    /// allowed (`RuntimeBuilder::direct`).
    pub listen: Option<SocketAddr>,
    /// How long a stopping server waits for the calls in flight to finish
    /// (`--drain-secs`): dropping the [`ServeHandle`] first withdraws the
    /// record and stops taking new connections, then waits up to this long.
    pub drain_timeout: Duration,
    /// The slowest, in bytes per second, that a request's payload may
    /// arrive at while it holds a call slot (`--min-payload-kib-per-sec`):
    /// a payload of `n` bytes must be in within 2 s plus `n` at this rate,
    /// or the request is cut off with an error frame.
    pub min_payload_rate: u64,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_concurrent_calls: 16,
            max_connections: 128,
            allowed_uids: Vec::new(),
            idle_timeout: Duration::from_secs(30),
            listen: None,
            drain_timeout: Duration::from_secs(10),
            min_payload_rate: DEFAULT_MIN_PAYLOAD_RATE,
        }
    }
}

/// A running server. Dropping it withdraws the record (new callers no longer
/// find it), stops the broker consumers and the accept loops, and then waits
/// for the calls in flight to finish, for up to
/// [`ServeOptions::drain_timeout`].
pub struct ServeHandle {
    /// The broker consumers, when remote mode is configured.
    stream: Option<StreamServer>,
    direct: Option<DirectServer>,
    local: Option<LocalServer>,
    /// The requests its local connections took and have not answered.
    local_taking: Taking,
    registration: Option<Registration>,
    /// Gives the memory of large calls back when the function is idle.
    trimmer: Option<IdleTrimmer>,
    /// The function served, whose calls in flight a stop waits for.
    function: Arc<Function>,
    drain_timeout: Duration,
    record: EndpointRecord,
    /// Keeps the runtime (its engine's epoch ticker, its routes) alive while
    /// the function is served.
    _runtime: Arc<dyn Any + Send + Sync>,
}

impl ServeHandle {
    /// What was published in the node directory.
    pub fn record(&self) -> &EndpointRecord {
        &self.record
    }

    /// The broker stream's pending entries (delivered, not yet answered);
    /// `None` when the function is not served through a broker.
    pub fn broker_pending(&self) -> Option<Result<u64, CallError>> {
        self.stream.as_ref().map(StreamServer::pending)
    }
}

impl Drop for ServeHandle {
    fn drop(&mut self) {
        // The open local connections take no further request (each
        // finishes the call it took; the caller makes the next one
        // elsewhere), and at once the record is withdrawn, so that no new
        // caller picks this server while it stops. In that order: whoever
        // sees the record gone finds the server draining. Then the servers
        // stop, and the stop waits for the calls taken.
        if let Some(local) = &self.local {
            local.drain();
        }
        self.registration.take();
        self.trimmer.take();
        self.stream.take();
        self.direct.take();
        self.local.take();
        let until = Instant::now() + self.drain_timeout;
        let mut waited = false;
        let busy = |h: &Self| h.function.served.in_flight() > 0 || h.local_taking.count() > 0;
        while busy(self) && Instant::now() < until {
            waited = true;
            std::thread::sleep(Duration::from_millis(5));
        }
        let left = self.function.served.in_flight();
        if left > 0 {
            tracing::warn!(function = %self.function.spec.name, left, "stopped with calls in flight after the drain time");
        } else if waited {
            tracing::info!(function = %self.function.spec.name, "the calls in flight finished");
        }
    }
}

/// The signals that stop a server cleanly (SIGTERM, SIGINT, SIGHUP), so
/// that dropping its [`ServeHandle`] removes the record and socket. Install
/// them before serving: a process that is pid 1 of its PID namespace (a
/// container) ignores signals it has no handler for.
pub struct StopSignals(signal_hook::iterator::Signals);

impl StopSignals {
    /// Installs the handlers.
    pub fn install() -> io::Result<StopSignals> {
        signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGHUP,
        ])
        .map(StopSignals)
    }

    /// Blocks until one of them arrives, and returns it.
    pub fn wait(&mut self) -> Option<i32> {
        let signal = self.0.forever().next();
        tracing::info!(?signal, "stopping");
        signal
    }
}

/// Where a function is served from: this node's name, and the broker that
/// makes it reachable from other nodes, if any.
pub(crate) struct Host<'a> {
    /// This node's name, as the record gives it.
    pub node: &'a str,
    /// The broker, for remote mode.
    pub broker: Option<&'a Arc<Broker>>,
    /// TLS for the direct data plane, if configured (else plain TCP, if
    /// allowed).
    pub direct_tls: Option<Arc<rustls::ServerConfig>>,
    /// Whether plain TCP is allowed for the direct data plane.
    pub allow_plain: bool,
    /// This node's identity (with TLS): what proves which node a direct
    /// caller is.
    pub node_identity: Option<Arc<NodeIdentity>>,
    /// What keeps the runtime alive while it serves.
    pub runtime: Arc<dyn Any + Send + Sync>,
}

/// Publishes the module so that callers of the same namespace can embed the
/// function, unless it has preopened directories: those are paths of this
/// process's filesystem, which a caller elsewhere does not share.
fn embed_info(function: &Function, dir: &NodeDirectory) -> Option<EmbedInfo> {
    let spec = &function.spec;
    if !spec.preopens.is_empty() {
        tracing::info!(function = %spec.name, "not embeddable elsewhere: it has preopened directories");
        return None;
    }
    match dir.publish_module(&function.module.bytes, &function.module.digest) {
        Ok(module_file) => Some(EmbedInfo {
            module_file,
            args: spec.args.clone(),
            env: spec.env.clone(),
            seed_handler: spec.seed.handler.clone(),
            allow_callers: spec
                .policy
                .rules()
                .map(|rules| rules.iter().map(|r| r.to_string()).collect()),
        }),
        Err(e) => {
            tracing::warn!(function = %spec.name, "cannot publish the module for embedding: {e}");
            None
        }
    }
}

/// Binds the socket, publishes the record and starts the servers.
pub(crate) fn serve(
    function: &Arc<Function>,
    dir: &NodeDirectory,
    opts: ServeOptions,
    host: Host<'_>,
) -> Result<ServeHandle, RuntimeError> {
    let spec = &function.spec;
    if !function.is_callable() {
        return Err(RuntimeError::Config(function.not_callable_reason()));
    }
    let socket = dir.socket_path(&spec.name, &spec.namespace);
    // A live server of the same name refuses here; a stale one is cleaned.
    if let Some(live) = dir.lookup(&spec.name, &spec.namespace) {
        return Err(RuntimeError::AlreadyServed {
            name: live.name,
            namespace: live.namespace,
            pid: live.pid,
        });
    }
    let _ = std::fs::remove_file(&socket);
    let io_err = |e: io::Error| RuntimeError::Io {
        path: socket.clone(),
        source: e,
    };
    let listener = UnixListener::bind(&socket).map_err(io_err)?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    let direct = match opts.listen {
        Some(addr) => Some(serve_direct(function, addr, &host, &opts)?),
        None => None,
    };
    let record = EndpointRecord {
        version: RECORD_VERSION,
        name: spec.name.clone(),
        namespace: spec.namespace.clone(),
        node: host.node.to_string(),
        module: std::fs::canonicalize(&function.module.path)
            .unwrap_or_else(|_| function.module.path.clone()),
        digest: function.module.digest.clone(),
        socket: socket.clone(),
        pid: std::process::id(),
        embed: embed_info(function, dir),
        data_addr: direct.as_ref().map(|d| d.data_addr().to_string()),
        slots: u32::try_from(opts.max_concurrent_calls.max(1)).ok(),
    };
    // Accepting before the record is published: a caller that finds the
    // record is served at once (it would otherwise wait in the socket's
    // backlog while the broker's consumers start).
    let mut allowed_uids = opts.allowed_uids.clone();
    allowed_uids.push(rustix::process::getuid().as_raw());
    allowed_uids.push(0);
    let settings = ServerSettings {
        max_concurrent_calls: opts.max_concurrent_calls,
        max_connections: opts.max_connections,
        allowed_uids,
        idle_timeout: opts.idle_timeout,
        node: host.node.into(),
        min_payload_rate: opts.min_payload_rate,
    };
    let local = LocalServer::start(listener, function.clone(), settings)?;
    let local_taking = local.taking();
    let registration = dir.register(&record)?;
    let stream = match host.broker {
        Some(broker) => Some(serve_stream(function, broker, &record, &opts)?),
        None => None,
    };
    Ok(ServeHandle {
        local_taking,
        stream,
        direct,
        local: Some(local),
        registration: Some(registration),
        trimmer: IdleTrimmer::start(function.clone()),
        function: function.clone(),
        drain_timeout: opts.drain_timeout,
        record,
        _runtime: host.runtime,
    })
}

/// Takes direct calls from other nodes on `addr` (TLS, or plain TCP when
/// allowed).
fn serve_direct(
    function: &Arc<Function>,
    addr: SocketAddr,
    host: &Host<'_>,
    opts: &ServeOptions,
) -> Result<DirectServer, RuntimeError> {
    if host.broker.is_none() {
        return Err(RuntimeError::Config(format!(
            "--listen {addr}: a data address is announced in the cluster registry, so it needs \
             a broker (CWASI_REDIS_URL)"
        )));
    }
    if addr.ip().is_unspecified() {
        return Err(RuntimeError::Config(format!(
            "--listen {addr}: listen on the address other nodes reach this one at (it is \
             announced as is), not on an unspecified one"
        )));
    }
    if host.direct_tls.is_none() && !host.allow_plain {
        return Err(RuntimeError::Config(format!(
            "--listen {addr}: the direct data plane needs TLS files (CWASI_TLS_CA, \
             CWASI_TLS_CERT, CWASI_TLS_KEY) or plain TCP asked for explicitly \
             (CWASI_DIRECT_PLAIN=1, for a trusted network)"
        )));
    }
    let listener = TcpListener::bind(addr).map_err(|source| RuntimeError::Io {
        path: format!("tcp://{addr}").into(),
        source,
    })?;
    let settings = DirectSettings {
        max_concurrent_calls: opts.max_concurrent_calls,
        max_connections: opts.max_connections,
        idle_timeout: opts.idle_timeout,
        identity: host.node_identity.clone(),
        min_payload_rate: opts.min_payload_rate,
    };
    let server = DirectServer::start(
        listener,
        function.clone(),
        host.direct_tls.clone(),
        settings,
    )?;
    tracing::info!(function = %function.spec.name, addr = %server.data_addr(), "taking direct calls");
    Ok(server)
}

/// Serves the function from its broker stream too, so other nodes reach it.
fn serve_stream(
    function: &Arc<Function>,
    broker: &Arc<Broker>,
    record: &EndpointRecord,
    opts: &ServeOptions,
) -> Result<StreamServer, RuntimeError> {
    let f = function.clone();
    let handler: Handler = Arc::new(move |request: &[u8], meta: RequestMeta| {
        let caller = meta
            .caller
            .ok_or_else(|| CallError::new(ErrorCode::Denied, "the request names no caller"))?;
        let incoming = Incoming {
            depth: meta.depth,
            deadline: Some(meta.deadline),
            trace: meta.trace,
            caller: &caller,
        };
        let call = CallMeta::incoming(incoming, &f.spec, f.limits())?;
        let mut io = VecIo {
            request,
            response: Vec::new(),
        };
        serve_call(&f, call, Mode::RemoteBroker, &mut CallerExchange(&mut io))?;
        Ok(io.response)
    });
    let json = serde_json::to_string(record).map_err(|e| RuntimeError::Encode {
        what: "the endpoint record",
        source: e,
    })?;
    let lease = function.limits().call_timeout + LEASE_GRACE;
    StreamServer::start(
        broker.clone(),
        &record.namespace,
        &record.name,
        json,
        opts.max_concurrent_calls.clamp(1, MAX_STREAM_CONSUMERS),
        lease,
        handler,
    )
}
