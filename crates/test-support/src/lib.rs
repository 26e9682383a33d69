//! Services the end-to-end tests start and stop themselves, so that no test
//! depends on anything started by hand: a real `redis-server` on a free
//! loopback port with a private directory (from `redis-launcher`, which
//! `cwasi bench` uses too). In a test, failing to start is a test failure,
//! so these wrappers panic with the launcher's message instead of returning
//! it. [`containerd`] runs a private containerd for the shim's tests, and
//! [`cri`] drives its CRI plugin as a kubelet does;
//! [`tls`] makes a private CA and certificates for a TLS Redis;
//! [`process`] runs a binary under a deadline; [`prometheus`] runs a real
//! Prometheus that scrapes the tests' metrics; [`otlp`] receives the spans
//! the tests' processes export; [`netns`] makes network namespaces joined
//! by a bridge, for tests of several nodes on one host.

pub mod containerd;
pub mod cri;
pub mod memory;
pub mod netns;
pub mod otlp;
pub mod process;
pub mod prometheus;
pub mod tls;

use std::ops::{Deref, DerefMut};

/// A `redis-server` owned by a test; killed and its directory removed on drop.
pub struct RedisServer(redis_launcher::RedisServer);

impl RedisServer {
    /// Starts a server on a free loopback port; panics with a clear message
    /// if it cannot (for example if `redis-server` is not installed).
    pub fn start() -> RedisServer {
        RedisServer(redis_launcher::RedisServer::start().unwrap_or_else(|e| panic!("{e}")))
    }

    /// The same, with more `redis-server` arguments.
    pub fn start_with(extra_args: &[String]) -> RedisServer {
        RedisServer(
            redis_launcher::RedisServer::start_with(extra_args).unwrap_or_else(|e| panic!("{e}")),
        )
    }

    /// Starts a server inside network namespace `netns` bound to `bind`
    /// (see [`redis_launcher::RedisServer::start_in`]: `url()` is
    /// `redis://BIND:PORT`, `ping()` and `command()` connect from inside the
    /// namespace); panics with a clear message if it cannot.
    pub fn start_in(netns: &str, bind: std::net::Ipv4Addr, extra_args: &[String]) -> RedisServer {
        RedisServer(
            redis_launcher::RedisServer::start_in(netns, bind, extra_args)
                .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    /// Starts it again on the same port (after `kill`); panics if it cannot.
    pub fn restart(&mut self) {
        self.0.restart().unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Deref for RedisServer {
    type Target = redis_launcher::RedisServer;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for RedisServer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// A Redis Cluster owned by a test (3 masters and 3 replicas, say); every
/// node killed and its directory removed on drop.
pub struct RedisCluster(redis_launcher::RedisCluster);

impl RedisCluster {
    /// Starts `masters` masters with `replicas` replicas each and waits
    /// until the cluster is ok; panics with a clear message if it cannot.
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        RedisCluster(
            redis_launcher::RedisCluster::start(masters, replicas)
                .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    /// Every node's URL, comma-separated: a `CWASI_REDIS_URL` for it.
    pub fn url(&self) -> String {
        self.0.urls().join(",")
    }
}

impl Deref for RedisCluster {
    type Target = redis_launcher::RedisCluster;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for RedisCluster {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// A loopback TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    redis_launcher::free_port().expect("no free loopback port")
}
