//! Local mode between real processes: `cwasi run` serving other namespaces,
//! a server killed mid-call and restarted, a peer of another uid, malformed
//! frames, half-sent requests, and the cap on connections.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    answers, assert_producer_ok, cwasi, function, refusal, run_with_timeout, Scratch, Server, LIMIT,
};
use cwasi_runtime::wire::{Header, Kind, FLAG_CHUNKED, FLAG_SHM, HEADER_LEN};
use cwasi_runtime::{ErrorCode, Limits, Mode, NodeDirectory, Runtime};
use test_programs_artifacts as progs;

fn caller(dir: &Path, timeout: Duration) -> Runtime {
    Runtime::builder()
        .limits(Limits {
            call_timeout: timeout,
            ..Limits::default()
        })
        .node_directory(NodeDirectory::open(dir).unwrap())
        .build()
        .unwrap()
}

#[test]
fn functions_of_other_namespaces_are_served_and_called_locally() {
    let scratch = Scratch::new("local-run");
    let dir = scratch.0.join("node");
    for size in [0usize, 1, 64 << 10, 10 << 20, 100 << 20] {
        let toml = format!(
            "entry = \"producer\"\n{}{}{}",
            function(
                "producer",
                progs::PRODUCER,
                &format!(
                    "namespace = \"team-a\"\nargs = [\"{size}\", \"transform\", \"xor-checksum\"]"
                )
            ),
            function(
                "transform",
                progs::TRANSFORM,
                "namespace = \"team-b\"\nenv = { CWASI_NEXT = \"sink\" }"
            ),
            function("sink", progs::SINK, "namespace = \"team-c\""),
        );
        let file = scratch.write("multi.toml", &toml);
        let out = cwasi(
            &[
                "run",
                &file,
                "--explain",
                "--runtime-dir",
                dir.to_str().unwrap(),
            ],
            LIMIT,
        );
        assert_producer_ok(&out, size, "producer -> transform: local");
        // The servers were stopped and unregistered.
        let left = NodeDirectory::open(&dir).unwrap().list();
        assert!(left.is_empty(), "records left behind: {left:?}");
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert!(files.is_empty(), "files left behind: {files:?}");
    }
}

/// A planned stop (SIGTERM) withdraws the record at once, so new callers no
/// longer find the server, and lets the call in flight finish before the
/// server exits; a request on another open connection meanwhile is not
/// taken (the draining answer), and fails as one that nothing ran.
#[test]
fn a_server_stopped_mid_call_finishes_the_call_first() {
    let scratch = Scratch::new("drain");
    let dir = scratch.0.join("node");
    let mut server = Server::start(&dir, progs::BUSY, "busy", "b", &[], &[]);
    let rt = caller(&dir, Duration::from_secs(20));
    // Two calls at once leave two pooled connections.
    std::thread::scope(|s| {
        let calls = [(); 2].map(|_| s.spawn(|| rt.call("a", "busy", b"200")));
        for c in calls {
            assert_eq!(c.join().unwrap().unwrap(), b"200");
        }
    });

    let (answer, status, withdrawn, refused) = std::thread::scope(|s| {
        let call = s.spawn(|| rt.call("a", "busy", b"3000"));
        std::thread::sleep(Duration::from_millis(300));
        let stop = s.spawn(|| server.terminate_within(Duration::from_secs(20)));
        // The record goes first, while the call still runs (given 2.5 s of
        // its 3: a loaded machine is slow to deliver and handle SIGTERM).
        let deadline = Instant::now() + Duration::from_millis(2500);
        while dir.join("busy@b.json").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let withdrawn = !dir.join("busy@b.json").exists() && !call.is_finished();
        assert!(withdrawn, "the record stayed while the call in flight ran");
        // The other pooled connection's next request, during the drain.
        let refused = rt.call("a", "busy", b"1");
        let refused_mid_call = !call.is_finished();
        (
            call.join().unwrap(),
            stop.join().unwrap(),
            withdrawn,
            refused.map_err(|e| (e, refused_mid_call)),
        )
    });
    let (refused, mid_call) = refused.expect_err("a draining server took a new request");
    assert!(mid_call, "the refusal came only after the call in flight");
    assert!(refused.nothing_ran(), "{refused}");
    assert_eq!(refused.code, ErrorCode::Transport, "{refused}");
    assert_eq!(
        answer.as_deref(),
        Ok(&b"3000"[..]),
        "the call in flight failed"
    );
    let status = status.expect("cwasi serve did not stop after the call");
    assert!(status.success(), "{status}");
    assert!(withdrawn);
    assert!(!dir.join("busy@b.sock").exists());
}

#[test]
fn a_server_killed_mid_call_fails_the_call_and_a_restart_recovers() {
    let scratch = Scratch::new("kill");
    let dir = scratch.0.join("node");
    let mut server = Server::start(&dir, progs::BUSY, "busy", "b", &[], &[]);
    let rt = caller(&dir, Duration::from_secs(20));
    assert_eq!(rt.call("a", "busy", b"1").unwrap(), b"1");

    let started = Instant::now();
    let call = std::thread::scope(|s| {
        let call = s.spawn(|| rt.call("a", "busy", b"5000"));
        std::thread::sleep(Duration::from_millis(300));
        server.sigkill();
        call.join().unwrap()
    });
    let err = call.unwrap_err();
    assert_eq!(err.code, ErrorCode::Transport, "{err}");
    assert!(err.message.contains("mid-call"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the caller waited for its whole timeout"
    );

    // The socket and record of the killed server do not break discovery:
    // the function is simply not found, and the files are cleaned (by the
    // first caller's placement watcher, which looks at its route's callee
    // every 500 ms, or by the fresh caller's lookup, whichever comes first).
    let fresh = caller(&dir, Duration::from_secs(20));
    let err = fresh.explain("a", "busy").unwrap_err();
    assert_eq!(err.code, ErrorCode::UnknownFunction, "{err}");
    assert!(!dir.join("busy@b.json").exists());
    assert!(!dir.join("busy@b.sock").exists());

    // After a restart, the next call of the same caller succeeds.
    let _server = Server::start(&dir, progs::BUSY, "busy", "b", &[], &[]);
    assert_eq!(rt.call("a", "busy", b"2").unwrap(), b"2");
    assert_eq!(fresh.explain("a", "busy").unwrap().mode, Mode::Local);
    let out = cwasi(
        &[
            "call",
            "busy",
            "--data",
            "3",
            "--runtime-dir",
            dir.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "3"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_peer_of_another_uid_is_refused() {
    assert!(
        rustix::process::getuid().is_root(),
        "this test switches to nobody and must run as root (as CI does)"
    );
    let scratch = Scratch::new("uid");
    std::fs::set_permissions(&scratch.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = scratch.0.join("node");
    let _denied = Server::start(&dir, progs::ECHO, "echo", "b", &[], &[]);
    let _allowed = Server::start(
        &dir,
        progs::ECHO,
        "echo2",
        "b",
        &["--allow-uid", "65534"],
        &[],
    );
    // Open the way to the sockets, so that only the credential check stands
    // between nobody and the server.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    for s in ["echo@b.sock", "echo2@b.sock"] {
        std::fs::set_permissions(dir.join(s), std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    // A copy of the binary that nobody may run.
    let bin = scratch.0.join("cwasi");
    std::fs::copy(env!("CARGO_BIN_EXE_cwasi"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |name: &str| {
        let socket = dir.join(format!("{name}@b.sock"));
        run_with_timeout(
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&bin)
                .args(["call", name, "--data", "hi", "--socket"])
                .arg(&socket),
            LIMIT,
        )
    };
    let out = as_nobody("echo");
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("DENIED"), "{}", out.stderr);
    assert!(out.stderr.contains("uid 65534"), "{}", out.stderr);
    let out = as_nobody("echo2");
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "hi"),
        "{}",
        out.stderr
    );
}

fn attach_frame(s: &UnixStream) {
    attach_region(s, 0);
}

/// Opens a connection the proper way, with a shared region of a control
/// block and `size` bytes of data area.
fn attach_region(s: &UnixStream, size: u64) {
    try_attach_region(s, size).unwrap();
}

/// [`attach_region`], for a connection the server may have closed already.
fn try_attach_region(s: &UnixStream, size: u64) -> std::io::Result<()> {
    common::attach_region(s, size).map(drop)
}

/// The caller a hand-made request claims.
const CLAIM: &[u8] = b"a/@n1";

/// A request for `echo` whose header is `h` but for the target and the
/// caller.
fn request_head(mut h: Header) -> Vec<u8> {
    h.target_len = 4;
    h.caller_len = CLAIM.len() as u16;
    let mut out = h.encode().to_vec();
    out.extend_from_slice(b"echo");
    out.extend_from_slice(CLAIM);
    out
}

#[test]
fn malformed_frames_close_the_connection_and_the_server_keeps_serving() {
    let scratch = Scratch::new("frames");
    let dir = scratch.0.join("node");
    let _server = Server::start(
        &dir,
        progs::ECHO,
        "echo",
        "b",
        &["--max-payload-mib", "1"],
        &[],
    );
    let socket: PathBuf = dir.join("echo@b.sock");
    let good = caller(&dir, Duration::from_secs(20));
    assert_eq!(good.call("a", "echo", b"before").unwrap(), b"before");

    // Random bytes.
    let mut s = UnixStream::connect(&socket).unwrap();
    let noise: Vec<u8> = (0..HEADER_LEN as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    s.write_all(&noise).unwrap();
    assert_eq!(answers(s), vec![Kind::Error]);
    assert_eq!(
        good.call("a", "echo", b"after noise").unwrap(),
        b"after noise"
    );

    // A truncated header, then the writer goes quiet.
    let mut s = UnixStream::connect(&socket).unwrap();
    s.write_all(&Header::new(Kind::AttachShm, 0).encode()[..10])
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(answers(s).len() <= 1);
    assert_eq!(
        good.call("a", "echo", b"after truncation").unwrap(),
        b"after truncation"
    );

    // An unknown version.
    let mut s = UnixStream::connect(&socket).unwrap();
    let mut head = Header::new(Kind::AttachShm, 0).encode();
    head[4] = 9;
    s.write_all(&head).unwrap();
    assert_eq!(answers(s), vec![Kind::Error]);

    // A length over the limit, after a proper start.
    let mut s = UnixStream::connect(&socket).unwrap();
    attach_frame(&s);
    let mut h = Header::new(Kind::Request, 7);
    h.payload_len = 1 << 40;
    s.write_all(&request_head(h)).unwrap();
    assert_eq!(answers(s), vec![Kind::Error]);

    // A request for a function this server does not host gets an error and
    // the connection stays usable.
    let mut s = UnixStream::connect(&socket).unwrap();
    attach_frame(&s);
    for id in [1u64, 2] {
        let mut h = Header::new(Kind::Request, id);
        h.target_len = 4;
        h.caller_len = CLAIM.len() as u16;
        h.payload_len = 2;
        s.write_all(&h.encode()).unwrap();
        s.write_all(b"nope").unwrap();
        s.write_all(CLAIM).unwrap();
        s.write_all(b"hi").unwrap();
        let mut head = [0u8; HEADER_LEN];
        s.read_exact(&mut head).unwrap();
        let h = Header::decode(&head, 1 << 20).unwrap();
        assert_eq!(
            (h.kind, h.id, h.status),
            (Kind::Error, id, ErrorCode::UnknownFunction.as_raw())
        );
        let mut msg = vec![0u8; h.payload_len as usize];
        s.read_exact(&mut msg).unwrap();
    }
    drop(s);

    // Through all of it the server kept serving.
    assert_eq!(
        good.call("a", "echo", b"still here").unwrap(),
        b"still here"
    );
    let fresh = caller(&dir, Duration::from_secs(20));
    assert_eq!(
        fresh.call("a", "echo", &[5u8; 300_000]).unwrap(),
        vec![5u8; 300_000]
    );
}

#[test]
fn half_sent_requests_hold_no_call_slot_and_are_cut_off_with_an_error_frame() {
    let scratch = Scratch::new("half-sent");
    let dir = scratch.0.join("node");
    let _server = Server::start(
        &dir,
        progs::ECHO,
        "echo",
        "b",
        &["--max-concurrent", "4"],
        &[],
    );
    let socket = dir.join("echo@b.sock");
    // Twenty callers send a request's header and target, and stop before
    // the inline payload; six announce a pipelined payload and never send a
    // progress count. Before the fix, four of them took every call slot
    // until the idle timeout.
    let mut stalled = Vec::new();
    for i in 0..26u64 {
        let s = UnixStream::connect(&socket).unwrap();
        let mut h = Header::new(Kind::Request, i + 1);
        if i < 20 {
            attach_frame(&s);
            h.payload_len = 1000;
        } else {
            attach_region(&s, 4 << 20);
            h.flags = FLAG_SHM | FLAG_CHUNKED;
            h.payload_len = 4 << 20;
        }
        (&s).write_all(&request_head(h)).unwrap();
        stalled.push(s);
    }
    // A fresh caller is served while they hang.
    let timeout = Duration::from_secs(20);
    let fresh = caller(&dir, timeout);
    let started = Instant::now();
    assert_eq!(fresh.call("a", "echo", b"served").unwrap(), b"served");
    let took = started.elapsed();
    assert!(
        took < timeout / 2,
        "the fresh call took {took:?} of its {timeout:?} timeout"
    );
    // Each stalled request is cut off with an error frame that says why.
    for s in stalled {
        let (code, message) = refusal(s);
        assert_eq!(code, ErrorCode::Transport.as_raw(), "{message}");
        assert!(message.contains("did not arrive"), "{message}");
    }
    assert_eq!(fresh.call("a", "echo", b"again").unwrap(), b"again");
}

#[test]
fn slow_drip_senders_hold_few_call_slots_and_are_cut_off_at_their_budget() {
    let scratch = Scratch::new("slow-drip");
    let dir = scratch.0.join("node");
    // 16 call slots (the default); a payload of N bytes is due within 2 s
    // plus N at 1 MiB/s.
    let _server = Server::start(
        &dir,
        progs::ECHO,
        "echo",
        "b",
        &["--min-payload-kib-per-sec", "1024"],
        &[],
    );
    let socket = dir.join("echo@b.sock");
    // Sixteen connections each announce a pipelined 2 MiB payload, then
    // grow its progress count by one byte every 1.5 s: each count comes
    // well within its phase, so only the payload's budget (4 s) ends them.
    // Before the budget, they held every call slot for good.
    const LEN: u64 = 2 << 20;
    let drippers: Vec<_> = (0..16u64)
        .map(|i| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&socket).unwrap();
                attach_region(&s, LEN);
                let mut h = Header::new(Kind::Request, 100 + i);
                h.flags = FLAG_SHM | FLAG_CHUNKED;
                h.payload_len = LEN;
                s.write_all(&request_head(h)).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(1500)))
                    .unwrap();
                let started = Instant::now();
                let mut got = Vec::new();
                for count in 1..LEN {
                    let mut buf = [0u8; 4096];
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            assert!(started.elapsed() < Duration::from_secs(30), "never cut off");
                            // A write after the server closed may fail; its
                            // error frame is still there to read.
                            let _ = s.write_all(&count.to_le_bytes());
                        }
                        Err(e) => panic!("dripper {i}: {e}"),
                    }
                    if got.len() >= HEADER_LEN {
                        break;
                    }
                }
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let _ = s.read_to_end(&mut got);
                (started.elapsed(), got)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    // A fresh caller in this process is served at once: the drippers, one
    // process, hold at most a quarter of the slots.
    let fresh = caller(&dir, Duration::from_secs(20));
    let started = Instant::now();
    assert_eq!(fresh.call("a", "echo", b"served").unwrap(), b"served");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the fresh call took {took:?}"
    );
    // So is a pipelined payload from another process: it has a share of
    // its own among the payloads still arriving.
    let big = scratch.0.join("big");
    let payload: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&big, &payload).unwrap();
    let out = scratch.0.join("out");
    let started = Instant::now();
    let data = format!("@{}", big.display());
    let dir_arg = dir.display().to_string();
    let out_arg = out.display().to_string();
    let called = cwasi(
        &[
            "call",
            "echo",
            "--namespace",
            "a",
            "--runtime-dir",
            &dir_arg,
            "--data",
            &data,
            "--out",
            &out_arg,
        ],
        LIMIT,
    );
    let took = started.elapsed();
    assert_eq!(called.code, Some(0), "{}", called.stderr);
    assert!(
        std::fs::read(&out).unwrap() == payload,
        "3 MiB came back changed"
    );
    // (The process's start and the module's load are in it too.)
    assert!(
        took < Duration::from_secs(3),
        "the 3 MiB call took {took:?}"
    );

    // Each dripper is cut off with an error frame that says why.
    for d in drippers {
        let (took, got) = d.join().unwrap();
        assert!(got.len() >= HEADER_LEN, "no error frame after {took:?}");
        let head: [u8; HEADER_LEN] = got[..HEADER_LEN].try_into().unwrap();
        let h = Header::decode(&head, 1 << 20).unwrap();
        let msg = String::from_utf8_lossy(&got[HEADER_LEN..]).into_owned();
        assert_eq!(h.kind, Kind::Error, "{msg}");
        assert_eq!(h.status, ErrorCode::Transport.as_raw(), "{msg}");
        assert!(msg.contains("payload did not arrive within 4"), "{msg}");
        assert!(took < Duration::from_secs(10), "cut off after {took:?}");
    }
    assert_eq!(fresh.call("a", "echo", b"again").unwrap(), b"again");
}

#[test]
fn connections_over_the_cap_are_refused_and_idle_ones_are_closed() {
    let scratch = Scratch::new("conn-cap");
    let dir = scratch.0.join("node");
    let _server = Server::start(
        &dir,
        progs::ECHO,
        "echo",
        "b",
        &["--max-connections", "4", "--idle-timeout-secs", "2"],
        &[],
    );
    let socket = dir.join("echo@b.sock");
    let idle: Vec<UnixStream> = (0..4)
        .map(|_| {
            let s = UnixStream::connect(&socket).unwrap();
            attach_frame(&s);
            s
        })
        .collect();
    // The connection threads count from when they start: give them a moment.
    std::thread::sleep(Duration::from_millis(300));
    let over = UnixStream::connect(&socket).unwrap();
    // The server may refuse it before the first frame is even sent.
    let _ = try_attach_region(&over, 0);
    let (code, message) = refusal(over);
    assert_eq!(code, ErrorCode::ResourceLimit.as_raw(), "{message}");
    assert!(message.contains("limit"), "{message}");
    let refused = caller(&dir, Duration::from_secs(10))
        .call("a", "echo", b"x")
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::ResourceLimit, "{refused}");
    // The idle ones are closed after the idle timeout, without a word, and
    // the server has room again.
    for s in idle {
        assert!(answers(s).is_empty());
    }
    let fresh = caller(&dir, Duration::from_secs(10));
    assert_eq!(fresh.call("a", "echo", b"room").unwrap(), b"room");
}

#[test]
fn protocol_refusals_end_with_an_error_frame() {
    let scratch = Scratch::new("refusals");
    let dir = scratch.0.join("node");
    let _server = Server::start(&dir, progs::ECHO, "echo", "b", &[], &[]);
    let socket = dir.join("echo@b.sock");
    let refused = |region: u64, h: Header, after: &[u8]| {
        let s = UnixStream::connect(&socket).unwrap();
        attach_region(&s, region);
        (&s).write_all(&request_head(h)).unwrap();
        (&s).write_all(after).unwrap();
        refusal(s)
    };

    // A payload announced in the region, longer than the region.
    let mut h = Header::new(Kind::Request, 1);
    h.flags = FLAG_SHM;
    h.payload_len = 100_000;
    let (code, message) = refused(0, h, &[]);
    assert_eq!(code, ErrorCode::Transport.as_raw());
    assert!(message.contains("shared region"), "{message}");

    // A progress count that goes backwards.
    let mut h = Header::new(Kind::Request, 2);
    h.flags = FLAG_SHM | FLAG_CHUNKED;
    h.payload_len = 2 << 20;
    let counts: Vec<u8> = [1u64 << 20, 1000]
        .iter()
        .flat_map(|c| c.to_le_bytes())
        .collect();
    let (code, message) = refused(2 << 20, h, &counts);
    assert_eq!(code, ErrorCode::Transport.as_raw());
    assert!(message.contains("progress"), "{message}");

    // A request without a target.
    let s = UnixStream::connect(&socket).unwrap();
    attach_frame(&s);
    let mut h = Header::new(Kind::Request, 3);
    h.payload_len = 2;
    (&s).write_all(&h.encode()).unwrap();
    (&s).write_all(b"hi").unwrap();
    let (_, message) = refusal(s);
    assert!(message.contains("must name its target"), "{message}");

    // A request without a caller.
    let s = UnixStream::connect(&socket).unwrap();
    attach_frame(&s);
    let mut h = Header::new(Kind::Request, 4);
    h.target_len = 4;
    h.payload_len = 2;
    (&s).write_all(&h.encode()).unwrap();
    (&s).write_all(b"echohi").unwrap();
    let (_, message) = refusal(s);
    assert!(message.contains("must name its caller"), "{message}");

    let good = caller(&dir, Duration::from_secs(20));
    assert_eq!(good.call("a", "echo", b"fine").unwrap(), b"fine");
}

#[test]
fn a_call_cycle_across_processes_stops_at_the_call_depth_limit() {
    let scratch = Scratch::new("cycle");
    let dir = scratch.0.join("node");
    // `a` of n1 forwards to `b` of n2, which forwards to `a` again: every
    // hop crosses processes, so only the depth that travels with the local
    // frame can stop it.
    let _a = Server::start(
        &dir,
        progs::TRANSFORM,
        "a",
        "n1",
        &["--env", "CWASI_NEXT=b"],
        &[],
    );
    let _b = Server::start(
        &dir,
        progs::TRANSFORM,
        "b",
        "n2",
        &["--env", "CWASI_NEXT=a"],
        &[],
    );
    let timeout = Duration::from_secs(60);
    let entry = caller(&dir, timeout);
    for attempt in 0..2 {
        let started = Instant::now();
        let e = entry.call("c", "a", b"round and round").unwrap_err();
        let took = started.elapsed();
        assert!(
            e.message.contains("call depth 33 is over the limit of 32"),
            "attempt {attempt}: {e}"
        );
        // It ended by the depth check, not by a timeout: every call slot
        // the cycle took was given back, or the second attempt would wait.
        assert!(took < timeout / 2, "attempt {attempt} took {took:?}");
    }
}

#[test]
fn a_call_taken_before_sigterm_is_answered() {
    let scratch = Scratch::new("sigterm-taken");
    let dir = scratch.0.join("node");
    let mut server = Server::start(&dir, progs::BUSY, "busy", "b", &[], &[]);
    let rt = caller(&dir, Duration::from_secs(20));
    std::thread::scope(|s| {
        // A 1.5 s call is running when the server is asked to stop.
        let call = s.spawn(|| rt.call("a", "busy", b"1500"));
        std::thread::sleep(Duration::from_millis(300));
        let status = server.terminate_within(Duration::from_secs(15));
        assert!(status.is_some(), "the server did not stop");
        assert_eq!(call.join().unwrap().unwrap(), b"1500");
    });
}
