//! The installable artifacts: `scripts/split-debug.sh` (what
//! `scripts/dist.sh` runs on each release binary) and the one install step
//! of a node, `deploy/install-node.sh`, into a scratch host root. Needs
//! binutils (objcopy, readelf).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use test_support::process::output_within;

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-cwasi-v1");
const ANNOTATIONS: [&str; 2] = ["cwasi.io/*", "cwasi.secondary.function"];

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

/// The `cwasi` runtime entry of a containerd config.
fn cwasi_runtime<'a>(config: &'a toml::Table, plugin: &str) -> &'a toml::Table {
    config["plugins"][plugin]["containerd"]["runtimes"]["cwasi"]
        .as_table()
        .unwrap_or_else(|| panic!("no cwasi runtime under {plugin}: {config:#?}"))
}

fn annotations(entry: &toml::Table) -> Vec<&str> {
    entry["pod_annotations"]
        .as_array()
        .expect("pod_annotations")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
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

#[test]
fn the_node_install_step_installs_the_binaries_and_the_runtime_entry() {
    let scratch = std::env::temp_dir().join(format!("cwasi-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let (dist, root) = (scratch.join("dist"), scratch.join("root"));
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(SHIM, dist.join("containerd-shim-cwasi-v1")).unwrap();
    let install = || {
        run(Command::new(repo("deploy/install-node.sh"))
            .arg(&dist)
            .arg(&root))
    };

    // A node without a containerd config: one is written (version 2).
    let said = install();
    let shim = root.join("usr/local/bin/containerd-shim-cwasi-v1");
    assert_eq!(std::fs::read(&shim).unwrap(), std::fs::read(SHIM).unwrap());
    assert_eq!(mode(&shim), 0o755);
    assert_eq!(mode(&root.join("run/cwasi")), 0o700);
    let path = root.join("etc/containerd/config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config: toml::Table = text.parse().unwrap_or_else(|e| panic!("{e}: {text}"));
    let entry = cwasi_runtime(&config, "io.containerd.grpc.v1.cri");
    assert_eq!(
        entry["runtime_type"].as_str(),
        Some("io.containerd.cwasi.v1")
    );
    assert_eq!(annotations(entry), ANNOTATIONS);
    assert!(said.contains("registered the cwasi runtime"), "{said}");
    assert!(
        said.contains("restart containerd"),
        "a changed config asks for a restart: {said}"
    );

    // Again: nothing changes, and containerd is left alone.
    let said = install();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    assert!(!said.contains("restart"), "{said}");

    // A containerd 2 config with an entry from an older install, without
    // the annotations: they are added to that entry.
    let old =
        "version = 3\n\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.cwasi]\n  \
               runtime_type = \"io.containerd.cwasi.v1\"\n\n[grpc]\n  address = \"/run/x.sock\"\n";
    std::fs::write(&path, old).unwrap();
    let said = install();
    let text = std::fs::read_to_string(&path).unwrap();
    let config: toml::Table = text.parse().unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(
        annotations(cwasi_runtime(&config, "io.containerd.cri.v1.runtime")),
        ANNOTATIONS
    );
    assert_eq!(config["grpc"]["address"].as_str(), Some("/run/x.sock"));
    assert!(
        said.contains("now passes the CWASI pod annotations"),
        "{said}"
    );

    std::fs::remove_dir_all(&scratch).unwrap();
}
