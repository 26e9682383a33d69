//! Embedded mode through the runtime API, with real wasmtime and the guest
//! programs of `crates/test-programs`: payload integrity, faults, limits,
//! selection and concurrency.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cwasi_runtime::{
    ErrorCode, FunctionSpec, Limits, Mode, ModeOverride, Runtime, RuntimeBuilder, RuntimeError,
};
use test_programs_artifacts as progs;

fn spec(name: &str, path: &str) -> FunctionSpec {
    FunctionSpec::new(name, "default", PathBuf::from(path))
}

fn builder() -> RuntimeBuilder {
    Runtime::builder()
}

/// Deterministic bytes that differ at every position of a 64 KiB window.
fn pattern(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ len as u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn echo_returns_every_payload_intact() {
    let rt = builder()
        .function(spec("echo", progs::ECHO))
        .build()
        .unwrap();
    for size in [0usize, 1, 64 << 10, 10 << 20] {
        let data = pattern(size);
        let got = rt.call("default", "echo", &data).unwrap();
        assert_eq!(got.len(), size);
        assert!(got == data, "echo corrupted a {size}-byte payload");
    }
    let hops = rt.hops();
    assert_eq!(hops.len(), 1);
    assert_eq!(hops[0].calls, 4);
    assert_eq!(hops[0].mode, Mode::Embedded);
}

#[test]
fn chained_transform_reaches_the_sink() {
    let mut transform = spec("transform", progs::TRANSFORM);
    transform.env.push(("CWASI_NEXT".into(), "sink".into()));
    let rt = builder()
        .function(transform)
        .function(spec("sink", progs::SINK))
        .build()
        .unwrap();
    let data = pattern(1 << 20);
    let got = rt.call("default", "transform", &data).unwrap();
    let direct = rt
        .call(
            "default",
            "sink",
            &data.iter().map(|b| b ^ 0xA5).collect::<Vec<_>>(),
        )
        .unwrap();
    assert_eq!(got.len(), 8);
    assert_eq!(got, direct);
}

#[test]
fn a_trap_is_reported_and_the_next_call_succeeds() {
    let rt = builder()
        .function(spec("trap", progs::TRAP))
        .function(spec("echo", progs::ECHO))
        .build()
        .unwrap();
    for _ in 0..2 {
        let err = rt.call("default", "trap", b"x").unwrap_err();
        assert_eq!(err.code, ErrorCode::CalleeTrapped, "{err}");
        assert!(err.message.contains("trap"), "{err}");
        assert_eq!(
            rt.call("default", "echo", b"still here").unwrap(),
            b"still here"
        );
    }
}

#[test]
fn an_out_of_bounds_response_is_a_bad_response() {
    let rt = builder()
        .function(spec("bad_response", progs::BAD_RESPONSE))
        .function(spec("echo", progs::ECHO))
        .build()
        .unwrap();
    let err = rt.call("default", "bad_response", b"hello").unwrap_err();
    assert_eq!(err.code, ErrorCode::BadResponse, "{err}");
    assert!(err.message.contains("out of bounds"), "{err}");
    assert_eq!(rt.call("default", "echo", b"ok").unwrap(), b"ok");
}

#[test]
fn an_infinite_loop_is_stopped_by_the_timeout() {
    let limits = Limits {
        call_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let rt = builder()
        .limits(limits)
        .function(spec("infinite_loop", progs::INFINITE_LOOP))
        .function(spec("echo", progs::ECHO))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = rt.call("default", "infinite_loop", b"").unwrap_err();
    assert_eq!(err.code, ErrorCode::Timeout, "{err}");
    // Not a performance check: only that the wait is bounded at all.
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(rt.call("default", "echo", b"next").unwrap(), b"next");
}

#[test]
fn memory_over_the_limit_is_a_resource_limit() {
    let limits = Limits {
        max_memory_bytes: 64 << 20,
        ..Limits::default()
    };
    let rt = builder()
        .limits(limits)
        .function(spec("memory_hog", progs::MEMORY_HOG))
        .build()
        .unwrap();
    let err = rt.call("default", "memory_hog", b"128").unwrap_err();
    assert_eq!(err.code, ErrorCode::ResourceLimit, "{err}");
    assert!(err.message.contains("memory limit"), "{err}");
    assert!(rt.call("default", "memory_hog", b"8").is_ok());
}

#[test]
fn an_oversized_request_is_too_large() {
    let limits = Limits {
        max_payload_bytes: 1 << 20,
        ..Limits::default()
    };
    let rt = builder()
        .limits(limits)
        .function(spec("echo", progs::ECHO))
        .build()
        .unwrap();
    let err = rt.call("default", "echo", &vec![0; 2 << 20]).unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge, "{err}");
    assert_eq!(
        rt.call("default", "echo", &[7; 1 << 20]).unwrap().len(),
        1 << 20
    );
}

#[test]
fn an_unknown_function_says_where_it_looked() {
    let rt = builder()
        .function(spec("echo", progs::ECHO))
        .build()
        .unwrap();
    let err = rt.call("default", "nope", b"").unwrap_err();
    assert_eq!(err.code, ErrorCode::UnknownFunction);
    assert!(err.message.contains("looked in"), "{err}");
    assert!(err.message.contains("echo"), "{err}");

    // A refused edge is chosen again on every call (the callee may appear),
    // but explained once: a caller retrying a missing function does not
    // fill `--explain` with the same line.
    for _ in 0..50 {
        let again = rt.call("default", "nope", b"").unwrap_err();
        assert_eq!(again, err);
    }
    rt.call("default", "echo", b"x").unwrap();
    rt.call("default", "echo", b"y").unwrap();
    let lines: Vec<String> = rt.decisions().iter().map(|d| d.to_string()).collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].starts_with("<host> -> nope: refused: "),
        "{lines:#?}"
    );
    assert!(
        lines[1].starts_with("<host> -> echo: embedded ("),
        "{lines:#?}"
    );
}

#[test]
fn a_module_without_a_handler_is_not_callable() {
    let rt = builder()
        .function(spec("producer", progs::PRODUCER))
        .build()
        .unwrap();
    let err = rt.call("default", "producer", b"").unwrap_err();
    assert_eq!(err.code, ErrorCode::NotCallable, "{err}");
}

#[test]
fn files_that_are_not_wasm_are_refused_with_their_name() {
    let dir = std::env::temp_dir().join(format!("cwasi-notwasm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("text.wasm");
    std::fs::write(&text, b"hello, I am text").unwrap();
    let broken = dir.join("broken.wasm");
    std::fs::write(&broken, b"\0asm\x01\0\0\0\xff\xff").unwrap();

    let err = builder()
        .function(FunctionSpec::new("t", "default", text.clone()))
        .build()
        .err()
        .unwrap();
    assert!(matches!(err, RuntimeError::NotWasm { .. }), "{err}");
    assert!(err.to_string().contains("text.wasm"), "{err}");

    let err = builder()
        .function(FunctionSpec::new("b", "default", broken.clone()))
        .build()
        .err()
        .unwrap();
    assert!(matches!(err, RuntimeError::InvalidModule { .. }), "{err}");
    assert!(err.to_string().contains("broken.wasm"), "{err}");

    let missing = builder()
        .function(FunctionSpec::new("m", "default", dir.join("missing.wasm")))
        .build()
        .err()
        .unwrap();
    assert!(missing.to_string().contains("missing.wasm"), "{missing}");

    // Kept as unloadable, a call to it gets NOT_CALLABLE with the reason.
    let rt = builder()
        .keep_unloadable(true)
        .function(FunctionSpec::new("t", "default", text))
        .function(spec("echo", progs::ECHO))
        .build()
        .unwrap();
    let err = rt.call("default", "t", b"x").unwrap_err();
    assert_eq!(err.code, ErrorCode::NotCallable);
    assert!(err.message.contains("text.wasm"), "{err}");
    assert_eq!(rt.call("default", "echo", b"x").unwrap(), b"x");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn selection_follows_namespaces() {
    let rt = builder()
        .function(FunctionSpec::new(
            "echo",
            "team-a",
            PathBuf::from(progs::ECHO),
        ))
        .build()
        .unwrap();
    let same = rt.explain("team-a", "echo").unwrap();
    assert_eq!(same.mode, Mode::Embedded);
    assert!(same.reason.contains("team-a"), "{}", same.reason);

    let other = rt.explain("team-b", "echo").unwrap_err();
    assert!(other.message.contains("cannot be embedded"), "{other}");
    assert!(rt.call("team-b", "echo", b"x").is_err());

    let forced = Runtime::builder()
        .mode(ModeOverride::Force(Mode::Embedded))
        .function(FunctionSpec::new(
            "echo",
            "team-a",
            PathBuf::from(progs::ECHO),
        ))
        .build()
        .unwrap();
    let err = forced.explain("team-b", "echo").unwrap_err();
    assert_eq!(err.code, ErrorCode::Denied);
    assert!(err.message.contains("never share a VM"), "{err}");
}

#[test]
fn fan_out_runs_callees_concurrently() {
    let mut fanout = spec("fanout", progs::FANOUT);
    fanout.args = vec!["8".into(), "busy".into(), "200".into()];
    let rt = builder()
        .function(fanout)
        .function(spec("busy", progs::BUSY))
        .function(spec("aggregator", progs::AGGREGATOR))
        .build()
        .unwrap();
    let started = Instant::now();
    let code = rt.run_entry("fanout").unwrap();
    let elapsed = started.elapsed();
    assert_eq!(code, 0);
    let busy = rt.hops().into_iter().find(|h| h.target == "busy").unwrap();
    assert_eq!(busy.calls, 8);
    assert_eq!(busy.failures, 0);
    // Serially this would take 8 x 200 ms = 1.6 s; overlapping it takes
    // about 200 ms plus instantiation. The bound is loose on purpose.
    assert!(
        elapsed < Duration::from_millis(1200),
        "8 busy callees of 200 ms took {elapsed:?}: they did not overlap"
    );
}

#[test]
fn entry_exit_codes_pass_through() {
    let mut producer = spec("producer", progs::PRODUCER);
    producer.args = vec!["1000".into(), "echo".into(), "checksum".into()];
    let rt = builder()
        .function(producer)
        .function(spec("echo", progs::ECHO))
        .build()
        .unwrap();
    // echo returns the data, not its checksum: the producer reports a mismatch.
    assert_eq!(rt.run_entry("producer").unwrap(), 1);
    let err = rt.run_entry("echo");
    assert!(matches!(err, Ok(0) | Err(RuntimeError::NotAnEntry(_))));
}

#[test]
fn a_deep_chain_of_nested_embedded_calls_never_overflows_the_host_stack() {
    let mut t = spec("t", progs::TRANSFORM);
    t.env.push(("CWASI_NEXT".into(), "t".into()));
    let limits = |max_call_depth| Limits {
        max_call_depth,
        ..Limits::default()
    };
    // A depth the host's stack cannot be sized for is refused up front.
    let e = builder()
        .limits(limits(3200))
        .function(t.clone())
        .build()
        .err()
        .expect("a call depth of 3200 was accepted");
    assert!(e.to_string().contains("over the bound of 256"), "{e}");

    // `t` calls itself 256 levels deep, from a thread whose stack holds
    // less than one level: every level that does not fit where it is moves
    // to a fresh stack, and the chain ends at the depth limit, cleanly.
    let rt = builder().limits(limits(256)).function(t).build().unwrap();
    let err = std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(512 << 10)
            .spawn_scoped(s, || rt.call("default", "t", b"deep"))
            .unwrap()
            .join()
            .unwrap()
    })
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::CalleeError, "{err}");
    let hop = rt
        .hops()
        .into_iter()
        .find(|h| h.caller == "t" && h.target == "t")
        .expect("no t -> t hop");
    // Depths 2 to 256 were called; the call to depth 257 was refused
    // before it left `t`.
    assert_eq!((hop.calls, hop.failures), (255, 255));
    // The process is whole, and the chain can run again from this thread.
    let again = rt.call("default", "t", b"again").unwrap_err();
    assert_eq!(again.code, ErrorCode::CalleeError, "{again}");
}
