//! Every command of the getting-started pages (docs/getting-started/), run
//! as a new user would run it: each page's ```sh blocks, in order, as one
//! bash script (`set -euo pipefail`) in a fresh home directory under
//! /tmp, outside the repository, with the `cwasi` under test first on
//! PATH and nothing of the test's cargo settings in the environment.
//!
//! - first-function.md runs one test per language section (its setup
//!   blocks, before the first `##` heading, run first in each); the other
//!   pages run whole.
//! - The install page's `install` blocks (clone, toolchains as root, a
//!   release build of cwasi) are skipped, each printed with the reason: CI
//!   has installed the toolchains (`scripts/setup.sh --test`) and built the
//!   cwasi under test. An `install` block on any other page fails the test.
//! - A block with `ready=TEXT` starts a server in the background (`&`); the
//!   test waits until it has printed TEXT. What a page leaves running is
//!   stopped when its script ends.
//! - A ```text output block after an ```sh block is what that block prints:
//!   each of its lines (`...` matches anything) must be in the output.
//! - Each script is bounded ([`run::SCRIPT_LIMIT`]); its process group is
//!   killed when it ends or runs out of time. A failure prints the block,
//!   its stdout and stderr.
//!
//! The environment differs from a new user's in three ways only: HOME is
//! the fresh directory (so `~` and the compile cache start empty), the
//! toolchains of the real home (CARGO_HOME, RUSTUP_HOME, PYENV_ROOT) are
//! named explicitly, and CWASI_RUNTIME_DIR is a private node directory, so
//! the pages' servers never meet another test's. Each Rust template builds
//! in its own project's `target/`, as the page says, rather than in a shared
//! CARGO_TARGET_DIR, because app.toml names the module under `target/`.
//! The tests run one at a time: the pages serve on 127.0.0.1:8080.

#[path = "getting_started/blocks.rs"]
mod blocks;
#[path = "getting_started/plan.rs"]
mod plan;
#[path = "getting_started/run.rs"]
mod run;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use blocks::{blocks, Block};
use plan::{plan, select, Step, INSTALL_PAGE};
use run::{check, run_script, script, Sandbox};

/// The tests: a page, and one of its sections or (`None`) all of it.
const RUNS: &[(&str, Option<&str>)] = &[
    (INSTALL_PAGE, None),
    ("first-function.md", Some("Rust")),
    ("first-function.md", Some("Rust component")),
    ("first-function.md", Some("C")),
    ("first-function.md", Some("Python")),
    ("first-function.md", Some("JavaScript")),
    ("compose.md", None),
];

/// The address the pages serve HTTP on.
const HTTP_ADDR: &str = "127.0.0.1:8080";

/// One page at a time: they share [`HTTP_ADDR`].
static SERIAL: Mutex<()> = Mutex::new(());

fn pages_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/getting-started")
}

fn read_page(page: &str) -> String {
    let path = pages_dir().join(page);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Runs the blocks of `page` (of its setup and `section`, if given).
fn run_page(page: &str, section: Option<&str>) {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let all = blocks(&read_page(page));
    if let Some(s) = section {
        assert!(
            all.iter().any(|b| b.section.as_deref() == Some(s)),
            "{page} has no section '## {s}' with a code block"
        );
    }
    let chosen = select(&all, section);
    let steps = plan(page, &chosen).unwrap_or_else(|e| panic!("{e}"));
    let what = match section {
        Some(s) => format!("{page}, section '{s}'"),
        None => page.to_string(),
    };
    for step in &steps {
        if let Step::Skip { block, why } = step {
            // Straight to stderr, past the test harness's capture: a
            // skipped block is said even when the test passes.
            let _ = writeln!(
                std::io::stderr(),
                "\n!!! getting started: SKIPPED the block at {} ({why}):\n{}",
                block.place(page),
                indent(&block.code)
            );
            check_install_block(page, block);
        }
    }
    let runs: Vec<&Block> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Run { block, .. } => Some(*block),
            _ => None,
        })
        .collect();
    assert!(!runs.is_empty(), "{what}: no sh block to run");
    if runs.iter().any(|b| b.code.contains(HTTP_ADDR)) {
        if let Err(e) = std::net::TcpListener::bind(HTTP_ADDR) {
            panic!("{what} serves on {HTTP_ADDR}, which is taken on this machine ({e}): free it to run this test");
        }
    }
    let tag = format!(
        "{}{}",
        page.trim_end_matches(".md"),
        section
            .map(|s| format!("-{}", s.to_lowercase().replace(' ', "-")))
            .unwrap_or_default()
    );
    let sandbox = Sandbox::new(&tag);
    let node_dir = sandbox.root.join("run");
    let out = run_script(
        &sandbox,
        &script(&steps),
        &[("CWASI_RUNTIME_DIR", &node_dir)],
    );
    check(&what, page, &steps, &out).unwrap_or_else(|e| panic!("{e}"));
    // The transcript (shown with --nocapture).
    for block in runs {
        let (stdout, stderr) = out.of(block.line);
        println!(
            "getting started: {what}: ran the block at {}:\n{}--- stdout ---\n{stdout}--- stderr ---\n{stderr}",
            block.place(page),
            indent(&block.code)
        );
    }
}

fn indent(code: &str) -> String {
    code.lines().map(|l| format!("    {l}\n")).collect()
}

/// What can be checked of a skipped install block without running it: it
/// is valid shell, and the scripts and paths of the repository it names
/// exist.
fn check_install_block(page: &str, block: &Block) {
    let at = block.place(page);
    let out = std::process::Command::new("bash")
        .args(["-n", "-c", &block.code])
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{at}: not valid shell: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let words: Vec<&str> = block.code.split_whitespace().collect();
    for (i, w) in words.iter().enumerate() {
        let named = w.starts_with("./") || (i > 0 && words[i - 1] == "--path");
        if named {
            assert!(
                repo.join(w).exists(),
                "{at}: names {w}, which the repository does not have"
            );
        }
    }
}

#[test]
fn install() {
    run_page(INSTALL_PAGE, None);
}

#[test]
fn first_function_rust() {
    run_page("first-function.md", Some("Rust"));
}

#[test]
fn first_function_rust_component() {
    run_page("first-function.md", Some("Rust component"));
}

#[test]
fn first_function_c() {
    run_page("first-function.md", Some("C"));
}

#[test]
fn first_function_python() {
    run_page("first-function.md", Some("Python"));
}

#[test]
fn first_function_javascript() {
    run_page("first-function.md", Some("JavaScript"));
}

#[test]
fn compose() {
    run_page("compose.md", None);
}

/// Every sh block of every getting-started page is run by one of the tests
/// above (or is an install block, skipped), and every page follows the
/// rules of `plan`.
#[test]
fn every_command_block_is_run_by_a_test() {
    let mut pages: Vec<String> = std::fs::read_dir(pages_dir())
        .expect("docs/getting-started")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .collect();
    pages.sort();
    for page in &pages {
        let all = blocks(&read_page(page));
        let refs: Vec<&Block> = all.iter().collect();
        let steps = plan(page, &refs).unwrap_or_else(|e| panic!("{e}"));
        let tests: Vec<Option<&str>> = RUNS
            .iter()
            .filter(|(p, _)| p == page)
            .map(|(_, s)| *s)
            .collect();
        for step in &steps {
            if let Step::Run { block, .. } = step {
                let covered = block.section.is_none()
                    || tests
                        .iter()
                        .any(|s| s.is_none() || *s == block.section.as_deref());
                assert!(
                    !tests.is_empty() && covered,
                    "the sh block at {} is run by no test: add its page or section to RUNS in {}",
                    block.place(page),
                    file!()
                );
            }
        }
    }
    for (page, _) in RUNS {
        assert!(
            pages.iter().any(|p| p == page),
            "RUNS names {page}, which docs/getting-started does not have"
        );
    }
}
