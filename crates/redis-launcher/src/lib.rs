//! A private `redis-server` on a free loopback port, with its own directory,
//! killed and cleaned up on drop. `cwasi bench` needs a Redis of its own (the
//! remote mode and the `redis-storage` baseline), and so do the end-to-end
//! tests (through `test-support`); neither may depend on a server started by
//! hand.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer its first PING.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// No loopback port could be reserved.
    #[error("no free loopback port: {0}")]
    NoPort(std::io::Error),
    /// The private directory could not be created.
    #[error("cannot create the redis directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `redis-server` could not be run (usually: it is not installed).
    #[error("cannot start redis-server ({0}); install it with: apt-get install redis-server")]
    Spawn(std::io::Error),
    /// The server exited before answering.
    #[error("redis-server exited at start ({0})")]
    Exited(std::process::ExitStatus),
    /// The server did not answer PING in time.
    #[error("redis-server did not answer PING on port {port} within {timeout:?}")]
    Timeout {
        /// Its port.
        port: u16,
        /// How long it was given.
        timeout: Duration,
    },
}

/// A `redis-server` owned by this process; killed and its directory removed
/// on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    extra_args: Vec<String>,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers.
    pub fn start() -> Result<RedisServer, LaunchError> {
        RedisServer::start_with(&[])
    }

    /// The same, with more `redis-server` arguments (for example a TLS port
    /// and its certificates); the plain port stays, for the readiness check.
    pub fn start_with(extra_args: &[String]) -> Result<RedisServer, LaunchError> {
        let port = free_port().map_err(LaunchError::NoPort)?;
        let dir = std::env::temp_dir().join(format!("cwasi-redis-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|source| LaunchError::Dir {
            path: dir.clone(),
            source,
        })?;
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            extra_args: extra_args.to_vec(),
        };
        server.restart()?;
        Ok(server)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's process id while it runs, to read its CPU time and
    /// memory from `/proc`.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (after [`RedisServer::kill`]), and
    /// waits until it answers.
    pub fn restart(&mut self) -> Result<(), LaunchError> {
        self.kill();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--protected-mode", "yes"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        kill_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(LaunchError::Spawn)?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.ping() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                self.child = None;
                return Err(LaunchError::Exited(status));
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(LaunchError::Timeout {
                    port: self.port,
                    timeout: START_TIMEOUT,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Whether the server answers `PING`.
    pub fn ping(&self) -> bool {
        self.command(&["PING"]).is_some_and(|r| r == "+PONG")
    }

    /// Sends one command and returns the first line of the reply (`None` if
    /// the server cannot be reached or does not answer within 5 s).
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        Some(line.trim_end().to_string())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Makes the kernel kill the child started by `cmd` (SIGKILL) when the
/// thread that starts it exits, so that a process killed before it could
/// drop its children (Ctrl-C, SIGKILL) leaves no server behind. Start
/// children from a thread that lives as long as they should (the main
/// thread). A child whose parent died before the death signal was armed
/// does not run: it fails between fork and exec instead of running orphaned.
pub fn kill_with_parent(cmd: &mut Command) {
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes async-signal-safe system calls (prctl, getppid); its error is
    // built from an errno, without allocating.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            if rustix::process::getppid() != Some(parent) {
                return Err(rustix::io::Errno::SRCH.into());
            }
            Ok(())
        });
    }
}

/// A loopback TCP port nobody listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_restarts_and_stops() {
        let mut r = RedisServer::start().expect("start redis-server");
        assert!(r.ping());
        assert!(r.pid().is_some());
        assert_eq!(r.command(&["SET", "k", "v"]).as_deref(), Some("+OK"));
        r.kill();
        assert!(!r.ping());
        assert!(r.pid().is_none());
        r.restart().expect("restart redis-server");
        assert!(r.ping());
    }
}
