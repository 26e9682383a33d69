//! Local mode: a function served by another process of this node, reached
//! over its Unix socket in the node directory (`docs/protocol.md`). Small
//! payloads travel inline in frames ([`wire`]); large ones through a shared
//! memory region each connection carries ([`shm`]), copied straight between
//! guest memory and the region. Small calls go through the call slot at the
//! start of that region ([`slot`]), with bounded spinning ([`spin`]) and
//! futex wake-ups, and a watcher thread that wakes a sleeper whose peer
//! hung up ([`hangup`]). Each answer says how long its request queued for a
//! call slot, which a caller spills on ([`queueing`]). [`client`] is the
//! caller's side, [`server`] the
//! served function's, reading requests through [`request`], running each
//! through [`handle`], and checking
//! who connected with [`credentials`].

mod callers;
pub(crate) mod client;
mod credentials;
mod exchange;
mod handle;
mod hangup;
mod queueing;
pub(crate) mod request;
pub(crate) mod server;
pub(crate) mod shm;
pub(crate) mod slot;
mod spin;
pub mod wire;
