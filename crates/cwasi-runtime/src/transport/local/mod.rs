//! Local mode: a function served by another process of this node, reached
//! over its Unix socket in the node directory (`docs/protocol.md`). Small
//! payloads travel inline in frames ([`wire`]); large ones through a shared
//! memory region each connection carries ([`shm`]), copied straight between
//! guest memory and the region. [`client`] is the caller's side, [`server`]
//! the served function's, reading requests through [`request`].

pub(crate) mod client;
pub(crate) mod request;
pub(crate) mod server;
pub(crate) mod shm;
pub mod wire;
