//! One request through an embedded, a local, a direct remote and a broker
//! hop is one trace: six processes on three nodes export their spans over
//! OTLP to a receiver in this test, which decodes them with the
//! `opentelemetry-proto` types and checks the trace id, every parent link,
//! and the attributes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{wait_announced, Scratch, Server, LIMIT};
use test_programs_artifacts as progs;
use test_support::otlp::{by_span_id, OtlpReceiver, ReceivedSpan, SpanKind};
use test_support::RedisServer;

/// A node directory of its own (the nodes share this host).
fn node_dir(scratch: &Scratch, name: &str) -> PathBuf {
    let dir = scratch.0.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// The one span named `name`, or a panic that lists what arrived.
fn span<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.span.name == name).collect();
    assert_eq!(found.len(), 1, "one span {name:?} in {:#?}", names(spans));
    found[0]
}

/// What arrived, as `service: name` lines.
fn names(spans: &[ReceivedSpan]) -> Vec<String> {
    spans
        .iter()
        .map(|s| format!("{}: {}", s.service, s.span.name))
        .collect()
}

/// Checks that `child` is a child of `parent`, and that `child` has the
/// attributes `attrs`.
fn check(child: &ReceivedSpan, parent: Option<&ReceivedSpan>, attrs: &[(&str, &str)]) {
    let name = &child.span.name;
    match parent {
        Some(p) => assert_eq!(
            child.span.parent_span_id, p.span.span_id,
            "{name}'s parent is {}",
            p.span.name
        ),
        None => assert!(child.span.parent_span_id.is_empty(), "{name} is the root"),
    }
    for (key, want) in attrs {
        assert_eq!(
            child.attr(key).as_deref(),
            Some(*want),
            "{name}: attribute {key} in {:?}",
            child.span.attributes
        );
    }
}

#[test]
fn one_request_across_every_mode_is_one_trace() {
    let scratch = Scratch::new("trace");
    let (node_a, node_b, node_c) = (
        node_dir(&scratch, "node-a"),
        node_dir(&scratch, "node-b"),
        node_dir(&scratch, "node-c"),
    );
    let redis = RedisServer::start();
    let url = redis.url();
    let receiver = OtlpReceiver::start();
    let endpoint = receiver.endpoint();
    let env = |node: &'static str| {
        vec![
            ("CWASI_REDIS_URL", url.clone()),
            ("CWASI_NODE", node.to_string()),
            ("CWASI_DIRECT_PLAIN", "1".to_string()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            // Spans leave a server within 100 ms, not the default 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
        ]
    };
    let start = |dir: &Path,
                 module: &str,
                 name: &str,
                 ns: &str,
                 next: &str,
                 node: &'static str,
                 extra: &[&str]| {
        let env = env(node);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let next = format!("CWASI_NEXT={next}");
        let mut args = vec!["--env", next.as_str()];
        args.extend_from_slice(extra);
        Server::start(dir, module, name, ns, &args, &env)
    };

    // node-a: relay-a embeds embed-b (both team-a), which calls local-c
    // (team-b) locally. node-b: remote-d takes direct calls. node-c:
    // remote-e only has the broker.
    let listen = format!("127.0.0.1:{}", test_support::free_port());
    let _servers = [
        start(
            &node_c,
            progs::ECHO,
            "remote-e",
            "team-e",
            "",
            "node-c",
            &[],
        ),
        start(
            &node_b,
            progs::TRANSFORM,
            "remote-d",
            "team-d",
            "remote-e",
            "node-b",
            &["--listen", &listen],
        ),
        start(
            &node_a,
            progs::TRANSFORM,
            "local-c",
            "team-b",
            "remote-d",
            "node-a",
            &[],
        ),
        start(
            &node_a,
            progs::TRANSFORM,
            "embed-b",
            "team-a",
            "local-c",
            "node-a",
            &[],
        ),
        start(
            &node_a,
            progs::TRANSFORM,
            "relay-a",
            "team-a",
            "embed-b",
            "node-a",
            &[],
        ),
    ];
    wait_announced(&url, "remote-d", "team-d");
    wait_announced(&url, "remote-e", "team-e");

    // The caller: a process of node-a, in a namespace of its own.
    let dir = node_a.to_str().unwrap();
    let out = common::run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_cwasi"))
            .args(["call", "relay-a", "--data", "ping"])
            .args(["--namespace", "team-z", "--runtime-dir", dir])
            .envs(env("node-a")),
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    // Four transforms (an even number of XORs) and an echo.
    assert_eq!(out.stdout.trim_end(), "ping", "{}", out.stderr);

    // Ten spans: the caller's, then a client and a server span per hop.
    let spans = receiver.wait_for(Duration::from_secs(30), |s| s.len() >= 10);
    assert_eq!(spans.len(), 10, "{:#?}", names(&spans));
    let trace_id = &spans[0].span.trace_id;
    assert_eq!(trace_id.len(), 16);
    assert!(
        spans.iter().all(|s| &s.span.trace_id == trace_id),
        "one trace id: {:#?}",
        spans
            .iter()
            .map(|s| (&s.span.name, &s.span.trace_id))
            .collect::<Vec<_>>()
    );
    let ids = by_span_id(&spans);
    assert_eq!(ids.len(), 10, "span ids are unique");

    let root = span(&spans, "call relay-a");
    let relay = span(&spans, "relay-a");
    let call_b = span(&spans, "call embed-b");
    let embed = span(&spans, "embed-b");
    let call_c = span(&spans, "call local-c");
    let local = span(&spans, "local-c");
    let call_d = span(&spans, "call remote-d");
    let direct = span(&spans, "remote-d");
    let call_e = span(&spans, "call remote-e");
    let broker = span(&spans, "remote-e");

    let client = |callee, mode| {
        [
            ("cwasi.callee", callee),
            ("cwasi.mode", mode),
            ("cwasi.request.bytes", "4"),
            ("cwasi.response.bytes", "4"),
            ("cwasi.code", "0"),
        ]
    };
    let server = |function, ns, mode| {
        [
            ("cwasi.function", function),
            ("cwasi.namespace", ns),
            ("cwasi.mode", mode),
            ("cwasi.request.bytes", "4"),
            ("cwasi.response.bytes", "4"),
            ("cwasi.code", "0"),
        ]
    };
    check(root, None, &client("relay-a", "local"));
    check(root, None, &[("cwasi.caller", "<host>")]);
    check(relay, Some(root), &server("relay-a", "team-a", "local"));
    check(
        relay,
        Some(root),
        &[("cwasi.path", "slot"), ("cwasi.depth", "1")],
    );
    check(call_b, Some(relay), &client("embed-b", "embedded"));
    check(call_b, Some(relay), &[("cwasi.caller", "relay-a")]);
    check(
        embed,
        Some(call_b),
        &server("embed-b", "team-a", "embedded"),
    );
    check(call_c, Some(embed), &client("local-c", "local"));
    check(call_c, Some(embed), &[("cwasi.caller", "embed-b")]);
    check(local, Some(call_c), &server("local-c", "team-b", "local"));
    check(local, Some(call_c), &[("cwasi.depth", "3")]);
    check(call_d, Some(local), &client("remote-d", "remote-direct"));
    check(
        direct,
        Some(call_d),
        &server("remote-d", "team-d", "remote-direct"),
    );
    check(call_e, Some(direct), &client("remote-e", "remote-broker"));
    check(
        broker,
        Some(call_e),
        &server("remote-e", "team-e", "remote-broker"),
    );
    check(broker, Some(call_e), &[("cwasi.depth", "5")]);

    // Each process reported its own spans, under its service name.
    for (s, service) in [
        (root, "cwasi"),
        (relay, "relay-a"),
        (call_b, "relay-a"),
        (embed, "relay-a"),
        (call_c, "relay-a"),
        (local, "local-c"),
        (call_d, "local-c"),
        (direct, "remote-d"),
        (call_e, "remote-d"),
        (broker, "remote-e"),
    ] {
        assert_eq!(s.service, service, "{} was sent by", s.span.name);
    }
    // Callers are clients; a callee in another process is a server, one
    // embedded in its caller's process is internal to it.
    for s in [root, call_b, call_c, call_d, call_e] {
        assert_eq!(s.kind(), SpanKind::Client, "{}", s.span.name);
    }
    for s in [relay, local, direct, broker] {
        assert_eq!(s.kind(), SpanKind::Server, "{}", s.span.name);
    }
    assert_eq!(embed.kind(), SpanKind::Internal);
    // A callee's span starts after its caller's (the processes share this
    // host's clock). An embedded callee's also ends before its caller's;
    // one in another process may end a little after its caller has read
    // the answer.
    for (child, parent) in [
        (relay, root),
        (embed, call_b),
        (local, call_c),
        (broker, call_e),
    ] {
        let (c, p) = (&child.span, &parent.span);
        assert!(
            c.start_time_unix_nano >= p.start_time_unix_nano,
            "{}",
            c.name
        );
    }
    assert!(embed.span.end_time_unix_nano <= call_b.span.end_time_unix_nano);
}

#[test]
fn a_failed_call_is_a_span_with_its_code() {
    let scratch = Scratch::new("trace-fail");
    let dir = node_dir(&scratch, "node");
    let receiver = OtlpReceiver::start();
    let endpoint = receiver.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let _trap = Server::start(&dir, progs::TRAP, "trap", "team-a", &[], &env);
    let d = dir.to_str().unwrap();
    let call = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cwasi"));
        cmd.args(["call", "trap", "--data", "x"]).args([
            "--namespace",
            "team-z",
            "--runtime-dir",
            d,
        ]);
        cmd
    };
    let out = common::run_with_timeout(call().envs(env), LIMIT);
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    let spans = receiver.wait_for(Duration::from_secs(30), |s| s.len() >= 2);
    assert_eq!(spans.len(), 2, "{:#?}", names(&spans));
    let trapped = cwasi_runtime::ErrorCode::CalleeTrapped.as_raw().to_string();
    for name in ["call trap", "trap"] {
        let s = span(&spans, name);
        assert_eq!(
            s.attr("cwasi.code").as_deref(),
            Some(trapped.as_str()),
            "{name}"
        );
        let status = s.span.status.as_ref().expect("a status");
        // STATUS_CODE_ERROR
        assert_eq!(status.code, 2, "{name}: {status:?}");
        assert!(!status.message.is_empty(), "{name}: {status:?}");
    }
    // A caller without the setting sends nothing; the server, which has
    // it, starts a trace of its own for the untraced call.
    let out = common::run_with_timeout(call().env_remove("OTEL_EXPORTER_OTLP_ENDPOINT"), LIMIT);
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    let spans = receiver.wait_for(Duration::from_secs(30), |s| s.len() >= 3);
    std::thread::sleep(Duration::from_millis(500));
    let spans_later = receiver.spans();
    assert_eq!(spans_later.len(), 3, "{:#?}", names(&spans_later));
    let last = spans.iter().find(|s| {
        !s.span.trace_id.is_empty() && s.span.name == "trap" && s.span.parent_span_id.is_empty()
    });
    assert!(last.is_some(), "a root server span: {:#?}", names(&spans));
}

#[test]
fn a_collector_that_never_answers_does_not_hold_up_an_exit() {
    // A listener that accepts and never answers: every export hangs.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let scratch = Scratch::new("silent-collector");
    let dir = node_dir(&scratch, "node");
    let started = std::time::Instant::now();
    let out = common::run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_cwasi"))
            .args(["run", progs::HELLO, "--runtime-dir"])
            .arg(&dir)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        LIMIT,
    );
    let took = started.elapsed();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // The export's flush is bounded (0.5 s); before, it waited 5 s. A
    // bound far above the flush, so that only an unbounded wait fails.
    assert!(took < Duration::from_secs(4), "the exit took {took:?}");
    drop(silent);
}
