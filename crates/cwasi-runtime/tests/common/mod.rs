//! Helpers shared by the runtime's integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

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
