//! A real containerd for the shim's end-to-end tests, started by the test
//! itself: its own config, root, state and sockets under a private temporary
//! directory, the shim's directory first on its `PATH`, and a private ctr
//! namespace. Dropping it removes the containers it ran, stops containerd
//! and deletes the directory.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
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
    /// `containerd-shim-cwasi-v1`) first on its `PATH`. Panics with the fix
    /// if containerd is not installed.
    pub fn start(shim_dir: &Path) -> Containerd {
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
        let config = format!(
            "version = 2\n\
             root = \"{root}\"\n\
             state = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
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
        let log = std::fs::File::create(dir.join("containerd.log")).expect("containerd log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start containerd ({e}); install it with: apt-get install containerd runc"
                )
            });
        let c = Containerd {
            child: Some(child),
            dir,
            namespace: format!("cwasi-test-{tag}"),
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

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
