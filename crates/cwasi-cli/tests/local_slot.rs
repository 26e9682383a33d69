//! The call slot of local mode between real processes: a caller whose server
//! is SIGKILLed while the caller spins and while it sleeps, a hostile caller
//! that writes garbage into the slot of a real server, and a hostile server
//! that writes garbage into the slot of a real caller.

mod common;

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{refusal, Scratch, Server};
use cwasi_runtime::wire::slot::*;
use cwasi_runtime::wire::HEADER_LEN;
use cwasi_runtime::{CallError, ErrorCode, Limits, NodeDirectory, Runtime};
use test_programs_artifacts as progs;

/// A caller of the node directory `dir`, with a call timeout and a spin
/// budget. Callers in this file do not spin unless a test asks: the
/// spinners of a process are limited, and tests run side by side.
fn caller(dir: &Path, timeout: Duration, spin: Duration) -> Runtime {
    Runtime::builder()
        .limits(Limits {
            call_timeout: timeout,
            spin_budget: spin,
            ..Limits::default()
        })
        .node_directory(NodeDirectory::open(dir).unwrap())
        .build()
        .unwrap()
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write to.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) },
        0
    );
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Kills the server of a call of 5 s after 500 ms; returns the error, how
/// long the call took and the share of that time the calling thread was on
/// a CPU.
fn killed_mid_call(tag: &str, spin: Duration) -> (CallError, Duration, f64) {
    let scratch = Scratch::new(tag);
    let dir = scratch.0.join("node");
    let mut server = Server::start(&dir, progs::BUSY, "busy", "b", &[], &[]);
    let rt = caller(&dir, Duration::from_secs(20), spin);
    assert_eq!(rt.call("a", "busy", b"1").unwrap(), b"1");
    std::thread::scope(|s| {
        let call = s.spawn(|| {
            let (started, cpu) = (Instant::now(), thread_cpu());
            let result = rt.call("a", "busy", b"5000");
            let (took, cpu) = (started.elapsed(), thread_cpu() - cpu);
            (result, took, cpu.as_secs_f64() / took.as_secs_f64())
        });
        std::thread::sleep(Duration::from_millis(500));
        server.sigkill();
        let (result, took, busy) = call.join().unwrap();
        (result.unwrap_err(), took, busy)
    })
}

#[test]
fn a_server_killed_while_the_caller_spins_or_sleeps_fails_the_call_at_once() {
    // Spinning: the budget covers the whole call; the spinner checks the
    // socket for a hang-up every millisecond.
    let (err, took, busy) = killed_mid_call("kill-spinning", Duration::from_secs(60));
    assert_eq!(err.code, ErrorCode::Transport, "{err}");
    assert!(err.message.contains("mid-call"), "{err}");
    assert!(
        busy > 0.2,
        "the caller was on a CPU {busy:.2} of the time: it did not spin"
    );
    assert!(
        took < Duration::from_secs(3),
        "the spinning caller took {took:?}"
    );
    // Sleeping: no spinning; the hang-up watcher wakes the futex.
    let (err, took, busy) = killed_mid_call("kill-sleeping", Duration::ZERO);
    assert_eq!(err.code, ErrorCode::Transport, "{err}");
    assert!(err.message.contains("mid-call"), "{err}");
    assert!(
        busy < 0.05,
        "the caller was on a CPU {busy:.2} of the time: it did not sleep"
    );
    assert!(
        took < Duration::from_secs(3),
        "the sleeping caller took {took:?}"
    );
}

/// A shared region as a hostile peer holds it: the memfd and a mapping of
/// its control block.
struct Region {
    _fd: OwnedFd,
    ptr: *mut u8,
}

// SAFETY: the pointer is a mapping address, used only through atomics.
unsafe impl Send for Region {}

impl Region {
    fn map(fd: OwnedFd) -> Region {
        // SAFETY: a fresh shared mapping of the control block, which the
        // file holds (checked by the callers' sizes).
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                CONTROL_LEN,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &fd,
                0,
            )
            .unwrap()
        };
        Region {
            _fd: fd,
            ptr: ptr.cast(),
        }
    }

    fn word(&self, at: usize) -> &AtomicU32 {
        assert!(at + 4 <= CONTROL_LEN);
        // SAFETY: in bounds, aligned, and only used through atomics.
        unsafe { &*self.ptr.add(at).cast::<AtomicU32>() }
    }

    /// Overwrites `range` of the control block with pseudo-random bytes.
    fn scribble(&self, range: std::ops::Range<usize>, seed: u64) {
        let mut x = seed | 1;
        for at in range.step_by(4) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.word(at).store(x as u32, Ordering::SeqCst);
        }
    }

    /// Bumps the bell at `bell` and wakes whoever sleeps on it.
    fn ring(&self, bell: usize) {
        let word = self.word(bell);
        word.fetch_add(1, Ordering::SeqCst);
        // SAFETY: FUTEX_WAKE only uses the address as a key.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAKE,
                i32::MAX,
                0,
                0,
                0,
            );
        }
    }
}

/// Connects to `socket` as a caller would, with a region of a control block
/// and nothing more; returns the connection and the region.
fn hostile_caller(socket: &Path) -> (UnixStream, Region) {
    let s = UnixStream::connect(socket).unwrap();
    let fd = common::attach_region(&s, 0).unwrap();
    (s, Region::map(fd))
}

/// Rings the server of `s` after a hostile write into `region`, and checks
/// that it ends the connection with one error frame, `TRANSPORT` for a
/// reason that mentions `reason`.
fn refused_for(s: UnixStream, region: &Region, reason: &str) {
    region.ring(SERVER_BELL);
    let (code, message) = refusal(s);
    assert_eq!(code, ErrorCode::Transport.as_raw(), "{message}");
    assert!(message.contains(reason), "{message}");
}

#[test]
fn garbage_in_the_slot_from_a_caller_ends_its_connection_and_the_server_keeps_serving() {
    let scratch = Scratch::new("hostile-caller");
    let dir = scratch.0.join("node");
    let _server = Server::start(&dir, progs::ECHO, "echo", "b", &[], &[]);
    let socket = dir.join("echo@b.sock");
    let good = caller(&dir, Duration::from_secs(20), Duration::ZERO);
    assert_eq!(good.call("a", "echo", b"before").unwrap(), b"before");

    // Random bytes over the whole header and inline area, sequences too.
    for seed in [1u64, 2, 3] {
        let (s, region) = hostile_caller(&socket);
        region.scribble(0..CONTROL_LEN, seed);
        refused_for(s, &region, "out of turn");
        assert_eq!(good.call("a", "echo", b"served").unwrap(), b"served");
    }

    // The right sequence, random fields and inline bytes.
    for seed in [4u64, 5, 6] {
        let (s, region) = hostile_caller(&socket);
        region.scribble(REQ_KIND..CONTROL_LEN, seed);
        region.word(REQ_SEQ).store(1, Ordering::SeqCst);
        refused_for(s, &region, "call slot");
    }

    // A well-formed inline request that claims more than the slot holds.
    let (s, region) = hostile_caller(&socket);
    region.word(REQ_KIND).store(1, Ordering::SeqCst);
    region.word(REQ_TARGET_LEN).store(4, Ordering::SeqCst);
    region.word(REQ_CALLER_LEN).store(5, Ordering::SeqCst);
    region.word(REQ_LEN).store(1 << 20, Ordering::SeqCst);
    region.word(REQ_SEQ).store(1, Ordering::SeqCst);
    refused_for(s, &region, "inline payload");

    // An inline request that names no caller, or one longer than any.
    for caller_len in [0u32, 768, u32::MAX] {
        let (s, region) = hostile_caller(&socket);
        region.word(REQ_KIND).store(1, Ordering::SeqCst);
        region.word(REQ_TARGET_LEN).store(4, Ordering::SeqCst);
        region
            .word(REQ_CALLER_LEN)
            .store(caller_len, Ordering::SeqCst);
        region.word(REQ_SEQ).store(1, Ordering::SeqCst);
        refused_for(s, &region, "caller identity");
    }

    // A well-formed inline request with a flag this server does not know.
    let (s, region) = hostile_caller(&socket);
    region.word(REQ_KIND).store(1, Ordering::SeqCst);
    region.word(REQ_TARGET_LEN).store(4, Ordering::SeqCst);
    region
        .word(REQ_FLAGS)
        .store(NO_QUEUE | 0x80, Ordering::SeqCst);
    region.word(REQ_SEQ).store(1, Ordering::SeqCst);
    refused_for(s, &region, "unknown request flags");

    // A request sequence bumped past the next one.
    let (s, region) = hostile_caller(&socket);
    region.word(REQ_SEQ).store(5, Ordering::SeqCst);
    refused_for(s, &region, "out of turn");

    // Through all of it the server kept serving, small calls and large.
    assert_eq!(
        good.call("a", "echo", b"still here").unwrap(),
        b"still here"
    );
    let fresh = caller(&dir, Duration::from_secs(20), Duration::ZERO);
    assert_eq!(
        fresh.call("a", "echo", &[5u8; 300_000]).unwrap(),
        vec![5u8; 300_000]
    );
}

/// What a hostile server does once the caller's first request is in the
/// slot.
type Mischief = fn(&Region);

/// Serves one connection at `socket` as a hostile server: waits for the
/// first request in the slot, does `mischief`, and holds the connection
/// open until the caller is done. Returns the caller's result and how long
/// the call took.
fn against_hostile_server(
    socket: &Path,
    timeout: Duration,
    mischief: Mischief,
) -> (Result<Vec<u8>, CallError>, Duration) {
    let listener = UnixListener::bind(socket).unwrap();
    let rt = caller(Path::new("/nonexistent"), timeout, Duration::ZERO);
    std::thread::scope(|s| {
        let server = s.spawn(move || {
            let conn = accept_within(&listener, Duration::from_secs(10)).expect("no caller came");
            let mut head = [0u8; HEADER_LEN];
            let fd = receive_fd(&conn, &mut head);
            let region = Region::map(fd);
            let deadline = Instant::now() + Duration::from_secs(10);
            while region.word(REQ_SEQ).load(Ordering::SeqCst) != 1 {
                assert!(Instant::now() < deadline, "no request in the slot");
                std::thread::sleep(Duration::from_millis(1));
            }
            mischief(&region);
            region.ring(CLIENT_BELL);
            (conn, region)
        });
        let started = Instant::now();
        let result = rt.call_socket(socket, "echo", b"hello");
        let took = started.elapsed();
        drop(server.join().unwrap());
        (result, took)
    })
}

/// Reads `head` and the descriptor that comes with it.
fn receive_fd(conn: &UnixStream, head: &mut [u8]) -> OwnedFd {
    use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [std::io::IoSliceMut::new(head)];
    recvmsg(conn, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC).unwrap();
    let mut fds = control.drain().filter_map(|m| match m {
        RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
        _ => None,
    });
    fds.next().expect("the caller sent no region")
}

#[test]
fn garbage_in_the_slot_from_a_server_fails_the_call_without_a_hang() {
    let scratch = Scratch::new("hostile-server");
    let socket = scratch.0.join("hostile.sock");
    let quick = Duration::from_secs(3);
    let mischiefs: [(&str, Mischief, &str); 4] = [
        (
            "random bytes over the whole block",
            |r| r.scribble(0..CONTROL_LEN, 7),
            "out of turn",
        ),
        (
            "a response sequence out of turn",
            |r| r.word(RESP_SEQ).store(9, Ordering::SeqCst),
            "out of turn",
        ),
        (
            "an inline answer longer than the slot",
            |r| {
                r.word(RESP_KIND).store(1, Ordering::SeqCst);
                r.word(RESP_LEN).store(1 << 30, Ordering::SeqCst);
                r.word(RESP_SEQ).store(1, Ordering::SeqCst);
            },
            "inline answer",
        ),
        (
            "random fields and inline bytes",
            |r| {
                r.scribble(RESP_KIND..CONTROL_LEN, 11);
                r.word(RESP_SEQ).store(1, Ordering::SeqCst);
            },
            "response kind",
        ),
    ];
    for (what, mischief, expect) in mischiefs {
        let _ = std::fs::remove_file(&socket);
        let (result, took) = against_hostile_server(&socket, Duration::from_secs(20), mischief);
        let err = result.expect_err(what);
        assert_eq!(err.code, ErrorCode::Transport, "{what}: {err}");
        assert!(err.message.contains(expect), "{what}: {err}");
        assert!(took < quick, "{what}: the call took {took:?}");
    }
    // A server that never answers: the call ends at its deadline (plus the
    // grace a server gets to report its own timeout), not later.
    let _ = std::fs::remove_file(&socket);
    let timeout = Duration::from_millis(500);
    let (result, took) = against_hostile_server(&socket, timeout, |_| {});
    let err = result.unwrap_err();
    assert_eq!(err.code, ErrorCode::Timeout, "{err}");
    assert!(
        took < timeout + cwasi_runtime::ANSWER_GRACE + Duration::from_secs(1),
        "a silent server held the call for {took:?}"
    );

    // The caller's process is fine: a real server is called as usual.
    let dir = scratch.0.join("node");
    let _server = Server::start(&dir, progs::ECHO, "echo", "b", &[], &[]);
    let rt = caller(&dir, Duration::from_secs(20), Duration::ZERO);
    assert_eq!(rt.call("a", "echo", b"fine").unwrap(), b"fine");
}

/// The next connection to `listener`, if one comes within `limit` (so that
/// a caller that never comes fails the test instead of hanging it).
fn accept_within(listener: &UnixListener, limit: Duration) -> Option<UnixStream> {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(false).unwrap();
                return Some(conn);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    None
}

/// Answers the request in the slot of `region` as a server would, with
/// `answer` inline.
fn answer_inline(region: &Region, answer: &[u8]) {
    // SAFETY: the inline area is within the mapping; raw copies only.
    unsafe {
        std::ptr::copy_nonoverlapping(answer.as_ptr(), region.ptr.add(INLINE_AT), answer.len());
    }
    region.word(RESP_KIND).store(1, Ordering::SeqCst);
    region
        .word(RESP_LEN)
        .store(answer.len() as u32, Ordering::SeqCst);
    region.word(RESP_SEQ).store(1, Ordering::SeqCst);
    region.ring(CLIENT_BELL);
}

#[test]
fn a_request_the_server_never_took_is_posted_again_and_one_it_took_is_not() {
    let scratch = Scratch::new("not-taken");
    let socket = scratch.0.join("flaky.sock");
    for took in [false, true] {
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).unwrap();
        let rt = caller(
            Path::new("/nonexistent"),
            Duration::from_secs(20),
            Duration::ZERO,
        );
        let (result, connections) = std::thread::scope(|s| {
            let server = s.spawn(|| {
                let mut connections = 0;
                // The first connection hangs up once the request is in the
                // slot, having taken it or not; a second one answers.
                for first in [true, false] {
                    let Some(conn) = accept_within(&listener, Duration::from_secs(10)) else {
                        break;
                    };
                    connections += 1;
                    let fd = receive_fd(&conn, &mut [0u8; HEADER_LEN]);
                    let region = Region::map(fd);
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while region.word(REQ_SEQ).load(Ordering::SeqCst) != 1 {
                        assert!(Instant::now() < deadline, "no request in the slot");
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    if first {
                        if took {
                            region.word(REQ_TAKEN).store(1, Ordering::SeqCst);
                        }
                        drop(conn);
                        if took {
                            break;
                        }
                        continue;
                    }
                    region.word(REQ_TAKEN).store(1, Ordering::SeqCst);
                    answer_inline(&region, b"answered");
                    let mut rest = Vec::new();
                    let _ = (&conn).read_to_end(&mut rest);
                }
                connections
            });
            let result = rt.call_socket(&socket, "echo", b"hello");
            drop(rt);
            (result, server.join().unwrap())
        });
        if took {
            // It may have run: the caller is told, and nothing is repeated.
            let err = result.unwrap_err();
            assert_eq!(err.code, ErrorCode::Transport, "{err}");
            assert!(err.message.contains("mid-call"), "{err}");
            assert_eq!(connections, 1);
        } else {
            assert_eq!(result.unwrap(), b"answered");
            assert_eq!(connections, 2);
        }
    }
}
