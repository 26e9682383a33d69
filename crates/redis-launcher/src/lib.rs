//! A private `redis-server` on a free loopback port, with its own directory,
//! killed and cleaned up on drop. `cwasi bench` needs a Redis of its own (the
//! remote mode and the `redis-storage` baseline), and so do the end-to-end
//! tests (through `test-support`); neither may depend on a server started by
//! hand.
//!
//! Multi-node tests also start one inside a network namespace
//! ([`RedisServer::start_in`]); the test process itself stays in the root
//! namespace and reaches it through a thread that joins the namespace
//! (`netns::in_netns`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod cluster;
pub use cluster::{ClusterError, RedisCluster};

/// How long a server may take to answer its first PING.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// No loopback port could be reserved.
    #[error("no free loopback port: {0}")]
    NoPort(std::io::Error),
    /// No port could be reserved inside the network namespace (usually: the
    /// namespace does not exist, or this process may not enter it).
    #[error("no free port on {bind} in network namespace {netns}: {source}")]
    NoPortIn {
        /// The namespace.
        netns: String,
        /// The address the server was to bind.
        bind: Ipv4Addr,
        /// The cause.
        source: std::io::Error,
    },
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
    /// The network namespace it runs in (`None`: this process's own).
    netns: Option<String>,
    /// The address it binds, and clients connect to.
    bind: Ipv4Addr,
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
        let dir = format!("cwasi-redis-{}-{port}", std::process::id());
        RedisServer::launch(port, &dir, extra_args, None, Ipv4Addr::LOCALHOST)
    }

    /// Starts a server inside the network namespace `netns` (a name under
    /// `/var/run/netns`, as `ip netns` makes), bound to `bind` (an address of
    /// that namespace) on a port free there, with more `redis-server`
    /// arguments, and waits until it answers. Multi-node tests need a Redis
    /// that other namespaces reach over their links.
    ///
    /// It runs as `ip netns exec NETNS redis-server --bind BIND ...` (which
    /// needs root), with protected mode off since it binds no loopback
    /// address. [`RedisServer::url`] is `redis://BIND:PORT`; [`RedisServer::ping`]
    /// and [`RedisServer::command`] connect from a thread that joins the
    /// namespace (the calling process may have no route to `bind`).
    pub fn start_in(
        netns: &str,
        bind: Ipv4Addr,
        extra_args: &[String],
    ) -> Result<RedisServer, LaunchError> {
        let port = netns::in_netns(netns, || {
            TcpListener::bind((bind, 0)).and_then(|l| l.local_addr())
        })
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|source| LaunchError::NoPortIn {
            netns: netns.to_string(),
            bind,
            source,
        })?
        .port();
        let dir = format!("cwasi-redis-{}-{netns}-{port}", std::process::id());
        RedisServer::launch(port, &dir, extra_args, Some(netns), bind)
    }

    /// Makes the server's private directory (`dir_name` under the temporary
    /// directory, emptied first), starts it and waits until it answers.
    fn launch(
        port: u16,
        dir_name: &str,
        extra_args: &[String],
        netns: Option<&str>,
        bind: Ipv4Addr,
    ) -> Result<RedisServer, LaunchError> {
        let dir = std::env::temp_dir().join(dir_name);
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
            netns: netns.map(str::to_string),
            bind,
        };
        server.restart()?;
        Ok(server)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://<address>:<port>` (`127.0.0.1` unless started with
    /// [`RedisServer::start_in`]).
    pub fn url(&self) -> String {
        format!("redis://{}:{}", self.bind, self.port)
    }

    /// The address it binds (`127.0.0.1` unless started with
    /// [`RedisServer::start_in`]).
    pub fn addr(&self) -> Ipv4Addr {
        self.bind
    }

    /// The network namespace it runs in, if started with
    /// [`RedisServer::start_in`].
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
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
        // `ip netns exec` enters the namespace and execs redis-server in the
        // same process, so the child (and its death signal) is the server.
        let mut cmd = match &self.netns {
            None => Command::new("redis-server"),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "redis-server"]);
                c
            }
        };
        let protected = if self.netns.is_some() { "no" } else { "yes" };
        cmd.args(["--port", &self.port.to_string()])
            .args([
                "--bind",
                &self.bind.to_string(),
                "--protected-mode",
                protected,
            ])
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
    /// the server cannot be reached or does not answer within 5 s). For a
    /// server in a network namespace, the connection is made from inside it.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        self.exchange(args, false)
    }

    /// Sends one command and returns its reply: a bulk string's contents
    /// (such as `CLUSTER INFO`'s), or the first line of any other reply.
    pub fn command_text(&self, args: &[&str]) -> Option<String> {
        self.exchange(args, true)
    }

    fn exchange(&self, args: &[&str], bulk: bool) -> Option<String> {
        let to = SocketAddr::new(IpAddr::V4(self.bind), self.port);
        let mut s = match &self.netns {
            None => TcpStream::connect(to).ok()?,
            Some(ns) => netns::in_netns(ns, || {
                TcpStream::connect_timeout(&to, Duration::from_secs(5))
            })
            .ok()?
            .ok()?,
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut reader = BufReader::new(s);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end().to_string();
        let len = match line.strip_prefix('$').map(str::parse::<usize>) {
            Some(Ok(len)) if bulk => len,
            _ => return Some(line),
        };
        let mut body = vec![0u8; len + 2];
        reader.read_exact(&mut body).ok()?;
        body.truncate(len);
        String::from_utf8(body).ok()
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
