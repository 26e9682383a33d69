//! What the shim takes from its node before any container runs.
//!
//! - **The node directory a container mounts.** A bind mount whose source
//!   is missing fails deep in the container's setup, where containerd only
//!   says "failed to prepare rootfs". [`check_bundle`] looks at the spec of
//!   the container the shim is started for (its `config.json`, in the
//!   shim's working directory) and names the directory, and what to do,
//!   before that; `main` runs it for containerd's `start`, whose output
//!   containerd puts in the error `ctr run` prints. Under Kubernetes, the
//!   hostPath volume's `type: Directory` does the same in the kubelet.
//! - **The node's compile cache.** Compiled code is native code, so the
//!   cache lives outside every container, in a root-owned 0700 directory of
//!   the node ([`NODE_CACHE_ENV`], default [`DEFAULT_NODE_CACHE`]), never a
//!   mount a guest could be given. [`open_compile_cache`] opens it before
//!   runwasi forks the process every container is cloned from; the
//!   container's runtime reaches it through that open descriptor
//!   (`/proc/self/fd/N`), which survives the container's pivot into its
//!   rootfs. Neither a container's environment nor its image can point the
//!   runtime at another cache.

use std::os::fd::IntoRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cwasi_runtime::{ensure_compile_cache_dir, NodeDirectory, COMPILE_CACHE_ENV};

use crate::settings::{DEFAULT_NODE_DIR, ENV_RUNTIME_DIR};

/// The setting, in containerd's environment (for example a systemd
/// drop-in), that moves the node's compile cache, or turns it off (`off`).
pub const NODE_CACHE_ENV: &str = "CWASI_NODE_COMPILE_CACHE";
/// Where the node's compile cache is by default.
pub const DEFAULT_NODE_CACHE: &str = "/var/lib/cwasi/compiled";

/// A spec larger than this is not read (a spec is a few KiB).
const SPEC_LIMIT: u64 = 4 << 20;

#[derive(serde::Deserialize, Default)]
struct Spec {
    #[serde(default)]
    process: Option<Process>,
    #[serde(default)]
    mounts: Vec<Mount>,
}

#[derive(serde::Deserialize, Default)]
struct Process {
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    user: Option<User>,
}

#[derive(serde::Deserialize, Default)]
struct User {
    #[serde(default)]
    uid: u32,
}

#[derive(serde::Deserialize)]
struct Mount {
    destination: PathBuf,
    #[serde(default)]
    source: Option<PathBuf>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    options: Vec<String>,
}

impl Mount {
    fn is_bind(&self) -> bool {
        self.kind.as_deref() == Some("bind")
            || self.options.iter().any(|o| o == "bind" || o == "rbind")
    }
}

/// Checks the node directory that the container of this OCI spec (the text
/// of its `config.json`) bind-mounts, if any: it must exist and be a
/// directory that only the container's user can enter, as the runtime in
/// the container will require. The error names the directory and the fix.
/// A spec that cannot be read is left to containerd and the runtime.
pub fn check_bundle(spec_json: &str) -> Result<(), String> {
    let Ok(spec) = serde_json::from_str::<Spec>(spec_json) else {
        return Ok(());
    };
    let process = spec.process.unwrap_or_default();
    let node_dir = process
        .env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix(ENV_RUNTIME_DIR)?.strip_prefix('='))
        .filter(|v| !v.is_empty())
        .unwrap_or(DEFAULT_NODE_DIR);
    let uid = process.user.map_or(0, |u| u.uid);
    let target = Path::new(node_dir);
    for mount in spec.mounts.iter().filter(|m| m.is_bind()) {
        let (Some(source), true) = (&mount.source, mount.destination == target) else {
            continue;
        };
        if !source.exists() {
            return Err(format!(
                "the node directory {src} does not exist (the container mounts it at {dst}): \
                 create it with `install -d -m 0700 {src}`; deploy/install-node.sh makes \
                 /run/cwasi at every boot",
                src = source.display(),
                dst = mount.destination.display()
            ));
        }
        NodeDirectory::check(source, uid).map_err(|e| {
            format!(
                "{e} (the container mounts it at {}); fix it with `chown {uid} {src} && \
                 chmod 0700 {src}`",
                mount.destination.display(),
                src = source.display()
            )
        })?;
    }
    Ok(())
}

/// [`check_bundle`] of the `config.json` in `bundle`; no file, no check.
pub fn check_bundle_dir(bundle: &Path) -> Result<(), String> {
    let path = bundle.join("config.json");
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() && meta.len() <= SPEC_LIMIT => {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            check_bundle(&text)
        }
        _ => Ok(()),
    }
}

/// Where the node's compile cache is, by [`NODE_CACHE_ENV`] as `lookup`
/// finds it; `None` when it is turned off.
pub fn compile_cache_dir(lookup: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    match lookup(NODE_CACHE_ENV) {
        Some(v) if v == "off" => None,
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => Some(PathBuf::from(DEFAULT_NODE_CACHE)),
    }
}

/// Why the node's compile cache could not be used, if it could not.
static CACHE_TROUBLE: OnceLock<String> = OnceLock::new();

/// Opens the node's compile cache and points this process's runtime (and
/// every container cloned from it) at it, through the open descriptor. With
/// the cache off, or a directory that cannot be made private, the runtime's
/// cache is off too ([`compile_cache_trouble`] says why). Call it once, at
/// start, before any thread or container exists.
pub fn open_compile_cache() {
    let Some(dir) = compile_cache_dir(&|k| std::env::var(k).ok()) else {
        set_cache("off");
        return;
    };
    match open_private_dir(&dir) {
        Ok(fd) => set_cache(&format!("/proc/self/fd/{fd}")),
        Err(why) => {
            set_cache("off");
            let _ = CACHE_TROUBLE.set(format!(
                "the node's compile cache {} is off, so every container compiles its module: \
                 {why} (set {NODE_CACHE_ENV} in containerd's environment to move it)",
                dir.display()
            ));
        }
    }
}

/// Why [`open_compile_cache`] had to turn the cache off, for each
/// container's log.
pub fn compile_cache_trouble() -> Option<&'static str> {
    CACHE_TROUBLE.get().map(String::as_str)
}

fn set_cache(value: &str) {
    // At start, before runwasi starts a thread or forks: nothing else reads
    // the environment concurrently.
    std::env::set_var(COMPILE_CACHE_ENV, value);
}

/// Creates `dir` (and missing parents) 0700, checks it as the runtime checks
/// a compile cache, and opens it; the descriptor stays open for the
/// process's life.
fn open_private_dir(dir: &Path) -> Result<i32, String> {
    ensure_compile_cache_dir(dir)?;
    let file = std::fs::File::open(dir).map_err(|e| format!("cannot open it: {e}"))?;
    Ok(file.into_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn spec(env: &[&str], mounts: &[(&Path, &str)]) -> String {
        let mounts: Vec<_> = mounts
            .iter()
            .map(|(src, dst)| {
                serde_json::json!({
                    "destination": dst, "type": "bind", "source": src,
                    "options": ["rbind", "rw"]
                })
            })
            .collect();
        serde_json::json!({
            "process": { "env": env, "user": { "uid": 0, "gid": 0 } },
            "mounts": mounts,
        })
        .to_string()
    }

    #[test]
    fn a_missing_or_open_node_directory_is_named() {
        let scratch = std::env::temp_dir().join(format!("cwasi-node-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).unwrap();
        let dir = scratch.join("node");
        let uid = rustix::process::getuid().as_raw();
        let as_me = |s: String| s.replace("\"uid\":0", &format!("\"uid\":{uid}"));

        // Missing, at the default destination.
        let err = check_bundle(&as_me(spec(&[], &[(&dir, "/run/cwasi")]))).unwrap_err();
        assert!(
            err.contains(&format!(
                "the node directory {} does not exist",
                dir.display()
            )),
            "{err}"
        );
        assert!(err.contains("install -d -m 0700"), "{err}");
        // Missing, at a destination CWASI_RUNTIME_DIR names.
        let moved = spec(&["CWASI_RUNTIME_DIR=/node"], &[(&dir, "/node")]);
        assert!(check_bundle(&as_me(moved.clone())).is_err());
        // A directory elsewhere is none of its business.
        assert!(check_bundle(&as_me(spec(&[], &[(&dir, "/data")]))).is_ok());

        // Others can enter it.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = check_bundle(&as_me(moved)).unwrap_err();
        assert!(err.contains("has mode 755; it must be 0700"), "{err}");
        assert!(err.contains("chmod 0700"), "{err}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(check_bundle(&as_me(spec(&[], &[(&dir, "/run/cwasi")]))).is_ok());

        // Not a spec at all: left to containerd.
        assert!(check_bundle("not json").is_ok());
        assert!(check_bundle("{}").is_ok());
        std::fs::remove_dir_all(&scratch).unwrap();
    }

    #[test]
    fn the_node_cache_is_where_containerd_s_environment_says() {
        let none = |_: &str| None;
        assert_eq!(
            compile_cache_dir(&none),
            Some(PathBuf::from(DEFAULT_NODE_CACHE))
        );
        let off = |_: &str| Some("off".to_string());
        assert_eq!(compile_cache_dir(&off), None);
        let moved = |_: &str| Some("/srv/cwasi-cache".to_string());
        assert_eq!(
            compile_cache_dir(&moved),
            Some(PathBuf::from("/srv/cwasi-cache"))
        );
    }
}
