//! Helpers shared by the runtime's integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cwasi_runtime::broker::{Broker, BrokerConfig, Handler, RequestMeta, StreamServer};

/// Serves an echo handler as `ns/echo` through the broker that `config`
/// reaches, counting its runs in `runs` and keeping what it is told of
/// each request in `seen`.
pub fn echo_stream_server(
    config: BrokerConfig,
    runs: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<RequestMeta>>>,
) -> StreamServer {
    let broker = Broker::new(config).unwrap();
    let handler: Handler = Arc::new(move |req: &[u8], meta: RequestMeta| {
        runs.fetch_add(1, Ordering::SeqCst);
        seen.lock().unwrap().push(meta);
        Ok(req.to_vec())
    });
    StreamServer::start(
        broker,
        "ns",
        "echo",
        "{}".into(),
        1,
        Duration::from_secs(10),
        handler,
    )
    .unwrap()
}

/// A path under the system's temporary directory, unique to this process
/// and `tag`, removed (with everything in it) when dropped. It is not
/// created: a node directory creates itself with its own mode.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `$TMPDIR/cwasi-<tag>-<pid>`, emptied of anything an earlier run left.
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("cwasi-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
