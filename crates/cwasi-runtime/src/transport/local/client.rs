//! Local mode, client side: calls a function served by another process on
//! this node over its Unix socket (`docs/protocol.md`). A small call goes
//! through the connection's call slot: the request is copied from the
//! caller's memory into the slot, the server is woken only if it sleeps,
//! and the caller spins (then sleeps) until the answer is in the slot. A
//! large payload travels through the connection's shared data area,
//! announced in the slot and framed on the socket.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::hangup::Watch;
use super::queueing::QueueSignal;
use super::shm::{is_peer_gone, is_timeout, recv_payload, send_frame, send_with_fd, SharedRegion};
use super::slot::layout::{REQ_SEQ, REQ_TAKEN, RESP_QUEUED_US, SLOT_MAX_PAYLOAD};
use super::slot::{
    next_seq, SlotRequest, SocketWatch, Waited, CALLER, REQUEST_INLINE, REQUEST_ON_SOCKET,
    RESPONSE_DECLINED, RESPONSE_ERROR, RESPONSE_INLINE,
};
use super::spin::SpinHabit;
use super::wire::{self, Header, Kind, RequestNames, WireError};
use crate::call::{CallMeta, CallerIo};
use crate::deadline::{ANSWER_GRACE, LOCAL_IO_TIMEOUT};
use crate::error::{CallError, ErrorCode};
use crate::identity::CallerIdentity;
use crate::transport::{PendingCall, Transport};

/// How far a connection's read timeout may be off the wanted one before it
/// is set again (one syscall); the timeout is only a bound past the
/// server's own interrupt at the deadline.
const READ_TIMEOUT_SLACK: Duration = Duration::from_millis(100);

/// A pooled connection unused for this long is checked for a hang-up
/// before a request is posted to it (one `poll`); one used more recently
/// is trusted, and a server that closed it while idle says so in the slot.
const CHECK_IF_IDLE: Duration = Duration::from_millis(100);

/// One open connection with its shared region.
struct Connection {
    /// Declared before the stream: it must go before the socket closes.
    watch: Watch,
    stream: UnixStream,
    shm: SharedRegion,
    read_timeout: Option<Duration>,
    /// Calls completed on this connection: the last request and response
    /// sequence.
    seq: u32,
    habit: SpinHabit,
    last_used: Instant,
}

impl Connection {
    /// Connects and passes the shared region (the first frame). A failure
    /// after the connection was made comes with the stream, which may hold
    /// the server's reason for refusing it.
    fn open(socket: &std::path::Path) -> Result<Connection, (io::Error, Option<UnixStream>)> {
        let stream = UnixStream::connect(socket).map_err(|e| (e, None))?;
        let attach = || {
            stream.set_write_timeout(Some(LOCAL_IO_TIMEOUT))?;
            let shm = SharedRegion::create()?;
            let head = Header::new(Kind::AttachShm, 0).encode();
            send_with_fd(&stream, &head, shm.fd())?;
            let watch = Watch::new(stream.as_fd(), shm.control().clone(), CALLER.bell, false)?;
            Ok((shm, watch))
        };
        match attach() {
            Ok((shm, watch)) => Ok(Connection {
                watch,
                stream,
                shm,
                read_timeout: None,
                seq: 0,
                habit: SpinHabit::new(),
                last_used: Instant::now(),
            }),
            Err(e) => Err((e, Some(stream))),
        }
    }

    /// Bounds a socket read of the answer by `until`.
    fn wait_at_most(&mut self, until: Instant) -> io::Result<()> {
        let want = until
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        if self
            .read_timeout
            .is_none_or(|t| t.abs_diff(want) > READ_TIMEOUT_SLACK)
        {
            self.stream.set_read_timeout(Some(want))?;
            self.read_timeout = Some(want);
        }
        Ok(())
    }
}

/// When a caller stops waiting for the answer to `call`: its deadline,
/// plus the grace in which the server's own timeout error arrives first.
fn answer_by(call: &CallMeta) -> Instant {
    Instant::now() + call.deadline.remaining() + ANSWER_GRACE
}

/// Why a call failed, as far as retrying it goes.
enum Failure {
    /// The call failed (or may have run): report it.
    Call(CallError),
    /// The server hung up without a word before it took the request:
    /// nothing ran, and the call may be posted again on a new connection.
    NotTaken(CallError),
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Self {
        Failure::Call(e)
    }
}

impl Failure {
    fn into_error(self) -> CallError {
        match self {
            Failure::Call(e) | Failure::NotTaken(e) => e,
        }
    }
}

/// Why a request was not posted.
enum PostError {
    /// Nothing reached the server: the connection is closed (by the server
    /// while idle, or it died); a fresh one may be tried.
    Closed(String),
    /// The connection failed while the request was under way.
    Io(io::Error),
}

/// Calls one function served on this node.
pub(crate) struct LocalClient(Arc<Endpoint>);

/// The callee's socket and the pool of connections to it.
struct Endpoint {
    /// The callee's name.
    target: String,
    /// The callee's name and the caller's identity, sent in every request.
    names: RequestNames,
    /// Its socket.
    socket: PathBuf,
    /// The longest response accepted.
    max_payload: usize,
    /// How long to spin for an answer before sleeping.
    spin: Duration,
    idle: Mutex<Vec<Connection>>,
    /// How long the server's answers said their requests queued.
    queue: QueueSignal,
}

/// How a local client is set up, besides its callee.
pub(crate) struct LocalSettings {
    /// The longest response accepted.
    pub max_payload: usize,
    /// How long to spin for an answer before sleeping.
    pub spin: Duration,
    /// The queueing delay over which the server counts as saturated
    /// (`None`: never).
    pub spill_queue: Option<Duration>,
}

impl LocalClient {
    /// A client of `target`, served at `socket`, for calls of `caller`,
    /// set up as `settings` say.
    pub fn new(
        target: String,
        caller: &CallerIdentity,
        socket: PathBuf,
        settings: LocalSettings,
    ) -> LocalClient {
        LocalClient(Arc::new(Endpoint {
            names: RequestNames::new(&target, caller),
            target,
            socket,
            max_payload: settings.max_payload,
            spin: settings.spin,
            idle: Mutex::new(Vec::new()),
            queue: QueueSignal::new(settings.spill_queue),
        }))
    }
}

impl Endpoint {
    /// A new connection to the callee; an error means that no request
    /// reached it (nothing ran).
    fn connect(&self) -> Result<Connection, CallError> {
        Connection::open(&self.socket).map_err(|(e, stream)| {
            stream
                .and_then(|mut s| self.refusal(&mut s))
                .unwrap_or_else(|| {
                    CallError::new(
                        ErrorCode::Transport,
                        format!(
                            "cannot reach '{}' at {}: {e}",
                            self.target,
                            self.socket.display()
                        ),
                    )
                })
                .before_taken()
        })
    }

    fn transport_error(&self, what: &str, e: impl std::fmt::Display) -> CallError {
        CallError::new(
            ErrorCode::Transport,
            format!(
                "'{}' at {}: {what}: {e}",
                self.target,
                self.socket.display()
            ),
        )
    }

    /// Posts the request on a pooled connection, or on a new one if the
    /// pooled one turns out closed before the request reached the server
    /// (then nothing ran). Returns the connection and when to stop waiting
    /// for the answer.
    fn send(
        &self,
        io: &mut dyn CallerIo,
        call: &CallMeta,
        may_decline: bool,
    ) -> Result<(Connection, Instant), CallError> {
        // The call that checks on a saturated server asks it not to queue
        // the request: a blocking one (`may_decline`, which can be made
        // again elsewhere; a started call's request is gone by the time
        // it is answered) with an inline request (answered in the slot).
        let no_queue =
            may_decline && io.request().len() <= SLOT_MAX_PAYLOAD && self.queue.take_recheck();
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let reused = pooled.and_then(|mut conn| {
            if conn.last_used.elapsed() > CHECK_IF_IDLE && conn.watch.hung_up_now() {
                tracing::debug!(target = %self.target, "pooled connection was closed; reconnecting");
                return None;
            }
            match post_request(&mut conn, &self.names, io.request(), call, no_queue) {
                Ok(()) => Some(Ok(conn)),
                Err(PostError::Closed(why)) => {
                    tracing::debug!(target = %self.target, "pooled connection: {why}; reconnecting");
                    None
                }
                // The server is gone: what was sent did not run.
                Err(PostError::Io(e)) if is_peer_gone(&e) => {
                    tracing::debug!(target = %self.target, "pooled connection was dead: {e}; reconnecting");
                    None
                }
                Err(PostError::Io(e)) => Some(Err(self.transport_error("cannot send the request", e))),
            }
        });
        match reused {
            Some(conn) => Ok((conn?, answer_by(call))),
            None => self.send_fresh(io, call, no_queue),
        }
    }

    /// Posts the request on a new connection.
    fn send_fresh(
        &self,
        io: &mut dyn CallerIo,
        call: &CallMeta,
        no_queue: bool,
    ) -> Result<(Connection, Instant), CallError> {
        let mut fresh = self.connect()?;
        if let Err(e) = post_request(&mut fresh, &self.names, io.request(), call, no_queue) {
            // A server that refuses a connection (over its cap, a peer it
            // does not admit) says why before it closes.
            let e = match e {
                PostError::Closed(why) => io::Error::other(why),
                PostError::Io(e) => e,
            };
            return Err(match self.refusal(&mut fresh.stream) {
                // The server said why it would not take the call.
                Some(refused) => refused.before_taken(),
                None => self.transport_error("cannot send the request", e),
            });
        }
        Ok((fresh, answer_by(call)))
    }

    /// Waits for the answer to the request posted on `conn` and delivers
    /// it to the caller.
    fn receive(
        &self,
        mut conn: Connection,
        until: Instant,
        io: &mut dyn CallerIo,
    ) -> Result<(), Failure> {
        let control = conn.shm.control();
        let expected = next_seq(conn.seq);
        let started = Instant::now();
        let waited = control
            .wait(
                CALLER,
                conn.seq,
                conn.habit.budget(self.spin),
                until,
                &conn.watch,
            )
            .map_err(|e| self.transport_error("cannot wait for the answer", e))?;
        conn.habit.learn(started.elapsed(), self.spin);
        match waited {
            Waited::Changed(seq) if seq == expected => conn.seq = seq,
            Waited::Changed(seq) => {
                return Err(self
                    .transport_error(
                        "bad answer",
                        format!("response sequence {seq} out of turn (expected {expected})"),
                    )
                    .into())
            }
            Waited::TimedOut => {
                return Err(CallError::new(
                    ErrorCode::Timeout,
                    format!("'{}' did not answer in time", self.target),
                )
                .into())
            }
            // The server hung up: read why, if it said so. If it said
            // nothing and never took the request, nothing ran.
            Waited::Socket => {
                let taken = control.word(REQ_TAKEN).load(Ordering::Acquire) == expected;
                let silent = matches!(
                    rustix::net::recv(
                        &conn.stream,
                        &mut [0u8; 1],
                        rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT
                    ),
                    Ok((0, _))
                );
                let result = self.receive_frame(conn, u64::from(expected), until, io);
                return match result {
                    Err(e) if silent && !taken => Err(Failure::NotTaken(e)),
                    other => other.map_err(Failure::from),
                };
            }
        }
        let answer = control
            .take_response(self.max_payload)
            .map_err(|e| Failure::from(self.transport_error("bad answer", e)))?;
        if answer.kind != RESPONSE_ERROR && answer.kind != RESPONSE_DECLINED {
            self.queue
                .heard(control.word(RESP_QUEUED_US).load(Ordering::Relaxed));
        }
        match answer.kind {
            RESPONSE_INLINE => {
                let dst = io.response_buffer(answer.len).map_err(Failure::from)?;
                control.read_inline(0, dst);
                self.give_back(conn);
                Ok(())
            }
            RESPONSE_ERROR | RESPONSE_DECLINED => {
                let mut msg = vec![0u8; answer.len];
                control.read_inline(0, &mut msg);
                self.give_back(conn);
                let code = ErrorCode::from_raw(answer.status).unwrap_or(ErrorCode::Transport);
                let e = CallError::new(code, String::from_utf8_lossy(&msg).into_owned());
                if answer.kind == RESPONSE_ERROR {
                    return Err(e.into());
                }
                // Still full: nothing ran, and the route spills the call.
                self.queue.heard(u32::MAX);
                Err(e.before_taken().into())
            }
            _ => Ok(self.receive_frame(conn, u64::from(expected), until, io)?),
        }
    }

    /// Reads the answer to the connection's last request as a frame on the
    /// socket into the caller.
    /// Request `id` is the request's sequence number.
    fn receive_frame(
        &self,
        mut conn: Connection,
        id: u64,
        until: Instant,
        io: &mut dyn CallerIo,
    ) -> Result<(), CallError> {
        conn.wait_at_most(until)
            .map_err(|e| self.transport_error("cannot set a timeout", e))?;
        let h = match wire::read_header(&mut conn.stream, self.max_payload as u64) {
            Ok(h) => h,
            Err(WireError::Io(e)) if is_timeout(&e) => {
                return Err(CallError::new(
                    ErrorCode::Timeout,
                    format!("'{}' did not answer in time", self.target),
                ))
            }
            Err(WireError::Closed) => {
                return Err(self.transport_error(
                    "connection lost mid-call",
                    "the server closed it (did it die?)",
                ))
            }
            Err(e) => return Err(self.transport_error("bad answer", e)),
        };
        if h.kind == Kind::Error && h.id == 0 {
            // The server refused the connection itself (credentials, its
            // cap on connections, the protocol).
            return Err(self.refused(&mut conn.stream, &h));
        }
        if h.id != id {
            return Err(self.transport_error(
                "bad answer",
                format!("answer to request {} while waiting for {id}", h.id),
            ));
        }
        match h.kind {
            Kind::Response => {}
            Kind::Error => {
                let (code, message) = wire::read_error(&mut conn.stream, &h)
                    .map_err(|e| self.transport_error("connection lost mid-call", e))?;
                return Err(CallError::new(code, message));
            }
            other => {
                return Err(
                    self.transport_error("bad answer", format!("unexpected {other:?} frame"))
                )
            }
        }
        let dst = io.response_buffer(h.payload_len as usize)?;
        recv_payload(&mut conn.stream, &mut conn.shm, &h, dst)
            .map_err(|e| self.transport_error("connection lost mid-call", e))?;
        self.give_back(conn);
        Ok(())
    }

    /// The error frame a server sent before closing a connection it
    /// refused, if one is there to read.
    fn refusal(&self, stream: &mut UnixStream) -> Option<CallError> {
        stream.set_read_timeout(Some(REFUSAL_WAIT)).ok()?;
        let h = wire::read_header(stream, self.max_payload as u64).ok()?;
        (h.kind == Kind::Error && h.id == 0).then(|| self.refused(stream, &h))
    }

    /// The error of a connection refused with error frame `h`.
    fn refused(&self, stream: &mut UnixStream, h: &Header) -> CallError {
        let (code, msg) = wire::read_error(stream, h).unwrap_or((
            ErrorCode::from_raw(h.status).unwrap_or(ErrorCode::Transport),
            String::new(),
        ));
        CallError::new(
            code,
            format!(
                "'{}' at {} refused the connection: {msg}",
                self.target,
                self.socket.display()
            ),
        )
    }

    /// Pools a connection that is in step again for the next call.
    fn give_back(&self, conn: Connection) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
    }
}

/// How long a client whose request could not be sent looks for the error
/// frame of a server that refused the connection.
const REFUSAL_WAIT: Duration = Duration::from_millis(200);

/// Posts a request on `conn`: into the slot when it fits, else announced
/// in the slot and framed on the socket.
fn post_request(
    conn: &mut Connection,
    names: &RequestNames,
    request: &[u8],
    call: &CallMeta,
    no_queue: bool,
) -> Result<(), PostError> {
    let control = conn.shm.control();
    let inline = request.len() <= SLOT_MAX_PAYLOAD;
    let depth = call.depth.min(u16::MAX as u32) as u16;
    let budget_us = (call.deadline.remaining().as_micros() as u64).max(1);
    if inline {
        control.write_inline(0, names.bytes());
        control.write_inline(names.bytes().len(), request);
    }
    let mut h = Header::new(Kind::Request, 0);
    names.describe(&mut h);
    control.put_request(&SlotRequest {
        kind: if inline {
            REQUEST_INLINE
        } else {
            REQUEST_ON_SOCKET
        },
        target_len: h.target_len as usize,
        caller_len: h.caller_len as usize,
        len: if inline { request.len() } else { 0 },
        depth,
        budget_us,
        trace: call.trace,
        no_queue,
    });
    let seq = next_seq(conn.seq);
    if let Err(now) =
        control
            .word(REQ_SEQ)
            .compare_exchange(conn.seq, seq, Ordering::SeqCst, Ordering::SeqCst)
    {
        return Err(PostError::Closed(format!(
            "the server closed the connection (request sequence {now:#x}, expected {:#x})",
            conn.seq
        )));
    }
    control.ring(CALLER);
    conn.last_used = Instant::now();
    if inline {
        return Ok(());
    }
    h.id = u64::from(seq);
    h.depth = depth;
    h.budget_us = budget_us;
    h.trace = call.trace;
    send_frame(
        &mut conn.stream,
        &mut conn.shm,
        &mut h,
        names.bytes(),
        request,
    )
    .map_err(PostError::Io)
}

impl Transport for LocalClient {
    fn call(&self, io: &mut dyn CallerIo, call: &CallMeta) -> Result<(), CallError> {
        let (conn, until) = self.0.send(io, call, true)?;
        match self.0.receive(conn, until, io) {
            Err(Failure::NotTaken(e)) => {
                // A server that closed a pooled connection (it restarted,
                // or died) before it saw the request: once more, afresh.
                tracing::debug!(target = %self.0.target, "request not taken ({e}); posting it again");
                let (conn, until) = self.0.send_fresh(io, call, false)?;
                match self.0.receive(conn, until, io) {
                    Err(Failure::NotTaken(e)) => Err(e.before_taken()),
                    other => other.map_err(Failure::into_error),
                }
            }
            other => other.map_err(Failure::into_error),
        }
    }

    fn saturated(&self) -> bool {
        self.0.queue.saturated()
    }

    fn start(
        &self,
        io: &mut dyn CallerIo,
        call: &CallMeta,
    ) -> Result<Box<dyn PendingCall>, CallError> {
        // The request leaves now; the server works while the caller goes on.
        let (conn, until) = self.0.send(io, call, false)?;
        Ok(Box::new(LocalPending {
            endpoint: self.0.clone(),
            conn,
            until,
        }))
    }
}

/// A request that left; its answer is read when the caller waits.
struct LocalPending {
    endpoint: Arc<Endpoint>,
    conn: Connection,
    until: Instant,
}

impl PendingCall for LocalPending {
    fn wait(self: Box<Self>, io: &mut dyn CallerIo) -> Result<(), CallError> {
        let LocalPending {
            endpoint,
            conn,
            until,
        } = *self;
        // The request is no longer at hand here, so one the server did not
        // take is reported, not posted again.
        endpoint
            .receive(conn, until, io)
            .map_err(Failure::into_error)
    }
}
