//! The broker path on a real Redis Cluster (3 masters, 3 replicas, started
//! by the test on loopback): two nodes exchange every payload through it,
//! and a failover soak kills the master that owns the function's stream
//! while calls run.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{assert_producer_ok, produce_through_broker, Scratch, Server};
use cwasi_runtime::broker::{Broker, BrokerConfig};
use cwasi_runtime::{Limits, Mode, NodeDirectory, Runtime};
use test_programs_artifacts as progs;
use test_support::RedisCluster;

/// The stream of `echo` in namespace `b`, in broker protocol version 4.
const STREAM: &str = "cwasi:{b/echo}:stream";

/// A `cwasi serve` of `echo` (namespace `b`) on node2, through `url`.
fn echo_on_node2(url: &str, dir: &Path) -> Server {
    Server::start(
        dir,
        progs::ECHO,
        "echo",
        "b",
        &["--call-timeout-ms", "2000"],
        &[("CWASI_REDIS_URL", url), ("CWASI_NODE", "node2")],
    )
}

/// Runs `cmd` on the master that owns `STREAM` now.
fn on_stream_master(cluster: &RedisCluster, cmd: &[&str]) -> String {
    let slot = cluster.slot(STREAM).expect("the stream's slot");
    let master = cluster
        .master_of(slot)
        .expect("a master of the stream's slot");
    cluster.nodes()[master].command(cmd).unwrap_or_default()
}

#[test]
fn two_nodes_exchange_every_payload_through_a_cluster() {
    let cluster = RedisCluster::start(3, 1);
    let scratch = Scratch::new("cluster-nodes");
    let (d1, d2) = (scratch.0.join("node1"), scratch.0.join("node2"));
    let _server = echo_on_node2(&cluster.url(), &d2);
    for size in [0usize, 1, 64 << 10, 10 << 20] {
        let out = produce_through_broker(&scratch, &d1, &cluster.url(), size);
        assert_producer_ok(
            &out,
            size,
            "producer -> echo: remote-broker ('echo' is served on node(s) node2 (namespace 'b'), \
             through the broker",
        );
    }
    // Every answer deleted its entry, on the master that owns the stream.
    assert_eq!(on_stream_master(&cluster, &["XLEN", STREAM]), ":0");
}

/// The soak's outcome counters.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    wrong: AtomicU64,
    late: AtomicU64,
    codes: Mutex<BTreeMap<String, u64>>,
    /// The first and the last message of each code.
    samples: Mutex<BTreeMap<String, (String, String)>>,
}

impl Tally {
    fn done(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
            + self.wrong.load(Ordering::Relaxed)
    }
}

#[test]
fn failover_soak_loses_no_acknowledged_call_and_returns_nothing_wrong() {
    let mut cluster = RedisCluster::start(3, 1);
    let scratch = Scratch::new("cluster-soak");
    let (d1, d2) = (scratch.0.join("node1"), scratch.0.join("node2"));
    let _server = echo_on_node2(&cluster.url(), &d2);
    let timeout = Duration::from_secs(3);
    let broker = Broker::new(BrokerConfig::new(cluster.url(), "node1")).unwrap();
    let rt = Runtime::builder()
        .limits(Limits {
            call_timeout: timeout,
            ..Limits::default()
        })
        .node_directory(NodeDirectory::open(&d1).unwrap())
        .broker(broker)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while rt.explain("a", "echo").map(|s| s.mode) != Ok(Mode::RemoteBroker) {
        assert!(Instant::now() < deadline, "echo was never announced");
        std::thread::sleep(Duration::from_millis(50));
    }

    const CALLS: u64 = 2_000;
    const THREADS: u64 = 4;
    let tally = Tally::default();
    let killed = AtomicBool::new(false);
    let slot = cluster.slot(STREAM).unwrap();
    let victim = cluster.master_of(slot).expect("the stream's master");
    let cluster = Mutex::new(&mut cluster);
    std::thread::scope(|s| {
        // A quarter of the way in, SIGKILL the master of the stream's slot.
        s.spawn(|| {
            while tally.done() < CALLS / 4 {
                std::thread::sleep(Duration::from_millis(5));
            }
            cluster.lock().unwrap().nodes_mut()[victim].kill();
            killed.store(true, Ordering::Relaxed);
        });
        for t in 0..THREADS {
            let (rt, tally) = (&rt, &tally);
            s.spawn(move || {
                for i in 0..CALLS / THREADS {
                    let pad = if i % 50 == 7 {
                        cwasi_runtime::broker::PAYLOAD_KEY_MIN + 100
                    } else {
                        (i % 64) as usize
                    };
                    let payload = format!("call {t}/{i} {}", "x".repeat(pad));
                    let started = Instant::now();
                    match rt.call("a", "echo", payload.as_bytes()) {
                        Ok(r) if r == payload.as_bytes() => {
                            tally.ok.fetch_add(1, Ordering::Relaxed)
                        }
                        Ok(_) => tally.wrong.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            tally
                                .samples
                                .lock()
                                .unwrap()
                                .entry(e.code.name().to_string())
                                .or_insert_with(|| (e.message.clone(), String::new()))
                                .1 = e.message.clone();
                            *tally
                                .codes
                                .lock()
                                .unwrap()
                                .entry(e.code.name().to_string())
                                .or_default() += 1;
                            tally.failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    // Its deadline, and the grace for a server's own
                    // timeout answer.
                    if started.elapsed() > timeout + Duration::from_secs(3) {
                        tally.late.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let cluster = cluster.into_inner().unwrap();
    let (ok, failed, wrong, late) = (
        tally.ok.into_inner(),
        tally.failed.into_inner(),
        tally.wrong.into_inner(),
        tally.late.into_inner(),
    );
    println!(
        "cluster failover soak: {CALLS} calls, {ok} correct, {failed} failed with a clear error \
         {:?}, {wrong} wrong, {late} over the deadline; master {victim} of slot {slot} killed; \
         first and last message of each code: {:?}",
        tally.codes.lock().unwrap(),
        tally.samples.lock().unwrap()
    );
    assert!(
        killed.load(Ordering::Relaxed),
        "the master was never killed"
    );
    assert_eq!(ok + failed + wrong, CALLS);
    assert_eq!(wrong, 0, "a caller got a result that was not its own");
    assert_eq!(late, 0, "a call outlived its deadline");
    assert!(ok > CALLS / 2, "most calls should succeed");

    // A replica took over the slot, and the stream drains there: every
    // entry was answered, or reclaimed once its lease was over.
    cluster
        .wait_ok(Duration::from_secs(30))
        .expect("the cluster recovers");
    let promoted = cluster.master_of(slot).expect("a new master of the slot");
    assert_ne!(promoted, victim);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let len = on_stream_master(cluster, &["XLEN", STREAM]);
        let pending = on_stream_master(cluster, &["XPENDING", STREAM, "cwasi", "-", "+", "10"]);
        if len == ":0" && pending == "*0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream never drained: XLEN {len}, XPENDING {pending}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
