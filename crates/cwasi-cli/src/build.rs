//! The build steps of a composition (`build = { command, watch }`): which
//! are stale, and running them, for `cwasi build` and `cwasi run --build`.
//! Each command runs with `sh -c` in its working directory, in a process
//! group of its own that a stop signal ends whole; its output goes to
//! stderr, each line after the function's name, so that a run's own output
//! on stdout stays clean.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use cwasi_runtime::{BuildStep, Composition};
use rustix::process::{kill_process_group, Pid, Signal};

use crate::console::note;
use crate::prefixed::{forward, Sink};

/// Directories never walked for changes: build outputs and fetched
/// dependencies, which change because of the build itself.
const SKIPPED_DIRS: [&str; 3] = ["target", "node_modules", ".git"];

/// Whether a function's module must be built again, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// The module is newer than everything it watches.
    UpToDate,
    /// It must be built; the reason, for a person.
    Stale(String),
}

/// Whether the module at `module` is stale against `step`: missing, or
/// older than a watched file (directories are walked, but not their
/// `target/`, `node_modules/` and `.git/`), or the step watches nothing (so
/// it always runs; the build tool decides).
pub fn freshness(module: &Path, step: &BuildStep) -> Freshness {
    let Ok(built) = fs::metadata(module).and_then(|m| m.modified()) else {
        return Freshness::Stale(format!("{} does not exist", module.display()));
    };
    if step.watch.is_empty() {
        return Freshness::Stale("it watches nothing, so it always builds".into());
    }
    for watched in &step.watch {
        if fs::symlink_metadata(watched).is_err() {
            return Freshness::Stale(format!("{} does not exist", watched.display()));
        }
        if let Some(changed) = newer_than(watched, built) {
            return Freshness::Stale(format!("{} changed", changed.display()));
        }
    }
    Freshness::UpToDate
}

/// The first file under `path` (itself, if a file) modified after `time`.
/// Symbolic links are looked at, never followed into, so a link loop
/// cannot make the walk endless.
fn newer_than(path: &Path, time: SystemTime) -> Option<PathBuf> {
    let meta = fs::symlink_metadata(path).ok()?;
    if meta.modified().is_ok_and(|m| m > time) && !meta.is_dir() {
        return Some(path.to_path_buf());
    }
    if !meta.is_dir() {
        return None;
    }
    let mut entries: Vec<PathBuf> = fs::read_dir(path)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    entries.into_iter().find_map(|entry| {
        let skipped = entry
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| SKIPPED_DIRS.contains(&n));
        if skipped && entry.is_dir() {
            return None;
        }
        newer_than(&entry, time)
    })
}

/// Which functions of a composition a build covers.
pub enum Which<'a> {
    /// Every function with a build step.
    All,
    /// This one.
    Only(&'a str),
    /// Those whose module is stale ([`freshness`]).
    Stale,
}

/// Runs the build steps of `comp` that `which` selects, in the
/// composition's order, and says per function what it did. Stops at the
/// first failure, naming the function, its command and how it ended.
pub fn build(comp: &Composition, origin: &Path, which: Which<'_>) -> Result<()> {
    if let Which::Only(name) = which {
        if !comp.functions.iter().any(|f| f.name == name) {
            bail!("{} has no function '{name}'", origin.display());
        }
        if !comp.builds.contains_key(name) {
            bail!(
                "function '{name}' has no build step in {}",
                origin.display()
            );
        }
    }
    if comp.builds.is_empty() {
        if matches!(which, Which::All) {
            note!("cwasi: {} has no build steps", origin.display());
        }
        return Ok(());
    }
    let width = comp.builds.keys().map(String::len).max().unwrap_or(0);
    for f in &comp.functions {
        let Some(step) = comp.builds.get(&f.name) else {
            continue;
        };
        match which {
            Which::Only(name) if name != f.name => continue,
            Which::Stale => match freshness(&f.module, step) {
                Freshness::UpToDate => {
                    note!("cwasi: '{}' is up to date", f.name);
                    continue;
                }
                Freshness::Stale(why) => note!("cwasi: building '{}': {why}", f.name),
            },
            _ => {}
        }
        let took = run_step(&f.name, step, &f.module, width)?;
        note!("cwasi: built '{}' in {}", f.name, seconds(took));
    }
    Ok(())
}

/// `1.23 s`, for build and compile times.
pub fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Runs one build step and checks that it wrote `module`; returns how long
/// it took. A stop signal while it runs ends its process group.
fn run_step(name: &str, step: &BuildStep, module: &Path, width: usize) -> Result<Duration> {
    // A composition named without a directory (`app.toml`) has an empty
    // one: the current directory.
    let workdir = if step.workdir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        step.workdir.as_path()
    };
    if !workdir.is_dir() {
        bail!(
            "build of '{name}': its workdir {} is not a directory",
            workdir.display()
        );
    }
    let started = Instant::now();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&step.command)
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    redis_launcher::kill_with_parent(&mut cmd);
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "build of '{name}': cannot start `sh -c {:?}` in {}",
            step.command,
            workdir.display()
        )
    })?;
    let group = Pid::from_raw(child.id() as i32);
    let _on_stop = crate::stop::on_stop(move || {
        if let Some(group) = group {
            let _ = kill_process_group(group, Signal::TERM);
        }
    })?;
    let prefix = format!("{name:<width$} | ");
    let mut output = Vec::new();
    // Both streams to stderr: stdout is the run's.
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        output.push(
            forward(prefix.clone(), pipe, Sink::Stderr)
                .context("cannot start a thread for a build's output")?,
        );
    }
    let status = child
        .wait()
        .with_context(|| format!("build of '{name}': cannot wait for its command"))?;
    for thread in output {
        let _ = thread.join();
    }
    if !status.success() {
        bail!(
            "build of '{name}' failed: `{}` (in {}) {}",
            step.command,
            workdir.display(),
            describe(status)
        );
    }
    if !module.is_file() {
        bail!(
            "build of '{name}' succeeded but did not write {}",
            module.display()
        );
    }
    Ok(started.elapsed())
}

/// How a command ended, as a shell would say it.
fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => format!("ended with {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn dir(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("cwasi-build-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    /// Sets a file's modification time `secs` seconds after the epoch.
    fn touch(path: &Path, secs: u64) {
        let f = fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
    }

    fn step(watch: Vec<PathBuf>) -> BuildStep {
        BuildStep {
            command: "true".into(),
            workdir: PathBuf::from("."),
            watch,
        }
    }

    #[test]
    fn a_module_is_stale_when_missing_or_older_than_a_watched_file() {
        let d = dir("fresh");
        let src = d.0.join("src");
        fs::create_dir_all(src.join("deep")).unwrap();
        fs::create_dir_all(d.0.join("src/target")).unwrap();
        let module = d.0.join("m.wasm");
        let watch = vec![src.clone()];
        assert!(matches!(
            freshness(&module, &step(watch.clone())),
            Freshness::Stale(why) if why.contains("does not exist")
        ));
        for f in ["src/a.py", "src/deep/b.py", "src/target/out", "m.wasm"] {
            fs::write(d.0.join(f), "x").unwrap();
        }
        touch(&d.0.join("src/a.py"), 1000);
        touch(&d.0.join("src/deep/b.py"), 1000);
        // A build output newer than the module does not count.
        touch(&d.0.join("src/target/out"), 5000);
        touch(&module, 2000);
        assert_eq!(
            freshness(&module, &step(watch.clone())),
            Freshness::UpToDate
        );
        touch(&d.0.join("src/deep/b.py"), 3000);
        assert!(matches!(
            freshness(&module, &step(watch.clone())),
            Freshness::Stale(why) if why.contains("b.py changed")
        ));
        // A single watched file, and no watch list at all.
        let one = vec![d.0.join("src/a.py")];
        assert_eq!(freshness(&module, &step(one)), Freshness::UpToDate);
        assert!(matches!(
            freshness(&module, &step(Vec::new())),
            Freshness::Stale(why) if why.contains("always")
        ));
        let missing = vec![d.0.join("nope")];
        assert!(matches!(
            freshness(&module, &step(missing)),
            Freshness::Stale(why) if why.contains("nope does not exist")
        ));
    }

    #[test]
    fn a_symlink_loop_ends_the_walk() {
        let d = dir("loop");
        fs::create_dir_all(d.0.join("src")).unwrap();
        std::os::unix::fs::symlink(&d.0, d.0.join("src/up")).unwrap();
        let module = d.0.join("m.wasm");
        fs::write(&module, "x").unwrap();
        assert_eq!(
            newer_than(
                &d.0.join("src"),
                SystemTime::now() + Duration::from_secs(60)
            ),
            None
        );
    }

    fn composition(d: &Path, command: &str, module: &str) -> Composition {
        let text = format!(
            "entry = \"f\"\n[functions.f]\nmodule = {module:?}\nnamespace = \"n\"\n\
             build = {{ command = {command:?} }}\n"
        );
        Composition::parse(&text, d).unwrap()
    }

    #[test]
    fn a_step_runs_in_its_workdir_and_must_write_the_module() {
        let d = dir("run");
        let comp = composition(&d.0, "echo built > f.wasm", "f.wasm");
        build(&comp, Path::new("app.toml"), Which::All).unwrap();
        assert_eq!(fs::read_to_string(d.0.join("f.wasm")).unwrap(), "built\n");

        let comp = composition(&d.0, "exit 3", "f.wasm");
        let e = build(&comp, Path::new("app.toml"), Which::Only("f")).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("build of 'f' failed: `exit 3`") && e.contains("status 3"),
            "{e}"
        );

        let comp = composition(&d.0, "true", "g.wasm");
        let e = format!(
            "{:#}",
            build(&comp, Path::new("app.toml"), Which::All).unwrap_err()
        );
        assert!(e.contains("succeeded but did not write"), "{e}");
        let e = format!(
            "{:#}",
            build(&comp, Path::new("app.toml"), Which::Only("x")).unwrap_err()
        );
        assert!(e.contains("no function 'x'"), "{e}");
    }
}
