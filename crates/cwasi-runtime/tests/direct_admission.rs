//! Admission on the direct data plane against hostile peers, on loopback
//! with a real redis-server for the registry: slow senders that trickle a
//! payload (plain TCP and mutual TLS), and a flood of connections that
//! never start TLS. Callers of another node must still be served directly
//! (not through the broker), each call within a second.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TempDir;
use cwasi_runtime::broker::{Broker, BrokerConfig};
use cwasi_runtime::wire::{self, Header, Kind};
use cwasi_runtime::{
    DataAddr, DirectConfig, ErrorCode, FunctionSpec, Mode, ModeOverride, NodeDirectory, Runtime,
    ServeHandle, ServeOptions, TlsFiles,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use test_programs_artifacts as progs;
use test_support::tls::NodeCertificates;
use test_support::RedisServer;

/// The payload rate the servers here ask for: a dripper's 1 MiB is due
/// within 2 s + 1 s.
const MIN_RATE: u64 = 1 << 20;

/// A read and write stream, plain or TLS.
trait Duplex: Read + Write + Send {}
impl<T: Read + Write + Send> Duplex for T {}

fn direct_config(certs: Option<(&NodeCertificates, &str)>) -> DirectConfig {
    match certs {
        None => DirectConfig {
            tls: None,
            allow_plain: true,
        },
        Some((certs, node)) => DirectConfig {
            tls: Some(TlsFiles {
                ca: certs.ca_cert.clone(),
                cert: certs.node(node).cert.clone(),
                key: certs.node(node).key.clone(),
            }),
            allow_plain: false,
        },
    }
}

/// Serves `echo` (namespace "b") on node2 with a data address on loopback.
fn serve(redis: &RedisServer, dir: &TempDir, direct: DirectConfig) -> (ServeHandle, DataAddr) {
    serve_with(redis, dir, direct, ServeOptions::default().max_connections)
}

/// [`serve`], with at most `max_connections` connections.
fn serve_with(
    redis: &RedisServer,
    dir: &TempDir,
    direct: DirectConfig,
    max_connections: usize,
) -> (ServeHandle, DataAddr) {
    let broker = Broker::new(BrokerConfig::new(redis.url(), "node2")).unwrap();
    let rt = Runtime::builder()
        .broker(broker)
        .direct(direct)
        .function(FunctionSpec::new("echo", "b", progs::ECHO.into()))
        .build()
        .unwrap();
    let dir = NodeDirectory::open(&dir.path().join("node2")).unwrap();
    let opts = ServeOptions {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        min_payload_rate: MIN_RATE,
        max_connections,
        ..ServeOptions::default()
    };
    let handle = rt.serve("echo", &dir, opts).unwrap();
    let addr = handle.record().data_addr.clone().expect("a data address");
    (handle, addr.parse().unwrap())
}

/// A runtime of node1, which finds `echo` through the registry.
fn caller(redis: &RedisServer, direct: DirectConfig) -> Runtime {
    let rt = Runtime::builder()
        .broker(Broker::new(BrokerConfig::new(redis.url(), "node1")).unwrap())
        .direct(direct)
        .mode(ModeOverride::Auto)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match rt.explain("a", "echo") {
            Ok(s) => {
                assert_eq!(s.mode, Mode::RemoteDirect, "{s}");
                return rt;
            }
            Err(e) if e.code == ErrorCode::UnknownFunction && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Calls `echo` once with `payload`; asserts it went directly and took
/// under a second.
fn served_directly(rt: &Runtime, payload: &[u8], what: &str) {
    let started = Instant::now();
    assert_eq!(rt.call("a", "echo", payload).unwrap(), payload, "{what}");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "{what}: the call took {took:?}"
    );
    for h in rt.hops() {
        assert_eq!(h.mode, Mode::RemoteDirect, "{what}: {h:?}");
        assert_eq!(h.paths.via_broker, 0, "{what}: went through the broker");
    }
}

/// A TLS client configuration of node1 (its certificate, the cluster CA).
fn client_tls(certs: &NodeCertificates) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(&certs.ca_cert).unwrap() {
        roots.add(der.unwrap()).unwrap();
    }
    let node = certs.node("node1");
    let chain = CertificateDer::pem_file_iter(&node.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&node.key).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    Arc::new(config)
}

/// A raw connection to the server, past its "ready" frame; reads time out
/// after 1 s.
fn open(addr: DataAddr, tls: Option<&Arc<rustls::ClientConfig>>) -> Box<dyn Duplex> {
    let tcp = TcpStream::connect(addr.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut s: Box<dyn Duplex> = match tls {
        None => Box::new(tcp),
        Some(config) => {
            let name = ServerName::try_from("node2").unwrap();
            let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
    };
    let mut got = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match poll_frame(&mut s, &mut got) {
            Polled::Frame(h, _) => {
                assert_eq!((h.kind, h.id), (Kind::Response, 0), "ready");
                return s;
            }
            Polled::Closed => panic!("closed before the ready frame"),
            Polled::Nothing => assert!(Instant::now() < until, "no ready frame"),
        }
    }
}

/// What one wait for a frame brought.
enum Polled {
    Frame(Header, String),
    Closed,
    /// Nothing whole within the socket's read timeout.
    Nothing,
}

/// Reads until a frame is whole in `got` (kept across calls), the
/// connection closes, or a read times out.
fn poll_frame(s: &mut Box<dyn Duplex>, got: &mut Vec<u8>) -> Polled {
    let mut buf = [0u8; 4096];
    loop {
        if got.len() >= wire::HEADER_LEN {
            let head: [u8; wire::HEADER_LEN] = got[..wire::HEADER_LEN].try_into().unwrap();
            let h = Header::decode(&head, 1 << 20).expect("a well-formed frame");
            let end = wire::HEADER_LEN + h.payload_len as usize;
            if got.len() >= end {
                let body = String::from_utf8_lossy(&got[wire::HEADER_LEN..end]).into_owned();
                got.drain(..end);
                return Polled::Frame(h, body);
            }
        }
        match s.read(&mut buf) {
            Ok(0) => return Polled::Closed,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Polled::Nothing
            }
            Err(e) => panic!("the connection failed: {e}"),
        }
    }
}

/// Sixteen slow senders: each sends a request whose header promises 1 MiB,
/// then one byte a second. Returns, per dripper, how long until it was cut
/// off, and the error frame it got.
fn drip(addr: DataAddr, tls: Option<Arc<rustls::ClientConfig>>) -> Vec<(Duration, Header, String)> {
    let threads: Vec<_> = (0..16u64)
        .map(|i| {
            let tls = tls.clone();
            std::thread::spawn(move || {
                let mut s = open(addr, tls.as_ref());
                let claim = b"a/@node1";
                let mut h = Header::new(Kind::Request, 100 + i);
                h.target_len = 4;
                h.caller_len = claim.len() as u16;
                h.payload_len = 1 << 20;
                let names = [&b"echo"[..], claim].concat();
                wire::write_frame(&mut s, &h, &names, &[]).unwrap();
                s.flush().unwrap();
                let started = Instant::now();
                let mut got = Vec::new();
                loop {
                    // Wait up to a second for the server's refusal, then
                    // send the next byte.
                    match poll_frame(&mut s, &mut got) {
                        Polled::Frame(h, msg) => return (started.elapsed(), h, msg),
                        Polled::Closed => panic!("dripper {i}: closed without an error frame"),
                        Polled::Nothing => {}
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "dripper {i} was never cut off"
                    );
                    // A write after the server closed may fail; its error
                    // frame is still there to read.
                    let _ = s.write_all(&[0x5a]).and_then(|()| s.flush());
                }
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn slow_drippers_hold_no_slot_that_a_fresh_caller_needs(tls: bool) {
    let redis = RedisServer::start();
    let dir = TempDir::new(if tls { "drip-tls" } else { "drip-plain" });
    std::fs::create_dir_all(dir.path()).unwrap();
    let certs = NodeCertificates::generate(dir.path(), &["node1", "node2"]);
    let server_side = direct_config(tls.then_some((&certs, "node2")));
    let caller_side = || direct_config(tls.then_some((&certs, "node1")));
    let (_server, addr) = serve(&redis, &dir, server_side);
    assert_eq!(addr.tls, tls);
    let raw_tls = tls.then(|| client_tls(&certs));

    let drippers = std::thread::spawn(move || drip(addr, raw_tls));
    // The drippers are in (each opened its connection and sent its header
    // within this time).
    std::thread::sleep(Duration::from_millis(700));
    let fresh = caller(&redis, caller_side());
    served_directly(&fresh, b"fresh", "a fresh caller while 16 drip");
    served_directly(&fresh, &[7u8; 8_000], "another call while 16 drip");

    // Each dripper is cut off with an error frame that answers its request
    // and says why: its payload did not arrive within its budget (2 s plus
    // 1 MiB at 1 MiB/s).
    let cut = drippers.join().unwrap();
    for (took, h, msg) in &cut {
        assert_eq!(h.kind, Kind::Error, "{msg}");
        assert!(h.id >= 100, "the frame answers the request: {h:?}");
        assert_eq!(h.status, ErrorCode::Transport.as_raw(), "{msg}");
        assert!(msg.contains("did not arrive within its budget"), "{msg}");
        assert!(*took < Duration::from_secs(8), "cut off after {took:?}");
    }
    println!(
        "tls {tls}: drippers cut off after {:?} .. {:?}",
        cut.iter().map(|c| c.0).min().unwrap(),
        cut.iter().map(|c| c.0).max().unwrap()
    );
    served_directly(&fresh, &[9u8; 3 << 20], "3 MiB after the drippers");
}

#[test]
fn slow_senders_over_plain_tcp_are_cut_off_and_hold_no_slot_a_fresh_caller_needs() {
    slow_drippers_hold_no_slot_that_a_fresh_caller_needs(false);
}

#[test]
fn slow_senders_over_mutual_tls_are_cut_off_and_hold_no_slot_a_fresh_caller_needs() {
    slow_drippers_hold_no_slot_that_a_fresh_caller_needs(true);
}

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    use rustix::net::{bind, connect, socket, AddressFamily, SocketType};
    let fd: OwnedFd = socket(AddressFamily::INET, SocketType::STREAM, None)?;
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    bind(&fd, &local)?;
    connect(&fd, &to)?;
    Ok(TcpStream::from(fd))
}

#[test]
fn connections_that_never_start_tls_do_not_keep_cluster_nodes_out() {
    let redis = RedisServer::start();
    let dir = TempDir::new("hello-flood");
    std::fs::create_dir_all(dir.path()).unwrap();
    let certs = NodeCertificates::generate(dir.path(), &["node1", "node2"]);
    let (_server, addr) = serve(&redis, &dir, direct_config(Some((&certs, "node2"))));
    assert!(addr.tls);

    // From another address, 200 connections that never send a
    // ClientHello; each one the server closes is opened again at once.
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, opened) = (stop.clone(), opened.clone());
        std::thread::spawn(move || {
            let mut open: Vec<Option<TcpStream>> = (0..200).map(|_| None).collect();
            while !stop.load(Ordering::Relaxed) {
                for slot in open.iter_mut() {
                    let closed = slot.as_ref().is_none_or(|s| {
                        let mut b = [0u8; 1];
                        !matches!(s.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                    });
                    if closed {
                        *slot = connect_from("127.0.0.2", addr.addr).ok();
                        if let Some(s) = slot {
                            s.set_nonblocking(true).unwrap();
                            opened.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // The flood is on once the server has closed 200 of its connections.
    let until = Instant::now() + Duration::from_secs(20);
    while opened.load(Ordering::Relaxed) < 400 {
        assert!(Instant::now() < until, "the flood did not get going");
        std::thread::sleep(Duration::from_millis(10));
    }

    // Callers of node1, each with a connection of its own (a fresh
    // runtime), are served directly, each within a second.
    let before = opened.load(Ordering::Relaxed);
    for i in 0..10 {
        let rt = caller(&redis, direct_config(Some((&certs, "node1"))));
        served_directly(&rt, format!("call {i}").as_bytes(), "under the flood");
    }
    let during = opened.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    println!("the flood opened {during} connections during the calls");
    assert!(
        during >= 100,
        "the flood was not on during the calls: {during}"
    );
}

#[test]
fn a_caller_refused_for_capacity_goes_through_the_broker() {
    let redis = RedisServer::start();
    let dir = TempDir::new("direct-full");
    std::fs::create_dir_all(dir.path()).unwrap();
    let certs = NodeCertificates::generate(dir.path(), &["node1", "node2"]);
    for tls in [false, true] {
        let tag = if tls { "tls" } else { "plain" };
        let sub = TempDir::new(&format!("direct-full-{tag}"));
        let server_side = direct_config(tls.then_some((&certs, "node2")));
        // One connection at most, and a raw client holds it.
        let (server, addr) = serve_with(&redis, &sub, server_side, 1);
        let raw_tls = tls.then(|| client_tls(&certs));
        let _held = open(addr, raw_tls.as_ref());
        // The server refuses the caller's connection (over plain TCP at
        // once, over TLS once its handshake is done), with an error frame;
        // the call goes through the broker and succeeds.
        let rt = Runtime::builder()
            .broker(Broker::new(BrokerConfig::new(redis.url(), "node1")).unwrap())
            .direct(direct_config(tls.then_some((&certs, "node1"))))
            .build()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(20);
        let answer = loop {
            match rt.call("a", "echo", b"full") {
                Err(e) if e.code == ErrorCode::UnknownFunction && Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                other => break other,
            }
        };
        assert_eq!(answer.unwrap(), b"full", "{tag}");
        // On a route made on the broker (the node was refused when the
        // route was chosen), or a direct route's fall-back.
        let via_broker: u64 = rt
            .hops()
            .iter()
            .map(|h| match h.mode {
                Mode::RemoteBroker => h.calls,
                _ => h.paths.via_broker,
            })
            .sum();
        assert_eq!(via_broker, 1, "{tag}: {:?}", rt.hops());
        drop(server);
    }
}
