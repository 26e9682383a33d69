//! Typed errors: the ABI error codes a guest sees, and the host-side errors of
//! loading, configuring and running functions.

use std::fmt;
use std::path::PathBuf;

/// The error codes of guest ABI v1 (`docs/abi.md`). A guest receives
/// `code as i32`; the host keeps the rest of the detail in [`CallError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ErrorCode {
    /// No function of that name is known.
    UnknownFunction = -1,
    /// The callee trapped.
    CalleeTrapped = -2,
    /// The callee did not answer within the call timeout.
    Timeout = -3,
    /// The request or response is over the payload limit.
    TooLarge = -4,
    /// The transport failed (peer died, broker down, connection lost).
    Transport = -5,
    /// The call is not allowed.
    Denied = -6,
    /// The caller passed a bad pointer, length or target name.
    InvalidArgument = -7,
    /// The callee's handler returned an error.
    CalleeError = -8,
    /// The callee broke the ABI.
    BadResponse = -9,
    /// The caller's `cwasi_alloc` failed.
    AllocFailed = -10,
    /// `call_wait` got an unknown or already waited handle.
    UnknownHandle = -11,
    /// The callee hit a resource limit.
    ResourceLimit = -12,
    /// The target does not export a handler.
    NotCallable = -13,
}

impl ErrorCode {
    /// Every code, in table order; used by docs tests and `from_raw`.
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

    /// The value handed to the guest.
    pub fn as_raw(self) -> i32 {
        self as i32
    }

    /// Parses a raw code, for tests and the CLI.
    pub fn from_raw(raw: i32) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_raw() == raw)
    }

    /// The name used in `docs/abi.md`.
    pub fn name(self) -> &'static str {
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
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_raw())
    }
}

/// A failed call between functions: the code the guest sees, and a message
/// for `cwasi.last_error`, logs and the CLI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct CallError {
    /// The ABI code.
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
}

impl CallError {
    /// Builds an error from a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CallError {
            code,
            message: message.into(),
        }
    }

    /// `TOO_LARGE`: a request or response (`what`) of `len` bytes over the
    /// payload limit `max`, in the same words wherever a limit is checked.
    pub fn too_large(what: &str, len: usize, max: usize) -> Self {
        CallError::new(
            ErrorCode::TooLarge,
            format!("the {what} of {len} bytes is over the payload limit of {max} bytes"),
        )
    }
}

/// Host-side errors: loading modules, reading compositions, running entries.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file does not start with the Wasm magic bytes.
    #[error("{path} is not a WebAssembly module (no \\0asm header)")]
    NotWasm {
        /// The file.
        path: PathBuf,
    },
    /// The module failed validation or compilation.
    #[error("{path} is not a valid WebAssembly module: {message}")]
    InvalidModule {
        /// The file.
        path: PathBuf,
        /// The validator's message.
        message: String,
    },
    /// The module could not be linked or instantiated.
    #[error("cannot instantiate function '{function}': {message}")]
    Instantiate {
        /// The function.
        function: String,
        /// What failed.
        message: String,
    },
    /// A composition or option is wrong.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A function name is not known.
    #[error("unknown function '{0}'")]
    UnknownFunction(String),
    /// The entry has no `_start`.
    #[error("function '{0}' is not an entry: it does not export _start")]
    NotAnEntry(String),
    /// The entry trapped or was stopped.
    #[error("function '{function}' failed: {message}")]
    Trap {
        /// The function.
        function: String,
        /// The trap and its context.
        message: String,
    },
    /// A call made from the host failed.
    #[error(transparent)]
    Call(#[from] CallError),
}
