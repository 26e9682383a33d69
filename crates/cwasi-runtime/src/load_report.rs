//! What loading a module took, told to whoever builds a runtime: a large
//! component compiles for seconds, and a user who hears nothing for that
//! long thinks the run hung. The runtime prints nothing itself; the host
//! (the CLI) renders these events as it likes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// One step of loading one function's module.
#[derive(Debug, Clone)]
pub struct ModuleLoad {
    /// The function the module is for.
    pub function: String,
    /// The file it came from.
    pub path: PathBuf,
    /// Whether it is a component (else a core module).
    pub component: bool,
    /// Where loading stands.
    pub stage: LoadStage,
}

/// Where the loading of a module stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadStage {
    /// The compile cache had no usable entry: compiling starts now.
    Compiling,
    /// It was compiled, in `elapsed`; `cached` when the compiled code was
    /// written to the compile cache for the next processes.
    Compiled {
        /// How long compiling took.
        elapsed: Duration,
        /// Whether the compile cache now holds it.
        cached: bool,
    },
    /// Its compiled code came from the compile cache.
    FromCache,
}

/// A function that hears every [`ModuleLoad`] of a runtime's build
/// ([`crate::RuntimeBuilder::on_load`]); it runs on the building thread.
#[derive(Clone)]
pub(crate) struct LoadObserver(pub Arc<dyn Fn(&ModuleLoad) + Send + Sync>);

impl std::fmt::Debug for LoadObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoadObserver")
    }
}
