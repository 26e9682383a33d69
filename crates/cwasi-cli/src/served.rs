//! The `cwasi serve` processes that `cwasi run` starts for functions outside
//! the entry's namespace, and stops when the run ends.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cwasi_runtime::{FunctionSpec, Limits, NodeDirectory};
use rustix::process::{kill_process, Pid, Signal};

/// How long a server may take to register.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Servers started for one run; dropping this stops them.
pub struct Servers(Vec<(String, Child)>);

/// Starts one server per function and waits until each has registered.
pub fn spawn_all(
    functions: &[FunctionSpec],
    dir: &NodeDirectory,
    limits: &Limits,
) -> Result<Servers> {
    let exe = std::env::current_exe().context("cannot find the cwasi binary")?;
    let mut servers = Servers(Vec::new());
    for f in functions {
        let mut cmd = Command::new(&exe);
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
            .stdin(Stdio::null());
        if let Some(h) = &f.seed.handler {
            cmd.args(["--handler", h]);
        }
        for (k, v) in &f.env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        if !f.args.is_empty() {
            cmd.arg("--").args(&f.args);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start a server for '{}'", f.name))?;
        tracing::info!(function = %f.name, namespace = %f.namespace, pid = child.id(), "server started");
        servers.0.push((f.name.clone(), child));
    }
    let deadline = Instant::now() + START_TIMEOUT;
    for (f, (_, child)) in functions.iter().zip(servers.0.iter_mut()) {
        while dir.lookup(&f.name, &f.namespace).is_none() {
            if let Some(status) = child.try_wait()? {
                bail!("the server for '{}' exited early ({status})", f.name);
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

impl Drop for Servers {
    fn drop(&mut self) {
        for (_, child) in &self.0 {
            if let Some(pid) = Pid::from_raw(child.id() as i32) {
                let _ = kill_process(pid, Signal::TERM);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for (name, child) in &mut self.0 {
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
}
