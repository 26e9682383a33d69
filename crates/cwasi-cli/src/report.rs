//! Text reports printed after a run: routing decisions and per-hop timings.

use std::fmt::Write;
use std::time::Duration;

use cwasi_runtime::{Decision, HopReport};

/// One line per distinct decision, in the order they were first made: the
/// caller → callee edge, the mode and why, or the error. A decision made
/// again (a path that came back, a denial repeated on every call) is listed
/// once, with how often it was made.
pub fn explain(decisions: &[Decision]) -> String {
    let mut out = String::from("explain:\n");
    if decisions.is_empty() {
        out.push_str("  (no calls were made)\n");
    }
    let mut distinct: Vec<(String, usize)> = Vec::new();
    for d in decisions {
        let line = d.to_string();
        match distinct.iter_mut().find(|(seen, _)| *seen == line) {
            Some((_, times)) => *times += 1,
            None => distinct.push((line, 1)),
        }
    }
    for (line, times) in distinct {
        if times == 1 {
            let _ = writeln!(out, "  {line}");
        } else {
            let _ = writeln!(out, "  {line} ({times} times)");
        }
    }
    out
}

/// How an entry's run ended, for the line above the table.
pub enum Ended {
    /// `_start` returned (with any exit code), or the entry, a function,
    /// answered.
    Finished,
    /// It was refused before it ran (not an entry, unknown).
    Refused,
    /// It trapped or was stopped.
    Failed,
}

/// A table of calls per edge with bytes moved and times.
pub fn hops(entry: &str, ended: Ended, elapsed: Duration, hops: &[HopReport]) -> String {
    let how = match ended {
        Ended::Finished => "finished in",
        Ended::Refused => "was refused after",
        Ended::Failed => "failed after",
    };
    let mut out = format!("entry '{entry}' {how} {}\n", fmt_duration(elapsed));
    if hops.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "  {:<28} {:<9} {:>6} {:>6} {:>11} {:>11} {:>10} {:>10}",
        "hop", "mode", "calls", "failed", "sent", "received", "avg", "max"
    );
    for h in hops {
        // Nothing timed: "-" in both columns, never a time of zero.
        let avg = h.mean().map_or_else(|| "-".to_string(), fmt_duration);
        let max = if h.timed == 0 {
            "-".to_string()
        } else {
            fmt_duration(h.max)
        };
        let _ = writeln!(
            out,
            "  {:<28} {:<9} {:>6} {:>6} {:>11} {:>11} {:>10} {:>10}",
            format!("{} -> {}", h.caller, h.target),
            h.mode.name(),
            h.calls,
            h.failures,
            fmt_bytes(h.bytes_in),
            fmt_bytes(h.bytes_out),
            avg,
            max
        );
    }
    out
}

fn fmt_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

fn fmt_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_units() {
        assert_eq!(fmt_bytes(10), "10 B");
        assert_eq!(fmt_bytes(10 << 20), "10.0 MiB");
        assert_eq!(fmt_duration(Duration::from_micros(1500)), "1.50 ms");
    }

    #[test]
    fn explain_lists_each_distinct_decision_once() {
        use cwasi_runtime::{Mode, Selection};
        let decision = |mode, reason: &str| Decision {
            caller: "a".into(),
            target: "b".into(),
            outcome: Ok(Selection {
                mode,
                reason: reason.into(),
            }),
        };
        let text = explain(&[
            decision(Mode::Local, "served on this node"),
            decision(Mode::Embedded, "loaded here"),
            decision(Mode::Local, "served on this node"),
            decision(Mode::Local, "served on this node"),
        ]);
        assert_eq!(
            text,
            "explain:\n  a -> b: local (served on this node) (3 times)\n  a -> b: embedded (loaded here)\n"
        );
        assert_eq!(explain(&[]), "explain:\n  (no calls were made)\n");
    }
}
