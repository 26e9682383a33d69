//! One node that serves the callee, seen from the caller: its data
//! address, its pool of connections, and whether it is down. A call on a
//! peer either succeeds, or fails in one of three ways ([`Failure`]) that
//! tell the client whether to try another node.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use super::balance::Load;
use super::config::DataAddr;
use super::socket::{arm, is_own_timeout, tune, DataStream};
use super::tls::{is_authentication_failure, server_name};
use crate::call::{CallMeta, CallerIo};
use crate::deadline::{Deadline, ANSWER_GRACE};
use crate::error::{CallError, ErrorCode};
use crate::transport::local::wire::{self, Header, Kind, RequestNames, WireError};

/// The longest a TCP connect may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest the TLS handshake and the server's "ready" may take.
const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a peer that failed is passed over.
const DOWN_FOR: Duration = Duration::from_secs(1);
/// Pooled connections idle longer than this are closed instead of used
/// (servers close idle ones after 30 s by default).
const POOL_IDLE_MAX: Duration = Duration::from_secs(20);
/// Pooled connections idle longer than this are checked for a close from
/// the server (a non-blocking peek) before they are used.
const PEEK_AFTER: Duration = Duration::from_secs(1);
/// Longest error message read from an error frame.
const MAX_ERROR_MESSAGE: usize = 64 << 10;

/// How this node connects to others: its TLS client configuration, and
/// whether plain TCP is allowed.
#[derive(Clone)]
pub(crate) struct ClientSetup {
    /// Mutual TLS, if this node has certificates.
    pub tls: Option<Arc<ClientConfig>>,
    /// Whether a peer offering plain TCP may be called directly.
    pub allow_plain: bool,
}

/// Why a call on a peer failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Nothing reached the callee (no connection, or the request did not
    /// leave whole): another node may be tried.
    NotSent(CallError),
    /// The request left, and the connection failed before the answer: the
    /// call may have run. Retried once, with the same request id.
    Lost(CallError),
    /// The answer (an error frame), a timeout, or a refused identity.
    Final(CallError),
}

impl Failure {
    /// The error inside.
    pub fn into_error(self) -> CallError {
        match self {
            Failure::NotSent(e) | Failure::Lost(e) | Failure::Final(e) => e,
        }
    }
}

/// A node serving the callee at a data address.
pub(crate) struct Peer {
    /// The node's name (checked against its certificate).
    pub node: String,
    /// Where it listens.
    pub addr: DataAddr,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    idle: Mutex<Vec<(ClientConn, Instant)>>,
    down_until: Mutex<Option<Instant>>,
    /// This caller's calls in flight there, and their average latency.
    pub load: Load,
}

/// An open connection to a peer.
struct ClientConn {
    stream: DataStream,
    read_armed: Option<Duration>,
    write_armed: Option<Duration>,
}

impl Peer {
    /// A peer for `node` announcing `data_addr`, or why this node cannot
    /// call it directly.
    pub fn new(node: &str, data_addr: Option<&str>, setup: &ClientSetup) -> Result<Peer, String> {
        let Some(announced) = data_addr else {
            return Err(format!("node '{node}' announced no data address"));
        };
        let addr: DataAddr = announced
            .parse()
            .map_err(|e| format!("node '{node}' announced a bad data address: {e}"))?;
        let tls = match (addr.tls, &setup.tls) {
            (true, Some(config)) => Some((config.clone(), server_name(node)?)),
            (true, None) => {
                return Err(format!(
                    "node '{node}' takes TLS at {addr}, and this node has no certificate \
                     (CWASI_TLS_CA, CWASI_TLS_CERT, CWASI_TLS_KEY)"
                ))
            }
            (false, _) if setup.allow_plain => None,
            (false, _) => {
                return Err(format!(
                    "node '{node}' offers plain TCP at {addr}, which this node does not allow \
                     (CWASI_DIRECT_PLAIN=1 allows it on a trusted network)"
                ))
            }
        };
        Ok(Peer {
            node: node.to_string(),
            addr,
            tls,
            idle: Mutex::new(Vec::new()),
            down_until: Mutex::new(None),
            load: Load::default(),
        })
    }

    /// Whether it failed less than a moment ago.
    pub fn is_down(&self) -> bool {
        self.down_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| Instant::now() < t)
    }

    /// Passes it over for a moment, and closes its pooled connections.
    pub fn mark_down(&self) {
        *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + DOWN_FOR);
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> CallError {
        CallError::new(
            ErrorCode::Transport,
            format!("node '{}' at {}: {what}: {e}", self.node, self.addr),
        )
    }

    /// Opens a connection (TCP, TLS handshake, the server's "ready") by
    /// `deadline`, within the connect and ready bounds.
    fn connect(&self, deadline: Deadline) -> Result<ClientConn, Failure> {
        let left = deadline.remaining();
        if left.is_zero() {
            return Err(Failure::Final(CallError::new(
                ErrorCode::Timeout,
                format!("no time left to connect to node '{}'", self.node),
            )));
        }
        let tcp = TcpStream::connect_timeout(&self.addr.addr, left.min(CONNECT_TIMEOUT))
            .map_err(|e| Failure::NotSent(self.failed("cannot connect", e)))?;
        let setup = |tcp: &TcpStream| -> io::Result<()> {
            tune(tcp)?;
            let ready = left.min(READY_TIMEOUT).max(Duration::from_millis(1));
            tcp.set_read_timeout(Some(ready))?;
            tcp.set_write_timeout(Some(ready))
        };
        setup(&tcp).map_err(|e| Failure::NotSent(self.failed("cannot set the socket up", e)))?;
        let tls = self.tls.as_ref().map(|(c, n)| (c, n.clone()));
        let mut stream =
            DataStream::client(tcp, tls).map_err(|e| Failure::NotSent(self.failed("TLS", e)))?;
        let refused = |e: io::Error| {
            if is_authentication_failure(&e) {
                Failure::Final(CallError::new(
                    ErrorCode::Denied,
                    format!(
                        "node '{}' at {}: mutual TLS refused: {e} (both nodes need certificates \
                         of the same cluster CA, and the server's must name its node)",
                        self.node, self.addr
                    ),
                ))
            } else {
                Failure::NotSent(self.failed("no ready from the server", e))
            }
        };
        stream.handshake().map_err(refused)?;
        match wire::read_header(&mut stream, MAX_ERROR_MESSAGE as u64) {
            Ok(h) if h.kind == Kind::Response && h.id == 0 && h.payload_len == 0 => {}
            Ok(h) if h.kind == Kind::Error => {
                let (code, msg) =
                    read_error(&mut stream, &h).unwrap_or((ErrorCode::Transport, String::new()));
                return Err(Failure::NotSent(CallError::new(
                    code,
                    format!(
                        "node '{}' at {} refused the connection: {msg}",
                        self.node, self.addr
                    ),
                )));
            }
            Ok(h) => {
                return Err(Failure::NotSent(
                    self.failed("not a CWASI server", format!("{:?} frame first", h.kind)),
                ))
            }
            Err(WireError::Io(e)) => return Err(refused(e)),
            Err(e) => return Err(Failure::NotSent(self.failed("not a CWASI server", e))),
        }
        Ok(ClientConn {
            stream,
            read_armed: None,
            write_armed: None,
        })
    }

    /// Opens a connection and pools it: whether the peer can be reached.
    pub fn warm_up(&self, deadline: Deadline) -> Result<(), Failure> {
        let conn = self.connect(deadline)?;
        self.give_back(conn);
        Ok(())
    }

    /// A pooled connection that is still open, if any.
    fn pooled(&self) -> Option<ClientConn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((conn, since)) = idle.pop() {
            let idle = since.elapsed();
            // A connection used a moment ago is taken as open (a server
            // closes idle ones after its idle timeout); one that died in
            // that moment fails the call as lost, and it is retried.
            if idle < POOL_IDLE_MAX && (idle < PEEK_AFTER || still_open(conn.stream.tcp())) {
                return Some(conn);
            }
        }
        None
    }

    fn give_back(&self, conn: ClientConn) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((conn, Instant::now()));
    }

    /// Calls `target` on this peer with request id `id`: the request goes
    /// from the caller's memory to the socket, and the response from the
    /// socket into the buffer the caller provides.
    pub fn call(
        &self,
        id: u64,
        names: &RequestNames,
        io: &mut dyn CallerIo,
        call: &CallMeta,
        max_payload: usize,
    ) -> Result<(), Failure> {
        let mut conn = match self.pooled() {
            Some(c) => c,
            None => self.connect(call.deadline)?,
        };
        // Every wait ends by the deadline and the grace for the server's
        // own timeout error.
        let until = call.deadline.instant() + ANSWER_GRACE;
        let target = names.target();
        let timed_out = |what: &str| {
            Failure::Final(CallError::new(
                ErrorCode::Timeout,
                format!("'{target}' on node '{}' did not {what} in time", self.node),
            ))
        };
        let mut h = Header::new(Kind::Request, id);
        names.describe(&mut h);
        h.depth = call.depth.min(u16::MAX as u32) as u16;
        h.budget_us = (call.deadline.remaining().as_micros() as u64).max(1);
        h.trace = call.trace;
        h.payload_len = io.request().len() as u64;
        if let Err(e) = send(&mut conn, &h, names.bytes(), io.request(), until) {
            if is_own_timeout(&e) {
                return Err(timed_out("take the request"));
            }
            // A request that did not leave whole never runs: the server
            // reads it whole into the callee before running anything.
            return Err(Failure::NotSent(self.failed("cannot send the request", e)));
        }
        let lost = |e: &dyn std::fmt::Display| {
            Failure::Lost(self.failed("connection lost before the answer", e))
        };
        let wait = until.saturating_duration_since(Instant::now());
        arm(
            conn.stream.tcp(),
            &mut conn.read_armed,
            wait,
            TcpStream::set_read_timeout,
        )
        .map_err(|e| lost(&e))?;
        let answer = match wire::read_header(&mut conn.stream, max_payload as u64) {
            Ok(a) => a,
            Err(WireError::Io(e)) if is_own_timeout(&e) => return Err(timed_out("answer")),
            Err(WireError::Io(e)) if is_authentication_failure(&e) => {
                return Err(Failure::Final(CallError::new(
                    ErrorCode::Denied,
                    format!("node '{}' refused this node's certificate: {e}", self.node),
                )))
            }
            Err(WireError::Io(e)) => return Err(lost(&e)),
            Err(WireError::Closed) => return Err(lost(&"the server closed it (did it die?)")),
            Err(e @ WireError::TooLong { .. }) => {
                return Err(Failure::Final(CallError::new(
                    ErrorCode::TooLarge,
                    format!("'{target}' on node '{}': {e}", self.node),
                )))
            }
            Err(e) => return Err(Failure::Final(self.failed("bad answer", e))),
        };
        if answer.id != id {
            return Err(Failure::Final(self.failed(
                "bad answer",
                format!("answer to request {} while waiting for {id}", answer.id),
            )));
        }
        match answer.kind {
            Kind::Response => {}
            Kind::Error => {
                let (code, message) =
                    read_error(&mut conn.stream, &answer).map_err(|e| lost(&e))?;
                if answer.payload_len as usize <= MAX_ERROR_MESSAGE {
                    self.give_back(conn);
                }
                return Err(Failure::Final(CallError::new(code, message)));
            }
            other => {
                return Err(Failure::Final(
                    self.failed("bad answer", format!("unexpected {other:?} frame")),
                ))
            }
        }
        let len = answer.payload_len as usize;
        let dst = io.response_buffer(len).map_err(Failure::Final)?;
        let n = dst.len();
        let read = conn.stream.read_exact(dst).and_then(|()| {
            // A caller that takes fewer bytes (the prototype's truncating
            // `func_connect`) leaves the rest to be read and dropped.
            io::copy(
                &mut (&mut conn.stream).take((len - n) as u64),
                &mut io::sink(),
            )
            .map(|_| ())
        });
        match read {
            Ok(()) => {
                self.give_back(conn);
                Ok(())
            }
            Err(e) if is_own_timeout(&e) => Err(timed_out("answer")),
            Err(e) => Err(lost(&e)),
        }
    }
}

/// Writes a request frame whole by `until`.
fn send(
    conn: &mut ClientConn,
    h: &Header,
    target: &[u8],
    payload: &[u8],
    until: Instant,
) -> io::Result<()> {
    let head = h.encode();
    let mut bufs = [
        io::IoSlice::new(&head),
        io::IoSlice::new(target),
        io::IoSlice::new(payload),
    ];
    let mut bufs = &mut bufs[..];
    while !bufs.is_empty() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        arm(
            conn.stream.tcp(),
            &mut conn.write_armed,
            left,
            TcpStream::set_write_timeout,
        )?;
        match conn.stream.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    conn.stream.flush()
}

/// Whether a pooled connection is still open: nothing may be waiting on it
/// (an idle connection gets nothing but the peer's close).
fn still_open(tcp: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
    matches!(
        rustix::net::recv(tcp, &mut b[..], flags),
        Err(rustix::io::Errno::AGAIN)
    )
}

/// Reads the message of error frame `h` (at most [`MAX_ERROR_MESSAGE`]
/// bytes) and its code.
fn read_error(stream: &mut DataStream, h: &Header) -> io::Result<(ErrorCode, String)> {
    let mut msg = vec![0u8; (h.payload_len as usize).min(MAX_ERROR_MESSAGE)];
    stream.read_exact(&mut msg)?;
    let code = ErrorCode::from_raw(h.status).unwrap_or(ErrorCode::Transport);
    Ok((code, String::from_utf8_lossy(&msg).into_owned()))
}
