//! CPU time and peak memory of the processes and threads taking part, read
//! from `/proc` (Linux only, like the rest of CWASI).

/// Clock ticks per second of `/proc/*/stat` (`USER_HZ`, fixed at 100 in the
/// Linux user ABI).
const TICKS_PER_SEC: u64 = 100;

/// CPU time used so far, in ns (10 ms resolution).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTime {
    /// Time in user mode.
    pub user_ns: u64,
    /// Time in the kernel on its behalf.
    pub sys_ns: u64,
}

impl CpuTime {
    /// What was used between `earlier` and `self`.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user_ns: self.user_ns.saturating_sub(earlier.user_ns),
            sys_ns: self.sys_ns.saturating_sub(earlier.sys_ns),
        }
    }

    /// Sum of two.
    pub fn plus(self, other: CpuTime) -> CpuTime {
        CpuTime {
            user_ns: self.user_ns + other.user_ns,
            sys_ns: self.sys_ns + other.sys_ns,
        }
    }
}

/// The CPU time in a `stat` file (`/proc/<pid>/stat` or a task's), or zero
/// if it cannot be read (the process is gone).
fn stat_cpu(path: &str) -> CpuTime {
    let Ok(text) = std::fs::read_to_string(path) else {
        return CpuTime::default();
    };
    // Fields after the command name, which may contain spaces and ')'.
    let Some((_, rest)) = text.rsplit_once(')') else {
        return CpuTime::default();
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 14 (utime) and 15 (stime) of proc(5); `rest` starts at field 3.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let ns = |t: u64| t * (1_000_000_000 / TICKS_PER_SEC);
    CpuTime {
        user_ns: ns(ticks(11)),
        sys_ns: ns(ticks(12)),
    }
}

/// CPU time of every thread of process `pid` so far.
pub fn process_cpu(pid: u32) -> CpuTime {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

/// CPU time of thread `tid` of this process so far.
pub fn thread_cpu(tid: u32) -> CpuTime {
    stat_cpu(&format!("/proc/self/task/{tid}/stat"))
}

/// The id of the calling thread (from `/proc/thread-self`), for
/// [`thread_cpu`].
pub fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// A `kB` field of `/proc/<pid>/status`, or 0 if it cannot be read.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Peak resident memory of process `pid` since start or since the last
/// [`reset_peak_rss`], in KiB (`VmHWM`); 0 if it cannot be read.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM")
}

/// Resident memory of process `pid` now, in KiB (`VmRSS`); 0 if it cannot
/// be read.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// Resets the peak resident memory of `pid` to its current resident memory
/// (`echo 5 > /proc/<pid>/clear_refs`, Linux 4.0+), so that each measurement
/// reports its own peak. Returns whether the kernel accepted it.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        let start = process_cpu(pid);
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        let used = process_cpu(pid).since(start);
        assert!(used.user_ns + used.sys_ns > 0, "{used:?}");
        let tid = current_tid().expect("thread id");
        assert!(thread_cpu(tid).user_ns > 0);
        assert!(peak_rss_kib(pid) > 0);
        assert!(rss_kib(pid) > 0 && rss_kib(pid) <= peak_rss_kib(pid));
        reset_peak_rss(pid);
        assert!(peak_rss_kib(pid) > 0);
        assert_eq!(peak_rss_kib(u32::MAX), 0);
    }
}
