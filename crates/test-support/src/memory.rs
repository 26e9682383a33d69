//! What a process holds in memory, as the kernel counts it: its resident
//! set (`VmRSS` of `/proc/PID/status`, and its anonymous, file and shared
//! memory parts), its proportional set (`Pss` of `/proc/PID/smaps_rollup`,
//! shared pages divided among the processes that map them), and its largest
//! mappings (`/proc/PID/smaps`), to name what stayed when a figure is too
//! high. Also the host pid of a container's task, from `ctr task ls`.

use std::fmt;

use crate::containerd::Containerd;

/// One reading of a process's memory, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Resident set (`VmRSS`).
    pub rss_kib: u64,
    /// Its anonymous part (`RssAnon`).
    pub anon_kib: u64,
    /// Its part in mapped files (`RssFile`).
    pub file_kib: u64,
    /// Its part in shared memory (`RssShmem`: memfd, tmpfs).
    pub shmem_kib: u64,
    /// Proportional set (`Pss` of `smaps_rollup`).
    pub pss_kib: u64,
}

impl Memory {
    /// Reads the memory of process `pid`; panics (a test failure) if it
    /// cannot be read.
    pub fn of(pid: u32) -> Memory {
        let status = read(pid, "status");
        let rollup = read(pid, "smaps_rollup");
        Memory {
            rss_kib: field(&status, "VmRSS:", pid),
            anon_kib: field(&status, "RssAnon:", pid),
            file_kib: field(&status, "RssFile:", pid),
            shmem_kib: field(&status, "RssShmem:", pid),
            pss_kib: field(&rollup, "Pss:", pid),
        }
    }

    /// The resident set in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }

    /// The proportional set in MiB.
    pub fn pss_mib(&self) -> f64 {
        self.pss_kib as f64 / 1024.0
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |kib: u64| kib as f64 / 1024.0;
        write!(
            f,
            "RSS {:.1} MiB (anon {:.1}, file {:.1}, shmem {:.1}), PSS {:.1} MiB",
            mib(self.rss_kib),
            mib(self.anon_kib),
            mib(self.file_kib),
            mib(self.shmem_kib),
            mib(self.pss_kib)
        )
    }
}

/// The processes of a container's task: its shim (the parent of `pid`) and
/// every descendant of that shim, `pid` included; the pids in ascending
/// order.
pub fn shim_family(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, parent_of(p)?)))
        .collect();
    let shim = parent_of(pid).unwrap_or_else(|| panic!("process {pid} has no parent"));
    let mut family = vec![shim];
    let mut i = 0;
    while i < family.len() {
        let of = family[i];
        family.extend(parents.iter().filter(|(_, pp)| *pp == of).map(|(p, _)| *p));
        i += 1;
    }
    family.sort_unstable();
    family
}

/// The summed proportional set of `pids`, in KiB (a process that is gone
/// counts nothing).
pub fn pss_of_all(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok())
        .filter_map(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        })
        .sum()
}

/// The parent pid of `pid` (`PPid:` of its status), if it still runs.
fn parent_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

/// The `count` mappings of process `pid` with the most resident memory, one
/// a line: resident KiB, size KiB and what is mapped (a path, `[heap]`, or
/// nothing for anonymous memory).
pub fn largest_mappings(pid: u32, count: usize) -> String {
    let smaps = read(pid, "smaps");
    let mut maps: Vec<(u64, u64, String)> = Vec::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let range = first;
            let name = line
                .split_whitespace()
                .skip(5)
                .collect::<Vec<_>>()
                .join(" ");
            let (start, end) = range.split_once('-').unwrap_or(("0", "0"));
            let size = u64::from_str_radix(end, 16).unwrap_or(0)
                - u64::from_str_radix(start, 16).unwrap_or(0);
            maps.push((0, size / 1024, format!("{range} {name}")));
        } else if first == "Rss:" {
            if let Some(m) = maps.last_mut() {
                m.0 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            }
        }
    }
    maps.sort_by_key(|m| std::cmp::Reverse(m.0));
    maps.iter()
        .take(count)
        .map(|(rss, size, what)| format!("  {rss:>8} KiB resident of {size:>10} KiB  {what}\n"))
        .collect()
}

/// The host pid of the task of container `id` (`ctr task ls`); panics if
/// it has none.
pub fn task_pid(c: &Containerd, id: &str) -> u32 {
    let out = c.ctr_output(&["task", "ls"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines().skip(1) {
        let mut words = line.split_whitespace();
        if words.next() == Some(id) {
            if let Some(pid) = words.next().and_then(|p| p.parse().ok()) {
                return pid;
            }
        }
    }
    panic!(
        "no task of container {id} in `ctr task ls`: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(pid: u32, file: &str) -> String {
    let path = format!("/proc/{pid}/{file}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The value in KiB of `name` (`Name:   1234 kB`) in a `/proc` file.
fn field(text: &str, name: &str, pid: u32) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_can_be_read() {
        let me = Memory::of(std::process::id());
        assert!(me.rss_kib > 0 && me.pss_kib > 0, "{me}");
        assert!(
            me.anon_kib + me.file_kib + me.shmem_kib <= me.rss_kib + 4,
            "{me}"
        );
        let maps = largest_mappings(std::process::id(), 3);
        assert_eq!(maps.lines().count(), 3, "{maps}");
        let me = std::process::id();
        let family = shim_family(me);
        assert!(family.contains(&me), "{family:?}");
        assert!(pss_of_all(&family) >= pss_of_all(&[me]), "{family:?}");
    }

    #[test]
    fn fields_are_read_in_kib() {
        let text = "Name:\tx\nVmRSS:\t   2048 kB\nRssAnon:\t  100 kB\n";
        assert_eq!(field(text, "VmRSS:", 1), 2048);
        assert_eq!(field(text, "RssAnon:", 1), 100);
    }
}
