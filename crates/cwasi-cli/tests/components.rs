//! Components (`wit/function.wit`, WASI 0.2) call and are called like core
//! modules: embedded, locally (`cwasi serve` processes in other namespaces)
//! and remotely (through the broker, from another node), mixed freely with
//! core modules, with 0 B, 64 KiB and 10 MiB payloads compared byte for
//! byte; and every error of the core ABI reaches a component caller as its
//! `call-error`, and a caller of a component as the same code. The Rust
//! components are `crates/test-programs/components` (wit-bindgen on
//! wasm32-wasip2).

mod common;

use std::process::Command;
use std::time::Duration;

use common::guests::{mode_of, payload, private_dir, same, spec, xor, SIZES};
use common::{wait_announced, Scratch, Server};
use cwasi_runtime::broker::{Broker, BrokerConfig};
use cwasi_runtime::{ErrorCode, Limits, Mode, NodeDirectory, Runtime, HOST_CALLER};
use test_programs_artifacts as progs;
use test_support::RedisServer;

#[test]
fn components_and_core_modules_call_each_other_embedded() {
    let rt = Runtime::builder()
        // component -> core
        .function(spec(
            "c-xform",
            "a",
            progs::COMPONENT_TRANSFORM,
            Some("echo"),
        ))
        .function(spec("echo", "a", progs::ECHO, None))
        // core -> component
        .function(spec("r-xform", "a", progs::TRANSFORM, Some("c-leaf")))
        .function(spec("c-leaf", "a", progs::COMPONENT_TRANSFORM, None))
        // component -> component
        .function(spec(
            "cc-xform",
            "a",
            progs::COMPONENT_TRANSFORM,
            Some("c-leaf"),
        ))
        .build()
        .unwrap();
    assert!(rt.module_info("c-leaf").unwrap().is_component());
    for size in SIZES {
        let data = payload(size);
        let got = rt.call("a", "c-leaf", &data).unwrap();
        same(&got, &xor(&data), &format!("host -> component, {size} B"));
        let got = rt.call("a", "c-xform", &data).unwrap();
        same(&got, &xor(&data), &format!("component -> core, {size} B"));
        let got = rt.call("a", "r-xform", &data).unwrap();
        same(&got, &data, &format!("core -> component, {size} B"));
        let got = rt.call("a", "cc-xform", &data).unwrap();
        same(&got, &data, &format!("component -> component, {size} B"));
    }
    assert_eq!(mode_of(&rt, "c-xform", "echo"), Mode::Embedded);
    assert_eq!(mode_of(&rt, "r-xform", "c-leaf"), Mode::Embedded);
    assert_eq!(mode_of(&rt, "cc-xform", "c-leaf"), Mode::Embedded);

    // The example in examples/rust-component.
    let upper = Runtime::builder()
        .function(spec("upper", "a", progs::UPPER, None))
        .build()
        .unwrap();
    assert_eq!(
        upper.call("a", "upper", b"hello, wit").unwrap(),
        b"HELLO, WIT"
    );
}

fn faults_runtime() -> Runtime {
    let limits = Limits {
        max_memory_bytes: 64 << 20,
        max_payload_bytes: 16 << 20,
        call_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    Runtime::builder()
        .limits(limits)
        .function(spec("faults", "a", progs::COMPONENT_FAULTS, None))
        .function(spec("trap", "a", progs::TRAP, None))
        .function(spec("echo", "a", progs::ECHO, None))
        .function(spec("entry", "a", progs::COMPONENT_ENTRY, None))
        .function(spec("c-leaf", "a", progs::COMPONENT_TRANSFORM, None))
        .build()
        .unwrap()
}

fn text(rt: &Runtime, command: &str) -> String {
    let got = rt
        .call("a", "faults", command.as_bytes())
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    String::from_utf8(got).unwrap()
}

#[test]
fn a_component_callee_fails_with_the_core_abi_codes() {
    let rt = faults_runtime();
    let cases: [(&str, ErrorCode, &str); 5] = [
        (
            "fail:the handler says no",
            ErrorCode::CalleeError,
            "the handler says no",
        ),
        ("trap", ErrorCode::CalleeTrapped, "unreachable"),
        ("loop", ErrorCode::Timeout, "deadline"),
        ("hog", ErrorCode::ResourceLimit, "memory limit"),
        ("big:16777217", ErrorCode::TooLarge, "response"),
    ];
    for (command, code, words) in cases {
        let e = rt.call("a", "faults", command.as_bytes()).unwrap_err();
        assert_eq!(e.code, code, "{command}: {e}");
        assert!(e.message.contains(words), "{command}: {e}");
    }
    // A request over the limit is refused before the component sees it.
    let e = rt
        .call("a", "faults", &vec![0u8; (16 << 20) + 1])
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::TooLarge, "{e}");
    // An entry is not callable.
    let e = rt.call("a", "entry", b"x").unwrap_err();
    assert_eq!(e.code, ErrorCode::NotCallable, "{e}");
    // After all that, a fresh instance still answers.
    assert_eq!(text(&rt, "call:echo:still here"), "ok 10 still here\n");
}

#[test]
fn a_component_caller_gets_each_error_as_its_call_error() {
    let rt = faults_runtime();
    let cases: [(&str, &str); 7] = [
        ("call:echo:hi", "ok 2 hi\n"),
        ("call:nobody:x", "error unknown-function "),
        ("call:trap:x", "error callee-trapped "),
        ("call:faults:fail:inner says no", "error callee-error "),
        ("call:faults:hog", "error resource-limit "),
        ("call:entry:x", "error not-callable "),
        ("badtarget", "error invalid-argument "),
    ];
    for (command, start) in cases {
        let got = text(&rt, command);
        assert!(got.starts_with(start), "{command}: {got}");
    }
    assert!(text(&rt, "call:faults:fail:inner says no").contains("inner says no"));
    // Fan-out with start/wait, and a call waited twice.
    let fanout = text(&rt, "fanout:echo,c-leaf,nobody:ab");
    let want = format!(
        "ok 2 ab\nok 2 {}\nerror unknown-function ",
        String::from_utf8_lossy(&xor(b"ab"))
    );
    assert!(fanout.starts_with(&want), "{fanout}");
    let twice = text(&rt, "waittwice:echo");
    assert!(
        twice.starts_with("ok 5 twice\nerror unknown-handle "),
        "{twice}"
    );
    // A request over the payload limit, from a component.
    let got = text(&rt, &format!("callbig:echo:{}", (16 << 20) + 1));
    assert!(got.starts_with("error too-large "), "{got}");
}

#[test]
fn a_component_entry_runs_and_calls() {
    let scratch = Scratch::new("component-entry");
    let composition = scratch.0.join("entry.toml");
    std::fs::write(
        &composition,
        format!(
            "entry = \"entry\"\n\n\
             [functions.entry]\nmodule = {:?}\nnamespace = \"a\"\nargs = [\"c-leaf\", \"abc\"]\n\n\
             [functions.c-leaf]\nmodule = {:?}\nnamespace = \"a\"\nenv = {{ CWASI_NEXT = \"upper\" }}\n\n\
             [functions.upper]\nmodule = {:?}\nnamespace = \"a\"\n",
            progs::COMPONENT_ENTRY,
            progs::COMPONENT_TRANSFORM,
            progs::UPPER
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cwasi"))
        .arg("run")
        .arg(&composition)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let want: Vec<u8> = xor(b"abc").to_ascii_uppercase();
    assert_eq!(out.stdout, [want.as_slice(), b"\n"].concat(), "{out:?}");
}

#[test]
fn components_are_called_locally_and_remotely() {
    let scratch = Scratch::new("components");
    let (node_a, node_b) = (
        private_dir(&scratch, "node-a"),
        private_dir(&scratch, "node-b"),
    );
    let caller = Runtime::builder()
        .node_directory(NodeDirectory::open(&node_a).unwrap())
        .function(spec("faults", "a", progs::COMPONENT_FAULTS, None))
        .build()
        .unwrap();

    // A component served in namespace b, called from namespace a.
    let _local = Server::start(
        &node_a,
        progs::COMPONENT_TRANSFORM,
        "c-local",
        "b",
        &[],
        &[],
    );
    // A component calling a core module of another namespace, and a core
    // module calling a component.
    let _echo = Server::start(&node_a, progs::ECHO, "r-echo", "e", &[], &[]);
    let next_echo = ["--env", "CWASI_NEXT=r-echo"];
    let _c_fwd = Server::start(
        &node_a,
        progs::COMPONENT_TRANSFORM,
        "c-fwd",
        "b",
        &next_echo,
        &[],
    );
    let next_c = ["--env", "CWASI_NEXT=c-local"];
    let _r_fwd = Server::start(&node_a, progs::TRANSFORM, "r-fwd", "c", &next_c, &[]);
    for size in SIZES {
        let data = payload(size);
        let got = caller.call("a", "c-local", &data).unwrap();
        same(&got, &xor(&data), &format!("local, {size} B"));
        let got = caller.call("a", "c-fwd", &data).unwrap();
        same(
            &got,
            &xor(&data),
            &format!("component -> core, local, {size} B"),
        );
        let got = caller.call("a", "r-fwd", &data).unwrap();
        same(&got, &data, &format!("core -> component, local, {size} B"));
    }
    assert_eq!(mode_of(&caller, HOST_CALLER, "c-local"), Mode::Local);

    // Timeouts: a component served with a short call timeout runs out of
    // it; the component that called it gets `timeout` as its call-error.
    let short = ["--call-timeout-ms", "300"];
    let _slow = Server::start(&node_a, progs::COMPONENT_FAULTS, "slow", "s", &short, &[]);
    let got = String::from_utf8(caller.call("a", "faults", b"call:slow:loop").unwrap()).unwrap();
    assert!(got.starts_with("error timeout "), "{got}");
    assert_eq!(mode_of(&caller, "faults", "slow"), Mode::Local);

    // Remote: a component on node-b, called through the broker by a
    // component on node-a (a component pair) and by the host.
    let redis = RedisServer::start();
    let url = redis.url();
    let env = [("CWASI_REDIS_URL", url.as_str()), ("CWASI_NODE", "node-b")];
    let _remote = Server::start(
        &node_b,
        progs::COMPONENT_TRANSFORM,
        "c-remote",
        "b",
        &[],
        &env,
    );
    wait_announced(&url, "c-remote", "b");
    let broker = Broker::new(BrokerConfig::new(&url, "node-a")).unwrap();
    let remote_caller = Runtime::builder()
        .broker(broker)
        .function(spec(
            "c-pair",
            "b",
            progs::COMPONENT_TRANSFORM,
            Some("c-remote"),
        ))
        .build()
        .unwrap();
    for size in SIZES {
        let data = payload(size);
        let got = remote_caller.call("a", "c-remote", &data).unwrap();
        same(&got, &xor(&data), &format!("remote, {size} B"));
        let got = remote_caller.call("b", "c-pair", &data).unwrap();
        same(
            &got,
            &data,
            &format!("component -> component, remote, {size} B"),
        );
    }
    assert_eq!(
        mode_of(&remote_caller, "c-pair", "c-remote"),
        Mode::RemoteBroker
    );
}
