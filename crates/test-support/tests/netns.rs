//! The multi-node network infrastructure works on this kernel: nodes reach
//! each other, an unreachable address is unreachable, a link can be cut and
//! restored and shaped, Redis runs inside a node, and nothing is left behind.
//! Needs root: without it, each test prints `SKIPPED` (or fails under CI).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use test_support::netns::{cluster_or_skip, NetCluster, NetNode};
use test_support::RedisServer;

/// The namespaces `ip netns list` shows now.
fn namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("run ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// The names of a cluster's namespaces.
fn names(c: &NetCluster) -> Vec<String> {
    let mut v: Vec<String> = c.nodes().iter().map(|n| n.name().to_string()).collect();
    v.push(c.hub().to_string());
    v
}

fn assert_gone(names: &[String]) {
    let left = namespaces();
    for n in names {
        assert!(!left.contains(n), "namespace {n} is left behind: {left:?}");
    }
}

fn sock(node: &NetNode, port: u16) -> SocketAddr {
    SocketAddr::from((node.addr(), port))
}

/// Connects from `from` to `to`'s listener, sends a byte, and checks that
/// the listener sees the connection coming from `from`'s address.
fn check_reaches(from: &NetNode, to: &NetNode, listener: &TcpListener) {
    let port = listener.local_addr().expect("listener address").port();
    let mut c = from
        .connect(sock(to, port), Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("{} cannot reach {}: {e}", from.name(), to.name()));
    c.write_all(b"x").expect("send a byte");
    let (mut s, peer) = listener.accept().expect("accept");
    assert_eq!(peer.ip(), from.addr(), "connection to {} from", to.name());
    let mut b = [0u8; 1];
    s.read_exact(&mut b).expect("read the byte");
    assert_eq!(&b, b"x");
}

#[test]
fn three_nodes_reach_each_other_and_run_commands_inside() {
    let Some(c) = cluster_or_skip(3) else { return };
    let listeners: Vec<TcpListener> = c.nodes().iter().map(|n| n.listen(0)).collect();
    for (i, to) in c.nodes().iter().enumerate() {
        for from in c.nodes().iter().filter(|n| n.name() != to.name()) {
            check_reaches(from, to, &listeners[i]);
        }
    }
    // a process started with `command` runs inside its node
    for n in c.nodes() {
        let out = n
            .command("ip")
            .args(["-4", "-o", "addr", "show"])
            .output()
            .expect("run ip inside the node");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("{}/24", n.addr())), "{text}");
        assert!(
            text.contains(&format!("{}/32", n.unreachable_addr())),
            "{text}"
        );
        assert!(text.contains(" lo "), "lo is up: {text}");
    }
    let addrs: Vec<Ipv4Addr> = c.nodes().iter().map(NetNode::addr).collect();
    assert!(
        addrs[0] != addrs[1] && addrs[1] != addrs[2] && addrs[0] != addrs[2],
        "{addrs:?}"
    );
}

#[test]
fn unreachable_addr_fails_fast_from_other_nodes() {
    let Some(c) = cluster_or_skip(2) else { return };
    let (n0, n1) = (c.node(0), c.node(1));
    // node 1 itself can listen on it and reach it
    let l = n1.run(|| TcpListener::bind((n1.unreachable_addr(), 0)).expect("bind it in node 1"));
    let to = l.local_addr().expect("listener address");
    n1.connect(to, Duration::from_secs(1))
        .expect("node 1 reaches its own unreachable address");
    let start = Instant::now();
    let err = n0
        .connect(to, Duration::from_secs(1))
        .expect_err("node 0 must not reach node 1's unreachable address");
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "failing took {:?} ({err})",
        start.elapsed()
    );
    eprintln!(
        "connect to {to} from node 0: {err} after {:?}",
        start.elapsed()
    );
}

#[test]
fn a_link_set_down_cuts_the_node_off_until_set_up() {
    let Some(c) = cluster_or_skip(3) else { return };
    let (n0, n1, n2) = (c.node(0), c.node(1), c.node(2));
    let (l0, l1) = (n0.listen(0), n1.listen(0));
    check_reaches(n0, n1, &l1);
    n1.set_link(false);
    let port1 = l1.local_addr().expect("address").port();
    let port0 = l0.local_addr().expect("address").port();
    let quick = Duration::from_millis(700);
    assert!(
        n0.connect(sock(n1, port1), quick).is_err(),
        "node 0 reached a cut node 1"
    );
    assert!(
        n2.connect(sock(n1, port1), quick).is_err(),
        "node 2 reached a cut node 1"
    );
    assert!(
        n1.connect(sock(n0, port0), quick).is_err(),
        "a cut node 1 reached node 0"
    );
    // the others still reach each other
    check_reaches(n2, n0, &l0);
    n1.set_link(true);
    // a SYN lost while cut may leave a queued connection: drain it
    l1.set_nonblocking(true).expect("nonblocking");
    while l1.accept().is_ok() {}
    l1.set_nonblocking(false).expect("blocking");
    check_reaches(n0, n1, &l1);
    check_reaches(n1, n0, &l0);
}

/// Sends 10 MiB from `from` to `to` and returns how long the receiver took
/// from accepting to the end of the stream.
fn transfer(from: &NetNode, to: &NetNode) -> Duration {
    const SIZE: usize = 10 << 20;
    let l = to.listen(0);
    let dest = l.local_addr().expect("listener address");
    let mut out = from
        .connect(dest, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("{} cannot reach {}: {e}", from.name(), to.name()));
    let sender = std::thread::spawn(move || {
        let chunk = vec![7u8; 64 << 10];
        for _ in 0..SIZE / chunk.len() {
            out.write_all(&chunk).expect("send");
        }
    });
    let (mut s, _) = l.accept().expect("accept");
    let start = Instant::now();
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0;
    loop {
        let n = s.read(&mut buf).expect("receive");
        if n == 0 {
            break;
        }
        got += n;
    }
    let took = start.elapsed();
    sender.join().expect("the sender panicked");
    assert_eq!(got, SIZE);
    took
}

#[test]
fn shaping_limits_both_directions_and_unshaping_lifts_it() {
    let Some(c) = cluster_or_skip(2) else { return };
    let (n0, n1) = (c.node(0), c.node(1));
    let fast = transfer(n0, n1);
    n1.shape(100_000_000);
    n1.shape(100_000_000); // again: replaces
    let to_shaped = transfer(n0, n1);
    let from_shaped = transfer(n1, n0);
    n1.unshape();
    n1.unshape(); // again: nothing to remove
    let after = transfer(n1, n0);
    eprintln!(
        "10 MiB: unshaped {fast:?}, to a 100 Mbit/s node {to_shaped:?}, \
         from it {from_shaped:?}, unshaped again {after:?}"
    );
    let min = Duration::from_millis(800);
    assert!(to_shaped >= min, "to the shaped node: {to_shaped:?}");
    assert!(from_shaped >= min, "from the shaped node: {from_shaped:?}");
    assert!(
        to_shaped < Duration::from_secs(3),
        "to the shaped node: {to_shaped:?}"
    );
    assert!(fast < min / 2, "unshaped: {fast:?}");
    assert!(after < min / 2, "unshaped again: {after:?}");
}

#[test]
fn redis_in_one_node_is_reachable_from_another() {
    let Some(c) = cluster_or_skip(2) else { return };
    let (n0, n1) = (c.node(0), c.node(1));
    let mut redis = RedisServer::start_in(n0.name(), n0.addr(), &[]);
    assert_eq!(
        redis.url(),
        format!("redis://{}:{}", n0.addr(), redis.port())
    );
    assert_eq!(redis.netns(), Some(n0.name()));
    assert!(redis.ping());
    assert_eq!(redis.command(&["SET", "k", "v"]).as_deref(), Some("+OK"));
    // from node 1, over the link
    let mut s = n1
        .connect(sock(n0, redis.port()), Duration::from_secs(2))
        .expect("node 1 reaches redis in node 0");
    s.write_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
        .expect("send GET");
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).expect("read the reply");
    assert_eq!(line, "$1\r\n");
    line.clear();
    r.read_line(&mut line).expect("read the value");
    assert_eq!(line, "v\r\n");
    // the test process, in the root namespace, has no route to it
    assert!(std::net::TcpStream::connect_timeout(
        &sock(n0, redis.port()),
        Duration::from_millis(300)
    )
    .is_err());
    redis.kill();
    assert!(!redis.ping());
    redis.restart();
    assert!(redis.ping());
    assert_eq!(
        redis.command(&["GET", "k"]).as_deref(),
        Some("$-1"),
        "no persistence"
    );
}

#[test]
fn dropping_a_cluster_kills_its_processes_and_deletes_its_namespaces() {
    let Some(c) = cluster_or_skip(2) else { return };
    let all = names(&c);
    let listed = namespaces();
    for n in &all {
        assert!(listed.contains(n), "{n} not in {listed:?}");
    }
    let mut child = c
        .node(1)
        .command("sleep")
        .arg("600")
        .spawn()
        .expect("spawn sleep in node 1");
    // wait until `ip netns exec` has entered the namespace and exec'd sleep
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_link(format!("/proc/{}/exe", child.id()))
        .map_or(true, |exe| !exe.to_string_lossy().ends_with("sleep"))
    {
        assert!(Instant::now() < deadline, "sleep did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(c);
    assert_gone(&all);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().expect("wait for sleep") {
            assert!(!status.success(), "sleep was killed: {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the process in node 1 outlived its cluster"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_panicking_test_leaves_no_namespace_behind() {
    let Some(c) = cluster_or_skip(2) else { return };
    let all = names(&c);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _c = c;
        panic!("a test fails while it owns a cluster (this panic is expected)");
    }));
    assert!(r.is_err());
    assert_gone(&all);
}

#[test]
fn namespaces_of_dead_test_processes_are_removed() {
    // a pid that is certainly dead: a child that has been waited for
    let mut child = Command::new("true").spawn().expect("spawn true");
    child.wait().expect("wait for true");
    let stale = format!("cwt{}-0-hub", child.id());
    let out = Command::new("ip")
        .args(["netns", "add", &stale])
        .output()
        .expect("run ip netns add");
    if !out.status.success() {
        // not root, or no namespaces: the same rule as for clusters
        let Some(_c) = cluster_or_skip(2) else { return };
        panic!("cannot add namespace {stale}, yet a cluster could be made");
    }
    let Some(_c) = cluster_or_skip(2) else { return };
    assert_gone(&[stale]);
}
