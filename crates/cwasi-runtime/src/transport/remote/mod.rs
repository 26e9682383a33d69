//! Remote mode: Redis streams for requests, per-request reply keys, and the
//! cluster registry of which node serves what (`docs/protocol.md`).
//!
//! Keys (`keys`, the one place that derives them; a call's keys come from
//! its function and request id, never from a stream entry). Each key of a
//! function carries the hash tag `{<ns>/<name>}`, so that what one
//! operation touches is in one slot of a Redis Cluster:
//! - `cwasi:{<ns>/<name>}:stream`: the request stream of a function, read
//!   by the consumer group `cwasi`;
//! - `cwasi:{<ns>/<name>}:payload:<id>`: the payload of one large request,
//!   kept out of the stream (see [`PAYLOAD_KEY_MIN`]);
//! - `cwasi:{<ns>/<name>}:reply:<id>`: the reply list of one request
//!   (`LPUSH` + expiry);
//! - `cwasi:{<ns>/<name>}:response:<id>`: the response to one request,
//!   when it is large;
//! - `cwasi:{<ns>/<name>}:claim:<id>`: which consumer runs a reclaimed
//!   request;
//! - `cwasi:{<ns>/<name>}:taken:<id>`: the stream entry that took a
//!   signed request's id first, until its deadline (a replayed copy, another
//!   entry with the id, runs nothing);
//! - `cwasi:{<ns>/<name>}:nodes`: nodes serving a function, scored by the
//!   time their announcement expires, and `cwasi:{<ns>/<name>}:records`
//!   their endpoint records; `cwasi:{<name>}:namespaces`: the namespaces a
//!   name is served in.
//!
//! The files, each importing its siblings directly (never this module):
//! - `config`: how to reach the broker ([`BrokerConfig`]), TLS files;
//! - `conn`: the [`Broker`] and its connections;
//! - `keys`: every key name, and the check of request ids;
//! - `codec`: the stream entry and the reply envelope;
//! - `signed`: the caller an entry names, its signature, and the check of
//!   both;
//! - `client`: the caller's side ([`Broker::call`], the remote transport);
//! - `registry`: the cluster registry ([`Broker::find`], announcements);
//! - `events`: its placement events (`PUBLISH` on a change, and the
//!   subscriber, [`Broker::follow_placement`]);
//! - `server`: [`StreamServer`], which serves a function from its stream;
//! - `consumer`: one consumer of a stream, and the [`Handler`] it runs.

mod client;
mod codec;
mod config;
mod conn;
mod consumer;
mod events;
mod keys;
mod registry;
mod server;
mod signed;

pub(crate) use codec::parse_untrusted;
pub(crate) use registry::data_addr_of;
pub(crate) use signed::callers_untrusted;

pub(crate) use client::RemoteClient;
pub use codec::{GROUP, PAYLOAD_KEY_MIN, STREAM_MAXLEN};
pub use config::BrokerConfig;
pub use conn::Broker;
pub use consumer::{Handler, RequestMeta};
pub use events::{PlacementFollower, PLACEMENT_CHANNEL};
pub use keys::BROKER_VERSION;
pub use registry::{RemoteEndpoint, ANNOUNCE_TTL, HEARTBEAT};
pub use server::StreamServer;
