//! The direct server's side of one connection: its stream and read
//! buffer, reading a request's header, names and payload under their
//! deadlines (the phase timeout, and a payload's budget), and refusing a
//! connection with an error frame that says why.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::socket::{is_own_timeout, DataStream};
use crate::deadline::{payload_budget, Deadline, LOCAL_PHASE_TIMEOUT};
use crate::error::{CallError, ErrorCode};
use crate::transport::admission::WarnBudget;
use crate::transport::local::wire::{
    self, Header, Kind, WireError, HEADER_LEN, MAX_CALLER_LEN, MAX_TARGET_LEN,
};

/// How long a connection that is closed after an error is drained.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(200);

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
    #[error("the request's payload did not arrive within its budget of {0:?}")]
    Late(Duration),
}

impl ConnError {
    /// A payload that stalled or was late: the peer is told so.
    pub(super) fn is_late(&self) -> bool {
        matches!(self, ConnError::Stalled(_) | ConnError::Late(_))
    }
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        // A payload read that stalled or ran out of its budget carries why.
        if !e.get_ref().is_some_and(|inner| inner.is::<ConnError>()) {
            return ConnError::Wire(WireError::Io(e));
        }
        match e.into_inner().map(|inner| inner.downcast::<ConnError>()) {
            Some(Ok(why)) => *why,
            _ => ConnError::Stalled("payload"),
        }
    }
}

/// An io error that says a payload stalled or was late.
fn late(why: ConnError) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, why)
}

/// How much of a connection's input is buffered: a request's header,
/// target and a small payload arrive in one receive.
const READ_BUFFER: usize = 16 << 10;

/// One connection: its stream (whose socket's receive timeout is the phase
/// timeout) and what was received and not yet taken.
pub(crate) struct Conn {
    stream: DataStream,
    /// The peer's address.
    pub(super) peer: SocketAddr,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// When the current request's payload is due whole, and its budget.
    payload_due: Option<(Deadline, Duration)>,
}

impl Conn {
    /// A connection from `peer`; sets its receive timeout.
    pub(super) fn new(stream: DataStream, peer: SocketAddr) -> io::Result<Conn> {
        stream.tcp().set_read_timeout(Some(LOCAL_PHASE_TIMEOUT))?;
        Ok(Conn {
            stream,
            peer,
            buf: vec![0u8; READ_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            payload_due: None,
        })
    }

    /// Starts the payload of a request: `len` bytes, due within the budget
    /// at `min_rate` bytes per second. Whether some of it has yet to
    /// arrive (it is not all in the buffer); a payload all in the buffer
    /// reads nothing more, so it gets no budget (and reads no clock).
    pub(crate) fn begin_payload(&mut self, len: u64, min_rate: u64) -> bool {
        let arriving = ((self.end - self.start) as u64) < len;
        if arriving {
            let budget = payload_budget(len, min_rate);
            let due = Deadline::after(budget);
            self.payload_due = Some((due, budget));
            self.stream.set_read_due(Some(due.instant()));
        }
        arriving
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
        self.payload_due = None;
        let idle_since = Instant::now();
        // Under TLS a record trickled a byte at a time would keep one read
        // going past every phase: the socket's reads check the time too.
        self.stream
            .set_read_due(Some(idle_since + idle + LOCAL_PHASE_TIMEOUT));
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
        self.stream.set_read_due(Some(phase.instant()));
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
    /// from the socket into `out`, each read due within the phase timeout
    /// and the whole payload within its budget (checked at every read).
    pub(super) fn read_payload(&mut self, out: &mut [u8]) -> io::Result<()> {
        let buffered = (self.end - self.start).min(out.len());
        out[..buffered].copy_from_slice(&self.buf[self.start..self.start + buffered]);
        self.start += buffered;
        let mut filled = buffered;
        while filled < out.len() {
            let expired = self.payload_due.filter(|(due, _)| due.is_expired());
            if let Some((_, budget)) = expired {
                return Err(late(ConnError::Late(budget)));
            }
            match self.stream.read(&mut out[filled..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_own_timeout(&e) => {
                    return Err(match self.payload_due {
                        Some((due, budget)) if due.is_expired() => late(ConnError::Late(budget)),
                        _ => late(ConnError::Stalled("payload")),
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
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
    pub(super) fn send(&mut self, h: &Header, payload: &[u8]) -> io::Result<()> {
        wire::write_frame(&mut self.stream, h, &[], payload)?;
        self.stream.flush()
    }

    pub(super) fn send_error(&mut self, id: u64, e: &CallError) -> io::Result<()> {
        wire::write_error(&mut self.stream, id, e.code.as_raw(), &e.message)?;
        self.stream.flush()
    }

    /// Tells the peer why the connection ends, then drains and closes it.
    pub(super) fn refuse(&mut self, id: u64, e: ConnError, warnings: &WarnBudget) -> ConnError {
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
