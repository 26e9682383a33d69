//! The error codes of docs/abi.md ("Error codes").

use core::fmt;

/// One negative code of the ABI error table: what the host returns to a guest
/// when a call fails, so both sides and the docs use the same numbers and
/// names. The discriminant is the raw value (`code as i32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ErrorCode {
    /// `-1`: no function of that name is known.
    UnknownFunction = -1,
    /// `-2`: the callee trapped (`unreachable`, panic, stack overflow, ...).
    CalleeTrapped = -2,
    /// `-3`: the callee did not answer within the call timeout.
    Timeout = -3,
    /// `-4`: the request or response is over the payload limit.
    TooLarge = -4,
    /// `-5`: the transport failed (peer died, broker down, connection lost).
    Transport = -5,
    /// `-6`: the call is not allowed (for example a forced mode that would
    /// cross trust domains).
    Denied = -6,
    /// `-7`: the caller passed a bad pointer, length or target name.
    InvalidArgument = -7,
    /// `-8`: the callee's handler returned an error.
    CalleeError = -8,
    /// `-9`: the callee broke the ABI (out-of-bounds response, bad buffer
    /// from `cwasi_alloc`, ...).
    BadResponse = -9,
    /// `-10`: the caller's `cwasi_alloc` failed, so the response was lost.
    AllocFailed = -10,
    /// `-11`: `call_wait` got an unknown or already waited handle.
    UnknownHandle = -11,
    /// `-12`: the callee hit a resource limit (memory, call depth, instances).
    ResourceLimit = -12,
    /// `-13`: the target exists but does not export `cwasi_handle` (nor a
    /// configured seed handler).
    NotCallable = -13,
}

impl ErrorCode {
    /// Every code, in the order of the table in docs/abi.md; for lookups,
    /// exhaustive tests and listings.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::UnknownFunction,
        ErrorCode::CalleeTrapped,
        ErrorCode::Timeout,
        ErrorCode::TooLarge,
        ErrorCode::Transport,
        ErrorCode::Denied,
        ErrorCode::InvalidArgument,
        ErrorCode::CalleeError,
        ErrorCode::BadResponse,
        ErrorCode::AllocFailed,
        ErrorCode::UnknownHandle,
        ErrorCode::ResourceLimit,
        ErrorCode::NotCallable,
    ];

    /// The raw value that crosses the ABI (what a host import returns).
    pub const fn as_raw(self) -> i32 {
        self as i32
    }

    /// The code with raw value `raw`, or `None` for a value this version of
    /// the table does not know (a newer host, or a broken one).
    pub const fn from_raw(raw: i32) -> Option<ErrorCode> {
        let mut i = 0;
        while i < Self::ALL.len() {
            if Self::ALL[i].as_raw() == raw {
                return Some(Self::ALL[i]);
            }
            i += 1;
        }
        None
    }

    /// The name in docs/abi.md (`UNKNOWN_FUNCTION`, ...), for messages and
    /// logs that people match against the docs.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::UnknownFunction => "UNKNOWN_FUNCTION",
            ErrorCode::CalleeTrapped => "CALLEE_TRAPPED",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::Transport => "TRANSPORT",
            ErrorCode::Denied => "DENIED",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::CalleeError => "CALLEE_ERROR",
            ErrorCode::BadResponse => "BAD_RESPONSE",
            ErrorCode::AllocFailed => "ALLOC_FAILED",
            ErrorCode::UnknownHandle => "UNKNOWN_HANDLE",
            ErrorCode::ResourceLimit => "RESOURCE_LIMIT",
            ErrorCode::NotCallable => "NOT_CALLABLE",
        }
    }

    /// What the code means, as in the "meaning" column of docs/abi.md without
    /// its parenthesised examples: a short lower-case phrase with no final
    /// period, so it reads well after a colon (`TIMEOUT (-3): the callee ...`).
    pub const fn description(self) -> &'static str {
        match self {
            ErrorCode::UnknownFunction => "no function of that name is known",
            ErrorCode::CalleeTrapped => "the callee trapped",
            ErrorCode::Timeout => "the callee did not answer within the call timeout",
            ErrorCode::TooLarge => "the request or response is over the payload limit",
            ErrorCode::Transport => "the transport failed",
            ErrorCode::Denied => "the call is not allowed",
            ErrorCode::InvalidArgument => "the caller passed a bad pointer, length or target name",
            ErrorCode::CalleeError => "the callee's handler returned an error",
            ErrorCode::BadResponse => "the callee broke this ABI",
            ErrorCode::AllocFailed => {
                "the caller's cwasi_alloc failed, so the response could not be delivered"
            }
            ErrorCode::UnknownHandle => "call_wait got a handle that is unknown or already waited",
            ErrorCode::ResourceLimit => "the callee hit a resource limit",
            ErrorCode::NotCallable => "the target exists but does not export cwasi_handle",
        }
    }
}

/// `NAME (raw)`, e.g. `TIMEOUT (-3)`: both what people look up in the docs
/// and what a program compares.
impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_raw())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::string::ToString;

    #[test]
    fn table_is_dense_and_ordered() {
        // The table is -1, -2, ... -13, in that order.
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.as_raw(), -(i as i32) - 1, "{code:?}");
        }
    }

    #[test]
    fn raw_round_trip() {
        for raw in -4096..=16 {
            match ErrorCode::from_raw(raw) {
                Some(code) => {
                    assert!((-13..=-1).contains(&raw), "{raw}");
                    assert_eq!(code.as_raw(), raw);
                }
                None => assert!(!(-13..=-1).contains(&raw), "{raw}"),
            }
        }
        assert_eq!(ErrorCode::from_raw(i32::MIN), None);
        assert_eq!(ErrorCode::from_raw(i32::MAX), None);
        assert_eq!(ErrorCode::from_raw(-8), Some(ErrorCode::CalleeError));
    }

    #[test]
    fn names_and_descriptions_are_distinct() {
        for (i, a) in ErrorCode::ALL.iter().enumerate() {
            let name = a.name();
            assert!(
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{name}"
            );
            let desc = a.description();
            assert!(!desc.is_empty() && !desc.ends_with('.'), "{desc}");
            for b in &ErrorCode::ALL[i + 1..] {
                assert_ne!(name, b.name());
                assert_ne!(desc, b.description());
            }
        }
    }

    #[test]
    fn display_is_name_and_raw() {
        assert_eq!(ErrorCode::Timeout.to_string(), "TIMEOUT (-3)");
        assert_eq!(
            ErrorCode::UnknownFunction.to_string(),
            "UNKNOWN_FUNCTION (-1)"
        );
        assert_eq!(ErrorCode::NotCallable.to_string(), "NOT_CALLABLE (-13)");
    }
}
