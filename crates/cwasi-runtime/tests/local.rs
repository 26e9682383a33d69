//! Local mode through the runtime API: a function served by one runtime over
//! its Unix socket, called by another runtime of a different namespace.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::TempDir;
use cwasi_runtime::{
    ErrorCode, FunctionSpec, Limits, Mode, ModeOverride, NodeDirectory, Runtime, ServeOptions,
};
use test_programs::checksum;
use test_programs_artifacts as progs;

fn server(dir: &NodeDirectory, name: &str, ns: &str, module: &str) -> Runtime {
    Runtime::builder()
        .node_directory(dir.clone())
        .function(FunctionSpec::new(name, ns, PathBuf::from(module)))
        .build()
        .unwrap()
}

#[test]
fn explain_chooses_embedded_or_local_by_namespace() {
    let tmp = TempDir::new("local-explain");
    let dir = NodeDirectory::open(tmp.path()).unwrap();
    let served = server(&dir, "echo", "team-b", progs::ECHO);
    let _handle = served.serve("echo", &dir, ServeOptions::default()).unwrap();

    // The caller's runtime has echo loaded in namespace team-b as well.
    let caller = server(&dir, "echo", "team-b", progs::ECHO);
    let same = caller.explain("team-b", "echo").unwrap();
    assert_eq!(same.mode, Mode::Embedded, "{same}");
    let other = caller.explain("team-a", "echo").unwrap();
    assert_eq!(other.mode, Mode::Local, "{other}");
    assert!(other.reason.contains("served on this node"), "{other}");
    assert!(other.reason.contains("not embedded"), "{other}");

    // A runtime without the module, told not to embed served functions,
    // reaches it locally from any namespace.
    let bare = Runtime::builder()
        .node_directory(dir.clone())
        .embed_served(false)
        .build()
        .unwrap();
    assert_eq!(bare.explain("team-b", "echo").unwrap().mode, Mode::Local);
    assert_eq!(
        bare.call("team-b", "echo", b"over the socket").unwrap(),
        b"over the socket"
    );

    // Forcing a mode that is impossible is refused clearly.
    let forced = Runtime::builder()
        .node_directory(dir.clone())
        .mode(ModeOverride::Force(Mode::Embedded))
        .build()
        .unwrap();
    let err = forced.explain("team-a", "echo").unwrap_err();
    assert_eq!(err.code, ErrorCode::Denied, "{err}");
    assert!(err.message.contains("never share a VM"), "{err}");
    let forced_local = Runtime::builder()
        .node_directory(dir.clone())
        .mode(ModeOverride::Force(Mode::Local))
        .function(FunctionSpec::new(
            "echo",
            "team-b",
            PathBuf::from(progs::ECHO),
        ))
        .build()
        .unwrap();
    assert_eq!(
        forced_local.explain("team-b", "echo").unwrap().mode,
        Mode::Local
    );

    // Nothing of that name anywhere: the error says where it looked.
    let err = bare.explain("team-b", "nope").unwrap_err();
    assert_eq!(err.code, ErrorCode::UnknownFunction);
    assert!(
        err.message.contains(&tmp.path().display().to_string()),
        "{err}"
    );
}

#[test]
fn payloads_of_0_b_to_100_mib_cross_local_mode_intact_across_every_threshold() {
    let tmp = TempDir::new("local-payloads");
    let dir = NodeDirectory::open(tmp.path()).unwrap();
    let served = server(&dir, "echo", "b", progs::ECHO);
    let _handle = served.serve("echo", &dir, ServeOptions::default()).unwrap();
    let caller = Runtime::builder()
        .node_directory(dir.clone())
        .build()
        .unwrap();
    let slot = cwasi_runtime::wire::slot::SLOT_MAX_PAYLOAD;
    let region = 64 << 10;
    let chunk = 1 << 20;
    let sizes = [
        0usize,
        1,
        64,
        slot - 1,
        slot,
        slot + 1,
        1000,
        region - 1,
        region,
        region + 1,
        chunk,
        chunk + 1,
        3 << 20,
        10 << 20,
        100 << 20,
        // Back down, so that small calls follow large ones on the same
        // connection.
        7,
        slot,
    ];
    for size in sizes {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
        let got = caller.call("a", "echo", &data).unwrap();
        assert_eq!(got.len(), size, "{size} bytes came back as {}", got.len());
        assert_eq!(
            checksum(&got),
            checksum(&data),
            "{size} bytes came back different"
        );
    }
    let hop = &caller.hops()[0];
    assert_eq!(hop.mode, Mode::Local);
    assert_eq!(hop.calls, sizes.len() as u64);
}

#[test]
fn callee_errors_cross_the_socket_with_their_codes() {
    let tmp = TempDir::new("local-errors");
    let dir = NodeDirectory::open(tmp.path()).unwrap();
    let trap = server(&dir, "trap", "b", progs::TRAP);
    let _t = trap.serve("trap", &dir, ServeOptions::default()).unwrap();
    let bad = server(&dir, "bad_response", "b", progs::BAD_RESPONSE);
    let _b = bad
        .serve("bad_response", &dir, ServeOptions::default())
        .unwrap();
    let caller = Runtime::builder()
        .node_directory(dir.clone())
        .build()
        .unwrap();
    for _ in 0..2 {
        let e = caller.call("a", "trap", b"x").unwrap_err();
        assert_eq!(e.code, ErrorCode::CalleeTrapped, "{e}");
        let e = caller.call("a", "bad_response", b"x").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadResponse, "{e}");
    }
    // Serving the same name twice on a node is refused.
    let again = server(&dir, "trap", "b", progs::TRAP);
    let err = again
        .serve("trap", &dir, ServeOptions::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("already served"), "{err}");
}

#[test]
fn fan_out_to_local_callees_overlaps() {
    for n in [8, 16] {
        fan_out_overlaps(n);
    }
}

/// A fan-out of `n` calls of 200 ms each to a local callee.
fn fan_out_overlaps(n: u64) {
    let tmp = TempDir::new("local-fanout");
    let dir = NodeDirectory::open(tmp.path()).unwrap();
    let busy = server(&dir, "busy", "b", progs::BUSY);
    let _h = busy.serve("busy", &dir, ServeOptions::default()).unwrap();
    let mut fanout = FunctionSpec::new("fanout", "a", PathBuf::from(progs::FANOUT));
    fanout.args = vec![n.to_string(), "busy".into(), "200".into()];
    let caller = Runtime::builder()
        .node_directory(dir.clone())
        .function(fanout)
        .function(FunctionSpec::new(
            "aggregator",
            "a",
            PathBuf::from(progs::AGGREGATOR),
        ))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(caller.run_entry("fanout").unwrap(), 0);
    let hop = caller
        .hops()
        .into_iter()
        .find(|h| h.target == "busy")
        .unwrap();
    assert_eq!((hop.mode, hop.calls, hop.failures), (Mode::Local, n, 0));
    // `busy` spins for 200 ms of wall-clock time, so overlapping calls end
    // together however few cores there are. Serial would be n x 200 ms; the
    // bound is loose on purpose.
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_millis(1200),
        "a fan-out of {n} took {took:?}"
    );
}

#[test]
fn a_same_namespace_function_served_on_the_node_is_embedded_from_its_published_module() {
    let tmp = TempDir::new("local-adopt");
    let dir = NodeDirectory::open(tmp.path()).unwrap();
    let served = server(&dir, "echo", "b", progs::ECHO);
    let handle = served.serve("echo", &dir, ServeOptions::default()).unwrap();
    let embed = handle
        .record()
        .embed
        .clone()
        .expect("the module is published");
    let published = tmp.path().join(&embed.module_file);
    assert!(published.exists(), "{}", published.display());

    let caller = Runtime::builder()
        .node_directory(dir.clone())
        .build()
        .unwrap();
    let choice = caller.explain("b", "echo").unwrap();
    assert_eq!(choice.mode, Mode::Embedded, "{choice}");
    assert!(
        choice.reason.contains("loaded from the node directory"),
        "{choice}"
    );
    let data = vec![7u8; 3 << 20];
    assert!(caller.call("b", "echo", &data).unwrap() == data);
    assert_eq!(caller.hops()[0].mode, Mode::Embedded);
    // Other namespaces still go through the socket.
    assert_eq!(caller.explain("a", "echo").unwrap().mode, Mode::Local);

    // A published module that does not match its record's digest is never
    // run: the caller falls back to the socket.
    drop(handle);
    drop(served);
    let served = server(&dir, "echo", "b", progs::ECHO);
    let _handle = served.serve("echo", &dir, ServeOptions::default()).unwrap();
    let mut perms = std::fs::metadata(&published).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&published, perms).unwrap();
    std::fs::write(&published, b"\0asm\x01\0\0\0 swapped").unwrap();
    let caller = Runtime::builder()
        .node_directory(dir.clone())
        .build()
        .unwrap();
    let choice = caller.explain("b", "echo").unwrap();
    assert_eq!(choice.mode, Mode::Local, "{choice}");
    assert_eq!(
        caller.call("b", "echo", b"still works").unwrap(),
        b"still works"
    );
}

#[test]
fn a_served_function_with_preopened_directories_is_not_embedded_elsewhere() {
    let tmp = TempDir::new("local-preopen");
    let dir = NodeDirectory::open(tmp.path()).unwrap();
    let mut spec = FunctionSpec::new("echo", "b", PathBuf::from(progs::ECHO));
    spec.preopens = vec![cwasi_runtime::Preopen {
        host: std::env::temp_dir(),
        guest: "/tmp".into(),
        writable: false,
    }];
    let served = Runtime::builder()
        .node_directory(dir.clone())
        .function(spec)
        .build()
        .unwrap();
    let handle = served.serve("echo", &dir, ServeOptions::default()).unwrap();
    assert!(handle.record().embed.is_none());
    let caller = Runtime::builder()
        .node_directory(dir.clone())
        .build()
        .unwrap();
    assert_eq!(caller.explain("b", "echo").unwrap().mode, Mode::Local);
}

/// A calls B with a 1 s timeout; B (served in another process, whose own
/// call timeout is 30 s) calls C, which loops forever. The deadline travels
/// with the request: A gets `TIMEOUT` after about 1 s, and C is stopped at
/// A's deadline too, not after its server's own 30 s.
#[test]
fn a_nested_call_gets_what_is_left_of_its_callers_deadline() {
    let tmp = TempDir::new("local-deadline");
    let dir = NodeDirectory::open(tmp.path()).unwrap();
    let mut b = FunctionSpec::new("b", "servers", PathBuf::from(progs::TRANSFORM));
    b.env.push(("CWASI_NEXT".into(), "c".into()));
    let served = Runtime::builder()
        .node_directory(dir.clone())
        .function(b)
        .function(FunctionSpec::new(
            "c",
            "servers",
            PathBuf::from(progs::INFINITE_LOOP),
        ))
        .build()
        .unwrap();
    assert_eq!(served.limits().call_timeout, Duration::from_secs(30));
    let _handle = served.serve("b", &dir, ServeOptions::default()).unwrap();

    let caller = Runtime::builder()
        .node_directory(dir.clone())
        .limits(Limits {
            call_timeout: Duration::from_secs(1),
            ..Limits::default()
        })
        .build()
        .unwrap();
    let started = Instant::now();
    let e = caller.call("a", "b", b"x").unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.code, ErrorCode::Timeout, "{e}");
    assert_eq!(caller.hops()[0].mode, Mode::Local);
    // Without the deadline on the wire, A would wait its call timeout plus
    // the grace for the server's own answer (3 s).
    assert!(took < Duration::from_millis(2500), "A waited {took:?}");

    // In B's process, the call B -> C ended at A's deadline as well.
    let until = Instant::now() + Duration::from_secs(10);
    let hop = loop {
        let hop = served.hops().into_iter().find(|h| h.target == "c");
        match hop {
            Some(h) if h.calls == 1 => break h,
            _ if Instant::now() > until => panic!("B's call to C did not end within 10 s"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    assert_eq!(hop.failures, 1);
    assert!(
        hop.max < Duration::from_millis(1500),
        "C ran for {:?}",
        hop.max
    );
}
