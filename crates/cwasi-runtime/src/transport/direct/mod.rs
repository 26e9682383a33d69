//! The direct data plane of remote mode: a function served on a node with
//! a data address (`cwasi serve --listen`) is called over TCP by callers on
//! other nodes, with the frames of local mode, mutual TLS unless plain TCP
//! was asked for, pooled connections, failover between the nodes that
//! serve it, and the broker as the path of last resort
//! (`docs/protocol.md`, "Direct mode").
//!
//! The files, each importing its siblings directly (never this module):
//! - `config`: [`DirectConfig`] (TLS files, plain TCP) and [`DataAddr`];
//! - `tls`: the rustls client and server configurations, and what a TLS
//!   failure means;
//! - `socket`: one connection, plain or TLS, and its socket options;
//! - `answered`: the server's memory of recent request ids;
//! - `server`: [`DirectServer`], admission (handshakes, connections,
//!   call slots) and one connection's requests;
//! - `request`: the server's side of one connection, reading requests
//!   under their deadlines;
//! - `peer`: one node serving the callee, with its pool of connections;
//! - `balance`: a node's load as the caller sees it, and the choice of the
//!   less loaded of two nodes;
//! - `client`: the caller's side over every node that serves the callee.

mod answered;
mod balance;
mod callers;
pub(crate) mod client;
mod config;
pub(crate) mod peer;
mod request;
pub(crate) mod server;
mod socket;
mod tls;

pub use config::{DataAddr, DirectConfig, TlsFiles};
pub(crate) use request::Conn;
pub(crate) use server::{DirectServer, DirectSettings};
pub(crate) use tls::DirectTls;
