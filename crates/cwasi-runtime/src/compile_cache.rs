//! Compiled code kept on disk between processes, keyed by the module's
//! digest and the engine's settings: a Python component (an interpreter of
//! some 18 MB) takes seconds to compile, and every `cwasi serve`, shim
//! container and embedding process would pay that again.
//!
//! Loading compiled code runs it as native code, so the cache is trusted
//! only as far as its directory: it must be a real directory owned by this
//! user, with no access for anyone else (mode `0700`), and each entry a
//! regular file owned by this user. Anything else disables the cache, with
//! a warning, and every module is compiled as if there were none. An entry
//! that wasmtime refuses (another version, other settings, a torn write) is
//! compiled again and replaced. Entries are written to a temporary file and
//! renamed, so a reader never sees half of one.
//!
//! Where: `CWASI_COMPILE_CACHE` (a directory, or `off`), else
//! `$XDG_CACHE_HOME/cwasi/compiled`, else `$HOME/.cache/cwasi/compiled`.
//! Under the shim, the process environment is the shim's, never the
//! container's: the shim sets `CWASI_COMPILE_CACHE` to the node's cache
//! (or `off`) before any container starts.
//! Nothing is ever evicted: remove the directory to reclaim the space.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use crate::regular_file::{open_regular, read_capped, Links};

/// The setting that moves or turns off the cache.
pub const CACHE_ENV: &str = "CWASI_COMPILE_CACHE";

/// Largest entry read back (compiled code is a few times its module).
const MAX_ENTRY_BYTES: u64 = 2 << 30;

/// What the cache keeps: a compiled module or component.
pub(crate) trait Precompiled: Sized {
    /// The entry's file extension.
    const KIND: &'static str;
    /// Wasmtime's `deserialize`.
    ///
    /// # Safety
    ///
    /// `bytes` must come from [`Precompiled::serialize`] of a trusted
    /// process (wasmtime's own contract).
    unsafe fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self>;
    /// Wasmtime's `serialize`.
    fn serialize(&self) -> wasmtime::Result<Vec<u8>>;
}

impl Precompiled for Module {
    const KIND: &'static str = "cwasm";
    unsafe fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        // SAFETY: the caller's contract is this function's.
        unsafe { Module::deserialize(engine, bytes) }
    }
    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        Module::serialize(self)
    }
}

impl Precompiled for Component {
    const KIND: &'static str = "cwasm-component";
    unsafe fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        // SAFETY: the caller's contract is this function's.
        unsafe { Component::deserialize(engine, bytes) }
    }
    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        Component::serialize(self)
    }
}

/// A directory of compiled modules and components.
pub(crate) struct CompileCache {
    dir: PathBuf,
    /// The engine's settings, as part of every key.
    engine_key: u64,
}

impl CompileCache {
    /// The cache for `engine`, where the environment puts it; `None` when
    /// it is off or its directory is not safe to load code from.
    pub fn for_engine(engine: &Engine) -> Option<CompileCache> {
        let dir = match std::env::var_os(CACHE_ENV) {
            Some(v) if v == "off" || v.is_empty() => return None,
            Some(v) => PathBuf::from(v),
            None => default_dir()?,
        };
        if let Err(why) = ensure_private_dir(&dir) {
            tracing::warn!(dir = %dir.display(), "compile cache off: {why}");
            return None;
        }
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Some(CompileCache {
            dir,
            engine_key: h.finish(),
        })
    }

    fn entry(&self, digest: &str, kind: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir
            .join(format!("{hex}-{:016x}.{kind}", self.engine_key))
    }

    /// Compiled code from bytes with `digest`, from the cache or compiled
    /// by `compile` (and then kept), and which of the two it was.
    pub fn get<T: Precompiled>(
        &self,
        engine: &Engine,
        digest: &str,
        compile: impl FnOnce() -> wasmtime::Result<T>,
    ) -> wasmtime::Result<(T, Fetched)> {
        let path = self.entry(digest, T::KIND);
        if let Some(bytes) = read_entry(&path) {
            // SAFETY: the entry is a regular file owned by this user, in a
            // directory only this user can write (`ensure_private_dir`),
            // written by `store` from `serialize`; wasmtime checks its
            // header, version and settings before using it.
            match unsafe { T::deserialize(engine, &bytes) } {
                Ok(compiled) => return Ok((compiled, Fetched::Hit)),
                Err(e) => tracing::debug!(entry = %path.display(), "compiling again: {e:#}"),
            }
        }
        let compiled = compile()?;
        let kept = match compiled.serialize() {
            Ok(bytes) => self.store(&path, &bytes),
            Err(_) => false,
        };
        Ok((compiled, Fetched::Compiled { kept }))
    }

    /// Writes an entry through a temporary file and a rename, and says
    /// whether it was written; a failure only costs the next process a
    /// compile.
    fn store(&self, path: &Path, bytes: &[u8]) -> bool {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let written = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(bytes))
            .and_then(|()| fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            tracing::debug!(entry = %path.display(), "not cached: {e}");
            return false;
        }
        true
    }
}

/// Where [`CompileCache::get`] found the compiled code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fetched {
    /// In the cache.
    Hit,
    /// Nowhere: it was compiled; `kept` if the cache now holds it.
    Compiled {
        /// Whether the entry was written.
        kept: bool,
    },
}

fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("cwasi").join("compiled"))
}

/// Creates `dir` (mode 0700) if needed, and checks that only this user can
/// reach it: what the runtime requires of a compile cache before it loads
/// native code from it. The shim asks it of the node's cache at start, to
/// name the problem once for every container.
pub fn ensure_private_dir(dir: &Path) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create it: {e}"))?;
    // The directory a link leads to is what must be private: the shim hands
    // its containers the node's cache as `/proc/self/fd/N`.
    let meta = fs::metadata(dir).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Err("it is not a directory".into());
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(format!("it is owned by uid {}, not this user", meta.uid()));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "its mode is {:o}; others must have no access (0700)",
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

/// An entry's bytes, if it is a regular file of this user's.
fn read_entry(path: &Path) -> Option<Vec<u8>> {
    let file = open_regular(path, MAX_ENTRY_BYTES, Links::Refuse).ok()?;
    let meta = file.metadata().ok()?;
    if meta.uid() != rustix::process::geteuid().as_raw() || meta.mode() & 0o022 != 0 {
        return None;
    }
    read_capped(file, path, MAX_ENTRY_BYTES).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_shared_directory_is_refused() {
        let dir = std::env::temp_dir().join(format!("cwasi-cache-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let why = ensure_private_dir(&dir).unwrap_err();
        assert!(why.contains("0700"), "{why}");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        ensure_private_dir(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_entry_is_compiled_once_then_loaded() {
        let dir = std::env::temp_dir().join(format!("cwasi-cache-test2-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        ensure_private_dir(&dir).unwrap();
        let engine = Engine::default();
        let cache = CompileCache {
            dir: dir.clone(),
            engine_key: 1,
        };
        let wat = "(module (func (export \"f\") (result i32) i32.const 7))";
        let mut compiled = 0;
        for _ in 0..2 {
            let (m, _) = cache
                .get(&engine, "sha256:ab", || {
                    compiled += 1;
                    Module::new(&engine, wat)
                })
                .unwrap();
            assert!(m.get_export("f").is_some());
        }
        assert_eq!(compiled, 1);
        let (_, fetched) = cache
            .get(&engine, "sha256:ab", || Module::new(&engine, wat))
            .unwrap();
        assert_eq!(fetched, Fetched::Hit);
        // A torn entry is compiled again and replaced.
        let entry = cache.entry("sha256:ab", <Module as Precompiled>::KIND);
        fs::write(&entry, b"not compiled code").unwrap();
        let (_, fetched) = cache
            .get(&engine, "sha256:ab", || {
                compiled += 1;
                Module::new(&engine, wat)
            })
            .unwrap();
        assert_eq!(compiled, 2);
        assert_eq!(fetched, Fetched::Compiled { kept: true });
        fs::remove_dir_all(&dir).unwrap();
    }
}
