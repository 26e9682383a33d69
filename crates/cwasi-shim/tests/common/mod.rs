//! Helpers shared by the shim's end-to-end tests: a containerd of the
//! test's own, images, node directories and `ctr run` of a container that
//! runs or serves.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use cwasi_oci::ImageKind;
use test_support::containerd::Containerd;

/// The runtime name containerd knows the shim by.
pub const RUNTIME: &str = "io.containerd.cwasi.v1";

pub fn start_containerd() -> Containerd {
    let shim = Path::new(env!("CARGO_BIN_EXE_containerd-shim-cwasi-v1"));
    Containerd::start(shim.parent().expect("the shim has a directory"))
}

/// Builds an image of a guest program and imports it; returns its reference.
pub fn image(c: &Containerd, module: &str, name: &str, kind: ImageKind) -> String {
    c.import_module(module, name, kind)
}

/// A node directory on the host (0700), to bind-mount at /run/cwasi.
pub fn node_dir(c: &Containerd, name: &str) -> PathBuf {
    let dir = c.dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// The `ctr run --mount` of node directory `dir` at /run/cwasi.
pub fn mount(dir: &Path) -> String {
    format!(
        "type=bind,src={},dst=/run/cwasi,options=rbind:rw",
        dir.display()
    )
}

/// `ctr run --rm` in the foreground: its output and exit status.
pub fn run(c: &Containerd, id: &str, opts: &[&str], image: &str, args: &[&str]) -> Output {
    c.track(id);
    let mut all = vec!["run", "--rm", "--runtime", RUNTIME];
    all.extend_from_slice(opts);
    all.push(image);
    all.push(id);
    all.extend_from_slice(args);
    c.ctr_output(&all)
}

/// `ctr run -d` of a serving container; waits until its record is in `dir`.
pub fn serve(c: &Containerd, id: &str, opts: &[&str], image: &str, dir: &Path, record: &str) {
    serve_within(c, id, opts, image, dir, record, Duration::from_secs(20));
}

/// [`serve`], waiting up to `limit` for the record (a component that
/// compiles first: a Python interpreter takes tens of seconds in a debug
/// build on two busy cores).
pub fn serve_within(
    c: &Containerd,
    id: &str,
    opts: &[&str],
    image: &str,
    dir: &Path,
    record: &str,
    limit: Duration,
) {
    c.track(id);
    let log = format!("file://{}", c.dir().join(format!("{id}.log")).display());
    let mut all = vec![
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--log-uri",
        &log,
        "--env",
        "CWASI_SERVE=true",
    ];
    all.extend_from_slice(opts);
    all.push(image);
    all.push(id);
    let out = c.ctr_output(&all);
    assert!(out.status.success(), "ctr run -d {id}: {}", text(&out));
    // `<name>@<namespace>.json`; the node directory may name the file
    // otherwise (a name with `_` gets a suffix), so it is asked.
    let (name, namespace) = record
        .trim_end_matches(".json")
        .split_once('@')
        .expect("a record is <name>@<namespace>.json");
    let live = || {
        cwasi_runtime::NodeDirectory::open(dir)
            .ok()
            .and_then(|d| d.lookup(name, namespace))
            .is_some()
    };
    let deadline = Instant::now() + limit;
    while !live() {
        assert!(
            Instant::now() < deadline,
            "{id} did not register {name} of {namespace} in {}; its log: {}",
            dir.display(),
            std::fs::read_to_string(c.dir().join(format!("{id}.log"))).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A finished `ctr`'s exit status and output, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
