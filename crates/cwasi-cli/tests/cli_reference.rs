//! What the binary says about itself: the generated CLI reference of the
//! docs is current, `--version` names the protocol versions, completions
//! are produced, and `RUST_LOG=debug` stays readable.

mod common;

use std::path::Path;
use std::process::Command;

use common::{cwasi, function, run_with_timeout, Scratch, LIMIT};
use test_programs_artifacts as progs;

/// docs/reference/cli.md is exactly what `cwasi reference` prints, so the
/// page cannot drift from `--help`.
#[test]
fn the_cli_reference_page_is_current() {
    // clap shows the value of a set `[env: CWASI_…]`: render without them.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cwasi"));
    cmd.arg("reference");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CWASI_") {
            cmd.env_remove(key);
        }
    }
    let out = run_with_timeout(&mut cmd, LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/reference/cli.md");
    let checked_in = std::fs::read_to_string(&page).unwrap_or_default();
    if checked_in != out.stdout {
        panic!(
            "docs/reference/cli.md is stale; regenerate it with\n  \
             cargo run -p cwasi-cli -- reference > docs/reference/cli.md"
        );
    }
    for command in [
        "new",
        "run",
        "serve",
        "call",
        "inspect",
        "bench",
        "completions",
    ] {
        assert!(
            out.stdout.contains(&format!("\n## `cwasi {command}`\n")),
            "no section for {command}"
        );
    }
    assert!(!out.stdout.contains("## `cwasi reference`"));
}

#[test]
fn version_names_the_protocol_versions() {
    let out = cwasi(&["--version"], LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let text = out.stdout;
    assert!(
        text.starts_with(&format!("cwasi {}\n", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    let wire = cwasi_runtime::protocols::LOCAL_FRAMES.to_string();
    for (what, version) in [
        ("guest ABI:", cwasi_runtime::protocols::ABI.to_string()),
        ("local frames:", wire.clone()),
        ("direct frames:", wire),
        (
            "broker entries:",
            cwasi_runtime::protocols::BROKER.to_string(),
        ),
        (
            "node records:",
            cwasi_runtime::protocols::NODE_RECORDS.to_string(),
        ),
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(what))
            .unwrap_or_else(|| panic!("no '{what}' line in:\n{text}"));
        assert_eq!(line.split_whitespace().last(), Some(version.as_str()));
    }
}

#[test]
fn completions_are_generated_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef cwasi"),
        ("fish", "complete -c cwasi"),
    ] {
        let out = cwasi(&["completions", shell], LIMIT);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert!(out.stdout.contains(marker), "{shell}: {}", out.stdout);
        assert!(out.stdout.contains("serve"), "{shell}");
    }
    let out = cwasi(&["completions", "tcsh"], LIMIT);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
}

/// `RUST_LOG=debug` turns up CWASI's own logs, not cranelift's (which
/// printed over a million lines for one compiled module), and the module
/// is compiled afresh (a private, empty compile cache) so that cranelift
/// does run.
#[test]
fn a_bare_debug_level_covers_cwasi_crates_only() {
    let dir = Scratch::new("log-filter");
    let toml = format!(
        "entry = \"producer\"\n{}{}{}",
        function(
            "producer",
            progs::PRODUCER,
            "namespace = \"n\"\nargs = [\"16\", \"transform\", \"xor-checksum\"]"
        ),
        function(
            "transform",
            progs::TRANSFORM,
            "namespace = \"n\"\nenv = { CWASI_NEXT = \"sink\" }"
        ),
        function("sink", progs::SINK, "namespace = \"n\""),
    );
    let file = dir.write("app.toml", &toml);
    let cache = dir.0.join("cache");
    let run = |filter: &str| {
        run_with_timeout(
            Command::new(env!("CARGO_BIN_EXE_cwasi"))
                .args(["run", &file, "--quiet"])
                .env("RUST_LOG", filter)
                .env("CWASI_COMPILE_CACHE", &cache),
            LIMIT,
        )
    };
    let out = run("debug");
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let lines = out.stderr.lines().count();
    assert!(
        out.stderr.contains("cwasi_runtime"),
        "no debug line of CWASI's own: {}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("cranelift"),
        "cranelift logged at debug: {lines} lines"
    );
    // A filter that is not a bare level is used as written.
    let _ = std::fs::remove_dir_all(&cache);
    let out = run("warn,cranelift_codegen=debug");
    assert_eq!(out.code, Some(0));
    assert!(
        out.stderr.contains("cranelift"),
        "the explicit filter was not used"
    );
    let out = run("=?not a filter");
    assert_eq!(out.code, Some(0));
    assert!(out.stderr.contains("is not a log filter"), "{}", out.stderr);
}
