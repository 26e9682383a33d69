//! Helpers shared by the end-to-end tests of the `cwasi` binary.

#![allow(dead_code)]

pub mod guests;

use std::path::Path;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use cwasi_runtime::broker::{Broker, BrokerConfig};
use cwasi_runtime::wire::Kind;
use cwasi_runtime::{NodeDirectory, Runtime};
use std::time::{Duration, Instant};

/// Waits until a caller on another node finds `name` in the cluster
/// registry (the server announces it on its first heartbeat).
pub fn wait_announced(url: &str, name: &str, ns: &str) {
    let broker = Broker::new(BrokerConfig::new(url, "node-watcher")).unwrap();
    let caller = Runtime::builder().broker(broker).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while caller.explain(ns, name).is_err() {
        assert!(Instant::now() < deadline, "{name} was never announced");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a finished `cwasi` printed.
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cwasi` and kills it if it outlives `limit`, so no test can hang.
pub fn cwasi(args: &[&str], limit: Duration) -> Output {
    run_with_timeout(Command::new(env!("CARGO_BIN_EXE_cwasi")).args(args), limit)
}

/// Runs a command and kills it if it outlives `limit` (then the test fails).
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Output {
    let args = format!("{cmd:?}");
    let out = test_support::process::run_within(cmd, limit)
        .unwrap_or_else(|e| panic!("cannot start {args}: {e}"))
        .unwrap_or_else(|| panic!("{args} did not finish within {limit:?}"));
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub const LIMIT: Duration = Duration::from_secs(120);

/// A private scratch directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("cwasi-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn write(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One `[functions.NAME]` table of a composition.
pub fn function(name: &str, module: &str, extra: &str) -> String {
    format!("[functions.{name}]\nmodule = {module:?}\n{extra}\n")
}

/// Checks a run of the `producer` test program: exit 0, its `ok` line for
/// `size` bytes, and `edge` (for example `"producer -> echo: remote"`) in the
/// `--explain` output.
/// `cwasi run` of a `producer` entry on node1 (node directory `dir`) that
/// sends `size` bytes to `echo` of namespace `b`, served on another node
/// and reached through the broker at `url`.
pub fn produce_through_broker(scratch: &Scratch, dir: &Path, url: &str, size: usize) -> Output {
    let toml = format!(
        "entry = \"producer\"\n[limits]\ncall_timeout_ms = 60000\n{}",
        function(
            "producer",
            test_programs_artifacts::PRODUCER,
            &format!("namespace = \"a\"\nargs = [\"{size}\", \"echo\", \"echo\"]")
        ),
    );
    let file = scratch.write("through-broker.toml", &toml);
    run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_cwasi"))
            .args(["run", &file, "--explain", "--runtime-dir"])
            .arg(dir)
            .env("CWASI_REDIS_URL", url)
            .env("CWASI_NODE", "node1"),
        LIMIT,
    )
}

pub fn assert_producer_ok(out: &Output, size: usize, edge: &str) {
    assert_eq!(
        out.code,
        Some(0),
        "size {size}: {}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout.contains(&format!("ok size={size} checksum=")),
        "size {size}: {}",
        out.stdout
    );
    assert!(out.stderr.contains(edge), "size {size}: {}", out.stderr);
}

/// A `cwasi serve` process, registered in its node directory before `start`
/// returns; killed when dropped.
pub struct Server(Child);

impl Server {
    /// Serves `module` as `name` of namespace `ns` in node directory `dir`,
    /// with extra arguments and environment.
    pub fn start(
        dir: &Path,
        module: &str,
        name: &str,
        ns: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cwasi"));
        cmd.args(["serve", module, "--name", name, "--namespace", ns])
            .arg("--runtime-dir")
            .arg(dir)
            .args(extra)
            .envs(env.iter().copied());
        Server::from_command(cmd, dir, name, ns)
    }

    /// Runs `cmd` (a `cwasi serve` of `name` in namespace `ns` with node
    /// directory `dir`, perhaps under `ip netns exec`) and waits until it
    /// has registered.
    pub fn from_command(cmd: Command, dir: &Path, name: &str, ns: &str) -> Server {
        Server::logging_to(cmd, dir, name, ns, Stdio::null())
    }

    /// [`Server::from_command`], with the server's stderr (its log) going
    /// to `log`.
    pub fn logging_to(
        mut cmd: Command,
        dir: &Path,
        name: &str,
        ns: &str,
        log: impl Into<Stdio>,
    ) -> Server {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start cwasi serve");
        let mut server = Server(child);
        let nd = NodeDirectory::open(dir).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while nd.lookup(name, ns).is_none() {
            if let Ok(Some(status)) = server.0.try_wait() {
                panic!("cwasi serve of {name} exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "{name} did not register");
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }

    /// Kills it as a crash would.
    pub fn sigkill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    /// Sends it SIGTERM and waits up to `limit` for it to exit; `None` if
    /// it is still running then (it is killed when dropped).
    pub fn terminate_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let pid = rustix::process::Pid::from_child(&self.0);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Opens a local connection the proper way, by hand: sends the attach-shm
/// frame with a new sealed memfd of the call slot's control block and
/// `data` bytes more, and returns the memfd (a test may map it and play a
/// hostile peer).
pub fn attach_region(
    s: &std::os::unix::net::UnixStream,
    data: u64,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use cwasi_runtime::wire::slot::CONTROL_LEN;
    use cwasi_runtime::wire::{Header, Kind, HEADER_LEN};
    use rustix::fs::{fcntl_add_seals, ftruncate, memfd_create, MemfdFlags, SealFlags};
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::os::fd::AsFd;
    let fd = memfd_create("t", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    ftruncate(&fd, CONTROL_LEN as u64 + data)?;
    fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::SEAL)?;
    let head = Header::new(Kind::AttachShm, 0).encode();
    let fds = [fd.as_fd()];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
    let n = sendmsg(
        s,
        &[std::io::IoSlice::new(&head)],
        &mut control,
        SendFlags::empty(),
    )?;
    assert_eq!(n, HEADER_LEN);
    Ok(fd)
}

/// One frame the server sent on a raw connection.
pub struct Frame {
    /// Its kind.
    pub kind: Kind,
    /// Its status (an ABI code in error frames).
    pub status: i32,
    /// Its payload, as text.
    pub message: String,
}

/// Reads what the server sends on a raw connection until it closes it.
pub fn frames(mut s: std::os::unix::net::UnixStream) -> Vec<Frame> {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = Vec::new();
    loop {
        let mut head = [0u8; cwasi_runtime::wire::HEADER_LEN];
        match s.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return out,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("the server neither answered nor closed: {e}"),
        }
        let h = cwasi_runtime::wire::Header::decode(&head, 1 << 30)
            .expect("the server sent a bad frame");
        let mut body = vec![0u8; h.payload_len as usize];
        s.read_exact(&mut body).unwrap();
        out.push(Frame {
            kind: h.kind,
            status: h.status,
            message: String::from_utf8_lossy(&body).into_owned(),
        });
    }
}

/// The kinds of the frames the server sends before closing.
pub fn answers(s: std::os::unix::net::UnixStream) -> Vec<Kind> {
    frames(s).into_iter().map(|f| f.kind).collect()
}

/// The one error frame the server sends before closing, as (code, message).
pub fn refusal(s: std::os::unix::net::UnixStream) -> (i32, String) {
    let got = frames(s);
    assert_eq!(
        got.len(),
        1,
        "expected one error frame, got {} frames",
        got.len()
    );
    assert_eq!(got[0].kind, Kind::Error);
    (got[0].status, got[0].message.clone())
}

/// Sets its flag when dropped: a test that stops a caller thread with a
/// flag holds one, so that a failed assertion also stops the caller (a
/// thread scope would otherwise wait for it forever).
pub struct StopOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Prints `rt`'s calls of `target` per path (mode), as the hop table counts
/// them: what a test of a moving callee shows of where its calls went.
pub fn print_paths(rt: &Runtime, target: &str) {
    for h in rt.hops().iter().filter(|h| h.target == target) {
        println!(
            "path {}{}: {} calls, {} failed {:?}; switches {}, rerouted {}, spilled {}",
            h.mode,
            if h.current { " (current)" } else { "" },
            h.calls,
            h.failures,
            h.failures_by_code,
            h.switches,
            h.rerouted,
            h.spilled
        );
    }
}
