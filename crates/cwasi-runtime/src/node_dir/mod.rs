//! Where functions live on this node: the node directory.
//!
//! Every served function has a record `<name>@<namespace>.json` and a socket
//! `<name>@<namespace>.sock` in `$CWASI_RUNTIME_DIR`. The server holds an
//! exclusive `flock` on its record for as long as it runs, so liveness is a
//! lock test: it needs no pid comparison and holds across PID namespaces
//! (a containerised server sees itself as pid 1). A record whose lock is free
//! is stale; the next reader or writer removes it and its socket.
//!
//! Everything that shares the directory can write it, so a reader trusts
//! only the record file's own name: the socket it removes with a stale
//! record, and the name and namespace a live record must state, are derived
//! from that name, never read from the contents. Only regular files of at
//! most [`RECORD_MAX_BYTES`] are read as records, and published modules must
//! be regular files too (no symbolic links), within the module size limit.
//!
//! A served function without preopened directories also publishes its module
//! under `modules/<sha256>.wasm`, so that a caller of the same namespace on
//! this node, in another process or container, can load it and embed the
//! callee in its own VM. Paths in records are read relative to the directory,
//! so a directory bind-mounted elsewhere (into a container) still resolves.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use crate::composition::{validate_name, validate_namespace};
use crate::error::RuntimeError;
use crate::regular_file::{open_regular, read_capped, read_regular, Links};

mod record;
pub use record::{EmbedInfo, EndpointRecord, RECORD_MAX_BYTES, RECORD_VERSION};

/// Subdirectory of the node directory holding published modules.
const MODULES: &str = "modules";

/// Published modules unreferenced for this long are removed.
const MODULE_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// The node directory.
#[derive(Debug, Clone)]
pub struct NodeDirectory {
    root: PathBuf,
}

fn io_err(path: &Path, source: std::io::Error) -> RuntimeError {
    RuntimeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl NodeDirectory {
    /// The default location: `$CWASI_RUNTIME_DIR`, else `/run/cwasi` for root,
    /// else `$XDG_RUNTIME_DIR/cwasi`, else `/tmp/cwasi-<uid>`.
    pub fn default_path() -> PathBuf {
        if let Some(dir) = std::env::var_os("CWASI_RUNTIME_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        let uid = rustix::process::getuid();
        if uid.is_root() {
            return PathBuf::from("/run/cwasi");
        }
        if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
            return Path::new(&xdg).join("cwasi");
        }
        PathBuf::from(format!("/tmp/cwasi-{}", uid.as_raw()))
    }

    /// Opens the directory at [`NodeDirectory::default_path`].
    pub fn open_default() -> Result<NodeDirectory, RuntimeError> {
        NodeDirectory::open(&NodeDirectory::default_path())
    }

    /// Opens (creating it 0700 if needed) a node directory. A directory that
    /// belongs to another user, or that others can enter, is refused.
    pub fn open(root: &Path) -> Result<NodeDirectory, RuntimeError> {
        if !root.exists() {
            create_private_dir(root)?;
        }
        NodeDirectory::check(root, rustix::process::getuid().as_raw())?;
        Ok(NodeDirectory {
            root: root.to_path_buf(),
        })
    }

    /// Whether `root` would be accepted as a node directory by a process of
    /// user `uid`: an existing directory of that user that nobody else can
    /// enter. The shim asks before a container that mounts it starts, so
    /// that a wrong directory is named instead of failing later.
    pub fn check(root: &Path, uid: u32) -> Result<(), RuntimeError> {
        let meta = std::fs::metadata(root).map_err(|e| io_err(root, e))?;
        let (owner, mode) = (meta.uid(), meta.mode() & 0o777);
        let why = if !meta.is_dir() {
            "is not a directory".to_string()
        } else if owner != uid {
            format!("belongs to uid {owner}, not to its user (uid {uid})")
        } else if mode & 0o077 != 0 {
            format!("has mode {mode:o}; it must be 0700")
        } else {
            return Ok(());
        };
        Err(RuntimeError::Config(format!(
            "node directory {} {why}",
            root.display()
        )))
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn stem(name: &str, namespace: &str) -> String {
        format!("{name}@{namespace}")
    }

    /// The socket path a function of this name and namespace listens on.
    pub fn socket_path(&self, name: &str, namespace: &str) -> PathBuf {
        self.root
            .join(format!("{}.sock", Self::stem(name, namespace)))
    }

    fn record_path(&self, name: &str, namespace: &str) -> PathBuf {
        self.root
            .join(format!("{}.json", Self::stem(name, namespace)))
    }

    /// Publishes a record and holds it until the returned guard is dropped.
    /// Fails if a live server already holds the same name and namespace; a
    /// stale record in the way is removed.
    pub fn register(&self, record: &EndpointRecord) -> Result<Registration, RuntimeError> {
        validate_name(&record.name).map_err(RuntimeError::Config)?;
        validate_namespace(&record.namespace).map_err(RuntimeError::Config)?;
        let path = self.record_path(&record.name, &record.namespace);
        if let Some(live) = self.read_live(&path) {
            return Err(RuntimeError::AlreadyServed {
                name: live.name,
                namespace: live.namespace,
                pid: live.pid,
            });
        }
        let tmp = self.root.join(format!(
            ".{}.{}.tmp",
            Self::stem(&record.name, &record.namespace),
            std::process::id()
        ));
        let mut file = create_new_file(&tmp, 0o600)?;
        flock(&file, FlockOperation::NonBlockingLockExclusive)
            .map_err(|e| io_err(&tmp, e.into()))?;
        let json = serde_json::to_vec_pretty(record).map_err(|source| RuntimeError::Encode {
            what: "the endpoint record",
            source,
        })?;
        file.write_all(&json).map_err(|e| io_err(&tmp, e))?;
        file.sync_data().map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
        tracing::info!(name = %record.name, namespace = %record.namespace, socket = %record.socket.display(), "registered");
        Ok(Registration {
            record: path,
            socket: record.socket.clone(),
            module: record.embed.as_ref().map(|e| e.module_file.clone()),
            dir: self.clone(),
            _lock: file,
        })
    }

    /// The live record of `name` in `namespace`, if a server holds one (a
    /// name or namespace that is not valid has none).
    pub fn lookup(&self, name: &str, namespace: &str) -> Option<EndpointRecord> {
        if validate_name(name).is_err() || validate_namespace(namespace).is_err() {
            return None;
        }
        self.read_live(&self.record_path(name, namespace))
    }

    /// Every live record of `name`, in any namespace.
    pub fn lookup_any(&self, name: &str) -> Vec<EndpointRecord> {
        self.list().into_iter().filter(|r| r.name == name).collect()
    }

    /// Every live record; stale ones met on the way are removed.
    pub fn list(&self) -> Vec<EndpointRecord> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut out: Vec<EndpointRecord> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| record_identity(p).is_some())
            .filter_map(|p| self.read_live(&p))
            .collect();
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }

    /// Publishes a module under `modules/<hex>.wasm` (once per digest) and
    /// returns its path relative to the directory. Modules no live record
    /// refers to are removed after a grace period.
    pub fn publish_module(&self, bytes: &[u8], digest: &str) -> Result<PathBuf, RuntimeError> {
        let rel = module_file_name(digest)?;
        let dir = self.root.join(MODULES);
        if !dir.exists() {
            create_private_dir(&dir)?;
        }
        self.sweep_modules();
        let path = self.root.join(&rel);
        // A regular file of the right size (never a link, a FIFO, ...) is
        // taken as present; callers check its digest before they run it.
        match open_regular(&path, bytes.len() as u64, Links::Refuse) {
            Ok(file) if file.metadata().is_ok_and(|m| m.len() == bytes.len() as u64) => {
                // Refresh its age so that a concurrent sweep keeps it.
                let _ = file.set_modified(std::time::SystemTime::now());
            }
            _ => {
                let tmp = dir.join(format!(".{}.tmp", std::process::id()));
                let mut file = create_new_file(&tmp, 0o400)?;
                file.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
                std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
            }
        }
        Ok(rel)
    }

    /// Reads a published module (a regular file, not a link, of at most
    /// `max_bytes`) and checks it against the record's digest, so that a
    /// damaged or swapped file is never run.
    pub fn read_module(
        &self,
        info: &EmbedInfo,
        digest: &str,
        max_bytes: u64,
    ) -> Result<Vec<u8>, RuntimeError> {
        let rel = module_file_name(digest)?;
        if info.module_file != rel {
            return Err(RuntimeError::Config(format!(
                "record names module file {} for digest {digest}",
                info.module_file.display()
            )));
        }
        let path = self.root.join(&rel);
        let bytes = read_regular(&path, max_bytes, Links::Refuse)?;
        let actual = crate::engine::digest_of(&bytes);
        if actual != digest {
            return Err(RuntimeError::Config(format!(
                "published module {} has digest {actual}, its record says {digest}",
                path.display()
            )));
        }
        Ok(bytes)
    }

    /// Removes published modules that no live record refers to and that are
    /// older than [`MODULE_GRACE`].
    fn sweep_modules(&self) {
        let dir = self.root.join(MODULES);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let live: Vec<PathBuf> = self
            .list()
            .into_iter()
            .filter_map(|r| r.embed.map(|e| e.module_file))
            .collect();
        for entry in entries.flatten() {
            let rel = Path::new(MODULES).join(entry.file_name());
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > MODULE_GRACE);
            if old && !live.contains(&rel) {
                tracing::debug!(module = %rel.display(), "removing an unused published module");
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Reads a record if its server is alive; removes it if it is stale.
    /// Only the file's own name says which record it is (see the module
    /// doc); a file that is not a record is skipped, unread.
    fn read_live(&self, path: &Path) -> Option<EndpointRecord> {
        let (name, namespace) = record_identity(path)?;
        let file = match open_regular(path, RECORD_MAX_BYTES, Links::Refuse) {
            Ok(file) => file,
            Err(e) => {
                skipped(path, &e);
                return None;
            }
        };
        match flock(&file, FlockOperation::NonBlockingLockShared) {
            Err(rustix::io::Errno::WOULDBLOCK) => self.parse_live(file, path, name, namespace),
            Ok(()) => {
                self.remove_stale(path, &file, name, namespace);
                None
            }
            Err(e) => {
                tracing::debug!(path = %path.display(), "cannot test the record's lock: {e}");
                None
            }
        }
    }

    /// Parses a live record; one that does not say what its file name says
    /// (a copy or a link under another name) is not trusted.
    fn parse_live(
        &self,
        file: File,
        path: &Path,
        name: &str,
        namespace: &str,
    ) -> Option<EndpointRecord> {
        let bytes = match read_capped(file, path, RECORD_MAX_BYTES) {
            Ok(bytes) => bytes,
            Err(e) => {
                skipped(path, &e);
                return None;
            }
        };
        let mut r = match decode_record(&bytes, name, namespace) {
            Ok(r) => r,
            Err(why) => {
                tracing::warn!(path = %path.display(), "record ignored: {why}");
                return None;
            }
        };
        // The socket is where this directory puts it, whatever path the
        // server saw (it may run in a container).
        r.socket = self.socket_path(name, namespace);
        Some(r)
    }

    /// Removes a record nobody holds (its server is gone), if the file at
    /// `path` is still the one tested, and the socket its name implies.
    fn remove_stale(&self, path: &Path, tested: &File, name: &str, namespace: &str) {
        let same = std::fs::symlink_metadata(path)
            .ok()
            .zip(tested.metadata().ok())
            .is_some_and(|(a, b)| a.ino() == b.ino() && a.dev() == b.dev());
        if same {
            tracing::info!(path = %path.display(), "removing a stale record");
            // The socket first: whoever finds the record gone then finds
            // its socket gone too.
            let _ = std::fs::remove_file(self.socket_path(name, namespace));
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The name and namespace a record file's name `<name>@<namespace>.json`
/// gives, if both are valid names; `None` for any other file.
pub(crate) fn record_identity(path: &Path) -> Option<(&str, &str)> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".json")?;
    let (name, namespace) = stem.split_once('@')?;
    (validate_name(name).is_ok() && validate_namespace(namespace).is_ok())
        .then_some((name, namespace))
}

/// Parses the contents of the record of `name` in `namespace`: refused if
/// unreadable, of another version, or for another function than its file
/// name says.
pub(crate) fn decode_record(
    bytes: &[u8],
    name: &str,
    namespace: &str,
) -> Result<EndpointRecord, String> {
    let r =
        serde_json::from_slice::<EndpointRecord>(bytes).map_err(|e| format!("unreadable: {e}"))?;
    if r.version != RECORD_VERSION {
        return Err(format!("unknown version {}", r.version));
    }
    if r.name != name || r.namespace != namespace {
        return Err(format!(
            "its contents name '{}@{}', not what its file name says",
            r.name, r.namespace
        ));
    }
    Ok(r)
}

/// Logs a file skipped as a record: quietly if it went away meanwhile.
fn skipped(path: &Path, e: &RuntimeError) {
    match e {
        RuntimeError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!(path = %path.display(), "record gone: {e}");
        }
        _ => tracing::warn!(path = %path.display(), "record skipped: {e}"),
    }
}

/// Creates `path` as a new file with `mode`, replacing whatever was there
/// (a leftover of a crashed writer): never through a link someone put at
/// that name, and never blocking on a FIFO.
fn create_new_file(path: &Path, mode: u32) -> Result<File, RuntimeError> {
    let _ = std::fs::remove_file(path);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io_err(path, e))
}

/// Creates `dir` (and missing parents) as 0700 in one step: a directory
/// created first and restricted after would be seen open, for a moment, by
/// another process opening it at the same time. One that exists already is
/// left as it is (the caller checks it).
fn create_private_dir(dir: &Path) -> Result<(), RuntimeError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_err(dir, e))
}

/// `modules/<hex>.wasm` for `sha256:<hex>`; anything else is refused, so a
/// record can never point outside the store.
fn module_file_name(digest: &str) -> Result<PathBuf, RuntimeError> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| RuntimeError::Config(format!("'{digest}' is not a sha256 digest")))?;
    Ok(Path::new(MODULES).join(format!("{hex}.wasm")))
}

/// A published record; dropping it unpublishes it and removes the socket.
#[derive(Debug)]
pub struct Registration {
    record: PathBuf,
    socket: PathBuf,
    /// The published module, relative to the directory.
    module: Option<PathBuf>,
    dir: NodeDirectory,
    _lock: File,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.record);
        tracing::info!(record = %self.record.display(), "unregistered");
        // The last server of a module takes it away; a crashed one leaves it
        // to the sweep of the next publisher.
        if let Some(module) = &self.module {
            let in_use = self
                .dir
                .list()
                .iter()
                .any(|r| r.embed.as_ref().is_some_and(|e| &e.module_file == module));
            if !in_use {
                let _ = std::fs::remove_file(self.dir.root.join(module));
                let _ = std::fs::remove_dir(self.dir.root.join(MODULES));
            }
        }
    }
}

/// This node's name: `$CWASI_NODE`, else the hostname.
pub fn node_name() -> String {
    node_name_from(&|k| std::env::var(k).ok())
}

/// This node's name from variables looked up by `var`: `CWASI_NODE`, else
/// the hostname.
pub fn node_name_from(var: &dyn Fn(&str) -> Option<String>) -> String {
    if let Some(n) = var("CWASI_NODE").filter(|n| !n.is_empty()) {
        return n;
    }
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cwasi-reg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn record(dir: &NodeDirectory, name: &str, ns: &str) -> EndpointRecord {
        EndpointRecord {
            version: RECORD_VERSION,
            name: name.into(),
            namespace: ns.into(),
            node: "n1".into(),
            module: "/m.wasm".into(),
            digest: "sha256:00".into(),
            socket: dir.socket_path(name, ns),
            embed: None,
            data_addr: None,
            slots: None,
            pid: std::process::id(),
        }
    }

    #[test]
    fn register_lookup_unregister() {
        let root = tmpdir("basic");
        let dir = NodeDirectory::open(&root).unwrap();
        let mode = std::fs::metadata(&root).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let rec = record(&dir, "echo", "a");
        let reg = dir.register(&rec).unwrap();
        assert_eq!(dir.lookup("echo", "a"), Some(rec.clone()));
        assert_eq!(dir.lookup_any("echo").len(), 1);
        assert!(dir.register(&rec).is_err(), "a live record cannot be taken");
        drop(reg);
        assert_eq!(dir.lookup("echo", "a"), None);
        assert!(dir.list().is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn stale_records_are_ignored_and_cleaned() {
        let root = tmpdir("stale");
        let dir = NodeDirectory::open(&root).unwrap();
        let rec = record(&dir, "echo", "a");
        // A record and socket left by a killed server: nobody holds the lock.
        std::fs::write(root.join("echo@a.json"), serde_json::to_vec(&rec).unwrap()).unwrap();
        std::fs::write(&rec.socket, b"").unwrap();
        std::fs::write(root.join("junk@a.json"), b"not json").unwrap();
        assert!(dir.list().is_empty());
        assert!(!root.join("echo@a.json").exists());
        assert!(!rec.socket.exists());
        // And a new server can take the name.
        let _reg = dir.register(&rec).unwrap();
        assert!(dir.lookup("echo", "a").is_some());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_open_directory_is_refused() {
        let root = tmpdir("open");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = NodeDirectory::open(&root).unwrap_err();
        assert!(err.to_string().contains("must be 0700"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
