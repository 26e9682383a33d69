//! The remote-mode wire protocol (docs/protocol.md, "Remote mode") as a
//! client of another implementation would see it: requests written by hand
//! with the `redis` crate to a real redis-server that the test starts, served
//! by a `StreamServer`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cwasi_runtime::broker::{Broker, BrokerConfig, RequestMeta, StreamServer, PAYLOAD_KEY_MIN};
use cwasi_runtime::{
    CallError, Deadline, ErrorCode, FunctionSpec, Limits, NodeDirectory, Runtime, ServeOptions,
};
use test_programs_artifacts as progs;
use test_support::tls::TestCertificates;
use test_support::RedisServer;

mod common;
use common::echo_stream_server;

const STREAM: &str = "cwasi:{ns/echo}:stream";

/// Serves an echo handler on `cwasi:{ns/echo}:stream`, counting its runs.
fn echo_server(url: &str, runs: Arc<AtomicU64>) -> StreamServer {
    echo_server_with(BrokerConfig::new(url, "node2"), runs)
}

/// The same, reaching the broker as `config` says.
fn echo_server_with(config: BrokerConfig, runs: Arc<AtomicU64>) -> StreamServer {
    echo_stream_server(config, runs, Arc::default())
}

fn deadline_in(d: Duration) -> u64 {
    (SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + d).as_millis() as u64
}

/// Adds an entry with `fields` to `stream` by hand.
fn add(conn: &mut redis::Connection, stream: &str, fields: &[(&str, &[u8])]) {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    let _: String = cmd.query(conn).unwrap();
}

/// Adds a request for echo by hand (`payload`, or `payload_in_key` with the
/// payload in the call's key) and waits for its reply envelope, `status (i32
/// LE) ‖ bytes`; a response in a key of its own (status 1, the key) is taken
/// from that key. The keys are derived as docs/protocol.md says.
fn request(conn: &mut redis::Connection, id: &str, field: &str, value: &[u8]) -> (i32, Vec<u8>) {
    let reply = format!("cwasi:{{ns/echo}}:reply:{id}");
    let deadline = deadline_in(Duration::from_secs(20)).to_string();
    add(
        conn,
        STREAM,
        &[
            ("id", id.as_bytes()),
            ("deadline", deadline.as_bytes()),
            (field, value),
        ],
    );
    let (_, envelope): (String, Vec<u8>) = redis::cmd("BLPOP")
        .arg(&reply)
        .arg(20)
        .query(conn)
        .expect("no reply within 20 s");
    let status = i32::from_le_bytes(envelope[..4].try_into().unwrap());
    if status != 1 {
        return (status, envelope[4..].to_vec());
    }
    let key = String::from_utf8(envelope[4..].to_vec()).unwrap();
    assert_eq!(key, format!("cwasi:{{ns/echo}}:response:{id}"));
    let body: Vec<u8> = redis::cmd("GETDEL").arg(&key).query(conn).unwrap();
    (0, body)
}

#[test]
fn large_payloads_travel_in_keys_of_their_own() {
    let redis = RedisServer::start();
    let runs = Arc::new(AtomicU64::new(0));
    let _server = echo_server(&redis.url(), runs.clone());
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();

    // Inline payload.
    assert_eq!(
        request(&mut conn, "t-1", "payload", b"hello"),
        (0, b"hello".to_vec())
    );

    // A payload in a key of its own, as a caller writes one from
    // PAYLOAD_KEY_MIN on; the answer deletes the key with the entry. The
    // echoed response is as large, so it comes back in a key too.
    let big: Vec<u8> = (0..PAYLOAD_KEY_MIN + 3).map(|i| (i % 251) as u8).collect();
    let _: () = redis::cmd("SET")
        .arg("cwasi:{ns/echo}:payload:t-2")
        .arg(&big)
        .arg("PX")
        .arg(30_000)
        .query(&mut conn)
        .unwrap();
    assert_eq!(request(&mut conn, "t-2", "payload_in_key", b"1"), (0, big));
    let left: i64 = redis::cmd("EXISTS")
        .arg("cwasi:{ns/echo}:payload:t-2")
        .query(&mut conn)
        .unwrap();
    assert_eq!(left, 0, "the payload key outlived its answer");
    // Just under the limit, the response travels in the reply itself.
    let small = vec![7u8; PAYLOAD_KEY_MIN - 1];
    assert_eq!(request(&mut conn, "t-4", "payload", &small), (0, small));

    // A payload key that is gone (expired, evicted): a clear error, and the
    // handler does not run.
    let before = runs.load(Ordering::SeqCst);
    let (status, message) = request(&mut conn, "t-3", "payload_in_key", b"1");
    assert_eq!(ErrorCode::from_raw(status), Some(ErrorCode::Transport));
    let message = String::from_utf8(message).unwrap();
    assert!(
        message.contains("payload is no longer in the broker"),
        "{message}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), before);

    // Every answered entry is acknowledged and deleted.
    let len: i64 = redis::cmd("XLEN").arg(STREAM).query(&mut conn).unwrap();
    assert_eq!(len, 0);
}

/// One call of the echo server through a broker client made from `config`.
fn round_trip(config: BrokerConfig) -> Result<Vec<u8>, CallError> {
    let broker =
        Broker::new(config).map_err(|e| CallError::new(ErrorCode::Transport, e.to_string()))?;
    broker.call(
        "ns",
        "echo",
        b"ping",
        RequestMeta::new(Deadline::after(Duration::from_secs(10)), 1),
        1 << 20,
    )
}

/// Calls until a round trip with the settings `config` makes succeeds
/// (the consumer group appears once the server has connected), for 20 s.
fn until_served(config: impl Fn() -> BrokerConfig) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match round_trip(config()) {
            Ok(r) => break assert_eq!(r, b"ping"),
            Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
        }
    }
}

/// Fails unless `r` is a broker error whose message has `needle`.
fn assert_broker_error(r: Result<Vec<u8>, CallError>, needle: &str) -> String {
    let e = r.expect_err("the call should have failed");
    assert_eq!(e.code, ErrorCode::Transport, "{e}");
    assert!(e.message.contains(needle), "no {needle:?} in: {e}");
    e.message
}

#[test]
fn acl_users_get_through_with_their_password_only() {
    let redis = RedisServer::start();
    let port = redis.port();
    // A user of its own and the default user off, as a hardened Redis has it.
    for cmd in [
        &[
            "ACL",
            "SETUSER",
            "cwasi",
            "on",
            ">s3cret-pw",
            "~*",
            "&*",
            "+@all",
        ][..],
        &["ACL", "SETUSER", "default", "off"][..],
    ] {
        assert_eq!(redis.command(cmd).as_deref(), Some("+OK"), "{cmd:?}");
    }
    let plain = format!("redis://127.0.0.1:{port}");
    // The server has its credentials in the URL, the caller in the fields
    // that CWASI_REDIS_USERNAME and CWASI_REDIS_PASSWORD fill.
    let _server = echo_server_with(
        BrokerConfig::new(format!("redis://cwasi:s3cret-pw@127.0.0.1:{port}"), "node2"),
        Arc::new(AtomicU64::new(0)),
    );
    let caller = |user: Option<&str>, password: Option<&str>| BrokerConfig {
        username: user.map(String::from),
        password: password.map(String::from),
        ..BrokerConfig::new(&plain, "node1")
    };
    until_served(|| caller(Some("cwasi"), Some("s3cret-pw")));
    let message = assert_broker_error(
        round_trip(caller(Some("cwasi"), Some("not-it"))),
        "authentication failed",
    );
    assert!(
        !message.contains("not-it"),
        "a password in a message: {message}"
    );
    // No credentials: Redis 7.0 drops the connection ("unexpected end of
    // file"); the call fails at once rather than waiting out its timeout.
    let started = std::time::Instant::now();
    assert_broker_error(round_trip(caller(None, None)), "unreachable");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn tls_brokers_need_the_ca_and_a_client_certificate() {
    let scratch = std::env::temp_dir().join(format!("cwasi-tls-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let certs = TestCertificates::generate(&scratch);
    let tls_port = test_support::free_port();
    let _redis = RedisServer::start_with(&certs.redis_args(tls_port));
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let config = |ca: bool, client: bool| BrokerConfig {
        ca_file: ca.then(|| certs.ca_cert.clone()),
        client_cert: client.then(|| (certs.client_cert.clone(), certs.client_key.clone())),
        ..BrokerConfig::new(&url, "node1")
    };
    let _server = echo_server_with(config(true, true), Arc::new(AtomicU64::new(0)));
    until_served(|| config(true, true));
    // Not trusting the private CA: the server's certificate is refused.
    assert_broker_error(round_trip(config(false, true)), "certificate");
    // No client certificate: the server refuses the client.
    assert!(round_trip(config(true, false)).is_err());
    // Settings that cannot work are refused up front.
    let plain = BrokerConfig {
        ca_file: Some(certs.ca_cert.clone()),
        ..BrokerConfig::new("redis://127.0.0.1:1", "node1")
    };
    let e = Broker::new(plain).unwrap_err().to_string();
    assert!(e.contains("need a rediss:// URL"), "{e}");
    let missing = BrokerConfig {
        ca_file: Some(scratch.join("no-such-ca.pem")),
        ..BrokerConfig::new(&url, "node1")
    };
    let e = Broker::new(missing).unwrap_err().to_string();
    assert!(e.contains("cannot read CWASI_REDIS_CA_FILE"), "{e}");
    let half = BrokerConfig {
        client_cert: Some((certs.client_cert.clone(), PathBuf::new())),
        ..BrokerConfig::new(&url, "node1")
    };
    let e = Broker::new(half).unwrap_err().to_string();
    assert!(e.contains("CWASI_REDIS_CLIENT_KEY is not set"), "{e}");
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn deadline_and_depth_travel_with_the_request() {
    let redis = RedisServer::start();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let _server = echo_stream_server(
        BrokerConfig::new(redis.url(), "node2"),
        Arc::new(AtomicU64::new(0)),
        seen.clone(),
    );
    let caller = Broker::new(BrokerConfig::new(redis.url(), "node1")).unwrap();
    let deadline = Deadline::after(Duration::from_secs(20));
    let got = caller.call(
        "ns",
        "echo",
        b"deep",
        RequestMeta::new(deadline, 3),
        1 << 20,
    );
    assert_eq!(got.unwrap(), b"deep");
    let meta = seen.lock().unwrap().pop().expect("the handler ran");
    assert_eq!(meta.depth, 3);
    // The deadline crossed as wall-clock milliseconds.
    let drift = meta.deadline.remaining().abs_diff(deadline.remaining());
    assert!(drift < Duration::from_millis(100), "{drift:?}");

    // An entry without `depth`, as an older caller writes it: depth 1.
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    assert_eq!(
        request(&mut conn, "t-old", "payload", b"old"),
        (0, b"old".to_vec())
    );
    assert_eq!(
        seen.lock().unwrap().pop().expect("the handler ran").depth,
        1
    );
}

/// `GET` and `PTTL` of `key`.
fn value_and_ttl(conn: &mut redis::Connection, key: &str) -> (Option<Vec<u8>>, i64) {
    let value = redis::cmd("GET").arg(key).query(conn).unwrap();
    let ttl = redis::cmd("PTTL").arg(key).query(conn).unwrap();
    (value, ttl)
}

/// The number of entries pending in `stream`'s group `cwasi`, and its
/// `PTTL`.
fn pending_and_ttl(conn: &mut redis::Connection, stream: &str) -> (i64, i64) {
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg("cwasi")
        .query(conn)
        .unwrap();
    let redis::Value::Array(parts) = summary else {
        panic!("XPENDING answered {summary:?}")
    };
    let pending = match parts.first() {
        Some(redis::Value::Int(n)) => *n,
        other => panic!("XPENDING count {other:?}"),
    };
    let ttl = redis::cmd("PTTL").arg(stream).query(conn).unwrap();
    (pending, ttl)
}

/// Defect 8: a server used to answer on whatever key an entry's `reply`
/// named (`LPUSH` + a 120 s `PEXPIRE`) and read and delete whatever key its
/// `payload_key` named. Entries written by hand that name foreign keys (a
/// plain key, another function's request stream, another function's reply
/// key, bad request ids) now leave every key as it was; the server keeps
/// serving.
#[test]
fn entries_naming_foreign_keys_touch_nothing() {
    let redis = RedisServer::start();
    let runs = Arc::new(AtomicU64::new(0));
    let _server = echo_server(&redis.url(), runs.clone());
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    // Serving: one ordinary call goes through.
    assert_eq!(
        request(&mut conn, "first", "payload", b"one"),
        (0, b"one".to_vec())
    );

    // The victims: a key without expiry, one with a long expiry, another
    // function's stream with an entry pending in its group, and the reply
    // key of a call to that other function.
    let set = |conn: &mut redis::Connection, args: &[&str]| {
        let _: redis::Value = redis::cmd(args[0]).arg(&args[1..]).query(conn).unwrap();
    };
    set(&mut conn, &["SET", "victim", "secret"]);
    set(&mut conn, &["SET", "victim-ttl", "kept", "PX", "600000"]);
    let other = "cwasi:{ns/other}:stream";
    set(
        &mut conn,
        &["XGROUP", "CREATE", other, "cwasi", "0", "MKSTREAM"],
    );
    set(
        &mut conn,
        &["XADD", other, "*", "id", "o-1", "payload", "x"],
    );
    set(
        &mut conn,
        &[
            "XREADGROUP",
            "GROUP",
            "cwasi",
            "c1",
            "COUNT",
            "1",
            "STREAMS",
            other,
            ">",
        ],
    );
    let other_reply = "cwasi:{ns/other}:reply:o-1";
    set(&mut conn, &["RPUSH", other_reply, "its answer"]);
    set(&mut conn, &["PEXPIRE", other_reply, "600000"]);
    let before = (
        value_and_ttl(&mut conn, "victim"),
        value_and_ttl(&mut conn, "victim-ttl"),
        pending_and_ttl(&mut conn, other),
    );
    assert_eq!(before.0, (Some(b"secret".to_vec()), -1));
    assert_eq!(before.2, (1, -1));

    let deadline = deadline_in(Duration::from_secs(20)).to_string();
    let d = deadline.as_bytes();
    let forged: [&[(&str, &[u8])]; 9] = [
        &[
            ("id", b"f-1"),
            ("deadline", d),
            ("reply", b"victim"),
            ("payload", b"x"),
        ],
        &[
            ("id", b"f-2"),
            ("deadline", d),
            ("reply", other.as_bytes()),
            ("payload", b"x"),
        ],
        &[
            ("id", b"f-3"),
            ("deadline", d),
            ("reply", other_reply.as_bytes()),
            ("payload", b"x"),
        ],
        &[("id", b"f-4"), ("deadline", d), ("payload_key", b"victim")],
        &[
            ("id", b"f-5"),
            ("deadline", d),
            ("payload_key", b"victim-ttl"),
            ("reply", b"victim-ttl"),
        ],
        &[
            ("id", b"f-6"),
            ("deadline", d),
            ("payload_key", other.as_bytes()),
        ],
        // Ids that would leave the function's prefix, or are not ids.
        &[("id", b"x:victim"), ("deadline", d), ("payload", b"x")],
        &[("id", b"*"), ("deadline", d), ("payload_in_key", b"1")],
        &[("id", &[b'x'; 200]), ("deadline", d), ("payload", b"x")],
    ];
    for fields in forged {
        add(&mut conn, STREAM, fields);
    }
    // The id of the other function's call, on this function's stream: it is
    // answered, in this function's own reply key.
    assert_eq!(
        request(&mut conn, "o-1", "payload", b"mine"),
        (0, b"mine".to_vec())
    );
    // One consumer takes the entries in order: by the time this call is
    // answered, every forged entry has been handled.
    assert_eq!(
        request(&mut conn, "after", "payload", b"two"),
        (0, b"two".to_vec())
    );

    let after = (
        value_and_ttl(&mut conn, "victim"),
        value_and_ttl(&mut conn, "victim-ttl"),
        pending_and_ttl(&mut conn, other),
    );
    assert_eq!(after.0, before.0, "victim changed");
    assert_eq!(after.1 .0, before.1 .0, "victim-ttl's value changed");
    let (was, now) = (before.1 .1, after.1 .1);
    assert!(
        now <= was && now > was - 30_000,
        "victim-ttl's expiry changed: {was} -> {now} ms"
    );
    assert_eq!(after.2, before.2, "the other function's stream changed");
    let other_len: i64 = redis::cmd("XLEN").arg(other).query(&mut conn).unwrap();
    assert_eq!(other_len, 1);
    let items: Vec<String> = redis::cmd("LRANGE")
        .arg(other_reply)
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .unwrap();
    assert_eq!(items, ["its answer"]);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(other_reply)
        .query(&mut conn)
        .unwrap();
    assert!(
        ttl > 570_000,
        "the other call's reply key expires in {ttl} ms"
    );
    // The forged entries ran nothing and were answered nowhere: only the
    // three ordinary calls ran, and no reply key of this function is left.
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    let replies: Vec<String> = redis::cmd("KEYS")
        .arg("cwasi:{ns/echo}:reply:*")
        .query(&mut conn)
        .unwrap();
    assert!(replies.is_empty(), "{replies:?}");
    // They were acknowledged and deleted, not left pending.
    assert_eq!(pending_and_ttl(&mut conn, STREAM).0, 0);
    let len: i64 = redis::cmd("XLEN").arg(STREAM).query(&mut conn).unwrap();
    assert_eq!(len, 0);

    // The server goes on serving the caller of this crate as well.
    let caller = Broker::new(BrokerConfig::new(redis.url(), "node1")).unwrap();
    let deadline = Deadline::after(Duration::from_secs(10));
    assert_eq!(
        caller
            .call(
                "ns",
                "echo",
                b"still",
                RequestMeta::new(deadline, 1),
                1 << 20
            )
            .unwrap(),
        b"still"
    );
}

/// A runtime on node `node` calling through the broker at `url`, with
/// `limits` and the functions `specs`.
fn runtime(url: &str, node: &str, limits: Limits, specs: Vec<FunctionSpec>) -> Runtime {
    let mut b = Runtime::builder()
        .limits(limits)
        .node(node)
        .broker(Broker::new(BrokerConfig::new(url, node)).unwrap());
    for s in specs {
        b = b.function(s);
    }
    b.build().unwrap()
}

/// Calls `target` in `ns` on `rt` until it answers, for 30 s.
fn until_answered(rt: &Runtime, ns: &str, target: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rt.call(ns, target, b"ping") {
            Ok(r) => break assert_eq!(r, b"ping"),
            Err(e) => assert!(Instant::now() < deadline, "never answered: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A broker that stalls for 8 s (`DEBUG SLEEP`), under callers whose call
/// timeout is 1 s: a call whose route is not chosen yet (its registry
/// lookup stalls) and one whose route is (its request stalls) both fail
/// by their deadline plus the grace for an answer (`ANSWER_GRACE`, 2 s),
/// with `TIMEOUT` or `TRANSPORT`. The first used to fail after 5 s with
/// `UNKNOWN_FUNCTION`. Both go through again once the broker is back.
#[test]
fn a_broker_stall_fails_calls_at_their_deadline() {
    let redis = RedisServer::start_with(&["--enable-debug-command".into(), "yes".into()]);
    let _server = echo_server(&redis.url(), Arc::new(AtomicU64::new(0)));
    let limits = Limits {
        call_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let warm = runtime(&redis.url(), "node1", limits.clone(), vec![]);
    until_answered(&warm, "ns", "echo");
    let cold = runtime(&redis.url(), "node3", limits, vec![]);

    // The stall: DEBUG SLEEP on a connection of its own, whose +OK comes
    // when it ends.
    let mut stall = TcpStream::connect(("127.0.0.1", redis.port())).unwrap();
    stall
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stall
        .write_all(b"*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$1\r\n8\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let stalled_at = Instant::now();
    // The call timeout, the grace for an answer (`ANSWER_GRACE`, 2 s) and
    // some slack for a loaded machine.
    let bound = Duration::from_secs(3) + Duration::from_millis(500);
    // Four cold calls at once: each waits for its own deadline only, not
    // behind the others' lookups.
    let results = std::thread::scope(|s| {
        let (cold, warm) = (&cold, &warm);
        let call = |rt: &Runtime| {
            let started = Instant::now();
            (rt.call("ns", "echo", b"during"), started.elapsed())
        };
        let calls: Vec<_> = [
            ("cold", cold),
            ("cold", cold),
            ("cold", cold),
            ("cold", cold),
        ]
        .into_iter()
        .chain([("warm", warm)])
        .map(|(which, rt)| (which, s.spawn(move || call(rt))))
        .collect();
        calls
            .into_iter()
            .map(|(which, t)| (which, t.join().unwrap()))
            .collect::<Vec<_>>()
    });
    assert!(
        stalled_at.elapsed() < Duration::from_secs(7),
        "the calls outlived the stall, which proves nothing"
    );
    for (which, (result, took)) in results {
        let e = result.expect_err("a call during the stall succeeded");
        assert!(
            matches!(e.code, ErrorCode::Timeout | ErrorCode::Transport),
            "{which}: {e}"
        );
        assert!(took <= bound, "{which}: failed after {took:?}: {e}");
    }
    let mut ok = String::new();
    BufReader::new(&mut stall)
        .read_line(&mut ok)
        .expect("DEBUG SLEEP never ended");
    assert_eq!(ok.trim_end(), "+OK");
    until_answered(&cold, "ns", "echo");
    until_answered(&warm, "ns", "echo");
}

/// A scratch directory for a node directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("cwasi-broker-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `a` on node1 calls `b` on node2, which calls `a` again: with the default
/// limits (a depth of 32, 16 consumers per served function), the cycle
/// stops at the depth limit, not at its deadline; and a request sent over
/// the limit straight to a server gets `RESOURCE_LIMIT`.
#[test]
fn a_call_cycle_across_nodes_stops_at_the_depth_limit() {
    let redis = RedisServer::start();
    let scratch = Scratch::new("cycle");
    let node = |name: &str, target: &str, next: &str| {
        let dir = NodeDirectory::open(&scratch.0.join(name)).unwrap();
        let mut spec = FunctionSpec::new(target, "cyc", PathBuf::from(progs::TRANSFORM));
        spec.env.push(("CWASI_NEXT".into(), next.into()));
        let limits = Limits {
            call_timeout: Duration::from_secs(20),
            ..Limits::default()
        };
        let rt = runtime(&redis.url(), name, limits, vec![spec]);
        let handle = rt.serve(target, &dir, ServeOptions::default()).unwrap();
        (rt, handle)
    };
    let a = node("node1", "a", "b");
    let b = node("node2", "b", "a");
    // Until each node sees the other's function announced.
    let wait = Instant::now() + Duration::from_secs(30);
    while a.0.explain("cyc", "b").is_err() || b.0.explain("cyc", "a").is_err() {
        assert!(Instant::now() < wait, "never announced");
        std::thread::sleep(Duration::from_millis(50));
    }
    let caller = Broker::new(BrokerConfig::new(redis.url(), "node0")).unwrap();
    let call = |target: &str, depth: u32| {
        let deadline = Deadline::after(Duration::from_secs(20));
        caller.call(
            "cyc",
            target,
            b"x",
            RequestMeta::new(deadline, depth),
            1 << 20,
        )
    };

    // Straight to each server, one over its limit.
    let wait = Instant::now() + Duration::from_secs(30);
    loop {
        // Until both consumer groups exist.
        match (call("a", 33), call("b", 33)) {
            (Err(a), Err(b)) if a.code != ErrorCode::Timeout && b.code != ErrorCode::Timeout => {
                for e in [a, b] {
                    assert_eq!(e.code, ErrorCode::ResourceLimit, "{e}");
                    assert!(
                        e.message.contains("call depth 33 is over the limit of 32"),
                        "{e}"
                    );
                }
                break;
            }
            other => assert!(Instant::now() < wait, "never refused: {other:?}"),
        }
    }

    // The cycle: a (1) -> b (2) -> ... -> b (32), whose call to depth 33 is
    // refused on node2; 16 levels wait on each node, one per consumer.
    let started = Instant::now();
    let e = call("a", 1).expect_err("a cycle cannot answer");
    let took = started.elapsed();
    assert!(
        e.message.contains("call depth 33 is over the limit of 32"),
        "{e}"
    );
    assert!(
        took < Duration::from_secs(10),
        "the cycle ran for {took:?}: {e}"
    );
}

/// A function announced only by a node of broker protocol version 3 (its
/// registry keys written here as such a node writes them) is reported as
/// such: the call fails at once with `TRANSPORT` and both versions, not
/// with `UNKNOWN_FUNCTION` or a timeout.
#[test]
fn a_version_3_server_is_named_as_such() {
    let redis = RedisServer::start();
    let far = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 60_000)
        .to_string();
    assert_eq!(
        redis.command(&["SADD", "cwasi:fn-ns:old", "ns"]).as_deref(),
        Some(":1")
    );
    assert_eq!(
        redis
            .command(&["ZADD", "cwasi:fn-nodes:ns:old", &far, "node-v3"])
            .as_deref(),
        Some(":1")
    );
    let rt = runtime(&redis.url(), "node1", Limits::default(), vec![]);
    let started = Instant::now();
    let e = rt.call("ns", "old", b"x").unwrap_err();
    assert_eq!(e.code, ErrorCode::Transport, "{e}");
    assert!(
        e.message.contains("broker protocol version 3") && e.message.contains("version 4"),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Nothing of the kind: an unknown function stays unknown.
    let e = rt.call("ns", "nobody", b"x").unwrap_err();
    assert_eq!(e.code, ErrorCode::UnknownFunction, "{e}");
}

/// `CWASI_REDIS_WAIT`: a caller waits until a replica holds its request.
/// With a replica attached the call goes through; asking for more
/// replicas than there are fails it with `TRANSPORT`, naming the setting,
/// after the wait. A malformed setting is refused.
#[test]
fn a_request_can_be_made_durable_on_a_replica() {
    let redis = RedisServer::start();
    let replica = RedisServer::start_with(&[
        "--replicaof".into(),
        "127.0.0.1".into(),
        redis.port().to_string(),
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !redis
        .command_text(&["INFO", "replication"])
        .unwrap_or_default()
        .contains("connected_slaves:1")
    {
        assert!(Instant::now() < deadline, "the replica never attached");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _server = echo_server(&redis.url(), Arc::new(AtomicU64::new(0)));
    let durable = |replicas: &str| {
        let vars = [
            ("CWASI_REDIS_URL", redis.url()),
            ("CWASI_NODE", "node1".to_string()),
            ("CWASI_REDIS_WAIT", replicas.to_string()),
            ("CWASI_REDIS_WAIT_MS", "300".to_string()),
        ];
        let config = BrokerConfig::from_vars(&|k| {
            vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        })
        .unwrap();
        Broker::new(config)
    };
    let meta = || RequestMeta::new(Deadline::after(Duration::from_secs(5)), 1);
    let b = durable("1").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match b.call("ns", "echo", b"kept", meta(), 1 << 20) {
            Ok(r) => break assert_eq!(r, b"kept"),
            Err(e) => assert!(Instant::now() < deadline, "never answered: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let e = durable("2")
        .unwrap()
        .call("ns", "echo", b"x", meta(), 1 << 20)
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Transport, "{e}");
    assert!(e.message.contains("reached 1 of the 2 replicas"), "{e}");
    assert!(e.message.contains("CWASI_REDIS_WAIT"), "{e}");
    let e = durable("some").unwrap_err().to_string();
    assert!(e.contains("CWASI_REDIS_WAIT=some"), "{e}");
    drop(replica);
}
