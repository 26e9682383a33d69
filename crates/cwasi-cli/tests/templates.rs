//! `cwasi new`: every template written into a fresh directory outside the
//! repository as a new user would, built with `cwasi build app.toml`
//! and the real toolchains (cargo, clang, componentize-py,
//! componentize-js), then called in every mode: embedded (`cwasi run`),
//! local (`cwasi serve` and `cwasi call` from another namespace), and remote
//! through a real redis-server, by the broker and directly.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::guests::private_dir;
use common::{cwasi, run_with_timeout, wait_announced, Output, Scratch, Server, LIMIT};
use cwasi_runtime::Composition;
use test_support::RedisServer;

/// How long one build step may take: a first Rust component build fetches
/// and compiles wit-bindgen.
const BUILD_LIMIT: Duration = Duration::from_secs(600);

/// Variables of the test's own build that must not reach a project's build:
/// the project builds as a user's would, into its own `target/`, without
/// the workspace's lint wrapper.
const BUILD_ENV_REMOVED: &[&str] = &[
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_WRAPPER",
    "CLIPPY_ARGS",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
];

/// A project written by `cwasi new` in a scratch directory of its own.
struct Project {
    _scratch: Scratch,
    dir: PathBuf,
    name: String,
}

impl Project {
    /// `cwasi new TEMPLATE NAME`, run in a fresh directory as a user would
    /// (the project goes to ./NAME); checks what it says to do next.
    fn new(template: &str, name: &str) -> Project {
        let scratch = Scratch::new(&format!("new-{template}"));
        let out = run_with_timeout(
            Command::new(env!("CARGO_BIN_EXE_cwasi"))
                .args(["new", template, name])
                .current_dir(&scratch.0),
            LIMIT,
        );
        assert_eq!(out.code, Some(0), "cwasi new {template}: {}", out.stderr);
        for line in [
            format!("cd {name}"),
            "cwasi build app.toml".into(),
            "cwasi run app.toml --data 'hello'".into(),
        ] {
            assert!(out.stdout.contains(&line), "{template}: {}", out.stdout);
        }
        let dir = scratch.0.join(name);
        assert!(dir.join("app.toml").is_file() && dir.join("README.md").is_file());
        Project {
            _scratch: scratch,
            dir,
            name: name.to_string(),
        }
    }

    /// `cwasi build app.toml` in the project, as its README says, and
    /// checks that it built every function and that each module is there.
    fn build(&self) {
        let comp = Composition::from_file(&self.dir.join("app.toml")).unwrap();
        assert_eq!(
            comp.builds.len(),
            comp.functions.len(),
            "a step per function"
        );
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cwasi"));
        cmd.args(["build", "app.toml"]).current_dir(&self.dir);
        for var in BUILD_ENV_REMOVED {
            cmd.env_remove(var);
        }
        let out = run_with_timeout(&mut cmd, BUILD_LIMIT);
        assert_eq!(
            out.code,
            Some(0),
            "cwasi build app.toml in {}:\n{}\n{}",
            self.dir.display(),
            out.stdout,
            out.stderr
        );
        for f in &comp.functions {
            assert!(
                out.stderr.contains(&format!("built '{}'", f.name)),
                "{}",
                out.stderr
            );
            assert!(f.module.is_file(), "{} was not built", f.module.display());
        }
    }

    /// The module of the project's function (the entry).
    fn module(&self) -> String {
        let comp = Composition::from_file(&self.dir.join("app.toml")).unwrap();
        let entry = comp.functions.iter().find(|f| f.name == comp.entry);
        let module = &entry.expect("the entry is a function").module;
        module.to_str().unwrap().to_string()
    }

    /// `cwasi ARGS` run in the project's directory.
    fn cwasi(&self, args: &[&str]) -> Output {
        run_with_timeout(
            Command::new(env!("CARGO_BIN_EXE_cwasi"))
                .args(args)
                .current_dir(&self.dir),
            LIMIT,
        )
    }
}

/// The documented run command answers `expected`; without a request the
/// function's own error is printed and the run fails.
fn check_embedded(project: &Project, expected: &str) {
    let out = project.cwasi(&["run", "app.toml", "--data", "hello", "--explain"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, expected, "{}", out.stderr);
    let hop = format!("<host> -> {}: embedded", project.name);
    assert!(out.stderr.contains(&hop), "{}", out.stderr);
    let out = project.cwasi(&["run", "app.toml"]);
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    let failed = format!("entry '{}' failed after", project.name);
    assert!(out.stderr.contains(&failed), "{}", out.stderr);
    assert!(
        out.stderr.contains("the request is empty"),
        "{}",
        out.stderr
    );
}

/// Serves the project's function on "node2" (taking direct calls too), and
/// calls it from another namespace: locally from node2's node directory,
/// and from "node1" through the broker and directly.
fn check_served(project: &Project, expected: &str) {
    let redis = RedisServer::start();
    let url = redis.url();
    let scratch = Scratch::new(&format!("served-{}", project.name));
    let (node1, node2) = (
        private_dir(&scratch, "node1"),
        private_dir(&scratch, "node2"),
    );
    let name = project.name.as_str();
    let env = |node: &'static str| {
        [
            ("CWASI_REDIS_URL", url.as_str()),
            ("CWASI_NODE", node),
            ("CWASI_DIRECT_PLAIN", "1"),
        ]
    };
    let _server = Server::start(
        &node2,
        &project.module(),
        name,
        name,
        &["--listen", "127.0.0.1:0"],
        &env("node2"),
    );
    wait_announced(&url, name, name);
    let call = |node: &'static str, dir: &Path, mode: &str| {
        let out = run_with_timeout(
            Command::new(env!("CARGO_BIN_EXE_cwasi"))
                .args(["call", name, "--namespace", "caller", "--data", "hello"])
                .args(["--mode", mode, "--explain", "--runtime-dir"])
                .arg(dir)
                .envs(env(node)),
            LIMIT,
        );
        assert_eq!(out.code, Some(0), "{mode}: {}", out.stderr);
        assert_eq!(out.stdout, expected, "{mode}: {}", out.stderr);
        out.stderr
    };
    let explained = call("node2", &node2, "local");
    assert!(
        explained.contains(&format!("-> {name}: local")),
        "{explained}"
    );
    for mode in ["remote-broker", "remote-direct"] {
        let explained = call("node1", &node1, mode);
        assert!(
            explained.contains(&format!("-> {name}: {mode}")),
            "{explained}"
        );
    }
}

/// A single-function template: written, built, and called in every mode.
fn check_template(template: &str, name: &str, language: &str) {
    let project = Project::new(template, name);
    project.build();
    let expected = format!("HELLO (upper-cased by {name}, in {language})");
    check_embedded(&project, &expected);
    check_served(&project, &expected);
}

#[test]
fn rust_template_builds_and_answers_in_every_mode() {
    check_template("rust", "hello-rust", "Rust");
}

#[test]
fn rust_component_template_builds_and_answers_in_every_mode() {
    check_template("rust-component", "hello-component", "a Rust component");
}

#[test]
fn c_template_builds_and_answers_in_every_mode() {
    check_template("c", "hello-c", "C");
}

#[test]
fn python_template_builds_and_answers_in_every_mode() {
    check_template("python", "hello-python", "Python");
}

#[test]
fn js_template_builds_and_answers_in_every_mode() {
    check_template("js", "hello-js", "JavaScript");
}

#[test]
fn composition_template_chains_two_functions_embedded_and_across_namespaces() {
    let name = "chain";
    let project = Project::new("composition", name);
    project.build();
    let expected = format!("HELLO (shouted by shout in Rust, for {name} in Python)");
    check_embedded(&project, &expected);
    let out = project.cwasi(&["run", "app.toml", "--data", "hello", "--explain"]);
    assert!(
        out.stderr.contains(&format!("{name} -> shout: embedded")),
        "{}",
        out.stderr
    );
    // `shout` moved to a namespace of its own: `cwasi run` serves it in a
    // process of its own, and the entry calls it in local mode.
    let file = project.dir.join("app.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let (before, shout) = text.split_once("[functions.shout]").unwrap();
    let shout = shout.replace(
        &format!("namespace = \"{name}\""),
        "namespace = \"shouters\"",
    );
    std::fs::write(&file, format!("{before}[functions.shout]{shout}")).unwrap();
    let scratch = Scratch::new("composition-node");
    let node = private_dir(&scratch, "node");
    let out = project.cwasi(&[
        "run",
        "app.toml",
        "--data",
        "hello",
        "--explain",
        "--runtime-dir",
        node.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, expected, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("{name} -> shout: local")),
        "{}",
        out.stderr
    );
}

#[test]
fn new_lists_the_templates() {
    let out = cwasi(&["new", "--list"], LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let names: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        ["rust", "rust-component", "c", "python", "js", "composition"],
        "{}",
        out.stdout
    );
    assert!(out.stdout.lines().all(|l| l.split_whitespace().count() > 3));
}

#[test]
fn new_refuses_bad_names_unknown_templates_and_used_directories() {
    let scratch = Scratch::new("new-refusals");
    let new = |args: &[&str]| {
        run_with_timeout(
            Command::new(env!("CARGO_BIN_EXE_cwasi"))
                .arg("new")
                .args(args)
                .current_dir(&scratch.0),
            LIMIT,
        )
    };
    for bad in [".hidden", "a/b", "two words", "ünï"] {
        let out = new(&["rust", bad]);
        assert_ne!(out.code, Some(0), "{bad}");
        assert!(
            out.stderr.contains("cannot name a function"),
            "{bad}: {}",
            out.stderr
        );
    }
    let out = new(&["cobol", "x"]);
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains("invalid value 'cobol'"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("rust-component"), "{}", out.stderr);
    let out = new(&["rust"]);
    assert_ne!(out.code, Some(0));
    // Nothing was written by a refusal.
    assert_eq!(std::fs::read_dir(&scratch.0).unwrap().count(), 0);

    std::fs::create_dir(scratch.0.join("used")).unwrap();
    std::fs::write(scratch.0.join("used/notes.txt"), "mine").unwrap();
    let out = new(&["c", "used"]);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("is not empty"), "{}", out.stderr);
    let out = new(&["c", "ok", "--dir", "used"]);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("is not empty"), "{}", out.stderr);
    let entries: Vec<_> = std::fs::read_dir(scratch.0.join("used")).unwrap().collect();
    assert_eq!(entries.len(), 1, "the used directory was written to");
    // An empty directory is taken.
    std::fs::create_dir(scratch.0.join("empty")).unwrap();
    let out = new(&["c", "fine", "--dir", "empty"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(scratch.0.join("empty/app.c").is_file());
}
