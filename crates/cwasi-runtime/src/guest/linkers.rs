//! The linkers functions are instantiated with: one for core modules, one
//! for components.

use wasmtime::Engine;

use super::state::HostState;
use super::{host_abi, host_wit};
use crate::error::RuntimeError;

/// The linkers functions are instantiated with, one per kind of program.
pub(crate) struct Linkers {
    /// For core modules: WASI preview 1, `cwasi`, `cwasi_export`.
    pub module: wasmtime::Linker<HostState>,
    /// For components: WASI 0.2 and `cwasi:function/invoke`.
    pub component: wasmtime::component::Linker<HostState>,
}

impl Linkers {
    /// Both linkers, on `engine`.
    pub fn new(engine: &Engine) -> Result<Linkers, RuntimeError> {
        Ok(Linkers {
            module: host_abi::linker(engine)?,
            component: host_wit::linker(engine)?,
        })
    }
}
