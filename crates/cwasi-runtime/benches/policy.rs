//! What "who may call whom" costs (issue "Who may call whom"), in one
//! process and one run, each pair measured in alternation:
//!
//! - `admit`: the callee's policy check alone, with no policy, one rule,
//!   eight rules (the last one matching) and a denial;
//! - `embedded 64 B`: host calls of `discard` without a policy and of the
//!   same module with one (`default/*`), so the difference is the check on
//!   the embedded path (target: at most 100 ns);
//! - `local 64 B`: calls of two served copies of `discard`, one with a
//!   policy, from another namespace (so locally), through the call slot:
//!   the difference is the claim read from the slot and the check;
//! - `broker 64 B`: calls through a private `redis-server`, between two
//!   runtimes with node identities (each request signed by the caller,
//!   checked by the server, its id marked taken) against two without.
//!
//! It prints the figures and whether this run met the targets, and never
//! asserts on time. `cargo bench -p cwasi-runtime --bench policy`;
//! `-- --quick` for a shorter, noisier run. Without `--bench` (as `cargo
//! test --benches` runs it) it does one smoke pass whose figures mean
//! nothing. See docs/benchmarks.md.

// Only part of the shared harness is used here.
#[allow(dead_code)]
mod common;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fmt_ns, measure, op, print_banner, print_footer, verdict, Args, Settings};
use cwasi_runtime::broker::{Broker, BrokerConfig};
use cwasi_runtime::{
    CallPolicy, CallerIdentity, DirectConfig, FunctionSpec, Mode, ModeOverride, NodeDirectory,
    Runtime, ServeOptions, TlsFiles,
};
use test_programs_artifacts as progs;

/// The most the check may add to an embedded call.
const EMBEDDED_TARGET_NS: f64 = 100.0;

fn settings(args: &Args) -> Settings {
    Settings::for_profile(
        args.profile,
        Duration::from_secs(2),
        7,
        Duration::from_millis(300),
    )
}

fn discard(name: &str, ns: &str, policy: Option<&[&str]>) -> FunctionSpec {
    let mut spec = FunctionSpec::new(name, ns, PathBuf::from(progs::DISCARD));
    if let Some(rules) = policy {
        spec.policy = CallPolicy::parse(rules).unwrap();
    }
    spec
}

/// Prints one pair: the plain figure, the guarded one and the difference.
fn pair(what: &str, plain: f64, guarded: f64) -> f64 {
    println!(
        "  {what:<16} without {:>10}  with {:>10}  difference {:>10}",
        fmt_ns(plain),
        fmt_ns(guarded),
        fmt_ns(guarded - plain)
    );
    guarded - plain
}

fn check_alone(s: &Settings) {
    println!("admit (the policy check alone)");
    let caller = CallerIdentity::parse(b"team-a/resize@node1").unwrap();
    let none = CallPolicy::allow_all();
    let one = CallPolicy::parse(&["team-a/*"]).unwrap();
    let eight = CallPolicy::parse(&[
        "t1/*",
        "t2/*",
        "t3/*@n1",
        "team-b/*",
        "*/thumb*",
        "ops/*",
        "team-a/x",
        "team-a/res*@node*",
    ])
    .unwrap();
    let deny = CallPolicy::parse(&["team-b/*"]).unwrap();
    let samples = measure(
        s,
        [&none, &one, &eight, &deny].map(|p| {
            let caller = &caller;
            op(move || {
                let _ = black_box(p.admit(black_box(caller), "d"));
            })
        }),
    );
    for (name, s) in ["no policy", "one rule", "eight rules", "denied"]
        .iter()
        .zip(&samples)
    {
        println!("  {name:<16} median {:>9}", fmt_ns(s.median()));
    }
}

fn embedded(s: &Settings) -> f64 {
    let rt = Runtime::builder()
        .function(discard("plain", "default", None))
        .function(discard("guarded", "default", Some(&["default/*"])))
        .build()
        .unwrap();
    let payload = [7u8; 64];
    let [plain, guarded] = measure(
        s,
        ["plain", "guarded"].map(|target| {
            let (rt, payload) = (&rt, &payload);
            op(move || {
                black_box(rt.call("default", target, payload).unwrap());
            })
        }),
    );
    pair("embedded 64 B", plain.median(), guarded.median())
}

fn local(s: &Settings) {
    let dir_path = std::env::temp_dir().join(format!("cwasi-bench-policy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir_path);
    let dir = NodeDirectory::open(&dir_path).unwrap();
    let server = Runtime::builder()
        .function(discard("plain", "srv", None))
        .function(discard("guarded", "srv", Some(&["cli/*"])))
        .build()
        .unwrap();
    let _plain = server
        .serve("plain", &dir, ServeOptions::default())
        .unwrap();
    let _guarded = server
        .serve("guarded", &dir, ServeOptions::default())
        .unwrap();
    let rt = Runtime::builder().node_directory(dir).build().unwrap();
    let payload = [7u8; 64];
    let [plain, guarded] = measure(
        s,
        ["plain", "guarded"].map(|target| {
            let (rt, payload) = (&rt, &payload);
            op(move || {
                black_box(rt.call("cli", target, payload).unwrap());
            })
        }),
    );
    assert_eq!(rt.explain("cli", "guarded").unwrap().mode, Mode::Local);
    pair("local 64 B", plain.median(), guarded.median());
    drop(rt);
    let _ = std::fs::remove_dir_all(&dir_path);
}

/// A runtime of `node` on the broker at `url`, with the node identity of
/// `files` if given, forced to the broker path.
fn on_broker(url: &str, node: &str, files: Option<TlsFiles>, f: Option<FunctionSpec>) -> Runtime {
    let mut b = Runtime::builder()
        .broker(Broker::new(BrokerConfig::new(url.to_string(), node)).unwrap())
        .direct(DirectConfig {
            tls: files,
            allow_plain: false,
        })
        .mode(ModeOverride::Force(Mode::RemoteBroker));
    if let Some(f) = f {
        b = b.function(f);
    }
    b.build().unwrap()
}

fn broker(s: &Settings) {
    let redis = test_support::RedisServer::start();
    let scratch = std::env::temp_dir().join(format!("cwasi-bench-certs-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let certs = test_support::tls::NodeCertificates::generate(&scratch, &["n1", "n2"]);
    let files = |node: &str| TlsFiles {
        ca: certs.ca_cert.clone(),
        cert: certs.node(node).cert.clone(),
        key: certs.node(node).key.clone(),
    };
    let url = redis.url();
    let dirs: Vec<PathBuf> = (0..2).map(|i| scratch.join(format!("node{i}"))).collect();
    let plain_server = on_broker(&url, "n2", None, Some(discard("plain", "srv", None)));
    let signed_server = on_broker(
        &url,
        "n2",
        Some(files("n2")),
        Some(discard("signed", "srv", None)),
    );
    let _a = plain_server
        .serve(
            "plain",
            &NodeDirectory::open(&dirs[0]).unwrap(),
            ServeOptions::default(),
        )
        .unwrap();
    let _b = signed_server
        .serve(
            "signed",
            &NodeDirectory::open(&dirs[1]).unwrap(),
            ServeOptions::default(),
        )
        .unwrap();
    let plain_caller = Arc::new(on_broker(&url, "n1", None, None));
    let signed_caller = Arc::new(on_broker(&url, "n1", Some(files("n1")), None));
    let payload = [7u8; 64];
    let [plain, signed] = measure(
        s,
        [(&plain_caller, "plain"), (&signed_caller, "signed")].map(|(rt, target)| {
            let payload = &payload;
            op(move || {
                black_box(rt.call("cli", target, payload).unwrap());
            })
        }),
    );
    pair("broker 64 B", plain.median(), signed.median());
    crypto_and_round_trip(s, &certs.node("n1").key, &certs.node("n1").cert, &url);
    let _ = std::fs::remove_dir_all(&scratch);
}

/// Where the broker difference goes: a signature with the node's key and
/// its check (rustls's ring provider, as the runtime uses it), and one
/// more round trip to Redis (the request's `taken` key).
fn crypto_and_round_trip(s: &Settings, key: &std::path::Path, cert: &std::path::Path, url: &str) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::SignatureScheme;
    let provider = rustls::crypto::ring::default_provider();
    let key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::from_pem_file(key).unwrap())
        .unwrap();
    let cert = CertificateDer::from_pem_file(cert).unwrap();
    let ee = webpki::EndEntityCert::try_from(&cert).unwrap();
    let scheme = SignatureScheme::ECDSA_NISTP256_SHA256;
    let signer = key.choose_scheme(&[scheme]).unwrap();
    let message = [9u8; 160];
    let signature = signer.sign(&message).unwrap();
    let algorithm = provider
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(s, _)| *s == scheme)
        .unwrap()
        .1[0];
    let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    let [sign, verify, ping] = measure(
        s,
        [
            op(|| {
                black_box(signer.sign(black_box(&message)).unwrap());
            }),
            op(|| {
                ee.verify_signature(algorithm, black_box(&message), &signature)
                    .unwrap();
            }),
            op(|| {
                let _: String = redis::cmd("PING").query(&mut conn).unwrap();
            }),
        ],
    );
    println!(
        "  of which: ECDSA P-256 sign {}, verify {}, a Redis round trip {}",
        fmt_ns(sign.median()),
        fmt_ns(verify.median()),
        fmt_ns(ping.median())
    );
}

fn main() {
    let started = Instant::now();
    let (args, _) = Args::parse("policy", &[64], &[]);
    print_banner(
        "policy: the cost of caller identities and call policies",
        args.profile,
    );
    let s = settings(&args);
    check_alone(&s);
    println!();
    println!("calls, without and with a policy (or signed requests)");
    let added = embedded(&s);
    local(&s);
    broker(&s);
    println!();
    println!(
        "target: the check adds at most {} to an embedded call: {} ({})",
        fmt_ns(EMBEDDED_TARGET_NS),
        verdict(added <= EMBEDDED_TARGET_NS),
        fmt_ns(added)
    );
    print_footer(started);
}
