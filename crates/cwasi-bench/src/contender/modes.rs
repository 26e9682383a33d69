//! The modes of CWASI, called from the host as the CLI and the tests do
//! (`Runtime::call_into` from namespace `bench-a`). B is `discard` for
//! `send` (it takes the payload into its linear memory and answers nothing)
//! and `emit` for `fetch` (it answers with the number of bytes asked for).
//!
//! - embedded: both are loaded in this process, in the caller's namespace;
//! - local: each is a `cwasi serve` process in namespace `bench-b`, sharing
//!   a private node directory with the caller;
//! - remote-*: each is a `cwasi serve` process of node `bench-remote` with
//!   its own node directory, announced through the run's Redis; the caller
//!   is node `bench-caller`. For remote-direct the servers also listen on
//!   B's address (`--listen IP:0`, plain TCP with `CWASI_DIRECT_PLAIN=1`, or
//!   mutual TLS for remote-direct-tls) and the caller connects to them
//!   directly; for remote-broker they do not, and the caller has no direct
//!   configuration, so every call goes through Redis streams. With
//!   `--netns` the servers run in node B (see `placement`).

use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cwasi_runtime::broker::{Broker, BrokerConfig};
use cwasi_runtime::{DirectConfig, FunctionSpec, Mode, NodeDirectory, Runtime};
use redis_launcher::RedisServer;
use rustix::process::{kill_process, Pid, Signal};

use super::{lock, tls, Contender, Kind, Parties, Placement, Setup, MAX_FAN};
use crate::BenchError;

/// The caller's namespace.
const CALLER_NS: &str = "bench-a";
/// The namespace of the served Bs.
const SERVED_NS: &str = "bench-b";
/// B of `send`.
const DISCARD: &str = "discard";
/// B of `fetch`.
const EMIT: &str = "emit";
/// How long a `cwasi serve` may take to be reachable.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a `cwasi serve` may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// The node of the remote servers (and the name in their certificate).
const SERVER_NODE: &str = "bench-remote";
/// The node of the remote caller.
const CALLER_NODE: &str = "bench-caller";
/// Settings of `cwasi serve` and of the caller that the user's environment
/// must not change: each contender sets what it needs.
const CLEARED_ENV: [&str; 11] = [
    "CWASI_REDIS_URL",
    "CWASI_NODE",
    "CWASI_LISTEN",
    "CWASI_DIRECT_PLAIN",
    "CWASI_TLS_CA",
    "CWASI_TLS_CERT",
    "CWASI_TLS_KEY",
    "CWASI_REDIS_CA_FILE",
    "CWASI_REDIS_CLIENT_CERT",
    "CWASI_REDIS_CLIENT_KEY",
    "CWASI_RUNTIME_DIR",
];

/// The Bs' modules, written into the run's scratch directory from the bytes
/// compiled into this binary, so that an installed `cwasi bench` needs no
/// build tree.
pub struct Guests {
    discard: PathBuf,
    emit: PathBuf,
}

impl Guests {
    /// Writes `discard.wasm` and `emit.wasm` into `scratch`.
    pub fn write(scratch: &Path) -> Result<Guests, BenchError> {
        let write = |name: &str, bytes: &[u8]| {
            let path = scratch.join(format!("{name}.wasm"));
            std::fs::write(&path, bytes).map_err(|e| BenchError::output(&path, e))?;
            Ok::<_, BenchError>(path)
        };
        Ok(Guests {
            discard: write(DISCARD, test_programs_artifacts::wasm_bytes!(DISCARD))?,
            emit: write(EMIT, test_programs_artifacts::wasm_bytes!(EMIT))?,
        })
    }
}

/// A `cwasi serve` child; stopped (SIGTERM, then SIGKILL) on drop.
struct Server {
    child: Child,
}

/// How a remote server is started: its Redis, its data address and its
/// direct data plane settings.
struct RemoteServe<'a> {
    redis_url: String,
    listen: Option<SocketAddr>,
    env: Vec<(&'static str, PathBuf)>,
    placement: &'a Placement,
}

impl Server {
    /// `cwasi serve MODULE` as `name`, local only (`remote: None`) or as a
    /// server of node `bench-remote`.
    fn spawn(
        exe: &Path,
        module: &Path,
        name: &str,
        runtime_dir: &Path,
        remote: Option<&RemoteServe<'_>>,
    ) -> Result<Server, BenchError> {
        let mut cmd = match remote {
            Some(r) => r.placement.command(exe),
            None => Command::new(exe),
        };
        cmd.arg("serve")
            .arg(module)
            .args(["--name", name, "--namespace", SERVED_NS])
            .arg("--runtime-dir")
            .arg(runtime_dir)
            .args(["--max-concurrent", &MAX_FAN.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for k in CLEARED_ENV {
            cmd.env_remove(k);
        }
        redis_launcher::kill_with_parent(&mut cmd);
        if let Some(r) = remote {
            cmd.env("CWASI_REDIS_URL", &r.redis_url)
                .env("CWASI_NODE", SERVER_NODE);
            if let Some(addr) = r.listen {
                cmd.arg("--listen").arg(addr.to_string());
            }
            for (k, v) in &r.env {
                cmd.env(k, v);
            }
        }
        let child = cmd.spawn().map_err(|e| {
            BenchError::setup(
                "cwasi serve",
                format!("cannot run {} serve: {e}", exe.display()),
            )
        })?;
        Ok(Server { child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the server has exited.
    fn check_alive(&mut self, name: &str) -> Result<(), BenchError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(BenchError::setup(
                "cwasi serve",
                format!("the server of '{name}' exited ({status})"),
            )),
            Err(e) => Err(BenchError::setup("cwasi serve", e)),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM lets it remove its socket and record; SIGKILL if it hangs.
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            let _ = kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One of the three modes: a caller runtime, the servers of B (none when
/// embedded) and a response buffer per worker.
pub struct Modes {
    kind: Kind,
    // Declared before the servers: callers close their connections first.
    runtime: Runtime,
    responses: Vec<Mutex<Vec<u8>>>,
    servers: Vec<Server>,
    redis_pid: Option<u32>,
}

fn spec(name: &str, module: &Path) -> FunctionSpec {
    FunctionSpec::new(name, CALLER_NS, module.to_path_buf())
}

impl Modes {
    fn new(
        kind: Kind,
        runtime: Runtime,
        servers: Vec<Server>,
        redis_pid: Option<u32>,
    ) -> Result<Modes, BenchError> {
        let mut m = Modes {
            kind,
            runtime,
            responses: (0..MAX_FAN).map(|_| Mutex::new(Vec::new())).collect(),
            servers,
            redis_pid,
        };
        m.wait_for_mode()?;
        Ok(m)
    }

    /// Embedded: `discard` and `emit` loaded in the caller's namespace.
    pub fn embedded(guests: &Guests) -> Result<Modes, BenchError> {
        let runtime = Runtime::builder()
            .function(spec(DISCARD, &guests.discard))
            .function(spec(EMIT, &guests.emit))
            .build()
            .map_err(|e| BenchError::setup("embedded", e))?;
        Modes::new(Kind::Embedded, runtime, Vec::new(), None)
    }

    /// Local: the Bs served by `cwasi serve` processes on this node.
    pub fn local(exe: &Path, scratch: &Path, guests: &Guests) -> Result<Modes, BenchError> {
        let dir = NodeDirectory::open(&scratch.join("local"))
            .map_err(|e| BenchError::setup("local", e))?;
        let servers = vec![
            Server::spawn(exe, &guests.discard, DISCARD, dir.root(), None)?,
            Server::spawn(exe, &guests.emit, EMIT, dir.root(), None)?,
        ];
        let runtime = Runtime::builder()
            .node_directory(dir)
            .build()
            .map_err(|e| BenchError::setup("local", e))?;
        Modes::new(Kind::Local, runtime, servers, None)
    }

    /// Remote (`kind` is one of the remote modes): the Bs served by `cwasi
    /// serve` processes of another node, announced through `redis`, and
    /// reached directly (remote-direct, remote-direct-tls) or through the
    /// broker (remote-broker).
    pub fn remote(kind: Kind, setup: &Setup<'_>, redis: &RedisServer) -> Result<Modes, BenchError> {
        let who = kind.name();
        let dir = |side: &str| {
            NodeDirectory::open(&setup.scratch.join(format!("{who}-{side}")))
                .map_err(|e| BenchError::setup(who, e))
        };
        let (server_dir, caller_dir) = (dir("server")?, dir("caller")?);
        let listen = Some(SocketAddr::V4(SocketAddrV4::new(setup.placement.b_ip(), 0)));
        let (listen, env, direct) = match kind {
            Kind::RemoteDirect => (
                listen,
                vec![("CWASI_DIRECT_PLAIN", PathBuf::from("1"))],
                DirectConfig {
                    tls: None,
                    allow_plain: true,
                },
            ),
            Kind::RemoteDirectTls => {
                let files =
                    tls::node_files(&setup.scratch.join("tls"), &[SERVER_NODE, CALLER_NODE])?;
                let (server, caller) = match files.as_slice() {
                    [s, c] => (s.clone(), c.clone()),
                    _ => return Err(BenchError::setup(who, "certificates are missing")),
                };
                (
                    listen,
                    tls::env(&server).to_vec(),
                    DirectConfig {
                        tls: Some(caller),
                        allow_plain: false,
                    },
                )
            }
            _ => (None, Vec::new(), DirectConfig::default()),
        };
        let serve = RemoteServe {
            redis_url: redis.url(),
            listen,
            env,
            placement: setup.placement,
        };
        let g = setup.guests;
        let servers = vec![
            Server::spawn(
                setup.cwasi_exe,
                &g.discard,
                DISCARD,
                server_dir.root(),
                Some(&serve),
            )?,
            Server::spawn(
                setup.cwasi_exe,
                &g.emit,
                EMIT,
                server_dir.root(),
                Some(&serve),
            )?,
        ];
        let broker = Broker::new(BrokerConfig::new(redis.url(), CALLER_NODE))
            .map_err(|e| BenchError::setup(who, e))?;
        let runtime = Runtime::builder()
            .node_directory(caller_dir)
            .broker(broker)
            .direct(direct)
            .build()
            .map_err(|e| BenchError::setup(who, e))?;
        Modes::new(kind, runtime, servers, redis.pid())
    }

    /// The mode each B is reached in, as the selector decides it.
    fn mode_of(&self, target: &str) -> Option<Mode> {
        self.runtime.explain(CALLER_NS, target).ok().map(|s| s.mode)
    }

    /// Waits until the selector routes both Bs through this mode (servers
    /// have registered), or fails after [`START_TIMEOUT`].
    fn wait_for_mode(&mut self) -> Result<(), BenchError> {
        let want = match self.kind {
            Kind::Embedded => Mode::Embedded,
            Kind::Local => Mode::Local,
            Kind::RemoteDirect | Kind::RemoteDirectTls => Mode::RemoteDirect,
            Kind::RemoteBroker => Mode::RemoteBroker,
            other => return Err(BenchError::setup(other.name(), "not a mode of CWASI")),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if [DISCARD, EMIT]
                .iter()
                .all(|t| self.mode_of(t) == Some(want))
            {
                return Ok(());
            }
            for (s, name) in self.servers.iter_mut().zip([DISCARD, EMIT]) {
                s.check_alive(name)?;
            }
            if Instant::now() > deadline {
                let got = self
                    .runtime
                    .explain(CALLER_NS, DISCARD)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string());
                return Err(BenchError::setup(
                    self.kind.name(),
                    format!("not routed in {want} mode within {START_TIMEOUT:?}: {got}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Contender for Modes {
    fn kind(&self) -> Kind {
        self.kind
    }

    fn prepare(&self, _size: usize) -> Result<(), BenchError> {
        Ok(())
    }

    fn send(&self, worker: usize, payload: &Arc<[u8]>) -> Result<(), BenchError> {
        let mut resp = lock(&self.responses[worker]);
        self.runtime
            .call_into(CALLER_NS, DISCARD, payload, &mut resp)
            .map_err(|e| BenchError::op(self.kind.name(), e))
    }

    fn fetch(&self, worker: usize, size: usize) -> Result<(), BenchError> {
        let mut resp = lock(&self.responses[worker]);
        self.runtime
            .call_into(CALLER_NS, EMIT, &(size as u64).to_le_bytes(), &mut resp)
            .map_err(|e| BenchError::op(self.kind.name(), e))?;
        if resp.len() != size {
            return Err(BenchError::op(
                self.kind.name(),
                format!("emit answered {} bytes instead of {size}", resp.len()),
            ));
        }
        Ok(())
    }

    fn parties(&self) -> Parties {
        Parties {
            b_processes: self.servers.iter().map(Server::pid).collect(),
            b_threads: Vec::new(),
            redis: self.redis_pid,
        }
    }

    fn verify(&self) -> Result<(), BenchError> {
        for h in self.runtime.hops() {
            let want = match self.kind {
                Kind::RemoteDirect | Kind::RemoteDirectTls => Mode::RemoteDirect,
                Kind::RemoteBroker => Mode::RemoteBroker,
                _ => return Ok(()),
            };
            if h.mode != want || h.paths.via_broker > 0 || h.failures > 0 {
                return Err(BenchError::op(
                    self.kind.name(),
                    format!(
                        "calls to {} went {} ({} of {} through the broker, {} retried, {} failed), not only {want}",
                        h.target, h.mode, h.paths.via_broker, h.calls, h.paths.retried, h.failures
                    ),
                ));
            }
        }
        Ok(())
    }
}
