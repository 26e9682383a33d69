//! The direct data plane on loopback, in one process: functions served
//! with a data address and a real redis-server for the registry, callers
//! that are runtimes of another node, and raw clients that speak the
//! frames themselves (bad ones included). Across network namespaces, the
//! same is tested by `crates/cwasi-cli/tests/netns.rs`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TempDir;
use cwasi_runtime::broker::{Broker, BrokerConfig};
use cwasi_runtime::wire::{self, Header, Kind, HEADER_LEN};
use cwasi_runtime::{
    DataAddr, DirectConfig, ErrorCode, FunctionSpec, Mode, ModeOverride, NodeDirectory, Runtime,
    ServeHandle, ServeOptions, TlsFiles,
};
use test_programs_artifacts as progs;
use test_support::tls::{NodeCertificate, NodeCertificates};
use test_support::RedisServer;

const PLAIN: DirectConfig = DirectConfig {
    tls: None,
    allow_plain: true,
};

fn tls(ca: &std::path::Path, node: &NodeCertificate) -> DirectConfig {
    DirectConfig {
        tls: Some(TlsFiles {
            ca: ca.to_path_buf(),
            cert: node.cert.clone(),
            key: node.key.clone(),
        }),
        allow_plain: false,
    }
}

/// Serves `module` as `name` (namespace "b") on node `node`, with a data
/// address on loopback; returns the handle and that address.
fn serve(
    redis: &RedisServer,
    dir: &TempDir,
    node: &str,
    name: &str,
    module: &str,
    direct: DirectConfig,
) -> (ServeHandle, DataAddr) {
    let broker = Broker::new(BrokerConfig::new(redis.url(), node)).unwrap();
    let rt = Runtime::builder()
        .broker(broker)
        .direct(direct)
        .function(FunctionSpec::new(name, "b", module.into()))
        .build()
        .unwrap();
    let dir = NodeDirectory::open(&dir.path().join(node)).unwrap();
    let opts = ServeOptions {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ..ServeOptions::default()
    };
    let handle = rt.serve(name, &dir, opts).unwrap();
    let addr = handle.record().data_addr.clone().expect("a data address");
    (handle, addr.parse().unwrap())
}

/// A runtime of node1 that calls other nodes with `direct`.
fn caller(redis: &RedisServer, direct: DirectConfig, mode: ModeOverride) -> Runtime {
    Runtime::builder()
        .broker(Broker::new(BrokerConfig::new(redis.url(), "node1")).unwrap())
        .direct(direct)
        .mode(mode)
        .build()
        .unwrap()
}

/// Waits until `rt` finds `name` announced, and returns its explanation.
fn explain_when_announced(
    rt: &Runtime,
    name: &str,
) -> Result<cwasi_runtime::Selection, cwasi_runtime::CallError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match rt.explain("a", name) {
            Err(e) if e.code == ErrorCode::UnknownFunction && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => return other,
        }
    }
}

/// A raw plain connection to a direct server, past its "ready" frame.
fn raw(addr: DataAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let h = wire::read_header(&mut s, 0).unwrap();
    assert_eq!(
        (h.kind, h.id, h.payload_len),
        (Kind::Response, 0, 0),
        "ready"
    );
    s
}

/// Sends a request frame for `target` with id `id`, from the host of
/// namespace `ns` on `node1`.
fn send_request(s: &mut TcpStream, id: u64, target: &str, payload: &[u8]) {
    let claim = b"ns/@node1";
    let mut h = Header::new(Kind::Request, id);
    h.target_len = target.len() as u16;
    h.caller_len = claim.len() as u16;
    h.payload_len = payload.len() as u64;
    h.budget_us = 5_000_000;
    let names = [target.as_bytes(), claim].concat();
    wire::write_frame(s, &h, &names, payload).unwrap();
}

/// Reads one answer: `Ok(payload)` or `Err((code, message))`.
fn answer(s: &mut TcpStream, id: u64) -> Result<Vec<u8>, (i32, String)> {
    let h = wire::read_header(s, 1 << 30).unwrap();
    assert_eq!(h.id, id, "{h:?}");
    let mut body = vec![0u8; h.payload_len as usize];
    s.read_exact(&mut body).unwrap();
    match h.kind {
        Kind::Response => Ok(body),
        Kind::Error => Err((h.status, String::from_utf8_lossy(&body).into_owned())),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn bad_frames_get_an_error_frame_and_other_callers_go_on() {
    let redis = RedisServer::start();
    let dir = TempDir::new("direct-bad-frames");
    let (_server, addr) = serve(&redis, &dir, "node2", "echo", progs::ECHO, PLAIN);
    assert!(!addr.tls);
    let rt = caller(&redis, PLAIN, ModeOverride::Auto);
    let s = explain_when_announced(&rt, "echo").unwrap();
    assert_eq!(s.mode, Mode::RemoteDirect, "{s}");

    // A wrong target is an error frame, and the connection goes on.
    let mut s = raw(addr);
    send_request(&mut s, 1, "nope", b"xyz");
    let (code, msg) = answer(&mut s, 1).unwrap_err();
    assert_eq!(code, ErrorCode::UnknownFunction.as_raw(), "{msg}");
    send_request(&mut s, 2, "echo", b"still here");
    assert_eq!(answer(&mut s, 2).unwrap(), b"still here");

    // Garbage, a shared-memory flag (there is none over TCP), and a
    // payload over the limit: an error frame, then the connection closes.
    let mut shm = Header::new(Kind::Request, 3);
    shm.flags = wire::FLAG_SHM;
    shm.target_len = 4;
    let mut huge = Header::new(Kind::Request, 4);
    huge.target_len = 4;
    huge.payload_len = 1 << 40;
    for bad in [[0x5au8; HEADER_LEN], shm.encode(), huge.encode()] {
        let mut s = raw(addr);
        s.write_all(&bad).unwrap();
        s.write_all(b"echo").unwrap();
        let h = wire::read_header(&mut s, 1 << 20).unwrap();
        assert_eq!(h.kind, Kind::Error);
        assert_eq!(h.status, ErrorCode::Transport.as_raw());
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        let mut again = [0u8; 1];
        assert_eq!(
            s.read(&mut again).unwrap_or(0),
            0,
            "closed after the error frame"
        );
    }
    // A peer that stops mid-header is cut off within the phase timeout.
    let mut s = raw(addr);
    s.write_all(&Header::new(Kind::Request, 5).encode()[..10])
        .unwrap();
    let started = Instant::now();
    let h = wire::read_header(&mut s, 1 << 20).unwrap();
    assert_eq!(h.kind, Kind::Error);
    assert!(started.elapsed() < Duration::from_secs(10));

    // Through it all, a caller of another node was served.
    for size in [0usize, 1, 64 << 10, 3 << 20] {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
        assert_eq!(rt.call("a", "echo", &data).unwrap(), data, "size {size}");
    }
    let hops = rt.hops();
    assert!(
        hops.iter().all(|h| h.mode == Mode::RemoteDirect),
        "{hops:?}"
    );
}

#[test]
fn a_retry_is_answered_from_memory_and_not_run_again() {
    let redis = RedisServer::start();
    let dir = TempDir::new("direct-retry");
    let (_server, addr) = serve(&redis, &dir, "node2", "tally", progs::TALLY, PLAIN);
    let mut first = raw(addr);
    send_request(&mut first, 77, "tally", b"");
    assert_eq!(answer(&mut first, 77).unwrap(), b"calls=1");
    // The same request again, as a caller that lost its connection sends
    // it: on a new connection, with the same id.
    drop(first);
    let mut second = raw(addr);
    send_request(&mut second, 77, "tally", b"");
    assert_eq!(answer(&mut second, 77).unwrap(), b"calls=1", "ran again");
    // Another request runs.
    send_request(&mut second, 78, "tally", b"");
    assert_eq!(answer(&mut second, 78).unwrap(), b"calls=2");
}

#[test]
fn mutual_tls_admits_cluster_nodes_and_refuses_every_other_peer() {
    let redis = RedisServer::start();
    let dir = TempDir::new("direct-tls");
    std::fs::create_dir_all(dir.path()).unwrap();
    let certs = NodeCertificates::generate(dir.path(), &["node1", "node2", "node3"]);
    let ca = &certs.ca_cert;
    let (_good, addr) = serve(
        &redis,
        &dir,
        "node2",
        "echo",
        progs::ECHO,
        tls(ca, certs.node("node2")),
    );
    assert!(addr.tls);

    // A node of the cluster calls it directly.
    let rt = caller(&redis, tls(ca, certs.node("node1")), ModeOverride::Auto);
    let s = explain_when_announced(&rt, "echo").unwrap();
    assert_eq!(s.mode, Mode::RemoteDirect, "{s}");
    assert!(s.reason.contains("tls://127.0.0.1:"), "{s}");
    for size in [0usize, 64 << 10, 10 << 20] {
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        assert_eq!(rt.call("a", "echo", &data).unwrap(), data, "size {size}");
    }

    // A caller whose certificate another CA signed is refused by the
    // server, and its error says so; it never falls back to the broker.
    let other = certs.other.iter().find(|c| c.name == "node1").unwrap();
    let stranger = caller(&redis, tls(&certs.other_ca_cert, other), ModeOverride::Auto);
    let e = explain_when_announced(&stranger, "echo").unwrap_err();
    assert_eq!(e.code, ErrorCode::Denied, "{e}");
    assert!(e.message.contains("mutual TLS refused"), "{e}");
    let e = stranger.call("a", "echo", b"x").unwrap_err();
    assert_eq!(e.code, ErrorCode::Denied, "{e}");

    // A caller without certificates has no direct path to a TLS server.
    let bare = caller(
        &redis,
        DirectConfig::default(),
        ModeOverride::Force(Mode::RemoteDirect),
    );
    let e = explain_when_announced(&bare, "echo").unwrap_err();
    assert_eq!(e.code, ErrorCode::Denied, "{e}");
    assert!(e.message.contains("has no certificate"), "{e}");

    // A raw TLS client that trusts the CA but presents no certificate
    // completes its half of the handshake and is then refused.
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    let ders = rustls_pemfile_certs(&pem);
    for der in ders {
        roots.add(der).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("node2").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls_stream = rustls::StreamOwned::new(conn, tcp);
    let mut b = [0u8; HEADER_LEN];
    let e = tls_stream.read_exact(&mut b).unwrap_err().to_string();
    assert!(e.to_lowercase().contains("certificate"), "{e}");

    // A server whose certificate another CA signed is refused by the
    // caller.
    let other3 = certs.other.iter().find(|c| c.name == "node3").unwrap();
    let (_rogue, _) = serve(
        &redis,
        &dir,
        "node3",
        "echo3",
        progs::ECHO,
        tls(&certs.other_ca_cert, other3),
    );
    let e = explain_when_announced(&rt, "echo3").unwrap_err();
    assert_eq!(e.code, ErrorCode::Denied, "{e}");
    assert!(e.message.contains("invalid peer certificate"), "{e}");
}

/// The DER certificates in a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}
