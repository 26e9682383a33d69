//! Hosting a function for other processes: `cwasi serve` and, later, the
//! shim. A server listens on a Unix socket in the node directory, checks each
//! peer's credentials, and runs calls concurrently (up to a limit) on its
//! pool of instances, moving payloads straight between the socket or the
//! shared region and the callee's linear memory.

use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::broker::{Broker, Handler, StreamServer};
use crate::error::{CallError, ErrorCode, RuntimeError};
use crate::instance::ResponseRange;
use crate::registry::{EmbedInfo, EndpointRecord, NodeDirectory, Registration, RECORD_VERSION};
use crate::runtime::{FunctionEntry, RuntimeInner};
use crate::transport::embedded::finish;
use crate::transport::embedded::EmbeddedTransport;
use crate::transport::shm::{recv_payload, recv_with_fd, send_frame, SharedRegion};
use crate::transport::wire::{self, Header, Kind, WireError, HEADER_LEN};
use crate::transport::{CallContext, Transport, VecIo};

/// How a server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Calls that may run at once; more wait for a slot.
    pub max_concurrent_calls: usize,
    /// Uids allowed besides the server's own and root.
    pub allowed_uids: Vec<u32>,
    /// How long an idle connection is kept open.
    pub idle_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_concurrent_calls: 16,
            allowed_uids: Vec::new(),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// A running server; dropping it stops accepting, unregisters the function
/// and removes its socket.
pub struct ServeHandle {
    /// The broker consumers, when remote mode is configured.
    stream: Option<StreamServer>,
    stop: Arc<AtomicBool>,
    socket: PathBuf,
    accept: Option<JoinHandle<()>>,
    registration: Option<Registration>,
    record: EndpointRecord,
}

impl ServeHandle {
    /// What was published in the node directory.
    pub fn record(&self) -> &EndpointRecord {
        &self.record
    }
}

impl Drop for ServeHandle {
    fn drop(&mut self) {
        self.stream.take();
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = UnixStream::connect(&self.socket);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        self.registration.take();
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

/// A counting semaphore bounding concurrent calls.
struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Slots {
    fn acquire(&self, wait: Duration) -> bool {
        let guard = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let (mut free, _) = self
            .cv
            .wait_timeout_while(guard, wait, |f| *f == 0)
            .unwrap_or_else(|p| p.into_inner());
        if *free == 0 {
            return false;
        }
        *free -= 1;
        true
    }

    fn release(&self) {
        *self.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.cv.notify_one();
    }
}

struct Shared {
    runtime: Arc<RuntimeInner>,
    function: Arc<FunctionEntry>,
    slots: Slots,
    allowed: Vec<u32>,
    idle_timeout: Duration,
}

/// Publishes the module so that callers of the same namespace can embed the
/// function, unless it has preopened directories: those are paths of this
/// process's filesystem, which a caller elsewhere does not share.
fn embed_info(function: &FunctionEntry, dir: &NodeDirectory) -> Option<EmbedInfo> {
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
        }),
        Err(e) => {
            tracing::warn!(function = %spec.name, "cannot publish the module for embedding: {e}");
            None
        }
    }
}

/// Binds the socket, publishes the record and starts accepting.
pub(crate) fn serve(
    runtime: &Arc<RuntimeInner>,
    function: &Arc<FunctionEntry>,
    dir: &NodeDirectory,
    opts: ServeOptions,
) -> Result<ServeHandle, RuntimeError> {
    let spec = &function.spec;
    let socket = dir.socket_path(&spec.name, &spec.namespace);
    // A live server of the same name refuses here; a stale one is cleaned.
    if let Some(live) = dir.lookup(&spec.name, &spec.namespace) {
        return Err(RuntimeError::Config(format!(
            "function '{}' of namespace '{}' is already served on this node (pid {})",
            live.name, live.namespace, live.pid
        )));
    }
    let _ = std::fs::remove_file(&socket);
    let io_err = |e: io::Error| RuntimeError::Io {
        path: socket.clone(),
        source: e,
    };
    let listener = UnixListener::bind(&socket).map_err(io_err)?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    let record = EndpointRecord {
        version: RECORD_VERSION,
        name: spec.name.clone(),
        namespace: spec.namespace.clone(),
        node: runtime.node.clone(),
        module: std::fs::canonicalize(&function.module.path)
            .unwrap_or_else(|_| function.module.path.clone()),
        digest: function.module.digest.clone(),
        socket: socket.clone(),
        pid: std::process::id(),
        embed: embed_info(function, dir),
    };
    let registration = dir.register(&record)?;
    let stream = match &runtime.broker {
        Some(broker) => Some(serve_stream(runtime, function, broker, &record, &opts)?),
        None => None,
    };
    let mut allowed = opts.allowed_uids.clone();
    allowed.push(rustix::process::getuid().as_raw());
    allowed.push(0);
    let shared = Arc::new(Shared {
        runtime: runtime.clone(),
        function: function.clone(),
        slots: Slots {
            free: Mutex::new(opts.max_concurrent_calls.max(1)),
            cv: Condvar::new(),
        },
        allowed,
        idle_timeout: opts.idle_timeout,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    let accept = std::thread::Builder::new()
        .name(format!("cwasi-serve-{}", spec.name))
        .spawn(move || accept_loop(listener, shared, stop_flag))
        .map_err(|e| RuntimeError::Config(format!("cannot start the accept thread: {e}")))?;
    Ok(ServeHandle {
        stream,
        stop,
        socket,
        accept: Some(accept),
        registration: Some(registration),
        record,
    })
}

/// Serves the function from its broker stream too, so other nodes reach it.
fn serve_stream(
    runtime: &Arc<RuntimeInner>,
    function: &Arc<FunctionEntry>,
    broker: &Arc<Broker>,
    record: &EndpointRecord,
    opts: &ServeOptions,
) -> Result<StreamServer, RuntimeError> {
    let (rt, f) = (runtime.clone(), function.clone());
    let handler: Handler = Arc::new(move |request: &[u8]| {
        let mut io = VecIo {
            request,
            response: Vec::new(),
        };
        let ctx = CallContext {
            runtime: &rt,
            depth: 1,
        };
        EmbeddedTransport {
            function: f.clone(),
        }
        .call(&ctx, &mut io)?;
        Ok(io.response)
    });
    let json = serde_json::to_string(record)
        .map_err(|e| RuntimeError::Config(format!("cannot encode the record: {e}")))?;
    let lease = runtime.limits.call_timeout + Duration::from_secs(5);
    StreamServer::start(
        broker.clone(),
        &record.namespace,
        &record.name,
        json,
        opts.max_concurrent_calls.clamp(1, 8),
        lease,
        handler,
    )
}

fn accept_loop(listener: UnixListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("cwasi-conn".into())
            .spawn(move || {
                if let Err(e) = serve_connection(stream, &shared) {
                    tracing::debug!("connection closed: {e}");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a connection thread: {e}");
        }
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("peer refused: {0}")]
    Denied(String),
    #[error("protocol violation: {0}")]
    Protocol(String),
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        ConnError::Wire(WireError::Io(e))
    }
}

/// The peer's uid and pid (`SO_PEERCRED`). The pid is 0 when the peer runs
/// in another PID namespace (another container), which is why this reads
/// the raw structure: only the uid decides, the pid is for logs.
fn peer_credentials(stream: &UnixStream) -> io::Result<(u32, i32)> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given, and
    // the fd is a live socket borrowed for the call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<libc::ucred>() {
        return Err(io::Error::other("SO_PEERCRED returned a short structure"));
    }
    Ok((cred.uid, cred.pid))
}

fn serve_connection(mut stream: UnixStream, shared: &Shared) -> Result<(), ConnError> {
    let (uid, pid) = peer_credentials(&stream)?;
    if !shared.allowed.contains(&uid) {
        let msg = format!(
            "uid {uid} may not call '{}' (allowed: {:?})",
            shared.function.spec.name, shared.allowed
        );
        tracing::warn!(pid, "{msg}");
        return Err(refuse_with(
            &mut stream,
            0,
            ErrorCode::Denied,
            ConnError::Denied(msg),
        ));
    }
    stream.set_read_timeout(Some(shared.idle_timeout))?;
    stream.set_write_timeout(Some(shared.runtime.limits.call_timeout))?;
    let max_payload = shared.runtime.limits.max_payload_bytes as u64;

    // The first frame carries the shared region.
    let mut head = [0u8; HEADER_LEN];
    let fd = recv_with_fd(&stream, &mut head)?;
    let h = match Header::decode(&head, max_payload) {
        Ok(h) => h,
        Err(e) => return Err(refuse(&mut stream, 0, e.into())),
    };
    if h.kind != Kind::AttachShm {
        return Err(refuse(
            &mut stream,
            h.id,
            ConnError::Protocol(format!("expected attach-shm first, got {:?}", h.kind)),
        ));
    }
    let Some(fd) = fd else {
        return Err(refuse(
            &mut stream,
            h.id,
            ConnError::Protocol("attach-shm without a file descriptor".into()),
        ));
    };
    let mut shm = match SharedRegion::adopt(fd) {
        Ok(s) => s,
        Err(e) => return Err(refuse(&mut stream, h.id, e.into())),
    };

    loop {
        let h = match wire::read_header(&mut stream, max_payload) {
            Ok(h) => h,
            Err(WireError::Closed) => return Ok(()),
            Err(e @ WireError::Io(_)) => return Err(e.into()),
            Err(e) => return Err(refuse(&mut stream, 0, e.into())),
        };
        if h.kind != Kind::Request || h.target_len == 0 {
            return Err(refuse(
                &mut stream,
                h.id,
                ConnError::Protocol(format!("expected a request, got {:?}", h.kind)),
            ));
        }
        let mut target = vec![0u8; h.target_len as usize];
        stream.read_exact(&mut target)?;
        handle_request(&mut stream, &mut shm, shared, &h, &target)?;
    }
}

/// Tells the peer why the connection ends, then ends it. Unread input is
/// drained briefly first: closing with unread bytes would reset the
/// connection and could destroy the error frame before the peer reads it.
fn refuse(stream: &mut UnixStream, id: u64, e: ConnError) -> ConnError {
    refuse_with(stream, id, ErrorCode::Transport, e)
}

fn refuse_with(stream: &mut UnixStream, id: u64, code: ErrorCode, e: ConnError) -> ConnError {
    tracing::warn!("closing a connection: {e}");
    let _ = wire::write_error(stream, id, code.as_raw(), &e.to_string());
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = io::copy(&mut (&mut *stream).take(1 << 20), &mut io::sink());
    e
}

fn handle_request(
    stream: &mut UnixStream,
    shm: &mut SharedRegion,
    shared: &Shared,
    h: &Header,
    target: &[u8],
) -> Result<(), ConnError> {
    let len = h.payload_len as usize;
    let f = &shared.function;
    if target != f.spec.name.as_bytes() {
        skip_payload(stream, shm, h)?;
        let msg = format!(
            "this server hosts '{}', not '{}'",
            f.spec.name,
            String::from_utf8_lossy(target)
        );
        wire::write_error(stream, h.id, ErrorCode::UnknownFunction.as_raw(), &msg)?;
        return Ok(());
    }
    let limits = &shared.runtime.limits;
    if !shared.slots.acquire(limits.call_timeout) {
        skip_payload(stream, shm, h)?;
        let msg = format!(
            "'{}' is busy: no call slot freed within the timeout",
            f.spec.name
        );
        wire::write_error(stream, h.id, ErrorCode::ResourceLimit.as_raw(), &msg)?;
        return Ok(());
    }
    let result = run_call(stream, shm, shared, h, len);
    shared.slots.release();
    match result {
        Ok(()) => Ok(()),
        Err(CallOutcome::Failed(e)) => {
            wire::write_error(stream, h.id, e.code.as_raw(), &e.message)?;
            Ok(())
        }
        Err(CallOutcome::Connection(e)) => Err(e),
    }
}

enum CallOutcome {
    /// The call failed; the connection is fine.
    Failed(CallError),
    /// The connection is broken.
    Connection(ConnError),
}

impl From<io::Error> for CallOutcome {
    fn from(e: io::Error) -> Self {
        CallOutcome::Connection(e.into())
    }
}

fn run_call(
    stream: &mut UnixStream,
    shm: &mut SharedRegion,
    shared: &Shared,
    h: &Header,
    len: usize,
) -> Result<(), CallOutcome> {
    let f = &shared.function;
    let runtime = &shared.runtime;
    let mut inst = match f.pool.acquire(runtime, f, 1, &runtime.limits) {
        Ok(i) => i,
        Err(e) => {
            skip_payload(stream, shm, h)?;
            return Err(CallOutcome::Failed(e));
        }
    };
    let ptr = match inst.alloc_request(len) {
        Ok(p) => p,
        Err(e) => {
            skip_payload(stream, shm, h)?;
            return Err(CallOutcome::Failed(e));
        }
    };
    // The request goes straight into the callee's memory.
    let dst = &mut inst.memory_mut()[ptr..ptr + len];
    recv_payload(stream, shm, h, dst)?;
    let handled = inst.handle(ptr, len);
    let ctx = CallContext { runtime, depth: 1 };
    let resp: ResponseRange = match handled {
        Ok(r) if r.len > runtime.limits.max_payload_bytes => {
            let e = CallError::too_large("response", r.len, runtime.limits.max_payload_bytes);
            let failed = Err(e.clone());
            finish(f, inst, &failed, &ctx);
            return Err(CallOutcome::Failed(e));
        }
        Ok(r) => r,
        Err(e) => {
            finish(f, inst, &Err(e.clone()), &ctx);
            return Err(CallOutcome::Failed(e));
        }
    };
    let mut out = Header::new(Kind::Response, h.id);
    let body = &inst.memory_mut()[resp.ptr..resp.ptr + resp.len];
    let sent = send_frame(stream, shm, &mut out, &[], body);
    finish(f, inst, &Ok(()), &ctx);
    sent.map_err(CallOutcome::from)
}

/// Consumes a payload the server will not use (inline bytes, or progress
/// counts), keeping the stream in step.
fn skip_payload(stream: &mut UnixStream, shm: &mut SharedRegion, h: &Header) -> io::Result<()> {
    if h.in_shm() && !h.chunked() {
        return Ok(());
    }
    recv_payload(stream, shm, h, &mut [])
}
