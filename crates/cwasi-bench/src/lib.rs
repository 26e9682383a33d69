//! `cwasi bench`: the experiments of the CWASI paper, run on one machine
//! against the ways platforms exchange data today and against memcpy.
//!
//! - [`Experiment`]: sequential A→B, fan-out A→N×B, fan-in N×B→A and
//!   sustained throughput;
//! - [`Kind`]: what is compared: the modes embedded, local, remote-direct
//!   (plain TCP, and mutual TLS) and remote-broker, the baselines
//!   `redis-storage` and `http`, and the floors `tcp` and `memcpy`;
//! - [`run`]: measures every selected experiment for every selected
//!   contender and writes CSV, a markdown summary and SVG plots; with
//!   [`Config::netns`], the Bs of the network contenders run in another
//!   network namespace than A.
//!
//! See docs/benchmarks.md for the method.

pub mod churn;
mod contender;
mod error;
mod measure;
mod plot;
mod procfs;
mod report;
mod units;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use contender::{Kind, MAX_FAN};
pub use error::BenchError;
pub use measure::Budget;
pub use units::{parse_counts, parse_duration, parse_size, parse_sizes, size_label, KIB, MIB};

use contender::pool::Job;
use contender::{Contender, Net, Parties, Placement, Pool};
use procfs::CpuTime;

/// One of the paper's experiments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Experiment {
    /// A hands one payload to B; latency against payload size.
    Sequential,
    /// A hands the same payload to N Bs at once.
    FanOut,
    /// N Bs each hand a payload to A at once.
    FanIn,
    /// A hands payloads to B back to back for a fixed time.
    Throughput,
    /// A calls B once after B has been idle for [`IDLE_GAP`]: what a call
    /// costs when B sleeps instead of spinning.
    AfterIdle,
    /// Nothing is called for [`Config::idle_window`]: the CPU that A and a
    /// served B use while idle.
    Idle,
    /// A steady caller while replicas of B come and go ([`churn`]); run
    /// only when asked for (`--only churn`), not among [`Experiment::ALL`].
    Churn,
}

/// How long B is left idle before each call of the after-idle experiment.
pub const IDLE_GAP: Duration = Duration::from_millis(100);

impl Experiment {
    /// Every experiment, in run order.
    pub const ALL: [Experiment; 6] = [
        Experiment::Sequential,
        Experiment::FanOut,
        Experiment::FanIn,
        Experiment::Throughput,
        Experiment::AfterIdle,
        Experiment::Idle,
    ];

    /// The name on the command line and of its CSV file.
    pub fn name(self) -> &'static str {
        match self {
            Experiment::Sequential => "sequential",
            Experiment::FanOut => "fan-out",
            Experiment::FanIn => "fan-in",
            Experiment::Throughput => "throughput",
            Experiment::AfterIdle => "after-idle",
            Experiment::Idle => "idle",
            Experiment::Churn => "churn",
        }
    }

    /// Parses a name of [`Experiment::name`].
    pub fn parse(text: &str) -> Result<Experiment, BenchError> {
        let t = text.trim();
        Experiment::ALL
            .into_iter()
            .chain([Experiment::Churn])
            .find(|e| e.name() == t)
            .ok_or_else(|| {
                BenchError::BadInput(format!(
                    "unknown experiment '{t}' (expected: sequential, fan-out, fan-in, throughput, after-idle, idle, churn)"
                ))
            })
    }

    /// Parses a comma-separated list of experiments.
    pub fn parse_list(text: &str) -> Result<Vec<Experiment>, BenchError> {
        units::parse_list(text, Experiment::parse)
    }
}

/// Parses a comma-separated list of contenders (`embedded,memcpy`).
pub fn parse_kinds(text: &str) -> Result<Vec<Kind>, BenchError> {
    units::parse_list(text, Kind::parse)
}

/// What a run measures and where it writes.
#[derive(Debug, Clone)]
pub struct Config {
    /// `full` or `quick`, for the report.
    pub profile: &'static str,
    /// Experiments to run.
    pub experiments: Vec<Experiment>,
    /// Contenders to compare.
    pub kinds: Vec<Kind>,
    /// Payload sizes of the sequential experiment.
    pub sizes: Vec<usize>,
    /// Payload sizes of fan-out and fan-in.
    pub fan_sizes: Vec<usize>,
    /// Fan-out degrees N.
    pub fan_counts: Vec<usize>,
    /// Payload sizes of the throughput experiment.
    pub throughput_sizes: Vec<usize>,
    /// How long each throughput measurement runs.
    pub throughput_duration: Duration,
    /// Payload sizes of the after-idle experiment.
    pub after_idle_sizes: Vec<usize>,
    /// Calls timed in the after-idle experiment, each after [`IDLE_GAP`].
    pub after_idle_calls: usize,
    /// How long the idle experiment watches the CPU.
    pub idle_window: Duration,
    /// Warm-up and sampling budget of each latency measurement.
    pub budget: Budget,
    /// The output directory.
    pub out: PathBuf,
    /// The `cwasi` binary that serves B in local and remote mode.
    pub cwasi_exe: PathBuf,
    /// Whether to show a progress bar (only drawn on a terminal).
    pub progress: bool,
    /// Whether A and the Bs of the network contenders run in two network
    /// namespaces joined by veth pairs and a bridge, instead of on
    /// loopback (needs root and iproute2).
    pub netns: bool,
    /// Set from outside (a signal handler) to end the run early: it stops
    /// at the next operation with [`BenchError::Interrupted`], after
    /// stopping and removing everything it started.
    pub stop: Arc<AtomicBool>,
}

impl Config {
    /// The full run: the paper's sizes (plus 64 B for the small-payload
    /// targets) and a 2 s sampling budget per point.
    pub fn full(cwasi_exe: PathBuf) -> Config {
        Config {
            profile: "full",
            experiments: Experiment::ALL.to_vec(),
            kinds: Kind::ALL.to_vec(),
            sizes: vec![
                64,
                KIB,
                64 * KIB,
                MIB,
                2 * MIB,
                10 * MIB,
                30 * MIB,
                100 * MIB,
            ],
            fan_sizes: vec![MIB, 10 * MIB],
            fan_counts: vec![1, 2, 4, 8, 16],
            throughput_sizes: vec![64, MIB],
            throughput_duration: Duration::from_secs(3),
            after_idle_sizes: vec![64],
            after_idle_calls: 30,
            idle_window: Duration::from_secs(10),
            budget: Budget {
                warmup: Duration::from_millis(300),
                time: Duration::from_secs(2),
                min_samples: 10,
                max_samples: 200_000,
            },
            out: default_out_dir(),
            cwasi_exe,
            progress: true,
            netns: false,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A run of under 2 minutes: fewer sizes and degrees, short budgets.
    pub fn quick(cwasi_exe: PathBuf) -> Config {
        Config {
            profile: "quick",
            sizes: vec![64, KIB, 64 * KIB, MIB, 10 * MIB, 100 * MIB],
            fan_sizes: vec![MIB],
            fan_counts: vec![1, 4, 16],
            throughput_duration: Duration::from_millis(500),
            after_idle_calls: 5,
            idle_window: Duration::from_secs(1),
            budget: Budget {
                warmup: Duration::from_millis(50),
                time: Duration::from_millis(250),
                min_samples: 3,
                max_samples: 50_000,
            },
            ..Config::full(cwasi_exe)
        }
    }

    /// The measurements this configuration makes.
    fn points(&self) -> Vec<Point> {
        let mut out = Vec::new();
        for &e in &self.experiments {
            match e {
                Experiment::Sequential => out.extend(self.sizes.iter().map(|&size| Point {
                    experiment: e,
                    size,
                    n: 1,
                })),
                Experiment::FanOut | Experiment::FanIn => {
                    for &size in &self.fan_sizes {
                        out.extend(self.fan_counts.iter().map(|&n| Point {
                            experiment: e,
                            size,
                            n,
                        }))
                    }
                }
                Experiment::Throughput => {
                    out.extend(self.throughput_sizes.iter().map(|&size| Point {
                        experiment: e,
                        size,
                        n: 1,
                    }))
                }
                Experiment::AfterIdle => {
                    out.extend(self.after_idle_sizes.iter().map(|&size| Point {
                        experiment: e,
                        size,
                        n: 1,
                    }))
                }
                Experiment::Idle => out.push(Point {
                    experiment: e,
                    size: 0,
                    n: 1,
                }),
                // Run by itself (`churn::run`), not as points.
                Experiment::Churn => {}
            }
        }
        out
    }
}

/// `bench-results/<UTC timestamp>`.
pub fn default_out_dir() -> PathBuf {
    PathBuf::from("bench-results").join(utc_timestamp(SystemTime::now()))
}

/// `YYYY-MM-DDTHH-MM-SSZ` (no colons, so that it is a portable file name).
fn utc_timestamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}-{:02}-{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One measured point of an experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// The experiment.
    pub experiment: Experiment,
    /// Payload size of each hand-off, in bytes.
    pub size: usize,
    /// Number of Bs (1 except in fan-out and fan-in).
    pub n: usize,
}

/// CPU time per operation, in ns.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuPerOp {
    /// User mode.
    pub user: f64,
    /// Kernel.
    pub sys: f64,
}

/// What one contender achieved at one point.
#[derive(Debug, Clone)]
pub struct Row {
    /// Where.
    pub point: Point,
    /// Who.
    pub kind: Kind,
    /// Number of samples.
    pub samples: usize,
    /// Operations measured (an operation moves `n` payloads).
    pub ops: u64,
    /// Operations per sample (fast operations are timed in batches).
    pub batch: u64,
    /// Median time per operation, in ns.
    pub median_ns: f64,
    /// 99th percentile, in ns.
    pub p99_ns: f64,
    /// Mean over the sampling phase, wall clock, in ns.
    pub mean_ns: f64,
    /// Hand-offs per second (n per operation).
    pub calls_per_s: f64,
    /// Payload bytes moved per second, in GB/s (10^9).
    pub gb_per_s: f64,
    /// CPU of the benchmark process, without B's threads: A (and B too, in
    /// embedded mode and memcpy).
    pub cpu_a: CpuPerOp,
    /// CPU of B's processes or threads.
    pub cpu_b: CpuPerOp,
    /// CPU of redis-server, when it carries the data.
    pub cpu_redis: CpuPerOp,
    /// Peak RSS of the benchmark process during this measurement, KiB.
    pub rss_a_kib: u64,
    /// RSS of the benchmark process when the measurement started, KiB: the
    /// process is shared by every contender and keeps memory its allocator
    /// retained from earlier points, so `rss_a_kib - rss_a_base_kib` is what
    /// this measurement added.
    pub rss_a_base_kib: u64,
    /// Peak RSS of B's processes (summed), KiB; 0 when B is in A's process.
    pub rss_b_kib: u64,
    /// Peak RSS of redis-server, KiB; 0 when Redis does not take part.
    pub rss_redis_kib: u64,
}

impl Row {
    /// What A's peak memory grew by during the measurement, KiB.
    pub fn rss_a_growth_kib(&self) -> u64 {
        self.rss_a_kib.saturating_sub(self.rss_a_base_kib)
    }

    /// The time compared in ratios: the median latency, or for throughput
    /// the mean time per call (the inverse of calls/s).
    pub fn compared_ns(&self) -> f64 {
        match self.point.experiment {
            Experiment::Throughput => self.mean_ns,
            _ => self.median_ns,
        }
    }
}

/// How many times slower `numerator` was than `denominator` at one point.
#[derive(Debug, Clone)]
pub struct Ratio {
    /// Where.
    pub point: Point,
    /// The slower side, usually.
    pub numerator: Kind,
    /// The reference.
    pub denominator: Kind,
    /// `numerator / denominator` of [`Row::compared_ns`].
    pub value: f64,
}

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct Results {
    /// The configuration it ran with.
    pub config: Config,
    /// One row per point and contender.
    pub rows: Vec<Row>,
    /// How long the run took.
    pub elapsed: Duration,
    /// Where the parties ran (loopback, or network namespaces).
    pub placement: String,
}

impl Results {
    /// Every mode against memcpy, every remote mode against raw TCP, and
    /// every baseline against every mode, at every point where both were
    /// measured.
    pub fn ratios(&self) -> Vec<Ratio> {
        let mut out = Vec::new();
        let find = |p: Point, k: Kind| self.rows.iter().find(|r| r.point == p && r.kind == k);
        let mut points: Vec<Point> = Vec::new();
        for r in &self.rows {
            if !points.contains(&r.point) {
                points.push(r.point);
            }
        }
        let modes = || Kind::ALL.into_iter().filter(|k| k.is_mode());
        let mut pairs: Vec<(Kind, Kind)> = modes().map(|m| (m, Kind::Memcpy)).collect();
        pairs.extend(modes().filter(|k| k.is_remote()).map(|m| (m, Kind::Tcp)));
        for b in Kind::ALL.into_iter().filter(|k| k.is_baseline()) {
            pairs.extend(modes().map(|m| (b, m)));
        }
        // Idle has no time to compare, only CPU.
        for p in points
            .into_iter()
            .filter(|p| p.experiment != Experiment::Idle)
        {
            for &(num, den) in &pairs {
                if let (Some(a), Some(b)) = (find(p, num), find(p, den)) {
                    out.push(Ratio {
                        point: p,
                        numerator: num,
                        denominator: den,
                        value: a.compared_ns() / b.compared_ns(),
                    });
                }
            }
        }
        out
    }
}

/// The files a run wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The output directory.
    pub dir: PathBuf,
    /// Every file, CSV, markdown and SVG.
    pub files: Vec<PathBuf>,
}

/// Runs the configured experiments and writes the results into
/// `config.out`. Progress goes to stderr; nothing is printed to stdout.
/// With [`Config::netns`] it first makes two network namespaces and
/// measures from a thread inside the first (see `contender::placement`);
/// they are deleted before it returns, whatever happened.
pub fn run(config: &Config) -> Result<(Results, Written), BenchError> {
    validate(config)?;
    let started = Instant::now();
    let (rows, placement) = if config.netns {
        let net = Net::create()?;
        let place = net.placement()?;
        let rows = net.in_a(|| measure_all(config, &place))?;
        (rows, place.describe())
    } else {
        let place = Placement::Here;
        (measure_all(config, &place)?, place.describe())
    };
    let results = Results {
        config: config.clone(),
        rows,
        elapsed: started.elapsed(),
        placement,
    };
    let written = report::write_all(&results)?;
    Ok((results, written))
}

/// Measures every point of every contender, B placed by `place`. Redis runs
/// where B does: on loopback, or in node B.
fn measure_all(config: &Config, place: &Placement) -> Result<Vec<Row>, BenchError> {
    let points = config.points();
    let scratch = Scratch::create()?;
    let redis = if config.kinds.iter().any(|k| k.needs_redis()) {
        Some(match place {
            Placement::Here => redis_launcher::RedisServer::start()?,
            Placement::Node { b, .. } => {
                redis_launcher::RedisServer::start_in(b.name(), b.addr(), &[])?
            }
        })
    } else {
        None
    };
    let guests = contender::Guests::write(&scratch.0)?;
    let setup = contender::Setup {
        cwasi_exe: &config.cwasi_exe,
        scratch: &scratch.0,
        redis: redis.as_ref(),
        guests: &guests,
        placement: place,
    };
    let max_n = points.iter().map(|p| p.n).max().unwrap_or(1);
    let pool = Pool::new(max_n)?;
    let bar = progress_bar(config, (points.len() * config.kinds.len()) as u64);
    let mut rows = Vec::new();
    for &kind in &config.kinds {
        measure::check_stop(&config.stop)?;
        bar.set_message(format!("starting {kind}"));
        let c = contender::start(kind, &setup)?;
        place.check(kind, &c.parties())?;
        for &p in &points {
            bar.set_message(format!(
                "{} {} {}{}",
                p.experiment.name(),
                kind,
                units::size_label(p.size),
                if p.n > 1 {
                    format!(" x{}", p.n)
                } else {
                    String::new()
                }
            ));
            rows.push(measure_point(config, &c, &pool, p)?);
            c.verify()?;
            bar.inc(1);
        }
        bar.set_message(format!("stopping {kind}"));
        drop(c);
    }
    bar.finish_and_clear();
    drop(pool);
    drop(redis);
    Ok(rows)
}

fn validate(config: &Config) -> Result<(), BenchError> {
    let empty = |what: &str| Err(BenchError::BadInput(format!("nothing to run: no {what}")));
    if config.experiments.is_empty() {
        return empty("experiment");
    }
    if config.kinds.is_empty() {
        return empty("mode or baseline");
    }
    if config.points().is_empty() {
        return empty("size or fan-out degree");
    }
    if let Some(&n) = config.fan_counts.iter().find(|&&n| n == 0 || n > MAX_FAN) {
        return Err(BenchError::BadInput(format!(
            "fan-out of {n} is outside 1..={MAX_FAN}"
        )));
    }
    Ok(())
}

fn progress_bar(config: &Config, total: u64) -> indicatif::ProgressBar {
    if !config.progress || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A private directory for node directories; removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn create() -> Result<Scratch, BenchError> {
        let dir = std::env::temp_dir().join(format!("cwasi-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| BenchError::output(&dir, e))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// CPU time of the parties so far: A (this process without B's threads), B
/// and Redis.
fn cpu_now(parties: &Parties) -> [CpuTime; 3] {
    let all = procfs::process_cpu(std::process::id());
    let b_threads = parties
        .b_threads
        .iter()
        .fold(CpuTime::default(), |acc, &t| {
            acc.plus(procfs::thread_cpu(t))
        });
    let b_procs = parties
        .b_processes
        .iter()
        .fold(CpuTime::default(), |acc, &p| {
            acc.plus(procfs::process_cpu(p))
        });
    let redis = parties.redis.map(procfs::process_cpu).unwrap_or_default();
    [all.since(b_threads), b_threads.plus(b_procs), redis]
}

fn reset_peaks(parties: &Parties) {
    procfs::reset_peak_rss(std::process::id());
    for &p in parties.b_processes.iter().chain(parties.redis.iter()) {
        procfs::reset_peak_rss(p);
    }
}

fn measure_point(
    config: &Config,
    c: &Arc<dyn Contender>,
    pool: &Pool,
    p: Point,
) -> Result<Row, BenchError> {
    c.prepare(p.size)?;
    let payload: Arc<[u8]> = (0..p.size).map(|i| (i * 31 + 7) as u8).collect();
    let budget = match p.experiment {
        Experiment::Throughput => Budget {
            time: config.throughput_duration,
            min_samples: 1,
            max_samples: usize::MAX,
            ..config.budget
        },
        _ => config.budget,
    };
    let parties = c.parties();
    reset_peaks(&parties);
    let rss_a_base_kib = procfs::rss_kib(std::process::id());
    let before = cpu_now(&parties);
    let job_out = Job::Send(payload.clone());
    let job_in = Job::Fetch(p.size);
    let s = match p.experiment {
        Experiment::AfterIdle => {
            measure::after_idle(IDLE_GAP, config.after_idle_calls, &config.stop, || {
                c.send(0, &payload)
            })?
        }
        Experiment::Idle => measure::idle(config.idle_window, &config.stop)?,
        _ => measure::measure(&budget, &config.stop, || match p.experiment {
            Experiment::FanOut => pool.run(c, &job_out, p.n),
            Experiment::FanIn => pool.run(c, &job_in, p.n),
            _ => c.send(0, &payload),
        })?,
    };
    let after = cpu_now(&parties);
    let all_ops = (s.ops + s.warm_ops).max(1) as f64;
    let per_op = |i: usize| {
        let d = after[i].since(before[i]);
        CpuPerOp {
            user: d.user_ns as f64 / all_ops,
            sys: d.sys_ns as f64 / all_ops,
        }
    };
    let wall_ns = s.wall.as_nanos().max(1) as f64;
    let moved = (p.n * p.size) as f64;
    Ok(Row {
        point: p,
        kind: c.kind(),
        samples: s.count(),
        ops: s.ops,
        batch: s.batch,
        median_ns: s.median(),
        p99_ns: s.p99(),
        mean_ns: s.mean(),
        calls_per_s: (p.n as u64 * s.ops) as f64 * 1e9 / wall_ns,
        gb_per_s: moved * s.ops as f64 / wall_ns,
        cpu_a: per_op(0),
        cpu_b: per_op(1),
        cpu_redis: per_op(2),
        rss_a_kib: procfs::peak_rss_kib(std::process::id()),
        rss_a_base_kib,
        rss_b_kib: parties
            .b_processes
            .iter()
            .map(|&p| procfs::peak_rss_kib(p))
            .sum(),
        rss_redis_kib: parties.redis.map(procfs::peak_rss_kib).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_civil_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        assert_eq!(utc_timestamp(t), "2026-11-30T00-53-20Z");
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00-00-00Z");
    }

    #[test]
    fn names_parse_and_lists_reject_unknowns() {
        assert_eq!(
            parse_kinds("embedded,memcpy").unwrap(),
            vec![Kind::Embedded, Kind::Memcpy]
        );
        assert!(parse_kinds("embedded,fax").is_err());
        // `remote` is the old name of remote-broker.
        assert_eq!(
            parse_kinds("remote,remote-direct,tcp").unwrap(),
            vec![Kind::RemoteBroker, Kind::RemoteDirect, Kind::Tcp]
        );
        assert!(Kind::ALL
            .iter()
            .all(|k| k.is_network() == (k.is_remote() || !k.is_mode()) || *k == Kind::Memcpy));
        assert_eq!(
            Experiment::parse_list("fan-in,sequential").unwrap(),
            vec![Experiment::FanIn, Experiment::Sequential]
        );
        assert!(Experiment::parse_list("everything").is_err());
    }

    #[test]
    fn quick_points_cover_every_experiment() {
        let c = Config::quick(PathBuf::from("cwasi"));
        let pts = c.points();
        for e in Experiment::ALL {
            assert!(pts.iter().any(|p| p.experiment == e), "{e:?}");
        }
        assert!(validate(&c).is_ok());
        let mut none = c.clone();
        none.kinds.clear();
        assert!(validate(&none).is_err());
    }
}
