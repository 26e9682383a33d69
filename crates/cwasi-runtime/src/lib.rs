//! CWASI runtime core: runs WebAssembly functions on wasmtime and connects
//! them through the cheapest data path their placement allows: the callee's
//! VM (embedded), another process of this node (local), or another node,
//! directly over TCP with mutual TLS or through the broker (remote). A function calls another by name; the
//! [`Runtime`] picks the path and says why ([`Runtime::explain`]).
//!
//! ```no_run
//! use cwasi_runtime::{FunctionSpec, Runtime};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::builder()
//!     .function(FunctionSpec::new("echo", "demo", "echo.wasm".into()))
//!     .build()?;
//! // A call from the host, as a function of namespace "demo" would make it.
//! let answer = runtime.call("demo", "echo", b"hello")?;
//! assert_eq!(answer, b"hello");
//! println!("{}", runtime.explain("demo", "echo")?);
//! # Ok(())
//! # }
//! ```
//!
//! The map of the modules and the order of their dependencies is
//! `docs/architecture.md`.

#![warn(missing_docs)]

mod call;
mod compile_cache;
mod composition;
mod config;
mod deadline;
mod discovery;
mod engine;
mod error;
mod guest;
mod identity;
mod inspect;
mod load_report;
mod native_stack;
mod node_dir;
mod regular_file;
mod router;
mod runtime;
mod selector;
mod serve;
pub mod trace;
mod transport;

/// Remote mode's broker: the client of the Redis request streams, the
/// stream server, and the cluster registry (`docs/protocol.md`).
pub mod broker {
    pub use crate::transport::remote::{
        Broker, BrokerConfig, Handler, PlacementFollower, RemoteEndpoint, RequestMeta,
        StreamServer, ANNOUNCE_TTL, GROUP, HEARTBEAT, PAYLOAD_KEY_MIN, PLACEMENT_CHANNEL,
        STREAM_MAXLEN,
    };
}

/// The versions of the formats this build speaks with other processes and
/// nodes: `cwasi --version` prints them, because peers of other versions
/// refuse each other and nodes must be upgraded together
/// (`docs/protocol.md`, `CHANGELOG.md`).
pub mod protocols {
    /// The guest ABI (`cwasi_*` imports and exports of core modules).
    pub const ABI: u32 = cwasi_abi::ABI_VERSION;
    /// Frames on the local socket (and the call slot that comes with them).
    pub const LOCAL_FRAMES: u8 = crate::transport::local::wire::VERSION;
    /// Frames of the direct data plane between nodes: the local format over
    /// TCP or mutual TLS.
    pub const DIRECT_FRAMES: u8 = crate::transport::local::wire::VERSION;
    /// The broker's keys and stream entries in Redis.
    pub const BROKER: u32 = crate::transport::remote::BROKER_VERSION;
    /// Records in the node directory.
    pub const NODE_RECORDS: u32 = crate::node_dir::RECORD_VERSION;
}

/// Entry points of the fuzz targets (`fuzz/`): not part of the API.
#[doc(hidden)]
pub mod fuzzing;

/// The local transport's frame format and call-slot layout, public for
/// protocol tests and tools.
pub mod wire {
    pub use crate::transport::local::wire::*;

    /// The layout of the call slot at the start of a connection's shared
    /// region.
    pub mod slot {
        pub use crate::transport::local::slot::layout::*;
    }
}

pub use call::stats::{HopReport, LATENCY_BUCKETS_SECONDS};
pub use compile_cache::{
    ensure_private_dir as ensure_compile_cache_dir, CACHE_ENV as COMPILE_CACHE_ENV,
};
pub use composition::{validate_name, validate_namespace, BuildStep, Composition};
pub use config::{
    FunctionSpec, Limits, Mode, ModeOverride, Preopen, SeedConfig, DEFAULT_NAMESPACE,
};
pub use deadline::{Deadline, ANSWER_GRACE};
pub use engine::{inspect_module, inspect_module_bytes, read_module_file, Inspection};
pub use error::{CallError, ErrorCode, RuntimeError};
pub use guest::function::FunctionReport;
pub use identity::policy::{CallPolicy, CallerPattern};
pub use identity::{CallerIdentity, IdentityError, MAX_IDENTITY_LEN};
pub use inspect::ModuleInfo;
pub use load_report::{LoadStage, ModuleLoad};
pub use node_dir::{
    node_name, node_name_from, EmbedInfo, EndpointRecord, NodeDirectory, RECORD_MAX_BYTES,
};
pub use router::{Decision, HOST_CALLER};
pub use runtime::{Runtime, RuntimeBuilder};
pub use selector::Selection;
pub use serve::{ServeHandle, ServeOptions, StopSignals};
pub use transport::direct::{DataAddr, DirectConfig, TlsFiles};
pub use transport::PathCounts;
