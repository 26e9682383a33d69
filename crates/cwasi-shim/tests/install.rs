//! The installable artifacts: `scripts/split-debug.sh` (what
//! `scripts/dist.sh` runs on each release binary) and the one install step
//! of a node, `deploy/install-node.sh`, into a scratch host root, followed
//! by a containerd (started by the test) that runs with what it wrote. Needs
//! root, binutils (objcopy, readelf), containerd, runc, gcc and libc6-dev.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cwasi_oci::ImageKind;
use test_programs_artifacts as progs;
use test_support::containerd::{install_node, Containerd};
use test_support::cri::{
    api as cri_api, container_config, pause_image, pod_config, read_log, CriClient,
};
use test_support::process::output_within;

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-cwasi-v1");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// Runs a command to completion within a minute; its stdout and stderr.
fn run(cmd: &mut Command) -> String {
    let what = format!("{cmd:?}");
    let out = output_within(cmd, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("{what} did not finish within a minute"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed: {text}");
    text
}

/// The section names of an ELF file.
fn sections(file: &Path) -> Vec<String> {
    run(Command::new("readelf").args(["-S", "--wide"]).arg(file))
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let rest = l.strip_prefix('[')?.split_once(']')?.1;
            rest.split_whitespace().next().map(str::to_string)
        })
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn binaries_are_stripped_with_their_debug_info_kept_apart() {
    let scratch = std::env::temp_dir().join(format!("cwasi-split-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(scratch.join("bin")).unwrap();
    std::fs::copy(SHIM, scratch.join("bin/containerd-shim-cwasi-v1")).unwrap();
    // Relative paths, as scripts/dist.sh passes them.
    run(Command::new(repo("scripts/split-debug.sh"))
        .args(["bin/containerd-shim-cwasi-v1", "dist"])
        .current_dir(&scratch));
    let out = scratch.join("dist");
    let stripped = out.join("containerd-shim-cwasi-v1");
    let debug = out.join("containerd-shim-cwasi-v1.debug");

    let original = std::fs::metadata(SHIM).unwrap().len();
    let size = std::fs::metadata(&stripped).unwrap().len();
    assert!(size < original, "{size} bytes stripped of {original}");
    let kept = sections(&stripped);
    assert!(
        !kept
            .iter()
            .any(|s| [".debug_info", ".debug_line", ".symtab", ".strtab"].contains(&s.as_str())),
        "the stripped binary still has {kept:?}"
    );
    assert!(kept.iter().any(|s| s == ".gnu_debuglink"), "{kept:?}");
    let split = sections(&debug);
    assert!(split.iter().any(|s| s == ".debug_line"), "{split:?}");
    assert_eq!(mode(&stripped), 0o755);

    // The stripped shim still runs.
    let version = run(Command::new(&stripped).arg("-v"));
    assert!(version.contains("Runtime: cwasi"), "{version}");
    std::fs::remove_dir_all(&scratch).unwrap();
}

/// The config Debian 12's containerd 1.6.20 package installs as
/// `/etc/containerd/config.toml`.
const DEBIAN_CONFIG: &str = "version = 2

[plugins]
  [plugins.\"io.containerd.grpc.v1.cri\"]
    [plugins.\"io.containerd.grpc.v1.cri\".cni]
      bin_dir = \"/usr/lib/cni\"
      conf_dir = \"/etc/cni/net.d\"
  [plugins.\"io.containerd.internal.v1.opt\"]
    path = \"/var/lib/containerd/opt\"
";

/// Every file directly in `dir` whose name starts with `prefix`.
fn files_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    out.sort();
    out
}

/// The node install step on three starting nodes (Debian's stock config, an
/// empty file, no file): containerd starts with what it wrote, its CRI
/// plugin loads, and both a runc pod and a cwasi pod run through CRI, the
/// cwasi pod's Wasm container with the node directory the installer made.
/// A second run changes nothing.
#[test]
fn the_node_install_keeps_containerd_and_its_cri_plugin_whole() {
    let shim_dir = Path::new(SHIM).parent().unwrap();
    for (case, start) in [
        ("debian", Some(DEBIAN_CONFIG)),
        ("empty", Some("")),
        ("none", None),
    ] {
        let scratch =
            std::env::temp_dir().join(format!("cwasi-install-{}-{case}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        let root = scratch.join("root");
        let etc = root.join("etc/containerd");
        std::fs::create_dir_all(&etc).unwrap();
        let path = etc.join("config.toml");
        if let Some(text) = start {
            std::fs::write(&path, text).unwrap();
        }

        let said = install_node(shim_dir, &root);
        eprintln!("{case}: install-node.sh said:\n{said}");
        let shim = root.join("usr/local/bin/containerd-shim-cwasi-v1");
        assert_eq!(std::fs::read(&shim).unwrap(), std::fs::read(SHIM).unwrap());
        assert_eq!(mode(&shim), 0o755);
        assert_eq!(mode(&root.join("run/cwasi")), 0o700);
        assert_eq!(mode(&root.join("var/lib/cwasi")), 0o700);
        let tmpfiles = std::fs::read_to_string(root.join("etc/tmpfiles.d/cwasi.conf")).unwrap();
        assert!(
            tmpfiles.contains("\nd /run/cwasi 0700 root root -\n"),
            "{tmpfiles}"
        );
        assert!(
            said.contains("added the default runtime `runc`"),
            "{case}: {said}"
        );
        assert!(
            said.contains("registered the `cwasi` runtime"),
            "{case}: {said}"
        );
        assert!(
            said.contains("restart containerd"),
            "{case}: a changed config asks for a restart: {said}"
        );
        assert!(
            said.contains("ctr plugins ls"),
            "{case}: no way to check the install: {said}"
        );
        let written = std::fs::read_to_string(&path).unwrap();
        let backups = files_starting(&etc, "config.toml.cwasi-backup-");
        match start {
            Some(text) => {
                assert_eq!(backups.len(), 1, "{case}: {backups:?}");
                assert_eq!(std::fs::read_to_string(&backups[0]).unwrap(), text);
                assert!(
                    written.starts_with(text.trim_end()),
                    "{case}: the node's config was rewritten:\n{written}"
                );
            }
            None => assert!(backups.is_empty(), "{case}: {backups:?}"),
        }

        // Again: nothing changes, nothing is backed up, containerd is left
        // alone.
        let again = install_node(shim_dir, &root);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), written, "{case}");
        assert_eq!(
            files_starting(&etc, "config.toml.cwasi-backup-"),
            backups,
            "{case}"
        );
        assert!(again.contains("nothing changed"), "{case}: {again}");
        assert!(!again.contains("restart"), "{case}: {again}");

        // containerd runs with what the installer wrote.
        let c = Containerd::start_node(&root);
        let plugins = c.ctr_output(&["plugins", "ls", "id==cri"]);
        let listed = String::from_utf8_lossy(&plugins.stdout).into_owned();
        assert!(plugins.status.success(), "{case}: {listed}");
        let cri_line = listed
            .lines()
            .find(|l| l.starts_with("io.containerd.grpc.v1") && l.contains(" cri "))
            .unwrap_or_else(|| panic!("{case}: no cri plugin listed: {listed}"));
        assert!(
            cri_line.trim_end().ends_with("ok"),
            "{case}: the CRI plugin did not load: {cri_line}"
        );

        c.import(&pause_image(c.dir()));
        let hello = cri_image(&c, progs::HELLO, "hello");
        let mut cri = CriClient::connect(&c.socket());
        // A pod without a RuntimeClass: the default runtime, runc.
        let logs = c.dir().join("pods");
        std::fs::create_dir_all(&logs).unwrap();
        let runc_pod = cri.run_pod(&pod_config("native", &[], &logs), "");
        assert_ready(&mut cri, &runc_pod, case);
        // A cwasi pod, and a Wasm container in it with the node directory
        // the installer made.
        let config = pod_config("wasm", &[], &logs);
        let wasm_pod = cri.run_pod(&config, "cwasi");
        assert_ready(&mut cri, &wasm_pod, case);
        let node_dir = root.join("run/cwasi");
        let mounts = [(node_dir.as_path(), "/run/cwasi")];
        let container = container_config("hello", &hello, &["4"], &[], &mounts);
        let id = cri.start_container(&wasm_pod, &container, &config);
        let status = cri.wait_exited(&id, Duration::from_secs(120));
        let log = read_log(&logs.join("hello.log"));
        assert_eq!(status.exit_code, 4, "{case}: {status:?}\n{log}");
        assert!(log.contains("hello from cwasi"), "{case}: {log}");
        cri.stop_container(&id, 10);
        for pod in [&runc_pod, &wasm_pod] {
            cri.remove_pod(pod);
        }
        drop(c);
        std::fs::remove_dir_all(&scratch).unwrap();
    }
}

fn assert_ready(cri: &mut CriClient, pod: &str, case: &str) {
    let status = cri.pod_status(pod);
    assert_eq!(
        status.state,
        cri_api::PodSandboxState::SandboxReady as i32,
        "{case}: {status:?}"
    );
}

/// A plain image of a guest program, imported into `k8s.io`.
fn cri_image(c: &Containerd, module: &str, name: &str) -> String {
    c.import_module(module, &format!("cwasi.test/{name}"), ImageKind::Plain)
}
