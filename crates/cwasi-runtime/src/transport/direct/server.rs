//! The direct data plane, server side: accepts TCP connections from other
//! nodes up to a cap, completes the TLS handshake (the peer must present a
//! certificate of the cluster CA) and says "ready", then reads requests
//! and runs them through `guest::invoke`. A request's payload is read off
//! the socket straight into the buffer the callee's `cwasi_alloc` returned,
//! and the response is written from the callee's memory to the socket.
//!
//! Admission: a TLS connection first takes one of the places for
//! handshakes in progress (a quarter of them per IP address), and must
//! finish its handshake within [`HANDSHAKE_TIMEOUT`]; only then does it
//! count toward the cap on connections. A peer that opens connections and
//! never sends its ClientHello thus holds a few places for a second each,
//! and never keeps authenticated peers out.
//!
//! Deadlines: a connection may sit idle between requests for the idle
//! timeout; a request's header and target must arrive within
//! [`LOCAL_PHASE_TIMEOUT`] of its first byte, and its payload must keep
//! arriving (no read waits longer than that) and be in within its budget
//! ([`payload_budget`]). A call slot is taken once the header is in; a
//! request whose payload is not in yet also takes one of the places for
//! payloads still arriving (half the slots, a quarter per IP address), so
//! slow senders never hold every slot. Retries of answered requests are
//! answered from [`Answered`].

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConfig;

use super::answered::{Answer, Answered, Claim, RequestKey, KEEP_MAX};
use super::callers::PeerCallers;
use super::config::DataAddr;
use super::request::{Conn, ConnError};
use super::socket::{tune, DataStream};
use crate::call::{CallMeta, Incoming};
use crate::config::Mode;
use crate::deadline::{Deadline, LOCAL_IO_TIMEOUT, LOCAL_PHASE_TIMEOUT};
use crate::error::{CallError, ErrorCode, RuntimeError};
use crate::guest::function::Function;
use crate::guest::invoke::{serve_call, Exchange};
use crate::identity::CallerIdentity;
use crate::transport::admission::{
    accept_until, AcceptThread, CallSlots, ConnectionSlot, Connections, Share, Shares, WarnBudget,
};
use crate::transport::local::wire::{
    self, Header, Kind, WireError, MAX_CALLER_LEN, MAX_TARGET_LEN,
};
use crate::transport::node_identity::NodeIdentity;

/// How long a TLS handshake may take from the accept on.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// Most TLS handshakes in progress at once (at most half the cap on
/// connections); a quarter of them for one IP address.
const MAX_HANDSHAKES: usize = 64;

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
    /// The slowest a payload may arrive at, in bytes per second
    /// (`deadline::payload_budget`).
    pub min_payload_rate: u64,
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
        let handshakes = (settings.max_connections / 2).clamp(1, MAX_HANDSHAKES);
        let shared = Arc::new(Shared {
            calls: CallSlots::new(settings.max_concurrent_calls),
            connections: Connections::new(settings.max_connections),
            handshakes: Shares::new(handshakes, handshakes / 4),
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
    calls: CallSlots<IpAddr>,
    /// Connections past their handshake (all of them, in plain TCP).
    connections: Connections,
    /// TLS handshakes in progress, per IP address.
    handshakes: Shares<IpAddr>,
    warnings: WarnBudget,
    answered: Answered,
    settings: DirectSettings,
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    accept_until(listener.incoming(), &stop, &shared.warnings, |tcp| {
        let Ok(peer) = tcp.peer_addr() else {
            return;
        };
        let admitted = if shared.tls.is_some() {
            let Some(share) = shared.handshakes.try_take(peer.ip()) else {
                refuse_handshake(&tcp, peer, &shared);
                return;
            };
            Admission::Handshake(share)
        } else {
            let Some(slot) = shared.connections.admit() else {
                // On the accept thread: without blocking (a fresh socket's
                // buffer takes the frame).
                let _ = tcp.set_nonblocking(true);
                refuse_over_capacity(&mut &tcp, peer, &shared);
                let _ = tcp.shutdown(std::net::Shutdown::Both);
                return;
            };
            Admission::Connection(slot)
        };
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("cwasi-direct-conn".into())
            .spawn(move || {
                if let Err(e) = serve_connection(tcp, peer, admitted, &shared) {
                    tracing::debug!(%peer, "direct connection closed: {e}");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a connection thread: {e}");
        }
    });
}

/// What an accepted connection holds: a place among the handshakes in
/// progress (TLS), or its place among the open connections (plain).
enum Admission {
    Handshake(Share<IpAddr>),
    Connection(ConnectionSlot),
}

/// Refuses a connection over the cap on connections: logs it (within the
/// budget) and writes the error frame (`RESOURCE_LIMIT`) to `out`; the
/// caller closes the connection, and the peer tries another node or the
/// broker.
fn refuse_over_capacity(out: &mut impl Write, peer: SocketAddr, shared: &Shared) {
    let msg = format!(
        "'{}' has {} direct connections open, its limit; try again later",
        shared.function.spec.name,
        shared.connections.max()
    );
    if let Some(suppressed) = shared.warnings.allow() {
        tracing::warn!(suppressed, %peer, "refusing a direct connection: {msg}");
    }
    let _ = wire::write_error(out, 0, ErrorCode::ResourceLimit.as_raw(), &msg);
    let _ = out.flush();
}

/// Closes a TLS connection, before its handshake, that finds every place
/// for handshakes of its address (or of all) taken. Nothing can be said
/// before the handshake; the caller sees the connection close and tries
/// another node or the broker.
fn refuse_handshake(tcp: &TcpStream, peer: SocketAddr, shared: &Shared) {
    if let Some(suppressed) = shared.warnings.allow() {
        let (cap, per_ip) = (shared.handshakes.cap(), shared.handshakes.per_peer());
        tracing::warn!(
            suppressed,
            %peer,
            "refusing a direct connection: {per_ip} TLS handshakes from its address, or \
             {cap} in all, are in progress (each may take {HANDSHAKE_TIMEOUT:?})"
        );
    }
    let _ = tcp.shutdown(std::net::Shutdown::Both);
}

fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    admitted: Admission,
    shared: &Shared,
) -> Result<(), ConnError> {
    tune(&tcp)?;
    tcp.set_read_timeout(Some(LOCAL_PHASE_TIMEOUT))?;
    tcp.set_write_timeout(Some(LOCAL_IO_TIMEOUT))?;
    let mut stream = DataStream::server(tcp, shared.tls.as_ref())?;
    stream.set_read_due(Some(Instant::now() + HANDSHAKE_TIMEOUT));
    let shook = stream.handshake();
    stream.set_read_due(None);
    if let Err(e) = shook {
        let e = ConnError::Handshake(peer, e);
        if let Some(suppressed) = shared.warnings.allow() {
            tracing::warn!(suppressed, "refusing a direct connection: {e}");
        }
        return Err(e);
    }
    // Past its handshake, a TLS connection counts toward the cap; over it,
    // it is told so (the caller tries another node or the broker).
    let _slot = match admitted {
        Admission::Connection(slot) => slot,
        Admission::Handshake(share) => {
            drop(share);
            let Some(slot) = shared.connections.admit() else {
                refuse_over_capacity(&mut stream, peer, shared);
                let _ = stream.tcp().shutdown(std::net::Shutdown::Both);
                return Ok(());
            };
            slot
        }
    };
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
        match handle_request(&mut conn, &h, (target, caller), shared) {
            Ok(()) => {}
            // A payload that stalled or came too slowly: the peer is told.
            Err(e) if e.is_late() => return Err(conn.refuse(h.id, e, &shared.warnings)),
            Err(e) => return Err(e),
        }
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
    let arriving = conn.begin_payload(h.payload_len, shared.settings.min_payload_rate);
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
    let mut admitted = match shared
        .calls
        .admit(conn.peer.ip(), arriving, call.deadline.remaining())
    {
        Ok(a) => a,
        Err(busy) => {
            shared.answered.finish(key, Answer::NotKept);
            return refuse_call(conn, busy.refusal(&f.spec.name, "address"));
        }
    };
    let mut exchange = SocketExchange {
        conn,
        id: h.id,
        len: h.payload_len as usize,
        request_read: false,
        responded: false,
        kept: None,
        broken: None,
        arrival: admitted.arrival.take(),
    };
    let result = serve_call(f, call.reissued(), Mode::RemoteDirect, &mut exchange);
    drop(admitted);
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
    /// The request's place among payloads still arriving, until its
    /// payload is in.
    arrival: Option<Share<IpAddr>>,
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
        let read = self.conn.read_payload(dst);
        self.arrival = None;
        read.map_err(|e| self.lost(e))
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
