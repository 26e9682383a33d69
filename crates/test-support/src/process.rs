//! Running a child process with a deadline, its pipes drained on threads so
//! that a chatty child never blocks: every test that runs a binary needs
//! this, and no test may hang.

use std::io::Read;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` (stdin closed, stdout and stderr captured) to completion.
/// `Err` if it cannot be started; `Ok(None)` if it outlived `timeout`, in
/// which case it was killed.
pub fn run_within(cmd: &mut Command, timeout: Duration) -> std::io::Result<Option<Output>> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let out_thread = drain(child.stdout.take());
    let err_thread = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = out_thread.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();
    Ok(status.map(|status| Output {
        status,
        stdout,
        stderr,
    }))
}

/// [`run_within`], with a start failure folded into `None`.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> Option<Output> {
    run_within(cmd, timeout).ok().flatten()
}

/// Reads a pipe to its end on a thread, so that a full pipe never blocks
/// the child.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// Starts a service a test owns: stdin closed, stdout and stderr appended to
/// `log`, in a process group of its own (so a Ctrl-C of the test run does
/// not reach it before the test's drop stops it). Panics with `install`, the
/// fix, if the program cannot be started.
pub fn spawn_service(cmd: &mut Command, log: &Path, install: &str) -> Child {
    let file = std::fs::File::create(log)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().expect("the log file"))
        .stderr(file)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program} ({e}); install it with: {install}"))
}
