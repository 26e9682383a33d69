//! Local mode between real processes: `cwasi run` serving other namespaces,
//! a server killed mid-call and restarted, a peer of another uid, and
//! malformed frames.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{assert_producer_ok, cwasi, function, run_with_timeout, Scratch, Server, LIMIT};
use cwasi_runtime::wire::{Header, Kind, HEADER_LEN};
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
    // the function is simply not found, and the files are cleaned.
    assert!(dir.join("busy@b.sock").exists());
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

/// Reads what the server answers on a raw connection: the frame kinds it
/// sent before closing.
fn answers(mut s: UnixStream) -> Vec<Kind> {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut kinds = Vec::new();
    loop {
        let mut head = [0u8; HEADER_LEN];
        match s.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return kinds,
            Err(e) => panic!("the server neither answered nor closed: {e}"),
        }
        let h = Header::decode(&head, 1 << 30).expect("the server sent a bad frame");
        let mut body = vec![0u8; h.payload_len as usize];
        s.read_exact(&mut body).unwrap();
        kinds.push(h.kind);
    }
}

fn attach_frame(s: &UnixStream) {
    use rustix::fs::{fcntl_add_seals, memfd_create, MemfdFlags, SealFlags};
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::os::fd::AsFd;
    let fd = memfd_create("t", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::SEAL).unwrap();
    let head = Header::new(Kind::AttachShm, 0).encode();
    let fds = [fd.as_fd()];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
    let n = sendmsg(
        s,
        &[std::io::IoSlice::new(&head)],
        &mut control,
        SendFlags::empty(),
    )
    .unwrap();
    assert_eq!(n, HEADER_LEN);
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
    let noise: Vec<u8> = (0..64u32)
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
    h.target_len = 4;
    h.payload_len = 1 << 40;
    s.write_all(&h.encode()).unwrap();
    s.write_all(b"echo").unwrap();
    assert_eq!(answers(s), vec![Kind::Error]);

    // A request for a function this server does not host gets an error and
    // the connection stays usable.
    let mut s = UnixStream::connect(&socket).unwrap();
    attach_frame(&s);
    for id in [1u64, 2] {
        let mut h = Header::new(Kind::Request, id);
        h.target_len = 4;
        h.payload_len = 2;
        s.write_all(&h.encode()).unwrap();
        s.write_all(b"nopehi").unwrap();
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
