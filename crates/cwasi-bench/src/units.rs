//! Parsing and printing of sizes, durations and lists, as the command line
//! and the reports use them.

use std::time::Duration;

use crate::contender::MAX_FAN;
use crate::BenchError;

/// One kibibyte.
pub const KIB: usize = 1 << 10;
/// One mebibyte.
pub const MIB: usize = 1 << 20;

/// Parses a size such as `64`, `64B`, `1KiB`, `10MiB` or `1GiB` (binary
/// units; `K`, `KB`, `M`, `MB`, `G`, `GB` are accepted as the same).
pub fn parse_size(text: &str) -> Result<usize, BenchError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || {
        BenchError::BadInput(format!(
            "bad size '{text}': expected a number with an optional unit B, KiB, MiB or GiB (e.g. 64B, 1KiB, 10MiB)"
        ))
    };
    let n: usize = digits.parse().map_err(|_| bad())?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => KIB,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).filter(|&s| s > 0).ok_or_else(|| {
        BenchError::BadInput(format!(
            "bad size '{text}': must be between 1 B and the address space"
        ))
    })
}

/// Parses a comma-separated list of sizes (`1KiB,64KiB`).
pub fn parse_sizes(text: &str) -> Result<Vec<usize>, BenchError> {
    parse_list(text, parse_size)
}

/// Parses a comma-separated list of fan-out degrees (`1,2,4`), each from 1
/// to [`MAX_FAN`].
pub fn parse_counts(text: &str) -> Result<Vec<usize>, BenchError> {
    parse_list(text, |t| {
        t.trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_FAN).contains(n))
            .ok_or_else(|| {
                BenchError::BadInput(format!(
                    "bad fan-out degree '{t}': expected a whole number from 1 to {MAX_FAN}"
                ))
            })
    })
}

/// Parses a duration such as `3s`, `250ms` or `1.5s`.
pub fn parse_duration(text: &str) -> Result<Duration, BenchError> {
    let t = text.trim();
    let bad = || {
        BenchError::BadInput(format!(
            "bad duration '{text}': expected e.g. 3s, 1.5s or 250ms"
        ))
    };
    let (number, scale) = if let Some(ms) = t.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(s) = t.strip_suffix('s') {
        (s, 1.0)
    } else {
        return Err(bad());
    };
    let secs: f64 = number.trim().parse().map_err(|_| bad())?;
    let secs = secs * scale;
    if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
        return Err(BenchError::BadInput(format!(
            "bad duration '{text}': must be more than 0 and at most an hour"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a non-empty comma-separated list with `item`; duplicates are
/// dropped, order is kept.
pub fn parse_list<T: PartialEq>(
    text: &str,
    item: impl Fn(&str) -> Result<T, BenchError>,
) -> Result<Vec<T>, BenchError> {
    let mut out = Vec::new();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let v = item(part)?;
        if !out.contains(&v) {
            out.push(v);
        }
    }
    if out.is_empty() {
        return Err(BenchError::BadInput(format!("empty list '{text}'")));
    }
    Ok(out)
}

/// `64 B`, `1 KiB`, `10 MiB`: how sizes are shown in tables and plots.
pub fn size_label(size: usize) -> String {
    if size >= MIB && size.is_multiple_of(MIB) {
        format!("{} MiB", size / MIB)
    } else if size >= KIB && size.is_multiple_of(KIB) {
        format!("{} KiB", size / KIB)
    } else {
        format!("{size} B")
    }
}

/// A size as it appears in file names: `1MiB`.
pub fn size_tag(size: usize) -> String {
    size_label(size).replace(' ', "")
}

/// A time in ns, with a unit that keeps 3 or 4 digits.
pub fn fmt_ns(ns: f64) -> String {
    if !ns.is_finite() {
        "n/a".into()
    } else if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1_000_000_000.0 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_reject_garbage() {
        assert_eq!(parse_size("64").unwrap(), 64);
        assert_eq!(parse_size("64B").unwrap(), 64);
        assert_eq!(parse_size("1KiB").unwrap(), KIB);
        assert_eq!(parse_size(" 10 MiB ").unwrap(), 10 * MIB);
        assert_eq!(parse_sizes("1KiB,64KiB,1KiB").unwrap(), vec![KIB, 64 * KIB]);
        for bad in [
            "",
            "abc",
            "1XB",
            "0",
            "-5",
            "1.5MiB",
            "99999999999999999999GiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_sizes(",").is_err());
    }

    #[test]
    fn counts_and_durations_parse() {
        assert_eq!(parse_counts("1,2, 16").unwrap(), vec![1, 2, 16]);
        assert!(parse_counts("0").is_err());
        assert!(parse_counts("17").is_err());
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        for bad in ["", "3", "-1s", "nans", "infs", "0s", "2h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels() {
        assert_eq!(size_label(64), "64 B");
        assert_eq!(size_label(64 * KIB), "64 KiB");
        assert_eq!(size_tag(10 * MIB), "10MiB");
        assert_eq!(fmt_ns(1500.0), "1.5 µs");
    }
}
