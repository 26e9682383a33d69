//! The SVG plots of a run: latency against size (log-log), fan-out and
//! fan-in latency against N, throughput bars, and CPU and memory bars.

use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::units::{size_label, size_tag};
use crate::{BenchError, Experiment, Kind, Results, Row};

const WIDTH: u32 = 900;
const HEIGHT: u32 = 560;

/// A stable colour per contender.
fn color(k: Kind) -> RGBColor {
    match k {
        Kind::Embedded => RGBColor(0x1b, 0x9e, 0x77),
        Kind::Local => RGBColor(0x75, 0x70, 0xb3),
        Kind::RemoteDirect => RGBColor(0xe7, 0x29, 0x8a),
        Kind::RemoteDirectTls => RGBColor(0xa6, 0x36, 0x03),
        Kind::RemoteBroker => RGBColor(0xe6, 0xab, 0x02),
        Kind::RedisStorage => RGBColor(0xd9, 0x5f, 0x02),
        Kind::Http => RGBColor(0x66, 0xa6, 0x1e),
        Kind::Tcp => RGBColor(0x1f, 0x78, 0xb4),
        Kind::Memcpy => RGBColor(0x44, 0x44, 0x44),
    }
}

/// Writes every plot the results allow and returns their paths.
pub fn write_all(results: &Results, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
    let mut out = Vec::new();
    let rows_of = |e: Experiment| -> Vec<&Row> {
        results
            .rows
            .iter()
            .filter(|r| r.point.experiment == e)
            .collect()
    };
    let seq = rows_of(Experiment::Sequential);
    if !seq.is_empty() {
        let path = dir.join("sequential.svg");
        line_chart(
            &path,
            "Sequential A→B: median latency against payload size",
            "payload (bytes)",
            "median latency (µs)",
            &series(&seq, |r| r.point.size as f64),
        )?;
        out.push(path);
    }
    for e in [Experiment::FanOut, Experiment::FanIn] {
        let rows = rows_of(e);
        let mut sizes: Vec<usize> = rows.iter().map(|r| r.point.size).collect();
        sizes.sort_unstable();
        sizes.dedup();
        for size in sizes {
            let at: Vec<&Row> = rows
                .iter()
                .copied()
                .filter(|r| r.point.size == size)
                .collect();
            let path = dir.join(format!("{}-{}.svg", e.name(), size_tag(size)));
            let title = match e {
                Experiment::FanOut => {
                    format!("Fan-out A→N×B of {}: median latency", size_label(size))
                }
                _ => format!("Fan-in N×B→A of {}: median latency", size_label(size)),
            };
            line_chart(
                &path,
                &title,
                "N (callees)",
                "median latency (µs)",
                &series(&at, |r| r.point.n as f64),
            )?;
            out.push(path);
        }
    }
    let tp = rows_of(Experiment::Throughput);
    if !tp.is_empty() {
        let path = dir.join("throughput.svg");
        let mut sizes: Vec<usize> = tp.iter().map(|r| r.point.size).collect();
        sizes.sort_unstable();
        sizes.dedup();
        let panels: Vec<(String, Vec<(Kind, f64)>)> = sizes
            .iter()
            .map(|&s| {
                (
                    format!("{}: calls/s", size_label(s)),
                    tp.iter()
                        .filter(|r| r.point.size == s)
                        .map(|r| (r.kind, r.calls_per_s))
                        .collect(),
                )
            })
            .collect();
        bar_chart(&path, "Throughput, one caller back to back", &panels)?;
        out.push(path);
    }
    if let Some(largest) = seq.iter().map(|r| r.point.size).max() {
        let at: Vec<&Row> = seq
            .iter()
            .copied()
            .filter(|r| r.point.size == largest)
            .collect();
        let path = dir.join("resources.svg");
        let cpu = at
            .iter()
            .map(|r| {
                let c = r.cpu_a.user
                    + r.cpu_a.sys
                    + r.cpu_b.user
                    + r.cpu_b.sys
                    + r.cpu_redis.user
                    + r.cpu_redis.sys;
                (r.kind, c / 1e3)
            })
            .collect();
        let rss = at
            .iter()
            .map(|r| {
                let kib = r.rss_a_growth_kib() + r.rss_b_kib + r.rss_redis_kib;
                (r.kind, kib as f64 / 1024.0)
            })
            .collect();
        bar_chart(
            &path,
            &format!(
                "Sequential {}: CPU and peak memory of all processes",
                size_label(largest)
            ),
            &[
                ("CPU time per hand-off, all parties (µs)".into(), cpu),
                ("peak RSS: A's growth + B + Redis (MiB)".into(), rss),
            ],
        )?;
        out.push(path);
    }
    Ok(out)
}

type Series = Vec<(Kind, Vec<(f64, f64)>)>;

/// Median latency in µs against `x`, one series per contender.
fn series(rows: &[&Row], x: impl Fn(&Row) -> f64) -> Series {
    let mut out: Series = Vec::new();
    for k in Kind::ALL {
        let mut pts: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.kind == k)
            .map(|r| (x(r), r.median_ns / 1e3))
            .filter(|(x, y)| x.is_finite() && y.is_finite() && *x > 0.0 && *y > 0.0)
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        if !pts.is_empty() {
            out.push((k, pts));
        }
    }
    out
}

/// Bounds of a log axis that hold `values` with some room.
fn log_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        (0.1, 10.0)
    } else {
        // Whole decades, so that every axis has labelled ticks.
        (
            10f64.powf((lo / 1.5).log10().floor()),
            10f64.powf((hi * 1.5).log10().ceil()),
        )
    }
}

fn line_chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    data: &Series,
) -> Result<(), BenchError> {
    let err = |e: &dyn std::fmt::Display| BenchError::output(path, e);
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (x0, x1) = log_bounds(data.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)));
    let (y0, y1) = log_bounds(data.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(8)
        .x_label_formatter(&|v| {
            if x_desc.starts_with("payload") {
                axis_label(*v, true)
            } else {
                format!("{v:.0}")
            }
        })
        .y_label_formatter(&|v| axis_label(*v, false))
        .draw()
        .map_err(|e| err(&e))?;
    for (k, pts) in data {
        let c = color(*k);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(k.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// A tick label: bytes in B/kB/MB/GB (the log axis ticks at powers of
/// ten), other values compactly.
fn axis_label(v: f64, bytes: bool) -> String {
    if bytes {
        return match v {
            v if v >= 1e9 => format!("{} GB", v / 1e9),
            v if v >= 1e6 => format!("{} MB", v / 1e6),
            v if v >= 1e3 => format!("{} kB", v / 1e3),
            v => format!("{v} B"),
        };
    }
    if v >= 1e6 || (v > 0.0 && v < 1e-2) {
        format!("{v:.0e}")
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// One panel of bars per entry, side by side, on log axes.
fn bar_chart(
    path: &Path,
    title: &str,
    panels: &[(String, Vec<(Kind, f64)>)],
) -> Result<(), BenchError> {
    let err = |e: &dyn std::fmt::Display| BenchError::output(path, e);
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| err(&e))?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (area, (caption, bars)) in areas.iter().zip(panels) {
        let bars: Vec<(Kind, f64)> = bars
            .iter()
            .copied()
            .filter(|(_, v)| v.is_finite() && *v > 0.0)
            .collect();
        let (lo, hi) = log_bounds(bars.iter().map(|b| b.1));
        // A segmented range `0..k` has k + 1 segments.
        let n = bars.len().max(1) as i32;
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(60)
            .y_label_area_size(65)
            .build_cartesian_2d((0..n - 1).into_segmented(), (lo..hi).log_scale())
            .map_err(|e| err(&e))?;
        let names: Vec<&str> = bars.iter().map(|b| b.0.name()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n as usize)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => {
                    names.get(*i as usize).copied().unwrap_or("").to_string()
                }
                _ => String::new(),
            })
            .x_label_style(("sans-serif", 11))
            .y_label_formatter(&|v| axis_label(*v, false))
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, &(k, v))| {
                let i = i as i32;
                let mut r = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), lo),
                        (SegmentValue::Exact(i + 1), v),
                    ],
                    color(k).filled(),
                );
                r.set_margin(0, 0, 6, 6);
                r
            }))
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}
