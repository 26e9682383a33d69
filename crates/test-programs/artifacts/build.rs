//! Builds the guest packages (`test-programs`, `cwasi-example-functions`) for
//! wasm32-wasip1, and the Rust components (`crates/test-programs/components`,
//! `examples/rust-component`) for wasm32-wasip2, in release mode, and writes
//! `$OUT_DIR/artifacts.rs` with the absolute path of every resulting `.wasm`.
//!
//! The nested cargo uses its own target dir (`<workspace>/target/guest`):
//! sharing the outer one would deadlock on cargo's build-directory lock.

use std::collections::BTreeMap;
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const WASM_TARGET: &str = "wasm32-wasip1";
/// Rust's target for components (WASI 0.2): rustc links a component.
const COMPONENT_TARGET: &str = "wasm32-wasip2";

/// Guest packages and their directories, relative to the workspace root.
const GUEST_PACKAGES: &[(&str, &str)] = &[
    ("test-programs", "crates/test-programs"),
    ("cwasi-example-functions", "examples/functions"),
];

/// Component packages (one cdylib each), their directories, and the name
/// of the `.wasm` each builds.
const COMPONENT_PACKAGES: &[(&str, &str, &str)] = &[
    (
        "component-echo",
        "crates/test-programs/components/echo",
        "component_echo",
    ),
    (
        "component-transform",
        "crates/test-programs/components/transform",
        "component_transform",
    ),
    (
        "component-faults",
        "crates/test-programs/components/faults",
        "component_faults",
    ),
    (
        "component-entry",
        "crates/test-programs/components/entry",
        "component_entry",
    ),
    (
        "cwasi-example-component",
        "examples/rust-component",
        "upper",
    ),
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    // crates/test-programs/artifacts -> workspace root.
    let workspace = manifest_dir
        .ancestors()
        .nth(3)
        .expect("artifacts crate lives at <workspace>/crates/test-programs/artifacts")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    emit_rerun(&workspace);
    check_wasm_target(WASM_TARGET);
    check_wasm_target(COMPONENT_TARGET);

    let target_dir = workspace.join("target").join("guest");
    let core: Vec<&str> = GUEST_PACKAGES.iter().map(|(p, _)| *p).collect();
    build_guests(&workspace, &target_dir, WASM_TARGET, &core);
    let components: Vec<&str> = COMPONENT_PACKAGES.iter().map(|(p, _, _)| *p).collect();
    build_guests(&workspace, &target_dir, COMPONENT_TARGET, &components);

    let wasm_dir = target_dir.join(WASM_TARGET).join("release");
    let programs = collect_programs(&workspace, &wasm_dir);
    let component_dir = target_dir.join(COMPONENT_TARGET).join("release");
    let components = COMPONENT_PACKAGES
        .iter()
        .map(|(package, _, name)| {
            let wasm = component_dir.join(format!("{name}.wasm"));
            assert!(
                wasm.is_file(),
                "{package}: expected {} after the build",
                wasm.display()
            );
            (name.to_string(), wasm)
        })
        .collect();
    let out = render(&wasm_dir, &programs, &component_dir, &components);
    fs::write(out_dir.join("artifacts.rs"), out).expect("write artifacts.rs");
}

fn emit_rerun(workspace: &Path) {
    let mut paths = vec![
        workspace.join("Cargo.toml"),
        workspace.join("crates/cwasi-abi/Cargo.toml"),
        workspace.join("crates/cwasi-abi/src"),
        workspace.join("crates/cwasi-guest/Cargo.toml"),
        workspace.join("crates/cwasi-guest/src"),
    ];
    let dirs = GUEST_PACKAGES.iter().map(|(_, dir)| *dir);
    for dir in dirs.chain(COMPONENT_PACKAGES.iter().map(|(_, dir, _)| *dir)) {
        paths.push(workspace.join(dir).join("Cargo.toml"));
        paths.push(workspace.join(dir).join("src"));
    }
    paths.push(workspace.join("wit"));
    for path in paths {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// Fails early, with the fix, if the standard library for a wasm target
/// is not installed.
fn check_wasm_target(target: &str) {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", target])
        .output();
    let libdir = match output {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
        _ => missing_target(target),
    };
    let has_std = fs::read_dir(&libdir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
        })
        .unwrap_or(false);
    if !has_std {
        missing_target(target);
    }
}

fn missing_target(target: &str) -> ! {
    panic!(
        "the Rust target {target} is not installed, so the CWASI guest programs cannot be \
         built; run `rustup target add {target}` (or `scripts/setup.sh --test`) and build again"
    );
}

fn build_guests(workspace: &Path, target_dir: &Path, target: &str, packages: &[&str]) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--release", "--target", target])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"));
    for package in packages {
        cmd.args(["-p", package]);
    }
    cmd.arg("--target-dir").arg(target_dir);

    // The outer build's settings must not leak into the guest build:
    // flags for the host target, clippy's wrapper, the outer target dir.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        if ["CARGO_PROFILE_", "CARGO_CFG_", "CARGO_FEATURE_"]
            .iter()
            .any(|prefix| key.starts_with(prefix))
        {
            cmd.env_remove(key.as_ref());
        }
    }
    // Our stdout is read by cargo as build-script directives; send the
    // child's output to stderr, which cargo shows when the build fails.
    cmd.stdout(Stdio::from(std::io::stderr()));

    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("could not run cargo to build the guest programs: {e}"));
    if !status.success() {
        panic!(
            "building the guest programs for {target} failed ({status}); see the cargo output above"
        );
    }
}

/// Every bin of every guest package, by name, with its `.wasm` path.
fn collect_programs(workspace: &Path, wasm_dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut programs = BTreeMap::new();
    for (package, dir) in GUEST_PACKAGES {
        let bin_dir = workspace.join(dir).join("src").join("bin");
        let entries =
            fs::read_dir(&bin_dir).unwrap_or_else(|e| panic!("read {}: {e}", bin_dir.display()));
        for entry in entries {
            let path = entry.expect("read bin dir entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("UTF-8 bin name")
                .to_string();
            let wasm = wasm_dir.join(format!("{name}.wasm"));
            assert!(
                wasm.is_file(),
                "{package}: expected {} after the build",
                wasm.display()
            );
            if programs.insert(name.clone(), wasm).is_some() {
                panic!("two guest packages define a program named {name}; names must be unique");
            }
        }
    }
    programs
}

fn render(
    wasm_dir: &Path,
    programs: &BTreeMap<String, PathBuf>,
    component_dir: &Path,
    components: &BTreeMap<String, PathBuf>,
) -> String {
    let mut out = String::from("// Generated by build.rs; do not edit.\n\n");
    let dir = wasm_dir.to_str().expect("UTF-8 target path");
    writeln!(
        out,
        "/// Directory holding every guest `.wasm` (wasm32-wasip1, release)."
    )
    .unwrap();
    writeln!(out, "pub const EXAMPLES_DIR: &str = {dir:?};\n").unwrap();
    for (name, path) in programs {
        let path = path.to_str().expect("UTF-8 wasm path");
        writeln!(out, "/// Absolute path of the `{name}` guest program.").unwrap();
        writeln!(out, "pub const {}: &str = {path:?};\n", name.to_uppercase()).unwrap();
    }
    writeln!(
        out,
        "/// Every guest program as `(name, path)`, sorted by name."
    )
    .unwrap();
    writeln!(out, "pub const ALL: &[(&str, &str)] = &[").unwrap();
    for name in programs.keys() {
        writeln!(out, "    ({name:?}, {}),", name.to_uppercase()).unwrap();
    }
    writeln!(out, "];\n").unwrap();
    let dir = component_dir.to_str().expect("UTF-8 target path");
    writeln!(
        out,
        "/// Directory holding every Rust component `.wasm` (wasm32-wasip2, release)."
    )
    .unwrap();
    writeln!(out, "pub const COMPONENTS_DIR: &str = {dir:?};\n").unwrap();
    for (name, path) in components {
        let path = path.to_str().expect("UTF-8 wasm path");
        writeln!(out, "/// Absolute path of the `{name}` component.").unwrap();
        writeln!(out, "pub const {}: &str = {path:?};\n", name.to_uppercase()).unwrap();
    }
    writeln!(
        out,
        "/// Every Rust component as `(name, path)`, sorted by name."
    )
    .unwrap();
    writeln!(out, "pub const COMPONENTS: &[(&str, &str)] = &[").unwrap();
    for name in components.keys() {
        writeln!(out, "    ({name:?}, {}),", name.to_uppercase()).unwrap();
    }
    writeln!(out, "];\n").unwrap();
    // A macro, not constants: the bytes land only in the crates that use
    // them, not in this crate's metadata (tens of megabytes in all).
    writeln!(
        out,
        "/// The bytes of a guest program, named as its path constant\n\
         /// (`wasm_bytes!(DISCARD)`): `include_bytes!` of its `.wasm`, for binaries\n\
         /// that must run away from this build tree.\n\
         #[macro_export]\n\
         macro_rules! wasm_bytes {{"
    )
    .unwrap();
    for (name, path) in programs.iter().chain(components) {
        let path = path.to_str().expect("UTF-8 wasm path");
        writeln!(
            out,
            "    ({}) => {{ include_bytes!({path:?}) }};",
            name.to_uppercase()
        )
        .unwrap();
    }
    writeln!(out, "}}").unwrap();
    out
}
