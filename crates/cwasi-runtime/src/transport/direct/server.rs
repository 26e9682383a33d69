//! The direct data plane, server side: accepts TCP connections from other
//! nodes up to a cap, completes the TLS handshake (the peer must present a
//! certificate of the cluster CA) and says "ready", then reads requests
//! and runs them through `guest::invoke`. A request's payload is read off
//! the socket straight into the buffer the callee's `cwasi_alloc` returned,
//! and the response is written from the callee's memory to the socket.
//!
//! Deadlines: a connection may sit idle between requests for the idle
//! timeout; a request's header and target must arrive within
//! [`LOCAL_PHASE_TIMEOUT`] of its first byte, and its payload must keep
//! arriving (no read waits longer than that). A call slot is taken once
//! the header is in, so a caller that stops sending mid-payload holds it
//! for at most one such wait. Retries of answered requests are answered
//! from [`Answered`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConfig;

use super::answered::{Answer, Answered, Claim, RequestKey, KEEP_MAX};
use super::callers::PeerCallers;
use super::config::DataAddr;
use super::socket::{is_own_timeout, tune, DataStream};
use crate::call::{CallMeta, Incoming};
use crate::config::Mode;
use crate::deadline::{Deadline, LOCAL_IO_TIMEOUT, LOCAL_PHASE_TIMEOUT};
use crate::error::{CallError, ErrorCode, RuntimeError};
use crate::guest::function::Function;
use crate::guest::invoke::{serve_call, Exchange};
use crate::identity::CallerIdentity;
use crate::transport::admission::{accept_until, AcceptThread, Connections, Slots, WarnBudget};
use crate::transport::local::wire::{
    self, Header, Kind, WireError, HEADER_LEN, MAX_CALLER_LEN, MAX_TARGET_LEN,
};
use crate::transport::node_identity::NodeIdentity;

/// How long a connection that is closed after an error is drained.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(200);

/// How a direct server admits connections and calls.
#[derive(Debug, Clone)]
pub(crate) struct DirectSettings {
    /// Calls that may run at once; more wait for a slot.
    pub max_concurrent_calls: usize,
    /// Connections open at once; more are closed at once.
    pub max_connections: usize,
    /// How long an idle connection is kept open.
    pub idle_timeout: Duration,
    /// This node's identity, which checks the node a caller claims against
    /// its certificate (with TLS).
    pub identity: Option<Arc<NodeIdentity>>,
}

/// A running direct server; dropping it stops accepting and joins the
/// accept thread (connections in progress finish on their own threads).
pub(crate) struct DirectServer {
    _accept: AcceptThread,
    addr: DataAddr,
}

impl DirectServer {
    /// Serves `function` on `listener`, with TLS when `tls` is given.
    pub fn start(
        listener: TcpListener,
        function: Arc<Function>,
        tls: Option<Arc<ServerConfig>>,
        settings: DirectSettings,
    ) -> Result<DirectServer, RuntimeError> {
        let addr = DataAddr {
            tls: tls.is_some(),
            addr: listener.local_addr().map_err(|source| RuntimeError::Io {
                path: "the direct server's listening socket".into(),
                source,
            })?,
        };
        let name = format!("cwasi-direct-{}", function.spec.name);
        let shared = Arc::new(Shared {
            slots: Slots::new(settings.max_concurrent_calls),
            connections: Connections::new(settings.max_connections),
            warnings: WarnBudget::default(),
            answered: Answered::default(),
            function,
            tls,
            settings,
        });
        let accept = AcceptThread::spawn(name, listener, move |listener, stop| {
            accept_loop(listener, shared, stop)
        })?;
        if !addr.tls {
            tracing::warn!(%addr, "direct data plane in PLAIN TCP: no encryption, no peer authentication; for a trusted network only");
        }
        Ok(DirectServer {
            _accept: accept,
            addr,
        })
    }

    /// The address it listens on, as announced.
    pub fn data_addr(&self) -> DataAddr {
        self.addr
    }
}

struct Shared {
    function: Arc<Function>,
    tls: Option<Arc<ServerConfig>>,
    slots: Slots,
    connections: Connections,
    warnings: WarnBudget,
    answered: Answered,
    settings: DirectSettings,
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    accept_until(listener.incoming(), &stop, &shared.warnings, |tcp| {
        let Ok(peer) = tcp.peer_addr() else {
            return;
        };
        let Some(slot) = shared.connections.admit() else {
            refuse_over_capacity(&tcp, peer, &shared);
            return;
        };
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("cwasi-direct-conn".into())
            .spawn(move || {
                let _slot = slot;
                if let Err(e) = serve_connection(tcp, peer, &shared) {
                    tracing::debug!(%peer, "direct connection closed: {e}");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a connection thread: {e}");
        }
    });
}

/// Refuses a connection over the cap on the accept thread, without
/// blocking: a plain one gets an error frame first; a TLS one is closed
/// before its handshake (the caller tries another node or the broker).
fn refuse_over_capacity(tcp: &TcpStream, peer: SocketAddr, shared: &Shared) {
    let max = shared.connections.max();
    let msg = format!(
        "'{}' has {max} direct connections open, its limit; try again later",
        shared.function.spec.name
    );
    if let Some(suppressed) = shared.warnings.allow() {
        tracing::warn!(suppressed, %peer, "refusing a direct connection: {msg}");
    }
    if shared.tls.is_none() {
        let _ = tcp.set_nonblocking(true);
        let mut s = tcp;
        let _ = wire::write_error(&mut s, 0, ErrorCode::ResourceLimit.as_raw(), &msg);
    }
    let _ = tcp.shutdown(std::net::Shutdown::Both);
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("TLS handshake with {0} failed: {1}")]
    Handshake(SocketAddr, io::Error),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("the request's {0} did not arrive within {LOCAL_PHASE_TIMEOUT:?}")]
    Stalled(&'static str),
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        ConnError::Wire(WireError::Io(e))
    }
}

/// How much of a connection's input is buffered: a request's header,
/// target and a small payload arrive in one receive.
const READ_BUFFER: usize = 16 << 10;

/// One connection: its stream (whose socket's receive timeout is the phase
/// timeout) and what was received and not yet taken.
pub(crate) struct Conn {
    stream: DataStream,
    peer: SocketAddr,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Conn {
    /// A connection from `peer`; sets its receive timeout.
    fn new(stream: DataStream, peer: SocketAddr) -> io::Result<Conn> {
        stream.tcp().set_read_timeout(Some(LOCAL_PHASE_TIMEOUT))?;
        Ok(Conn {
            stream,
            peer,
            buf: vec![0u8; READ_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
        })
    }

    /// A plain connection from `peer` (for the fuzz target).
    pub(crate) fn plain(tcp: TcpStream, peer: SocketAddr) -> io::Result<Conn> {
        Conn::new(DataStream::Plain(tcp), peer)
    }

    /// Reads into the buffer once (at most one socket timeout, which is
    /// the phase timeout); `Ok(0)` at the end of the stream.
    fn fill_once(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Copies exactly `out.len()` bytes from the buffer and the stream, the
    /// whole of it due by `deadline` (checked at every read).
    fn read_by(
        &mut self,
        out: &mut [u8],
        deadline: Deadline,
        phase: &'static str,
    ) -> Result<(), ConnError> {
        while self.end - self.start < out.len() {
            if deadline.is_expired() {
                return Err(ConnError::Stalled(phase));
            }
            match self.fill_once() {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                Ok(_) => {}
                Err(e) if is_own_timeout(&e) => return Err(ConnError::Stalled(phase)),
                Err(e) => return Err(e.into()),
            }
        }
        out.copy_from_slice(&self.buf[self.start..self.start + out.len()]);
        self.start += out.len();
        Ok(())
    }

    /// Waits up to `idle` for the next request and reads its header and
    /// target (into `target`), both due within the phase timeout of its
    /// first byte; its payload is left to read. `None`: the peer closed
    /// the connection or left it idle.
    ///
    /// One receive usually brings the header, the target and a small
    /// payload together; they are buffered, and the socket's timeout stays
    /// the phase timeout (an idle wait is several of them), so a request
    /// costs no `setsockopt`.
    pub(crate) fn next_request(
        &mut self,
        idle: Duration,
        max_payload: u64,
        names: &mut [u8; MAX_TARGET_LEN + MAX_CALLER_LEN],
    ) -> Result<Option<Header>, ConnError> {
        let idle_since = Instant::now();
        while self.start == self.end {
            match self.fill_once() {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if is_own_timeout(&e) && idle_since.elapsed() < idle => {}
                Err(e) if is_own_timeout(&e) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        let phase = Deadline::after(LOCAL_PHASE_TIMEOUT);
        let mut head = [0u8; HEADER_LEN];
        self.read_by(&mut head, phase, "header")?;
        let h = Header::decode(&head, max_payload)?;
        if h.kind != Kind::Request || h.flags != 0 || h.target_len == 0 || h.caller_len == 0 {
            return Err(ConnError::Protocol(format!(
                "expected a request with a target, a caller and an inline payload, got {:?} \
                 (flags {:#x}, target length {}, caller length {})",
                h.kind, h.flags, h.target_len, h.caller_len
            )));
        }
        let len = h.target_len as usize + h.caller_len as usize;
        self.read_by(&mut names[..len], phase, "target and caller")?;
        Ok(Some(h))
    }

    /// Reads exactly `out` (a payload): what is buffered, then straight
    /// from the socket into `out`, each read due within the phase timeout.
    fn read_payload(&mut self, out: &mut [u8]) -> io::Result<()> {
        let buffered = (self.end - self.start).min(out.len());
        out[..buffered].copy_from_slice(&self.buf[self.start..self.start + buffered]);
        self.start += buffered;
        self.stream.read_exact(&mut out[buffered..]).map_err(|e| {
            if is_own_timeout(&e) {
                io::Error::new(io::ErrorKind::TimedOut, ConnError::Stalled("payload"))
            } else {
                e
            }
        })
    }

    /// Reads and drops a payload of `len` bytes, keeping the stream in step.
    pub(crate) fn skip_payload(&mut self, len: u64) -> io::Result<()> {
        let mut scratch = vec![0u8; (len as usize).min(64 << 10)];
        let mut left = len;
        while left > 0 {
            let n = (left as usize).min(scratch.len());
            self.read_payload(&mut scratch[..n])?;
            left -= n as u64;
        }
        Ok(())
    }

    /// Writes a whole frame and flushes it.
    fn send(&mut self, h: &Header, payload: &[u8]) -> io::Result<()> {
        wire::write_frame(&mut self.stream, h, &[], payload)?;
        self.stream.flush()
    }

    fn send_error(&mut self, id: u64, e: &CallError) -> io::Result<()> {
        wire::write_error(&mut self.stream, id, e.code.as_raw(), &e.message)?;
        self.stream.flush()
    }

    /// Tells the peer why the connection ends, then drains and closes it.
    fn refuse(&mut self, id: u64, e: ConnError, warnings: &WarnBudget) -> ConnError {
        if let Some(suppressed) = warnings.allow() {
            tracing::warn!(suppressed, peer = %self.peer, "closing a direct connection: {e}");
        }
        let _ = wire::write_error(
            &mut self.stream,
            id,
            ErrorCode::Transport.as_raw(),
            &e.to_string(),
        );
        let _ = self.stream.flush();
        let tcp = self.stream.tcp();
        let _ = tcp.shutdown(std::net::Shutdown::Write);
        let _ = tcp.set_read_timeout(Some(DRAIN_TIMEOUT));
        let _ = io::copy(&mut tcp.take(1 << 20), &mut io::sink());
        e
    }
}

fn serve_connection(tcp: TcpStream, peer: SocketAddr, shared: &Shared) -> Result<(), ConnError> {
    tune(&tcp)?;
    tcp.set_read_timeout(Some(LOCAL_PHASE_TIMEOUT))?;
    tcp.set_write_timeout(Some(LOCAL_IO_TIMEOUT))?;
    let mut stream = DataStream::server(tcp, shared.tls.as_ref())?;
    if let Err(e) = stream.handshake() {
        let e = ConnError::Handshake(peer, e);
        if let Some(suppressed) = shared.warnings.allow() {
            tracing::warn!(suppressed, "refusing a direct connection: {e}");
        }
        return Err(e);
    }
    let proof = match (stream.peer_certificate(), &shared.settings.identity) {
        (Some(cert), Some(identity)) => Some((cert, identity.clone())),
        _ => None,
    };
    let mut callers = PeerCallers::new(proof);
    let mut conn = Conn::new(stream, peer)?;
    // "Ready": the caller knows it was admitted (its certificate too).
    conn.send(&Header::new(Kind::Response, 0), &[])?;
    let max_payload = shared.function.limits().max_payload_bytes as u64;
    let idle = shared.settings.idle_timeout;
    let mut names = [0u8; MAX_TARGET_LEN + MAX_CALLER_LEN];
    loop {
        let h = match conn.next_request(idle, max_payload, &mut names) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(()),
            Err(e @ ConnError::Wire(WireError::Io(_))) => return Err(e),
            Err(e) => return Err(conn.refuse(0, e, &shared.warnings)),
        };
        let (target, claim) =
            names[..h.target_len as usize + h.caller_len as usize].split_at(h.target_len as usize);
        let caller = callers.identify(claim);
        handle_request(&mut conn, &h, (target, caller), shared)?;
    }
}

/// Answers one request whose header and target are in; its payload is
/// still on the wire. Returns an error only when the connection must end.
fn handle_request(
    conn: &mut Conn,
    h: &Header,
    (target, caller): (&[u8], Result<Arc<CallerIdentity>, CallError>),
    shared: &Shared,
) -> Result<(), ConnError> {
    let f = &shared.function;
    let refuse_call = |conn: &mut Conn, e: CallError| -> Result<(), ConnError> {
        conn.skip_payload(h.payload_len)?;
        conn.send_error(h.id, &e)?;
        Ok(())
    };
    if target != f.spec.name.as_bytes() {
        let e = CallError::new(
            ErrorCode::UnknownFunction,
            format!(
                "this server hosts '{}', not '{}'",
                f.spec.name,
                String::from_utf8_lossy(target)
            ),
        );
        return refuse_call(conn, e);
    }
    let caller_deadline =
        (h.budget_us > 0).then(|| Deadline::after(Duration::from_micros(h.budget_us)));
    let admitted = caller.and_then(|caller| {
        let request = Incoming {
            depth: u32::from(h.depth),
            deadline: caller_deadline,
            trace: h.trace,
            caller: &caller,
        };
        CallMeta::incoming(request, &f.spec, f.limits())
    });
    let call = match admitted {
        Ok(c) => c,
        Err(e) => return refuse_call(conn, e),
    };
    let key: RequestKey = (conn.peer.ip(), h.id);
    if let Claim::Again(answer) = shared.answered.claim(key, call.deadline) {
        tracing::debug!(peer = %conn.peer, id = h.id, "a retry answered from memory");
        conn.skip_payload(h.payload_len)?;
        match answer {
            Answer::Response(r) => {
                let mut out = Header::new(Kind::Response, h.id);
                out.payload_len = r.len() as u64;
                conn.send(&out, &r)?;
            }
            Answer::Failed(e) => conn.send_error(h.id, &e)?,
            // `claim` runs such a request again instead; this only keeps
            // the stream in step if that ever changes.
            Answer::NotKept => {
                let e = CallError::new(ErrorCode::Transport, "the earlier answer was not kept");
                conn.send_error(h.id, &e)?
            }
        }
        return Ok(());
    }
    if shared.slots.acquire(call.deadline.remaining()).is_none() {
        shared.answered.finish(key, Answer::NotKept);
        let e = CallError::new(
            ErrorCode::ResourceLimit,
            format!(
                "'{}' is busy: no call slot freed within the timeout",
                f.spec.name
            ),
        );
        return refuse_call(conn, e);
    }
    let mut exchange = SocketExchange {
        conn,
        id: h.id,
        len: h.payload_len as usize,
        request_read: false,
        responded: false,
        kept: None,
        broken: None,
    };
    let result = serve_call(f, call.reissued(), Mode::RemoteDirect, &mut exchange);
    shared.slots.release();
    let answer = match (&result, exchange.kept.take()) {
        (_, Some(kept)) => Answer::Response(kept),
        (Err(e), None) if !exchange.responded && exchange.broken.is_none() => {
            Answer::Failed(e.clone())
        }
        _ => Answer::NotKept,
    };
    shared.answered.finish(key, answer);
    if let Some(broken) = exchange.broken.take() {
        return Err(broken.into());
    }
    if let Err(e) = result {
        if !exchange.request_read {
            exchange.conn.skip_payload(h.payload_len)?;
        }
        exchange.conn.send_error(h.id, &e)?;
    }
    Ok(())
}

/// One request's connection as an [`Exchange`]: the payload is read off
/// the socket into the callee's buffer, the response written from the
/// callee's memory. A failure of the connection itself is kept in
/// `broken`: the connection then ends.
struct SocketExchange<'a> {
    conn: &'a mut Conn,
    id: u64,
    len: usize,
    request_read: bool,
    /// Whether the function produced a response (it may not have arrived).
    responded: bool,
    /// A copy of a response small enough to keep for a retry.
    kept: Option<Vec<u8>>,
    broken: Option<io::Error>,
}

impl SocketExchange<'_> {
    fn lost(&mut self, e: io::Error) -> CallError {
        let err = CallError::new(ErrorCode::Transport, format!("connection lost: {e}"));
        self.broken = Some(e);
        err
    }
}

impl Exchange for SocketExchange<'_> {
    fn request_len(&self) -> usize {
        self.len
    }

    fn read_request(&mut self, dst: &mut [u8]) -> Result<(), CallError> {
        self.request_read = true;
        self.conn.read_payload(dst).map_err(|e| self.lost(e))
    }

    fn write_response(&mut self, response: &[u8]) -> Result<(), CallError> {
        self.responded = true;
        if response.len() <= KEEP_MAX {
            self.kept = Some(response.to_vec());
        }
        let mut out = Header::new(Kind::Response, self.id);
        out.payload_len = response.len() as u64;
        self.conn.send(&out, response).map_err(|e| self.lost(e))
    }
}
