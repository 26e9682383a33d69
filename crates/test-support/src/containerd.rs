//! A real containerd for the shim's end-to-end tests, started by the test
//! itself: its own config, root, state and sockets under a private temporary
//! directory, the shim's directory first on its `PATH`, and a private ctr
//! namespace. Dropping it removes the containers it ran, stops containerd
//! and deletes the directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::process::output_within;

/// How long containerd may take to answer `ctr version`.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one `ctr` command may take.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(120);

/// The containerd 1.6 stream processor that turns an `application/wasm`
/// layer into an empty tar (1024 zero bytes), as docs/containerd.md shows.
const WASM_LAYER_PROCESSOR: &str = "#!/bin/sh\ncat > /dev/null\nhead -c 1024 /dev/zero\n";

/// A containerd owned by a test.
pub struct Containerd {
    child: Option<Child>,
    dir: PathBuf,
    namespace: String,
    containers: Mutex<Vec<String>>,
}

impl Containerd {
    /// Starts containerd with `shim_dir` (the directory of
    /// `containerd-shim-cwasi-v1`) first on its `PATH`, its CRI plugin
    /// disabled. Panics with the fix if containerd is not installed.
    pub fn start(shim_dir: &Path) -> Containerd {
        let dir = private_dir();
        let mut node = toml::Table::new();
        node.insert("version".into(), 2.into());
        node.insert(
            "disabled_plugins".into(),
            toml::Value::Array(vec!["io.containerd.grpc.v1.cri".into()]),
        );
        Containerd::launch(dir, shim_dir, node, false)
    }

    /// The containerd of a Kubernetes node on which `deploy/install-node.sh`
    /// installed the binaries of `shim_dir` (the shim and
    /// `cwasi-containerd-config`), with no containerd config before: what
    /// [`Containerd::start_node`] starts for that node.
    pub fn start_cri(shim_dir: &Path) -> Containerd {
        let dir = private_dir();
        let root = dir.join("host");
        install_node(shim_dir, &root);
        let node = installed_config(&root);
        Containerd::launch(dir, &root.join("usr/local/bin"), node, true)
    }

    /// containerd as `deploy/install-node.sh` left it in the host root
    /// `root`: the config it wrote there, unchanged but for what a test
    /// must keep private or this machine lacks ([`private_overlay`]), and
    /// the binaries it installed first on the `PATH`. The CRI plugin serves
    /// on [`Containerd::socket`], its sandboxes from
    /// [`crate::cri::PAUSE_IMAGE`] (import it first); the namespace is
    /// `k8s.io`, where the plugin looks for images. No CNI: test pods use
    /// the host network.
    pub fn start_node(root: &Path) -> Containerd {
        Containerd::launch(
            private_dir(),
            &root.join("usr/local/bin"),
            installed_config(root),
            true,
        )
    }

    fn launch(dir: PathBuf, bin_dir: &Path, node: toml::Table, cri: bool) -> Containerd {
        let tag = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("cwasi-containerd-"))
            .unwrap_or("x")
            .to_string();
        let processor = dir.join("wasm-layer-to-tar");
        std::fs::write(&processor, WASM_LAYER_PROCESSOR).expect("write the stream processor");
        set_mode(&processor, 0o755);
        let config = private_overlay(node, &dir, &processor);
        std::fs::write(dir.join("config.toml"), config).expect("write the containerd config");
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = crate::process::spawn_service(
            Command::new("containerd")
                .arg("--config")
                .arg(dir.join("config.toml"))
                .env("PATH", path)
                // The node's compile cache of the shims this containerd
                // starts: private to the test.
                .env("CWASI_NODE_COMPILE_CACHE", dir.join("compiled")),
            &dir.join("containerd.log"),
            "apt-get install containerd runc",
        );
        let c = Containerd {
            child: Some(child),
            dir,
            namespace: if cri {
                "k8s.io".to_string()
            } else {
                format!("cwasi-test-{tag}")
            },
            containers: Mutex::new(Vec::new()),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let out = output_within(c.ctr().arg("version"), Duration::from_secs(5));
            if out.as_ref().is_some_and(|o| o.status.success()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within {START_TIMEOUT:?}; see {}",
                c.dir.join("containerd.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    /// The private directory (config, root, state, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// containerd's gRPC socket (also CRI's, when enabled).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// The containerd namespace the test's containers live in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `ctr` bound to this containerd and its test namespace.
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a")
            .arg(self.dir.join("containerd.sock"))
            .args(["-n", &self.namespace]);
        cmd
    }

    /// Runs `ctr <args>` within [`CTR_TIMEOUT`]; panics if it hangs.
    pub fn ctr_output(&self, args: &[&str]) -> Output {
        output_within(self.ctr().args(args), CTR_TIMEOUT)
            .unwrap_or_else(|| panic!("ctr {args:?} did not finish within {CTR_TIMEOUT:?}"))
    }

    /// Imports an image tarball (every platform: Wasm images are
    /// `wasip1/wasm`).
    pub fn import(&self, tarball: &Path) {
        let tar = tarball.to_str().expect("utf-8 path");
        let out = self.ctr_output(&["image", "import", "--all-platforms", tar]);
        assert!(
            out.status.success(),
            "ctr image import {tar} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Builds an OCI image of the Wasm module at `module` (`cwasi image
    /// build`'s library), named `reference`, and imports it; returns the
    /// image's full reference.
    pub fn import_module(
        &self,
        module: &str,
        reference: &str,
        kind: cwasi_oci::ImageKind,
    ) -> String {
        let stem = reference.rsplit('/').next().unwrap_or(reference);
        let tarball = self.dir().join(format!("{stem}.tar"));
        let request = cwasi_oci::ImageRequest {
            module: PathBuf::from(module),
            reference: reference.to_string(),
            kind,
            env: Vec::new(),
        };
        let summary = cwasi_oci::write_image_file(&request, &tarball).expect("build the image");
        self.import(&tarball);
        summary.reference
    }

    /// Remembers a container id so that drop removes it.
    pub fn track(&self, id: &str) {
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id.to_string());
    }

    /// Whether containerd still answers.
    pub fn healthy(&self) -> bool {
        output_within(self.ctr().arg("version"), Duration::from_secs(10))
            .is_some_and(|o| o.status.success())
    }

    /// Force-removes one container and its task.
    pub fn remove(&self, id: &str) {
        for args in [
            &["task", "kill", "-s", "SIGKILL", id][..],
            &["task", "delete", "-f", id][..],
            &["container", "delete", id][..],
        ] {
            let _ = output_within(self.ctr().args(args), Duration::from_secs(20));
        }
        // youki's state lands outside containerd's root, by namespace and id.
        let _ = std::fs::remove_dir_all(
            Path::new("/run/containerd/cwasi")
                .join(&self.namespace)
                .join(id),
        );
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The test failed: what containerd and the shims said is about to
            // be deleted with the directory.
            let log = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "containerd's log, last 300 lines:\n{}",
                lines[lines.len().saturating_sub(300)..].join("\n")
            );
        }
        let ids = std::mem::take(&mut *self.containers.lock().unwrap_or_else(|p| p.into_inner()));
        for id in ids {
            self.remove(&id);
        }
        let _ = output_within(
            self.ctr()
                .args(["namespace", "remove", &self.namespace.clone()]),
            Duration::from_secs(10),
        );
        let _ = std::fs::remove_dir(Path::new("/run/containerd/cwasi").join(&self.namespace));
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Snapshots may still be mounted if a shim died badly.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            let prefix = self.dir.to_string_lossy().into_owned();
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|p| p.starts_with(&prefix))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = Command::new("umount").args(["-l", p]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh private directory for one containerd.
fn private_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("cwasi-containerd-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("cannot create the containerd directory");
    dir
}

/// Runs `deploy/install-node.sh` for the shim and `cwasi-containerd-config`
/// in `bin_dir`, into the host root `root`; what it printed. Panics with
/// its output if it fails.
pub fn install_node(bin_dir: &Path, root: &Path) -> String {
    // The two binaries alone, as scripts/dist.sh lays them out (bin_dir
    // may hold others, such as a debug build of `cwasi`).
    let dist = root.with_extension("dist");
    std::fs::create_dir_all(&dist).expect("create the dist directory");
    std::fs::create_dir_all(root).expect("create the host root");
    for bin in ["containerd-shim-cwasi-v1", "cwasi-containerd-config"] {
        let link = dist.join(bin);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(bin_dir.join(bin), &link).expect("link a binary");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/install-node.sh");
    let out = output_within(
        Command::new(&script).arg(&dist).arg(root),
        Duration::from_secs(60),
    )
    .expect("install-node.sh did not finish within a minute");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "install-node.sh failed: {text}");
    text
}

/// The containerd config the installer left in `root`.
fn installed_config(root: &Path) -> toml::Table {
    let path = root.join("etc/containerd/config.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("no containerd config at {}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("{} is not TOML: {e}\n{text}", path.display()))
}

/// The node's config with what a test containerd must change: its root,
/// state, sockets and the opt plugin's directory in `dir`; the stream
/// processor of `application/wasm` layers (containerd 1.6, as
/// docs/containerd.md shows); and, for the CRI plugin, the sandbox image
/// [`crate::cri::PAUSE_IMAGE`] (no registry can be reached) and
/// `restrict_oom_score_adj`, which keeps a sandbox's OOM score at or above
/// containerd's own, as for rootless nodes: the CI machine, itself a
/// container, lacks `CAP_SYS_RESOURCE`, so writing the sandbox's -998 to
/// `/proc/self/oom_score_adj` fails (`EACCES`) and no pod could start.
/// Nothing under the plugin's `containerd` table (runtimes, default
/// runtime) is touched: that is what the installer is tested for.
fn private_overlay(mut node: toml::Table, dir: &Path, processor: &Path) -> String {
    assert_eq!(
        node.get("version").and_then(toml::Value::as_integer),
        Some(2),
        "the test containerd (1.6) reads version 2 configs: {node:#?}"
    );
    let path = |p: &str| toml::Value::from(dir.join(p).display().to_string());
    let sock = dir.join("containerd.sock").display().to_string();
    set(&mut node, &["root"], path("root"));
    set(&mut node, &["state"], path("state"));
    set(&mut node, &["grpc", "address"], sock.clone().into());
    set(
        &mut node,
        &["ttrpc", "address"],
        format!("{sock}.ttrpc").into(),
    );
    let opt = ["plugins", "io.containerd.internal.v1.opt", "path"];
    set(&mut node, &opt, path("opt"));
    let wasm = ["stream_processors", "io.containerd.cwasi.wasm"];
    set(
        &mut node,
        &[&wasm[..], &["accepts"]].concat(),
        vec!["application/wasm"].into(),
    );
    let returns = "application/vnd.oci.image.layer.v1.tar";
    set(
        &mut node,
        &[&wasm[..], &["returns"]].concat(),
        returns.into(),
    );
    let processor = processor.display().to_string();
    set(
        &mut node,
        &[&wasm[..], &["path"]].concat(),
        processor.into(),
    );
    let cri = ["plugins", "io.containerd.grpc.v1.cri"];
    let image = crate::cri::PAUSE_IMAGE;
    set(
        &mut node,
        &[&cri[..], &["sandbox_image"]].concat(),
        image.into(),
    );
    set(
        &mut node,
        &[&cri[..], &["disable_apparmor"]].concat(),
        true.into(),
    );
    set(
        &mut node,
        &[&cri[..], &["restrict_oom_score_adj"]].concat(),
        true.into(),
    );
    toml::to_string(&node).expect("serialise the containerd config")
}

/// Sets `value` at the dotted `path`, making tables where missing.
fn set(table: &mut toml::Table, path: &[&str], value: toml::Value) {
    let (last, parents) = path.split_last().expect("a key");
    let mut t = table;
    for key in parents {
        t = t
            .entry(key.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap_or_else(|| panic!("{key} is not a table"));
    }
    t.insert(last.to_string(), value);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
