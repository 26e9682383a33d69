//! What a served function publishes about itself in the node directory: its
//! record (`<name>@<namespace>.json`), and how a caller of its namespace can
//! embed it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Version of the record format.
pub const RECORD_VERSION: u32 = 1;

/// Largest record file read, in bytes; a larger one is skipped unread (a
/// real record is well under a kilobyte, its WASI args and env included).
pub const RECORD_MAX_BYTES: u64 = 64 << 10;

/// What a served function publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// Record format version.
    pub version: u32,
    /// The function's name.
    pub name: String,
    /// Its trust domain.
    pub namespace: String,
    /// The node it runs on.
    pub node: String,
    /// The module it runs, as the server sees the path.
    pub module: PathBuf,
    /// `sha256:<hex>` of the module.
    pub digest: String,
    /// The Unix socket it listens on.
    pub socket: PathBuf,
    /// The server's pid, as the server sees it (for people, not liveness).
    pub pid: u32,
    /// How a caller of the same namespace can embed this function; absent
    /// when it cannot be embedded elsewhere (it has preopened directories).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embed: Option<EmbedInfo>,
    /// Where other nodes reach this function directly (`tls://IP:PORT`,
    /// or `tcp://IP:PORT` when plain TCP was asked for); absent when it
    /// listens on no network address, and then other nodes call it through
    /// the broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_addr: Option<String>,
    /// How many calls the server runs at once (its call slots); a caller
    /// whose own calls fill them spills further calls to the next path
    /// (docs/architecture.md, "Spill-over"). Absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
}

/// What a caller needs to run a served function in its own VM: the module
/// published in the node directory and the WASI setup the server gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbedInfo {
    /// The module, relative to the node directory (`modules/<hex>.wasm`).
    pub module_file: PathBuf,
    /// WASI arguments after the program name.
    pub args: Vec<String>,
    /// WASI environment.
    pub env: Vec<(String, String)>,
    /// The seed handler export, for prototype-style callees.
    pub seed_handler: Option<String>,
    /// The served function's call policy, which a caller that embeds it
    /// enforces as its server would (absent: no policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_callers: Option<Vec<String>>,
}

#[cfg(test)]
impl EndpointRecord {
    /// A record of function `b` served in namespace `ns` on node `n1`, for
    /// the tests of what reads records (the selector, the placement facts).
    pub(crate) fn sample(ns: &str) -> EndpointRecord {
        EndpointRecord {
            version: RECORD_VERSION,
            name: "b".into(),
            namespace: ns.into(),
            node: "n1".into(),
            module: "/b.wasm".into(),
            digest: "sha256:ab".into(),
            socket: format!("/run/cwasi/b@{ns}.sock").into(),
            pid: 42,
            embed: None,
            data_addr: None,
            slots: None,
        }
    }
}
