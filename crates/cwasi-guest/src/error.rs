//! The error type returned by the call API. The codes themselves, their names
//! and values, are [`cwasi_abi::ErrorCode`], shared with the host.

use cwasi_abi::ErrorCode;
use std::fmt;

/// A failed call: the raw ABI code plus the host's human-readable detail
/// (from `cwasi.last_error`), so a function can both branch on and report
/// errors.
///
/// The raw value is kept as is because a newer (or broken) host may return a
/// code this SDK's table does not know; [`code`](CallError::code) gives the
/// known ones.
///
/// ```
/// use cwasi_guest::{CallError, ErrorCode};
///
/// let e = CallError::new(ErrorCode::Timeout, "callee 'slow' took over 30 s");
/// assert_eq!(e.code(), Some(ErrorCode::Timeout));
/// assert_eq!(e.raw, -3);
///
/// let newer = CallError::from_raw(-99, "");
/// assert_eq!(newer.code(), None);
/// assert_eq!(newer.to_string(), "call failed: OTHER (-99)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// The raw (negative) code the host returned.
    pub raw: i32,
    /// The host's explanation; may be empty.
    pub message: String,
}

impl CallError {
    /// Builds an error from a known code and a message, for code that wraps
    /// or fakes calls.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::from_raw(code.as_raw(), message)
    }

    /// Builds an error from a raw code, known or not, and a message; for
    /// code that calls the [`raw`](crate::raw) imports.
    pub fn from_raw(raw: i32, message: impl Into<String>) -> Self {
        Self {
            raw,
            message: message.into(),
        }
    }

    /// What kind of failure it was, or `None` for a code not in the ABI
    /// table this SDK knows.
    pub fn code(&self) -> Option<ErrorCode> {
        ErrorCode::from_raw(self.raw)
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = RawCode(self.raw);
        if self.message.is_empty() {
            write!(f, "call failed: {code}")
        } else {
            write!(f, "call failed: {code}: {}", self.message)
        }
    }
}

impl std::error::Error for CallError {}

/// Displays a raw code as [`ErrorCode`] does (`TIMEOUT (-3)`), or as
/// `OTHER (raw)` for a code not in the table.
pub(crate) struct RawCode(pub(crate) i32);

impl fmt::Display for RawCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match ErrorCode::from_raw(self.0) {
            Some(code) => code.fmt(f),
            None => write!(f, "OTHER ({})", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_of_known_and_unknown_raw_values() {
        for code in ErrorCode::ALL {
            let e = CallError::new(code, "x");
            assert_eq!(e.raw, code.as_raw());
            assert_eq!(e.code(), Some(code));
            assert_eq!(CallError::from_raw(code.as_raw(), "x"), e);
        }
        assert_eq!(CallError::from_raw(-14, "").code(), None);
        assert_eq!(CallError::from_raw(0, "").code(), None);
        assert_eq!(CallError::from_raw(i32::MIN, "").raw, i32::MIN);
    }

    #[test]
    fn display() {
        let e = CallError::new(ErrorCode::UnknownFunction, "no 'x' in namespace demo");
        assert_eq!(
            e.to_string(),
            "call failed: UNKNOWN_FUNCTION (-1): no 'x' in namespace demo"
        );
        let e = CallError::from_raw(-99, "");
        assert_eq!(e.to_string(), "call failed: OTHER (-99)");
        assert_eq!(RawCode(-3).to_string(), "TIMEOUT (-3)");
    }
}
