//! End to end through a real containerd (started by the test, see
//! `test_support::containerd`): Wasm images imported with `ctr`, run by
//! `containerd-shim-cwasi-v1`, and calls between containers in the three
//! modes. Needs root and the Debian packages containerd and runc (the
//! README's test command installs them).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use cwasi_oci::ImageKind;
use test_programs_artifacts as progs;
use test_support::containerd::Containerd;
use test_support::RedisServer;

mod common;

use common::{image, mount, node_dir, run, serve, serve_within, start_containerd, text};

const TEN_MIB: &str = "10485760";

/// Asserts a producer container sent 10 MiB and got it back intact, over
/// `mode` as the shim's explain output says.
fn assert_intact_over(out: &Output, mode: &str) {
    let all = text(out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("ok size={TEN_MIB}")),
        "{all}"
    );
    assert!(
        all.contains(&format!("producer -> echo: {mode} (")),
        "expected mode {mode}: {all}"
    );
}

#[test]
fn a_wasi_hello_world_runs_and_its_exit_code_comes_back() {
    let c = start_containerd();
    let hello = image(&c, progs::HELLO, "hello", ImageKind::Plain);

    let out = run(&c, "hello-0", &[], &hello, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from cwasi args=[]"));

    let out = run(&c, "hello-3", &[], &hello, &["/hello.wasm", "3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("args=[\"3\"]"));

    // The container's own annotations (`ctr run --annotation`) are read: a
    // bad value refuses to run, naming the annotation; an unknown key is
    // reported.
    let bad = ["--annotation", "cwasi.io/serve=maybe"];
    let out = run(&c, "hello-bad-annotation", &bad, &hello, &[]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out));
    assert!(
        text(&out).contains("annotation cwasi.io/serve=maybe: expected true or false"),
        "{}",
        text(&out)
    );
    let typo = ["--annotation", "cwasi.io/srve=true"];
    let out = run(&c, "hello-typo-annotation", &typo, &hello, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("warning: unknown annotation cwasi.io/srve ignored"),
        "{}",
        text(&out)
    );

    // The Wasm artifact layout: the module is an application/wasm layer,
    // read from the content store, not from the (empty) rootfs.
    let artifact = image(&c, progs::HELLO, "hello-artifact", ImageKind::WasmLayer);
    let out = run(
        &c,
        "hello-artifact",
        &["--platform", "wasip1/wasm"],
        &artifact,
        &["/hello.wasm", "5"],
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from cwasi"));
}

#[test]
fn component_images_serve_and_run() {
    let c = start_containerd();
    // A component serving its handler (`cwasi:function/handler`), and a
    // component entry (`wasi:cli/run`) calling it from another namespace.
    // Both are plain images: the containerd 1.6 of Debian 12 cannot import
    // an image whose layer has the component media type (it has no stream
    // processor for it), so the `--wasm-layer` kind of a component is
    // checked in cwasi-oci only.
    let upper = image(&c, progs::UPPER, "upper", ImageKind::Plain);
    let entry = image(&c, progs::COMPONENT_ENTRY, "entry", ImageKind::Plain);
    let node = node_dir(&c, "node");
    let m = mount(&node);
    let served = ["--mount", &m, "--env", "CWASI_NAMESPACE=team-a"];
    serve(&c, "upper-a", &served, &upper, &node, "upper@team-a.json");
    let opts = [
        "--mount",
        &m,
        "--env",
        "CWASI_NAMESPACE=team-b",
        "--env",
        "CWASI_EXPLAIN=1",
    ];
    let args = ["/component_entry.wasm", "upper", "hello, components"];
    let out = run(&c, "entry-b", &opts, &entry, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        "HELLO, COMPONENTS",
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("-> upper: local ("), "{}", text(&out));
    // A failed call is the entry's failure: exit code 1 and the call-error.
    let args = ["/component_entry.wasm", "nobody", "x"];
    let out = run(&c, "entry-lost", &opts, &entry, &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("UnknownFunction"), "{}", text(&out));
}

#[test]
fn mounted_directories_are_preopened_but_the_node_directory_is_not() {
    let c = start_containerd();
    let hello = image(&c, progs::HELLO, "hello", ImageKind::Plain);
    let data = c.dir().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("msg.txt"), "mounted text\n").unwrap();
    let node = node_dir(&c, "node");
    std::fs::write(node.join("secret.json"), "{}").unwrap();
    let data_mount = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        data.display()
    );
    let node_mount = mount(&node);
    let out = run(
        &c,
        "preopens",
        &["--mount", &data_mount, "--mount", &node_mount],
        &hello,
        &[
            "/hello.wasm",
            "0",
            "/data/msg.txt",
            "/run/cwasi/secret.json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("file /data/msg.txt: mounted text"),
        "{}",
        text(&out)
    );
    assert!(
        stdout.contains("file /run/cwasi/secret.json: error"),
        "the node directory must stay out of the guest's reach: {}",
        text(&out)
    );
}

#[test]
fn broken_images_give_a_clear_error_and_containerd_stays_healthy() {
    let c = start_containerd();
    let hello = image(&c, progs::HELLO, "hello", ImageKind::Plain);

    // An image whose entrypoint names no .wasm in it.
    let out = run(&c, "no-wasm", &[], &hello, &["/missing.wasm"]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out));
    assert!(
        text(&out).contains("cannot read the module /missing.wasm"),
        "{}",
        text(&out)
    );

    // A corrupt module: the Wasm header, then garbage.
    let corrupt = c.dir().join("corrupt.wasm");
    std::fs::write(&corrupt, b"\0asm\x01\0\0\0this is not a module").unwrap();
    let corrupt = image(&c, corrupt.to_str().unwrap(), "corrupt", ImageKind::Plain);
    let out = run(&c, "corrupt", &[], &corrupt, &[]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out));
    assert!(
        text(&out).contains("is not a valid WebAssembly module"),
        "{}",
        text(&out)
    );

    assert!(c.healthy(), "containerd stopped answering");
    let out = run(&c, "after", &[], &hello, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn calls_between_containers_take_the_mode_their_placement_allows() {
    let c = start_containerd();
    let echo = image(&c, progs::ECHO, "echo", ImageKind::Plain);
    let producer = image(&c, progs::PRODUCER, "producer", ImageKind::Plain);
    let node1 = node_dir(&c, "node1");
    let node2 = node_dir(&c, "node2");
    let m1 = mount(&node1);
    let m2 = mount(&node2);
    let call = ["/producer.wasm", TEN_MIB, "echo", "echo"];

    // Without CWASI_NAMESPACE, the containerd namespace is the function's.
    serve(
        &c,
        "echo-default-ns",
        &["--mount", &m1],
        &echo,
        &node1,
        &format!("echo@{}.json", c.namespace()),
    );
    c.remove("echo-default-ns");

    serve(
        &c,
        "echo-a",
        &["--mount", &m1, "--env", "CWASI_NAMESPACE=team-a"],
        &echo,
        &node1,
        "echo@team-a.json",
    );
    // Same namespace: the callee's module is loaded from the node directory
    // and runs in the caller's VM.
    let opts = [
        "--mount",
        &m1,
        "--env",
        "CWASI_NAMESPACE=team-a",
        "--env",
        "CWASI_EXPLAIN=1",
    ];
    let out = run(&c, "caller-a", &opts, &producer, &call);
    assert_intact_over(&out, "embedded");

    // Another namespace: through the socket, in separate VMs.
    let opts = [
        "--mount",
        &m1,
        "--env",
        "CWASI_NAMESPACE=team-b",
        "--env",
        "CWASI_EXPLAIN=1",
    ];
    let out = run(&c, "caller-b", &opts, &producer, &call);
    assert_intact_over(&out, "local");

    // The callee on a second node (its own node directory and name), found
    // through the cluster registry in Redis.
    c.remove("echo-a");
    let redis = RedisServer::start();
    let url = format!("CWASI_REDIS_URL={}", redis.url());
    let node2_opts = [
        "--net-host",
        "--mount",
        &m2,
        "--env",
        "CWASI_NAMESPACE=team-a",
        "--env",
        "CWASI_NODE=node2",
        "--env",
        &url,
    ];
    serve(
        &c,
        "echo-node2",
        &node2_opts,
        &echo,
        &node2,
        "echo@team-a.json",
    );
    let opts = [
        "--net-host",
        "--mount",
        &m1,
        "--env",
        "CWASI_NAMESPACE=team-a",
        "--env",
        "CWASI_NODE=node1",
        "--env",
        &url,
        "--env",
        "CWASI_EXPLAIN=1",
    ];
    let out = run(&c, "caller-remote", &opts, &producer, &call);
    assert_intact_over(&out, "remote-broker");
    assert!(
        text(&out).contains("served on node(s) node2"),
        "{}",
        text(&out)
    );

    // The same callee with a data address (CWASI_LISTEN): called directly.
    c.remove("echo-node2");
    let listen = format!("CWASI_LISTEN=127.0.0.1:{}", test_support::free_port());
    let direct_node2_opts = [
        &node2_opts[..],
        &["--env", &listen, "--env", "CWASI_DIRECT_PLAIN=1"],
    ]
    .concat();
    serve(
        &c,
        "echo-node2-direct",
        &direct_node2_opts,
        &echo,
        &node2,
        "echo@team-a.json",
    );
    let direct_opts: Vec<&str> = opts
        .iter()
        .copied()
        .chain(["--env", "CWASI_DIRECT_PLAIN=1"])
        .collect();
    let out = run(&c, "caller-direct", &direct_opts, &producer, &call);
    assert_intact_over(&out, "remote-direct");
    assert!(
        text(&out).contains("reachable directly: node 'node2' at tcp://127.0.0.1:"),
        "{}",
        text(&out)
    );
}

#[test]
fn stopping_a_serving_container_unregisters_it() {
    let c = start_containerd();
    let echo = image(&c, progs::ECHO, "echo", ImageKind::Plain);
    let producer = image(&c, progs::PRODUCER, "producer", ImageKind::Plain);
    let node = node_dir(&c, "node");
    let m = mount(&node);
    let record = node.join("echo@team-a.json");
    let socket = node.join("echo@team-a.sock");
    let caller = ["--mount", m.as_str(), "--env", "CWASI_NAMESPACE=team-b"];
    let call = ["/producer.wasm", "1024", "echo", "echo"];

    // `ctr task kill` (SIGTERM): the server removes its record and socket.
    let opts = ["--mount", m.as_str(), "--env", "CWASI_NAMESPACE=team-a"];
    serve(&c, "echo-term", &opts, &echo, &node, "echo@team-a.json");
    assert!(socket.exists());
    let out = c.ctr_output(&["task", "kill", "echo-term"]);
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(20);
    while record.exists() || socket.exists() {
        assert!(Instant::now() < deadline, "record or socket left behind");
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let out = run(&c, "after-term", &caller, &producer, &call);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("error code=-1") && stdout.contains("'echo' not found"),
        "{}",
        text(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(30), "the call hung");
    c.remove("echo-term");

    // SIGKILL and delete: nothing runs to clean up; the stale record is
    // recognised (its lock is free), ignored and removed by the next caller.
    serve(&c, "echo-kill", &opts, &echo, &node, "echo@team-a.json");
    let out = c.ctr_output(&["task", "kill", "-s", "SIGKILL", "echo-kill"]);
    assert!(out.status.success(), "{}", text(&out));
    c.remove("echo-kill");
    let out = run(&c, "after-kill", &caller, &producer, &call);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("'echo' not found"),
        "{}",
        text(&out)
    );
    assert!(!record.exists(), "the stale record was not removed");
    assert!(!socket.exists(), "the stale socket was not removed");
}

/// Calls `name` of `namespace` served in the node directory `dir`, from
/// this process, as `cwasi call` does (the served instance itself, never an
/// embedded copy).
fn call_served(dir: &Path, namespace: &str, name: &str, request: &[u8]) -> Vec<u8> {
    let runtime = cwasi_runtime::Runtime::builder()
        .embed_served(false)
        .node_directory(cwasi_runtime::NodeDirectory::open(dir).expect("the node directory"))
        .build()
        .expect("a runtime");
    runtime
        .call(namespace, name, request)
        .unwrap_or_else(|e| panic!("calling {name}: {e}"))
}

/// The compiled files in the node's compile cache: (name, inode).
fn cache_entries(c: &Containerd) -> Vec<(String, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let dir = c.dir().join("compiled");
    let mut out: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no compile cache at {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".cwasm"))
        .map(|e| {
            let ino = e.metadata().unwrap().ino();
            (e.file_name().to_string_lossy().into_owned(), ino)
        })
        .collect();
    out.sort();
    out
}

/// How long the first start of a Python component may take to compile.
const COMPILE_LIMIT: Duration = Duration::from_secs(300);

/// A Python component (an interpreter of some 18 MB) compiles once per
/// node: the shim keeps the node's compile cache outside every container
/// (here the test containerd's `CWASI_NODE_COMPILE_CACHE`), so the second
/// container loads what the first compiled. Prints both times from
/// `ctr run -d` to the first answer.
#[test]
fn a_component_compiles_once_per_node() {
    let c = start_containerd();
    let py = image(
        &c,
        test_programs_componentize::PY_TRANSFORM,
        "py_transform",
        ImageKind::Plain,
    );
    let node = node_dir(&c, "node");
    let m = mount(&node);
    // The module's file name carries a build hash: the function is named.
    let opts = [
        "--mount",
        m.as_str(),
        "--env",
        "CWASI_NAMESPACE=team-a",
        "--env",
        "CWASI_FUNCTION=py_transform",
    ];
    let request = b"compiled once".to_vec();
    let expected: Vec<u8> = request.iter().map(|b| b ^ 0xA5).collect();
    let mut times = Vec::new();
    let mut entries = Vec::new();
    for id in ["py-first", "py-second"] {
        let started = Instant::now();
        let record = "py_transform@team-a.json";
        serve_within(&c, id, &opts, &py, &node, record, COMPILE_LIMIT);
        let answer = call_served(&node, "team-a", "py_transform", &request);
        times.push(started.elapsed());
        assert_eq!(answer, expected, "{id}");
        entries.push(cache_entries(&c));
        c.remove(id);
    }
    eprintln!(
        "python component, from `ctr run -d` to the first answer: first start {:?} \
         (compiles), second start {:?} (from the node's compile cache)",
        times[0], times[1]
    );
    assert_eq!(
        entries[0].len(),
        1,
        "one compiled component: {:?}",
        entries[0]
    );
    assert!(
        entries[0][0].0.ends_with(".cwasm-component"),
        "{:?}",
        entries[0]
    );
    // Loaded, not compiled and stored again (a store renames a new file
    // over the entry).
    assert_eq!(
        entries[1], entries[0],
        "the second container compiled again"
    );
    // Nothing of it in the container: the guests see no cache.
    assert!(!node.join("compiled").exists());
}

/// A container that mounts a node directory that does not exist, or that
/// others can enter, is refused by the shim with the directory named,
/// before containerd's own "failed to prepare rootfs".
#[test]
fn a_missing_node_directory_is_named() {
    let c = start_containerd();
    let hello = image(&c, progs::HELLO, "hello", ImageKind::Plain);
    let missing = c.dir().join("no-such-node-dir");
    let m = mount(&missing);
    let out = run(&c, "missing-node-dir", &["--mount", &m], &hello, &[]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let want = format!("the node directory {} does not exist", missing.display());
    assert!(text(&out).contains(&want), "{}", text(&out));
    assert!(text(&out).contains("install -d -m 0700"), "{}", text(&out));

    let open = c.dir().join("open-node-dir");
    std::fs::create_dir_all(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let m = mount(&open);
    let out = run(&c, "open-node-dir", &["--mount", &m], &hello, &[]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("has mode 755; it must be 0700"),
        "{}",
        text(&out)
    );
    assert!(c.healthy(), "containerd stopped answering");
}
