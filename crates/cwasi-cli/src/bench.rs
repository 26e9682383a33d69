//! `cwasi bench`: the command line of the `cwasi-bench` experiments.

use crate::console::note;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use cwasi_bench::churn::ChurnConfig;
use cwasi_bench::{Config, Experiment, Kind};

/// The exit status of an interrupted run (128 + SIGINT, as shells report it).
const INTERRUPTED: i32 = 130;

/// A comma-separated list parsed as one value (clap would treat a `Vec`
/// field as a repeated flag).
type List<T> = Vec<T>;

/// Reproduces the paper's experiments on this machine: CWASI's modes against
/// redis-storage, HTTP, raw TCP and memcpy.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// A run of under 2 minutes (fewer sizes, short budgets).
    #[arg(long)]
    quick: bool,
    /// Experiments to run: sequential, fan-out, fan-in, throughput,
    /// after-idle, idle (comma-separated; default: all of these), and
    /// churn (a steady caller while replicas of B start, stop and crash;
    /// only when named).
    #[arg(long, value_name = "LIST", value_parser = |s: &str| Experiment::parse_list(s).map_err(|e| e.to_string()))]
    only: Option<List<Experiment>>,
    /// What to compare: embedded, local, remote-direct, remote-direct-tls,
    /// remote-broker, redis-storage, http, tcp, memcpy (comma-separated;
    /// default: all). `remote` is accepted as the old name of remote-broker.
    #[arg(long, value_name = "LIST", value_parser = |s: &str| cwasi_bench::parse_kinds(s).map_err(|e| e.to_string()))]
    modes: Option<List<Kind>>,
    /// Payload sizes of the sequential experiment, e.g. 1KiB,64KiB,10MiB.
    #[arg(long, value_name = "LIST", value_parser = |s: &str| cwasi_bench::parse_sizes(s).map_err(|e| e.to_string()))]
    sizes: Option<List<usize>>,
    /// Payload sizes of fan-out and fan-in, e.g. 1MiB,10MiB.
    #[arg(long, value_name = "LIST", value_parser = |s: &str| cwasi_bench::parse_sizes(s).map_err(|e| e.to_string()))]
    fan_sizes: Option<List<usize>>,
    /// Fan-out and fan-in degrees N, e.g. 1,2,4,8,16 (at most 16).
    #[arg(long, value_name = "LIST", value_parser = |s: &str| cwasi_bench::parse_counts(s).map_err(|e| e.to_string()))]
    fanout: Option<List<usize>>,
    /// Payload sizes of the throughput experiment, e.g. 64B,1MiB.
    #[arg(long, value_name = "LIST", value_parser = |s: &str| cwasi_bench::parse_sizes(s).map_err(|e| e.to_string()))]
    throughput_sizes: Option<List<usize>>,
    /// How long each throughput point runs, e.g. 3s or 200ms.
    #[arg(long, value_name = "TIME", value_parser = |s: &str| cwasi_bench::parse_duration(s).map_err(|e| e.to_string()))]
    duration: Option<std::time::Duration>,
    /// Sampling time of each latency point, e.g. 2s or 100ms.
    #[arg(long, value_name = "TIME", value_parser = |s: &str| cwasi_bench::parse_duration(s).map_err(|e| e.to_string()))]
    budget: Option<std::time::Duration>,
    /// Warm-up of each point, e.g. 300ms.
    #[arg(long, value_name = "TIME", value_parser = |s: &str| cwasi_bench::parse_duration(s).map_err(|e| e.to_string()))]
    warmup: Option<std::time::Duration>,
    /// Minimum samples per latency point.
    #[arg(long, value_name = "N")]
    min_samples: Option<usize>,
    /// Calls timed by the after-idle experiment, each after 100 ms of idle.
    #[arg(long, value_name = "N")]
    after_idle_calls: Option<usize>,
    /// How long the idle experiment watches the CPU, e.g. 10s.
    #[arg(long, value_name = "TIME", value_parser = |s: &str| cwasi_bench::parse_duration(s).map_err(|e| e.to_string()))]
    idle_window: Option<std::time::Duration>,
    /// Output directory (default: bench-results/<UTC timestamp>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The cwasi binary that serves B in local and remote mode (default:
    /// this one).
    #[arg(long, value_name = "PATH")]
    cwasi: Option<PathBuf>,
    /// Does not show a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Runs A and the B of every network contender (remote-*, http,
    /// redis-storage, tcp) in two network namespaces joined by veth pairs
    /// and a bridge, so that traffic crosses two IP stacks instead of
    /// loopback. Needs root and iproute2; the namespaces are deleted at the
    /// end.
    #[arg(long)]
    netns: bool,
}

/// Runs the benchmark and prints the summary.
pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let exe = match args.cwasi {
        Some(p) => p,
        None => std::env::current_exe().context("cannot find the cwasi binary")?,
    };
    let mut c = if args.quick {
        Config::quick(exe)
    } else {
        Config::full(exe)
    };
    if let Some(v) = args.only {
        c.experiments = v;
    }
    if let Some(v) = args.modes {
        c.kinds = v;
    }
    if let Some(v) = args.sizes {
        c.sizes = v;
    }
    if let Some(v) = args.fan_sizes {
        c.fan_sizes = v;
    }
    if let Some(v) = args.fanout {
        c.fan_counts = v;
    }
    if let Some(v) = args.throughput_sizes {
        c.throughput_sizes = v;
    }
    if let Some(v) = args.duration {
        c.throughput_duration = v;
    }
    if let Some(v) = args.budget {
        c.budget.time = v;
    }
    if let Some(v) = args.warmup {
        c.budget.warmup = v;
    }
    if let Some(v) = args.min_samples {
        c.budget.min_samples = v.max(1);
    }
    if let Some(v) = args.after_idle_calls {
        c.after_idle_calls = v.max(1);
    }
    if let Some(v) = args.idle_window {
        c.idle_window = v;
    }
    if let Some(v) = args.out {
        c.out = v;
    }
    c.progress = !args.no_progress;
    c.netns = args.netns;
    // Ctrl-C, SIGTERM or SIGHUP end the run at its next operation, so that
    // its servers, Redis and scratch directory are stopped and removed; a
    // second one exits at once.
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register_conditional_shutdown(signal, INTERRUPTED, c.stop.clone())
            .and_then(|_| signal_hook::flag::register(signal, c.stop.clone()))
            .context("cannot install the signal handlers")?;
    }
    let started = Instant::now();
    note!(
        "cwasi bench ({}): writing to {}",
        c.profile,
        c.out.display()
    );
    // The churn experiment runs by itself, before the others (if any).
    let churn = c.experiments.contains(&Experiment::Churn);
    c.experiments.retain(|e| *e != Experiment::Churn);
    if churn {
        let mut config = ChurnConfig::new(c.cwasi_exe.clone(), c.out.clone(), c.stop.clone());
        config.netns = c.netns;
        if args.quick {
            config.phase = std::time::Duration::from_secs(1);
        }
        let phases = match cwasi_bench::churn::run(&config) {
            Ok(p) => p,
            Err(e @ cwasi_bench::BenchError::Interrupted) => {
                note!("cwasi bench: {e}");
                return Ok(ExitCode::from(INTERRUPTED as u8));
            }
            Err(e) => return Err(e.into()),
        };
        let table = format!("{}\n", cwasi_bench::churn::markdown(&phases));
        crate::console::output(table.as_bytes())?;
        if c.experiments.is_empty() {
            note!(
                "cwasi bench: churn.md and churn.csv in {} ({:.1} s)",
                c.out.display(),
                started.elapsed().as_secs_f64()
            );
            return Ok(ExitCode::SUCCESS);
        }
    }
    let written = match cwasi_bench::run(&c) {
        Ok((_, written)) => written,
        Err(e @ cwasi_bench::BenchError::Interrupted) => {
            note!("cwasi bench: {e}");
            return Ok(ExitCode::from(INTERRUPTED as u8));
        }
        Err(e) => return Err(e.into()),
    };
    let summary = written.dir.join("summary.md");
    let text = std::fs::read_to_string(&summary)
        .with_context(|| format!("cannot read {}", summary.display()))?;
    crate::console::output(format!("{text}\n").as_bytes())?;
    note!(
        "cwasi bench: {} files in {} ({:.1} s)",
        written.files.len(),
        written.dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
