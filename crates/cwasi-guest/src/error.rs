//! Error codes of the guest ABI (docs/abi.md, "Error codes") and the error
//! type returned by the call API.

use std::fmt;

/// One negative code of the ABI error table, so callers can match on the
/// reason a call failed instead of comparing raw integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `-1`: no function of that name is known.
    UnknownFunction,
    /// `-2`: the callee trapped (`unreachable`, panic, stack overflow, ...).
    CalleeTrapped,
    /// `-3`: the callee did not answer within the call timeout.
    Timeout,
    /// `-4`: the request or response is over the payload limit.
    TooLarge,
    /// `-5`: the transport failed (peer died, broker down, connection lost).
    /// The SDK also uses it off wasm32, where there is no host to talk to.
    Transport,
    /// `-6`: the call is not allowed.
    Denied,
    /// `-7`: the caller passed a bad pointer, length or target name.
    InvalidArgument,
    /// `-8`: the callee's handler returned an error.
    CalleeError,
    /// `-9`: the callee broke the ABI (out-of-bounds response, bad buffer, ...).
    BadResponse,
    /// `-10`: the caller's `cwasi_alloc` failed, so the response was lost.
    AllocFailed,
    /// `-11`: `call_wait` got an unknown or already waited handle.
    UnknownHandle,
    /// `-12`: the callee hit a resource limit (memory, call depth, instances).
    ResourceLimit,
    /// `-13`: the target exists but is not callable.
    NotCallable,
    /// Any value not in the table (a newer host, or a broken one); keeps the
    /// raw value so nothing is lost.
    Other(i32),
}

impl ErrorCode {
    /// Maps a raw code returned by a host import to its variant; values not in
    /// the table become [`ErrorCode::Other`].
    pub const fn from_raw(raw: i32) -> Self {
        match raw {
            -1 => Self::UnknownFunction,
            -2 => Self::CalleeTrapped,
            -3 => Self::Timeout,
            -4 => Self::TooLarge,
            -5 => Self::Transport,
            -6 => Self::Denied,
            -7 => Self::InvalidArgument,
            -8 => Self::CalleeError,
            -9 => Self::BadResponse,
            -10 => Self::AllocFailed,
            -11 => Self::UnknownHandle,
            -12 => Self::ResourceLimit,
            -13 => Self::NotCallable,
            other => Self::Other(other),
        }
    }

    /// The raw ABI value, for logs and for programs that print codes.
    pub const fn as_raw(self) -> i32 {
        match self {
            Self::UnknownFunction => -1,
            Self::CalleeTrapped => -2,
            Self::Timeout => -3,
            Self::TooLarge => -4,
            Self::Transport => -5,
            Self::Denied => -6,
            Self::InvalidArgument => -7,
            Self::CalleeError => -8,
            Self::BadResponse => -9,
            Self::AllocFailed => -10,
            Self::UnknownHandle => -11,
            Self::ResourceLimit => -12,
            Self::NotCallable => -13,
            Self::Other(raw) => raw,
        }
    }

    /// The name used in docs/abi.md (`UNKNOWN_FUNCTION`, ...), or `OTHER`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::UnknownFunction => "UNKNOWN_FUNCTION",
            Self::CalleeTrapped => "CALLEE_TRAPPED",
            Self::Timeout => "TIMEOUT",
            Self::TooLarge => "TOO_LARGE",
            Self::Transport => "TRANSPORT",
            Self::Denied => "DENIED",
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::CalleeError => "CALLEE_ERROR",
            Self::BadResponse => "BAD_RESPONSE",
            Self::AllocFailed => "ALLOC_FAILED",
            Self::UnknownHandle => "UNKNOWN_HANDLE",
            Self::ResourceLimit => "RESOURCE_LIMIT",
            Self::NotCallable => "NOT_CALLABLE",
            Self::Other(_) => "OTHER",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_raw())
    }
}

/// A failed call: the ABI code plus the host's human-readable detail (from
/// `cwasi.last_error`), so a function can both branch on and report errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// What kind of failure it was.
    pub code: ErrorCode,
    /// The host's explanation; may be empty.
    pub message: String,
}

impl CallError {
    /// Builds an error from its parts, for code that wraps or fakes calls.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "call failed: {}", self.code)
        } else {
            write!(f, "call failed: {}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for CallError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_round_trip() {
        for raw in -4096..=16 {
            assert_eq!(ErrorCode::from_raw(raw).as_raw(), raw);
        }
        assert_eq!(ErrorCode::from_raw(i32::MIN).as_raw(), i32::MIN);
    }

    #[test]
    fn table_codes_are_named() {
        for raw in -13..=-1 {
            let code = ErrorCode::from_raw(raw);
            assert!(!matches!(code, ErrorCode::Other(_)), "{raw}");
            assert_ne!(code.name(), "OTHER");
        }
        assert_eq!(ErrorCode::from_raw(-14), ErrorCode::Other(-14));
        assert_eq!(ErrorCode::from_raw(0), ErrorCode::Other(0));
        assert_eq!(ErrorCode::from_raw(-8), ErrorCode::CalleeError);
    }

    #[test]
    fn display() {
        let e = CallError::new(ErrorCode::UnknownFunction, "no 'x' in namespace demo");
        assert_eq!(
            e.to_string(),
            "call failed: UNKNOWN_FUNCTION (-1): no 'x' in namespace demo"
        );
        let e = CallError::new(ErrorCode::Other(-99), "");
        assert_eq!(e.to_string(), "call failed: OTHER (-99)");
    }
}
