//! Several "machines" on one host, for tests of CWASI nodes talking over a
//! real network: each node is a network namespace with one address on a
//! private subnet, joined to the others through a hub namespace that holds a
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
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Where `ip netns` keeps its namespaces (one file each).
const NETNS_DIR: &str = "/var/run/netns";

/// What every namespace name of a cluster starts with, before the pid.
const PREFIX: &str = "cwt";

/// Numbers the clusters of this process: their names and subnets.
static CLUSTERS: AtomicU32 = AtomicU32::new(0);

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
    hub: String,
    nodes: Vec<NetNode>,
}

/// One node of a [`NetCluster`]: a namespace with `lo` up, `eth0` at
/// [`NetNode::addr`] on the cluster's subnet, and [`NetNode::unreachable_addr`]
/// on `lo`.
pub struct NetNode {
    name: String,
    hub: String,
    /// The hub-side end of its veth pair.
    hub_if: String,
    addr: Ipv4Addr,
    unreachable: Ipv4Addr,
}

impl NetCluster {
    /// `n` node namespaces (usually 2 or 3; at most 8), each with its own
    /// address on one private subnet, all reachable from each other; nodes
    /// have no other route. The subnet is `10.77.<c>.0/24`, `c` counting
    /// this process's clusters: clusters cannot clash anyway, each living in
    /// its own namespaces, but distinct addresses keep logs unambiguous. Removes namespaces left by dead
    /// test processes first. Fails with [`Unavailable`] when this host
    /// cannot make them (not root, no iproute2, no veth or bridge support).
    pub fn new(n: usize) -> Result<NetCluster, Unavailable> {
        assert!(
            (1..=8).contains(&n),
            "a NetCluster has 1 to 8 nodes, not {n}"
        );
        check_root()?;
        remove_stale();
        let c = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{PREFIX}{}-{c}", std::process::id());
        let subnet = (c % 256) as u8;
        let mut cluster = NetCluster {
            hub: format!("{prefix}-hub"),
            nodes: Vec::new(),
        };
        // From here on, a failure drops `cluster`, which deletes whatever
        // was made.
        ip(&["netns", "add", &cluster.hub])?;
        let hub = cluster.hub.clone();
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for i in 0..n {
            let node = NetNode {
                name: format!("{prefix}-n{i}"),
                hub: hub.clone(),
                hub_if: format!("n{i}"),
                addr: Ipv4Addr::new(10, 77, subnet, i as u8 + 1),
                unreachable: Ipv4Addr::new(10, 78, subnet, i as u8 + 1),
            };
            ip(&["netns", "add", &node.name])?;
            cluster.nodes.push(node);
            let node = &cluster.nodes[i];
            let (ns, hub_if) = (node.name.as_str(), node.hub_if.as_str());
            // a veth pair: `n<i>` in the hub, `eth0` in the node
            ip(&[
                "-n", &hub, "link", "add", hub_if, "type", "veth", "peer", "name", "eth0", "netns",
                ns,
            ])?;
            ip(&["-n", &hub, "link", "set", hub_if, "master", "br0", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", node.addr),
                "dev",
                "eth0",
            ])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/32", node.unreachable),
                "dev",
                "lo",
            ])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        }
        Ok(cluster)
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
        &self.hub
    }
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            delete_netns(&node.name);
        }
        delete_netns(&self.hub);
    }
}

impl NetNode {
    /// The namespace name (for `ip netns exec`, `ip -n`, and
    /// [`crate::RedisServer::start_in`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its address on the cluster's subnet, which every other node reaches.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// A `Command` that runs `program` inside this namespace
    /// (`ip netns exec NAME program`), for the caller to add arguments and
    /// environment to and spawn. `ip` execs the program in the same
    /// process, so the child's pid and exit status are the program's. The
    /// cluster's drop kills it if it still runs.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `f` on a thread inside this namespace and returns its result:
    /// sockets it opens belong to the node (and stay usable from any
    /// thread), so the test process itself can talk on the node's network.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        redis_launcher::in_netns(&self.name, f).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A TCP listener of the node on its address and `port` (0: any free
    /// port; read it from `local_addr`).
    pub fn listen(&self, port: u16) -> TcpListener {
        self.run(|| TcpListener::bind((self.addr, port)))
            .unwrap_or_else(|e| {
                panic!(
                    "cannot listen on {}:{port} in {}: {e}",
                    self.addr, self.name
                )
            })
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
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.hub, "link", "set", &self.hub_if, state])
            .unwrap_or_else(|e| panic!("cannot set the link of {} {state}: {}", self.name, e.0));
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
        // 10 ms worth of data, at least a few full-size packets
        let burst = (bits_per_sec / 8 / 100).max(16 * 1024);
        for (ns, dev) in self.ends() {
            tc(&[
                "-n",
                ns,
                "qdisc",
                "replace",
                "dev",
                dev,
                "root",
                "tbf",
                "rate",
                &format!("{bits_per_sec}bit"),
                "burst",
                &burst.to_string(),
                "latency",
                "50ms",
            ])
            .unwrap_or_else(|e| panic!("cannot shape the link of {}: {}", self.name, e.0));
        }
    }

    /// Removes what [`NetNode::shape`] set (nothing if the link is not
    /// shaped).
    pub fn unshape(&self) {
        for (ns, dev) in self.ends() {
            let shown = tc(&["-n", ns, "qdisc", "show", "dev", dev, "root"])
                .unwrap_or_else(|e| panic!("cannot read the qdisc of {}: {}", self.name, e.0));
            if shown.contains("tbf") {
                tc(&["-n", ns, "qdisc", "del", "dev", dev, "root"]).unwrap_or_else(|e| {
                    panic!("cannot unshape the link of {}: {}", self.name, e.0)
                });
            }
        }
    }

    /// An address of this node (on its `lo`) on a subnet that no node has a
    /// route to, so connecting to it from another node fails at once
    /// (`ENETUNREACH`), while processes of this node can bind it. For tests
    /// of a node whose announced address cannot be reached.
    pub fn unreachable_addr(&self) -> Ipv4Addr {
        self.unreachable
    }

    /// Both ends of its link: `(namespace, interface)`.
    fn ends(&self) -> [(&str, &str); 2] {
        [(&self.name, "eth0"), (&self.hub, &self.hub_if)]
    }
}

/// Fails unless this process's effective user is root (namespaces, links
/// and qdiscs need it), or if `ip` cannot run.
fn check_root() -> Result<(), Unavailable> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Unavailable(format!("cannot read /proc/self/status: {e}")))?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .ok_or_else(|| Unavailable("no Uid line in /proc/self/status".into()))?;
    if euid != "0" {
        return Err(Unavailable(format!(
            "this test runs as uid {euid}, and network namespaces need root"
        )));
    }
    Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .map_err(|e| Unavailable(format!("cannot run `ip` ({e}); install iproute2")))?;
    Ok(())
}

/// Runs `ip ARGS`; its stdout, or why it failed.
fn ip(args: &[&str]) -> Result<String, Unavailable> {
    run("ip", args)
}

/// Runs `tc ARGS`; its stdout, or why it failed.
fn tc(args: &[&str]) -> Result<String, Unavailable> {
    run("tc", args)
}

fn run(program: &str, args: &[&str]) -> Result<String, Unavailable> {
    let out: Output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Unavailable(format!("cannot run `{program}` ({e}); install iproute2")))?;
    if !out.status.success() {
        return Err(Unavailable(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Kills every process inside namespace `name`, then deletes it (and so its
/// interfaces); reports failures on stderr, since it runs in drops.
fn delete_netns(name: &str) {
    match ip(&["netns", "pids", name]) {
        Ok(pids) => {
            for pid in pids.split_whitespace().filter_map(|p| p.parse().ok()) {
                // SAFETY: kill(2) has no memory effects; the pid is one the
                // kernel just listed in that namespace (never this process,
                // which stays in the root namespace).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        Err(e) => eprintln!("warning: cannot list the processes in {name}: {}", e.0),
    }
    if let Err(e) = ip(&["netns", "del", name]) {
        eprintln!("warning: cannot delete network namespace {name}: {}", e.0);
    }
}

/// Deletes the namespaces of clusters whose process is gone (it crashed or
/// was killed before its drops ran): `cwt<pid>-...` with no such pid.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !alive(pid) {
            eprintln!("removing network namespace {name}, left by dead process {pid}");
            delete_netns(&name);
        }
    }
}

/// Whether process `pid` runs (a zombie, killed but not yet reaped, does
/// not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) STATE ...`; comm may hold spaces and parentheses
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
