//! `cwasi run` owns the `cwasi serve` processes it starts for functions of
//! other namespaces: they die with it when it is killed outright, and they
//! are stopped cleanly, their records and sockets removed, when it gets
//! SIGTERM or SIGINT. Nothing answers for the composition once it is gone.

mod common;

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{cwasi, function, Scratch, LIMIT};
use cwasi_runtime::NodeDirectory;
use rustix::process::{kill_process, Pid, Signal};
use test_programs_artifacts as progs;

/// The functions the composition isolates, each in a `cwasi serve` child:
/// (name, namespace).
const SERVED: [(&str, &str); 2] = [("echo", "b"), ("transform", "c")];
/// How long a run may take to start its servers, and to end after a signal.
const WAIT: Duration = Duration::from_secs(60);
/// How long a server may outlive its run.
const GONE_WITHIN: Duration = Duration::from_secs(10);

/// Writes a composition whose entry (`probe`, namespace `a`) runs `step`,
/// with `spin` embedded beside it and the functions of [`SERVED`] isolated.
fn composition(scratch: &Scratch, file: &str, step: &str) -> String {
    let toml = format!(
        "entry = \"probe\"\n[limits]\ncall_timeout_ms = 60000\n{}{}{}{}",
        function(
            "probe",
            progs::PROBE,
            &format!("namespace = \"a\"\nargs = [{step:?}]")
        ),
        function("spin", progs::BUSY, "namespace = \"a\""),
        function("echo", progs::ECHO, "namespace = \"b\""),
        function("transform", progs::TRANSFORM, "namespace = \"c\""),
    );
    scratch.write(file, &toml)
}

/// A process's state letter from `/proc/<pid>/stat`, and its parent's pid;
/// `None` once it is reaped.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: the fields that
    // matter follow its last ')'.
    let mut fields = text.get(text.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is a process that still runs (a zombie does not).
fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X' | 'x'))
}

/// The live children of `parent`, found by scanning `/proc`.
fn children_of(parent: u32) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .expect("cannot read /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&pid| stat(pid).is_some_and(|(_, ppid)| ppid == parent) && alive(pid))
        .collect();
    pids.sort_unstable();
    pids
}

/// The records and sockets in a node directory, read directly: a lookup
/// would remove stale ones and hide what a server left behind.
fn endpoint_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json" || x == "sock"))
                .collect()
        })
        .unwrap_or_default()
}

/// A `cwasi run` of the long composition and the servers it started; all
/// are killed on drop, whatever the test did.
struct Run {
    child: Child,
    servers: Vec<u32>,
    log: PathBuf,
}

impl Run {
    /// Starts the run and waits until every function of [`SERVED`] is
    /// registered by a child of it. Its entry spins for a minute, so it is
    /// still running when the test signals it.
    fn start(scratch: &Scratch, dir: &Path) -> Run {
        let file = composition(scratch, "long.toml", "send:spin:60000");
        let log = scratch.0.join("run.log");
        let child = Command::new(env!("CARGO_BIN_EXE_cwasi"))
            .args(["run", &file, "--quiet", "--runtime-dir"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("cannot start cwasi run");
        let mut run = Run {
            child,
            servers: Vec::new(),
            log,
        };
        let nd = NodeDirectory::open(dir).unwrap();
        let deadline = Instant::now() + WAIT;
        let mut records = Vec::new();
        for (name, ns) in SERVED {
            let record = loop {
                if let Some(r) = nd.lookup(name, ns) {
                    break r;
                }
                if let Some(status) = run.child.try_wait().unwrap() {
                    panic!("cwasi run exited ({status}): {}", run.stderr());
                }
                assert!(Instant::now() < deadline, "{name}@{ns} did not register");
                std::thread::sleep(Duration::from_millis(10));
            };
            records.push(record.pid);
        }
        records.sort_unstable();
        run.servers = children_of(run.child.id());
        assert_eq!(
            run.servers, records,
            "the servers are not the run's children"
        );
        // They answer while the run lives.
        assert_eq!(call_echo(dir).stdout, "hi");
        run
    }

    /// What the run wrote to stderr.
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` to the run (only to it, not to its servers) and waits
    /// for it to end.
    fn signal(&mut self, signal: Signal) -> ExitStatus {
        let pid = Pid::from_raw(self.child.id() as i32).unwrap();
        kill_process(pid, signal).unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "cwasi run did not end within {WAIT:?} of {signal:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Fails unless every server has ended within [`GONE_WITHIN`].
    fn assert_servers_gone(&self) {
        let deadline = Instant::now() + GONE_WITHIN;
        loop {
            let left: Vec<u32> = self.servers.iter().copied().filter(|&p| alive(p)).collect();
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "servers {left:?} outlived their run by {GONE_WITHIN:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        for &pid in &self.servers {
            if let Some(p) = Pid::from_raw(pid as i32).filter(|_| alive(pid)) {
                let _ = kill_process(p, Signal::KILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `cwasi call echo` from namespace `a`, through the node directory.
fn call_echo(dir: &Path) -> common::Output {
    cwasi(
        &[
            "call",
            "echo",
            "--data",
            "hi",
            "--namespace",
            "a",
            "--runtime-dir",
            dir.to_str().unwrap(),
        ],
        LIMIT,
    )
}

/// After the run has ended, nobody answers for its functions: a call fails
/// with a clear error instead of reaching an orphan.
fn assert_nobody_answers(dir: &Path) {
    let out = call_echo(dir);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(1), ""),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("UNKNOWN_FUNCTION (-1): function 'echo' not found"),
        "{}",
        out.stderr
    );
}

/// SIGTERM or SIGINT: the run stops its servers, which remove their records
/// and sockets, and then ends of the signal.
fn stops_its_servers_cleanly_on(signal: Signal, tag: &str) {
    let scratch = Scratch::new(tag);
    let dir = scratch.0.join("node");
    let mut run = Run::start(&scratch, &dir);
    let status = run.signal(signal);
    assert_eq!(
        status.signal(),
        Some(signal.as_raw()),
        "{status}: {}",
        run.stderr()
    );
    run.assert_servers_gone();
    let left = endpoint_files(&dir);
    assert!(left.is_empty(), "records or sockets left behind: {left:?}");
    assert_nobody_answers(&dir);
}

#[test]
fn sigterm_of_the_run_stops_its_servers_cleanly() {
    stops_its_servers_cleanly_on(Signal::TERM, "run-sigterm");
}

#[test]
fn sigint_of_the_run_stops_its_servers_cleanly() {
    stops_its_servers_cleanly_on(Signal::INT, "run-sigint");
}

#[test]
fn sigkill_of_the_run_kills_its_servers_and_leaves_nothing_that_answers() {
    let scratch = Scratch::new("run-sigkill");
    let dir = scratch.0.join("node");
    let mut run = Run::start(&scratch, &dir);
    let status = run.signal(Signal::KILL);
    assert_eq!(status.signal(), Some(Signal::KILL.as_raw()), "{status}");
    run.assert_servers_gone();
    assert_nobody_answers(&dir);
    // Whatever the killed servers left in the node directory does not get
    // in the way of the next run, which serves the same functions again and
    // calls one of them.
    let file = composition(&scratch, "short.toml", "send:echo:hello");
    let out = cwasi(
        &[
            "run",
            &file,
            "--quiet",
            "--runtime-dir",
            dir.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("step=0 ok len=5"), "{}", out.stdout);
    let left = endpoint_files(&dir);
    assert!(left.is_empty(), "records or sockets left behind: {left:?}");
}

#[test]
fn a_compositions_call_depth_limit_reaches_its_served_children() {
    // The entry calls `a` (namespace n1), which forwards to `b` (n2), which
    // forwards to `a` again: every hop crosses processes, each a `cwasi
    // serve` child of the run, so only the limit the children were given
    // stops the cycle at the composition's depth.
    let scratch = Scratch::new("depth-children");
    let dir = scratch.0.join("node");
    let toml = format!(
        "entry = \"producer\"\n[limits]\nmax_call_depth = 4\n{}{}{}",
        function(
            "producer",
            progs::PRODUCER,
            "namespace = \"e\"\nargs = [\"8\", \"a\", \"echo\"]"
        ),
        function(
            "a",
            progs::TRANSFORM,
            "namespace = \"n1\"\nenv = { CWASI_NEXT = \"b\" }"
        ),
        function(
            "b",
            progs::TRANSFORM,
            "namespace = \"n2\"\nenv = { CWASI_NEXT = \"a\" }"
        ),
    );
    let file = scratch.write("cycle.toml", &toml);
    let out = cwasi(
        &["run", &file, "--runtime-dir", dir.to_str().unwrap()],
        LIMIT,
    );
    assert_eq!(out.code, Some(2), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("call depth 5 is over the limit of 4"),
        "{}",
        out.stdout
    );
}
