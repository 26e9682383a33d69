//! The `cwasi serve` processes that `cwasi run` starts for functions outside
//! the entry's namespace. The run owns them: it stops them when it ends or
//! gets SIGTERM, SIGINT or SIGHUP, and the kernel kills them if the run dies
//! any other way (SIGKILL, a crash). Their output is forwarded line by
//! line, each line after the function's name (`prefixed.rs`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::prefixed::{forward, Sink};
use anyhow::{bail, Context, Result};
use cwasi_runtime::{Composition, FunctionSpec, Limits, NodeDirectory};
use rustix::process::{kill_process, Pid, Signal};

/// How long a server may take to register.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The error of a thread for a server's output that cannot start.
const NO_OUTPUT_THREAD: &str = "cannot start a thread for a server's output";
/// How long a server may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The servers of a run, by function name; `None` once they were stopped,
/// after which no more may start. Shared by the run and its signal thread.
type Children = Arc<Mutex<Option<Vec<(String, Child)>>>>;

/// Servers started for one run, and the threads that forward their output;
/// dropping this stops them.
pub struct Servers {
    children: Children,
    output: Vec<std::thread::JoinHandle<()>>,
    _on_stop: crate::stop::OnStop,
}

/// The entry's namespace: where `cwasi run` loads functions into its own
/// process, and the default caller of `cwasi up`.
pub fn entry_namespace(comp: &Composition) -> String {
    comp.functions
        .iter()
        .find(|f| f.name == comp.entry)
        .map(|f| f.namespace.clone())
        .unwrap_or_else(|| cwasi_runtime::DEFAULT_NAMESPACE.to_string())
}

/// A composition placed for a caller of one namespace: the functions of
/// that namespace load in this process (they may share its VM); every other
/// one is served by a `cwasi serve` child, reached in local mode.
pub struct Placed {
    /// The functions to load here.
    pub mine: Vec<FunctionSpec>,
    /// The node directory, if there is one (needed when there are children).
    pub dir: Option<NodeDirectory>,
    /// The children, stopped when this is dropped.
    pub servers: Option<Servers>,
}

/// Places `comp` for a caller of `namespace` (see [`Placed`]), starting the
/// children; `runtime_dir` overrides the default node directory.
pub fn place(comp: &Composition, namespace: &str, runtime_dir: &Option<PathBuf>) -> Result<Placed> {
    let (mine, others): (Vec<FunctionSpec>, Vec<FunctionSpec>) = comp
        .functions
        .iter()
        .cloned()
        .partition(|f| f.namespace == namespace);
    let dir = match crate::node_directory(runtime_dir) {
        Ok(d) => Some(d),
        Err(e) if others.is_empty() => {
            tracing::warn!("no node directory, local mode disabled: {e:#}");
            None
        }
        Err(e) => return Err(e.context("functions in other namespaces need a node directory")),
    };
    let servers = match &dir {
        Some(d) if !others.is_empty() => Some(spawn_all(&others, d, &comp.limits)?),
        _ => None,
    };
    Ok(Placed { mine, dir, servers })
}

/// Starts one server per function and waits until each has registered.
///
/// Call it from the main thread: each server dies when the thread that
/// started it exits (`PR_SET_PDEATHSIG`), so it must be a thread that lives
/// as long as the run. From here on SIGTERM, SIGINT and SIGHUP stop the
/// servers, then end the run as the signal would have.
pub fn spawn_all(
    functions: &[FunctionSpec],
    dir: &NodeDirectory,
    limits: &Limits,
) -> Result<Servers> {
    let exe = std::env::current_exe().context("cannot find the cwasi binary")?;
    let children: Children = Arc::new(Mutex::new(Some(Vec::new())));
    let stopped = Arc::clone(&children);
    let mut servers = Servers {
        _on_stop: crate::stop::on_stop(move || stop(&stopped))?,
        children,
        output: Vec::new(),
    };
    let width = functions.iter().map(|f| f.name.len()).max().unwrap_or(0);
    for f in functions {
        let mut cmd = server_command(&exe, f, dir, limits);
        redis_launcher::kill_with_parent(&mut cmd);
        let mut children = lock(&servers.children);
        let Some(list) = children.as_mut() else {
            bail!(
                "the run was stopped before the server for '{}' started",
                f.name
            );
        };
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start a server for '{}'", f.name))?;
        tracing::info!(function = %f.name, namespace = %f.namespace, pid = child.id(), "server started");
        let prefix = format!("{:<width$} | ", f.name);
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        list.push((f.name.clone(), child));
        drop(children);
        if let Some(pipe) = stdout {
            let thread = forward(prefix.clone(), pipe, Sink::Stdout).context(NO_OUTPUT_THREAD)?;
            servers.output.push(thread);
        }
        if let Some(pipe) = stderr {
            let thread = forward(prefix, pipe, Sink::Stderr).context(NO_OUTPUT_THREAD)?;
            servers.output.push(thread);
        }
    }
    let deadline = Instant::now() + START_TIMEOUT;
    for (i, f) in functions.iter().enumerate() {
        while dir.lookup(&f.name, &f.namespace).is_none() {
            {
                let mut children = lock(&servers.children);
                let Some((_, child)) = children.as_mut().and_then(|l| l.get_mut(i)) else {
                    bail!("the run was stopped before '{}' registered", f.name);
                };
                if let Some(status) = child.try_wait()? {
                    bail!("the server for '{}' exited early ({status})", f.name);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the server for '{}' did not register within {START_TIMEOUT:?}",
                    f.name
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(servers)
}

/// The `cwasi serve` command line for `f`.
fn server_command(exe: &Path, f: &FunctionSpec, dir: &NodeDirectory, limits: &Limits) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg(&f.module)
        .args(["--name", &f.name, "--namespace", &f.namespace])
        .arg("--runtime-dir")
        .arg(dir.root())
        .args([
            "--max-memory-mib",
            &(limits.max_memory_bytes >> 20).to_string(),
        ])
        .args([
            "--max-payload-mib",
            &(limits.max_payload_bytes >> 20).to_string(),
        ])
        .args([
            "--call-timeout-ms",
            &limits.call_timeout.as_millis().to_string(),
        ])
        .args(["--max-call-depth", &limits.max_call_depth.to_string()])
        .args([
            "--max-idle-instances",
            &limits.max_idle_instances.to_string(),
        ])
        .args([
            "--max-module-mib",
            &(limits.max_module_bytes >> 20).max(1).to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(h) = &f.seed.handler {
        cmd.args(["--handler", h]);
    }
    for (k, v) in &f.env {
        cmd.arg("--env").arg(format!("{k}={v}"));
    }
    if let Some(rules) = f.policy.rules() {
        if rules.is_empty() {
            cmd.arg("--allow-no-caller");
        }
        for rule in rules {
            cmd.arg("--allow-caller").arg(rule.to_string());
        }
    }
    if !f.args.is_empty() {
        cmd.arg("--").args(&f.args);
    }
    cmd
}

/// The list, even if a thread panicked while holding it.
fn lock(children: &Children) -> MutexGuard<'_, Option<Vec<(String, Child)>>> {
    children.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stops every server: SIGTERM, so that each removes its record and socket,
/// then SIGKILL for any still running after [`STOP_TIMEOUT`]. Holds the list
/// until they are gone, so a second caller returns only after the first has
/// finished; it finds nothing left to stop.
fn stop(children: &Children) {
    let mut guard = lock(children);
    let Some(mut list) = guard.take() else {
        return;
    };
    for (_, child) in &mut list {
        // One already reaped is not signalled: its pid may be another's now.
        if let (Ok(None), Some(pid)) = (child.try_wait(), Pid::from_raw(child.id() as i32)) {
            let _ = kill_process(pid, Signal::TERM);
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for (name, child) in &mut list {
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    tracing::warn!(function = %name, "server did not stop; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        stop(&self.children);
        // The servers are gone, so their pipes are at end of file: the last
        // lines are out before the run ends.
        for thread in self.output.drain(..) {
            let _ = thread.join();
        }
    }
}
