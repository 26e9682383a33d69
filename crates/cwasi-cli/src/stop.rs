//! The stop signals of a command that starts children (build commands,
//! `cwasi serve` processes): one thread waits for SIGTERM, SIGINT or SIGHUP,
//! runs every registered stopper (the newest first), then ends the process
//! as the signal would have. One thread for all, because a signal handler
//! installed for a while and removed would leave the signal ignored.

use std::sync::{Mutex, MutexGuard, OnceLock};

use anyhow::{Context, Result};
use cwasi_runtime::StopSignals;

/// A registered stopper, by the id [`on_stop`] gave it.
type Stoppers = Vec<(u64, Box<dyn FnOnce() + Send>)>;

/// The stoppers and the next id.
static STOPPERS: Mutex<(u64, Stoppers)> = Mutex::new((0, Vec::new()));
/// Set once the signal thread runs.
static INSTALLED: OnceLock<()> = OnceLock::new();

/// A stopper that runs on a stop signal unless it is removed first (by
/// dropping this).
pub struct OnStop(u64);

impl Drop for OnStop {
    fn drop(&mut self) {
        lock().1.retain(|(id, _)| *id != self.0);
    }
}

/// The list, even if a stopper panicked while holding it.
fn lock() -> MutexGuard<'static, (u64, Stoppers)> {
    STOPPERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `stopper` if a stop signal comes while the returned guard lives;
/// the first call installs the signal thread.
pub fn on_stop(stopper: impl FnOnce() + Send + 'static) -> Result<OnStop> {
    install()?;
    let mut stoppers = lock();
    let id = stoppers.0;
    stoppers.0 += 1;
    stoppers.1.push((id, Box::new(stopper)));
    Ok(OnStop(id))
}

fn install() -> Result<()> {
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    let mut signals = StopSignals::install().context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("cwasi-stop".into())
        .spawn(move || {
            if let Some(signal) = signals.wait() {
                // Taken out first, so that a stopper may take its time
                // without the list held.
                let stoppers = std::mem::take(&mut lock().1);
                for (_, stop) in stoppers.into_iter().rev() {
                    stop();
                }
                let _ = signal_hook::low_level::emulate_default_handler(signal);
                // Still here (pid 1 of a PID namespace ignores it): exit as
                // a shell reports a death by signal.
                std::process::exit(128 + signal);
            }
        })
        .context("cannot start the signal thread")?;
    let _ = INSTALLED.set(());
    Ok(())
}
