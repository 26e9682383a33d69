//! CWASI runtime core: runs WebAssembly functions on wasmtime and connects
//! them through the cheapest data path their placement allows.
//!
//! - [`engine`]: the wasmtime engine, limits and module loading.
//! - [`abi`]: the host side of guest ABI v1 (`docs/abi.md`).
//! - [`selector`]: which mode a call takes, and why.
//! - `transport`: the data paths (embedded so far).
//! - [`runtime`]: the functions of one process and the host-facing API.

pub mod abi;
pub mod composition;
pub mod config;
pub mod engine;
pub mod error;
pub mod inspect;
mod instance;
pub mod runtime;
pub mod selector;
mod transport;

pub use composition::Composition;
pub use config::{FunctionSpec, Limits, Mode, ModeOverride, Preopen, SeedConfig};
pub use error::{CallError, ErrorCode, RuntimeError};
pub use inspect::ModuleInfo;
pub use runtime::{Decision, HopReport, Runtime, RuntimeBuilder};
pub use selector::Selection;
