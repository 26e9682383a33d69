//! The files of a run: a CSV per experiment, `ratios.csv`, `summary.md`
//! and the SVG plots of [`crate::plot`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::units::{fmt_ns, size_label};
use crate::{plot, BenchError, Experiment, Kind, Results, Row, Written};

/// The columns of every experiment's CSV.
const COLUMNS: [&str; 25] = [
    "experiment",
    "contender",
    "size_bytes",
    "n",
    "samples",
    "ops",
    "batch",
    "median_ns",
    "p99_ns",
    "mean_ns",
    "calls_per_s",
    "gb_per_s",
    "cpu_a_user_ns_per_op",
    "cpu_a_sys_ns_per_op",
    "cpu_b_user_ns_per_op",
    "cpu_b_sys_ns_per_op",
    "cpu_redis_user_ns_per_op",
    "cpu_redis_sys_ns_per_op",
    "rss_a_kib",
    "rss_a_base_kib",
    "rss_b_kib",
    "rss_redis_kib",
    "cpu_total_ns_per_op",
    "rss_a_growth_b_redis_kib",
    "compared_ns",
];

fn record(r: &Row) -> Vec<String> {
    let f = |v: f64| format!("{v:.3}");
    let cpu_total = r.cpu_a.user
        + r.cpu_a.sys
        + r.cpu_b.user
        + r.cpu_b.sys
        + r.cpu_redis.user
        + r.cpu_redis.sys;
    vec![
        r.point.experiment.name().into(),
        r.kind.name().into(),
        r.point.size.to_string(),
        r.point.n.to_string(),
        r.samples.to_string(),
        r.ops.to_string(),
        r.batch.to_string(),
        f(r.median_ns),
        f(r.p99_ns),
        f(r.mean_ns),
        f(r.calls_per_s),
        format!("{:.6}", r.gb_per_s),
        f(r.cpu_a.user),
        f(r.cpu_a.sys),
        f(r.cpu_b.user),
        f(r.cpu_b.sys),
        f(r.cpu_redis.user),
        f(r.cpu_redis.sys),
        r.rss_a_kib.to_string(),
        r.rss_a_base_kib.to_string(),
        r.rss_b_kib.to_string(),
        r.rss_redis_kib.to_string(),
        f(cpu_total),
        (r.rss_a_growth_kib() + r.rss_b_kib + r.rss_redis_kib).to_string(),
        f(r.compared_ns()),
    ]
}

fn write_csv(
    path: &Path,
    header: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
) -> Result<(), BenchError> {
    let err = |e: csv::Error| BenchError::output(path, e);
    let mut w = csv::Writer::from_path(path).map_err(err)?;
    w.write_record(header).map_err(err)?;
    for r in rows {
        w.write_record(&r).map_err(err)?;
    }
    w.flush().map_err(|e| BenchError::output(path, e))
}

/// Writes every file of `results` into its output directory.
pub fn write_all(results: &Results) -> Result<Written, BenchError> {
    let dir = results.config.out.clone();
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::output(&dir, e))?;
    let mut files: Vec<PathBuf> = Vec::new();
    for e in experiments(results) {
        let path = dir.join(format!("{}.csv", e.name()));
        let rows = results.rows.iter().filter(|r| r.point.experiment == e);
        write_csv(&path, &COLUMNS, rows.map(record))?;
        files.push(path);
    }
    let path = dir.join("ratios.csv");
    write_csv(
        &path,
        &[
            "experiment",
            "size_bytes",
            "n",
            "numerator",
            "denominator",
            "ratio",
        ],
        results.ratios().into_iter().map(|r| {
            vec![
                r.point.experiment.name().into(),
                r.point.size.to_string(),
                r.point.n.to_string(),
                r.numerator.name().into(),
                r.denominator.name().into(),
                format!("{:.4}", r.value),
            ]
        }),
    )?;
    files.push(path);
    let svgs = plot::write_all(results, &dir)?;
    let path = dir.join("summary.md");
    std::fs::write(&path, summary(results, &svgs)).map_err(|e| BenchError::output(&path, e))?;
    files.push(path);
    files.extend(svgs);
    Ok(Written { dir, files })
}

/// The experiments that have rows, in run order.
fn experiments(results: &Results) -> Vec<Experiment> {
    Experiment::ALL
        .into_iter()
        .filter(|e| results.rows.iter().any(|r| r.point.experiment == *e))
        .collect()
}

/// The contenders that have rows, in report order.
fn kinds(results: &Results) -> Vec<Kind> {
    Kind::ALL
        .into_iter()
        .filter(|k| results.rows.iter().any(|r| r.kind == *k))
        .collect()
}

/// The CPU `cpu` of an idle-experiment row, in % of one core over its
/// window.
fn idle_share(r: &Row, cpu: crate::CpuPerOp) -> f64 {
    100.0 * (cpu.user + cpu.sys) / r.median_ns.max(1.0)
}

fn point_label(r: &Row) -> String {
    match r.point.experiment {
        Experiment::FanOut | Experiment::FanIn => {
            format!("{} x {}", r.point.n, size_label(r.point.size))
        }
        Experiment::Idle => format!("{:.0} s", r.median_ns / 1e9),
        _ => size_label(r.point.size),
    }
}

fn mib(kib: u64) -> String {
    if kib == 0 {
        "-".into()
    } else {
        format!("{:.0}", kib as f64 / 1024.0)
    }
}

/// The markdown summary: setup, one latency table per experiment, the
/// ratios, the resources, and the targets of the mode issues.
pub fn summary(results: &Results, svgs: &[PathBuf]) -> String {
    let c = &results.config;
    let mut md = String::new();
    let _ = writeln!(md, "# cwasi bench: {} run\n", c.profile);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let _ = writeln!(
        md,
        "- machine: {cpus} CPUs, Linux {}, load average at end {}",
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = writeln!(
        md,
        "- budget per point: warm-up {:?}, sampling {:?} (at least {} samples); throughput {:?} per point",
        c.budget.warmup, c.budget.time, c.budget.min_samples, c.throughput_duration
    );
    let _ = writeln!(md, "- placement: {}", results.placement);
    let _ = writeln!(md, "- run took {:.1} s\n", results.elapsed.as_secs_f64());
    let ks = kinds(results);
    for e in experiments(results) {
        let rows: Vec<&Row> = results
            .rows
            .iter()
            .filter(|r| r.point.experiment == e)
            .collect();
        let mut labels: Vec<String> = Vec::new();
        for r in &rows {
            let l = point_label(r);
            if !labels.contains(&l) {
                labels.push(l);
            }
        }
        let (title, metric) = match e {
            Experiment::Throughput => (
                "Throughput (one caller, back to back): calls/s and GB/s",
                "calls/s (GB/s)",
            ),
            Experiment::Sequential => ("Sequential A→B: median (p99) latency", "median (p99)"),
            Experiment::FanOut => (
                "Fan-out A→N×B: median (p99) latency of the whole fan-out",
                "median (p99)",
            ),
            Experiment::FanIn => (
                "Fan-in N×B→A: median (p99) latency of the whole fan-in",
                "median (p99)",
            ),
            Experiment::AfterIdle => (
                "After idle: A→B latency of a call made after B was idle for 100 ms",
                "median (p99)",
            ),
            Experiment::Idle => (
                "Idle: CPU used while nothing is called",
                "CPU of B (of A) over the window, in % of one core",
            ),
            // Has no points: its own churn.md.
            Experiment::Churn => continue,
        };
        let _ = writeln!(md, "## {title}\n");
        let _ = writeln!(md, "Cells: {metric}.\n");
        let _ = write!(md, "| point |");
        for k in &ks {
            let _ = write!(md, " {k} |");
        }
        let _ = write!(md, "\n|---|");
        for _ in &ks {
            let _ = write!(md, "---:|");
        }
        md.push('\n');
        for l in &labels {
            let _ = write!(md, "| {l} |");
            for k in &ks {
                let cell = rows
                    .iter()
                    .find(|r| r.kind == *k && point_label(r) == *l)
                    .map(|r| match e {
                        Experiment::Throughput => {
                            format!("{:.0} ({:.3})", r.calls_per_s, r.gb_per_s)
                        }
                        Experiment::Idle => format!(
                            "{:.3}% ({:.3}%)",
                            idle_share(r, r.cpu_b),
                            idle_share(r, r.cpu_a)
                        ),
                        _ => format!("{} ({})", fmt_ns(r.median_ns), fmt_ns(r.p99_ns)),
                    })
                    .unwrap_or_else(|| "-".into());
                let _ = write!(md, " {cell} |");
            }
            md.push('\n');
        }
        md.push('\n');
    }
    ratios_section(results, &mut md);
    resources_section(results, &mut md);
    targets_section(results, &mut md);
    if !svgs.is_empty() {
        let _ = writeln!(md, "## Plots\n");
        for s in svgs {
            if let Some(name) = s.file_name().and_then(|n| n.to_str()) {
                let _ = writeln!(md, "![{name}]({name})");
            }
        }
    }
    md
}

fn ratios_section(results: &Results, md: &mut String) {
    let ratios = results.ratios();
    if ratios.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "## Ratios\n\nEach mode against memcpy, each remote mode against raw TCP, and each baseline against each mode (a/b of the median; of the mean time per call for throughput). Above 1: a is slower.\n"
    );
    let mut pairs: Vec<(Kind, Kind)> = Vec::new();
    for r in &ratios {
        if !pairs.contains(&(r.numerator, r.denominator)) {
            pairs.push((r.numerator, r.denominator));
        }
    }
    let _ = write!(md, "| experiment | point |");
    for (a, b) in &pairs {
        let _ = write!(md, " {a}/{b} |");
    }
    let _ = write!(md, "\n|---|---|");
    for _ in &pairs {
        let _ = write!(md, "---:|");
    }
    md.push('\n');
    let mut points = Vec::new();
    for r in &ratios {
        if !points.contains(&r.point) {
            points.push(r.point);
        }
    }
    for p in points {
        let label = if p.n > 1 || matches!(p.experiment, Experiment::FanOut | Experiment::FanIn) {
            format!("{} x {}", p.n, size_label(p.size))
        } else {
            size_label(p.size)
        };
        let _ = write!(md, "| {} | {label} |", p.experiment.name());
        for (a, b) in &pairs {
            let v = ratios
                .iter()
                .find(|r| r.point == p && r.numerator == *a && r.denominator == *b)
                .map_or("-".into(), |r| format!("{:.2}", r.value));
            let _ = write!(md, " {v} |");
        }
        md.push('\n');
    }
    md.push('\n');
}

fn resources_section(results: &Results, md: &mut String) {
    let _ = writeln!(
        md,
        "## CPU and memory\n\nCPU time per operation (user + sys) of A (the benchmark process, without B's threads), B (its processes or threads) and redis-server. Memory in MiB: for A, what its peak RSS grew by during the point (the process is shared by all contenders and keeps memory retained from earlier points; its absolute peak is in the CSV); for B's processes and redis-server, their peak RSS (VmHWM, reset before each point); `-`: not a separate process, or not taking part. Embedded and memcpy run B inside A, and the baselines and tcp run B as threads of A (in node B with `--netns`).\n"
    );
    let _ = writeln!(
        md,
        "| experiment | point | contender | CPU A | CPU B | CPU redis | A growth | RSS B | RSS redis |\n|---|---|---|---:|---:|---:|---:|---:|---:|"
    );
    for r in &results.rows {
        let cpu = |c: crate::CpuPerOp| fmt_ns(c.user + c.sys);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {:.0} | {} | {} |",
            r.point.experiment.name(),
            point_label(r),
            r.kind,
            cpu(r.cpu_a),
            cpu(r.cpu_b),
            cpu(r.cpu_redis),
            r.rss_a_growth_kib() as f64 / 1024.0,
            mib(r.rss_b_kib),
            mib(r.rss_redis_kib)
        );
    }
    md.push('\n');
}

/// The targets of local mode's small calls, where this run measured them.
fn local_targets(results: &Results, md: &mut String) {
    let row = |e: Experiment, k: Kind, size: usize| {
        results
            .rows
            .iter()
            .find(|r| r.point.experiment == e && r.kind == k && r.point.size == size)
    };
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let mut line = |what: &str, text: Option<String>| {
        let text = text.unwrap_or_else(|| "not measured in this run".into());
        let _ = writeln!(md, "- {what}: {text}");
    };
    let local = row(Experiment::Sequential, Kind::Local, 64);
    line(
        "local 64 B back to back <= 5 µs median",
        local.map(|r| {
            format!(
                "{}: {}",
                fmt_ns(r.median_ns),
                verdict(r.median_ns <= 5_000.0)
            )
        }),
    );
    line(
        "local >= 200,000 calls/s at 64 B from one caller",
        row(Experiment::Throughput, Kind::Local, 64).map(|r| {
            format!(
                "{:.0} calls/s: {}",
                r.calls_per_s,
                verdict(r.calls_per_s >= 200_000.0)
            )
        }),
    );
    line(
        "an idle served function (local B) uses < 1% of a core",
        row(Experiment::Idle, Kind::Local, 0).map(|r| {
            let share = idle_share(r, r.cpu_b);
            format!("{share:.3}%: {}", verdict(share < 1.0))
        }),
    );
}

/// The targets of the mode issues, checked where this run measured them.
fn targets_section(results: &Results, md: &mut String) {
    let _ = writeln!(md, "## Targets (printed, never asserted)\n");
    let seq = |k: Kind, size: usize| {
        results
            .rows
            .iter()
            .find(|r| {
                r.point.experiment == Experiment::Sequential && r.kind == k && r.point.size == size
            })
            .map(Row::compared_ns)
    };
    let mut line = |what: String, a: Option<f64>, b: Option<f64>, ok: &dyn Fn(f64) -> bool| {
        let text = match (a, b) {
            (Some(a), Some(b)) => {
                let v = a / b;
                format!("{v:.2}x: {}", if ok(v) { "met" } else { "MISSED" })
            }
            _ => "not measured in this run".into(),
        };
        let _ = writeln!(md, "- {what}: {text}");
    };
    let ten = 10 * crate::MIB;
    line(
        "embedded <= 1.5x memcpy at 10 MiB".into(),
        seq(Kind::Embedded, ten),
        seq(Kind::Memcpy, ten),
        &|v| v <= 1.5,
    );
    line(
        "local <= 2x memcpy at 10 MiB".into(),
        seq(Kind::Local, ten),
        seq(Kind::Memcpy, ten),
        &|v| v <= 2.0,
    );
    for (size, factor) in [(ten, 25.0), (64, 100.0)] {
        for k in [Kind::Embedded, Kind::Local] {
            line(
                format!(
                    "{k} >= {factor}x faster than redis-storage at {} (redis-storage/{k})",
                    size_label(size)
                ),
                seq(Kind::RedisStorage, size),
                seq(k, size),
                &|v| v >= factor,
            );
        }
    }
    // Local mode's small calls (issue 14).
    for (base, factor) in [(Kind::RedisStorage, 25.0), (Kind::Http, 5.0)] {
        line(
            format!("local >= {factor}x faster than {base} at 64 B ({base}/local)"),
            seq(base, 64),
            seq(Kind::Local, 64),
            &|v| v >= factor,
        );
    }
    let big: Vec<usize> = {
        let mut v: Vec<usize> = results
            .rows
            .iter()
            .filter(|r| r.point.experiment == Experiment::Sequential && r.point.size >= crate::MIB)
            .map(|r| r.point.size)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    for &size in &big {
        line(
            format!(
                "remote-direct <= 1.2x raw TCP at {} (remote-direct/tcp)",
                size_label(size)
            ),
            seq(Kind::RemoteDirect, size),
            seq(Kind::Tcp, size),
            &|v| v <= 1.2,
        );
    }
    line(
        "remote-direct <= 1.5x the raw TCP round trip at 64 B (remote-direct/tcp)".into(),
        seq(Kind::RemoteDirect, 64),
        seq(Kind::Tcp, 64),
        &|v| v <= 1.5,
    );
    let mut sizes: Vec<usize> = results
        .rows
        .iter()
        .filter(|r| r.point.experiment == Experiment::Sequential)
        .map(|r| r.point.size)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    for &size in &sizes {
        line(
            format!(
                "remote-direct faster than http at {} (http/remote-direct > 1)",
                size_label(size)
            ),
            seq(Kind::Http, size),
            seq(Kind::RemoteDirect, size),
            &|v| v > 1.0,
        );
    }
    local_targets(results, md);
    let _ = writeln!(
        md,
        "- remote-broker <= 1.2x raw Redis SET+GET: measured by `cargo bench -p cwasi-runtime --bench remote` (see docs/benchmarks.md); here remote-broker/redis-storage (SET + notification + GET) is in the ratios above\n"
    );
}
