//! The kubelet's path: containerd's CRI plugin (in a containerd the test
//! starts, see `test_support::containerd::Containerd::start_cri`) driven
//! through CRI as a kubelet drives it, with the runtime handler `cwasi`. The
//! pod sandbox's pause container is a static Linux program run natively by
//! the shim; the Wasm containers are configured by pod annotations only.
//! Needs root and the Debian packages containerd, runc, gcc and libc6-dev
//! (the README's test command installs them).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cwasi_oci::ImageKind;
use test_programs_artifacts as progs;
use test_support::containerd::Containerd;
use test_support::cri::{api as cri, container_config, pod_config, read_log, CriClient};

const HANDLER: &str = "cwasi";
const TEN_MIB: &str = "10485760";
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn shim() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_containerd-shim-cwasi-v1"))
}

/// Builds an image of a guest program and imports it into `k8s.io`.
fn image(c: &Containerd, module: &str, name: &str) -> String {
    c.import_module(module, &format!("cwasi.test/{name}"), ImageKind::Plain)
}

/// One pod: its sandbox config, id and log directory.
struct Pod {
    config: cri::PodSandboxConfig,
    id: String,
    logs: PathBuf,
}

fn run_pod(c: &Containerd, cri: &mut CriClient, name: &str, annotations: &[(&str, &str)]) -> Pod {
    let logs = c.dir().join("pods").join(name);
    std::fs::create_dir_all(&logs).unwrap();
    let config = pod_config(name, annotations, &logs);
    let id = cri.run_pod(&config, HANDLER);
    let status = cri.pod_status(&id);
    assert_eq!(
        status.state,
        cri::PodSandboxState::SandboxReady as i32,
        "pod {name}: {status:?}"
    );
    Pod { config, id, logs }
}

fn log_of(pod: &Pod, container: &str) -> String {
    read_log(&pod.logs.join(format!("{container}.log")))
}

/// Pids of the processes whose command line is exactly `argv`.
fn processes(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

/// Shim processes started by this containerd (their command line names its
/// socket).
fn shims_of(c: &Containerd) -> Vec<u32> {
    let socket = c.socket().display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let text = String::from_utf8_lossy(&c);
                text.contains("containerd-shim-cwasi-v1") && text.contains(&socket)
            })
        })
        .collect()
}

/// Every file under `dir`, directories left out.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pods_run_through_cri_and_annotations_choose_their_mode() {
    let c = Containerd::start_cri(shim().parent().expect("the shim has a directory"));
    c.import(&test_support::cri::pause_image(c.dir()));
    let hello = image(&c, progs::HELLO, "hello");
    let echo = image(&c, progs::ECHO, "echo");
    let producer = image(&c, progs::PRODUCER, "producer");
    let mut cri = CriClient::connect(&c.socket());

    // A pod with the cwasi handler: its pause container runs natively, and a
    // Wasm container's exit code and logs come back through CRI.
    let pauses_before = processes(&["/pause"]).len();
    let pod = run_pod(&c, &mut cri, "hello", &[]);
    assert_eq!(
        processes(&["/pause"]).len(),
        pauses_before + 1,
        "the sandbox's pause program is not running"
    );
    let config = container_config("hello", &hello, &["3"], &[], &[]);
    let id = cri.start_container(&pod.id, &config, &pod.config);
    let status = cri.wait_exited(&id, RUN_TIMEOUT);
    let log = log_of(&pod, "hello");
    assert_eq!(status.exit_code, 3, "{status:?}\n{log}");
    assert!(
        log.contains("stdout: hello from cwasi args=[\"3\"]"),
        "{log}"
    );
    let mut containers = vec![id];
    let mut pods = vec![pod];

    // Two pods that serve and call each other, told how by annotations only.
    let node = c.dir().join("node");
    std::fs::create_dir_all(&node).unwrap();
    std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mounts = [(node.as_path(), "/run/cwasi")];
    let metrics = format!("127.0.0.1:{}", test_support::free_port());
    let server = run_pod(
        &c,
        &mut cri,
        "echo",
        &[
            ("cwasi.io/namespace", "team-a"),
            ("cwasi.io/serve", "true"),
            ("cwasi.io/metrics-addr", &metrics),
            ("cwasi.io/allow-callers", "team-a/*, team-b/producer"),
        ],
    );
    let config = container_config("echo", &echo, &[], &[], &mounts);
    containers.push(cri.start_container(&server.id, &config, &server.config));
    let record = node.join("echo@team-a.json");
    wait_for("the echo pod registers", RUN_TIMEOUT, || record.exists());
    // containerd copies the container's output into the CRI log on its own
    // time: the line may land after the record.
    let says_it_serves = || log_of(&server, "echo").contains("serving 'echo'");
    wait_for(
        "the echo pod logs that it serves",
        RUN_TIMEOUT,
        says_it_serves,
    );
    let served = log_of(&server, "echo");
    assert!(
        served.contains("serving 'echo' (namespace 'team-a')"),
        "{served}"
    );
    pods.push(server);

    for (name, namespace, mode) in [
        ("caller-same", "team-a", "embedded"),
        ("caller-other", "team-b", "local"),
    ] {
        let pod = run_pod(
            &c,
            &mut cri,
            name,
            &[
                ("cwasi.io/namespace", namespace),
                ("cwasi.io/explain", "true"),
            ],
        );
        let config = container_config(
            "producer",
            &producer,
            &[TEN_MIB, "echo", "echo"],
            &[],
            &mounts,
        );
        let id = cri.start_container(&pod.id, &config, &pod.config);
        let status = cri.wait_exited(&id, RUN_TIMEOUT);
        let log = log_of(&pod, "producer");
        assert_eq!(status.exit_code, 0, "{name}: {status:?}\n{log}");
        assert!(log.contains(&format!("ok size={TEN_MIB}")), "{name}: {log}");
        assert!(
            log.contains(&format!("producer -> echo: {mode} (")),
            "{name}: expected {mode}: {log}"
        );
        containers.push(id);
        pods.push(pod);
    }
    // A pod of team-c: the serving pod's policy (its annotation) has no
    // rule for it, so its call is denied, naming the caller and the rules.
    let pod = run_pod(
        &c,
        &mut cri,
        "caller-denied",
        &[("cwasi.io/namespace", "team-c")],
    );
    let config = container_config("producer", &producer, &["64", "echo", "echo"], &[], &mounts);
    let id = cri.start_container(&pod.id, &config, &pod.config);
    let status = cri.wait_exited(&id, RUN_TIMEOUT);
    let log = log_of(&pod, "producer");
    assert_eq!(status.exit_code, 2, "{status:?}\n{log}");
    assert!(
        log.contains("error code=-6")
            && log.contains("caller team-c/producer@")
            && log.contains("its policy allows only team-a/*, team-b/producer"),
        "{log}"
    );
    containers.push(id);
    pods.push(pod);

    // The serving pod's metrics (its annotation asked for them, on the host
    // network): the local call of caller-other.
    let (status, body) = test_support::prometheus::http_get(metrics.parse().unwrap(), "/metrics")
        .expect("the echo pod serves its metrics");
    assert_eq!(status, 200, "{body}");
    let served =
        "cwasi_served_calls_total{function=\"echo\",namespace=\"team-a\",mode=\"local\"} 1";
    assert!(body.contains(served), "{body}");

    // Deleting the pods as a kubelet does (each container stopped with a
    // grace period, then the sandbox) leaves no record, socket or process
    // behind.
    for id in &containers {
        cri.stop_container(id, 10);
    }
    for pod in &pods {
        cri.remove_pod(&pod.id);
    }
    let (left_pods, left_containers) = cri.records();
    assert!(left_pods.is_empty(), "pods left: {left_pods:?}");
    assert!(
        left_containers.is_empty(),
        "containers left: {left_containers:?}"
    );
    let left: Vec<_> = walk(&node);
    assert!(left.is_empty(), "left in the node directory: {left:?}");
    wait_for(
        "every shim of the test exits",
        Duration::from_secs(30),
        || shims_of(&c).is_empty(),
    );
    assert_eq!(
        processes(&["/pause"]).len(),
        pauses_before,
        "a pause process is left"
    );
    for id in pods.iter().map(|p| &p.id).chain(&containers) {
        let state = Path::new("/run/containerd/cwasi/k8s.io").join(id);
        assert!(!state.exists(), "container state left: {}", state.display());
    }
}
