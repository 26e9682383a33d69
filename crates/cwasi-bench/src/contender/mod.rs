//! The contenders: the modes of CWASI, the two ways platforms pass data
//! today, and the two floors (memcpy in memory, one raw TCP connection on
//! the network). Each moves a payload from A to B (`send`) or from B to A
//! (`fetch`); the worker index picks one of up to [`MAX_FAN`] independent
//! Bs, so fan-out and fan-in run the same code concurrently. Where B runs
//! (this network namespace, or another one) is a [`Placement`].

mod http;
mod memcpy;
mod modes;
mod placement;
pub(crate) mod pool;
mod redis_storage;
mod tcp;
mod tls;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::BenchError;

pub use modes::Guests;
pub use placement::{Net, Placement};
pub use pool::Pool;

/// The largest fan-out degree; every contender prepares this many Bs.
pub const MAX_FAN: usize = 16;

/// How long one operation may take before it counts as failed.
pub const OP_TIMEOUT: Duration = Duration::from_secs(60);

/// What is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// CWASI embedded mode: B is instantiated in A's process.
    Embedded,
    /// CWASI local mode: B is a `cwasi serve` process on this node.
    Local,
    /// CWASI remote mode, direct path: B is a `cwasi serve --listen`
    /// process of another node, reached over one TCP connection per caller
    /// worker (plain TCP, `CWASI_DIRECT_PLAIN=1`: the bench's link is
    /// private).
    RemoteDirect,
    /// The same with mutual TLS (certificates made with the `openssl`
    /// command for the run), to show what TLS costs.
    RemoteDirectTls,
    /// CWASI remote mode through the broker: B is a `cwasi serve` process of
    /// another node (no `--listen`), reached through Redis streams.
    RemoteBroker,
    /// Baseline: A SETs the payload in Redis, B is notified and GETs it.
    RedisStorage,
    /// Baseline: A POSTs the payload to B over HTTP/1.1.
    Http,
    /// The network floor: the payload over one raw, kept-open TCP connection
    /// (`TCP_NODELAY`), B answering one byte.
    Tcp,
    /// The physical limit: copying the bytes in memory.
    Memcpy,
}

impl Kind {
    /// Every contender, in report order.
    pub const ALL: [Kind; 9] = [
        Kind::Embedded,
        Kind::Local,
        Kind::RemoteDirect,
        Kind::RemoteDirectTls,
        Kind::RemoteBroker,
        Kind::RedisStorage,
        Kind::Http,
        Kind::Tcp,
        Kind::Memcpy,
    ];

    /// The name on the command line and in the reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Embedded => "embedded",
            Kind::Local => "local",
            Kind::RemoteDirect => "remote-direct",
            Kind::RemoteDirectTls => "remote-direct-tls",
            Kind::RemoteBroker => "remote-broker",
            Kind::RedisStorage => "redis-storage",
            Kind::Http => "http",
            Kind::Tcp => "tcp",
            Kind::Memcpy => "memcpy",
        }
    }

    /// Whether it is a mode of CWASI (as opposed to a baseline or a floor).
    pub fn is_mode(self) -> bool {
        matches!(
            self,
            Kind::Embedded
                | Kind::Local
                | Kind::RemoteDirect
                | Kind::RemoteDirectTls
                | Kind::RemoteBroker
        )
    }

    /// Whether it is a mode that reaches another node.
    pub fn is_remote(self) -> bool {
        matches!(
            self,
            Kind::RemoteDirect | Kind::RemoteDirectTls | Kind::RemoteBroker
        )
    }

    /// Whether it is one of the two baselines (today's ways).
    pub fn is_baseline(self) -> bool {
        matches!(self, Kind::RedisStorage | Kind::Http)
    }

    /// Whether it needs a Redis server (the broker's registry, or the data
    /// itself).
    pub fn needs_redis(self) -> bool {
        self.is_remote() || self == Kind::RedisStorage
    }

    /// Whether its data crosses the network, so that `--netns` puts its B
    /// in another network namespace.
    pub fn is_network(self) -> bool {
        self.is_remote() || matches!(self, Kind::RedisStorage | Kind::Http | Kind::Tcp)
    }

    /// Parses a name of [`Kind::name`]; `remote` is accepted as the old name
    /// of `remote-broker`.
    pub fn parse(text: &str) -> Result<Kind, BenchError> {
        let t = text.trim();
        if t == "remote" {
            return Ok(Kind::RemoteBroker);
        }
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == t)
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                BenchError::BadInput(format!(
                    "unknown mode or baseline '{t}' (expected: {}; remote = remote-broker)",
                    names.join(", ")
                ))
            })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who besides the benchmark process takes part, for CPU and memory.
#[derive(Debug, Clone, Default)]
pub struct Parties {
    /// Processes that play B (`cwasi serve`).
    pub b_processes: Vec<u32>,
    /// Threads of this process that play B (the baselines' receivers).
    pub b_threads: Vec<u32>,
    /// The Redis server, if it carries the data.
    pub redis: Option<u32>,
}

/// One way of moving bytes between A and B.
pub trait Contender: Send + Sync {
    /// Which one it is.
    fn kind(&self) -> Kind;

    /// Prepares buffers for payloads of `size` bytes (untimed).
    fn prepare(&self, size: usize) -> Result<(), BenchError>;

    /// A hands `payload` to B number `worker` and returns once B holds it in
    /// its own memory.
    fn send(&self, worker: usize, payload: &Arc<[u8]>) -> Result<(), BenchError>;

    /// A asks B number `worker` for `size` bytes and returns once A holds
    /// them.
    fn fetch(&self, worker: usize, size: usize) -> Result<(), BenchError>;

    /// The processes and threads besides A.
    fn parties(&self) -> Parties;

    /// Checks, after a measurement, that the calls took the path the
    /// contender is named after (for remote-direct: none fell back to the
    /// broker).
    fn verify(&self) -> Result<(), BenchError> {
        Ok(())
    }
}

/// What the contenders need from the run.
pub struct Setup<'a> {
    /// The `cwasi` binary that serves B in local and remote mode.
    pub cwasi_exe: &'a std::path::Path,
    /// A private directory for node directories, removed by the caller.
    pub scratch: &'a std::path::Path,
    /// The Redis of this run, if any contender needs one.
    pub redis: Option<&'a redis_launcher::RedisServer>,
    /// The Bs' modules.
    pub guests: &'a modes::Guests,
    /// Where the Bs of network contenders run.
    pub placement: &'a Placement,
}

/// Starts contender `kind`.
pub fn start(kind: Kind, setup: &Setup<'_>) -> Result<Arc<dyn Contender>, BenchError> {
    let redis = || {
        setup
            .redis
            .ok_or_else(|| BenchError::setup(kind.name(), "no Redis was started"))
    };
    let place = setup.placement;
    Ok(match kind {
        Kind::Embedded => Arc::new(modes::Modes::embedded(setup.guests)?),
        Kind::Local => Arc::new(modes::Modes::local(
            setup.cwasi_exe,
            setup.scratch,
            setup.guests,
        )?),
        Kind::RemoteDirect | Kind::RemoteDirectTls | Kind::RemoteBroker => {
            Arc::new(modes::Modes::remote(kind, setup, redis()?)?)
        }
        Kind::RedisStorage => Arc::new(redis_storage::RedisStorage::start(redis()?, place)?),
        Kind::Http => Arc::new(http::Http::start(place)?),
        Kind::Tcp => Arc::new(tcp::Tcp::start(place)?),
        Kind::Memcpy => Arc::new(memcpy::Memcpy::new()),
    })
}

/// Locks a mutex even if a panicking thread poisoned it (the state is plain
/// buffers and connections, still usable or replaced on the next call).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
