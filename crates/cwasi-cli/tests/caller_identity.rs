//! Who may call whom across nodes (docs/architecture.md, "Trust model"):
//! a caller claims only the node its certificate names, on the direct data
//! plane and through the broker, and a request entry that is not signed by
//! a node of the cluster CA, or is a replayed copy, runs nothing. Nodes in
//! network namespaces of their own (`test_support::netns`), real `cwasi
//! serve`, `cwasi run` and `cwasi call` processes, `redis-cli` for the
//! entries written by hand.
//!
//! These tests need root (CI runs as root). Where namespaces cannot be
//! made they fail under CI and print a loud SKIPPED elsewhere.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{function, run_with_timeout, Output, Scratch, Server, LIMIT};
use cwasi_runtime::broker::{Broker, BrokerConfig};
use cwasi_runtime::{DirectConfig, ErrorCode, Mode, Runtime, TlsFiles};
use redis::Value;
use test_programs_artifacts as progs;
use test_support::netns::{cluster_or_skip, NetCluster, NetNode};
use test_support::tls::{NodeCertificate, NodeCertificates};
use test_support::RedisServer;

/// The port a node's direct server listens on.
const DATA_PORT: u16 = 7000;
/// The stream of `echo` in namespace `b`.
const STREAM: &str = "cwasi:{b/echo}:stream";
/// The stream of `slow` (`busy`) in namespace `b`.
const SLOW_STREAM: &str = "cwasi:{b/slow}:stream";

/// Two nodes, the broker in node1's namespace, and the certificates.
struct Nodes {
    scratch: Scratch,
    redis: RedisServer,
    net: NetCluster,
    certs: NodeCertificates,
}

impl Nodes {
    fn start(tag: &str) -> Option<Nodes> {
        let net = cluster_or_skip(2)?;
        let redis = RedisServer::start_in(net.node(0).name(), net.node(0).addr(), &[]);
        let scratch = Scratch::new(tag);
        let certs = NodeCertificates::generate(&scratch.0, &["node1", "node2"]);
        Some(Nodes {
            scratch,
            redis,
            net,
            certs,
        })
    }

    fn node(&self, i: usize) -> &NetNode {
        self.net.node(i - 1)
    }

    fn dir(&self, i: usize) -> PathBuf {
        self.scratch.0.join(format!("node{i}"))
    }

    /// The environment of a process claiming to be `node`, with the TLS
    /// files of `cert` (of the cluster CA, or of `ca`).
    fn env(&self, node: &str, ca: &Path, cert: &NodeCertificate) -> Vec<(String, String)> {
        vec![
            ("CWASI_REDIS_URL".into(), self.redis.url()),
            ("CWASI_NODE".into(), node.into()),
            ("CWASI_TLS_CA".into(), ca.display().to_string()),
            ("CWASI_TLS_CERT".into(), cert.cert.display().to_string()),
            ("CWASI_TLS_KEY".into(), cert.key.display().to_string()),
        ]
    }

    /// node1's own environment.
    fn node1(&self) -> Vec<(String, String)> {
        self.env("node1", &self.certs.ca_cert, self.certs.node("node1"))
    }

    /// `cwasi serve` of `echo` (namespace "b") on node2 with its own
    /// certificate, `extra` arguments, and its log in `echo.log`.
    fn serve_echo(&self, extra: &[&str]) -> (Server, PathBuf) {
        self.serve(progs::ECHO, "echo", extra)
    }

    /// `cwasi serve` of `module` as `name` (namespace "b") on node2 with its
    /// own certificate, `extra` arguments, and its log in `<name>.log`.
    fn serve(&self, module: &str, name: &str, extra: &[&str]) -> (Server, PathBuf) {
        let dir = self.dir(2);
        let log = self.scratch.0.join(format!("{name}.log"));
        let mut cmd = self.node(2).command(env!("CARGO_BIN_EXE_cwasi"));
        cmd.args(["serve", module, "--name", name, "--namespace", "b"])
            .arg("--runtime-dir")
            .arg(&dir)
            .args(["--call-timeout-ms", "20000"])
            .args(extra)
            .envs(self.env("node2", &self.certs.ca_cert, self.certs.node("node2")));
        let file = std::fs::File::create(&log).unwrap();
        (Server::logging_to(cmd, &dir, name, "b", file), log)
    }

    /// Waits until node1 routes calls of namespace "a" to `echo` in `mode`.
    fn wait_routed(&self, mode: Mode) {
        let url = self.redis.url();
        let files = TlsFiles {
            ca: self.certs.ca_cert.clone(),
            cert: self.certs.node("node1").cert.clone(),
            key: self.certs.node("node1").key.clone(),
        };
        self.node(1).run(move || {
            let rt = Runtime::builder()
                .broker(Broker::new(BrokerConfig::new(url, "node1")).unwrap())
                .direct(DirectConfig {
                    tls: Some(files),
                    allow_plain: false,
                })
                .build()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match rt.explain("a", "echo") {
                    Ok(s) if s.mode == mode => return,
                    other => assert!(Instant::now() < deadline, "never {mode}: {other:?}"),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    }

    /// `cwasi run --explain` of the producer (namespace "a") on node1,
    /// calling `echo` with 64 bytes, with environment `env`.
    fn produce(&self, env: &[(String, String)]) -> Output {
        let toml = format!(
            "entry = \"producer\"\n{}",
            function(
                "producer",
                progs::PRODUCER,
                "namespace = \"a\"\nargs = [\"64\", \"echo\", \"echo\"]"
            ),
        );
        let file = self.scratch.write("produce.toml", &toml);
        let mut cmd = self.node(1).command(env!("CARGO_BIN_EXE_cwasi"));
        cmd.args(["run", &file, "--explain", "--runtime-dir"])
            .arg(self.dir(1))
            .envs(env.iter().cloned());
        run_with_timeout(&mut cmd, LIMIT)
    }

    /// `redis-cli` against the broker, from node1.
    fn redis_cli(&self, args: &[&str]) -> String {
        let mut cmd = self.node(1).command("redis-cli");
        cmd.args(["-h", &self.redis.addr().to_string()])
            .args(["-p", &self.redis.port().to_string()])
            .args(args);
        let out = run_with_timeout(&mut cmd, LIMIT);
        assert_eq!(out.code, Some(0), "redis-cli {args:?}: {}", out.stderr);
        out.stdout
    }

    /// A connection to the broker, made in node1's namespace.
    fn connection(&self) -> redis::Connection {
        let url = self.redis.url();
        self.node(1)
            .run(move || redis::Client::open(url).unwrap().get_connection().unwrap())
    }
}

fn assert_ok(out: &Output) {
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("ok size=64"), "{}", out.stdout);
}

fn assert_denied(out: &Output, why: &str) {
    assert_eq!(out.code, Some(2), "{}\n{}", out.stdout, out.stderr);
    let code = format!("error code={}", ErrorCode::Denied.as_raw());
    assert!(
        out.stdout.contains(&code) && out.stdout.contains(why),
        "{}",
        out.stdout
    );
}

/// Waits until `what` holds, for up to 30 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_direct_caller_claims_only_the_node_its_certificate_names() {
    let Some(nodes) = Nodes::start("identity-direct") else {
        return;
    };
    let listen = SocketAddr::from((nodes.node(2).addr(), DATA_PORT)).to_string();
    let (_echo, _log) = nodes.serve_echo(&["--listen", &listen, "--allow-caller", "a/*@node1"]);
    nodes.wait_routed(Mode::RemoteDirect);
    // node1, as its certificate says: allowed by the rule `a/*@node1`.
    let out = nodes.produce(&nodes.node1());
    assert_ok(&out);
    assert!(
        out.stderr.contains("producer -> echo: remote-direct"),
        "{}",
        out.stderr
    );
    // The same certificate, claiming to be node3: refused by node2.
    let ca = &nodes.certs.ca_cert;
    let as_node3 = nodes.env("node3", ca, nodes.certs.node("node1"));
    assert_denied(
        &nodes.produce(&as_node3),
        "the peer's certificate does not name node 'node3'",
    );
    // And node1 is still served.
    assert_ok(&nodes.produce(&nodes.node1()));
}

#[test]
fn broker_requests_are_signed_and_forged_or_replayed_entries_run_nothing() {
    let Some(nodes) = Nodes::start("identity-broker") else {
        return;
    };
    let (_echo, log) = nodes.serve_echo(&["--allow-caller", "a/*"]);
    nodes.wait_routed(Mode::RemoteBroker);
    let out = nodes.produce(&nodes.node1());
    assert_ok(&out);
    assert!(
        out.stderr.contains("producer -> echo: remote-broker"),
        "{}",
        out.stderr
    );

    // An entry written by hand, unsigned: refused with DENIED (the reply
    // says why), acknowledged and logged.
    let deadline = (std::time::SystemTime::now() + Duration::from_secs(60))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    nodes.redis_cli(&[
        "XADD", STREAM, "*", "id", "hand-1", "deadline", &deadline, "payload", "hi", "caller",
        "a/@node1",
    ]);
    let reply = nodes.redis_cli(&["BLPOP", "cwasi:{b/echo}:reply:hand-1", "20"]);
    assert!(reply.contains("is not signed"), "{reply}");
    // Valid calls go on in between.
    assert_ok(&nodes.produce(&nodes.node1()));

    // A node with a certificate of another CA: its signed requests are
    // refused.
    let other = nodes
        .certs
        .other
        .iter()
        .find(|c| c.name == "node1")
        .unwrap();
    let rogue = nodes.env("node1", &nodes.certs.other_ca_cert, other);
    let out = nodes.produce(&rogue);
    assert_denied(&out, "does not prove node 'node1'");
    assert_ok(&nodes.produce(&nodes.node1()));

    // A valid entry replayed after its answer runs nothing new. `slow`
    // takes a second over the call, so that its entry can be read whole
    // from the stream while it runs.
    let (_slow, slow_log) = nodes.serve(progs::BUSY, "slow", &[]);
    let mut conn = nodes.connection();
    let mut caller = nodes.node(1).command(env!("CARGO_BIN_EXE_cwasi"));
    caller
        .args(["call", "slow", "--namespace", "a", "--data", "1500"])
        .args(["--call-timeout-ms", "30000", "--runtime-dir"])
        .arg(nodes.dir(1))
        .envs(nodes.node1())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let caller = caller.spawn().unwrap();
    let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    eventually("the call's entry is in the stream", || {
        let entries: Value = redis::cmd("XRANGE")
            .arg(SLOW_STREAM)
            .arg("-")
            .arg("+")
            .query(&mut conn)
            .unwrap();
        fields = entry_fields(entries);
        !fields.is_empty()
    });
    let answered = caller.wait_with_output().unwrap();
    assert!(answered.status.success(), "{answered:?}");
    assert_eq!(answered.stdout, b"1500");
    let id = fields.iter().find(|(k, _)| k == b"id").unwrap().1.clone();
    let reply_key = format!("cwasi:{{b/slow}}:reply:{}", String::from_utf8(id).unwrap());
    let mut add = redis::cmd("XADD");
    add.arg(SLOW_STREAM).arg("*");
    for (k, v) in &fields {
        add.arg(k).arg(v);
    }
    let _: String = add.query(&mut conn).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let said = std::fs::read_to_string(&slow_log).unwrap();
        if said.contains("dropping a replayed request") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replay was not dropped:\n{said}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let replies: i64 = redis::cmd("LLEN").arg(&reply_key).query(&mut conn).unwrap();
    assert_eq!(replies, 0, "the replay was answered");
    let len: i64 = redis::cmd("XLEN")
        .arg(SLOW_STREAM)
        .query(&mut conn)
        .unwrap();
    assert_eq!(len, 0, "the replay was not acknowledged and deleted");

    // The stream drained: nothing left, nothing pending.
    let len: i64 = redis::cmd("XLEN").arg(STREAM).query(&mut conn).unwrap();
    assert_eq!(len, 0);
    let pending: Value = redis::cmd("XPENDING")
        .arg(STREAM)
        .arg("cwasi")
        .query(&mut conn)
        .unwrap();
    assert!(
        matches!(&pending, Value::Array(v) if v.first() == Some(&Value::Int(0))),
        "{pending:?}"
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(log.matches("refusing a request").count(), 2, "{log}");
    assert_ok(&nodes.produce(&nodes.node1()));
}

/// The fields of the one entry in an `XRANGE` reply, if there is one.
fn entry_fields(entries: Value) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Value::Array(entries) = entries else {
        return Vec::new();
    };
    let Some(Value::Array(entry)) = entries.into_iter().next() else {
        return Vec::new();
    };
    let Some(Value::Array(fields)) = entry.into_iter().nth(1) else {
        return Vec::new();
    };
    let bytes = |v: Value| match v {
        Value::BulkString(b) => b,
        other => panic!("a field that is not a string: {other:?}"),
    };
    let mut it = fields.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((bytes(k), bytes(v)));
    }
    out
}
