//! Prometheus metrics of `cwasi serve --metrics`, scraped by a real
//! Prometheus (Debian's `prometheus`, started by the test): the calls the
//! test makes come back through PromQL, by mode, on the caller's side and
//! on the callee's.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{cwasi, wait_announced, Scratch, Server, LIMIT};
use test_programs_artifacts as progs;
use test_support::prometheus::{http_get, Prometheus};
use test_support::RedisServer;

fn metrics_addr() -> SocketAddr {
    format!("127.0.0.1:{}", test_support::free_port())
        .parse()
        .unwrap()
}

/// `sum by (mode)` of `metric`, as `mode -> value`, once Prometheus has
/// scraped what `expected` says (or panics after 30 s with what it had).
fn wait_for_sums(prometheus: &Prometheus, promql: &str, expected: &[(&str, f64)]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: Vec<(String, f64)> = prometheus
            .query(promql)
            .into_iter()
            .map(|(labels, v)| (labels["mode"].as_str().unwrap_or("").to_string(), v))
            .collect();
        let matches = expected
            .iter()
            .all(|(mode, want)| got.iter().any(|(m, v)| m == mode && v == want));
        if matches {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{promql}: expected {expected:?}, Prometheus has {got:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn prometheus_scrapes_the_calls_by_mode() {
    let scratch = Scratch::new("metrics");
    let dir = scratch.0.join("node");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let redis = RedisServer::start();
    let url = redis.url();
    let server_env = [("CWASI_REDIS_URL", url.as_str()), ("CWASI_NODE", "node-s")];
    let (echo_addr, relay_a_addr, relay_b_addr) = (metrics_addr(), metrics_addr(), metrics_addr());
    let metrics = |addr: &SocketAddr| ["--metrics".to_string(), addr.to_string()];

    // echo serves team-a; relay-a (team-a) embeds it, relay-b (team-b)
    // calls it locally.
    let m = metrics(&echo_addr);
    let m: Vec<&str> = m.iter().map(String::as_str).collect();
    let _echo = Server::start(&dir, progs::ECHO, "echo", "team-a", &m, &server_env);
    let mut relays = Vec::new();
    for (name, ns, addr) in [
        ("relay-a", "team-a", relay_a_addr),
        ("relay-b", "team-b", relay_b_addr),
    ] {
        let m = metrics(&addr);
        let extra = [m[0].as_str(), m[1].as_str(), "--env", "CWASI_NEXT=echo"];
        relays.push(Server::start(
            &dir,
            progs::TRANSFORM,
            name,
            ns,
            &extra,
            &server_env,
        ));
    }
    let (status, body) = http_get(echo_addr, "/metrics").expect("the metrics endpoint answers");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("# TYPE cwasi_served_calls counter"), "{body}");
    assert_eq!(http_get(echo_addr, "/other").map(|(s, _)| s), Some(404));

    let prometheus = Prometheus::start(&[echo_addr, relay_a_addr, relay_b_addr]);

    let call = |target: &str, dir: &std::path::Path, extra: &[&str]| {
        let dir = dir.to_str().unwrap();
        let mut args = vec!["call", target, "--data", "ping", "--runtime-dir", dir];
        args.extend_from_slice(extra);
        let out = cwasi(&args, LIMIT);
        assert_eq!(
            out.code,
            Some(0),
            "call {target}: {}\n{}",
            out.stdout,
            out.stderr
        );
    };
    for _ in 0..4 {
        call("relay-a", &dir, &["--namespace", "team-c"]);
    }
    for _ in 0..3 {
        call("relay-b", &dir, &["--namespace", "team-c"]);
    }
    // From another node (its own node directory), through the broker.
    let other_node = scratch.0.join("other-node");
    std::fs::create_dir_all(&other_node).unwrap();
    std::fs::set_permissions(&other_node, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::env::set_var("CWASI_REDIS_URL", &url);
    std::env::set_var("CWASI_NODE", "node-c");
    wait_announced(&url, "echo", "team-a");
    for _ in 0..2 {
        call(
            "echo",
            &other_node,
            &["--mode", "remote-broker", "--namespace", "team-a"],
        );
    }

    // The relays' own calls to echo, by the mode each took.
    wait_for_sums(
        &prometheus,
        "sum by (mode) (cwasi_calls_total{callee=\"echo\"})",
        &[("embedded", 4.0), ("local", 3.0)],
    );
    // What the servers ran for other processes: the test's 7 local calls
    // to the relays and relay-b's 3 to echo, and its 2 through the broker.
    wait_for_sums(
        &prometheus,
        "sum by (mode) (cwasi_served_calls_total)",
        &[
            ("local", 10.0),
            ("remote-broker", 2.0),
            ("remote-direct", 0.0),
        ],
    );
    wait_for_sums(
        &prometheus,
        "sum by (mode) (cwasi_call_duration_seconds_count{callee=\"echo\",mode=\"local\"})",
        &[("local", 3.0)],
    );
    let pending = prometheus.query("cwasi_broker_pending_entries{function=\"echo\"}");
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].1, 0.0, "nothing is left pending: {pending:?}");
    let failures = prometheus.query("sum(cwasi_call_failures_total)");
    assert!(
        failures.iter().all(|(_, v)| *v == 0.0),
        "no call failed: {failures:?}"
    );
    drop(relays);
}

/// Raises this process's soft limit of open files to its hard limit, for
/// a test that holds a thousand sockets.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit).unwrap();
}

#[test]
fn a_scrape_succeeds_while_a_thousand_idle_and_slow_clients_are_open() {
    raise_open_files_limit();
    let scratch = Scratch::new("metrics-flood");
    let dir = scratch.0.join("node");
    let addr = metrics_addr();
    let m = ["--metrics".to_string(), addr.to_string()];
    let _echo = Server::start(&dir, progs::ECHO, "echo", "b", &[&m[0], &m[1]], &[]);
    let prometheus = Prometheus::start(&[addr]);
    let up = || prometheus.query("up").first().map(|(_, v)| *v);
    let deadline = Instant::now() + Duration::from_secs(30);
    while up() != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "never scraped: {}",
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A thousand idle connections and twenty that have sent only part of
    // their request, kept open: every 1.5 s they are opened afresh, since
    // the server closes a client that has not sent its request within 2 s.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut open: Vec<std::net::TcpStream> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                open.clear();
                let round: Vec<_> = (0..1020)
                    .filter_map(|_| std::net::TcpStream::connect(addr).ok())
                    .collect();
                for (i, mut c) in round.iter().take(20).enumerate() {
                    use std::io::Write as _;
                    let _ = c.write_all(&b"GET /metrics HTTP/1.1\r\n"[..i % 10 + 1]);
                }
                open = round;
                std::thread::sleep(Duration::from_millis(1500));
            }
        });
        // Every scrape of the last 4 s, all made under the flood, succeeded
        // within Prometheus's 1 s timeout.
        std::thread::sleep(Duration::from_secs(5));
        let worst = prometheus.query("min_over_time(up[4s])");
        let samples = prometheus.query("count_over_time(up[4s])");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(worst.first().map(|(_, v)| *v), Some(1.0), "{worst:?}");
        assert!(
            samples.first().is_some_and(|(_, n)| *n >= 2.0),
            "{samples:?}"
        );
    });
}
