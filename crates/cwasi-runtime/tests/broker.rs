//! The remote-mode wire protocol (docs/protocol.md, "Remote mode") as a
//! client of another implementation would see it: requests written by hand
//! with the `redis` crate to a real redis-server that the test starts, served
//! by a `StreamServer`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cwasi_runtime::broker::{
    Broker, BrokerConfig, Handler, RequestMeta, StreamServer, PAYLOAD_KEY_MIN,
};
use cwasi_runtime::Deadline;
use cwasi_runtime::{CallError, ErrorCode};
use test_support::tls::TestCertificates;
use test_support::RedisServer;

const STREAM: &str = "cwasi:fn:ns:echo";

/// Serves an echo handler on `cwasi:fn:ns:echo`, counting its runs.
fn echo_server(url: &str, runs: Arc<AtomicU64>) -> StreamServer {
    echo_server_with(BrokerConfig::new(url, "node2"), runs)
}

/// The same, reaching the broker as `config` says.
fn echo_server_with(config: BrokerConfig, runs: Arc<AtomicU64>) -> StreamServer {
    echo_server_seeing(config, runs, Arc::default())
}

/// The same, keeping what the handler is told of each request in `seen`.
fn echo_server_seeing(
    config: BrokerConfig,
    runs: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<RequestMeta>>>,
) -> StreamServer {
    let broker = Broker::new(config).unwrap();
    let handler: Handler = Arc::new(move |req: &[u8], meta: RequestMeta| {
        runs.fetch_add(1, Ordering::SeqCst);
        seen.lock().unwrap().push(meta);
        Ok(req.to_vec())
    });
    StreamServer::start(
        broker,
        "ns",
        "echo",
        "{}".into(),
        1,
        Duration::from_secs(10),
        handler,
    )
    .unwrap()
}

fn deadline_in(d: Duration) -> u64 {
    (SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + d).as_millis() as u64
}

/// Adds a request by hand (`payload` or `payload_key` field) and waits for
/// its reply envelope, `status (i32 LE) ‖ bytes`; a response in a key of its
/// own (status 1, the key) is taken from that key.
fn request(conn: &mut redis::Connection, id: &str, field: &str, value: &[u8]) -> (i32, Vec<u8>) {
    let reply = format!("cwasi:reply:{id}");
    let _: String = redis::cmd("XADD")
        .arg(STREAM)
        .arg("*")
        .arg("id")
        .arg(id)
        .arg("reply")
        .arg(&reply)
        .arg("deadline")
        .arg(deadline_in(Duration::from_secs(20)))
        .arg(field)
        .arg(value)
        .query(conn)
        .unwrap();
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
    assert_eq!(key, format!("cwasi:response:{id}"));
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
        .arg("cwasi:payload:t-2")
        .arg(&big)
        .arg("PX")
        .arg(30_000)
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        request(&mut conn, "t-2", "payload_key", b"cwasi:payload:t-2"),
        (0, big)
    );
    let left: i64 = redis::cmd("EXISTS")
        .arg("cwasi:payload:t-2")
        .query(&mut conn)
        .unwrap();
    assert_eq!(left, 0, "the payload key outlived its answer");
    // Just under the limit, the response travels in the reply itself.
    let small = vec![7u8; PAYLOAD_KEY_MIN - 1];
    assert_eq!(request(&mut conn, "t-4", "payload", &small), (0, small));

    // A payload key that is gone (expired, evicted): a clear error, and the
    // handler does not run.
    let before = runs.load(Ordering::SeqCst);
    let (status, message) = request(&mut conn, "t-3", "payload_key", b"cwasi:payload:gone");
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
        Deadline::after(Duration::from_secs(10)),
        1,
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
    let _server = echo_server_seeing(
        BrokerConfig::new(redis.url(), "node2"),
        Arc::new(AtomicU64::new(0)),
        seen.clone(),
    );
    let caller = Broker::new(BrokerConfig::new(redis.url(), "node1")).unwrap();
    let deadline = Deadline::after(Duration::from_secs(20));
    let got = caller.call("ns", "echo", b"deep", deadline, 3, 1 << 20);
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
