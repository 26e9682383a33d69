//! Local mode, server side: accepts connections on a served function's Unix
//! socket, checks each peer's credentials, and runs calls concurrently (up
//! to a limit) through the callee-side path of `guest::invoke`, moving
//! payloads straight between the socket or the shared region and the
//! callee's linear memory.

use std::io::{self, Read};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::shm::{recv_payload, recv_with_fd, send_frame, SharedRegion};
use super::wire::{self, Header, Kind, WireError, HEADER_LEN};
use crate::call::CallMeta;
use crate::deadline::Deadline;
use crate::error::{CallError, ErrorCode, RuntimeError};
use crate::guest::function::Function;
use crate::guest::invoke::{invoke, Exchange};

/// How a local server admits callers and calls.
#[derive(Debug, Clone)]
pub(crate) struct ServerSettings {
    /// Calls that may run at once; more wait for a slot.
    pub max_concurrent_calls: usize,
    /// Uids allowed: the server's own, root, and any configured.
    pub allowed_uids: Vec<u32>,
    /// How long an idle connection is kept open.
    pub idle_timeout: Duration,
}

/// A running local server; dropping it stops accepting and joins the accept
/// thread (connections in progress finish on their own threads).
pub(crate) struct LocalServer {
    stop: Arc<AtomicBool>,
    /// The listening socket itself (a second descriptor of it), so that the
    /// accept loop can be woken whether or not its path still exists.
    listener: UnixListener,
    accept: Option<JoinHandle<()>>,
}

impl LocalServer {
    /// Serves `function` on `listener`.
    pub fn start(
        listener: UnixListener,
        function: Arc<Function>,
        settings: ServerSettings,
    ) -> Result<LocalServer, RuntimeError> {
        let shared = Arc::new(Shared {
            slots: Slots {
                free: Mutex::new(settings.max_concurrent_calls.max(1)),
                cv: Condvar::new(),
            },
            function,
            settings,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let wake = listener.try_clone().map_err(|source| RuntimeError::Io {
            path: "the local server's listening socket".into(),
            source,
        })?;
        let accept = std::thread::Builder::new()
            .name(format!("cwasi-serve-{}", shared.function.spec.name))
            .spawn(move || accept_loop(listener, shared, stop_flag))
            .map_err(|source| RuntimeError::Spawn {
                what: "the accept thread",
                source,
            })?;
        Ok(LocalServer {
            stop,
            listener: wake,
            accept: Some(accept),
        })
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop: on Linux, shutting down a listening socket
        // for reading makes a blocked (and every later) `accept` fail at
        // once. Unlike connecting to the socket's path, this works when the
        // path was removed or replaced.
        if let Err(e) = rustix::net::shutdown(&self.listener, rustix::net::Shutdown::Read) {
            tracing::warn!("cannot shut the listening socket down: {e}");
        }
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
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
    function: Arc<Function>,
    slots: Slots,
    settings: ServerSettings,
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
    let allowed = &shared.settings.allowed_uids;
    if !allowed.contains(&uid) {
        let msg = format!(
            "uid {uid} may not call '{}' (allowed: {allowed:?})",
            shared.function.spec.name
        );
        tracing::warn!(pid, "{msg}");
        return Err(refuse_with(
            &mut stream,
            0,
            ErrorCode::Denied,
            ConnError::Denied(msg),
        ));
    }
    let limits = shared.function.limits();
    stream.set_read_timeout(Some(shared.settings.idle_timeout))?;
    stream.set_write_timeout(Some(limits.call_timeout))?;
    let max_payload = limits.max_payload_bytes as u64;

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
        let mut exchange = SocketExchange {
            stream: &mut stream,
            shm: &mut shm,
            h: &h,
            request_read: false,
            broken: None,
        };
        if let Err(e) = handle_request(&mut exchange, shared, &target) {
            if let Some(broken) = exchange.broken.take() {
                return Err(broken.into());
            }
            if !exchange.request_read {
                exchange.skip_request()?;
            }
            wire::write_error(&mut stream, h.id, e.code.as_raw(), &e.message)?;
        }
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

/// Runs one request: checks its target, depth and a call slot, then
/// invokes the function.
fn handle_request(
    exchange: &mut SocketExchange<'_>,
    shared: &Shared,
    target: &[u8],
) -> Result<(), CallError> {
    let f = &shared.function;
    if target != f.spec.name.as_bytes() {
        return Err(CallError::new(
            ErrorCode::UnknownFunction,
            format!(
                "this server hosts '{}', not '{}'",
                f.spec.name,
                String::from_utf8_lossy(target)
            ),
        ));
    }
    let h = exchange.h;
    let caller_deadline =
        (h.budget_us > 0).then(|| Deadline::after(Duration::from_micros(h.budget_us)));
    let call = CallMeta::incoming(u32::from(h.depth), caller_deadline, f.limits())?;
    if !shared.slots.acquire(call.deadline.remaining()) {
        return Err(CallError::new(
            ErrorCode::ResourceLimit,
            format!(
                "'{}' is busy: no call slot freed within the timeout",
                f.spec.name
            ),
        ));
    }
    let result = invoke(f, call.reissued(), exchange);
    shared.slots.release();
    result
}

/// One request's socket and shared region as an [`Exchange`]. A failure of
/// the connection itself is kept in `broken`: the connection then ends,
/// where a failed call only gets an error frame.
struct SocketExchange<'a> {
    stream: &'a mut UnixStream,
    shm: &'a mut SharedRegion,
    h: &'a Header,
    request_read: bool,
    broken: Option<io::Error>,
}

impl SocketExchange<'_> {
    fn lost(&mut self, e: io::Error) -> CallError {
        let err = CallError::new(ErrorCode::Transport, format!("connection lost: {e}"));
        self.broken = Some(e);
        err
    }

    /// Consumes a payload the server will not use (inline bytes, or
    /// progress counts), keeping the stream in step.
    fn skip_request(&mut self) -> io::Result<()> {
        if self.h.in_shm() && !self.h.chunked() {
            return Ok(());
        }
        recv_payload(self.stream, self.shm, self.h, &mut [])
    }
}

impl Exchange for SocketExchange<'_> {
    fn request_len(&self) -> usize {
        self.h.payload_len as usize
    }

    fn read_request(&mut self, dst: &mut [u8]) -> Result<(), CallError> {
        self.request_read = true;
        recv_payload(self.stream, self.shm, self.h, dst).map_err(|e| self.lost(e))
    }

    fn write_response(&mut self, response: &[u8]) -> Result<(), CallError> {
        let mut out = Header::new(Kind::Response, self.h.id);
        send_frame(self.stream, self.shm, &mut out, &[], response).map_err(|e| self.lost(e))
    }
}
