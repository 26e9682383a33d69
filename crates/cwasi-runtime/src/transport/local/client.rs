//! Local mode, client side: calls a function served by another process on
//! this node over its Unix socket (`docs/protocol.md`). Small payloads travel
//! inline; large ones through the connection's shared region, copied straight
//! from the caller's memory into the region and from the region into the
//! caller's memory.

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::shm::{is_timeout, recv_payload, send_frame, send_with_fd, SharedRegion};
use super::wire::{self, Header, Kind, WireError};
use crate::call::{CallMeta, CallerIo};
use crate::deadline::{ANSWER_GRACE, LOCAL_IO_TIMEOUT};
use crate::error::{CallError, ErrorCode};
use crate::transport::{PendingCall, Transport};

/// How far a connection's read timeout may be off the wanted one before it
/// is set again (one syscall); the timeout is only a bound past the
/// server's own interrupt at the deadline.
const READ_TIMEOUT_SLACK: Duration = Duration::from_millis(100);

/// One open connection with its shared region.
struct Connection {
    stream: UnixStream,
    shm: SharedRegion,
    read_timeout: Option<Duration>,
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
            Ok(shm)
        };
        match attach() {
            Ok(shm) => Ok(Connection {
                stream,
                shm,
                read_timeout: None,
            }),
            Err(e) => Err((e, Some(stream))),
        }
    }

    /// Bounds the wait for the answer to a call due by `call.deadline`.
    fn wait_at_most(&mut self, call: &CallMeta) -> io::Result<()> {
        let want = call.deadline.remaining() + ANSWER_GRACE;
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

/// Calls one function served on this node.
pub(crate) struct LocalClient(Arc<Endpoint>);

/// The callee's socket and the pool of connections to it.
struct Endpoint {
    /// The callee's name, sent in every request.
    target: String,
    /// Its socket.
    socket: PathBuf,
    /// The longest response accepted.
    max_payload: usize,
    idle: Mutex<Vec<Connection>>,
    next_id: AtomicU64,
}

impl LocalClient {
    /// A client of `target`, served at `socket`, accepting responses of up
    /// to `max_payload` bytes.
    pub fn new(target: String, socket: PathBuf, max_payload: usize) -> LocalClient {
        LocalClient(Arc::new(Endpoint {
            target,
            socket,
            max_payload,
            idle: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        }))
    }
}

impl Endpoint {
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

    /// Sends the request on a pooled connection, or on a new one if the
    /// pooled one turns out dead before the request left (then nothing ran).
    fn send(&self, io: &mut dyn CallerIo, call: &CallMeta) -> Result<(Connection, u64), CallError> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let reused = pooled.and_then(|mut conn| {
            match send_request(&mut conn, id, &self.target, io.request(), call) {
                Ok(()) => Some(conn),
                Err(_) => {
                    tracing::debug!(target = %self.target, "pooled connection was dead; reconnecting");
                    None
                }
            }
        });
        let mut conn = match reused {
            Some(conn) => conn,
            None => {
                let mut fresh = self.connect()?;
                if let Err(e) = send_request(&mut fresh, id, &self.target, io.request(), call) {
                    // A server that refuses a connection (over its cap, a
                    // peer it does not admit) says why before it closes.
                    return Err(self
                        .refusal(&mut fresh.stream)
                        .unwrap_or_else(|| self.transport_error("cannot send the request", e)));
                }
                fresh
            }
        };
        conn.wait_at_most(call)
            .map_err(|e| self.transport_error("cannot set a timeout", e))?;
        Ok((conn, id))
    }

    /// Reads the answer to request `id` into the caller.
    fn receive(
        &self,
        mut conn: Connection,
        id: u64,
        io: &mut dyn CallerIo,
    ) -> Result<(), CallError> {
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
                let (code, message) = read_error(&mut conn.stream, &h)
                    .map_err(|e| self.transport_error("connection lost mid-call", e))?;
                if h.payload_len as usize <= MAX_ERROR_MESSAGE {
                    self.give_back(conn);
                }
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
        let (code, msg) = read_error(stream, h).unwrap_or((
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

/// Longest error message read from an error frame.
const MAX_ERROR_MESSAGE: usize = 64 << 10;

/// Reads the message of error frame `h` (at most [`MAX_ERROR_MESSAGE`]
/// bytes) and its code.
fn read_error(stream: &mut UnixStream, h: &Header) -> io::Result<(ErrorCode, String)> {
    let mut msg = vec![0u8; (h.payload_len as usize).min(MAX_ERROR_MESSAGE)];
    stream.read_exact(&mut msg)?;
    let code = ErrorCode::from_raw(h.status).unwrap_or(ErrorCode::Transport);
    Ok((code, String::from_utf8_lossy(&msg).into_owned()))
}

fn send_request(
    conn: &mut Connection,
    id: u64,
    target: &str,
    request: &[u8],
    call: &CallMeta,
) -> io::Result<()> {
    let mut h = Header::new(Kind::Request, id);
    h.target_len = target.len() as u16;
    h.depth = call.depth.min(u16::MAX as u32) as u16;
    h.budget_us = (call.deadline.remaining().as_micros() as u64).max(1);
    send_frame(
        &mut conn.stream,
        &mut conn.shm,
        &mut h,
        target.as_bytes(),
        request,
    )
}

impl Transport for LocalClient {
    fn call(&self, io: &mut dyn CallerIo, call: &CallMeta) -> Result<(), CallError> {
        let (conn, id) = self.0.send(io, call)?;
        self.0.receive(conn, id, io)
    }

    fn start(
        &self,
        io: &mut dyn CallerIo,
        call: &CallMeta,
    ) -> Result<Box<dyn PendingCall>, CallError> {
        // The request leaves now; the server works while the caller goes on.
        let (conn, id) = self.0.send(io, call)?;
        Ok(Box::new(LocalPending {
            endpoint: self.0.clone(),
            conn,
            id,
        }))
    }
}

/// A request that left; its answer is read when the caller waits.
struct LocalPending {
    endpoint: Arc<Endpoint>,
    conn: Connection,
    id: u64,
}

impl PendingCall for LocalPending {
    fn wait(self: Box<Self>, io: &mut dyn CallerIo) -> Result<(), CallError> {
        let LocalPending { endpoint, conn, id } = *self;
        endpoint.receive(conn, id, io)
    }
}
