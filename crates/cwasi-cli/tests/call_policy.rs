//! Call policies at the callee (docs/operations.md, "Call policies"), on
//! one node: a served function that allows only `ns-a/*` is reached by
//! callers of `ns-a` (embedded from its published module, or locally when
//! forced) and refuses a caller of `ns-b` (locally) with `DENIED`, naming
//! the caller and the rule; a policy of a function loaded in the caller's
//! own runtime is checked on every embedded call. Real `cwasi serve` and
//! `cwasi run` processes.

mod common;

use common::guests::{private_dir, spec, xor};
use common::{cwasi, Scratch, Server, LIMIT};
use cwasi_runtime::{CallPolicy, ErrorCode, Mode, NodeDirectory, Runtime, HOST_CALLER};
use test_programs_artifacts as progs;

/// A caller runtime of node directory `dir`, with `x` of `ns-a` and `z`
/// of `ns-b`, both forwarding to `d`; `embed`: whether it embeds the
/// functions served on the node in its namespace.
fn callers(dir: &std::path::Path, embed: bool) -> Runtime {
    Runtime::builder()
        .node_directory(NodeDirectory::open(dir).unwrap())
        .embed_served(embed)
        .function(spec("x", "ns-a", progs::TRANSFORM, Some("d")))
        .function(spec("z", "ns-b", progs::TRANSFORM, Some("d")))
        .build()
        .unwrap()
}

/// The failures of the hop `caller -> d` by code.
fn denied_calls(rt: &Runtime, caller: &str) -> u64 {
    rt.hops()
        .iter()
        .filter(|h| h.caller == caller && h.target == "d")
        .flat_map(|h| h.failures_by_code.iter())
        .filter(|(code, _)| *code == ErrorCode::Denied)
        .map(|(_, n)| n)
        .sum()
}

#[test]
fn a_served_functions_policy_lets_its_namespace_through_and_denies_another() {
    let scratch = Scratch::new("policy-local");
    let dir = private_dir(&scratch, "node");
    let _d = Server::start(
        &dir,
        progs::ECHO,
        "d",
        "ns-a",
        &["--allow-caller", "ns-a/*"],
        &[],
    );
    // `e` allows only `x` of ns-a on a node that is not this one.
    let _e = Server::start(
        &dir,
        progs::ECHO,
        "e",
        "ns-a",
        &["--allow-caller", "ns-a/x@elsewhere"],
        &[],
    );
    for embed in [true, false] {
        let rt = callers(&dir, embed);
        // `x` of ns-a: allowed (embedded from the published module, where
        // the caller enforces the server's policy; or over the local
        // socket, where the server does).
        assert_eq!(rt.call("ns-a", "x", b"hello").unwrap(), xor(b"hello"));
        let expected = if embed { Mode::Embedded } else { Mode::Local };
        assert_eq!(common::guests::mode_of(&rt, "x", "d"), expected);
        // `z` of ns-b: refused by the server, with the caller and the rule
        // (`z` fails with its callee's error, and the hop z -> d counts a
        // denied call).
        let e = rt.call("ns-b", "z", b"hello").unwrap_err();
        assert!(
            e.message.contains("DENIED (-6): caller ns-b/z@")
                && e.message
                    .contains("may not call 'd': its policy allows only ns-a/*"),
            "{e}"
        );
        assert_eq!(common::guests::mode_of(&rt, "z", "d"), Mode::Local);
        assert_eq!(denied_calls(&rt, "z"), 1);
        let decisions: Vec<String> = rt.decisions().iter().map(|d| d.to_string()).collect();
        let denial = decisions
            .iter()
            .find(|d| d.starts_with("z -> d: refused: "))
            .unwrap_or_else(|| panic!("no denial among {decisions:#?}"));
        assert!(
            denial.contains("caller ns-b/z@") && denial.contains("its policy allows only ns-a/*"),
            "{denial}"
        );
        // The host's own calls have the host's identity in their namespace.
        assert!(rt.call("ns-a", "d", b"host").is_ok());
        assert_eq!(
            rt.call("ns-b", "d", b"host").unwrap_err().code,
            ErrorCode::Denied
        );
        // A caller of the same namespace that embeds `e` is held to its
        // policy as its server would hold it.
        let e = rt.call("ns-a", "e", b"host").unwrap_err();
        assert_eq!(e.code, ErrorCode::Denied, "{e}");
        assert!(e.message.contains("allows only ns-a/x@elsewhere"), "{e}");
        assert_eq!(common::guests::mode_of(&rt, HOST_CALLER, "e"), expected);
    }
}

#[test]
fn a_loaded_functions_policy_is_checked_on_every_embedded_call() {
    let mut d = spec("d", "ns-a", progs::ECHO, None);
    d.policy = CallPolicy::parse(&["ns-a/x"]).unwrap();
    let rt = Runtime::builder()
        .function(d)
        .function(spec("x", "ns-a", progs::TRANSFORM, Some("d")))
        .function(spec("y", "ns-a", progs::TRANSFORM, Some("d")))
        .build()
        .unwrap();
    for _ in 0..3 {
        assert_eq!(rt.call("ns-a", "x", b"hi").unwrap(), xor(b"hi"));
        let e = rt.call("ns-a", "y", b"hi").unwrap_err();
        assert!(
            e.message.contains("DENIED") && e.message.contains("allows only ns-a/x"),
            "{e}"
        );
    }
    assert_eq!(common::guests::mode_of(&rt, "y", "d"), Mode::Embedded);
    assert_eq!(denied_calls(&rt, "y"), 3);
    assert_eq!(denied_calls(&rt, "x"), 0);
    // The host is not `x`.
    assert_eq!(
        rt.call("ns-a", "d", b"hi").unwrap_err().code,
        ErrorCode::Denied
    );
}

#[test]
fn a_compositions_policy_reaches_its_served_children() {
    let scratch = Scratch::new("policy-run");
    let dir = private_dir(&scratch, "node");
    // The entry (ns-a) calls `d` of ns-b, served by a child of `cwasi run`
    // whose policy allows only ns-c: the call is denied, and `cwasi run`
    // says so.
    let composition = |allow: &str| {
        format!(
            "entry = \"main\"\n\
             [functions.main]\nmodule = \"{producer}\"\nnamespace = \"ns-a\"\n\
             args = [\"16\", \"d\", \"checksum\"]\n\
             [functions.d]\nmodule = \"{sink}\"\nnamespace = \"ns-b\"\n\
             allow_callers = [{allow}]\n",
            producer = progs::PRODUCER,
            sink = progs::SINK,
        )
    };
    let denied = scratch.write("denied.toml", &composition("\"ns-c/*\""));
    let runtime_dir = dir.to_str().unwrap();
    let out = cwasi(&["run", &denied, "--runtime-dir", runtime_dir], LIMIT);
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains(&format!("error code={}", ErrorCode::Denied.as_raw()))
            && said.contains("caller ns-a/main@")
            && said.contains("its policy allows only ns-c/*"),
        "{said}"
    );
    let allowed = scratch.write("allowed.toml", &composition("\"ns-a/main\""));
    let out = cwasi(&["run", &allowed, "--runtime-dir", runtime_dir], LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("ok size=16"), "{}", out.stdout);
}
