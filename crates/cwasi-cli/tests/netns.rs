//! Remote mode across real network stacks: nodes in network namespaces of
//! their own, joined by veth pairs and a bridge (`test_support::netns`),
//! each with its own address, node directory and `CWASI_NODE`; Redis runs
//! in node1's namespace. Servers are `cwasi serve` processes started with
//! `ip netns exec`; callers are `cwasi run` processes there too, or a
//! runtime on a thread that entered node1's namespace.
//!
//! These tests need root (CI runs as root). Where namespaces cannot be
//! made they fail under CI and print a loud SKIPPED elsewhere.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{
    assert_producer_ok, function, print_paths, run_with_timeout, Scratch, Server, StopOnDrop, LIMIT,
};
use cwasi_runtime::broker::{Broker, BrokerConfig};
use cwasi_runtime::{DirectConfig, ErrorCode, Limits, Mode, Runtime, TlsFiles};
use test_programs_artifacts as progs;
use test_support::netns::{cluster_or_skip, NetCluster, NetNode};
use test_support::tls::{NodeCertificate, NodeCertificates};
use test_support::RedisServer;

/// The port every node's direct server listens on.
const DATA_PORT: u16 = 7000;

/// What the nodes of a test share: the network, the broker, a scratch
/// directory with one node directory per node.
struct Nodes {
    scratch: Scratch,
    redis: RedisServer,
    net: NetCluster,
}

impl Nodes {
    /// `n` nodes (node1 ... nodeN); Redis in node1's namespace.
    fn start(tag: &str, n: usize) -> Option<Nodes> {
        let net = cluster_or_skip(n)?;
        let redis = RedisServer::start_in(net.node(0).name(), net.node(0).addr(), &[]);
        Some(Nodes {
            scratch: Scratch::new(tag),
            redis,
            net,
        })
    }

    /// Node `i` (1-based, as its name says).
    fn node(&self, i: usize) -> &NetNode {
        self.net.node(i - 1)
    }

    fn dir(&self, i: usize) -> PathBuf {
        self.scratch.0.join(format!("node{i}"))
    }

    /// The environment of a process of node `i`.
    fn env(&self, i: usize, direct: &[(String, String)]) -> Vec<(String, String)> {
        let mut env = vec![
            ("CWASI_REDIS_URL".to_string(), self.redis.url()),
            ("CWASI_NODE".to_string(), format!("node{i}")),
        ];
        env.extend(direct.iter().cloned());
        env
    }

    /// `cwasi serve` of `module` as `name` (namespace "b") on node `i`,
    /// taking direct calls on `listen`.
    fn serve(
        &self,
        i: usize,
        module: &str,
        name: &str,
        listen: SocketAddr,
        direct: &[(String, String)],
    ) -> Server {
        let dir = self.dir(i);
        let mut cmd = self.node(i).command(env!("CARGO_BIN_EXE_cwasi"));
        cmd.args(["serve", module, "--name", name, "--namespace", "b"])
            .arg("--runtime-dir")
            .arg(&dir)
            .args([
                "--call-timeout-ms",
                "20000",
                "--listen",
                &listen.to_string(),
            ])
            .envs(self.env(i, direct));
        Server::from_command(cmd, &dir, name, "b")
    }

    /// `cwasi run --explain` of the producer on node1, calling `target`
    /// with `size` bytes and checking its echo.
    fn produce(&self, size: usize, target: &str, direct: &[(String, String)]) -> common::Output {
        let toml = format!(
            "entry = \"producer\"\n[limits]\ncall_timeout_ms = 60000\n{}",
            function(
                "producer",
                progs::PRODUCER,
                &format!("namespace = \"a\"\nargs = [\"{size}\", \"{target}\", \"echo\"]")
            ),
        );
        let file = self.scratch.write("produce.toml", &toml);
        let mut cmd = self.node(1).command(env!("CARGO_BIN_EXE_cwasi"));
        cmd.args(["run", &file, "--explain", "--runtime-dir"])
            .arg(self.dir(1))
            .envs(self.env(1, direct));
        run_with_timeout(&mut cmd, LIMIT)
    }

    /// A runtime of node1, built on a thread inside its namespace (its
    /// sockets and threads belong to node1), running `f`.
    fn on_node1<T: Send>(
        &self,
        direct: DirectConfig,
        timeout: Duration,
        f: impl FnOnce(&Runtime) -> T + Send,
    ) -> T {
        let url = self.redis.url();
        self.node(1).run(move || {
            let rt = Runtime::builder()
                .limits(Limits {
                    call_timeout: timeout,
                    ..Limits::default()
                })
                .broker(Broker::new(BrokerConfig::new(url, "node1")).unwrap())
                .direct(direct)
                .build()
                .unwrap();
            f(&rt)
        })
    }
}

fn plain() -> Vec<(String, String)> {
    vec![("CWASI_DIRECT_PLAIN".into(), "1".into())]
}

fn tls_env(ca: &Path, node: &NodeCertificate) -> Vec<(String, String)> {
    vec![
        ("CWASI_TLS_CA".into(), ca.display().to_string()),
        ("CWASI_TLS_CERT".into(), node.cert.display().to_string()),
        ("CWASI_TLS_KEY".into(), node.key.display().to_string()),
    ]
}

const PLAIN: DirectConfig = DirectConfig {
    tls: None,
    allow_plain: true,
};

/// Waits until node1 routes calls of namespace "a" to `name` in `mode`.
fn wait_routed(rt: &Runtime, name: &str, mode: Mode) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rt.explain("a", name) {
            Ok(s) if s.mode == mode => return s.to_string(),
            other => {
                assert!(
                    Instant::now() < deadline,
                    "{name} never routed {mode}: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn data_addr(node: &NetNode) -> SocketAddr {
    SocketAddr::from((node.addr(), DATA_PORT))
}

#[test]
fn two_nodes_in_two_network_namespaces_exchange_every_payload_directly() {
    let Some(nodes) = Nodes::start("netns-direct", 2) else {
        return;
    };
    let _b = nodes.serve(2, progs::ECHO, "echo", data_addr(nodes.node(2)), &plain());
    nodes.on_node1(PLAIN, Duration::from_secs(5), |rt| {
        wait_routed(rt, "echo", Mode::RemoteDirect)
    });
    let edge = format!(
        "producer -> echo: remote-direct ('echo' is served on node(s) node2 (namespace 'b'), \
         reachable directly: node 'node2' at tcp://{}",
        data_addr(nodes.node(2))
    );
    for size in [0usize, 1, 64 << 10, 10 << 20, 100 << 20] {
        let out = nodes.produce(size, "echo", &plain());
        assert_producer_ok(&out, size, &edge);
    }
}

#[test]
fn mutual_tls_across_namespaces_admits_cluster_nodes_and_refuses_others() {
    let Some(nodes) = Nodes::start("netns-tls", 3) else {
        return;
    };
    let certs = NodeCertificates::generate(&nodes.scratch.0, &["node1", "node2", "node3"]);
    let ca = &certs.ca_cert;
    let _b = nodes.serve(
        2,
        progs::ECHO,
        "echo",
        data_addr(nodes.node(2)),
        &tls_env(ca, certs.node("node2")),
    );
    let node1 = tls_env(ca, certs.node("node1"));
    let files = |ca: &Path, c: &NodeCertificate| DirectConfig {
        tls: Some(TlsFiles {
            ca: ca.to_path_buf(),
            cert: c.cert.clone(),
            key: c.key.clone(),
        }),
        allow_plain: false,
    };
    nodes.on_node1(
        files(ca, certs.node("node1")),
        Duration::from_secs(5),
        |rt| wait_routed(rt, "echo", Mode::RemoteDirect),
    );
    let edge = format!("producer -> echo: remote-direct ('echo' is served on node(s) node2 (namespace 'b'), reachable directly: node 'node2' at tls://{}", data_addr(nodes.node(2)));
    for size in [0usize, 1, 64 << 10, 10 << 20] {
        assert_producer_ok(&nodes.produce(size, "echo", &node1), size, &edge);
    }
    // node1 with a certificate of another CA: refused by node2, and says so.
    let other1 = certs.other.iter().find(|c| c.name == "node1").unwrap();
    let out = nodes.produce(64, "echo", &tls_env(&certs.other_ca_cert, other1));
    assert_eq!(out.code, Some(2), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains(&format!("error code={}", ErrorCode::Denied.as_raw())),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("mutual TLS refused"), "{}", out.stdout);
    // node3 serving with a certificate of another CA: refused by node1.
    let other3 = certs.other.iter().find(|c| c.name == "node3").unwrap();
    let _rogue = nodes.serve(
        3,
        progs::ECHO,
        "echo3",
        data_addr(nodes.node(3)),
        &tls_env(&certs.other_ca_cert, other3),
    );
    let e = nodes.on_node1(
        files(ca, certs.node("node1")),
        Duration::from_secs(5),
        |rt| {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match rt.call("a", "echo3", b"x") {
                    Err(e) if e.code == ErrorCode::UnknownFunction && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    other => return other,
                }
            }
        },
    );
    let e = e.unwrap_err();
    assert_eq!(e.code, ErrorCode::Denied, "{e}");
    assert!(e.message.contains("invalid peer certificate"), "{e}");
}

#[test]
fn a_data_address_no_route_leads_to_is_called_through_the_broker() {
    let Some(nodes) = Nodes::start("netns-fallback", 2) else {
        return;
    };
    let hidden = SocketAddr::from((nodes.node(2).unreachable_addr(), DATA_PORT));
    let _b = nodes.serve(2, progs::ECHO, "echo", hidden, &plain());
    let why = nodes.on_node1(PLAIN, Duration::from_secs(5), |rt| {
        wait_routed(rt, "echo", Mode::RemoteBroker)
    });
    assert!(
        why.contains(&format!("node 'node2' at tcp://{hidden}: cannot connect")),
        "{why}"
    );
    for size in [0usize, 64 << 10, 10 << 20] {
        let out = nodes.produce(size, "echo", &plain());
        assert_producer_ok(&out, size, "producer -> echo: remote-broker ('echo' is served on node(s) node2 (namespace 'b'), through the broker: not directly, node 'node2' at tcp://");
        assert!(out.stderr.contains("cannot connect"), "{}", out.stderr);
    }
}

#[test]
fn a_slow_link_takes_its_time_and_a_short_deadline_times_out() {
    let Some(nodes) = Nodes::start("netns-slow", 2) else {
        return;
    };
    let _b = nodes.serve(2, progs::ECHO, "echo", data_addr(nodes.node(2)), &plain());
    nodes.node(2).shape(100_000_000);
    let size = 10 << 20;
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 253) as u8).collect();
    let ((took, answer), (short, failed)) = nodes.on_node1(PLAIN, Duration::from_secs(30), |rt| {
        wait_routed(rt, "echo", Mode::RemoteDirect);
        let started = Instant::now();
        let answer = rt.call("a", "echo", &data);
        let took = started.elapsed();
        // A caller whose deadline is shorter than the link needs.
        let short = Duration::from_millis(300);
        let started = Instant::now();
        let failed = rt.call_within("a", "echo", &data, short);
        ((took, answer), (started.elapsed() - short, failed))
    });
    report(&format!(
        "slow link (100 Mbit/s): 10 MiB echo took {took:?}; a 300 ms deadline failed {short:?} after it"
    ));
    assert_eq!(answer.unwrap(), data, "intact over the slow link");
    // 10 MiB each way at 100 Mbit/s: at least 0.84 s one way.
    assert!(
        took >= Duration::from_millis(840),
        "10 MiB over 100 Mbit/s took {took:?}"
    );
    let e = failed.unwrap_err();
    assert_eq!(e.code, ErrorCode::Timeout, "{e}");
    let grace = cwasi_runtime::ANSWER_GRACE;
    assert!(
        short <= grace + Duration::from_secs(1),
        "TIMEOUT came {short:?} past the deadline (grace {grace:?})"
    );
}

/// Writes a test's figures to the process's stderr itself: `eprintln!` is
/// captured, and hidden when the test passes, and CI logs should show them.
fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// A tiny pseudo-random source, so that the soak's schedule differs per run.
struct Lcg(u64);

impl Lcg {
    fn new() -> Lcg {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Lcg(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn failover_soak_across_namespaces_never_returns_a_wrong_or_second_result() {
    let Some(nodes) = Nodes::start("netns-soak", 3) else {
        return;
    };
    let servers: Vec<Mutex<Option<Server>>> = [2, 3]
        .iter()
        .map(|&i| {
            Mutex::new(Some(nodes.serve(
                i,
                progs::ECHO,
                "echo",
                data_addr(nodes.node(i)),
                &plain(),
            )))
        })
        .collect();
    let timeout = Duration::from_secs(8);
    let grace = cwasi_runtime::ANSWER_GRACE;
    const CALLS: u64 = 2_000;
    let (correct, wrong, late, issued) = (
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    );
    let codes = Mutex::new(std::collections::BTreeMap::<String, u64>::new());
    let chaos_done = AtomicBool::new(false);
    // Calls in flight now, and the retries the caller's hop counters show:
    // the chaos goes on, aimed at calls in flight, until one was retried.
    let (in_flight, retried_seen) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut rng = Lcg::new();
    // At least five kills and two link flaps, in a random order.
    let mut plan = vec!["kill", "kill", "kill", "kill", "kill", "link", "link"];
    for i in (1..plan.len()).rev() {
        plan.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let (retried, via_broker) = std::thread::scope(|s| {
        s.spawn(|| {
            let mut rng = Lcg::new();
            std::thread::sleep(Duration::from_millis(500));
            for action in &plan {
                let which = rng.below(2) as usize;
                let i = which + 2;
                match *action {
                    "kill" => {
                        let mut slot = servers[which].lock().unwrap();
                        if let Some(mut srv) = slot.take() {
                            srv.sigkill();
                        }
                        std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
                        *slot = Some(nodes.serve(
                            i,
                            progs::ECHO,
                            "echo",
                            data_addr(nodes.node(i)),
                            &plain(),
                        ));
                    }
                    _ => {
                        nodes.node(i).set_link(false);
                        std::thread::sleep(Duration::from_millis(1000 + rng.below(1000)));
                        nodes.node(i).set_link(true);
                    }
                }
                std::thread::sleep(Duration::from_millis(200 + rng.below(500)));
            }
            // A kill lands in a call only by chance (a call takes about
            // 100 µs of every 2 ms): until one was retried, kill a server
            // the moment a call is in flight, at most 40 more times.
            for _ in 0..40 {
                if retried_seen.load(Ordering::SeqCst) > 0 {
                    break;
                }
                let waiting = Instant::now();
                while in_flight.load(Ordering::SeqCst) == 0
                    && waiting.elapsed() < Duration::from_secs(1)
                {
                    std::hint::spin_loop();
                }
                let which = rng.below(2) as usize;
                let mut slot = servers[which].lock().unwrap();
                if let Some(mut srv) = slot.take() {
                    srv.sigkill();
                }
                std::thread::sleep(Duration::from_millis(100 + rng.below(200)));
                *slot = Some(nodes.serve(
                    which + 2,
                    progs::ECHO,
                    "echo",
                    data_addr(nodes.node(which + 2)),
                    &plain(),
                ));
                drop(slot);
                std::thread::sleep(Duration::from_millis(300));
            }
            chaos_done.store(true, Ordering::SeqCst);
        });
        nodes.on_node1(PLAIN, timeout, |rt| {
            wait_routed(rt, "echo", Mode::RemoteDirect);
            std::thread::scope(|calls| {
                for t in 0..2u64 {
                    let (correct, wrong, late, issued, codes, chaos_done) =
                        (&correct, &wrong, &late, &issued, &codes, &chaos_done);
                    let (in_flight, retried_seen) = (&in_flight, &retried_seen);
                    calls.spawn(move || loop {
                        let n = issued.fetch_add(1, Ordering::SeqCst);
                        if n >= CALLS && chaos_done.load(Ordering::SeqCst) {
                            break;
                        }
                        if n % 16 == 0 {
                            let retried = rt
                                .hops()
                                .iter()
                                .find(|h| h.target == "echo")
                                .map_or(0, |h| h.paths.retried);
                            retried_seen.store(retried, Ordering::SeqCst);
                        }
                        let request = format!("call {t}:{n} {}", "x".repeat((n % 2048) as usize));
                        let started = Instant::now();
                        in_flight.fetch_add(1, Ordering::SeqCst);
                        let result = rt.call("a", "echo", request.as_bytes());
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        if started.elapsed() > timeout + grace + Duration::from_secs(1) {
                            late.fetch_add(1, Ordering::SeqCst);
                        }
                        match result {
                            Ok(r) if r == request.as_bytes() => {
                                correct.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(_) => {
                                wrong.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => {
                                *codes.lock().unwrap().entry(e.code.to_string()).or_default() += 1;
                            }
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    });
                }
            });
            let hops = rt.hops();
            let paths = hops
                .iter()
                .find(|h| h.target == "echo")
                .map(|h| h.paths)
                .unwrap_or_default();
            (paths.retried, paths.via_broker)
        })
    });
    let correct = correct.load(Ordering::SeqCst);
    let failed: u64 = codes.lock().unwrap().values().sum();
    report(&format!(
        "failover soak: {} calls: correct {correct}, failed {failed} by code {:?}, retried {retried}, \
         failed over to the broker {via_broker}, wrong {}, past deadline+grace {}",
        correct + failed + wrong.load(Ordering::SeqCst),
        codes.lock().unwrap(),
        wrong.load(Ordering::SeqCst),
        late.load(Ordering::SeqCst)
    ));
    assert_eq!(
        wrong.load(Ordering::SeqCst),
        0,
        "a call returned another call's result"
    );
    assert_eq!(
        late.load(Ordering::SeqCst),
        0,
        "a call outlived its deadline and the grace"
    );
    assert!(correct + failed >= CALLS, "{correct} + {failed}");
    // Failover must carry most calls through the kills and the flaps.
    assert!(
        correct * 10 >= (correct + failed) * 9,
        "correct {correct} of {}",
        correct + failed
    );
    assert!(
        retried > 0,
        "no call was retried: the chaos never hit a call in flight?"
    );
}

/// Adaptive paths across network stacks (docs/architecture.md, "How a
/// route changes"): a steady caller on node1 while B moves. B starts on
/// node2; a replica starts on node3 and node2's gets SIGTERM (a planned
/// stop: the route moves to node3 through the registry); then a replica
/// starts on node1, the caller's node (the route moves to local mode).
/// No call fails, and the counts per path are printed.
#[test]
fn a_route_follows_its_callee_across_network_namespaces_and_no_call_fails() {
    let Some(nodes) = Nodes::start("netns-adaptive", 3) else {
        return;
    };
    let listen = |i: usize| data_addr(nodes.node(i));
    let mut b2 = nodes.serve(2, progs::ECHO, "f", listen(2), &plain());
    let url = nodes.redis.url();
    let dir1 = nodes.dir(1);
    std::fs::create_dir_all(&dir1).unwrap();
    std::fs::set_permissions(&dir1, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    nodes.node(1).run(|| {
        let rt = Runtime::builder()
            .node("node1")
            .node_directory(cwasi_runtime::NodeDirectory::open(&dir1).unwrap())
            .broker(Broker::new(BrokerConfig::new(url, "node1")).unwrap())
            .direct(PLAIN)
            .build()
            .unwrap();
        wait_routed(&rt, "f", Mode::RemoteDirect);
        let stop = AtomicBool::new(false);
        let failed = Mutex::new(Vec::new());
        let calls = AtomicU64::new(0);
        let path = || {
            rt.hops()
                .into_iter()
                .find(|h| h.target == "f" && h.current)
                .and_then(|h| h.path)
                .unwrap_or_default()
        };
        let wait_path = |what: &str, wanted: &str| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !path().starts_with(wanted) {
                assert!(
                    Instant::now() < deadline,
                    "{what}: the route never took {wanted}: {}",
                    path()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        std::thread::scope(|s| {
            let _stop = StopOnDrop(&stop);
            let caller = s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    match rt.call("a", "f", b"across namespaces") {
                        Ok(r) if r == b"across namespaces" => {}
                        other => failed.lock().unwrap().push(format!("{other:?}")),
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
            wait_path("B on node2", "remote-direct 'node2'");
            let _b3 = nodes.serve(3, progs::ECHO, "f", listen(3), &plain());
            let moved = Instant::now();
            assert!(b2
                .terminate_within(Duration::from_secs(20))
                .is_some_and(|s| s.success()));
            wait_path("node2 stopped", "remote-direct 'node3'");
            println!(
                "registry: the route left node2 {:?} after its SIGTERM",
                moved.elapsed()
            );
            let _b1 = nodes.serve(1, progs::ECHO, "f", listen(1), &plain());
            let appeared = Instant::now();
            wait_path("a replica on node1", "local ");
            println!(
                "node directory: the route took node1's replica {:?} after its record",
                appeared.elapsed()
            );
            let before = calls.load(Ordering::Relaxed);
            while calls.load(Ordering::Relaxed) < before + 50 {
                std::thread::sleep(Duration::from_millis(5));
            }
            // The caller ends before the replicas are dropped (killed): its
            // last call must not meet a server killed under it.
            stop.store(true, Ordering::Relaxed);
            caller.join().unwrap();
        });
        print_paths(&rt, "f");
        let failed = failed.into_inner().unwrap();
        assert!(failed.is_empty(), "calls failed while B moved: {failed:?}");
        println!("{} calls, none failed", calls.load(Ordering::Relaxed));
    });
}
