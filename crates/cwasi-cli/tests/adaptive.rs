//! Adaptive paths (docs/architecture.md, "How a route changes"): a route
//! follows its callee's placement while a steady caller calls, and a call
//! that nothing ran is made again on the next path.
//!
//! Three nodes on one machine, each in a network namespace of its own
//! (`test_support::netns`: veth pairs and a bridge) with its own address,
//! node directory (`n1`, the caller's; `n2`; `n3`) and `CWASI_NODE`; one
//! real Redis in n1's namespace; direct calls over plain TCP between the
//! nodes' addresses. The caller is a runtime in this process, on threads
//! that entered n1's namespace, calling `f` every 2 ms; the replicas are
//! real `cwasi serve` processes in their nodes' namespaces, started,
//! stopped with SIGTERM (a planned stop) and killed with SIGKILL (a crash)
//! while it calls. Every call's answer is checked, and the counts per path
//! and the switch delays are printed (they are measured in `cwasi bench`,
//! not asserted here).
//!
//! These tests need root and iproute2 (CI has both): where namespaces
//! cannot be made they fail under CI and print a loud SKIPPED elsewhere.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::guests::private_dir;
use common::{print_paths, wait_announced, Scratch, Server, StopOnDrop};
use cwasi_runtime::broker::{Broker, BrokerConfig};
use cwasi_runtime::{
    DirectConfig, ErrorCode, HopReport, Limits, Mode, NodeDirectory, Runtime, HOST_CALLER,
};
use test_programs_artifacts as progs;
use test_support::netns::{cluster_or_skip, NetCluster, NetNode};
use test_support::RedisServer;

/// What every call sends; `echo` answers it unchanged.
const REQUEST: &[u8] = b"adaptive paths: the same answer on every path";

/// How long a test waits for something that takes milliseconds.
const PATIENCE: Duration = Duration::from_secs(20);

/// One call of the steady caller.
#[derive(Debug, Clone)]
struct Call {
    /// When it returned.
    at: Instant,
    /// Its error code, if it failed (a wrong answer is a failure too).
    failed: Option<(ErrorCode, String)>,
    /// The edge's path right after it.
    mode: Option<Mode>,
}

/// Three nodes on this machine, each in its own network namespace,
/// sharing one Redis (in n1's).
struct Cluster {
    redis: RedisServer,
    scratch: Scratch,
    n1: PathBuf,
    n2: PathBuf,
    net: NetCluster,
}

impl Cluster {
    /// The nodes, or `None` when network namespaces cannot be made here
    /// (after a loud SKIPPED; under CI, a panic).
    fn new(tag: &str) -> Option<Cluster> {
        let net = cluster_or_skip(3)?;
        let redis = RedisServer::start_in(net.node(0).name(), net.node(0).addr(), &[]);
        let scratch = Scratch::new(tag);
        let n1 = private_dir(&scratch, "n1");
        let n2 = private_dir(&scratch, "n2");
        Some(Cluster {
            redis,
            scratch,
            n1,
            n2,
            net,
        })
    }

    /// The network node `node` (`n1`, `n2` or `n3`).
    fn node(&self, node: &str) -> &NetNode {
        let i = match node {
            "n1" => 0,
            "n2" => 1,
            "n3" => 2,
            other => panic!("no node {other}"),
        };
        self.net.node(i)
    }

    /// Where `node` takes direct calls: its address, any free port.
    fn listen(&self, node: &str) -> String {
        format!("{}:0", self.node(node).addr())
    }

    /// Runs `f` on a thread of `node`'s network namespace (threads it
    /// starts are there too).
    fn on<T: Send>(&self, node: &str, f: impl FnOnce() -> T + Send) -> T {
        self.node(node).run(f)
    }

    /// The environment of a server on `node`.
    fn env(&self, node: &str) -> Vec<(String, String)> {
        vec![
            ("CWASI_REDIS_URL".into(), self.redis.url()),
            ("CWASI_NODE".into(), node.into()),
            ("CWASI_DIRECT_PLAIN".into(), "1".into()),
        ]
    }

    /// `f` served on `node` with node directory `dir`, taking direct calls
    /// on the node's address when `direct`.
    fn serve(&self, node: &str, dir: &Path, direct: bool) -> Server {
        let listen = self.listen(node);
        let extra: &[&str] = if direct {
            &["--listen", &listen, "--drain-secs", "5"]
        } else {
            &["--drain-secs", "5"]
        };
        self.serve_module(node, dir, progs::ECHO, extra)
    }

    /// `module` served as `f` on `node` (in its network namespace), with
    /// extra arguments.
    fn serve_module(&self, node: &str, dir: &Path, module: &str, extra: &[&str]) -> Server {
        let mut cmd = self.node(node).command(env!("CARGO_BIN_EXE_cwasi"));
        cmd.args(["serve", module, "--name", "f", "--namespace", "a"])
            .arg("--runtime-dir")
            .arg(dir)
            .args(extra)
            .envs(self.env(node));
        Server::from_command(cmd, dir, "f", "a")
    }

    /// The caller: a runtime of node n1, with its node directory, the
    /// registry, and plain TCP to other nodes; to be built and used on a
    /// thread of n1's namespace ([`Cluster::on`]). It does not embed the
    /// functions served on its node, so that a replica there is called in
    /// local mode (embedding it, as it would by default in the same
    /// namespace, leaves nothing to move between).
    fn caller(&self) -> Runtime {
        self.caller_on("n1", &self.n1)
    }

    /// A caller like [`Cluster::caller`] on `node`, with node directory
    /// `dir`.
    fn caller_on(&self, node: &str, dir: &Path) -> Runtime {
        self.caller_with(node, dir, Limits::default())
    }

    /// A caller like [`Cluster::caller_on`], with `limits`.
    fn caller_with(&self, node: &str, dir: &Path, limits: Limits) -> Runtime {
        Runtime::builder()
            .limits(limits)
            .node(node)
            .embed_served(false)
            .node_directory(NodeDirectory::open(dir).unwrap())
            .broker(Broker::new(BrokerConfig::new(self.redis.url(), node)).unwrap())
            .direct(DirectConfig {
                tls: None,
                allow_plain: true,
            })
            .build()
            .unwrap()
    }
}

/// Waits until `rt` finds `f` (a server registers in its node directory
/// before it announces itself in the cluster registry).
fn wait_findable(rt: &Runtime) {
    let deadline = Instant::now() + PATIENCE;
    while let Err(e) = rt.explain("a", "f") {
        assert!(Instant::now() < deadline, "f is never found: {e}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The path the caller's edge to `f` takes now.
fn current_mode(rt: &Runtime) -> Option<Mode> {
    rt.hops()
        .into_iter()
        .find(|h| h.caller == HOST_CALLER && h.target == "f" && h.current)
        .map(|h| h.mode)
}

/// A caller calling `f` every 2 ms until stopped, logging every call.
struct Steady {
    stop: AtomicBool,
    calls: Mutex<Vec<Call>>,
}

impl Steady {
    fn new() -> Arc<Steady> {
        Arc::new(Steady {
            stop: AtomicBool::new(false),
            calls: Mutex::new(Vec::new()),
        })
    }

    /// Stops the caller when dropped, also when the test panics (a
    /// scope would otherwise wait for the caller forever).
    fn stop_on_drop(&self) -> StopOnDrop<'_> {
        StopOnDrop(&self.stop)
    }

    fn run(&self, rt: &Runtime) {
        while !self.stop.load(Ordering::Relaxed) {
            let failed = match rt.call_within("a", "f", REQUEST, Duration::from_secs(5)) {
                Ok(answer) if answer == REQUEST => None,
                Ok(answer) => Some((ErrorCode::Transport, format!("wrong answer: {answer:?}"))),
                Err(e) => Some((e.code, e.message)),
            };
            let call = Call {
                at: Instant::now(),
                failed,
                mode: current_mode(rt),
            };
            self.calls.lock().unwrap().push(call);
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn snapshot(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Waits until a call after `since` took `mode`; returns how long after
    /// `since` the first such call returned.
    fn wait_for_mode(&self, mode: Mode, since: Instant, what: &str) -> Duration {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(c) = self
                .snapshot()
                .iter()
                .find(|c| c.at >= since && c.failed.is_none() && c.mode == Some(mode))
            {
                return c.at - since;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: no call moved to {mode} within {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until `n` more calls returned.
    fn wait_calls(&self, n: usize) {
        let start = self.snapshot().len();
        let deadline = Instant::now() + PATIENCE;
        while self.snapshot().len() < start + n {
            assert!(Instant::now() < deadline, "the caller stalled");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The failed calls between `from` and `to`.
    fn failures(&self, from: Instant, to: Instant) -> Vec<Call> {
        self.snapshot()
            .into_iter()
            .filter(|c| c.at >= from && c.at <= to && c.failed.is_some())
            .collect()
    }
}

/// Prints the calls per path and failure code, as the hop table counts
/// them.
fn print_counts(rt: &Runtime, calls: &[Call]) {
    print_paths(rt, "f");
    let failed = calls.iter().filter(|c| c.failed.is_some()).count();
    println!("steady caller: {} calls, {failed} failed", calls.len());
}

#[test]
fn a_route_follows_its_callee_between_nodes_and_planned_stops_fail_no_call() {
    let Some(cluster) = Cluster::new("adaptive-moves") else {
        return;
    };
    let _remote = cluster.serve("n2", &cluster.n2, true);
    cluster.on("n1", || follows_between_nodes(&cluster));
}

/// The body of the test above, on a thread of n1's namespace.
fn follows_between_nodes(cluster: &Cluster) {
    let rt = cluster.caller();
    let steady = Steady::new();
    wait_findable(&rt);
    std::thread::scope(|s| {
        s.spawn(|| steady.run(&rt));
        let _stop = steady.stop_on_drop();
        let begin = Instant::now();
        // Served on n2 only: the route is remote-direct.
        steady.wait_for_mode(Mode::RemoteDirect, begin, "served on n2 only");
        steady.wait_calls(50);

        // A replica appears on the caller's node: calls move to it.
        let mut local = cluster.serve("n1", &cluster.n1, false);
        let appeared = Instant::now();
        let delay = steady.wait_for_mode(Mode::Local, appeared, "a replica on n1");
        println!("node directory: a new local replica took calls {delay:?} after its record");
        steady.wait_calls(50);

        // A planned stop of the local replica: no call fails, they move to n2.
        let stopping = Instant::now();
        let status = local.terminate_within(Duration::from_secs(10));
        assert!(status.is_some_and(|s| s.success()), "SIGTERM: {status:?}");
        let delay = steady.wait_for_mode(Mode::RemoteDirect, stopping, "after SIGTERM");
        println!("planned stop: calls were on n2 {delay:?} after SIGTERM");
        steady.wait_calls(50);
        let failed = steady.failures(stopping, Instant::now());
        assert!(
            failed.is_empty(),
            "calls failed on a planned stop: {failed:?}"
        );

        // A local replica returns: calls come back to it.
        let mut local = cluster.serve("n1", &cluster.n1, false);
        let back = Instant::now();
        steady.wait_for_mode(Mode::Local, back, "a replica back on n1");
        steady.wait_calls(50);
        let failed = steady.failures(begin, Instant::now());
        assert!(
            failed.is_empty(),
            "calls failed while replicas came and went: {failed:?}"
        );

        // A crash of the replica in use: only the calls in flight at the
        // kill may fail (TRANSPORT); every later one is served by n2.
        local.sigkill();
        let killed = Instant::now();
        steady.wait_for_mode(Mode::RemoteDirect, killed, "after SIGKILL");
        steady.wait_calls(50);
        let failed = steady.failures(killed, Instant::now());
        println!("SIGKILL: {} calls failed after the kill", failed.len());
        assert!(
            failed.len() <= 1,
            "more than the call in flight failed after a SIGKILL: {failed:?}"
        );
        for c in &failed {
            assert_eq!(c.failed.as_ref().unwrap().0, ErrorCode::Transport, "{c:?}");
        }
        steady.stop.store(true, Ordering::Relaxed);
    });
    let calls = steady.snapshot();
    print_counts(&rt, &calls);
    let hops = rt.hops();
    let on = |m: Mode| {
        hops.iter()
            .filter(|h| h.target == "f" && h.mode == m)
            .map(|h| h.calls)
            .sum::<u64>()
    };
    assert!(
        on(Mode::Local) > 0 && on(Mode::RemoteDirect) > 0,
        "{hops:?}"
    );
    let explained: Vec<String> = rt.decisions().iter().map(|d| d.to_string()).collect();
    println!("--explain:\n{}", explained.join("\n"));
    assert!(
        explained
            .iter()
            .any(|d| d.contains("-> f: local (switched from remote-direct")),
        "no switch to local in --explain: {explained:#?}"
    );
    assert!(
        explained
            .iter()
            .any(|d| d.contains("-> f: remote-direct (switched from local")),
        "no switch to remote-direct in --explain: {explained:#?}"
    );
}

#[test]
fn a_route_on_the_broker_moves_to_a_data_address_when_one_is_announced_and_back() {
    let Some(cluster) = Cluster::new("adaptive-broker") else {
        return;
    };
    // n2 announces no data address: the broker is the only way there.
    let _n2 = cluster.serve("n2", &cluster.n2, false);
    cluster.on("n1", || broker_and_back(&cluster));
}

/// The body of the test above, on a thread of n1's namespace.
fn broker_and_back(cluster: &Cluster) {
    let rt = cluster.caller();
    let steady = Steady::new();
    let n3 = private_dir(&cluster.scratch, "n3");
    wait_findable(&rt);
    std::thread::scope(|s| {
        s.spawn(|| steady.run(&rt));
        let _stop = steady.stop_on_drop();
        let begin = Instant::now();
        steady.wait_for_mode(Mode::RemoteBroker, begin, "no data address");
        steady.wait_calls(20);

        // Node n3 serves f with a data address.
        let mut direct = cluster.serve("n3", &n3, true);
        let announced = Instant::now();
        let delay = steady.wait_for_mode(Mode::RemoteDirect, announced, "n3's address");
        println!("registry: a data address took calls {delay:?} after its server registered");
        steady.wait_calls(20);

        // n3 stops (withdrawing its announcement): back to the broker.
        let stopping = Instant::now();
        let status = direct.terminate_within(Duration::from_secs(10));
        assert!(status.is_some_and(|s| s.success()), "SIGTERM: {status:?}");
        steady.wait_for_mode(Mode::RemoteBroker, stopping, "n3 withdrawn");
        steady.wait_calls(20);
        let failed = steady.failures(begin, Instant::now());
        assert!(failed.is_empty(), "calls failed: {failed:?}");
        steady.stop.store(true, Ordering::Relaxed);
    });
    print_counts(&rt, &steady.snapshot());
}

#[test]
fn a_rolling_restart_of_three_replicas_under_two_callers_fails_no_call() {
    let Some(cluster) = Cluster::new("adaptive-rolling") else {
        return;
    };
    let n3 = private_dir(&cluster.scratch, "n3");
    let nodes: [(&str, &Path); 3] = [("n1", &cluster.n1), ("n2", &cluster.n2), ("n3", &n3)];
    let mut replicas: Vec<Server> = nodes
        .iter()
        .map(|(node, dir)| cluster.serve(node, dir, true))
        .collect();
    // One caller on n1 and one on n2, each with a replica on its node, each
    // on a thread of its node's namespace.
    let steady = [Steady::new(), Steady::new()];
    std::thread::scope(|s| {
        let _stop = [steady[0].stop_on_drop(), steady[1].stop_on_drop()];
        let callers: Vec<_> = nodes[..2]
            .iter()
            .zip(&steady)
            .map(|(&(node, dir), st)| {
                let cluster = &cluster;
                s.spawn(move || {
                    cluster.on(node, || {
                        let rt = cluster.caller_on(node, dir);
                        wait_findable(&rt);
                        st.run(&rt);
                        // One caller's lines together.
                        static PRINTING: Mutex<()> = Mutex::new(());
                        let _one = PRINTING.lock().unwrap_or_else(|p| p.into_inner());
                        println!("caller on {node}:");
                        print_counts(&rt, &st.snapshot());
                    })
                })
            })
            .collect();
        let begin = Instant::now();
        for st in &steady {
            st.wait_for_mode(Mode::Local, begin, "a replica on the caller's node");
        }
        for (i, (node, dir)) in nodes.iter().enumerate() {
            let status = replicas[i].terminate_within(Duration::from_secs(10));
            assert!(
                status.is_some_and(|s| s.success()),
                "SIGTERM of {node}: {status:?}"
            );
            for st in &steady {
                st.wait_calls(30);
            }
            replicas[i] = cluster.serve(node, dir, true);
            let back = Instant::now();
            for st in &steady {
                st.wait_calls(30);
            }
            println!("{node} restarted");
            if i < 2 {
                steady[i].wait_for_mode(Mode::Local, back, "the caller's replica back");
            }
        }
        // The callers end before the replicas are dropped (killed).
        for st in &steady {
            st.stop.store(true, Ordering::Relaxed);
        }
        for c in callers {
            c.join().unwrap();
        }
    });
    for st in &steady {
        let calls = st.snapshot();
        let failed: Vec<&Call> = calls.iter().filter(|c| c.failed.is_some()).collect();
        assert!(
            failed.is_empty(),
            "calls failed in a rolling restart: {failed:?}"
        );
    }
}

/// Four callers on one runtime make `calls` calls of `f` (`busy`, 40 ms
/// each) together; returns the calls per second.
fn four_callers(rt: &Runtime, calls: usize) -> f64 {
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..calls {
                    let answer = rt.call_within("a", "f", b"40", Duration::from_secs(20));
                    assert_eq!(answer.as_deref(), Ok(&b"40"[..]));
                }
            });
        }
    });
    (4 * calls) as f64 / started.elapsed().as_secs_f64()
}

/// The caller's counters of `f` on `mode`.
fn hop(rt: &Runtime, mode: Mode) -> Option<HopReport> {
    rt.hops()
        .into_iter()
        .find(|h| h.target == "f" && h.mode == mode)
}

#[test]
fn calls_spill_from_a_full_local_replica_to_another_node_and_come_back() {
    let Some(cluster) = Cluster::new("adaptive-spill") else {
        return;
    };
    // n1 serves f with one call slot; n2 serves it too, idle, directly.
    let _local = cluster.serve_module("n1", &cluster.n1, progs::BUSY, &["--max-concurrent", "1"]);
    let listen = cluster.listen("n2");
    let _remote = cluster.serve_module("n2", &cluster.n2, progs::BUSY, &["--listen", &listen]);
    cluster.on("n1", || spill_and_back(&cluster));
}

/// The body of the test above, on a thread of n1's namespace.
fn spill_and_back(cluster: &Cluster) {
    wait_announced(&cluster.redis.url(), "f", "a");

    // The local replica alone: a caller that does not spill.
    let alone = cluster.caller_with(
        "n1",
        &cluster.n1,
        Limits {
            spill_over: false,
            ..Limits::default()
        },
    );
    let alone_rate = four_callers(&alone, 5);
    let local = hop(&alone, Mode::Local).expect("no local calls");
    assert_eq!(local.calls, 20, "{local:?}");
    assert!(hop(&alone, Mode::RemoteDirect).is_none());

    // Spilling: the calls that would wait for the slot go to n2.
    let rt = cluster.caller();
    let decision = rt.explain("a", "f").unwrap();
    assert!(
        decision
            .reason
            .contains("further calls spill to remote-direct"),
        "{decision}"
    );
    let spill_rate = four_callers(&rt, 5);
    let local = hop(&rt, Mode::Local).expect("no local calls");
    let remote = hop(&rt, Mode::RemoteDirect).expect("no call spilled to n2");
    println!(
        "four callers, 40 ms calls: {alone_rate:.1} calls/s on the local replica alone, \
         {spill_rate:.1} calls/s spilling ({} local, {} on n2, {} spilled)",
        local.calls, remote.calls, local.spilled
    );
    assert_eq!(local.calls + remote.calls, 20);
    assert!(
        local.calls > 0 && local.spilled == remote.calls,
        "{local:?}"
    );

    // When the load stops, calls are local again.
    for _ in 0..3 {
        assert_eq!(rt.call("a", "f", b"1").unwrap(), b"1");
    }
    let after = hop(&rt, Mode::Local).unwrap();
    assert_eq!(after.calls, local.calls + 3, "{after:?}");
    assert!(after.current);
}

#[test]
fn calls_spill_from_a_local_replica_that_other_callers_keep_busy_and_come_back() {
    let Some(cluster) = Cluster::new("adaptive-queue") else {
        return;
    };
    // n1 serves f with one call slot; n2 serves it too, idle, directly.
    let _local = cluster.serve_module("n1", &cluster.n1, progs::BUSY, &["--max-concurrent", "1"]);
    let listen = cluster.listen("n2");
    let _remote = cluster.serve_module("n2", &cluster.n2, progs::BUSY, &["--listen", &listen]);
    cluster.on("n1", || spill_on_queueing(&cluster));
}

/// The body of the test above, on a thread of n1's namespace.
fn spill_on_queueing(cluster: &Cluster) {
    wait_announced(&cluster.redis.url(), "f", "a");
    let rt = cluster.caller();
    assert_eq!(rt.call("a", "f", b"1").unwrap(), b"1");
    assert_eq!(hop(&rt, Mode::Local).map(|h| h.calls), Some(1));

    // Another process's callers keep the one slot busy (its own calls
    // never fill it: it calls one at a time). Its answers say how long
    // they queued, and it spills.
    let hog = cluster.caller_with(
        "n1",
        &cluster.n1,
        Limits {
            spill_over: false,
            ..Limits::default()
        },
    );
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        for _ in 0..2 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let answer = hog.call_within("a", "f", b"30", Duration::from_secs(20));
                    assert_eq!(answer.as_deref(), Ok(&b"30"[..]));
                }
            });
        }
        std::thread::sleep(Duration::from_millis(100));
        // Over half a second: every 100 ms one call rechecks the replica,
        // which declines it (nothing ran) while the slot is still busy,
        // and the call is made on n2 instead; none fails.
        for _ in 0..CALLS {
            assert_eq!(rt.call("a", "f", b"2").unwrap(), b"2");
        }
        stop.store(true, Ordering::Relaxed);
    });
    const CALLS: u64 = 200;
    let local = hop(&rt, Mode::Local).expect("no local calls");
    let remote = hop(&rt, Mode::RemoteDirect).expect("no call spilled to n2");
    println!(
        "one caller against a local replica kept busy by another process: {} local, {} on n2, \
         {} spilled, {} rechecks declined and made on n2",
        local.calls - 1,
        remote.calls,
        local.spilled,
        local.rerouted
    );
    assert_eq!(local.calls - 1 + remote.calls, CALLS);
    assert!(
        remote.calls >= CALLS * 3 / 4 && local.spilled == remote.calls,
        "{local:?} {remote:?}"
    );
    assert!(local.rerouted > 0, "no recheck was declined: {local:?}");

    // The other callers stopped: after a recheck, calls are local again.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        assert_eq!(rt.call("a", "f", b"1").unwrap(), b"1");
    }
    let after = hop(&rt, Mode::Local).unwrap();
    assert_eq!(after.calls, local.calls + 3, "{after:?}");
}
