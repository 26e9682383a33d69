//! The real `cwasi` binary against files others put in the node directory
//! (any container that mounts it can): a live record copied under another
//! name, a server whose socket file was removed, a FIFO where a record
//! would be, a module that is a device, and names that are hidden or paths.
//! Every process runs under a time limit, so a regression fails the test.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{cwasi, function, Output, Scratch, Server};
use test_programs_artifacts as progs;

/// How long one `cwasi` command may take here; far above what it needs.
const QUICK: Duration = Duration::from_secs(30);

fn call(dir: &Path, name: &str, data: &str) -> Output {
    cwasi(
        &[
            "call",
            name,
            "--namespace",
            "fz",
            "--data",
            data,
            "--runtime-dir",
            dir.to_str().unwrap(),
        ],
        QUICK,
    )
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

#[test]
fn a_live_record_copied_under_another_name_leaves_the_server_reachable() {
    let scratch = Scratch::new("ndh-copy");
    let dir = scratch.0.join("node");
    let _echo = Server::start(&dir, progs::ECHO, "echo", "fz", &[], &[]);
    std::fs::copy(dir.join("echo@fz.json"), dir.join("x@fz.json")).unwrap();

    let out = call(&dir, "x", "hi");
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(
        out.stderr.contains("function 'x' not found"),
        "{}",
        out.stderr
    );
    assert!(
        dir.join("echo@fz.sock").exists(),
        "echo's socket was removed"
    );
    let out = call(&dir, "echo", "still here");
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "still here"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_server_whose_socket_file_is_gone_stops_on_sigterm() {
    let scratch = Scratch::new("ndh-nosock");
    let dir = scratch.0.join("node");
    let mut echo = Server::start(&dir, progs::ECHO, "echo", "fz", &[], &[]);
    std::fs::remove_file(dir.join("echo@fz.sock")).unwrap();
    let status = echo
        .terminate_within(QUICK)
        .expect("cwasi serve did not stop on SIGTERM");
    assert!(status.success(), "{status}");
    assert!(!dir.join("echo@fz.json").exists(), "its record is left");
}

#[test]
fn a_fifo_in_the_node_directory_blocks_neither_call_nor_serve() {
    let scratch = Scratch::new("ndh-fifo");
    let dir = scratch.0.join("node");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    mkfifo(&dir.join("f@fz.json"));

    let out = call(&dir, "nobody", "");
    assert!(
        out.stderr.contains("function 'nobody' not found"),
        "{}",
        out.stderr
    );
    // `serve` scans the directory at start-up; `Server::start` waits (with
    // a limit) until it has registered.
    let mut echo = Server::start(&dir, progs::ECHO, "echo", "fz", &[], &[]);
    let out = call(&dir, "echo", "through");
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "through"),
        "{}",
        out.stderr
    );
    let status = echo
        .terminate_within(QUICK)
        .expect("cwasi serve did not stop on SIGTERM");
    assert!(status.success(), "{status}");
}

#[test]
fn a_composition_module_that_is_not_a_regular_file_is_refused_quickly() {
    let scratch = Scratch::new("ndh-devzero");
    let fifo = scratch.0.join("fifo.wasm");
    mkfifo(&fifo);
    // The FIFO first: a reader that blocks on it fails here, before the
    // case that would use unbounded memory.
    for (module, kind) in [
        (fifo.to_str().unwrap(), "FIFO"),
        ("/dev/zero", "character device"),
    ] {
        let toml = format!("entry = \"a\"\n{}", function("a", module, ""));
        let file = scratch.write("c.toml", &toml);
        let out = cwasi(&["run", &file], QUICK);
        assert_ne!(out.code, Some(0), "{module}");
        assert!(
            out.stderr
                .contains(&format!("{module} is not a regular file (it is a {kind})")),
            "{module}: {}",
            out.stderr
        );
    }
}

#[test]
fn hidden_names_and_path_namespaces_are_refused() {
    let scratch = Scratch::new("ndh-names");
    let dir = scratch.0.join("node");
    let out = cwasi(
        &[
            "serve",
            progs::ECHO,
            "--name",
            ".hidden",
            "--runtime-dir",
            dir.to_str().unwrap(),
        ],
        QUICK,
    );
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains("invalid function name '.hidden'")
            && out.stderr.contains("not starting with '.'"),
        "{}",
        out.stderr
    );
    let toml = format!(
        "entry = \"a\"\n{}",
        function("a", progs::ECHO, "namespace = \"../../x\"")
    );
    let file = scratch.write("ns.toml", &toml);
    let out = cwasi(&["run", &file], QUICK);
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr
            .contains("function 'a': invalid namespace '../../x'"),
        "{}",
        out.stderr
    );
}
