//! Guests in this process: the host state each store carries, the host
//! functions of the ABI, instances and their pools, and the callee-side path
//! every transport's server shares.

pub(crate) mod function;
pub(crate) mod host_abi;
pub(crate) mod instance;
pub(crate) mod invoke;
pub(crate) mod state;
