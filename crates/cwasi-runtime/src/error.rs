//! Typed errors: the ABI error codes a guest sees, and the host-side errors of
//! loading, configuring and running functions.

use std::path::PathBuf;

/// The error codes of guest ABI v1 (`docs/abi.md`), from the `cwasi-abi`
/// crate that the guest SDK shares. A guest receives `code.as_raw()`; the
/// host keeps the rest of the detail in [`CallError`].
pub use cwasi_abi::ErrorCode;

/// A failed call between functions: the code the guest sees, and a message
/// for `cwasi.last_error`, logs and the CLI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct CallError {
    /// The ABI code.
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
    /// Whether the call failed before any callee took it (see
    /// [`CallError::nothing_ran`]).
    nothing_ran: bool,
}

impl CallError {
    /// Builds an error from a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CallError {
            code,
            message: message.into(),
            nothing_ran: false,
        }
    }

    /// The same error, marked as one that came before any callee took the
    /// call: the callee could not be reached, refused the connection, hung
    /// up before it took the request, said it was draining, or declined a
    /// request that asked not to wait for a call slot. Such a call
    /// may be made again on another path.
    pub(crate) fn before_taken(self) -> Self {
        CallError {
            nothing_ran: true,
            ..self
        }
    }

    /// Whether nothing ran: the call failed before any callee took it, so
    /// that making it again elsewhere cannot run it twice. A route makes
    /// such a call again on its next path, within the caller's deadline.
    pub fn nothing_ran(&self) -> bool {
        self.nothing_ran
    }

    /// Whether the call failed because time ran out (its own timeout, or a
    /// deadline inherited from its caller).
    pub fn is_timeout(&self) -> bool {
        self.code == ErrorCode::Timeout
    }

    /// Whether the callee instance that served the failed call is still in a
    /// known state and may serve the next one: the handler returned an
    /// error, or a payload was refused or could not be placed. After a trap,
    /// a timeout or an ABI violation its state is unknown, and it is dropped.
    pub fn leaves_callee_reusable(&self) -> bool {
        matches!(
            self.code,
            ErrorCode::CalleeError | ErrorCode::TooLarge | ErrorCode::AllocFailed
        )
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

/// Host-side errors: loading modules, reading compositions, starting and
/// running functions. Variants with a cause keep it as their `source`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A file could not be read or written.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file that must be a regular file is something else (a FIFO, a
    /// device, a directory, or a symbolic link where none is allowed).
    #[error("{path} is not a regular file (it is a {kind}); refused")]
    NotRegularFile {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// A file is over the size limit for what it holds.
    #[error("{path} is {len} bytes or more, over the limit of {max} bytes; refused")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size, or as much of it as was read.
        len: u64,
        /// The limit.
        max: u64,
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
    /// A composition, option or file from outside is wrong.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Two functions of one runtime have the same name.
    #[error("invalid configuration: function '{0}' is defined twice")]
    DuplicateFunction(String),
    /// A function name is not known.
    #[error("unknown function '{0}'")]
    UnknownFunction(String),
    /// The entry has no `_start` (nor, a component, `wasi:cli/run`).
    #[error(
        "function '{0}' is not an entry: it exports neither _start (a core module) nor \
         wasi:cli/run (a component)"
    )]
    NotAnEntry(String),
    /// The entry trapped or was stopped.
    #[error("function '{function}' failed: {message}")]
    Trap {
        /// The function.
        function: String,
        /// The trap and its context.
        message: String,
    },
    /// A live server already serves this function on this node.
    #[error(
        "invalid configuration: function '{name}' of namespace '{namespace}' is already served \
         on this node (pid {pid})"
    )]
    AlreadyServed {
        /// The function.
        name: String,
        /// Its namespace.
        namespace: String,
        /// The live server's pid, as it sees itself.
        pid: u32,
    },
    /// A thread the runtime needs could not be started.
    #[error("cannot start {what}: {source}")]
    Spawn {
        /// Which thread.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// wasmtime could not set up the engine or the linker.
    #[error("{what}: {source}")]
    Engine {
        /// What was being set up.
        what: &'static str,
        /// wasmtime's error.
        #[source]
        source: wasmtime::Error,
    },
    /// A record or announcement could not be encoded.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was encoded.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The broker's settings are wrong, or its client could not start.
    #[error("broker: {message}{}", source.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Broker {
        /// What is wrong, for a person.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A call made from the host failed.
    #[error(transparent)]
    Call(#[from] CallError),
}

impl RuntimeError {
    /// A broker error: `message` for a person, `source` the cause.
    pub fn broker(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> RuntimeError {
        RuntimeError::Broker {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// Whether the runtime could not start or run because of its
    /// configuration (a composition, an option, the environment), as
    /// opposed to a module, a file or the machine.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            RuntimeError::Config(_)
                | RuntimeError::DuplicateFunction(_)
                | RuntimeError::AlreadyServed { .. }
                | RuntimeError::Broker { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_outcomes_leave_the_callee_reusable() {
        let reusable: Vec<ErrorCode> = ErrorCode::ALL
            .into_iter()
            .filter(|&c| CallError::new(c, "").leaves_callee_reusable())
            .collect();
        assert_eq!(
            reusable,
            [
                ErrorCode::TooLarge,
                ErrorCode::CalleeError,
                ErrorCode::AllocFailed
            ]
        );
        assert!(CallError::new(ErrorCode::Timeout, "").is_timeout());
        assert!(!CallError::new(ErrorCode::Transport, "").is_timeout());
    }

    #[test]
    fn causes_are_kept_as_sources() {
        use std::error::Error as _;
        let e = RuntimeError::Spawn {
            what: "the accept thread",
            source: std::io::Error::other("no threads left"),
        };
        assert_eq!(
            e.to_string(),
            "cannot start the accept thread: no threads left"
        );
        assert!(e.source().is_some());
        assert!(!e.is_configuration());
        let served = RuntimeError::AlreadyServed {
            name: "echo".into(),
            namespace: "a".into(),
            pid: 7,
        };
        assert!(served.is_configuration());
        assert!(served.to_string().contains("already served"), "{served}");
    }
}
