//! Prometheus metrics of a CWASI runtime, served on `/metrics` by
//! `cwasi serve --metrics ADDR` and by the shim (`CWASI_METRICS_ADDR`).
//!
//! The runtime keeps its own counters (per edge and mode on the caller's
//! side, per function on the callee's); this crate only reads a
//! [`Snapshot`] of them at each scrape and writes it in the OpenMetrics text
//! format with `prometheus-client`. Nothing is counted twice, and a process
//! that is never scraped pays nothing here.
//!
//! ```no_run
//! use std::sync::Arc;
//! use cwasi_metrics::{MetricsServer, Snapshot};
//!
//! # fn demo(runtime: Arc<cwasi_runtime::Runtime>) -> Result<(), cwasi_metrics::MetricsError> {
//! let source = runtime.clone();
//! let server = MetricsServer::start("127.0.0.1:9464".parse().unwrap(), move || {
//!     Snapshot::of(&source, &[])
//! })?;
//! println!("metrics on http://{}/metrics", server.local_addr());
//! # Ok(()) }
//! ```
//!
//! The metrics, their labels and PromQL examples are in `docs/operations.md`.

mod encode;
mod server;

pub use encode::{encode, Snapshot, StreamBacklog};
pub use server::{MetricsError, MetricsServer, CONTENT_TYPE};
