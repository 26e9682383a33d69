//! Several "machines" on one host: each node is a network namespace with one
//! address on a private subnet, joined to the others through a hub namespace
//! that holds a Linux bridge (one veth pair per node: `eth0` in the node,
//! `n<i>` in the hub, attached to the bridge). Traffic between two nodes
//! crosses two IP stacks and a bridge, as between machines, without leaving
//! the host. Multi-node tests (through `test-support`) and `cwasi bench
//! --netns` use it; a caller can cut a node's link, shape it with `tbf`, and
//! run processes or open sockets inside a node.
//!
//! All interfaces live inside the cluster's own namespaces, never in the
//! root namespace, so the only things a cluster leaves on the host are the
//! namespaces themselves (`<prefix><pid>-<counter>-hub`, `...-n0`, `...-n1`,
//! ...). [`NetCluster`]'s drop kills every process inside them and deletes
//! them; a new cluster first deletes those of its prefix left by processes
//! that died before they could (their pid is in the name).
//!
//! It needs root and iproute2 (`ip`, `tc`); where they are missing,
//! [`NetCluster::new`] fails with [`NetnsError::Unavailable`] saying why.
//! Nothing here panics: every failure is a [`NetnsError`].

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where `ip netns` keeps its namespaces (one file each).
pub const NETNS_DIR: &str = "/var/run/netns";

/// The most nodes a cluster has (its interfaces are `n0` to `n7`).
pub const MAX_NODES: usize = 8;

/// Numbers the clusters of this process: their names and subnets.
static CLUSTERS: AtomicU32 = AtomicU32::new(0);

/// Why namespaces could not be made, entered or changed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// This host cannot make network namespaces for us: not root, or no
    /// iproute2.
    #[error("network namespaces are unavailable: {0}")]
    Unavailable(String),
    /// A caller's value is out of range (a node count, a prefix, a rate).
    #[error("{0}")]
    BadInput(String),
    /// `ip` or `tc` ran and failed.
    #[error("`{command}` failed: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and stderr.
        message: String,
    },
    /// A namespace could not be opened or joined.
    #[error("cannot {action} network namespace {}: {source}", path.display())]
    Enter {
        /// Its file.
        path: PathBuf,
        /// `open` or `enter`.
        action: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// Network namespaces joined by a bridge. Dropping it (also during a panic's
/// unwinding) kills the processes inside them and deletes them, with their
/// interfaces.
#[derive(Debug)]
pub struct NetCluster {
    hub: String,
    nodes: Vec<NetNode>,
}

/// One node of a [`NetCluster`]: a namespace with `lo` up, `eth0` at
/// [`NetNode::addr`] on the cluster's subnet, and
/// [`NetNode::unreachable_addr`] on `lo`. A plain description (names and
/// addresses), so it can be cloned; the cluster owns the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetNode {
    name: String,
    hub: String,
    /// The hub-side end of its veth pair.
    hub_if: String,
    addr: Ipv4Addr,
    unreachable: Ipv4Addr,
}

impl NetCluster {
    /// `n` node namespaces (1 to [`MAX_NODES`]) named
    /// `<prefix><pid>-<c>-n<i>`, each with its own address on one private
    /// subnet, all reachable from each other; nodes have no other route.
    /// The subnet is `10.77.<c>.0/24` (node `i` is `10.77.<c>.<i+1>`), `c`
    /// counting this process's clusters: clusters cannot clash anyway, each
    /// living in its own namespaces, but distinct addresses keep logs
    /// unambiguous. `prefix` (1 to 8 ASCII lowercase letters) tells the
    /// users apart (`cwt` for tests, `cwb` for the bench); namespaces of that
    /// prefix left by dead processes are removed first.
    pub fn new(prefix: &str, n: usize) -> Result<NetCluster, NetnsError> {
        if !(1..=MAX_NODES).contains(&n) {
            return Err(NetnsError::BadInput(format!(
                "a cluster has 1 to {MAX_NODES} nodes, not {n}"
            )));
        }
        if prefix.is_empty() || prefix.len() > 8 || !prefix.bytes().all(|b| b.is_ascii_lowercase())
        {
            return Err(NetnsError::BadInput(format!(
                "namespace prefix {prefix:?} must be 1 to 8 ASCII lowercase letters"
            )));
        }
        check_available()?;
        remove_stale(prefix);
        let c = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let base = format!("{prefix}{}-{c}", std::process::id());
        let subnet = (c % 256) as u8;
        let mut cluster = NetCluster {
            hub: format!("{base}-hub"),
            nodes: Vec::new(),
        };
        // From here on, a failure drops `cluster`, which deletes whatever
        // was made. The hub is deleted by the drop only once it exists.
        let hub = cluster.hub.clone();
        if let Err(e) = ip(&["netns", "add", &hub]) {
            cluster.hub.clear();
            return Err(e);
        }
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for i in 0..n {
            let node = NetNode {
                name: format!("{base}-n{i}"),
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
            let addr = format!("{}/24", node.addr);
            ip(&["-n", ns, "addr", "add", &addr, "dev", "eth0"])?;
            let unreachable = format!("{}/32", node.unreachable);
            ip(&["-n", ns, "addr", "add", &unreachable, "dev", "lo"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        }
        Ok(cluster)
    }

    /// Node `i` (0-based), if there is one.
    pub fn node(&self, i: usize) -> Option<&NetNode> {
        self.nodes.get(i)
    }

    /// All the nodes, in order.
    pub fn nodes(&self) -> &[NetNode] {
        &self.nodes
    }

    /// The hub namespace, which holds the bridge `br0` and the hub-side ends
    /// `n<i>` of the nodes' links.
    pub fn hub(&self) -> &str {
        &self.hub
    }
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            delete_netns(&node.name);
        }
        if !self.hub.is_empty() {
            delete_netns(&self.hub);
        }
    }
}

impl NetNode {
    /// The namespace name (for `ip netns exec`, `ip -n`, and `redis-launcher`'s
    /// `RedisServer::start_in`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its address on the cluster's subnet, which every other node reaches.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// An address of this node (on its `lo`) on a subnet that no node has a
    /// route to, so connecting to it from another node fails at once
    /// (`ENETUNREACH`), while processes of this node can bind it.
    pub fn unreachable_addr(&self) -> Ipv4Addr {
        self.unreachable
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

    /// Runs `f` on a thread inside this namespace and returns its result
    /// (see [`in_netns`]).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        in_netns(&self.name, f)
    }

    /// The namespace's identity (the inode of its file), to compare with
    /// [`process_netns_id`] and [`thread_netns_id`].
    pub fn id(&self) -> Result<u64, NetnsError> {
        let path = Path::new(NETNS_DIR).join(&self.name);
        std::fs::metadata(&path)
            .map(|m| m.ino())
            .map_err(|source| NetnsError::Enter {
                path,
                action: "open",
                source,
            })
    }

    /// Sets this node's link down or up. Down, the hub-side end of its veth
    /// pair is down, as if its cable were pulled: packets to and from the
    /// node are dropped silently (connection attempts time out rather than
    /// being refused; open TCP connections stall). Up again, open
    /// connections resume if they have not timed out.
    pub fn set_link(&self, up: bool) -> Result<(), NetnsError> {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.hub, "link", "set", &self.hub_if, state]).map(drop)
    }

    /// Limits this node's link to `bits_per_sec` (at least 8000) in both
    /// directions (a `tbf` qdisc on the node's `eth0` for what it sends, and
    /// on the hub's end for what it receives); calling it again changes the
    /// rate. [`NetNode::unshape`] removes it.
    pub fn shape(&self, bits_per_sec: u64) -> Result<(), NetnsError> {
        if bits_per_sec < 8_000 {
            return Err(NetnsError::BadInput(format!(
                "a rate of {bits_per_sec} bit/s is too low to shape"
            )));
        }
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
            ])?;
        }
        Ok(())
    }

    /// Removes what [`NetNode::shape`] set (nothing if the link is not
    /// shaped).
    pub fn unshape(&self) -> Result<(), NetnsError> {
        for (ns, dev) in self.ends() {
            let shown = tc(&["-n", ns, "qdisc", "show", "dev", dev, "root"])?;
            if shown.contains("tbf") {
                tc(&["-n", ns, "qdisc", "del", "dev", dev, "root"])?;
            }
        }
        Ok(())
    }

    /// Both ends of its link: `(namespace, interface)`.
    fn ends(&self) -> [(&str, &str); 2] {
        [(&self.name, "eth0"), (&self.hub, &self.hub_if)]
    }
}

/// Runs `f` on a new thread that has joined the network namespace `name` (a
/// name under [`NETNS_DIR`]), and returns its result; needs root. Sockets
/// `f` creates belong to that namespace for their whole life and may be used
/// from any thread afterwards, and threads `f` starts are born in it, so
/// this is how a process in one namespace puts listeners, connections and
/// worker threads in another. A panic in `f` is propagated.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    let path = Path::new(NETNS_DIR).join(name);
    let file = std::fs::File::open(&path).map_err(|source| NetnsError::Enter {
        path: path.clone(),
        action: "open",
        source,
    })?;
    std::thread::scope(|scope| {
        let joined = scope
            .spawn(|| {
                rustix::thread::move_into_link_name_space(
                    file.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .map_err(|e| NetnsError::Enter {
                    path: path.clone(),
                    action: "enter",
                    source: e.into(),
                })?;
                Ok(f())
            })
            .join();
        joined.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The network namespace identity of process `pid` (its main thread), to
/// compare with [`NetNode::id`]; `None` if it cannot be read.
pub fn process_netns_id(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// The network namespace identity of thread `tid` of this process; `None`
/// if it cannot be read.
pub fn thread_netns_id(tid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/self/task/{tid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// Succeeds if this process can make namespaces: its effective user is root
/// and `ip` runs. Otherwise [`NetnsError::Unavailable`] says which is
/// missing.
pub fn check_available() -> Result<(), NetnsError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| NetnsError::Unavailable(format!("cannot read /proc/self/status: {e}")))?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .ok_or_else(|| NetnsError::Unavailable("no Uid line in /proc/self/status".into()))?;
    if euid != "0" {
        return Err(NetnsError::Unavailable(format!(
            "this process runs as uid {euid}, and network namespaces need root"
        )));
    }
    Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| NetnsError::Unavailable(format!("cannot run `ip` ({e}); install iproute2")))?;
    Ok(())
}

/// Runs `ip ARGS`; its stdout, or why it failed.
fn ip(args: &[&str]) -> Result<String, NetnsError> {
    run("ip", args)
}

/// Runs `tc ARGS`; its stdout, or why it failed.
fn tc(args: &[&str]) -> Result<String, NetnsError> {
    run("tc", args)
}

fn run(program: &str, args: &[&str]) -> Result<String, NetnsError> {
    let out: Output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            NetnsError::Unavailable(format!("cannot run `{program}` ({e}); install iproute2"))
        })?;
    if !out.status.success() {
        return Err(NetnsError::Command {
            command: format!("{program} {}", args.join(" ")),
            message: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Kills every process inside namespace `name` (never this one), then
/// deletes it (and so its interfaces); reports failures on stderr, since it
/// runs in drops.
fn delete_netns(name: &str) {
    match ip(&["netns", "pids", name]) {
        Ok(pids) => {
            let me = std::process::id();
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
            {
                if pid == me {
                    continue;
                }
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        Err(e) => eprintln!("warning: cannot list the processes in {name}: {e}"),
    }
    if let Err(e) = ip(&["netns", "del", name]) {
        eprintln!("warning: cannot delete network namespace {name}: {e}");
    }
}

/// Deletes the namespaces of clusters of `prefix` whose process is gone (it
/// crashed or was killed before its drops ran): `<prefix><pid>-...` with no
/// such pid.
fn remove_stale(prefix: &str) {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(prefix)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_sizes_and_prefixes_are_refused_before_anything_is_made() {
        for (prefix, n) in [("cwu", 0), ("cwu", MAX_NODES + 1), ("", 2), ("Cw-1", 2)] {
            match NetCluster::new(prefix, n) {
                Err(NetnsError::BadInput(m)) => assert!(!m.is_empty()),
                other => panic!("{prefix:?}, {n}: {other:?}"),
            }
        }
    }

    #[test]
    fn this_process_is_in_its_own_namespace() {
        let me = process_netns_id(std::process::id()).expect("read /proc/<pid>/ns/net");
        assert_eq!(process_netns_id(u32::MAX), None);
        let tid = std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|l| l.file_name()?.to_str()?.parse::<u32>().ok())
            .expect("thread id");
        assert_eq!(thread_netns_id(tid), Some(me));
    }

    #[test]
    fn entering_a_missing_namespace_is_an_error() {
        match in_netns("cwu-no-such-namespace", || ()) {
            Err(NetnsError::Enter { action, .. }) => assert_eq!(action, "open"),
            other => panic!("{other:?}"),
        }
    }
}
