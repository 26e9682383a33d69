//! Thread placement shared by the benchmarks that run a caller and a server
//! in one process (`local.rs`, `remote.rs`): the calling thread on one CPU
//! and the serving threads on another (`--split`), every thread on one CPU
//! (`--same-cpu`), or placement left to the scheduler (`--no-pin`); each
//! benchmark has its own default. See docs/benchmarks.md.

/// The flags that choose a placement, for `common::Args::parse`.
pub const FLAGS: [&str; 3] = ["--split", "--same-cpu", "--no-pin"];

/// Where the threads run.
#[derive(Clone, Copy)]
pub enum Placement {
    /// The calling thread on one CPU; the threads that answer (a runtime's
    /// server threads, a baseline's echo thread) on another.
    Split { caller: usize, server: usize },
    /// Every thread on one CPU.
    Same(usize),
    /// Wherever the scheduler puts them.
    Free,
}

impl Placement {
    /// The placement the given flags (of [`FLAGS`]) ask for, or the one of
    /// `preferred` ("--split" or "--same-cpu") if none does. `--no-pin` wins
    /// over the others.
    pub fn from_flags(flags: &[String], preferred: &str) -> Placement {
        let flag = |f: &str| flags.iter().any(|g| g == f);
        let same = match preferred {
            "--same-cpu" => !flag("--split"),
            _ => flag("--same-cpu"),
        };
        Placement::choose(same, flag("--no-pin"))
    }

    fn choose(same_cpu: bool, no_pin: bool) -> Placement {
        let cpus = affinity::allowed();
        match (no_pin, same_cpu, cpus.as_slice()) {
            (true, _, _) | (_, _, []) => Placement::Free,
            (false, true, [cpu, ..]) => Placement::Same(*cpu),
            (false, false, [caller, server, ..]) => Placement::Split {
                caller: *caller,
                server: *server,
            },
            (false, false, [_]) => {
                println!("only one CPU is allowed: cannot split callers and servers");
                Placement::Free
            }
        }
    }

    pub fn describe(self) -> String {
        match self {
            Placement::Split { caller, server } => {
                format!("split: calling thread on CPU {caller}, serving threads on CPU {server}")
            }
            Placement::Same(cpu) => format!("same CPU: every thread on CPU {cpu}"),
            Placement::Free => "free: left to the scheduler".into(),
        }
    }

    /// Pins the calling thread where it measures from, so that the threads
    /// it starts from now on inherit that CPU.
    pub fn enter_caller(self) {
        match self {
            Placement::Split { caller: cpu, .. } | Placement::Same(cpu) => {
                affinity::pin_current_thread(cpu)
            }
            Placement::Free => {}
        }
    }

    /// Pins the calling thread where serving threads go, so that the threads
    /// it starts now (and the ones those start) inherit that CPU.
    pub fn enter_server(self) {
        match self {
            Placement::Split { server: cpu, .. } | Placement::Same(cpu) => {
                affinity::pin_current_thread(cpu)
            }
            Placement::Free => {}
        }
    }
}

/// Thread placement through glibc's `sched_getaffinity` and
/// `sched_setaffinity`: std has no API for it, and the workspace builds
/// rustix without its `thread` feature.
pub mod affinity {
    /// glibc's `cpu_set_t`: 1024 bits.
    type CpuSet = [u64; 16];

    extern "C" {
        fn sched_getaffinity(pid: i32, size: usize, mask: *mut CpuSet) -> i32;
        fn sched_setaffinity(pid: i32, size: usize, mask: *const CpuSet) -> i32;
    }

    /// The CPUs the calling thread may run on.
    pub fn allowed() -> Vec<usize> {
        let mut set: CpuSet = [0; 16];
        // SAFETY: `set` is a writable cpu_set_t of the size passed; pid 0 is
        // the calling thread.
        let rc = unsafe { sched_getaffinity(0, std::mem::size_of::<CpuSet>(), &mut set) };
        if rc != 0 {
            return Vec::new();
        }
        (0..set.len() * 64)
            .filter(|&cpu| set[cpu / 64] & (1 << (cpu % 64)) != 0)
            .collect()
    }

    /// Pins the calling thread, and the threads it starts from now on, to
    /// `cpu`.
    pub fn pin_current_thread(cpu: usize) {
        let mut set: CpuSet = [0; 16];
        set[cpu / 64] |= 1 << (cpu % 64);
        // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the
        // calling thread.
        let rc = unsafe { sched_setaffinity(0, std::mem::size_of::<CpuSet>(), &set) };
        assert_eq!(
            rc,
            0,
            "cannot pin a thread to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }

    /// The CPUs the benchmark thread and the threads whose name `keep`
    /// accepts may run on, for the record; threads of the same name on the
    /// same CPUs are counted together.
    pub fn threads(keep: impl Fn(&str) -> bool) -> String {
        let pid = std::process::id().to_string();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return "unknown".into();
        };
        let mut out = Vec::new();
        for task in tasks.flatten() {
            let path = task.path();
            let read = |f: &str| std::fs::read_to_string(path.join(f)).unwrap_or_default();
            let comm = read("comm").trim().to_string();
            let name = if task.file_name().to_str() == Some(pid.as_str()) {
                "bench thread".to_string()
            } else if keep(&comm) {
                comm
            } else {
                continue;
            };
            let cpus = read("status")
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_string())
                .unwrap_or_default();
            out.push(format!("{name} on CPU {cpus}"));
        }
        out.sort();
        let mut counted: Vec<(String, usize)> = Vec::new();
        for line in out {
            match counted.last_mut() {
                Some((last, n)) if *last == line => *n += 1,
                _ => counted.push((line, 1)),
            }
        }
        counted
            .into_iter()
            .map(|(line, n)| {
                if n == 1 {
                    line
                } else {
                    format!("{n} x {line}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}
