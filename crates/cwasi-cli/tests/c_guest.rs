//! A C function, built with Debian's clang, lld and wasi-libc against
//! `guests/c/cwasi.h` (the core ABI), calls and is called like a Rust one:
//! embedded, and locally (`cwasi serve` processes in other namespaces);
//! and it is called remotely (through the broker, from another node), with 0 B, 64 KiB and 10 MiB
//! payloads compared byte for byte; and its failures reach the caller as
//! the ABI's errors. The C programs are `crates/test-programs/c`.

mod common;

use std::path::Path;

use common::guests::{mode_of, payload, private_dir, same, spec, xor, SIZES};
use common::{wait_announced, Scratch, Server};
use cwasi_runtime::broker::{Broker, BrokerConfig};
use cwasi_runtime::{ErrorCode, Mode, NodeDirectory, Runtime, HOST_CALLER};
use test_programs_artifacts as progs;
use test_support::RedisServer;

#[test]
fn c_calls_rust_and_rust_calls_c_embedded() {
    let rt = Runtime::builder()
        .function(spec(
            "c-xform",
            "a",
            test_programs_c::C_TRANSFORM,
            Some("echo"),
        ))
        .function(spec("echo", "a", progs::ECHO, None))
        .function(spec("r-xform", "a", progs::TRANSFORM, Some("c-leaf")))
        .function(spec("c-leaf", "a", test_programs_c::C_TRANSFORM, None))
        .function(spec(
            "c-lost",
            "a",
            test_programs_c::C_TRANSFORM,
            Some("nobody"),
        ))
        .build()
        .unwrap();
    for size in SIZES {
        let data = payload(size);
        // C -> Rust: XOR in C, echoed by Rust.
        let got = rt.call("a", "c-xform", &data).unwrap();
        same(&got, &xor(&data), &format!("c-xform -> echo, {size} B"));
        // Rust -> C: XOR in Rust, XOR again in C.
        let got = rt.call("a", "r-xform", &data).unwrap();
        same(&got, &data, &format!("r-xform -> c-leaf, {size} B"));
    }
    assert_eq!(mode_of(&rt, "c-xform", "echo"), Mode::Embedded);
    assert_eq!(mode_of(&rt, "r-xform", "c-leaf"), Mode::Embedded);

    // The handler's own failure, and a failed call it made.
    let e = rt.call("a", "c-xform", b"fail!now").unwrap_err();
    assert_eq!(e.code, ErrorCode::CalleeError, "{e}");
    assert!(e.message.contains("asked to fail"), "{e}");
    let e = rt.call("a", "c-lost", b"x").unwrap_err();
    assert_eq!(e.code, ErrorCode::CalleeError, "{e}");
    assert!(e.message.contains("nobody"), "the callee's message: {e}");
    // The example in examples/c.
    let shout = Runtime::builder()
        .function(spec("shout", "a", test_programs_c::SHOUT, None))
        .build()
        .unwrap();
    assert_eq!(shout.call("a", "shout", b"hello, c").unwrap(), b"HELLO, C");
}

/// Serves the C transform in `dir` as `name` of namespace `ns`, with `env`.
fn serve_c(dir: &Path, name: &str, ns: &str, env: &[(&str, &str)]) -> Server {
    Server::start(dir, test_programs_c::C_TRANSFORM, name, ns, &[], env)
}

#[test]
fn c_is_called_locally_and_remotely() {
    let scratch = Scratch::new("c-guest");
    let (node_a, node_b) = (
        private_dir(&scratch, "node-a"),
        private_dir(&scratch, "node-b"),
    );
    let redis = RedisServer::start();
    let url = redis.url();

    // Local: served in namespace b, called from namespace a of the node.
    let _local = serve_c(&node_a, "c-local", "b", &[]);
    let caller = Runtime::builder()
        .node_directory(NodeDirectory::open(&node_a).unwrap())
        .build()
        .unwrap();
    for size in SIZES {
        let data = payload(size);
        let got = caller.call("a", "c-local", &data).unwrap();
        same(&got, &xor(&data), &format!("local, {size} B"));
    }
    assert_eq!(mode_of(&caller, HOST_CALLER, "c-local"), Mode::Local);
    // C calling locally: c-fwd (namespace b) forwards to a Rust echo served
    // in namespace e, another process of the node.
    let _echo = Server::start(&node_a, progs::ECHO, "r-echo", "e", &[], &[]);
    let _fwd = Server::start(
        &node_a,
        test_programs_c::C_TRANSFORM,
        "c-fwd",
        "b",
        &["--env", "CWASI_NEXT=r-echo"],
        &[],
    );
    for size in SIZES {
        let data = payload(size);
        let got = caller.call("a", "c-fwd", &data).unwrap();
        same(
            &got,
            &xor(&data),
            &format!("c-fwd -> r-echo, local, {size} B"),
        );
    }
    let e = caller.call("a", "c-local", b"fail!").unwrap_err();
    assert_eq!(e.code, ErrorCode::CalleeError, "{e}");

    // Remote: served on node-b, called from node-a through the broker.
    let env = [("CWASI_REDIS_URL", url.as_str()), ("CWASI_NODE", "node-b")];
    let _remote = serve_c(&node_b, "c-remote", "b", &env);
    wait_announced(&url, "c-remote", "b");
    let broker = Broker::new(BrokerConfig::new(&url, "node-a")).unwrap();
    let remote_caller = Runtime::builder().broker(broker).build().unwrap();
    for size in SIZES {
        let data = payload(size);
        let got = remote_caller.call("a", "c-remote", &data).unwrap();
        same(&got, &xor(&data), &format!("remote, {size} B"));
    }
    assert_eq!(
        mode_of(&remote_caller, HOST_CALLER, "c-remote"),
        Mode::RemoteBroker
    );
}
