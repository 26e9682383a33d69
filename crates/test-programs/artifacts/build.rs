//! Builds the guest packages (`test-programs`, `cwasi-example-functions`) for
//! wasm32-wasip1 in release mode and writes `$OUT_DIR/artifacts.rs` with the
//! absolute path of every resulting `.wasm`.
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

/// Guest packages and their directories, relative to the workspace root.
const GUEST_PACKAGES: &[(&str, &str)] = &[
    ("test-programs", "crates/test-programs"),
    ("cwasi-example-functions", "examples/functions"),
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
    check_wasm_target();

    let target_dir = workspace.join("target").join("guest");
    build_guests(&workspace, &target_dir);

    let wasm_dir = target_dir.join(WASM_TARGET).join("release");
    let programs = collect_programs(&workspace, &wasm_dir);
    fs::write(out_dir.join("artifacts.rs"), render(&wasm_dir, &programs))
        .expect("write artifacts.rs");
}

fn emit_rerun(workspace: &Path) {
    let mut paths = vec![
        workspace.join("Cargo.toml"),
        workspace.join("crates/cwasi-abi/Cargo.toml"),
        workspace.join("crates/cwasi-abi/src"),
        workspace.join("crates/cwasi-guest/Cargo.toml"),
        workspace.join("crates/cwasi-guest/src"),
    ];
    for (_, dir) in GUEST_PACKAGES {
        paths.push(workspace.join(dir).join("Cargo.toml"));
        paths.push(workspace.join(dir).join("src"));
    }
    for path in paths {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// Fails early, with the fix, if the standard library for the wasm target
/// is not installed.
fn check_wasm_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .output();
    let libdir = match output {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
        _ => missing_target(),
    };
    let has_std = fs::read_dir(&libdir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
        })
        .unwrap_or(false);
    if !has_std {
        missing_target();
    }
}

fn missing_target() -> ! {
    panic!(
        "the Rust target {WASM_TARGET} is not installed, so the CWASI guest programs cannot be \
         built; run `rustup target add {WASM_TARGET}` and build again"
    );
}

fn build_guests(workspace: &Path, target_dir: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--release", "--target", WASM_TARGET])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"));
    for (package, _) in GUEST_PACKAGES {
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
            "building the guest programs for {WASM_TARGET} failed ({status}); see the cargo output above"
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

fn render(wasm_dir: &Path, programs: &BTreeMap<String, PathBuf>) -> String {
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
    for (name, path) in programs {
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
