//! The W3C trace context as it travels with a call: 25 bytes in the local
//! frame, the local slot and the direct frame, and a `traceparent` string
//! in a broker stream entry.

use std::fmt::Write as _;

/// Which trace a call belongs to and which span is its parent, as the W3C
/// Trace Context defines them. All zeros ([`TraceContext::NONE`]) means the
/// call is not traced; an invalid context from a peer is read as that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace's id; zero is invalid.
    pub trace_id: [u8; 16],
    /// The parent span's id; zero is invalid.
    pub span_id: [u8; 8],
    /// The trace flags; bit 0 is "sampled".
    pub flags: u8,
}

/// Bytes of [`TraceContext::encode`].
pub const TRACE_CONTEXT_LEN: usize = 25;

/// The `sampled` trace flag.
const SAMPLED: u8 = 1;

impl TraceContext {
    /// No trace.
    pub const NONE: TraceContext = TraceContext {
        trace_id: [0; 16],
        span_id: [0; 8],
        flags: 0,
    };

    /// Whether this names a trace and a span (both ids non-zero).
    pub fn is_valid(&self) -> bool {
        self.trace_id != [0; 16] && self.span_id != [0; 8]
    }

    /// Whether the trace's spans are recorded (the `sampled` flag).
    pub fn is_sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The 25 bytes on the wire: trace id, span id, flags.
    pub fn encode(&self) -> [u8; TRACE_CONTEXT_LEN] {
        let mut b = [0u8; TRACE_CONTEXT_LEN];
        b[..16].copy_from_slice(&self.trace_id);
        b[16..24].copy_from_slice(&self.span_id);
        b[24] = self.flags;
        b
    }

    /// Reads [`TraceContext::encode`]'s bytes; an invalid context (a zero
    /// id) is read as [`TraceContext::NONE`], as the W3C spec says to
    /// treat one: the call goes on untraced.
    pub fn decode(b: &[u8; TRACE_CONTEXT_LEN]) -> TraceContext {
        let cx = TraceContext {
            trace_id: b[..16].try_into().expect("16 bytes"),
            span_id: b[16..24].try_into().expect("8 bytes"),
            flags: b[24],
        };
        if cx.is_valid() {
            cx
        } else {
            TraceContext::NONE
        }
    }

    /// The `traceparent` header value (`00-<trace id>-<span id>-<flags>`),
    /// or `None` for an invalid context.
    pub fn traceparent(&self) -> Option<String> {
        if !self.is_valid() {
            return None;
        }
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        hex(&mut s, &self.trace_id);
        s.push('-');
        hex(&mut s, &self.span_id);
        let _ = write!(s, "-{:02x}", self.flags);
        Some(s)
    }

    /// Parses a `traceparent` header value. Version `00` must be exactly
    /// 55 characters; a later version may append fields after its first
    /// four, which are read the same way. Anything malformed, and the
    /// forbidden version `ff`, give `None`.
    pub fn from_traceparent(value: &[u8]) -> Option<TraceContext> {
        if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let mut version = [0u8; 1];
        unhex(&value[..2], &mut version)?;
        match version[0] {
            0xff => return None,
            0 if value.len() != 55 => return None,
            0 => {}
            _ if value.len() > 55 && value[55] != b'-' => return None,
            _ => {}
        }
        let mut cx = TraceContext::NONE;
        unhex(&value[3..35], &mut cx.trace_id)?;
        unhex(&value[36..52], &mut cx.span_id)?;
        let mut flags = [0u8; 1];
        unhex(&value[53..55], &mut flags)?;
        cx.flags = flags[0];
        cx.is_valid().then_some(cx)
    }
}

/// Appends `bytes` as lower-case hex.
fn hex(s: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
}

/// Reads lower-case hex (the spec's only case) into `out`.
fn unhex(digits: &[u8], out: &mut [u8]) -> Option<()> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if digits.len() != out.len() * 2 {
        return None;
    }
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_spec_example_round_trips() {
        let cx = TraceContext::from_traceparent(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(cx.trace_id[0], 0x4b);
        assert_eq!(cx.span_id[7], 0xb7);
        assert!(cx.is_sampled());
        assert_eq!(cx.traceparent().as_deref(), Some(EXAMPLE));
        assert_eq!(TraceContext::decode(&cx.encode()), cx);
    }

    #[test]
    fn malformed_values_are_no_context() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ];
        for value in bad {
            assert_eq!(
                TraceContext::from_traceparent(value.as_bytes()),
                None,
                "{value}"
            );
        }
        // A later version may append fields.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what";
        assert!(TraceContext::from_traceparent(later.as_bytes()).is_some());
        assert_eq!(TraceContext::NONE.traceparent(), None);
    }

    #[test]
    fn invalid_wire_bytes_are_no_context() {
        let mut b = [0u8; TRACE_CONTEXT_LEN];
        b[0] = 1; // a trace id without a span id
        b[24] = 1;
        assert_eq!(TraceContext::decode(&b), TraceContext::NONE);
    }
}
