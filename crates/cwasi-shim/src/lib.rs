//! `containerd-shim-cwasi-v1`: runs Wasm OCI images under containerd on the
//! CWASI runtime (runtime type `io.containerd.cwasi.v1`).
//!
//! The shim stays thin. runwasi's `containerd-shim-wasm` does the container
//! work; this crate maps the container's OCI process onto a CWASI function:
//!
//! - [`annotations`]: the pod's annotations, read once at shim start;
//! - [`settings`]: name, namespace, serve flag, mode, node directory and
//!   broker, from the container's environment over the annotations;
//! - [`mounts`]: the container's mounts as WASI preopens;
//! - [`sandbox`]: running `_start`, or serving calls until stopped;
//! - [`node`]: what the shim takes from its node before any container runs
//!   (the node directory a container mounts, the node's compile cache);
//! - [`containerd_config`]: the `cwasi` runtime handler merged into a node's
//!   containerd config (the `cwasi-containerd-config` binary that
//!   `deploy/install-node.sh` runs).
//!
//! See `docs/containerd.md` and `docs/kubernetes.md`.

pub mod annotations;
pub mod containerd_config;
pub mod mounts;
pub mod node;
pub mod sandbox;
pub mod settings;

pub use sandbox::{CwasiSandbox, CwasiShim};
