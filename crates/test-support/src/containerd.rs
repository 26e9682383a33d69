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
        Containerd::launch(shim_dir, false)
    }

    /// The same with the CRI plugin of a Kubernetes node: runtime handler
    /// `cwasi` (`io.containerd.cwasi.v1`) passing the `cwasi.io/*` and
    /// `cwasi.secondary.function` pod annotations, sandboxes from
    /// [`crate::cri::PAUSE_IMAGE`] (import it first), no CNI (test pods use
    /// the host network) and no AppArmor. Its namespace is `k8s.io`, where
    /// the plugin looks for images; [`Containerd::socket`] serves CRI.
    pub fn start_cri(shim_dir: &Path) -> Containerd {
        Containerd::launch(shim_dir, true)
    }

    fn launch(shim_dir: &Path, cri: bool) -> Containerd {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("cwasi-containerd-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cannot create the containerd directory");
        let processor = dir.join("wasm-layer-to-tar");
        std::fs::write(&processor, WASM_LAYER_PROCESSOR).expect("write the stream processor");
        set_mode(&processor, 0o755);
        let socket = dir.join("containerd.sock");
        let plugins = if cri {
            cri_config(&dir)
        } else {
            "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n".to_string()
        };
        let config = format!(
            "version = 2\n\
             root = \"{root}\"\n\
             state = \"{state}\"\n\
             {plugins}\
             [grpc]\n  address = \"{sock}\"\n\
             [ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [stream_processors]\n\
             \x20 [stream_processors.\"io.containerd.cwasi.wasm\"]\n\
             \x20   accepts = [\"application/wasm\"]\n\
             \x20   returns = \"application/vnd.oci.image.layer.v1.tar\"\n\
             \x20   path = \"{processor}\"\n",
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = socket.display(),
            processor = processor.display(),
        );
        std::fs::write(dir.join("config.toml"), config).expect("write the containerd config");
        let path = format!(
            "{}:{}",
            shim_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = crate::process::spawn_service(
            Command::new("containerd")
                .arg("--config")
                .arg(dir.join("config.toml"))
                .env("PATH", path),
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

/// The CRI plugin's section of the config (containerd 1.6/1.7, version 2).
/// `restrict_oom_score_adj` keeps a sandbox's OOM score at or above
/// containerd's own, as for rootless nodes: the CI machine, itself a
/// container, lacks `CAP_SYS_RESOURCE`, so writing the sandbox's -998 to
/// `/proc/self/oom_score_adj` fails (`EACCES`) and the pod could not start.
fn cri_config(dir: &Path) -> String {
    let cni = dir.join("cni");
    format!(
        "[plugins.\"io.containerd.grpc.v1.cri\"]\n\
         \x20 sandbox_image = \"{pause}\"\n\
         \x20 disable_apparmor = true\n\
         \x20 restrict_oom_score_adj = true\n\
         \x20 stream_server_address = \"127.0.0.1\"\n\
         \x20 stream_server_port = \"0\"\n\
         \x20 [plugins.\"io.containerd.grpc.v1.cri\".cni]\n\
         \x20   bin_dir = \"{cni}/bin\"\n\
         \x20   conf_dir = \"{cni}/conf\"\n\
         \x20 [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n\
         \x20   runtime_type = \"io.containerd.runc.v2\"\n\
         \x20 [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.cwasi]\n\
         \x20   runtime_type = \"io.containerd.cwasi.v1\"\n\
         \x20   pod_annotations = [\"cwasi.io/*\", \"cwasi.secondary.function\"]\n",
        pause = crate::cri::PAUSE_IMAGE,
        cni = cni.display(),
    )
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
