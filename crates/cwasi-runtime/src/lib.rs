//! CWASI runtime core: runs WebAssembly functions on wasmtime and connects
//! them through the cheapest data path their placement allows.
//!
//! - [`engine`]: the wasmtime engine, limits and module loading.
//! - [`abi`]: the host side of guest ABI v1 (`docs/abi.md`).
//! - [`selector`]: which mode a call takes, and why.
//! - `transport`: the data paths: embedded, local and remote.
//! - [`broker`]: Redis streams and the cluster registry of remote mode.
//! - [`registry`]: the node directory of served functions.
//! - [`serve`]: hosting a function for other processes.
//! - [`runtime`]: the functions of one process and the host-facing API.

pub mod abi;
pub mod broker;
pub mod composition;
pub mod config;
pub mod deadline;
pub mod engine;
pub mod error;
pub mod inspect;
mod instance;
pub mod registry;
pub mod runtime;
pub mod selector;
pub mod serve;
mod transport;

/// The local transport's frame format, public for protocol tests and tools.
pub use transport::wire;

pub use composition::Composition;
pub use config::{FunctionSpec, Limits, Mode, ModeOverride, Preopen, SeedConfig};
pub use error::{CallError, ErrorCode, RuntimeError};
pub use inspect::ModuleInfo;
pub use registry::{EndpointRecord, NodeDirectory};
pub use runtime::{Decision, HopReport, Runtime, RuntimeBuilder};
pub use selector::Selection;
pub use serve::{ServeHandle, ServeOptions, StopSignals};
