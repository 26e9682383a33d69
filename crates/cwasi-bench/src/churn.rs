//! The churn experiment: how well a route follows its callee while the
//! callee's placement changes (docs/architecture.md, "How a route
//! changes").
//!
//! A steady caller A, a runtime on node `n1`, calls B (`busy`, 64 B, which
//! answers at once) every [`ChurnConfig::interval`] while replicas of B
//! are started, stopped with SIGTERM, killed with SIGKILL, announced on
//! other nodes, and made slow (other callers keep the one call slot of the
//! replica on `n1` busy with 20 ms calls), one change per phase. Three nodes share this machine and one Redis: `n1`
//! (A's node directory), `n2` (B without a data address: reachable through
//! the broker only) and `n3` (B with a plain-TCP data address). On
//! loopback, or with [`ChurnConfig::netns`] `n2`, `n3` and Redis in one
//! network namespace and A and `n1` in another, joined by veth pairs. Every phase has a cheapest live path; for each, the report
//! gives the calls, the time from the change to the first call on that
//! path (the switch delay), the share of calls on it after that first call,
//! the failed calls by code, and the latency's median and p99.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cwasi_runtime::broker::{Broker, BrokerConfig};
use cwasi_runtime::{DirectConfig, ErrorCode, Mode, NodeDirectory, Runtime};
use redis_launcher::RedisServer;
use rustix::process::{kill_process, Pid, Signal};

use crate::contender::{lock, Net, Placement};
use crate::BenchError;

/// The callee's name, namespace and module.
const CALLEE: &str = "busy";
const CALLEE_NS: &str = "churn-b";
/// The caller's namespace (another than B's, so B is never embedded).
const CALLER_NS: &str = "churn-a";
/// How long a replica may take to register.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The payload of every call: `busy` spins for "0" ms (the spaces are
/// trimmed) and answers with it.
const PAYLOAD: [u8; 64] = {
    let mut p = [b' '; 64];
    p[0] = b'0';
    p
};
/// What the other callers of the slow phase send: 20 ms each.
const SLOW_CALL: &[u8] = b"20";
/// How many other callers make the replica on `n1` slow; with its one
/// call slot, one of them always waits.
const SLOW_CALLERS: usize = 2;

/// How a phase's change reaches the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A record in the node directory (inotify).
    NodeDirectory,
    /// An announcement in the cluster registry (its placement events).
    Registry,
    /// The load on a replica, from its answers (spill-over).
    Load,
}

/// What the churn experiment runs.
#[derive(Debug, Clone)]
pub struct ChurnConfig {
    /// The `cwasi` binary that serves the replicas.
    pub cwasi_exe: PathBuf,
    /// Where `churn.md` and `churn.csv` go.
    pub out: PathBuf,
    /// How long each phase lasts.
    pub phase: Duration,
    /// The pause between two calls of the steady caller.
    pub interval: Duration,
    /// Set to stop early (Ctrl-C).
    pub stop: Arc<AtomicBool>,
    /// Whether the other nodes and Redis run in a network namespace of
    /// their own (root and iproute2 needed).
    pub netns: bool,
}

impl ChurnConfig {
    /// Phases of 2 s, a call every 2 ms.
    pub fn new(cwasi_exe: PathBuf, out: PathBuf, stop: Arc<AtomicBool>) -> ChurnConfig {
        ChurnConfig {
            cwasi_exe,
            out,
            phase: Duration::from_secs(2),
            interval: Duration::from_millis(2),
            stop,
            netns: false,
        }
    }
}

/// What one phase measured.
#[derive(Debug, Clone)]
pub struct PhaseReport {
    /// What changed at its start.
    pub name: &'static str,
    /// Whether the change was planned (a start or a SIGTERM), so that no
    /// call may fail.
    pub planned: bool,
    /// How the change reaches the caller.
    pub seen: Seen,
    /// The cheapest path live in the phase.
    pub cheapest: Mode,
    /// Calls made in the phase.
    pub calls: usize,
    /// From the change to the first call on the cheapest path, if one came.
    pub switch_delay: Option<Duration>,
    /// Of the calls after that first one, the share on the cheapest path.
    pub on_cheapest: f64,
    /// Failed calls by code.
    pub failed: Vec<(ErrorCode, usize)>,
    /// The first failure's message, if a call failed.
    pub first_failure: Option<String>,
    /// The median and the 99th percentile of the calls' latency.
    pub p50: Duration,
    /// See `p50`.
    pub p99: Duration,
}

/// One call of the steady caller.
#[derive(Debug, Clone)]
struct CallRecord {
    at: Instant,
    took: Duration,
    mode: Option<Mode>,
    failed: Option<(ErrorCode, String)>,
}

/// A phase's change and the path it leaves cheapest.
struct PhaseMark {
    name: &'static str,
    at: Instant,
    planned: bool,
    seen: Seen,
    cheapest: Mode,
}

/// Runs the experiment; writes `churn.md` and `churn.csv` into
/// `config.out` and returns the phases.
pub fn run(config: &ChurnConfig) -> Result<Vec<PhaseReport>, BenchError> {
    let scratch = std::env::temp_dir().join(format!("cwasi-churn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let result = if config.netns {
        let net = Net::create()?;
        let place = net.placement()?;
        net.in_a(|| run_in(config, &scratch, &place))
    } else {
        run_in(config, &scratch, &Placement::Here)
    };
    let _ = std::fs::remove_dir_all(&scratch);
    let phases = result?;
    write(config, &phases)?;
    Ok(phases)
}

/// Runs the phases with the other nodes and Redis placed by `place`.
fn run_in(
    config: &ChurnConfig,
    scratch: &Path,
    place: &Placement,
) -> Result<Vec<PhaseReport>, BenchError> {
    let redis = match place {
        Placement::Here => RedisServer::start()?,
        Placement::Node { b, .. } => RedisServer::start_in(b.name(), b.addr(), &[])?,
    };
    let url = redis.url();
    let dir = |node: &str| -> Result<PathBuf, BenchError> {
        let d = scratch.join(node);
        NodeDirectory::open(&d).map_err(|e| BenchError::setup("churn", e))?;
        Ok(d)
    };
    let (n1, n2, n3) = (dir("n1")?, dir("n2")?, dir("n3")?);
    let module = scratch.join("busy.wasm");
    std::fs::write(&module, test_programs_artifacts::wasm_bytes!(BUSY))
        .map_err(|e| BenchError::output(&module, e))?;
    // n1 is the caller's node; the others are where B is placed.
    let replica = |node: &str, dir: &Path, listen: bool| {
        let cmd = match node {
            "n1" => Command::new(&config.cwasi_exe),
            _ => place.command(&config.cwasi_exe),
        };
        let listen = listen.then(|| format!("{}:0", place.b_ip()));
        // One call slot on the caller's node, which the slow phase fills.
        let slots: &[&str] = match node {
            "n1" => &["--max-concurrent", "1"],
            _ => &[],
        };
        Replica::start(cmd, &module, (node, dir, slots), &url, listen.as_deref())
    };

    let _broker_only = replica("n2", &n2, false)?;
    let caller = Runtime::builder()
        .node("n1")
        .node_directory(NodeDirectory::open(&n1).map_err(|e| BenchError::setup("churn", e))?)
        .broker(
            Broker::new(BrokerConfig::new(url.clone(), "n1"))
                .map_err(|e| BenchError::setup("churn", e))?,
        )
        .direct(DirectConfig {
            tls: None,
            allow_plain: true,
        })
        .build()
        .map_err(|e| BenchError::setup("churn", e))?;
    wait_for(&caller, Mode::RemoteBroker)?;

    // The other callers of the slow phase: a runtime of n1 that does not
    // spill, so that its calls stay on the replica there.
    let others = Runtime::builder()
        .node("n1")
        .limits(cwasi_runtime::Limits {
            spill_over: false,
            ..cwasi_runtime::Limits::default()
        })
        .node_directory(NodeDirectory::open(&n1).map_err(|e| BenchError::setup("churn", e))?)
        .build()
        .map_err(|e| BenchError::setup("churn", e))?;

    let calls = Mutex::new(Vec::new());
    let done = AtomicBool::new(false);
    let slow = AtomicBool::new(false);
    let mut marks = Vec::new();
    std::thread::scope(|s| -> Result<(), BenchError> {
        s.spawn(|| steady(&caller, config.interval, &done, &calls));
        for _ in 0..SLOW_CALLERS {
            s.spawn(|| slow_caller(&others, &slow, &done));
        }
        let result = schedule(config, &mut marks, &replica, &slow, (&n1, &n3));
        done.store(true, Ordering::Relaxed);
        result
    })?;
    let calls = calls.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(report(&marks, &calls))
}

/// The changes, one per phase; `slow` set makes the replica on n1 slow.
fn schedule(
    config: &ChurnConfig,
    marks: &mut Vec<PhaseMark>,
    replica: &dyn Fn(&str, &Path, bool) -> Result<Replica, BenchError>,
    slow: &AtomicBool,
    (n1, n3): (&Path, &Path),
) -> Result<(), BenchError> {
    let mut phase = |name, planned, seen, cheapest, at: Instant| {
        marks.push(PhaseMark {
            name,
            at,
            planned,
            seen,
            cheapest,
        });
        sleep_phase(config)
    };
    use Seen::{Load, NodeDirectory, Registry};
    phase(
        "B on n2, without a data address",
        true,
        Registry,
        Mode::RemoteBroker,
        Instant::now(),
    )?;
    let mut direct = replica("n3", n3, true)?;
    let at = direct.registered_at();
    phase(
        "B starts on n3, with a data address",
        true,
        Registry,
        Mode::RemoteDirect,
        at,
    )?;
    let mut local = replica("n1", n1, false)?;
    let at = local.registered_at();
    phase(
        "B starts on n1 (the caller's node)",
        true,
        NodeDirectory,
        Mode::Local,
        at,
    )?;
    let at = local.signal(Signal::TERM);
    local.wait();
    phase(
        "SIGTERM to B on n1 (planned stop)",
        true,
        NodeDirectory,
        Mode::RemoteDirect,
        at,
    )?;
    let mut local = replica("n1", n1, false)?;
    let at = local.registered_at();
    phase("B starts on n1 again", true, NodeDirectory, Mode::Local, at)?;
    let at = Instant::now();
    slow.store(true, Ordering::Relaxed);
    phase(
        "B on n1 gets slow (other callers fill its call slot)",
        true,
        Load,
        Mode::RemoteDirect,
        at,
    )?;
    let at = Instant::now();
    slow.store(false, Ordering::Relaxed);
    phase(
        "B on n1 recovers (the other callers stop)",
        true,
        Load,
        Mode::Local,
        at,
    )?;
    let at = local.signal(Signal::KILL);
    local.wait();
    phase(
        "SIGKILL to B on n1 (crash)",
        false,
        NodeDirectory,
        Mode::RemoteDirect,
        at,
    )?;
    let at = direct.signal(Signal::TERM);
    direct.wait();
    phase(
        "SIGTERM to B on n3 (planned stop)",
        true,
        Registry,
        Mode::RemoteBroker,
        at,
    )?;
    Ok(())
}

fn sleep_phase(config: &ChurnConfig) -> Result<(), BenchError> {
    let until = Instant::now() + config.phase;
    while Instant::now() < until {
        if config.stop.load(Ordering::Relaxed) {
            return Err(BenchError::Interrupted);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Waits until the caller would route B by `mode`.
fn wait_for(caller: &Runtime, mode: Mode) -> Result<(), BenchError> {
    let deadline = Instant::now() + START_TIMEOUT;
    while !caller
        .explain(CALLER_NS, CALLEE)
        .is_ok_and(|s| s.mode == mode)
    {
        if Instant::now() > deadline {
            return Err(BenchError::setup(
                "churn",
                format!("B was never routed {mode}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The steady caller: calls B until `done`, noting which path each call
/// took (the path whose counter it moved).
fn steady(caller: &Runtime, interval: Duration, done: &AtomicBool, calls: &Mutex<Vec<CallRecord>>) {
    let counts = |rt: &Runtime| -> Vec<(Mode, u64)> {
        rt.hops()
            .into_iter()
            .filter(|h| h.target == CALLEE)
            .map(|h| (h.mode, h.calls))
            .collect()
    };
    let mut before = counts(caller);
    while !done.load(Ordering::Relaxed) {
        let at = Instant::now();
        let result = caller.call_within(CALLER_NS, CALLEE, &PAYLOAD, Duration::from_secs(5));
        let took = at.elapsed();
        let after = counts(caller);
        let mode = after
            .iter()
            .find(|(m, n)| before.iter().find(|(b, _)| b == m).map_or(0, |(_, c)| *c) < *n)
            .map(|(m, _)| *m);
        before = after;
        lock(calls).push(CallRecord {
            at,
            took,
            mode,
            failed: result.err().map(|e| (e.code, e.message)),
        });
        std::thread::sleep(interval);
    }
}

/// One of the other callers of the slow phase: calls B on n1 back to back
/// with 20 ms calls while `slow` is set, until `done`.
fn slow_caller(others: &Runtime, slow: &AtomicBool, done: &AtomicBool) {
    while !done.load(Ordering::Relaxed) {
        if !slow.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        // A failure is the slow phase's own business, not the caller's.
        let _ = others.call_within(CALLER_NS, CALLEE, SLOW_CALL, Duration::from_secs(5));
    }
}

/// The phases' figures from the calls.
fn report(marks: &[PhaseMark], calls: &[CallRecord]) -> Vec<PhaseReport> {
    marks
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let end = marks.get(i + 1).map(|n| n.at);
            // A call belongs to the phase in which it returned: one in
            // flight at a SIGKILL fails in the crash's phase, where a
            // failure is allowed, not in the phase before it.
            let in_phase: Vec<&CallRecord> = calls
                .iter()
                .filter(|c| {
                    let returned = c.at + c.took;
                    returned >= m.at && end.is_none_or(|e| returned < e)
                })
                .collect();
            let first = in_phase
                .iter()
                .position(|c| c.failed.is_none() && c.mode == Some(m.cheapest));
            let switch_delay = first.map(|f| (in_phase[f].at + in_phase[f].took) - m.at);
            let after = first.map_or(&in_phase[..0], |f| &in_phase[f..]);
            let on = after
                .iter()
                .filter(|c| c.failed.is_none() && c.mode == Some(m.cheapest))
                .count();
            let on_cheapest = if after.is_empty() {
                0.0
            } else {
                on as f64 / after.len() as f64
            };
            let mut failed: Vec<(ErrorCode, usize)> = Vec::new();
            for code in in_phase
                .iter()
                .filter_map(|c| c.failed.as_ref().map(|f| f.0))
            {
                match failed.iter_mut().find(|(c, _)| *c == code) {
                    Some((_, n)) => *n += 1,
                    None => failed.push((code, 1)),
                }
            }
            let mut took: Vec<Duration> = in_phase.iter().map(|c| c.took).collect();
            took.sort_unstable();
            let pct = |p: f64| {
                took.get(((took.len() as f64 - 1.0) * p).round() as usize)
                    .copied()
                    .unwrap_or_default()
            };
            let first_failure = in_phase
                .iter()
                .find_map(|c| c.failed.as_ref())
                .map(|(code, message)| format!("{code}: {message}"));
            PhaseReport {
                first_failure,
                name: m.name,
                planned: m.planned,
                seen: m.seen,
                cheapest: m.cheapest,
                calls: in_phase.len(),
                switch_delay,
                on_cheapest,
                failed,
                p50: pct(0.5),
                p99: pct(0.99),
            }
        })
        .collect()
}

/// The phases as a markdown table with the targets, for `churn.md` and the
/// terminal.
pub fn markdown(phases: &[PhaseReport]) -> String {
    let mut out = String::from(
        "| change | cheapest path | calls | switch delay | on the cheapest path after it | failed | p50 | p99 |\n\
         |---|---|---:|---:|---:|---|---:|---:|\n",
    );
    for p in phases {
        let failed = if p.failed.is_empty() {
            "0".to_string()
        } else {
            p.failed
                .iter()
                .map(|(c, n)| format!("{n} {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.1} % | {failed} | {:.1} µs | {:.1} µs |",
            p.name,
            p.cheapest,
            p.calls,
            p.switch_delay.map_or("never".to_string(), |d| format!(
                "{:.1} ms",
                d.as_secs_f64() * 1e3
            )),
            p.on_cheapest * 100.0,
            p.p50.as_secs_f64() * 1e6,
            p.p99.as_secs_f64() * 1e6,
        );
    }
    // The first phase is the start, not a change.
    let changes = phases.get(1..).unwrap_or_default();
    for p in phases {
        if let Some(f) = &p.first_failure {
            let _ = writeln!(out, "\nFirst failure in \"{}\": {f}", p.name);
        }
    }
    let worst = |seen: Seen| {
        changes
            .iter()
            .filter(|p| p.seen == seen)
            .filter_map(|p| p.switch_delay)
            .max()
    };
    let share = phases
        .iter()
        .map(|p| p.on_cheapest)
        .fold(f64::INFINITY, f64::min);
    let planned_failed: usize = phases
        .iter()
        .filter(|p| p.planned)
        .flat_map(|p| p.failed.iter().map(|(_, n)| n))
        .sum();
    let ms = |d: Option<Duration>| {
        d.map_or("never".into(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1e3)
        })
    };
    let met = |ok: bool| if ok { "met" } else { "**missed**" };
    let node = worst(Seen::NodeDirectory);
    let registry = worst(Seen::Registry);
    let _ = write!(
        out,
        "\n| target | this run | |\n|---|---:|---|\n\
         | switch delay on the node directory <= 100 ms | {} | {} |\n\
         | switch delay through the registry <= 1 s | {} | {} |\n\
         | switch delay on load (spill, and back after a recheck) | {} | no target |\n\
         | >= 95 % of calls on the cheapest live path after the switch | {:.1} % | {} |\n\
         | 0 failed calls on planned changes | {planned_failed} | {} |\n",
        ms(node),
        met(node.is_some_and(|d| d <= Duration::from_millis(100))),
        ms(registry),
        met(registry.is_some_and(|d| d <= Duration::from_secs(1))),
        ms(worst(Seen::Load)),
        share * 100.0,
        met(share >= 0.95),
        met(planned_failed == 0),
    );
    out
}

fn write(config: &ChurnConfig, phases: &[PhaseReport]) -> Result<(), BenchError> {
    std::fs::create_dir_all(&config.out).map_err(|e| BenchError::output(&config.out, e))?;
    let md = config.out.join("churn.md");
    let placed = if config.netns {
        "n2, n3 and Redis in one network namespace, the caller and n1 in another (--netns)"
    } else {
        "every node and Redis on loopback"
    };
    let text = format!("Churn: {placed}.\n\n{}", markdown(phases));
    std::fs::write(&md, text).map_err(|e| BenchError::output(&md, e))?;
    let path = config.out.join("churn.csv");
    let mut w = csv::Writer::from_path(&path).map_err(|e| BenchError::output(&path, e))?;
    let header = [
        "change",
        "cheapest",
        "calls",
        "switch_delay_ms",
        "on_cheapest",
        "failed",
        "p50_us",
        "p99_us",
    ];
    w.write_record(header)
        .map_err(|e| BenchError::output(&path, e))?;
    for p in phases {
        let failed: usize = p.failed.iter().map(|(_, n)| n).sum();
        w.write_record([
            p.name.to_string(),
            p.cheapest.to_string(),
            p.calls.to_string(),
            p.switch_delay
                .map_or(String::new(), |d| format!("{:.3}", d.as_secs_f64() * 1e3)),
            format!("{:.4}", p.on_cheapest),
            failed.to_string(),
            format!("{:.1}", p.p50.as_secs_f64() * 1e6),
            format!("{:.1}", p.p99.as_secs_f64() * 1e6),
        ])
        .map_err(|e| BenchError::output(&path, e))?;
    }
    w.flush().map_err(|e| BenchError::output(&path, e))
}

/// A `cwasi serve` of B on one node; SIGKILLed on drop if still running.
struct Replica {
    child: Child,
    record: PathBuf,
}

impl Replica {
    /// Serves B on `node` with node directory `dir` and the arguments
    /// `extra`, announced in the registry at `url`, with a data address
    /// when `listen`; returns once its record is in `dir`.
    fn start(
        mut cmd: Command,
        module: &Path,
        (node, dir, extra): (&str, &Path, &[&str]),
        url: &str,
        listen: Option<&str>,
    ) -> Result<Replica, BenchError> {
        cmd.arg("serve")
            .arg(module)
            .args(extra)
            .args(["--name", CALLEE, "--namespace", CALLEE_NS])
            .arg("--runtime-dir")
            .arg(dir)
            .args(["--drain-secs", "5"])
            .env("CWASI_REDIS_URL", url)
            .env("CWASI_NODE", node)
            .env("CWASI_DIRECT_PLAIN", "1")
            .env_remove("CWASI_LISTEN")
            .env_remove("CWASI_RUNTIME_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(addr) = listen {
            cmd.args(["--listen", addr]);
        }
        redis_launcher::kill_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| BenchError::setup("churn", format!("cannot run cwasi serve: {e}")))?;
        let mut replica = Replica {
            child,
            record: dir.join(format!("{CALLEE}@{CALLEE_NS}.json")),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !replica.record.exists() {
            if let Ok(Some(status)) = replica.child.try_wait() {
                return Err(BenchError::setup(
                    "churn",
                    format!("the replica on {node} exited at start ({status})"),
                ));
            }
            if Instant::now() > deadline {
                return Err(BenchError::setup(
                    "churn",
                    format!("the replica on {node} did not register"),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(replica)
    }

    /// When its record was written, as an instant of this process's clock.
    fn registered_at(&self) -> Instant {
        let written = std::fs::metadata(&self.record)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        Instant::now() - written
    }

    /// Sends `signal`; returns when.
    fn signal(&mut self, signal: Signal) -> Instant {
        let at = Instant::now();
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            let _ = kill_process(pid, signal);
        }
        at
    }

    /// Waits for it to exit.
    fn wait(&mut self) {
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
