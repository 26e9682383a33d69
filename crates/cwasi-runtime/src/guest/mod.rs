//! Guests in this process: the host state each store carries, the host
//! functions of the two ABIs (core modules: `host_abi`; components:
//! `host_wit`), instances and their pools (trimmed when idle), and the callee-side path every
//! transport's server shares.

pub(crate) mod component;
pub(crate) mod function;
pub(crate) mod host_abi;
pub(crate) mod host_wit;
pub(crate) mod instance;
pub(crate) mod invoke;
pub(crate) mod linkers;
pub(crate) mod outcome;
pub(crate) mod state;
pub(crate) mod trim;
