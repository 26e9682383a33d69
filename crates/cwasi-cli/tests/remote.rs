//! Remote mode between "nodes" on one machine: processes with different
//! `CWASI_NODE` names and node directories, joined only by a real
//! redis-server that the test starts on a free loopback port.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    assert_producer_ok, produce_through_broker, run_with_timeout, Scratch, Server, LIMIT,
};
use cwasi_runtime::broker::{Broker, BrokerConfig};
use cwasi_runtime::{ErrorCode, Limits, Mode, NodeDirectory, Runtime};
use test_programs_artifacts as progs;
use test_support::RedisServer;

/// A `cwasi serve` process on a node of its own: its own `CWASI_NODE` and
/// node directory, sharing only the broker.
fn node_server(redis: &str, node: &str, dir: &Path, module: &str, name: &str, ns: &str) -> Server {
    Server::start(
        dir,
        module,
        name,
        ns,
        &["--call-timeout-ms", "2000"],
        &[("CWASI_REDIS_URL", redis), ("CWASI_NODE", node)],
    )
}

fn broker(url: &str, node: &str) -> Arc<Broker> {
    Broker::new(BrokerConfig::new(url, node)).unwrap()
}

fn remote_caller(url: &str, dir: &Path, timeout: Duration) -> Runtime {
    Runtime::builder()
        .limits(Limits {
            call_timeout: timeout,
            ..Limits::default()
        })
        .node_directory(NodeDirectory::open(dir).unwrap())
        .broker(broker(url, "node1"))
        .build()
        .unwrap()
}

/// Waits until node1 sees `name` announced by another node.
fn wait_announced(rt: &Runtime, ns: &str, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = rt.explain(ns, name) {
            assert_eq!(s.mode, Mode::RemoteBroker, "{s}");
            return;
        }
        assert!(Instant::now() < deadline, "{name} was never announced");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many keys match `pattern` right now (`:N`).
fn count_keys(redis: &RedisServer, pattern: &str) -> String {
    redis
        .command(&["EVAL", "return #redis.call('KEYS', ARGV[1])", "0", pattern])
        .unwrap_or_default()
}

#[test]
fn two_nodes_on_one_machine_exchange_every_payload_remotely() {
    let redis = RedisServer::start();
    let scratch = Scratch::new("remote-nodes");
    let (d1, d2) = (scratch.0.join("node1"), scratch.0.join("node2"));
    let _server = node_server(&redis.url(), "node2", &d2, progs::ECHO, "echo", "b");
    for size in [0usize, 1, 64 << 10, 10 << 20, 100 << 20] {
        let out = produce_through_broker(&scratch, &d1, &redis.url(), size);
        assert_producer_ok(
            &out,
            size,
            "producer -> echo: remote-broker ('echo' is served on node(s) node2 (namespace 'b'), \
             through the broker: not directly, node 'node2' announced no data address",
        );
    }
    // Requests and responses from PAYLOAD_KEY_MIN on travel in keys of their
    // own (the 10 MiB and 100 MiB ones here); every answer deletes its
    // request's key and its entry, and each caller took its reply and
    // response.
    const _: () = assert!(cwasi_runtime::broker::PAYLOAD_KEY_MIN <= 10 << 20);
    for pattern in [
        "cwasi:*:payload:*",
        "cwasi:*:response:*",
        "cwasi:*:reply:*",
        "cwasi:*:claim:*",
    ] {
        assert_eq!(count_keys(&redis, pattern), ":0", "{pattern} left behind");
    }
    assert_eq!(
        redis
            .command(&["XLEN", "cwasi:{b/echo}:stream"])
            .unwrap_or_default(),
        ":0"
    );
}

#[test]
fn soak_with_a_server_killed_and_restarted_loses_and_duplicates_nothing() {
    let redis = RedisServer::start();
    let scratch = Scratch::new("remote-soak");
    let (d1, d2) = (scratch.0.join("node1"), scratch.0.join("node2"));
    let start_echo = || node_server(&redis.url(), "node2", &d2, progs::ECHO, "echo", "b");
    let server = Arc::new(Mutex::new(Some(start_echo())));
    let timeout = Duration::from_secs(2);
    let rt = remote_caller(&redis.url(), &d1, timeout);
    wait_announced(&rt, "a", "echo");

    const CALLS: u64 = 10_000;
    const THREADS: u64 = 4;
    let (ok, failed, wrong, late) = (
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    );
    let codes = Mutex::new(std::collections::BTreeMap::<String, u64>::new());
    let done = AtomicBool::new(false);
    let kills = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            // Kill and restart the server at pseudo-random moments.
            let mut x = 0x2545_f491_4f6c_dd1du64;
            while !done.load(Ordering::Relaxed) || kills.load(Ordering::Relaxed) < 5 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                std::thread::sleep(Duration::from_millis(200 + x % 600));
                server.lock().unwrap().take();
                kills.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50 + x % 200));
                *server.lock().unwrap() = Some(start_echo());
            }
        });
        for t in 0..THREADS {
            let (rt, ok, failed, wrong, late, codes) = (&rt, &ok, &failed, &wrong, &late, &codes);
            s.spawn(move || {
                for i in 0..CALLS / THREADS {
                    // Every 50th request is large enough to travel in a key
                    // of its own.
                    let pad = if i % 50 == 7 {
                        cwasi_runtime::broker::PAYLOAD_KEY_MIN + 100
                    } else {
                        (i % 64) as usize
                    };
                    let payload = format!("call {t}/{i} {}", "x".repeat(pad));
                    let started = Instant::now();
                    match rt.call("a", "echo", payload.as_bytes()) {
                        Ok(r) if r == payload.as_bytes() => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(_) => wrong.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            *codes
                                .lock()
                                .unwrap()
                                .entry(e.code.name().to_string())
                                .or_default() += 1;
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    if started.elapsed() > timeout + Duration::from_secs(3) {
                        late.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        // The calls end; the killer finishes its fifth round at least.
        while ok.load(Ordering::Relaxed)
            + failed.load(Ordering::Relaxed)
            + wrong.load(Ordering::Relaxed)
            < CALLS
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        done.store(true, Ordering::Relaxed);
    });
    let (ok, failed, wrong, late) = (
        ok.into_inner(),
        failed.into_inner(),
        wrong.into_inner(),
        late.into_inner(),
    );
    println!(
        "soak: {CALLS} calls, {ok} correct, {failed} failed with a clear error {:?}, {wrong} wrong, \
         {late} over the timeout, {} server kills",
        codes.lock().unwrap(),
        kills.load(Ordering::Relaxed)
    );
    assert_eq!(ok + failed + wrong, CALLS);
    assert_eq!(wrong, 0, "a caller got a result that was not its own");
    assert_eq!(late, 0, "a call outlived its timeout");
    assert!(kills.load(Ordering::Relaxed) >= 5);
    assert!(ok > CALLS / 2, "most calls should succeed");

    // Nothing stays stuck: once its lease is over, every pending entry is
    // reclaimed and answered or dropped, and the stream drains.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let len = redis
            .command(&["XLEN", "cwasi:{b/echo}:stream"])
            .unwrap_or_default();
        if len == ":0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream never drained: XLEN {len}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The payload keys of large requests go with their answers, or expire
    // shortly after their deadline when the request was dropped.
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_keys(&redis, "cwasi:*:payload:*") != ":0" {
        assert!(
            Instant::now() < deadline,
            "payload keys never went away: {}",
            count_keys(&redis, "cwasi:*:payload:*")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn calls_resume_after_redis_restarts() {
    let mut redis = RedisServer::start();
    let scratch = Scratch::new("remote-restart");
    let (d1, d2) = (scratch.0.join("node1"), scratch.0.join("node2"));
    let _server = node_server(&redis.url(), "node2", &d2, progs::ECHO, "echo", "b");
    let timeout = Duration::from_secs(2);
    let rt = remote_caller(&redis.url(), &d1, timeout);
    wait_announced(&rt, "a", "echo");
    assert_eq!(rt.call("a", "echo", b"before").unwrap(), b"before");

    redis.kill();
    let started = Instant::now();
    let err = rt.call("a", "echo", b"while down").unwrap_err();
    assert!(
        matches!(err.code, ErrorCode::Transport | ErrorCode::Timeout),
        "{err}"
    );
    assert!(
        err.message.contains("broker") || err.message.contains("did not answer"),
        "{err}"
    );
    assert!(
        started.elapsed() < timeout + Duration::from_secs(10),
        "the failure took too long"
    );

    // Redis comes back empty: the server recreates its group and announces
    // itself again by itself, and the caller's calls go through again.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rt.call("a", "echo", b"after") {
            Ok(r) => {
                assert_eq!(r, b"after");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "calls never resumed: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let fresh = remote_caller(&redis.url(), &d1, timeout);
    wait_announced(&fresh, "a", "echo");
}

#[test]
fn an_unreachable_broker_gives_a_clear_error() {
    let port = test_support::free_port();
    let scratch = Scratch::new("remote-down");
    let out = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_cwasi"))
            .args(["call", "echo", "--data", "x", "--runtime-dir"])
            .arg(scratch.0.join("node"))
            .env("CWASI_REDIS_URL", format!("redis://127.0.0.1:{port}"))
            .env("CWASI_NODE", "node1"),
        LIMIT,
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    // Not UNKNOWN_FUNCTION: the function may well be on another node.
    assert!(
        out.stderr.contains(
            "TRANSPORT (-5): function 'echo' not found on this node, and the cluster \
                       registry could not be asked"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(&format!("cluster registry at redis://127.0.0.1:{port}")),
        "{}",
        out.stderr
    );
}
