//! Local mode, server side: reading requests off a connection, each phase
//! under its own deadline.
//!
//! A connection may sit idle between requests for the server's idle
//! timeout. Once a request's first byte has arrived, each phase of it must
//! arrive within [`LOCAL_PHASE_TIMEOUT`]: the rest of the header, the
//! target name, an inline payload, and each progress count of a pipelined
//! payload. An inline payload (under [`SHM_THRESHOLD`]) is read whole
//! before the request is handed on, so a caller that stops half-way never
//! holds a call slot; a payload in the shared region is complete when its
//! header arrives. A pipelined one streams into the callee while it
//! arrives, so it holds a call slot: it must arrive whole within its
//! budget ([`payload_budget`]), however it trickles, and the server lets
//! only some of its slots, and fewer per peer, be held by such payloads
//! (`server.rs`).

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::shm::{is_peer_gone, is_timeout, PayloadSource, SHM_THRESHOLD};
use super::wire::{Header, Kind, WireError, HEADER_LEN, MAX_CALLER_LEN, MAX_TARGET_LEN};
use crate::deadline::{payload_budget, Deadline, LOCAL_PHASE_TIMEOUT};

/// Room for the largest request that travels whole on the socket: header,
/// target name and an inline payload.
const BUFFER_LEN: usize = HEADER_LEN + MAX_TARGET_LEN + MAX_CALLER_LEN + SHM_THRESHOLD;

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    /// The peer closed the connection, or left it idle past the idle
    /// timeout, between requests: the connection just ends.
    #[error("the connection closed between requests")]
    Ended,
    /// A phase of a request did not arrive in time.
    #[error("the request's {0} did not arrive within {1:?}")]
    Stalled(&'static str, Duration),
    /// Not a well-formed request.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The frame is well formed but breaks the request protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// One request as read: its header, and its target name and inline
/// payload, which stay in the reader's buffer until the next request.
pub(crate) struct Request {
    /// The header.
    pub header: Header,
    target: (usize, usize),
    caller: (usize, usize),
    inline: (usize, usize),
}

/// Reads requests from one connection, buffering what arrives whole.
pub(crate) struct RequestReader {
    stream: UnixStream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    idle: Duration,
    /// The current phase's deadline; `None` while waiting for a request.
    deadline: Option<Deadline>,
    /// What the phase is, and how long it may take, for the error.
    phase: &'static str,
    limit: Duration,
    /// The slowest a pipelined payload may arrive at, in bytes per second.
    min_rate: u64,
    /// When the current request's pipelined payload is due whole, and its
    /// budget.
    payload_due: Option<(Deadline, Duration)>,
    /// The receive timeout as last set on the socket.
    armed: Option<Duration>,
}

impl RequestReader {
    /// A reader of `stream` that lets it sit idle for `idle` between
    /// requests, and takes pipelined payloads at `min_rate` bytes per
    /// second or faster.
    pub fn new(stream: UnixStream, idle: Duration, min_rate: u64) -> RequestReader {
        RequestReader {
            stream,
            buf: vec![0u8; BUFFER_LEN].into_boxed_slice(),
            start: 0,
            end: 0,
            idle,
            deadline: None,
            phase: "header",
            limit: LOCAL_PHASE_TIMEOUT,
            min_rate,
            payload_due: None,
            armed: None,
        }
    }

    /// The connection, for writing answers.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Reads the next request: header, target name and, when the payload
    /// travels inline, the payload. `max_payload` bounds the payload.
    pub fn next_request(&mut self, max_payload: u64) -> Result<Request, RequestError> {
        // Move what is left of the previous read to the front: the buffer
        // then holds the whole request without moving it again, so the
        // positions of its parts stay valid.
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        self.deadline = None;
        self.phase = "header";
        self.payload_due = None;
        match self.fill(1) {
            Ok(()) => {}
            Err(e) if is_peer_gone(&e) || is_timeout(&e) => return Err(RequestError::Ended),
            Err(e) => return Err(WireError::Io(e).into()),
        }
        self.start_phase("header");
        self.fill_or_stall(HEADER_LEN)?;
        let head: &[u8; HEADER_LEN] = self.buf[self.start..self.start + HEADER_LEN]
            .try_into()
            .expect("a header's length");
        let header = Header::decode(head, max_payload)?;
        self.start += HEADER_LEN;
        if header.kind != Kind::Request {
            return Err(RequestError::Protocol(format!(
                "expected a request, got a frame of kind {:?}",
                header.kind
            )));
        }
        if header.target_len == 0 {
            return Err(RequestError::Protocol(
                "a request must name its target (target length 0)".into(),
            ));
        }
        if header.caller_len == 0 {
            return Err(RequestError::Protocol(
                "a request must name its caller (caller length 0)".into(),
            ));
        }
        if header.chunked() {
            let budget = payload_budget(header.payload_len, self.min_rate);
            self.payload_due = Some((Deadline::after(budget), budget));
        }
        let target = self.take("target name", header.target_len as usize)?;
        let caller = self.take("caller identity", header.caller_len as usize)?;
        let inline = if header.in_shm() {
            (self.start, self.start)
        } else {
            let len = header.payload_len as usize;
            if len >= SHM_THRESHOLD {
                return Err(RequestError::Protocol(format!(
                    "an inline payload must be under {SHM_THRESHOLD} bytes, got {len}; \
                     larger ones go through the shared region"
                )));
            }
            self.take("payload", len)?
        };
        Ok(Request {
            header,
            target,
            caller,
            inline,
        })
    }

    /// The target name of `request`.
    pub fn target(&self, request: &Request) -> &[u8] {
        &self.buf[request.target.0..request.target.1]
    }

    /// The caller's identity `request` claims.
    pub fn caller(&self, request: &Request) -> &[u8] {
        &self.buf[request.caller.0..request.caller.1]
    }

    /// The inline payload of `request` (empty when it is in the region).
    pub fn inline_payload(&self, request: &Request) -> &[u8] {
        &self.buf[request.inline.0..request.inline.1]
    }

    /// Buffers `len` more bytes under a fresh phase deadline and returns
    /// where they lie.
    fn take(&mut self, phase: &'static str, len: usize) -> Result<(usize, usize), RequestError> {
        self.start_phase(phase);
        self.fill_or_stall(len)?;
        let at = (self.start, self.start + len);
        self.start += len;
        Ok(at)
    }

    fn start_phase(&mut self, phase: &'static str) {
        self.phase = phase;
        self.limit = LOCAL_PHASE_TIMEOUT;
        self.deadline = Some(Deadline::after(LOCAL_PHASE_TIMEOUT));
    }

    fn fill_or_stall(&mut self, len: usize) -> Result<(), RequestError> {
        self.fill(len).map_err(|e| {
            if is_timeout(&e) {
                RequestError::Stalled(self.phase, self.limit)
            } else {
                RequestError::Wire(WireError::Io(e))
            }
        })
    }

    /// Makes at least `len` unread bytes available in the buffer, reading
    /// under the current deadline.
    fn fill(&mut self, len: usize) -> io::Result<()> {
        if self.end - self.start >= len {
            return Ok(());
        }
        if self.start + len > self.buf.len() {
            // Cannot happen: a request's parts together fit the buffer.
            return Err(io::Error::other("a request part does not fit the buffer"));
        }
        while self.end - self.start < len {
            self.arm()?;
            match (&self.stream).read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sets the socket's receive timeout to what the phase has left, or to
    /// the idle timeout between requests (a syscall only when it changes).
    fn arm(&mut self) -> io::Result<()> {
        let want = match self.deadline {
            None => self.idle,
            Some(d) => {
                let left = d.remaining();
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                left
            }
        };
        if self.armed != Some(want) {
            self.stream.set_read_timeout(Some(want))?;
            self.armed = Some(want);
        }
        Ok(())
    }

    /// Whether bytes of a next frame are already buffered (a caller that
    /// sent frames back to back without the slot).
    pub fn has_buffered(&self) -> bool {
        self.start < self.end
    }

    /// Drops what is buffered: after a refusal, before the connection is
    /// drained and closed.
    pub fn discard_buffered(&mut self) {
        self.start = self.end;
    }
}

impl Read for RequestReader {
    /// Reads what is buffered first, then the socket, under the current
    /// phase's deadline (a pipelined payload's progress counts).
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.start == self.end {
            // A phase already over fails in `arm`, a phase that runs out
            // while waiting in the read: both say which phase stalled.
            let read = self.arm().and_then(|()| (&self.stream).read(out));
            return read.map_err(|e| {
                if is_timeout(&e) {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        RequestError::Stalled(self.phase, self.limit),
                    )
                } else {
                    e
                }
            });
        }
        let n = out.len().min(self.end - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

impl PayloadSource for RequestReader {
    /// The next progress count is due within a phase, and by the time the
    /// whole payload is due.
    fn next_step(&mut self) {
        self.start_phase("progress count");
        if let (Some((due, budget)), Some(phase)) = (self.payload_due, self.deadline) {
            if due.instant() <= phase.instant() {
                self.deadline = Some(due);
                self.phase = "payload";
                self.limit = budget;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn request(target: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut h = Header::new(Kind::Request, 9);
        h.target_len = target.len() as u16;
        h.caller_len = 8;
        h.payload_len = payload.len() as u64;
        let mut out = h.encode().to_vec();
        out.extend_from_slice(target);
        out.extend_from_slice(b"ns/f@n1x"[..8].as_ref());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn back_to_back_requests_are_read_whole() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut wire = request(b"echo", b"one");
        wire.extend(request(b"sink", &[7u8; 1000]));
        a.write_all(&wire).unwrap();
        let mut r = RequestReader::new(b, Duration::from_secs(5), 1 << 20);
        let first = r.next_request(1 << 20).unwrap();
        assert_eq!(
            (r.target(&first), r.inline_payload(&first)),
            (&b"echo"[..], &b"one"[..])
        );
        assert_eq!(r.caller(&first), b"ns/f@n1x");
        let second = r.next_request(1 << 20).unwrap();
        assert_eq!(r.target(&second), b"sink");
        assert_eq!(r.inline_payload(&second), &[7u8; 1000][..]);
        drop(a);
        assert!(matches!(r.next_request(1 << 20), Err(RequestError::Ended)));
    }

    #[test]
    fn requests_of_every_inline_size_are_read_whole_after_each_other() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let sizes = [0usize, 1, 1000, SHM_THRESHOLD - 1, 7, SHM_THRESHOLD - 1, 3];
        let writer = std::thread::spawn(move || {
            for size in sizes {
                a.write_all(&request(b"echo", &vec![size as u8; size]))
                    .unwrap();
            }
        });
        let mut r = RequestReader::new(b, Duration::from_secs(5), 1 << 20);
        for size in sizes {
            let req = r.next_request(1 << 20).unwrap();
            assert_eq!(r.target(&req), b"echo", "before the {size}-byte payload");
            assert_eq!(r.inline_payload(&req), &vec![size as u8; size][..]);
        }
        writer.join().unwrap();
    }

    #[test]
    fn an_idle_connection_just_ends() {
        let (_a, b) = UnixStream::pair().unwrap();
        let mut r = RequestReader::new(b, Duration::from_millis(50), 1 << 20);
        assert!(matches!(r.next_request(1 << 20), Err(RequestError::Ended)));
    }

    #[test]
    fn a_target_of_length_zero_and_oversized_inline_payloads_are_refused() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&request(b"", b"x")).unwrap();
        let mut r = RequestReader::new(b, Duration::from_secs(5), 1 << 20);
        let e = r.next_request(1 << 20).err().unwrap().to_string();
        assert!(e.contains("must name its target"), "{e}");

        let (mut a, b) = UnixStream::pair().unwrap();
        let mut h = Header::new(Kind::Request, 1);
        h.target_len = 4;
        a.write_all(&h.encode()).unwrap();
        a.write_all(b"echo").unwrap();
        let mut r = RequestReader::new(b, Duration::from_secs(5), 1 << 20);
        let e = r.next_request(1 << 20).err().unwrap().to_string();
        assert!(e.contains("must name its caller"), "{e}");

        let (mut a, b) = UnixStream::pair().unwrap();
        let mut h = Header::new(Kind::Request, 1);
        h.target_len = 4;
        h.caller_len = 6;
        h.payload_len = SHM_THRESHOLD as u64;
        a.write_all(&h.encode()).unwrap();
        a.write_all(b"echons/@n1").unwrap();
        let mut r = RequestReader::new(b, Duration::from_secs(5), 1 << 20);
        let e = r.next_request(1 << 30).err().unwrap().to_string();
        assert!(e.contains("shared region"), "{e}");
    }
}
