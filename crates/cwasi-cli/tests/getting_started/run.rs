//! Runs the steps of a page as one bash script, as a new user would type
//! them: in a fresh home directory outside the repository, with the `cwasi`
//! under test first on PATH, every command bounded, and what each block
//! printed kept apart so a failure names its block.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt as _;

use super::plan::{missing_lines, Step};

/// The longest a page (or section) may run, all its blocks together.
pub const SCRIPT_LIMIT: Duration = Duration::from_secs(15 * 60);

/// The longest a `ready=` block's background server may take to print its
/// ready line (a first compile of a component takes seconds).
const READY_LIMIT_SECS: u32 = 180;

/// How a block's place is marked in the script's output.
const MARK: &str = "@@getting-started block ";

/// The bash functions the script uses between the page's blocks.
const PRELUDE: &str = r#"set -euo pipefail
__gs_mark() { printf '\n@@getting-started block %s@@\n' "$1"; printf '\n@@getting-started block %s@@\n' "$1" >&2; }
# __gs_ready TEXT LINE: waits until TEXT has been printed since the mark of
# the block at LINE, while the job it started in the background lives.
__gs_ready() {
    local i
    for ((i = 0; i < 10 * __GS_READY_SECS; i++)); do
        if { sed -n "/^@@getting-started block $2@@\$/,\$p" "$GS_STDOUT"; sed -n "/^@@getting-started block $2@@\$/,\$p" "$GS_STDERR"; } | grep -F -- "$1" >/dev/null; then
            return 0
        fi
        if ! kill -0 "$!" 2>/dev/null; then
            echo "getting-started: what the block at line $2 started in the background ended before it printed '$1'" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "getting-started: the block at line $2 did not print '$1' within $__GS_READY_SECS s" >&2
    return 1
}
"#;

/// The bash script of `steps`.
pub fn script(steps: &[Step]) -> String {
    let mut s = format!("{PRELUDE}__GS_READY_SECS={READY_LIMIT_SECS}\n");
    for step in steps {
        if let Step::Run { block, ready } = step {
            let _ = writeln!(s, "__gs_mark {}", block.line);
            s.push_str(&block.code);
            if !block.code.ends_with('\n') {
                s.push('\n');
            }
            if let Some(text) = ready {
                let _ = writeln!(
                    s,
                    "__gs_ready '{}' {}",
                    text.replace('\'', r"'\''"),
                    block.line
                );
            }
        }
    }
    s.push_str("__gs_mark end\n");
    s
}

/// Splits what a script printed by block: the text after each mark, by the
/// block's line (`None` for what came before the first mark).
pub fn by_block(output: &str) -> BTreeMap<Option<usize>, String> {
    let mut parts: BTreeMap<Option<usize>, String> = BTreeMap::new();
    let mut key = None;
    for line in output.lines() {
        if let Some(id) = line.strip_prefix(MARK).and_then(|r| r.strip_suffix("@@")) {
            drop_mark_newline(parts.get_mut(&key));
            key = if id == "end" {
                Some(usize::MAX)
            } else {
                id.parse().ok()
            };
            parts.entry(key).or_default();
            continue;
        }
        let text = parts.entry(key).or_default();
        text.push_str(line);
        text.push('\n');
    }
    parts
}

/// Removes the empty line printed before a mark (each mark starts with a
/// newline of its own, in case the output before it did not end with one).
fn drop_mark_newline(text: Option<&mut String>) {
    if let Some(t) = text {
        if t == "\n" || t.ends_with("\n\n") {
            t.pop();
        }
    }
}

/// The environment a new user's shell has, built from the test's own: the
/// test's cargo and rustc settings (CARGO_TARGET_DIR, wrappers, flags) are
/// not passed on, HOME is `home`, and the toolchains found from the real
/// home (rustup, cargo, pyenv) are named explicitly so they still work.
fn user_env(cmd: &mut Command, home: &Path, bin: &Path) {
    let real_home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()));
    cmd.env_clear();
    for key in [
        "USER",
        "LOGNAME",
        "LANG",
        "LC_ALL",
        "TZ",
        "RUSTUP_TOOLCHAIN",
        "RUSTUP_AUTO_INSTALL",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    for (key, default) in [
        ("CARGO_HOME", ".cargo"),
        ("RUSTUP_HOME", ".rustup"),
        ("PYENV_ROOT", ".pyenv"),
    ] {
        let dir = std::env::var_os(key).map_or_else(|| real_home.join(default), PathBuf::from);
        if dir.is_dir() {
            cmd.env(key, dir);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin.to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    cmd.env("PATH", std::env::join_paths(dirs).expect("PATH"))
        .env("HOME", home)
        .env("TERM", "dumb");
}

/// A private directory outside the repository, removed on drop.
pub struct Sandbox {
    pub root: PathBuf,
}

impl Sandbox {
    /// Makes `/tmp/cwasi-getting-started-<tag>-<pid>` with `home/` (the
    /// user's home and the script's working directory), `bin/` (the cwasi
    /// under test); `run/`, the node directory, is left for cwasi to make
    /// (private, as it requires).
    pub fn new(tag: &str) -> Sandbox {
        let root = std::env::temp_dir().join(format!(
            "cwasi-getting-started-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["home", "bin"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .canonicalize()
            .unwrap();
        let real = root.canonicalize().unwrap();
        assert!(
            !real.starts_with(&repo),
            "the sandbox {} is inside the repository {}; set TMPDIR elsewhere",
            real.display(),
            repo.display()
        );
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_cwasi"), root.join("bin/cwasi")).unwrap();
        Sandbox { root }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// What a finished script printed, split by block.
pub struct Outcome {
    /// The exit status, or `None` if it ran out of time and was killed.
    pub status: Option<std::process::ExitStatus>,
    pub stdout: BTreeMap<Option<usize>, String>,
    pub stderr: BTreeMap<Option<usize>, String>,
}

impl Outcome {
    /// The line of the last block that started.
    pub fn last_block(&self) -> Option<usize> {
        self.stdout
            .keys()
            .chain(self.stderr.keys())
            .filter_map(|k| *k)
            .filter(|&k| k != usize::MAX)
            .max()
    }

    /// What the block at `line` printed, stdout then stderr.
    pub fn of(&self, line: usize) -> (String, String) {
        let get =
            |m: &BTreeMap<Option<usize>, String>| m.get(&Some(line)).cloned().unwrap_or_default();
        (get(&self.stdout), get(&self.stderr))
    }

    /// Whether the script got past its last block.
    pub fn reached_end(&self) -> bool {
        self.stdout.contains_key(&Some(usize::MAX))
    }
}

/// Runs `script` in `sandbox` with the user's environment and `extra`
/// variables, in a process group of its own; kills the group (what the page
/// left running in the background) when the script ends, or when it
/// outlives [`SCRIPT_LIMIT`].
pub fn run_script(sandbox: &Sandbox, script: &str, extra: &[(&str, &Path)]) -> Outcome {
    let file = sandbox.root.join("page.sh");
    std::fs::write(&file, script).unwrap();
    let (out_path, err_path) = (sandbox.root.join("stdout"), sandbox.root.join("stderr"));
    let home = sandbox.root.join("home");
    let mut cmd = Command::new("bash");
    user_env(&mut cmd, &home, &sandbox.root.join("bin"));
    cmd.args(["--noprofile", "--norc"])
        .arg(&file)
        .current_dir(&home)
        .env("GS_STDOUT", &out_path)
        .env("GS_STDERR", &err_path)
        .envs(extra.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .process_group(0);
    let mut child = cmd.spawn().expect("cannot start bash");
    let group = rustix::process::Pid::from_child(&child);
    let deadline = Instant::now() + SCRIPT_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    stop_group(group);
    if status.is_none() {
        let _ = child.wait();
    }
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    Outcome {
        status,
        stdout: by_block(&read(&out_path)),
        stderr: by_block(&read(&err_path)),
    }
}

/// Stops every process of `group`: SIGTERM, then SIGKILL to what is left
/// after 15 s (a server drains its calls first).
fn stop_group(group: rustix::process::Pid) {
    use rustix::process::{kill_process_group, test_kill_process_group, Signal};
    if kill_process_group(group, Signal::TERM).is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while test_kill_process_group(group).is_ok() {
        if Instant::now() >= deadline {
            let _ = kill_process_group(group, Signal::KILL);
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The report of a script that did not get through, or whose output differs
/// from what the page says: the block, what it printed, and the rest.
pub fn check(what: &str, page: &str, steps: &[Step], out: &Outcome) -> Result<(), String> {
    let code_of = |line: usize| {
        steps.iter().find_map(|s| match s {
            Step::Run { block, .. } if block.line == line => Some(block.code.clone()),
            _ => None,
        })
    };
    let show = |line: usize, why: &str| {
        let (stdout, stderr) = out.of(line);
        format!(
            "{what}: the block at {page}:{line} {why}\n--- the block ---\n{}--- its stdout ---\n{stdout}--- its stderr ---\n{stderr}---",
            code_of(line).unwrap_or_default()
        )
    };
    if !out.reached_end() {
        let why = match out.status {
            None => format!("was still running after {SCRIPT_LIMIT:?}; the script was killed"),
            Some(s) => format!("failed ({s})"),
        };
        return Err(match out.last_block() {
            Some(line) => show(line, &why),
            None => format!(
                "{what}: the script {why} before its first block\n--- stdout ---\n{}--- stderr ---\n{}",
                out.stdout.get(&None).cloned().unwrap_or_default(),
                out.stderr.get(&None).cloned().unwrap_or_default()
            ),
        });
    }
    for step in steps {
        if let Step::Expect { block, of } = step {
            let (stdout, stderr) = out.of(*of);
            let missing = missing_lines(&block.code, &format!("{stdout}{stderr}"));
            if !missing.is_empty() {
                return Err(show(
                    *of,
                    &format!(
                        "did not print what {page}:{} says it prints; missing:\n{}",
                        block.line,
                        missing.join("\n")
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_output_by_block() {
        let out = "before\n\n@@getting-started block 3@@\na\nb\n\n@@getting-started block 9@@\n\n@@getting-started block end@@\n";
        let parts = by_block(out);
        assert_eq!(parts[&None], "before\n");
        assert_eq!(parts[&Some(3)], "a\nb\n");
        assert_eq!(parts[&Some(9)], "");
        assert!(parts.contains_key(&Some(usize::MAX)));
    }
}
