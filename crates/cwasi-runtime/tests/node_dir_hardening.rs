//! The node directory against files put there by others (any process or
//! container that shares it): records copied or linked under other names,
//! FIFOs, devices, symbolic links, oversized files, and names that would be
//! hidden or leave the directory. Every wait is bounded: a regression fails
//! the test instead of hanging it.

mod common;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use common::TempDir;
use cwasi_runtime::{
    Composition, ErrorCode, FunctionSpec, Limits, Mode, NodeDirectory, Runtime, RuntimeError,
    ServeOptions, RECORD_MAX_BYTES,
};
use test_programs_artifacts as progs;

/// How long anything here may take; far above what it needs.
const BOUND: Duration = Duration::from_secs(20);

/// Runs `f` on a thread and returns its result, or fails the test if it
/// takes longer than `limit` (the thread is left behind; the test fails).
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

fn runtime(dir: &NodeDirectory, name: &str, ns: &str, module: &str) -> Runtime {
    Runtime::builder()
        .node_directory(dir.clone())
        .function(FunctionSpec::new(name, ns, PathBuf::from(module)))
        .build()
        .unwrap()
}

/// A caller that reaches served functions through their sockets only.
fn socket_caller(dir: &NodeDirectory) -> Runtime {
    Runtime::builder()
        .node_directory(dir.clone())
        .embed_served(false)
        .build()
        .unwrap()
}

fn mkfifo(path: &Path) {
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        path,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
}

#[test]
fn a_record_copied_or_linked_under_another_name_is_not_trusted_and_harms_nothing() {
    let tmp = TempDir::new("ndh-copy");
    let dir = NodeDirectory::open(tmp.path()).unwrap();
    let served = runtime(&dir, "echo", "fz", progs::ECHO);
    let _handle = served.serve("echo", &dir, ServeOptions::default()).unwrap();
    let record = tmp.path().join("echo@fz.json");
    let socket = dir.socket_path("echo", "fz");
    // A copy has no lock (it looks stale); a hard link shares the live lock.
    std::fs::copy(&record, tmp.path().join("x@fz.json")).unwrap();
    std::fs::hard_link(&record, tmp.path().join("y@fz.json")).unwrap();

    let caller = socket_caller(&dir);
    for name in ["x", "y"] {
        let err = caller.call("fz", name, b"hi").unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownFunction, "{name}: {err}");
    }
    assert!(socket.exists(), "the live server's socket was removed");
    assert!(
        !tmp.path().join("x@fz.json").exists(),
        "the stale copy stays"
    );
    assert_eq!(
        caller.call("fz", "echo", b"still here").unwrap(),
        b"still here"
    );
    let names: Vec<String> = dir.list().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["echo"]);
    assert!(dir.lookup("y", "fz").is_none());
    // A name that is a path never reaches outside the directory.
    let own = tmp.path().file_name().unwrap().to_str().unwrap();
    assert!(dir.lookup(&format!("../{own}/echo"), "fz").is_none());
}

#[test]
fn a_server_stops_when_its_socket_file_is_gone() {
    let tmp = TempDir::new("ndh-nosock");
    let dir = NodeDirectory::open(tmp.path()).unwrap();
    let served = runtime(&dir, "echo", "fz", progs::ECHO);
    let handle = served.serve("echo", &dir, ServeOptions::default()).unwrap();
    std::fs::remove_file(dir.socket_path("echo", "fz")).unwrap();
    within(BOUND, "stopping the server", move || drop(handle));
    assert!(dir.lookup("echo", "fz").is_none(), "it unregistered");
}

#[test]
fn special_files_in_the_directory_are_skipped_without_blocking() {
    let tmp = TempDir::new("ndh-special");
    let dir = NodeDirectory::open(tmp.path()).unwrap();
    mkfifo(&tmp.path().join("f@fz.json"));
    let d = dir.clone();
    let (all, fifo) = within(BOUND, "scanning past a FIFO", move || {
        (d.list(), d.lookup("f", "fz"))
    });
    assert!(all.is_empty() && fifo.is_none(), "{all:?} {fifo:?}");
    // (Added only now: a reader that followed the link would read forever.)
    std::fs::create_dir(tmp.path().join("d@fz.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", tmp.path().join("z@fz.json")).unwrap();
    let d = dir.clone();
    let all = within(BOUND, "scanning past a directory and a link", move || {
        d.list()
    });
    assert!(all.is_empty(), "{all:?}");
    // A server starts (it scans the directory to publish its module) and
    // is found.
    let d = dir.clone();
    let found = within(BOUND, "serving next to a FIFO", move || {
        let served = runtime(&d, "echo", "fz", progs::ECHO);
        let _handle = served.serve("echo", &d, ServeOptions::default()).unwrap();
        socket_caller(&d).call("fz", "echo", b"ok").unwrap()
    });
    assert_eq!(found, b"ok");
    // Nothing was taken for a stale record and removed.
    for name in ["f@fz.json", "d@fz.json", "z@fz.json"] {
        assert!(
            std::fs::symlink_metadata(tmp.path().join(name)).is_ok(),
            "{name}"
        );
    }
}

/// The peak resident memory of this process, in bytes.
fn peak_rss() -> u64 {
    // SAFETY: `usage` is valid for writes of its size; RUSAGE_SELF is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    usage.ru_maxrss as u64 * 1024
}

#[test]
fn an_oversized_record_is_skipped_unread() {
    let tmp = TempDir::new("ndh-sparse");
    let dir = NodeDirectory::open(tmp.path()).unwrap();
    // A 1 GiB sparse record, locked as a live server would hold it.
    let path = tmp.path().join("big@fz.json");
    let file = File::create(&path).unwrap();
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    file.set_len(1 << 30).unwrap();
    assert!(file.metadata().unwrap().blocks() < 1024, "not sparse");

    let before = peak_rss();
    let d = dir.clone();
    let (all, big) = within(BOUND, "scanning past a sparse record", move || {
        (d.list(), d.lookup("big", "fz"))
    });
    assert!(all.is_empty() && big.is_none(), "{all:?} {big:?}");
    let grown = peak_rss().saturating_sub(before);
    assert!(grown < 256 << 20, "a scan took {grown} bytes");
    // A record just over the limit is skipped as well, one at it is read.
    file.set_len(RECORD_MAX_BYTES + 1).unwrap();
    assert!(dir.lookup("big", "fz").is_none());
    assert!(path.exists(), "a live record is never removed");
}

#[test]
fn a_published_module_replaced_by_a_link_is_refused_and_the_caller_falls_back() {
    let tmp = TempDir::new("ndh-modlink");
    let dir = NodeDirectory::open(tmp.path()).unwrap();
    let served = runtime(&dir, "echo", "b", progs::ECHO);
    let handle = served.serve("echo", &dir, ServeOptions::default()).unwrap();
    let record = handle.record().clone();
    let embed = record.embed.clone().expect("the module is published");
    let published = tmp.path().join(&embed.module_file);
    // First a link to an identical copy, which a reader that followed links
    // would accept (its digest matches); then a link to /dev/zero.
    let copy = tmp.path().join("copy.wasm");
    std::fs::copy(&published, &copy).unwrap();
    std::fs::remove_file(&published).unwrap();
    std::os::unix::fs::symlink(&copy, &published).unwrap();
    let err = dir
        .read_module(&embed, &record.digest, Limits::default().max_module_bytes)
        .unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeError::NotRegularFile {
                kind: "symbolic link",
                ..
            }
        ),
        "{err}"
    );
    std::fs::remove_file(&published).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &published).unwrap();

    let d = dir.clone();
    let (e, digest) = (embed.clone(), record.digest.clone());
    let err = within(BOUND, "reading the published module", move || {
        d.read_module(&e, &digest, Limits::default().max_module_bytes)
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeError::NotRegularFile {
                kind: "symbolic link",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains(&published.display().to_string()),
        "{err}"
    );

    // An embedding caller of the same namespace calls through the socket.
    let d = dir.clone();
    let (mode, answer) = within(BOUND, "calling past the link", move || {
        let caller = Runtime::builder().node_directory(d).build().unwrap();
        let answer = caller.call("b", "echo", b"via the socket").unwrap();
        (caller.hops()[0].mode, answer)
    });
    assert_eq!(
        (mode, answer.as_slice()),
        (Mode::Local, &b"via the socket"[..])
    );
}

#[test]
fn a_module_that_is_not_a_regular_file_or_too_large_is_refused() {
    // A FIFO first: a reader that blocks on it fails here, before /dev/zero.
    let tmp = TempDir::new("ndh-usermod");
    std::fs::create_dir_all(tmp.path()).unwrap();
    let fifo = tmp.path().join("fifo.wasm");
    mkfifo(&fifo);
    let f = fifo.clone();
    let err = within(BOUND, "loading a FIFO", move || {
        Runtime::builder()
            .function(FunctionSpec::new("f", "a", f))
            .build()
            .map(|_| ())
    })
    .unwrap_err();
    assert!(err.to_string().contains("(it is a FIFO)"), "{err}");
    let err = within(BOUND, "loading /dev/zero", || {
        Runtime::builder()
            .function(FunctionSpec::new("z", "a", PathBuf::from("/dev/zero")))
            .build()
            .map(|_| ())
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("/dev/zero is not a regular file (it is a character device)"),
        "{err}"
    );

    let err = Runtime::builder()
        .limits(Limits {
            max_module_bytes: 100,
            ..Limits::default()
        })
        .function(FunctionSpec::new("echo", "a", PathBuf::from(progs::ECHO)))
        .build()
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::FileTooLarge { max: 100, .. }),
        "{err}"
    );

    // A module the user names may be a symbolic link.
    let link = tmp.path().join("echo.wasm");
    std::os::unix::fs::symlink(progs::ECHO, &link).unwrap();
    let rt = Runtime::builder()
        .function(FunctionSpec::new("echo", "a", link))
        .build()
        .unwrap();
    assert_eq!(rt.call("a", "echo", b"x").unwrap(), b"x");
}

#[test]
fn names_and_namespaces_that_are_hidden_or_paths_are_refused() {
    for (name, ns) in [(".hidden", "a"), ("echo", ".hidden"), ("echo", "../../x")] {
        let err = Runtime::builder()
            .function(FunctionSpec::new(name, ns, PathBuf::from(progs::ECHO)))
            .build()
            .map(|_| ())
            .unwrap_err();
        assert!(err.is_configuration(), "{name}@{ns}: {err}");
        assert!(
            err.to_string().contains("not starting with '.'"),
            "{name}@{ns}: {err}"
        );
    }
    let text = "entry = \"a\"\n[functions.a]\nmodule = \"a.wasm\"\nnamespace = \"../../x\"\n";
    let err = Composition::parse(text, Path::new(".")).unwrap_err();
    assert!(
        err.contains("function 'a': invalid namespace '../../x'"),
        "{err}"
    );
}
