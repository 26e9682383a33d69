//! The remote-mode wire protocol (docs/protocol.md, "Remote mode") as a
//! client of another implementation would see it: requests written by hand
//! with the `redis` crate to a real redis-server that the test starts, served
//! by a `StreamServer`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cwasi_runtime::broker::{Broker, BrokerConfig, Handler, StreamServer, PAYLOAD_KEY_MIN};
use cwasi_runtime::ErrorCode;
use test_support::RedisServer;

const STREAM: &str = "cwasi:fn:ns:echo";

/// Serves an echo handler on `cwasi:fn:ns:echo`, counting its runs.
fn echo_server(url: &str, runs: Arc<AtomicU64>) -> StreamServer {
    let broker = Broker::new(BrokerConfig::new(url, "node2")).unwrap();
    let handler: Handler = Arc::new(move |req: &[u8]| {
        runs.fetch_add(1, Ordering::SeqCst);
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
/// its reply envelope: `status (i32 LE) ‖ bytes`.
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
    (status, envelope[4..].to_vec())
}

#[test]
fn large_requests_travel_in_their_own_key_which_the_answer_deletes() {
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
    // PAYLOAD_KEY_MIN on; the answer deletes the key with the entry.
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
