//! The data paths between functions, each a client/server pair in a folder
//! of its own: [`embedded`] (the callee runs in this process, so the client
//! is the whole path), [`local`] (Unix socket and shared memory),
//! [`direct`] (TCP to another node, mutual TLS) and [`remote`] (the
//! broker). A route holds one client, or a [`fallback`] of two (direct,
//! else the broker); servers answer with the one
//! callee-side path of `guest::invoke`, admitting calls through
//! [`admission`].

pub(crate) mod admission;
pub mod direct;
pub(crate) mod embedded;
pub(crate) mod fallback;
pub(crate) mod local;
pub(crate) mod node_identity;
pub mod remote;

pub use crate::call::transport::PathCounts;
pub(crate) use crate::call::transport::{on_worker, start_copied, PendingCall, Transport};
