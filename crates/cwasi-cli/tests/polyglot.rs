//! Python (componentize-py) and JavaScript (componentize-js) components call
//! and are called like any other function: embedded, mixed with Rust
//! components, Rust core modules and C; locally (`cwasi serve` in other
//! namespaces); and remotely, with 0 B, 64 KiB and 10 MiB payloads compared
//! byte for byte. The polyglot example (`examples/polyglot.toml`: Python ->
//! Rust -> JavaScript) runs under `cwasi run` and its output is checked.

mod common;

use std::process::Command;

use common::guests::{mode_of, payload, polyglot_composition, private_dir, same, spec, xor, SIZES};
use common::{wait_announced, Scratch, Server};
use cwasi_runtime::broker::{Broker, BrokerConfig};
use cwasi_runtime::{ErrorCode, Mode, NodeDirectory, Runtime, HOST_CALLER};
use test_programs_artifacts as progs;
use test_programs_componentize as scripted;
use test_support::RedisServer;

#[test]
fn python_and_javascript_call_and_are_called_embedded() {
    let rt = Runtime::builder()
        // Leaves: each language answering the host.
        .function(spec("py-leaf", "a", scripted::PY_TRANSFORM, None))
        .function(spec("js-leaf", "a", scripted::JS_TRANSFORM, None))
        .function(spec("c-leaf", "a", test_programs_c::C_TRANSFORM, None))
        .function(spec("rc-leaf", "a", progs::COMPONENT_TRANSFORM, None))
        // Python -> JavaScript -> Rust core module.
        .function(spec("py", "a", scripted::PY_TRANSFORM, Some("js")))
        .function(spec("js", "a", scripted::JS_TRANSFORM, Some("echo")))
        .function(spec("echo", "a", progs::ECHO, None))
        // Rust core -> Python, C -> JavaScript, Python -> C,
        // JavaScript -> Rust component.
        .function(spec("r-to-py", "a", progs::TRANSFORM, Some("py-leaf")))
        .function(spec(
            "c-to-js",
            "a",
            test_programs_c::C_TRANSFORM,
            Some("js-leaf"),
        ))
        .function(spec("py-to-c", "a", scripted::PY_TRANSFORM, Some("c-leaf")))
        .function(spec(
            "js-to-rc",
            "a",
            scripted::JS_TRANSFORM,
            Some("rc-leaf"),
        ))
        .build()
        .unwrap();
    for size in SIZES {
        let data = payload(size);
        let once = xor(&data);
        for (target, want) in [
            ("py-leaf", &once),
            ("js-leaf", &once),
            ("py", &data),
            ("r-to-py", &data),
            ("c-to-js", &data),
            ("py-to-c", &data),
            ("js-to-rc", &data),
        ] {
            let got = rt.call("a", target, &data).unwrap();
            same(&got, want, &format!("{target}, {size} B"));
        }
    }
    for (caller, target) in [
        ("py", "js"),
        ("js", "echo"),
        ("r-to-py", "py-leaf"),
        ("c-to-js", "js-leaf"),
        ("py-to-c", "c-leaf"),
        ("js-to-rc", "rc-leaf"),
    ] {
        assert_eq!(
            mode_of(&rt, caller, target),
            Mode::Embedded,
            "{caller} -> {target}"
        );
    }
    // A failed forward is the handler's own error, in either language.
    let lost = Runtime::builder()
        .function(spec("py", "a", scripted::PY_TRANSFORM, Some("nobody")))
        .function(spec("js", "a", scripted::JS_TRANSFORM, Some("nobody")))
        .build()
        .unwrap();
    for target in ["py", "js"] {
        let e = lost.call("a", target, b"x").unwrap_err();
        assert_eq!(e.code, ErrorCode::CalleeError, "{target}: {e}");
        assert!(e.message.contains("nobody"), "{target}: {e}");
    }
}

#[test]
fn python_and_javascript_are_called_locally_and_remotely() {
    let scratch = Scratch::new("polyglot");
    let (node_a, node_b) = (
        private_dir(&scratch, "node-a"),
        private_dir(&scratch, "node-b"),
    );
    // Served in namespaces b and c; Python in namespace d calls JavaScript
    // in namespace c, another process.
    let _py = Server::start(&node_a, scripted::PY_TRANSFORM, "py-local", "b", &[], &[]);
    let _js = Server::start(&node_a, scripted::JS_TRANSFORM, "js-local", "c", &[], &[]);
    let next = ["--env", "CWASI_NEXT=js-local"];
    let _py_js = Server::start(&node_a, scripted::PY_TRANSFORM, "py-js", "d", &next, &[]);
    let caller = Runtime::builder()
        .node_directory(NodeDirectory::open(&node_a).unwrap())
        // A JavaScript caller of the Python one, in this process.
        .function(spec(
            "js-caller",
            "a",
            scripted::JS_TRANSFORM,
            Some("py-local"),
        ))
        .build()
        .unwrap();
    for size in SIZES {
        let data = payload(size);
        for (target, want) in [
            ("py-local", xor(&data)),
            ("js-local", xor(&data)),
            ("py-js", data.clone()),
            ("js-caller", data.clone()),
        ] {
            let got = caller.call("a", target, &data).unwrap();
            same(&got, &want, &format!("{target}, local, {size} B"));
        }
    }
    assert_eq!(mode_of(&caller, HOST_CALLER, "py-local"), Mode::Local);
    assert_eq!(mode_of(&caller, "js-caller", "py-local"), Mode::Local);

    // Remote: Python on node-b, through the broker, called by JavaScript
    // on node-a.
    let redis = RedisServer::start();
    let url = redis.url();
    let env = [("CWASI_REDIS_URL", url.as_str()), ("CWASI_NODE", "node-b")];
    let _remote = Server::start(&node_b, scripted::PY_TRANSFORM, "py-remote", "b", &[], &env);
    wait_announced(&url, "py-remote", "b");
    let broker = Broker::new(BrokerConfig::new(&url, "node-a")).unwrap();
    let remote_caller = Runtime::builder()
        .broker(broker)
        .function(spec(
            "js-pair",
            "b",
            scripted::JS_TRANSFORM,
            Some("py-remote"),
        ))
        .build()
        .unwrap();
    for size in SIZES {
        let data = payload(size);
        let got = remote_caller.call("b", "js-pair", &data).unwrap();
        same(&got, &data, &format!("js -> py, remote, {size} B"));
    }
    assert_eq!(
        mode_of(&remote_caller, "js-pair", "py-remote"),
        Mode::RemoteBroker
    );
}

#[test]
fn the_polyglot_example_runs() {
    let scratch = Scratch::new("polyglot-example");
    let composition = polyglot_composition(&scratch.0);
    let out = Command::new(env!("CARGO_BIN_EXE_cwasi"))
        .arg("run")
        .arg(&composition)
        .arg("--explain")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.trim_end(),
        r#"{"NAME":"ADA LOVELACE","YEAR":"1815","ROLE":"MATHEMATICIAN"}"#,
        "{stderr}"
    );
    // The path and the per-hop timings: three hops, all embedded.
    for hop in ["main -> parse", "parse -> upper", "upper -> format"] {
        let line = stderr
            .lines()
            .find(|l| l.contains(hop))
            .unwrap_or_else(|| panic!("no {hop} in:\n{stderr}"));
        assert!(line.contains("embedded"), "{line}");
    }
}
