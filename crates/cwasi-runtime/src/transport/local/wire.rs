//! The frame format of the local transport (`docs/protocol.md`).
//!
//! Every frame starts with a fixed 72-byte little-endian header, followed by
//! the target name, the caller's identity (requests) and, unless the payload
//! is in shared memory, the payload:
//!
//! ```text
//!  0  magic        4 bytes  "CWSI"
//!  4  version      u8       5
//!  5  kind         u8       1 request, 2 response, 3 error, 4 attach-shm
//!  6  flags        u16      bit 0: the payload is in the shared region
//!                           bit 1: chunked (progress counts follow)
//!  8  request id   u64
//! 16  target len   u16      0..=255 (requests only)
//! 18  depth        u16      requests: the callee's call depth (0 is read as 1)
//! 20  status       i32      0, or an ABI error code (error frames)
//! 24  payload len  u64
//! 32  budget       u64      requests: microseconds left of the caller's
//!                           deadline (0: the caller set none)
//! 40  trace id     16 bytes requests: the W3C trace context of the
//! 56  span id      8 bytes  caller's span (all zero: untraced; an
//! 64  trace flags  u8       invalid one is read as untraced)
//! 65  reserved     u8       zero
//! 66  caller len   u16      requests: 1..=767 bytes of the caller's identity
//!                           (`<namespace>/<function>@<node>`) after the target
//! 68  reserved     4 bytes  zero
//! ```

use std::io::{self, Read, Write};

use crate::trace::{TraceContext, TRACE_CONTEXT_LEN};

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"CWSI";
/// The protocol version this build speaks.
pub const VERSION: u8 = 5;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 72;
/// Where the trace context starts in the header.
const TRACE_AT: usize = 40;
/// Longest target name: the ABI's name limit.
pub const MAX_TARGET_LEN: usize = cwasi_abi::MAX_NAME_LEN;
/// Where the caller identity's length is in the header.
const CALLER_LEN_AT: usize = 66;
/// Longest caller identity.
pub const MAX_CALLER_LEN: usize = crate::identity::MAX_IDENTITY_LEN;
/// Flag: the payload lies at offset 0 of the connection's shared region.
pub const FLAG_SHM: u16 = 1;
/// Flag (with `FLAG_SHM`): the payload is written into the region while the
/// frame is under way; 8-byte progress counts follow the header on the socket.
pub const FLAG_CHUNKED: u16 = 2;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A call: target name, then the request.
    Request = 1,
    /// A successful answer.
    Response = 2,
    /// A failed call, or a refused connection: status is the ABI code, the
    /// payload a UTF-8 message.
    Error = 3,
    /// Carries the shared region's file descriptor (SCM_RIGHTS); the payload
    /// length is the region's size.
    AttachShm = 4,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        match v {
            1 => Some(Kind::Request),
            2 => Some(Kind::Response),
            3 => Some(Kind::Error),
            4 => Some(Kind::AttachShm),
            _ => None,
        }
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the frame is.
    pub kind: Kind,
    /// `FLAG_*` bits.
    pub flags: u16,
    /// Matches a response to its request.
    pub id: u64,
    /// Bytes of target name after the header.
    pub target_len: u16,
    /// Bytes of the caller's identity after the target name (requests).
    pub caller_len: u16,
    /// ABI code of an error frame.
    pub status: i32,
    /// Bytes of payload (inline or in the shared region).
    pub payload_len: u64,
    /// A request's call depth, as the callee will run it.
    pub depth: u16,
    /// Microseconds left of the caller's deadline when a request was sent
    /// (0: none); relative, so that the two processes need no common clock.
    pub budget_us: u64,
    /// A request's trace context: the caller's span.
    pub trace: TraceContext,
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection before a frame started.
    #[error("the peer closed the connection")]
    Closed,
    /// Not a CWASI frame.
    #[error("bad magic {0:02x?}: not a CWASI frame")]
    BadMagic([u8; 4]),
    /// A version this build does not speak.
    #[error("unsupported protocol version {0} (this side speaks {VERSION})")]
    BadVersion(u8),
    /// An unknown frame kind.
    #[error("unknown frame kind {0}")]
    BadKind(u8),
    /// A length over a limit.
    #[error("{what} of {len} bytes is over the limit of {max}")]
    TooLong {
        /// Which length.
        what: &'static str,
        /// The length announced.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A field that must be zero, or a flag this side does not know.
    #[error("malformed header: {0}")]
    Malformed(&'static str),
}

impl Header {
    /// A header for a frame of `kind`.
    pub fn new(kind: Kind, id: u64) -> Header {
        Header {
            kind,
            flags: 0,
            id,
            target_len: 0,
            caller_len: 0,
            status: 0,
            payload_len: 0,
            depth: 0,
            budget_us: 0,
            trace: TraceContext::NONE,
        }
    }

    /// The bytes on the wire.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[5] = self.kind as u8;
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..16].copy_from_slice(&self.id.to_le_bytes());
        b[16..18].copy_from_slice(&self.target_len.to_le_bytes());
        b[18..20].copy_from_slice(&self.depth.to_le_bytes());
        b[20..24].copy_from_slice(&self.status.to_le_bytes());
        b[24..32].copy_from_slice(&self.payload_len.to_le_bytes());
        b[32..40].copy_from_slice(&self.budget_us.to_le_bytes());
        b[TRACE_AT..TRACE_AT + TRACE_CONTEXT_LEN].copy_from_slice(&self.trace.encode());
        b[CALLER_LEN_AT..CALLER_LEN_AT + 2].copy_from_slice(&self.caller_len.to_le_bytes());
        b
    }

    /// Parses and checks a header; `max_payload` bounds the payload length.
    pub fn decode(b: &[u8; HEADER_LEN], max_payload: u64) -> Result<Header, WireError> {
        let magic: [u8; 4] = b[0..4].try_into().expect("4 bytes");
        if magic != MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        if b[4] != VERSION {
            return Err(WireError::BadVersion(b[4]));
        }
        let kind = Kind::from_u8(b[5]).ok_or(WireError::BadKind(b[5]))?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let flags = u16_at(6);
        if flags & !(FLAG_SHM | FLAG_CHUNKED) != 0 {
            return Err(WireError::Malformed("unknown flags"));
        }
        if flags & FLAG_CHUNKED != 0 && flags & FLAG_SHM == 0 {
            return Err(WireError::Malformed(
                "a chunked payload must be in the shared region",
            ));
        }
        let depth = u16_at(18);
        let budget_us = u64::from_le_bytes(b[32..40].try_into().expect("8 bytes"));
        let trace_bytes: &[u8; TRACE_CONTEXT_LEN] = b[TRACE_AT..TRACE_AT + TRACE_CONTEXT_LEN]
            .try_into()
            .expect("a trace context's length");
        let caller_len = u16_at(CALLER_LEN_AT);
        if kind != Kind::Request
            && (depth != 0
                || budget_us != 0
                || caller_len != 0
                || trace_bytes.iter().any(|&x| x != 0))
        {
            return Err(WireError::Malformed(
                "depth, budget, caller and trace context are for requests only",
            ));
        }
        if b[TRACE_AT + TRACE_CONTEXT_LEN] != 0 || b[CALLER_LEN_AT + 2..].iter().any(|&x| x != 0) {
            return Err(WireError::Malformed("reserved bytes must be zero"));
        }
        if caller_len as usize > MAX_CALLER_LEN {
            return Err(WireError::TooLong {
                what: "caller identity",
                len: caller_len as u64,
                max: MAX_CALLER_LEN as u64,
            });
        }
        let target_len = u16_at(16);
        if target_len as usize > MAX_TARGET_LEN {
            return Err(WireError::TooLong {
                what: "target name",
                len: target_len as u64,
                max: MAX_TARGET_LEN as u64,
            });
        }
        let payload_len = u64::from_le_bytes(b[24..32].try_into().expect("8 bytes"));
        if kind != Kind::AttachShm && payload_len > max_payload {
            return Err(WireError::TooLong {
                what: "payload",
                len: payload_len,
                max: max_payload,
            });
        }
        Ok(Header {
            kind,
            flags,
            id: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
            target_len,
            caller_len,
            status: i32::from_le_bytes(b[20..24].try_into().expect("4 bytes")),
            payload_len,
            depth,
            budget_us,
            trace: TraceContext::decode(trace_bytes),
        })
    }

    /// Whether the payload is in the shared region.
    pub fn in_shm(&self) -> bool {
        self.flags & FLAG_SHM != 0
    }

    /// Whether progress counts follow the header.
    pub fn chunked(&self) -> bool {
        self.flags & FLAG_CHUNKED != 0
    }
}

/// The names a request carries after its header, encoded once per route:
/// the target's, then the caller's identity.
#[derive(Debug, Clone)]
pub(crate) struct RequestNames {
    bytes: Box<[u8]>,
    target_len: u16,
}

impl RequestNames {
    /// The names of a call from `caller` to `target` (a checked name).
    pub fn new(target: &str, caller: &crate::identity::CallerIdentity) -> RequestNames {
        let mut bytes = Vec::with_capacity(target.len() + caller.as_bytes().len());
        bytes.extend_from_slice(target.as_bytes());
        bytes.extend_from_slice(caller.as_bytes());
        RequestNames {
            bytes: bytes.into(),
            target_len: target.len() as u16,
        }
    }

    /// The target's name.
    pub fn target(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.target_len as usize]).unwrap_or_default()
    }

    /// Both, as they follow the header.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Puts their lengths in a request's header.
    pub fn describe(&self, h: &mut Header) {
        h.target_len = self.target_len;
        h.caller_len = (self.bytes.len() - self.target_len as usize) as u16;
    }
}

/// Reads one header; `Closed` if the peer closed cleanly before it.
pub fn read_header(r: &mut impl Read, max_payload: u64) -> Result<Header, WireError> {
    let mut b = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut b[got..]) {
            Ok(0) if got == 0 => return Err(WireError::Closed),
            Ok(0) => {
                return Err(WireError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("truncated header ({got} of {HEADER_LEN} bytes)"),
                )))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(WireError::Io(e)),
        }
    }
    Header::decode(&b, max_payload)
}

/// Writes a header and its inline parts in as few syscalls as is simple.
pub fn write_frame(
    w: &mut impl Write,
    h: &Header,
    target: &[u8],
    payload: &[u8],
) -> io::Result<()> {
    let head = h.encode();
    let mut bufs = [
        io::IoSlice::new(&head),
        io::IoSlice::new(target),
        io::IoSlice::new(payload),
    ];
    write_all_vectored(w, &mut bufs)
}

fn write_all_vectored(w: &mut impl Write, mut bufs: &mut [io::IoSlice<'_>]) -> io::Result<()> {
    io::IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "connection closed",
                ))
            }
            Ok(n) => io::IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Longest error message read from an error frame.
const MAX_ERROR_MESSAGE: usize = 64 << 10;

/// Reads the message of error frame `h` (at most 64 KiB of it) and its
/// code (an unknown one is `TRANSPORT`).
pub(crate) fn read_error(
    r: &mut impl Read,
    h: &Header,
) -> io::Result<(crate::error::ErrorCode, String)> {
    let mut msg = vec![0u8; (h.payload_len as usize).min(MAX_ERROR_MESSAGE)];
    r.read_exact(&mut msg)?;
    let code =
        crate::error::ErrorCode::from_raw(h.status).unwrap_or(crate::error::ErrorCode::Transport);
    Ok((code, String::from_utf8_lossy(&msg).into_owned()))
}

/// An error frame with its message.
pub fn write_error(w: &mut impl Write, id: u64, code: i32, message: &str) -> io::Result<()> {
    let mut h = Header::new(Kind::Error, id);
    h.status = code;
    h.payload_len = message.len() as u64;
    write_frame(w, &h, &[], message.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let mut h = Header::new(Kind::Request, 42);
        h.flags = FLAG_SHM;
        h.target_len = 5;
        h.caller_len = 12;
        h.payload_len = 1 << 30;
        h.depth = 3;
        h.budget_us = 1_500_000;
        h.trace = TraceContext {
            trace_id: [7; 16],
            span_id: [9; 8],
            flags: 1,
        };
        let b = h.encode();
        assert_eq!(Header::decode(&b, 1 << 31).unwrap(), h);
        // An invalid context (no span id) is read as none.
        let mut b = b;
        b[TRACE_AT + 16..TRACE_AT + 24].fill(0);
        assert_eq!(
            Header::decode(&b, 1 << 31).unwrap().trace,
            TraceContext::NONE
        );
    }

    #[test]
    fn bad_headers_are_refused() {
        let good = Header::new(Kind::Request, 1).encode();
        let mut b = good;
        b[0] = b'X';
        assert!(matches!(
            Header::decode(&b, 10),
            Err(WireError::BadMagic(_))
        ));
        let mut b = good;
        b[4] = 9;
        assert!(matches!(
            Header::decode(&b, 10),
            Err(WireError::BadVersion(9))
        ));
        let mut b = good;
        b[5] = 77;
        assert!(matches!(
            Header::decode(&b, 10),
            Err(WireError::BadKind(77))
        ));
        let mut b = good;
        b[24..32].copy_from_slice(&11u64.to_le_bytes());
        assert!(matches!(
            Header::decode(&b, 10),
            Err(WireError::TooLong { .. })
        ));
        let mut b = good;
        b[16..18].copy_from_slice(&300u16.to_le_bytes());
        assert!(matches!(
            Header::decode(&b, 10),
            Err(WireError::TooLong { .. })
        ));
        let mut b = Header::new(Kind::Response, 1).encode();
        b[18] = 1;
        assert!(matches!(
            Header::decode(&b, 10),
            Err(WireError::Malformed(_))
        ));
        let mut b = Header::new(Kind::Response, 1).encode();
        b[CALLER_LEN_AT] = 1;
        assert!(matches!(
            Header::decode(&b, 10),
            Err(WireError::Malformed(_))
        ));
        let mut b = good;
        b[CALLER_LEN_AT..CALLER_LEN_AT + 2]
            .copy_from_slice(&(MAX_CALLER_LEN as u16 + 1).to_le_bytes());
        assert!(matches!(
            Header::decode(&b, 10),
            Err(WireError::TooLong { .. })
        ));
        let mut b = good;
        b[TRACE_AT + TRACE_CONTEXT_LEN] = 1;
        assert!(matches!(
            Header::decode(&b, 10),
            Err(WireError::Malformed(_))
        ));
        let mut b = Header::new(Kind::Response, 1).encode();
        b[TRACE_AT] = 1;
        assert!(matches!(
            Header::decode(&b, 10),
            Err(WireError::Malformed(_))
        ));
        let mut b = good;
        b[HEADER_LEN - 1] = 1;
        assert!(matches!(
            Header::decode(&b, 10),
            Err(WireError::Malformed(_))
        ));
        let mut b = good;
        b[6] = 0x80;
        assert!(matches!(
            Header::decode(&b, 10),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn truncated_and_closed_streams() {
        let mut empty: &[u8] = &[];
        assert!(matches!(
            read_header(&mut empty, 10),
            Err(WireError::Closed)
        ));
        let b = Header::new(Kind::Response, 1).encode();
        let mut short: &[u8] = &b[..10];
        assert!(matches!(read_header(&mut short, 10), Err(WireError::Io(_))));
    }
}
