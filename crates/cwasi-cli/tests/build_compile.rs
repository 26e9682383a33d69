//! Build steps and the compile cache, as a user meets them: `cwasi build`
//! runs a composition's build commands (clang for a C function,
//! componentize-py and componentize-js for the polyglot example's Python
//! and JavaScript); `cwasi run --build` rebuilds only what a changed source
//! made stale; `cwasi compile` fills the compile cache so that a run
//! compiles nothing, and a run that compiles says so per module.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::guests::{polyglot_composition, POLYGLOT_JSON};
use common::{cwasi, run_with_timeout, Output, Scratch};
use test_programs_artifacts as progs;

/// Builds with real toolchains take their time on a loaded machine.
const BUILD_LIMIT: Duration = Duration::from_secs(600);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `cwasi ARGS` in `dir`, with the compile cache at `cache`.
fn cwasi_in(dir: &Path, cache: &Path, args: &[&str]) -> Output {
    run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_cwasi"))
            .args(args)
            .current_dir(dir)
            .env("CWASI_COMPILE_CACHE", cache),
        BUILD_LIMIT,
    )
}

fn ok(out: &Output, what: &str) {
    assert_eq!(out.code, Some(0), "{what}:\n{}\n{}", out.stdout, out.stderr);
}

/// Moves a file's modification time `secs` seconds past now, so that it
/// is newer than anything built before, whatever the clock's granularity.
fn touch_ahead(path: &Path, secs: u64) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() + Duration::from_secs(secs))
        .unwrap();
}

#[test]
fn a_c_function_is_built_rebuilt_when_stale_and_its_failure_named() {
    let scratch = Scratch::new("build-c");
    let project = &scratch.0;
    fs::create_dir_all(project.join("src")).unwrap();
    fs::copy(
        repo().join("examples/c/shout.c"),
        project.join("src/shout.c"),
    )
    .unwrap();
    let include = repo().join("guests/c");
    let app = format!(
        "entry = \"main\"\n\
         [functions.main]\nmodule = {entry:?}\nargs = [\"shout\", \"hello\"]\n\
         [functions.shout]\nmodule = \"shout.wasm\"\n\
         build = {{ command = \"clang --target=wasm32-wasi -mexec-model=reactor -O2 -I {inc} \
         -o shout.wasm src/shout.c\", watch = [\"src\"] }}\n",
        entry = progs::COMPONENT_ENTRY,
        inc = include.display(),
    );
    fs::write(project.join("app.toml"), app).unwrap();
    let cache = project.join("cache");

    let built = cwasi_in(project, &cache, &["build", "app.toml"]);
    ok(&built, "cwasi build");
    assert!(
        built.stderr.contains("cwasi: built 'shout' in "),
        "{}",
        built.stderr
    );
    assert!(project.join("shout.wasm").is_file());

    // Fresh: nothing is built, and the run answers. Neither function gave
    // a namespace: the run says so, and --explain marks their edge.
    let run = cwasi_in(
        project,
        &cache,
        &["run", "--build", "--explain", "app.toml"],
    );
    ok(&run, "cwasi run --build (fresh)");
    assert_eq!(run.stdout.trim_end(), "HELLO", "{}", run.stderr);
    assert!(
        run.stderr.contains("'shout' is up to date"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("built 'shout'"), "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "warning: functions 'main', 'shout' have no namespace and run in 'default'; set"
        ),
        "{}",
        run.stderr
    );
    let edge = run
        .stderr
        .lines()
        .find(|l| l.contains("main -> shout:"))
        .unwrap_or_else(|| panic!("no edge in {}", run.stderr));
    assert!(
        edge.ends_with("[no namespace given for 'main', 'shout': 'default']"),
        "{edge}"
    );

    // A watched source changes: the run rebuilds first, and runs the new
    // module (it answers in lower case now).
    let source = project.join("src/shout.c");
    let text = fs::read_to_string(&source).unwrap();
    fs::write(&source, text.replace("toupper(req[i])", "tolower(req[i])")).unwrap();
    touch_ahead(&source, 5);
    let run = cwasi_in(project, &cache, &["run", "--build", "app.toml"]);
    ok(&run, "cwasi run --build (stale)");
    assert!(
        run.stderr.contains("building 'shout':") && run.stderr.contains("shout.c changed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("cwasi: built 'shout' in "),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout.trim_end(), "hello", "{}", run.stderr);

    // A failing command: its function, command and status are named, and
    // the tool's own output is passed through, after the function's name.
    fs::write(&source, "this is not C\n").unwrap();
    touch_ahead(&source, 10);
    let failed = cwasi_in(project, &cache, &["run", "--build", "app.toml"]);
    assert_eq!(failed.code, Some(1), "{}\n{}", failed.stdout, failed.stderr);
    assert!(
        failed
            .stderr
            .contains("error: build of 'shout' failed: `clang --target=wasm32-wasi")
            && failed.stderr.contains("exited with status 1"),
        "{}",
        failed.stderr
    );
    assert!(failed.stderr.contains("shout | "), "{}", failed.stderr);
    assert!(failed.stdout.is_empty(), "{}", failed.stdout);

    // A step that writes no module; a composition with no steps.
    fs::write(
        project.join("empty.toml"),
        "entry = \"f\"\n[functions.f]\nmodule = \"none.wasm\"\nnamespace = \"n\"\n\
         build = { command = \"echo nothing to do\" }\n",
    )
    .unwrap();
    let out = cwasi_in(project, &cache, &["build", "empty.toml"]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .contains("build of 'f' succeeded but did not write")
            && out.stderr.contains("none.wasm"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("f | nothing to do"), "{}", out.stderr);
    fs::write(
        project.join("plain.toml"),
        format!(
            "entry = \"f\"\n[functions.f]\nmodule = {:?}\nnamespace = \"n\"\n",
            progs::ECHO
        ),
    )
    .unwrap();
    let out = cwasi_in(project, &cache, &["build", "plain.toml"]);
    ok(&out, "cwasi build of no steps");
    assert!(out.stderr.contains("has no build steps"), "{}", out.stderr);
}

#[test]
fn a_changed_python_or_javascript_source_is_rebuilt_before_the_run() {
    let scratch = Scratch::new("build-polyglot");
    let project = &scratch.0;
    for dir in ["py", "js"] {
        fs::create_dir_all(project.join(dir)).unwrap();
    }
    fs::copy(
        repo().join("examples/python/parse.py"),
        project.join("py/parse.py"),
    )
    .unwrap();
    fs::copy(
        repo().join("examples/js/format.js"),
        project.join("js/format.js"),
    )
    .unwrap();
    let wit = repo().join("wit");
    let app = format!(
        "entry = \"main\"\n\
         [functions.main]\nmodule = {entry:?}\nnamespace = \"polyglot\"\n\
         args = [\"parse\", \"Ada Lovelace, 1815, mathematician\"]\n\
         [functions.parse]\nmodule = \"parse.wasm\"\nnamespace = \"polyglot\"\n\
         env = {{ CWASI_NEXT = \"upper\" }}\n\
         build = {{ command = \"componentize-py -d {wit} -w cwasi:function/function componentize \
         -p py parse -o parse.wasm\", watch = [\"py\"] }}\n\
         [functions.upper]\nmodule = {upper:?}\nnamespace = \"polyglot\"\n\
         env = {{ CWASI_NEXT = \"format\" }}\n\
         [functions.format]\nmodule = \"format.wasm\"\nnamespace = \"polyglot\"\n\
         build = {{ command = \"componentize-js js/format.js --wit {wit} \
         -n cwasi:function/function -d http fetch-event -o format.wasm\", watch = [\"js\"] }}\n",
        entry = progs::COMPONENT_ENTRY,
        upper = progs::UPPER,
        wit = wit.display(),
    );
    fs::write(project.join("app.toml"), app).unwrap();
    let cache = project.join("cache");

    let run = cwasi_in(project, &cache, &["run", "--build", "app.toml"]);
    ok(&run, "first cwasi run --build");
    for f in ["parse", "format"] {
        assert!(
            run.stderr.contains(&format!("built '{f}'")),
            "{}",
            run.stderr
        );
    }
    assert_eq!(run.stdout.trim_end(), POLYGLOT_JSON, "{}", run.stderr);

    // The Python source changes its key: only `parse` is rebuilt.
    let source = project.join("py/parse.py");
    let text = fs::read_to_string(&source).unwrap();
    fs::write(&source, text.replace("role={role}", "job={role}")).unwrap();
    touch_ahead(&source, 5);
    let run = cwasi_in(project, &cache, &["run", "--build", "app.toml"]);
    ok(&run, "cwasi run --build after a Python change");
    assert!(run.stderr.contains("built 'parse'"), "{}", run.stderr);
    assert!(
        run.stderr.contains("'format' is up to date"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stdout.trim_end(),
        POLYGLOT_JSON.replace("ROLE", "JOB"),
        "{}",
        run.stderr
    );

    // The JavaScript source changes its output: only `format` is rebuilt.
    let source = project.join("js/format.js");
    let text = fs::read_to_string(&source).unwrap();
    fs::write(
        &source,
        text.replace("JSON.stringify(record)", "JSON.stringify(record) + '!'"),
    )
    .unwrap();
    touch_ahead(&source, 10);
    let run = cwasi_in(project, &cache, &["run", "--build", "app.toml"]);
    ok(&run, "cwasi run --build after a JavaScript change");
    assert!(run.stderr.contains("built 'format'"), "{}", run.stderr);
    assert!(
        run.stderr.contains("'parse' is up to date"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stdout.trim_end(),
        format!("{}!", POLYGLOT_JSON.replace("ROLE", "JOB")),
        "{}",
        run.stderr
    );
}

/// The lines of a run's stderr that tell of a compile.
fn compile_lines(out: &Output) -> Vec<&str> {
    out.stderr
        .lines()
        .filter(|l| l.starts_with("cwasi: compiled '"))
        .collect()
}

#[test]
fn compile_fills_the_cache_and_a_run_that_compiles_says_so() {
    let scratch = Scratch::new("compile");
    let composition = polyglot_composition(&scratch.0);
    let composition = composition.to_str().unwrap();
    let modules = ["main", "parse", "upper", "format"];

    // An empty cache: the run compiles each module and says so.
    let cold = scratch.0.join("cold-cache");
    let run = cwasi_in(&scratch.0, &cold, &["run", composition]);
    ok(&run, "cold run");
    assert_eq!(run.stdout.trim_end(), POLYGLOT_JSON);
    let lines = compile_lines(&run);
    assert_eq!(lines.len(), modules.len(), "{}", run.stderr);
    for f in modules {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("cwasi: compiled '{f}' ("))
                    && l.contains(", component) in ")
                    && l.ends_with(" s; cached for next runs")),
            "{f}: {}",
            run.stderr
        );
    }
    // The same cache again: nothing compiled, nothing said.
    let warm = cwasi_in(&scratch.0, &cold, &["run", composition]);
    ok(&warm, "warm run");
    assert_eq!(compile_lines(&warm), Vec::<&str>::new(), "{}", warm.stderr);

    // `cwasi compile` ahead of time: a run after it compiles nothing.
    let ahead = scratch.0.join("ahead-cache");
    let out = cwasi_in(&scratch.0, &ahead, &["compile", composition]);
    ok(&out, "cwasi compile");
    for f in modules {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(&format!("{f} (")) && l.contains("): compiled in ")),
            "{f}: {}",
            out.stdout
        );
    }
    let again = cwasi_in(&scratch.0, &ahead, &["compile", composition]);
    ok(&again, "cwasi compile again");
    assert_eq!(
        again
            .stdout
            .lines()
            .filter(|l| l.ends_with("): already cached"))
            .count(),
        modules.len(),
        "{}",
        again.stdout
    );
    let run = cwasi_in(&scratch.0, &ahead, &["run", composition]);
    ok(&run, "run after compile");
    assert_eq!(compile_lines(&run), Vec::<&str>::new(), "{}", run.stderr);

    // A single module; and with the cache off, compile refuses to pretend.
    let out = cwasi(&["compile", progs::ECHO], BUILD_LIMIT);
    ok(&out, "cwasi compile of a module");
    let off = cwasi_in(&scratch.0, Path::new("off"), &["compile", progs::ECHO]);
    assert_eq!(off.code, Some(1), "{}", off.stdout);
    assert!(
        off.stdout.contains("NOT cached") && off.stderr.contains("compile cache is off"),
        "{}\n{}",
        off.stdout,
        off.stderr
    );
}
