//! Several "machines" on one host, for tests of CWASI nodes talking over a
//! real network, on top of the `netns` crate (which `cwasi bench --netns`
//! uses too): this module only turns its errors into panics, as a test
//! wants, and decides when a test may be skipped. Each node is a network
//! namespace with one address on a private subnet, joined to the others through a hub namespace that holds a
//! Linux bridge (one veth pair per node: `eth0` in the node, `n<i>` in the
//! hub, attached to the bridge). A test can cut a node's link, shape it with
//! `tbf`, and run processes (`cwasi serve`, `redis-server`) or open sockets
//! inside a node.
//!
//! All interfaces live inside the cluster's own namespaces, never in the
//! root namespace, so the only things a cluster leaves on the host are the
//! namespaces themselves (`cwt<pid>-<counter>-hub`, `...-n0`, `...-n1`,
//! ...). [`NetCluster`]'s drop kills every process inside them and deletes
//! them; a new cluster first deletes those left by test processes that died
//! before they could (their pid is in the name).
//!
//! It needs root and iproute2 (`ip`, `tc`); where they are missing,
//! [`NetCluster::new`] says why ([`Unavailable`]) and [`cluster_or_skip`]
//! decides whether the test fails (in CI) or says loudly that it is skipped.

use std::ffi::OsStr;
use std::fmt;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

/// What every namespace name of a test cluster starts with, before the pid.
const PREFIX: &str = "cwt";

/// Why a network test cannot run here (not root, no `ip`, namespaces
/// refused). Tests print it loudly and fail or skip explicitly (see
/// [`cluster_or_skip`]); they never pass silently.
#[derive(Debug, Clone)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "network namespaces are unavailable: {}", self.0)
    }
}

impl std::error::Error for Unavailable {}

/// [`NetCluster::new`], or `None` after printing `SKIPPED: <reason>` to
/// stderr (uncaptured, so it shows even when the test passes) when namespaces are unavailable here. Under CI (the `CI`
/// environment variable is set), where tests run as root and must have
/// them, it panics instead, so a broken runner fails rather than skips.
/// Use as `let Some(cluster) = cluster_or_skip(3) else { return };`.
pub fn cluster_or_skip(n: usize) -> Option<NetCluster> {
    match NetCluster::new(n) {
        Ok(c) => Some(c),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("{e} (CI is set, so network tests must run: run them as root with iproute2)")
        }
        Err(e) => {
            // Written to the stderr stream itself: `eprintln!` in a test is
            // captured, and so hidden when the test passes.
            let _ = writeln!(
                std::io::stderr().lock(),
                "\n{stars}\nSKIPPED: {e}\n(run as root with iproute2; under CI this fails)\n{stars}\n",
                stars = "*".repeat(60)
            );
            None
        }
    }
}

/// Network namespaces joined by a bridge, owned by a test. Dropping it
/// (also while a test panics) kills the processes inside them and deletes
/// them, with their interfaces.
pub struct NetCluster {
    inner: netns::NetCluster,
    nodes: Vec<NetNode>,
}

/// One node of a [`NetCluster`]: a namespace with `lo` up, `eth0` at
/// [`NetNode::addr`] on the cluster's subnet, and [`NetNode::unreachable_addr`]
/// on `lo`.
pub struct NetNode(netns::NetNode);

impl NetCluster {
    /// `n` node namespaces (usually 2 or 3; at most 8), each with its own
    /// address on one private subnet, all reachable from each other; nodes
    /// have no other route. The subnet is `10.77.<c>.0/24`, `c` counting
    /// this process's clusters (see `netns::NetCluster::new`). Removes
    /// namespaces left by dead test processes first. Fails with
    /// [`Unavailable`] when this host cannot make them (not root, no
    /// iproute2, no veth or bridge support).
    pub fn new(n: usize) -> Result<NetCluster, Unavailable> {
        assert!(
            (1..=netns::MAX_NODES).contains(&n),
            "a NetCluster has 1 to 8 nodes, not {n}"
        );
        let inner = netns::NetCluster::new(PREFIX, n).map_err(|e| match e {
            netns::NetnsError::Unavailable(reason) => Unavailable(reason),
            other => Unavailable(other.to_string()),
        })?;
        let nodes = inner.nodes().iter().cloned().map(NetNode).collect();
        Ok(NetCluster { inner, nodes })
    }

    /// Node `i` (0-based).
    pub fn node(&self, i: usize) -> &NetNode {
        self.nodes.get(i).unwrap_or_else(|| {
            panic!(
                "this cluster has {} nodes, there is no node {i}",
                self.nodes.len()
            )
        })
    }

    /// All the nodes, in order.
    pub fn nodes(&self) -> &[NetNode] {
        &self.nodes
    }

    /// The hub namespace, which holds the bridge `br0` and the hub-side ends
    /// `n<i>` of the nodes' links (for a test that needs to look at them).
    pub fn hub(&self) -> &str {
        self.inner.hub()
    }
}

impl NetNode {
    /// The namespace name (for `ip netns exec`, `ip -n`, and
    /// [`crate::RedisServer::start_in`]).
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// Its address on the cluster's subnet, which every other node reaches.
    pub fn addr(&self) -> Ipv4Addr {
        self.0.addr()
    }

    /// A `Command` that runs `program` inside this namespace
    /// (`ip netns exec NAME program`), for the caller to add arguments and
    /// environment to and spawn. `ip` execs the program in the same
    /// process, so the child's pid and exit status are the program's. The
    /// cluster's drop kills it if it still runs.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        self.0.command(program)
    }

    /// Runs `f` on a thread inside this namespace and returns its result:
    /// sockets it opens belong to the node (and stay usable from any
    /// thread), so the test process itself can talk on the node's network.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.0.run(f).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A TCP listener of the node on its address and `port` (0: any free
    /// port; read it from `local_addr`).
    pub fn listen(&self, port: u16) -> TcpListener {
        let addr = self.addr();
        self.run(|| TcpListener::bind((addr, port)))
            .unwrap_or_else(|e| panic!("cannot listen on {addr}:{port} in {}: {e}", self.name()))
    }

    /// A TCP connection from this node to `to`, given up after `timeout`;
    /// the error is the test's to check (a cut or unreachable peer).
    pub fn connect(&self, to: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
        self.run(|| TcpStream::connect_timeout(&to, timeout))
    }

    /// Sets this node's link down or up. Down, the hub-side end of its veth
    /// pair is down, as if its cable were pulled: packets to and from the
    /// node are dropped silently (connection attempts time out rather than
    /// being refused; open TCP connections stall), and nothing reaches the
    /// node. Up again, open connections resume if they have not timed out.
    pub fn set_link(&self, up: bool) {
        self.0.set_link(up).unwrap_or_else(|e| {
            let state = if up { "up" } else { "down" };
            panic!("cannot set the link of {} {state}: {e}", self.name())
        });
    }

    /// Limits this node's link to `bits_per_sec` in both directions (a
    /// `tbf` qdisc on the node's `eth0` for what it sends, and on the hub's
    /// end for what it receives), for tests that need a slow network;
    /// calling it again changes the rate. [`NetNode::unshape`] removes it.
    pub fn shape(&self, bits_per_sec: u64) {
        assert!(
            bits_per_sec >= 8_000,
            "a rate of {bits_per_sec} bit/s is too low to shape"
        );
        self.0
            .shape(bits_per_sec)
            .unwrap_or_else(|e| panic!("cannot shape the link of {}: {e}", self.name()));
    }

    /// Removes what [`NetNode::shape`] set (nothing if the link is not
    /// shaped).
    pub fn unshape(&self) {
        self.0
            .unshape()
            .unwrap_or_else(|e| panic!("cannot unshape the link of {}: {e}", self.name()));
    }

    /// An address of this node (on its `lo`) on a subnet that no node has a
    /// route to, so connecting to it from another node fails at once
    /// (`ENETUNREACH`), while processes of this node can bind it. For tests
    /// of a node whose announced address cannot be reached.
    pub fn unreachable_addr(&self) -> Ipv4Addr {
        self.0.unreachable_addr()
    }
}
