//! What every command does before and after it runs: the log filter, the
//! open-files limit, the version text and the one-line error.

/// What `cwasi --version` prints: the release and the versions of the
/// formats it speaks, because peers of other versions refuse each other
/// and nodes are upgraded together (CHANGELOG.md has the rules).
pub fn long_version() -> String {
    use cwasi_runtime::protocols;
    format!(
        "{}\nguest ABI:       {}\nlocal frames:    {}\ndirect frames:   {}\nbroker entries:  {}\nnode records:    {}",
        env!("CARGO_PKG_VERSION"),
        protocols::ABI,
        protocols::LOCAL_FRAMES,
        protocols::DIRECT_FRAMES,
        protocols::BROKER,
        protocols::NODE_RECORDS,
    )
}

/// The crates whose logs a bare `RUST_LOG=<level>` turns up; the others
/// (cranelift, wasmtime, hyper, redis) stay at `warn`, since cranelift
/// alone logs millions of lines per compiled module at `debug`.
const OWN_LOG_TARGETS: &[&str] = &[
    "cwasi",
    "cwasi_runtime",
    "cwasi_metrics",
    "cwasi_trace",
    "cwasi_oci",
    "cwasi_bench",
    "redis_launcher",
    "cwasi_http_trigger",
    "bounded_http",
    "cwasi_templates",
];

/// The log filter: `warn` by default; a bare level in `RUST_LOG` (`debug`)
/// applies to CWASI's own crates; any other `RUST_LOG` is used as written.
pub fn log_filter() -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    const DEFAULT: &str = "warn,oci_tar_builder=error";
    let Ok(value) = std::env::var("RUST_LOG") else {
        return EnvFilter::new(DEFAULT);
    };
    let level = value.trim().to_ascii_lowercase();
    if ["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
        let own: Vec<String> = OWN_LOG_TARGETS
            .iter()
            .map(|t| format!("{t}={level}"))
            .collect();
        return EnvFilter::new(format!("{DEFAULT},{}", own.join(",")));
    }
    EnvFilter::try_new(&value).unwrap_or_else(|e| {
        eprintln!("cwasi: RUST_LOG={value:?} is not a log filter ({e}); using {DEFAULT:?}");
        EnvFilter::new(DEFAULT)
    })
}

/// An error and its causes on one line, each cause once: the runtime's
/// errors name their OS error in their own text and also return it as
/// their source, which `{:#}` would print twice.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// Raises the soft limit of open files to the hard one, as servers do: a
/// served function holds a socket per caller connection and per metrics
/// client, and a soft limit of 1024 would refuse connections long before
/// the caps they are held to. Best-effort.
pub fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}
