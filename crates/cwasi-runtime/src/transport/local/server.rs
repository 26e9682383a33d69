//! Local mode, server side: accepts connections on a served function's Unix
//! socket, up to a cap, checks each peer's credentials, reads each request
//! under per-phase deadlines (`request.rs`), and runs calls concurrently (up
//! to a limit) through the callee-side path of `guest::invoke`, moving
//! payloads straight between the shared region and the callee's linear
//! memory.
//!
//! Each connection has its own thread, because that thread is where its
//! calls run: wasmtime runs a guest synchronously, and the request is
//! copied from the region straight into the guest's memory on the way.
//! What keeps threads and descriptors bounded is the cap on connections,
//! the idle timeout, and the phase deadlines that end a stalled request.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::callers::PeerCallers;
use super::credentials::peer_credentials;
use super::exchange::{Answer, ConnExchange, Incoming};
use super::handle::{handle_request, RequestInfo};
use super::hangup::Watch;
use super::request::{Request, RequestError, RequestReader};
use super::shm::{is_peer_gone, recv_with_fd, SharedRegion};
use super::slot::layout::{CLOSED, REQ_SEQ, REQ_TAKEN};
use super::slot::{next_seq, ControlBlock, Waited, REQUEST_ON_SOCKET, SERVER};
use super::spin::SpinHabit;
use super::wire::{self, Header, Kind, WireError, HEADER_LEN, MAX_CALLER_LEN, MAX_TARGET_LEN};
use crate::deadline::{LOCAL_IO_TIMEOUT, LOCAL_PHASE_TIMEOUT};
use crate::error::{CallError, ErrorCode, RuntimeError};
use crate::guest::function::Function;
use crate::transport::admission::{accept_until, AcceptThread, CallSlots, Connections, WarnBudget};

/// How long a refused connection is drained before it is closed.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(200);

/// How a local server admits callers and calls.
#[derive(Debug, Clone)]
pub(crate) struct ServerSettings {
    /// Calls that may run at once; more wait for a slot.
    pub max_concurrent_calls: usize,
    /// Connections open at once; more are refused with `RESOURCE_LIMIT`.
    pub max_connections: usize,
    /// Uids allowed: the server's own, root, and any configured.
    pub allowed_uids: Vec<u32>,
    /// How long an idle connection is kept open.
    pub idle_timeout: Duration,
    /// This node's name: the node of every local caller.
    pub node: Arc<str>,
    /// The slowest a pipelined payload may arrive at, in bytes per second
    /// (`deadline::payload_budget`).
    pub min_payload_rate: u64,
}

/// A running local server; dropping it stops accepting, joins the accept
/// thread, and makes the open connections drain: a call already taken
/// finishes, and the next request on a connection is not taken (the
/// connection closes, and the caller makes the call elsewhere, see
/// `docs/protocol.md`, "The node directory").
pub(crate) struct LocalServer {
    shared: Arc<Shared>,
    _accept: AcceptThread,
}

/// The requests a draining local server's connections are still serving.
#[derive(Clone)]
pub(crate) struct Taking(Arc<Shared>);

impl Taking {
    /// How many requests were taken and are not answered yet.
    pub fn count(&self) -> usize {
        self.0.taking.load(Ordering::SeqCst)
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.drain();
    }
}

impl LocalServer {
    /// Serves `function` on `listener`.
    pub fn start(
        listener: UnixListener,
        function: Arc<Function>,
        settings: ServerSettings,
    ) -> Result<LocalServer, RuntimeError> {
        let name = format!("cwasi-serve-{}", function.spec.name);
        let shared = Arc::new(Shared {
            calls: CallSlots::new(settings.max_concurrent_calls),
            connections: Connections::new(settings.max_connections),
            warnings: WarnBudget::default(),
            function,
            settings,
            draining: AtomicBool::new(false),
            taking: AtomicUsize::new(0),
        });
        let accepting = shared.clone();
        let accept = AcceptThread::spawn(name, listener, move |listener, stop| {
            accept_loop(listener, accepting, stop)
        })?;
        Ok(LocalServer {
            shared,
            _accept: accept,
        })
    }

    /// Takes no further request on the open connections (each finishes
    /// the call it took and closes at its next request); it still accepts
    /// until dropped.
    pub fn drain(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
    }

    /// What a stop waits for after dropping this server.
    pub fn taking(&self) -> Taking {
        Taking(self.shared.clone())
    }
}

struct Shared {
    function: Arc<Function>,
    calls: CallSlots<i32>,
    /// Connections open now.
    connections: Connections,
    warnings: WarnBudget,
    settings: ServerSettings,
    /// Set when the server stops: requests are no longer taken.
    draining: AtomicBool,
    /// Requests taken and not answered yet (checked against `draining`
    /// in the order that lets no request slip past a stop).
    taking: AtomicUsize,
}

impl Shared {
    /// Counts a request about to be taken, unless the server is draining
    /// (`None`: close the connection without taking it).
    fn take(&self) -> Option<TakenRequest<'_>> {
        self.taking.fetch_add(1, Ordering::SeqCst);
        if self.draining.load(Ordering::SeqCst) {
            self.taking.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(TakenRequest(self))
    }
}

/// A request taken by a connection, until it is answered.
struct TakenRequest<'a>(&'a Shared);

impl Drop for TakenRequest<'_> {
    fn drop(&mut self) {
        self.0.taking.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_loop(listener: UnixListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    accept_until(listener.incoming(), &stop, &shared.warnings, |stream| {
        let Some(slot) = shared.connections.admit() else {
            refuse_over_capacity(&stream, &shared);
            return;
        };
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("cwasi-conn".into())
            .spawn(move || {
                let _slot = slot;
                if let Err(e) = serve_connection(stream, &shared) {
                    tracing::debug!("connection closed: {e}");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a connection thread: {e}");
        }
    });
}

/// Refuses a connection over the cap, on the accept thread: the error frame
/// is written without blocking (a fresh socket's buffer takes it), what
/// the peer already sent is drained without waiting, and it is closed.
fn refuse_over_capacity(stream: &UnixStream, shared: &Shared) {
    let max = shared.connections.max();
    let msg = format!(
        "'{}' has {max} connections open, its limit; try again later",
        shared.function.spec.name
    );
    if let Some(suppressed) = shared.warnings.allow() {
        tracing::warn!(suppressed, "refusing a connection: {msg}");
    }
    let _ = stream.set_nonblocking(true);
    let mut s = stream;
    let _ = wire::write_error(&mut s, 0, ErrorCode::ResourceLimit.as_raw(), &msg);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match s.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
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
    #[error(transparent)]
    Request(#[from] RequestError),
}

impl ConnError {
    /// Whether the connection failed because the peer is gone (EOF, reset).
    fn peer_gone(&self) -> bool {
        match self {
            ConnError::Wire(WireError::Io(e))
            | ConnError::Request(RequestError::Wire(WireError::Io(e))) => is_peer_gone(e),
            _ => false,
        }
    }
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        ConnError::Wire(WireError::Io(e))
    }
}

fn serve_connection(stream: UnixStream, shared: &Shared) -> Result<(), ConnError> {
    let (uid, pid) = peer_credentials(&stream)?;
    let allowed = &shared.settings.allowed_uids;
    if !allowed.contains(&uid) {
        let msg = format!(
            "uid {uid} (pid {pid}) may not call '{}' (allowed: {allowed:?})",
            shared.function.spec.name
        );
        let e = ConnError::Denied(msg);
        return Err(refuse_on(
            &stream,
            0,
            ErrorCode::Denied,
            e,
            &shared.warnings,
        ));
    }
    let callers = match PeerCallers::new(uid, shared.settings.node.clone()) {
        Ok(c) => c,
        Err(e) => {
            let e = ConnError::Denied(e.message);
            return Err(refuse_on(
                &stream,
                0,
                ErrorCode::Denied,
                e,
                &shared.warnings,
            ));
        }
    };
    let limits = shared.function.limits();
    stream.set_write_timeout(Some(LOCAL_IO_TIMEOUT))?;
    let max_payload = limits.max_payload_bytes as u64;

    // The first frame carries the shared region, and must come at once.
    stream.set_read_timeout(Some(LOCAL_PHASE_TIMEOUT))?;
    let mut head = [0u8; HEADER_LEN];
    let fd = recv_with_fd(&stream, &mut head)?;
    let h = match Header::decode(&head, max_payload) {
        Ok(h) => h,
        Err(e) => return Err(refuse(&stream, 0, e.into(), &shared.warnings)),
    };
    if h.kind != Kind::AttachShm {
        let e = ConnError::Protocol(format!("expected attach-shm first, got {:?}", h.kind));
        return Err(refuse(&stream, h.id, e, &shared.warnings));
    }
    let Some(fd) = fd else {
        let e = ConnError::Protocol("attach-shm without a file descriptor".into());
        return Err(refuse(&stream, h.id, e, &shared.warnings));
    };
    let shm = match SharedRegion::adopt(fd) {
        Ok(s) => s,
        Err(e) => return Err(refuse(&stream, h.id, e.into(), &shared.warnings)),
    };

    let control = shm.control().clone();
    let watch = Watch::new(stream.as_fd(), control.clone(), SERVER.bell, true)?;
    let mut conn = ServerConn {
        reader: RequestReader::new(
            stream,
            shared.settings.idle_timeout,
            shared.settings.min_payload_rate,
        ),
        shm,
        control,
        watch,
        last: 0,
        habit: SpinHabit::new(),
        max_payload,
        callers,
        pid,
    };
    let result = conn.serve(shared);
    // The watch goes before the socket closes (see `hangup.rs`).
    drop(conn.watch);
    result
}

/// One admitted connection: its socket (through the request reader), its
/// shared region and call slot.
struct ServerConn {
    reader: RequestReader,
    shm: SharedRegion,
    control: Arc<ControlBlock>,
    watch: Watch,
    /// The request sequence of the last request taken from the slot.
    last: u32,
    habit: SpinHabit,
    max_payload: u64,
    /// Who the peer's requests come from.
    callers: PeerCallers,
    /// The peer's process id.
    pid: i32,
}

/// What woke the server.
enum Next {
    /// A request in the slot, with its sequence number.
    Slot(u32),
    /// A frame on the socket, sent without the slot.
    Frame,
    /// Nothing to do yet.
    Nothing,
}

impl ServerConn {
    fn serve(&mut self, shared: &Shared) -> Result<(), ConnError> {
        let spin = shared.function.limits().spin_budget;
        let mut answered = Instant::now();
        loop {
            let next = if self.reader.has_buffered() {
                Next::Frame
            } else {
                let idle = Instant::now() + shared.settings.idle_timeout;
                let waited = self.control.wait(
                    SERVER,
                    self.last,
                    self.habit.budget(spin),
                    idle,
                    &self.watch,
                )?;
                self.habit.learn(answered.elapsed(), spin);
                match waited {
                    Waited::Changed(seq) if seq == next_seq(self.last) => Next::Slot(seq),
                    Waited::Changed(seq) => {
                        let e = ConnError::Protocol(format!(
                            "request sequence {seq} out of turn (expected {})",
                            next_seq(self.last)
                        ));
                        return Err(end_connection(&mut self.reader, 0, e, shared));
                    }
                    Waited::TimedOut => {
                        // Idle: close, unless a request comes in the same
                        // instant (the caller then sees `CLOSED` and
                        // reconnects, or this side serves it).
                        let closed = self.control.word(REQ_SEQ).compare_exchange(
                            self.last,
                            self.last | CLOSED,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        );
                        if closed.is_ok() {
                            return Ok(());
                        }
                        Next::Nothing
                    }
                    Waited::Socket if self.watch.readable_now() => Next::Frame,
                    Waited::Socket => Next::Nothing,
                }
            };
            let Some(_taken) = shared.take() else {
                // Draining, so not taken: the caller sees the connection
                // close before its request was taken, and makes the call
                // elsewhere.
                tracing::debug!("draining: a connection closes without taking its request");
                return Ok(());
            };
            match next {
                Next::Slot(seq) => {
                    self.control.word(REQ_TAKEN).store(seq, Ordering::Release);
                    self.serve_slot(seq, shared)?;
                    self.last = seq;
                    answered = Instant::now();
                }
                Next::Frame => {
                    let request = match self.reader.next_request(self.max_payload) {
                        Ok(r) => r,
                        Err(RequestError::Ended) => return Ok(()),
                        Err(e) => {
                            return Err(end_connection(&mut self.reader, 0, e.into(), shared))
                        }
                    };
                    self.serve_frame(&request, Answer::Frame, shared)?;
                }
                Next::Nothing => {}
            }
        }
    }

    /// Serves the request the caller posted in the slot with sequence `seq`.
    fn serve_slot(&mut self, seq: u32, shared: &Shared) -> Result<(), ConnError> {
        let max = self.max_payload as usize;
        let slot = match self.control.take_request(max) {
            Ok(r) => r,
            Err(e) => {
                let e = ConnError::Protocol(format!("bad request in the call slot: {e}"));
                return Err(end_connection(&mut self.reader, 0, e, shared));
            }
        };
        if slot.kind == REQUEST_ON_SOCKET {
            let request = match self.reader.next_request(self.max_payload) {
                Ok(r) => r,
                Err(e) => {
                    let e = match e {
                        RequestError::Ended => RequestError::Protocol(
                            "the connection closed before the announced request frame".into(),
                        ),
                        e => e,
                    };
                    return Err(end_connection(&mut self.reader, 0, e.into(), shared));
                }
            };
            return self.serve_frame(&request, Answer::Slot(seq), shared);
        }
        let mut names = [0u8; MAX_TARGET_LEN + MAX_CALLER_LEN];
        let names = &mut names[..slot.target_len + slot.caller_len];
        self.control.read_inline(0, names);
        let (target, claim) = names.split_at(slot.target_len);
        let caller = self.callers.identify(claim);
        let mut exchange = ConnExchange {
            reader: &mut self.reader,
            shm: &mut self.shm,
            control: &self.control,
            incoming: Incoming::Slot(slot),
            answer: Answer::Slot(seq),
            request_read: false,
            answered: false,
            broken: None,
            arrival: None,
        };
        let info = RequestInfo {
            depth: slot.depth,
            budget_us: slot.budget_us,
            trace: slot.trace,
            no_queue: slot.no_queue,
            caller,
            peer: self.pid,
        };
        let result = handle_request(target, info, &mut exchange, &shared.function, &shared.calls);
        finish(exchange, result, 0, shared)
    }

    /// Serves a request that came as a frame, answering as `answer` says.
    fn serve_frame(
        &mut self,
        request: &Request,
        answer: Answer,
        shared: &Shared,
    ) -> Result<(), ConnError> {
        let target = self.reader.target(request).to_vec();
        let caller = self.callers.identify(self.reader.caller(request));
        let h = request.header;
        let mut exchange = ConnExchange {
            reader: &mut self.reader,
            shm: &mut self.shm,
            control: &self.control,
            incoming: Incoming::Frame(request),
            answer,
            request_read: false,
            answered: false,
            broken: None,
            arrival: None,
        };
        let info = RequestInfo {
            depth: h.depth,
            budget_us: h.budget_us,
            trace: h.trace,
            no_queue: false,
            caller,
            peer: self.pid,
        };
        let result = handle_request(
            &target,
            info,
            &mut exchange,
            &shared.function,
            &shared.calls,
        );
        finish(exchange, result, h.id, shared)
    }
}

/// Ends a connection whose request broke the protocol, stalled or lost its
/// peer: with an error frame that says why, unless the peer is gone and
/// nothing can be told to it.
fn end_connection(reader: &mut RequestReader, id: u64, e: ConnError, shared: &Shared) -> ConnError {
    if e.peer_gone() {
        return e;
    }
    reader.discard_buffered();
    refuse(reader.stream(), id, e, &shared.warnings)
}

/// Tells the peer why the connection ends (`TRANSPORT`), then ends it.
fn refuse(stream: &UnixStream, id: u64, e: ConnError, warnings: &WarnBudget) -> ConnError {
    refuse_on(stream, id, ErrorCode::Transport, e, warnings)
}

/// Logs (within the budget) and tells the peer why the connection ends,
/// with `code`, then ends it. Unread input is drained briefly first:
/// closing with unread bytes would reset the connection and could destroy
/// the error frame before the peer reads it.
fn refuse_on(
    mut stream: &UnixStream,
    id: u64,
    code: ErrorCode,
    e: ConnError,
    warnings: &WarnBudget,
) -> ConnError {
    if let Some(suppressed) = warnings.allow() {
        tracing::warn!(suppressed, "closing a connection: {e}");
    }
    let _ = wire::write_error(&mut stream, id, code.as_raw(), &e.to_string());
    drain_and_close(stream);
    e
}

/// Shuts the write side and drains what the peer sent, for a bounded time,
/// so that the error frame written last is not lost to a reset.
fn drain_and_close(stream: &UnixStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(DRAIN_TIMEOUT));
    let _ = io::copy(&mut stream.take(1 << 20), &mut io::sink());
}

/// Ends an exchange after the call returned `result`: a failed call is
/// answered with its error (request `id` when answered as a frame); a
/// broken connection ends.
fn finish(
    mut exchange: ConnExchange<'_>,
    result: Result<(), CallError>,
    id: u64,
    shared: &Shared,
) -> Result<(), ConnError> {
    let Err(e) = result else {
        return Ok(());
    };
    if let Some(broken) = exchange.broken.take() {
        return Err(end_connection(exchange.reader, id, broken.into(), shared));
    }
    if !exchange.request_read {
        if let Err(broken) = exchange.skip_request() {
            return Err(end_connection(exchange.reader, id, broken.into(), shared));
        }
    }
    if exchange.answered {
        // The answer left; what failed after it is the server's own.
        tracing::debug!("after the answer: {e}");
        return Ok(());
    }
    exchange.answer_error(id, &e)?;
    Ok(())
}
