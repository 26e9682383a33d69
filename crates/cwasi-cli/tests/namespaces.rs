//! Which namespace's function a call reaches when one name is served in
//! several namespaces (docs/architecture.md, "One name in several
//! namespaces"): on one node, and across nodes through the cluster registry.
//!
//! `f` is `echo` in namespace `a` and `transform` (every byte XOR 0xA5) in
//! namespace `b`, so the answer itself says which one ran, besides
//! `--explain`. The servers of `b` start first, so that the order of
//! starting (and of the node directory's entries) is not what makes `a` win.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::guests::private_dir;
use common::{cwasi, function, run_with_timeout, Output, Scratch, Server, LIMIT};
use cwasi_runtime::broker::{Broker, BrokerConfig};
use cwasi_runtime::Runtime;
use test_programs_artifacts as progs;
use test_support::RedisServer;

/// The request every call sends.
const REQUEST: &[u8] = b"which namespace?";

/// What `f` of namespace `b` (`transform`) answers to [`REQUEST`].
fn transformed() -> Vec<u8> {
    REQUEST.iter().map(|b| b ^ 0xA5).collect()
}

/// `cwasi call f --namespace <ns> --explain` with node directory `dir` and
/// extra environment; the response, and what the call printed.
fn call_f(scratch: &Scratch, dir: &Path, ns: &str, env: &[(&str, &str)]) -> (Vec<u8>, Output) {
    let out_file = scratch.0.join(format!("response-{ns}"));
    let _ = std::fs::remove_file(&out_file);
    let out = run_with_timeout(
        std::process::Command::new(env!("CARGO_BIN_EXE_cwasi"))
            .args(["call", "f", "--explain", "--namespace", ns])
            .args(["--data", std::str::from_utf8(REQUEST).unwrap()])
            .arg("--out")
            .arg(&out_file)
            .arg("--runtime-dir")
            .arg(dir)
            .envs(env.iter().copied()),
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "caller in '{ns}': {}", out.stderr);
    let response = std::fs::read(&out_file).unwrap();
    (response, out)
}

/// Checks that the caller in `ns` reached `f` of `winner` in `mode`.
fn assert_reached(got: &(Vec<u8>, Output), ns: &str, mode: &str, winner: &str, why: &str) {
    let (response, out) = got;
    let expected = match winner {
        "a" => REQUEST.to_vec(),
        "b" => transformed(),
        other => panic!("no function f in namespace '{other}' here"),
    };
    assert_eq!(
        response, &expected,
        "caller in '{ns}' did not reach f of '{winner}': {}",
        out.stderr
    );
    let edge = format!("<host> -> f: {mode} (");
    assert!(
        out.stderr.contains(&edge),
        "caller in '{ns}': no '{edge}' in: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains(why),
        "caller in '{ns}': no '{why}' in: {}",
        out.stderr
    );
}

#[test]
fn on_one_node_the_callers_namespace_wins_then_the_first_in_name_order() {
    let scratch = Scratch::new("namespaces-node");
    let dir = private_dir(&scratch, "node");
    let _b = Server::start(&dir, progs::TRANSFORM, "f", "b", &[], &[]);
    let _a = Server::start(&dir, progs::ECHO, "f", "a", &[], &[]);

    // A caller in `a` embeds `a`'s function: `cwasi run` loads the module
    // `a`'s server published, as it does for any same-namespace server.
    // `producer` checks that `f` echoed its bytes, which `b`'s would not.
    let toml = format!(
        "entry = \"producer\"\n{}",
        function(
            "producer",
            progs::PRODUCER,
            "namespace = \"a\"\nargs = [\"4096\", \"f\", \"echo\"]"
        )
    );
    let composition = scratch.write("caller-in-a.toml", &toml);
    let out = cwasi(
        &[
            "run",
            &composition,
            "--explain",
            "--runtime-dir",
            dir.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("ok size=4096"), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("producer -> f: embedded ('f' is served on this node (pid ")
            && out
                .stderr
                .contains("in the caller's namespace 'a'; its module"),
        "{}",
        out.stderr
    );

    // `cwasi call` never embeds: the caller's namespace's server, locally.
    let caller_a = call_f(&scratch, &dir, "a", &[]);
    assert_reached(&caller_a, "a", "local", "a", "(namespace 'a', pid ");
    let caller_b = call_f(&scratch, &dir, "b", &[]);
    assert_reached(&caller_b, "b", "local", "b", "(namespace 'b', pid ");

    // A caller in neither namespace gets the first in name order, `a`,
    // every time; it is never embedded, whichever it is.
    for _ in 0..3 {
        let caller_c = call_f(&scratch, &dir, "c", &[]);
        assert_reached(
            &caller_c,
            "c",
            "local",
            "a",
            "'f' is served on this node (namespace 'a', pid ",
        );
    }
}

/// Waits until the cluster registry lists `f` in each of `namespaces`.
fn wait_announced_in(url: &str, namespaces: &[&str]) {
    let broker = Broker::new(BrokerConfig::new(url, "node-watcher")).unwrap();
    let watcher = Runtime::builder().broker(broker).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for ns in namespaces {
        // A caller in `ns` is sent to `ns` once `ns` is announced.
        let wanted = format!("(namespace '{ns}')");
        while !watcher
            .explain(ns, "f")
            .is_ok_and(|s| s.reason.contains(&wanted))
        {
            assert!(Instant::now() < deadline, "f of '{ns}' was never announced");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn across_nodes_the_callers_namespace_wins_then_the_first_in_name_order_but_this_node_first() {
    let redis = RedisServer::start();
    let url = redis.url();
    let scratch = Scratch::new("namespaces-nodes");
    let (d1, d2) = (
        private_dir(&scratch, "node1"),
        private_dir(&scratch, "node2"),
    );
    let node2 = [("CWASI_REDIS_URL", url.as_str()), ("CWASI_NODE", "node2")];
    let _b = Server::start(&d2, progs::TRANSFORM, "f", "b", &[], &node2);
    let _a = Server::start(&d2, progs::ECHO, "f", "a", &[], &node2);
    wait_announced_in(&url, &["a", "b"]);

    let node1 = [("CWASI_REDIS_URL", url.as_str()), ("CWASI_NODE", "node1")];
    let caller_a = call_f(&scratch, &d1, "a", &node1);
    assert_reached(
        &caller_a,
        "a",
        "remote-broker",
        "a",
        "'f' is served on node(s) node2 (namespace 'a')",
    );
    let caller_b = call_f(&scratch, &d1, "b", &node1);
    assert_reached(
        &caller_b,
        "b",
        "remote-broker",
        "b",
        "'f' is served on node(s) node2 (namespace 'b')",
    );
    for _ in 0..3 {
        let caller_c = call_f(&scratch, &d1, "c", &node1);
        assert_reached(
            &caller_c,
            "c",
            "remote-broker",
            "a",
            "'f' is served on node(s) node2 (namespace 'a')",
        );
    }

    // Where comes before which namespace: once node1 serves `f` itself, in
    // `b` only, a caller of node1 in `a` gets node1's `b` locally, not
    // node2's `a`. (The registry is not asked while this node has one.)
    let _local_b = Server::start(&d1, progs::TRANSFORM, "f", "b", &[], &[]);
    let caller_a = call_f(&scratch, &d1, "a", &node1);
    assert_reached(
        &caller_a,
        "a",
        "local",
        "b",
        "'f' is served on this node (namespace 'b', pid ",
    );
}
