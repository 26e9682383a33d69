//! What can stop a benchmark run.

use std::path::PathBuf;

/// Why `cwasi bench` could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A command-line value did not parse (a size, a duration, a name).
    #[error("{0}")]
    BadInput(String),
    /// A contender could not be set up (a server, a connection, a runtime).
    #[error("cannot set up {contender}: {message}")]
    Setup {
        /// Which contender.
        contender: &'static str,
        /// What went wrong.
        message: String,
    },
    /// One measured operation failed; the figures of that run would be wrong.
    #[error("{contender}: {message}")]
    Operation {
        /// Which contender.
        contender: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The run was asked to stop (`Config::stop`) before it finished; no
    /// result file was written.
    #[error("interrupted before the end; no result file was written")]
    Interrupted,
    /// `--netns` could not make, enter or check its network namespaces (not
    /// root, no `ip`).
    #[error("--netns: {0}")]
    Netns(#[from] netns::NetnsError),
    /// Redis could not be started.
    #[error(transparent)]
    Redis(#[from] redis_launcher::LaunchError),
    /// A result file could not be written.
    #[error("cannot write {path}: {message}")]
    Output {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl BenchError {
    /// A setup error of `contender`.
    pub(crate) fn setup(contender: &'static str, message: impl std::fmt::Display) -> BenchError {
        BenchError::Setup {
            contender,
            message: message.to_string(),
        }
    }

    /// A failed operation of `contender`.
    pub(crate) fn op(contender: &'static str, message: impl std::fmt::Display) -> BenchError {
        BenchError::Operation {
            contender,
            message: message.to_string(),
        }
    }

    /// A failure to write `path`.
    pub(crate) fn output(path: &std::path::Path, message: impl std::fmt::Display) -> BenchError {
        BenchError::Output {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}
