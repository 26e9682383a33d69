//! Builds every Python and JavaScript guest (`programs/*.py`, `programs/*.js`,
//! `examples/python/*.py`, `examples/js/*.js`) into a component of the world
//! `cwasi:function/function` of `wit/`: Python with componentize-py (PyPI),
//! JavaScript with componentize-js (npm). Writes
//! `$OUT_DIR/componentize_artifacts.rs` with the absolute path of each.
//!
//! Without the tools the build fails and says how to install them
//! (`scripts/setup.sh --test` does); it never skips.
//!
//! A component is kept in `<workspace>/target/componentize/`, named by a
//! hash of its source, of `wit/` and of the tool, and built again only when
//! one of them changes: the build script runs once for clippy and once for
//! the tests, and each build takes the tool tens of seconds.

use std::collections::hash_map::DefaultHasher;
use std::env;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The world every guest here is built for.
const WORLD: &str = "cwasi:function/function";

/// One language: its file extension, its tool, and how to install it.
struct Language {
    extension: &'static str,
    tool_env: &'static str,
    tool: &'static str,
    install: &'static str,
}

const PYTHON: Language = Language {
    extension: "py",
    tool_env: "CWASI_COMPONENTIZE_PY",
    tool: "componentize-py",
    install: "python3 -m pip install componentize-py==0.25.1",
};

const JAVASCRIPT: Language = Language {
    extension: "js",
    tool_env: "CWASI_COMPONENTIZE_JS",
    tool: "componentize-js",
    install: "npm install -g @bytecodealliance/componentize-js@0.23.0",
};

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .ancestors()
        .nth(3)
        .expect("this crate lives at <workspace>/crates/test-programs/componentize")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let wit = workspace.join("wit");
    println!("cargo:rerun-if-changed={}", wit.display());
    let kept = workspace.join("target").join("componentize");
    fs::create_dir_all(&kept).unwrap_or_else(|e| panic!("create {}: {e}", kept.display()));
    let mut wit_hash = DefaultHasher::new();
    hash_tree(&wit, &mut wit_hash);

    let dirs = [
        manifest_dir.join("programs"),
        workspace.join("examples/python"),
        workspace.join("examples/js"),
    ];
    // Every build at once: each tool mostly waits on its own pre-initialiser.
    let mut builds: Vec<(String, PathBuf, PathBuf, Child)> = Vec::new();
    let mut programs = Vec::new();
    for dir in &dirs {
        println!("cargo:rerun-if-changed={}", dir.display());
        for language in [&PYTHON, &JAVASCRIPT] {
            for source in sources(dir, language.extension) {
                let name = source
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .expect("a UTF-8 file name")
                    .to_string();
                let mut h = wit_hash.clone();
                fs::read(&source).expect("read a guest source").hash(&mut h);
                tool_version(language).hash(&mut h);
                let wasm = kept.join(format!("{name}-{:016x}.wasm", h.finish()));
                if wasm.is_file() {
                    programs.push((name, wasm));
                    continue;
                }
                let partial = wasm.with_extension("partial.wasm");
                let child = spawn(language, &wit, &source, &partial);
                builds.push((name, source, wasm, child));
            }
        }
    }
    for (name, source, wasm, child) in builds {
        let output = child
            .wait_with_output()
            .expect("wait for a componentize tool");
        let partial = wasm.with_extension("partial.wasm");
        if !output.status.success() || fs::rename(&partial, &wasm).is_err() {
            panic!(
                "building {} into a component failed ({}):\n{}{}",
                source.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        programs.push((name, wasm));
    }
    programs.sort();
    fs::write(out_dir.join("componentize_artifacts.rs"), render(&programs))
        .expect("write componentize_artifacts.rs");
}

/// The files of `dir` ending in `.extension`, sorted.
fn sources(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(extension))
        .collect();
    found.sort();
    found
}

/// Hashes every file under `dir`, by path and contents, in a stable order.
fn hash_tree(dir: &Path, h: &mut DefaultHasher) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            hash_tree(&path, h);
        } else {
            path.file_name().hash(h);
            fs::read(&path).expect("read a wit file").hash(h);
        }
    }
}

/// The tool of `language`: its setting, or its name on the `PATH`.
fn tool_of(language: &Language) -> OsString {
    println!("cargo:rerun-if-env-changed={}", language.tool_env);
    env::var_os(language.tool_env).unwrap_or_else(|| language.tool.into())
}

/// What the tool of `language` says its version is (part of every key, so
/// that another version builds again); fails the build, with the fix, if
/// the tool is missing.
fn tool_version(language: &Language) -> String {
    let tool = tool_of(language);
    match Command::new(&tool).arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => panic!(
            "{tool:?} --version failed ({}): {}; install it with `{}` \
             (scripts/setup.sh --test does), or point {} at it",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            language.install,
            language.tool_env
        ),
        Err(e) => panic!(
            "cannot run {tool:?} ({e}): install it with `{}` (scripts/setup.sh --test does), \
             or point {} at it",
            language.install, language.tool_env
        ),
    }
}

/// Starts the tool of `language` on `source`, writing `wasm`.
fn spawn(language: &Language, wit: &Path, source: &Path, wasm: &Path) -> Child {
    let tool = tool_of(language);
    let mut cmd = Command::new(&tool);
    if language.extension == "py" {
        // componentize-py imports the application module from its
        // directory, and leaves `__pycache__` there: give it a copy of its
        // own, beside the output, so the source tree stays clean.
        let module = source.file_stem().expect("a module name");
        let dir = wasm.with_extension("src");
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let file = source.file_name().expect("a file name");
        fs::copy(source, dir.join(file)).expect("copy a Python source");
        cmd.arg("-d")
            .arg(wit)
            .args(["-w", WORLD, "componentize", "-p"])
            .arg(&dir)
            .arg(module)
            .arg("-o")
            .arg(wasm);
    } else {
        // No wasi:http: the CWASI worlds import WASI's CLI interfaces only.
        cmd.arg(source)
            .arg("--wit")
            .arg(wit)
            .args(["-n", WORLD, "-d", "http", "fetch-event", "-o"])
            .arg(wasm);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {tool:?} to build {} ({e}): install it with `{}` \
                 (scripts/setup.sh --test does), or point {} at it",
                source.display(),
                language.install,
                language.tool_env
            )
        })
}

fn render(programs: &[(String, PathBuf)]) -> String {
    let mut out = String::from("// Generated by build.rs; do not edit.\n\n");
    for (name, path) in programs {
        let path = path.to_str().expect("a UTF-8 path");
        writeln!(out, "/// Absolute path of the `{name}` component.").unwrap();
        writeln!(out, "pub const {}: &str = {path:?};\n", name.to_uppercase()).unwrap();
    }
    writeln!(
        out,
        "/// Every Python and JavaScript component as `(name, path)`."
    )
    .unwrap();
    writeln!(out, "pub const ALL: &[(&str, &str)] = &[").unwrap();
    for (name, _) in programs {
        writeln!(out, "    ({name:?}, {}),", name.to_uppercase()).unwrap();
    }
    writeln!(out, "];").unwrap();
    out
}
