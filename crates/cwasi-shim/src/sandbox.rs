//! The runwasi `Shim` and `Sandbox` of CWASI: containerd-shim-wasm runs the
//! container (namespaces, cgroups, rootfs, stdio, exit codes), and inside it
//! `run_wasi` hands the module to the CWASI runtime.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use containerd_shim_wasm::sandbox::context::{RuntimeContext, Source};
use containerd_shim_wasm::sandbox::Sandbox;
use containerd_shim_wasm::shim::{Shim, Version};
use cwasi_runtime::broker::{Broker, BrokerConfig};
use cwasi_runtime::{
    DirectConfig, FunctionSpec, NodeDirectory, Runtime, ServeOptions, StopSignals,
};
use cwasi_trace::TraceExport;

use crate::mounts::container_preopens;
use crate::settings::{containerd_namespace, ContainerSettings};

/// Exit code when the container cannot run at all: no module, not Wasm, bad
/// settings (as a shell's "cannot execute").
pub const EXIT_CANNOT_RUN: i32 = 126;
/// Exit code when the function failed while running (a trap, a timeout).
pub const EXIT_FAILED: i32 = 1;

/// The shim: runtime type `io.containerd.cwasi.v1`, binary
/// `containerd-shim-cwasi-v1`.
pub struct CwasiShim;

impl Shim for CwasiShim {
    type Sandbox = CwasiSandbox;

    fn name() -> &'static str {
        "cwasi"
    }

    fn version() -> Version {
        containerd_shim_wasm::shim::version!()
    }
}

/// One container's Wasm, run by the CWASI runtime.
#[derive(Default, Clone)]
pub struct CwasiSandbox;

impl Sandbox for CwasiSandbox {
    async fn run_wasi(&self, ctx: &impl RuntimeContext) -> anyhow::Result<i32> {
        let entry = ctx.entrypoint();
        let label = entry
            .arg0
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("<oci layer>"));
        let module = match &entry.source {
            Source::File(path) if path.as_os_str().is_empty() => Err(
                "the container has no entrypoint: set the image's entrypoint (or the process \
                 args) to the .wasm file"
                    .to_string(),
            ),
            Source::File(path) => std::fs::read(path)
                .map(Arc::<[u8]>::from)
                .map_err(|e| format!("cannot read the module {}: {e}", path.display())),
            Source::Oci(_) => entry
                .source
                .as_bytes()
                .map(|b| Arc::<[u8]>::from(b.as_ref()))
                .map_err(|e| format!("cannot read the module from the image's Wasm layer: {e}")),
        };
        let job = Job {
            module,
            label,
            func: entry.func.clone(),
            stem: entry.name.clone(),
            args: ctx.args().iter().skip(1).cloned().collect(),
            envs: ctx.envs().to_vec(),
        };
        // The runtime is synchronous and may start its own tokio runtime (the
        // broker); run it on a plain thread, outside this async context.
        let code = std::thread::Builder::new()
            .name("cwasi-container".into())
            .spawn(move || job.run())
            .map_err(|e| anyhow::anyhow!("cannot start the runtime thread: {e}"))?
            .join()
            .unwrap_or(EXIT_FAILED);
        Ok(code)
    }

    /// Accepts every container that is not a Linux one: a missing or broken
    /// module is reported by `run_wasi` on the container's stderr, where
    /// `ctr` and `kubectl logs` show it, rather than only in the shim's log.
    async fn can_handle(&self, _ctx: &impl RuntimeContext) -> anyhow::Result<()> {
        Ok(())
    }
}

/// What one container runs, gathered from the OCI spec.
struct Job {
    module: Result<Arc<[u8]>, String>,
    label: PathBuf,
    func: String,
    stem: Option<String>,
    args: Vec<String>,
    envs: Vec<String>,
}

impl Job {
    /// Runs or serves the function; every failure is printed on stderr and
    /// becomes an exit code.
    fn run(self) -> i32 {
        let annotations = match crate::annotations::captured() {
            Ok(a) => a,
            Err(e) => return fail(EXIT_CANNOT_RUN, &format!("annotations: {e}")),
        };
        let settings = match ContainerSettings::resolve(
            &self.envs,
            annotations,
            self.stem.as_deref(),
            containerd_namespace(std::env::args()).as_deref(),
        ) {
            Ok(s) => s,
            Err(e) => return fail(EXIT_CANNOT_RUN, &format!("invalid setting: {e}")),
        };
        init_logging(&settings.log);
        for w in &settings.warnings {
            eprintln!("cwasi: warning: {w}");
        }
        if let Some(w) = crate::node::compile_cache_trouble() {
            eprintln!("cwasi: warning: {w}");
        }
        let module = match self.module {
            Ok(m) => m,
            Err(e) => return fail(EXIT_CANNOT_RUN, &e),
        };
        if self.func != "_start" && !settings.serve {
            return fail(
                EXIT_CANNOT_RUN,
                &format!(
                    "entrypoint function '{}' is not supported: CWASI runs _start, or serves \
                     the module's handler with CWASI_SERVE=true",
                    self.func
                ),
            );
        }
        let node_dir = match open_node_directory(&settings) {
            Ok(d) => d,
            Err(e) => return fail(EXIT_CANNOT_RUN, &e),
        };
        let broker = match BrokerConfig::from_vars(&|k| settings.var(k)).map(Broker::new) {
            None => None,
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => return fail(EXIT_CANNOT_RUN, &format!("broker: {e}")),
        };
        let mut spec = FunctionSpec::new(&settings.function, &settings.namespace, self.label);
        spec.module_bytes = Some(module);
        spec.args = self.args;
        spec.env = settings.env.clone();
        spec.preopens = container_preopens(&settings.node_dir);
        spec.policy = settings.policy.clone();
        let direct = match DirectConfig::from_vars(&|k| settings.var(k)) {
            Ok(d) => d,
            Err(e) => return fail(EXIT_CANNOT_RUN, &format!("direct data plane: {e}")),
        };
        let defaults = cwasi_runtime::Limits::default();
        let micros =
            |var: &str, default: Duration| match settings.var(var).map(|v| v.trim().parse::<u64>())
            {
                None => Ok(default),
                Some(Ok(us)) => Ok(Duration::from_micros(us)),
                Some(Err(e)) => Err(format!("{var} must be a number of microseconds: {e}")),
            };
        let spin_budget = match micros(crate::settings::ENV_SPIN_US, defaults.spin_budget) {
            Ok(d) => d,
            Err(e) => return fail(EXIT_CANNOT_RUN, &e),
        };
        let spill_queue = match micros(crate::settings::ENV_SPILL_QUEUE_US, defaults.spill_queue) {
            Ok(d) => d,
            Err(e) => return fail(EXIT_CANNOT_RUN, &e),
        };
        let mut builder = Runtime::builder()
            .limits(cwasi_runtime::Limits {
                spin_budget,
                spill_queue,
                ..defaults
            })
            .mode(settings.mode)
            .direct(direct)
            .node(cwasi_runtime::node_name_from(&|k| settings.var(k)))
            .function(spec);
        if let Some(d) = &node_dir {
            builder = builder.node_directory(d.clone());
        }
        if let Some(b) = broker {
            builder = builder.broker(b);
        }
        let runtime = match builder.build() {
            Ok(r) => r,
            Err(e) => return fail(EXIT_CANNOT_RUN, &e.to_string()),
        };
        let runtime = Arc::new(runtime);
        // OTEL_EXPORTER_OTLP_ENDPOINT in the container's env turns span
        // export on.
        let _export = match TraceExport::from_vars(&|k| settings.var(k), &settings.function) {
            Ok(export) => export,
            Err(e) => return fail(EXIT_CANNOT_RUN, &format!("traces: {e}")),
        };
        let code = if settings.serve {
            serve(&runtime, &settings, node_dir.as_ref())
        } else {
            match runtime.run_entry(&settings.function) {
                Ok(code) => code,
                Err(e) => fail(EXIT_FAILED, &e.to_string()),
            }
        };
        if settings.explain {
            for d in runtime.decisions() {
                eprintln!("cwasi: explain: {d}");
            }
        }
        code
    }
}

/// Serves until the container is stopped (SIGTERM, SIGINT); then the record
/// and socket are removed. A SIGKILL leaves a stale record, which the next
/// reader of the node directory removes.
fn serve(runtime: &Arc<Runtime>, settings: &ContainerSettings, dir: Option<&NodeDirectory>) -> i32 {
    let Some(dir) = dir else {
        return fail(
            EXIT_CANNOT_RUN,
            &format!(
                "serving needs the node directory: bind-mount it at {} (or set CWASI_RUNTIME_DIR)",
                settings.node_dir.display()
            ),
        );
    };
    // As pid 1 of its PID namespace the container ignores signals it has no
    // handler for, so the handlers are what makes `ctr task kill` work.
    let mut signals = match StopSignals::install() {
        Ok(s) => s,
        Err(e) => return fail(EXIT_FAILED, &format!("cannot install signal handlers: {e}")),
    };
    // CWASI_LISTEN: take direct calls from other nodes on this address.
    let listen = match address(settings, crate::settings::ENV_LISTEN) {
        Ok(a) => a,
        Err(e) => return fail(EXIT_CANNOT_RUN, &e),
    };
    let metrics_addr = match address(settings, crate::settings::ENV_METRICS_ADDR) {
        Ok(a) => a,
        Err(e) => return fail(EXIT_CANNOT_RUN, &e),
    };
    let drain_timeout = match settings
        .var(crate::settings::ENV_DRAIN_SECS)
        .map(|v| v.trim().parse::<u64>())
    {
        None => ServeOptions::default().drain_timeout,
        Some(Ok(secs)) => Duration::from_secs(secs),
        Some(Err(e)) => {
            return fail(
                EXIT_CANNOT_RUN,
                &format!("CWASI_DRAIN_SECS must be a number of seconds: {e}"),
            )
        }
    };
    let opts = ServeOptions {
        listen,
        drain_timeout,
        ..ServeOptions::default()
    };
    let handle = match runtime.serve(&settings.function, dir, opts) {
        Ok(h) => Arc::new(h),
        Err(e) => return fail(EXIT_CANNOT_RUN, &e.to_string()),
    };
    let metrics = match metrics_addr
        .map(|addr| cwasi_metrics::MetricsServer::for_served(addr, runtime.clone(), handle.clone()))
    {
        None => None,
        Some(Ok(m)) => Some(m),
        Some(Err(e)) => return fail(EXIT_CANNOT_RUN, &e.to_string()),
    };
    eprintln!(
        "cwasi: serving '{}' (namespace '{}') at {}",
        settings.function,
        settings.namespace,
        handle.record().socket.display()
    );
    signals.wait();
    drop(metrics);
    drop(handle);
    // Give the log line a chance to reach the FIFO before exit.
    std::thread::sleep(Duration::from_millis(10));
    0
}

/// An `IP:PORT` setting, if set.
fn address(
    settings: &ContainerSettings,
    name: &'static str,
) -> Result<Option<std::net::SocketAddr>, String> {
    match settings.var(name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|e| format!("{name}={v}: expected IP:PORT ({e})")),
    }
}

/// The node directory, if it is mounted into the container. It is optional
/// for a container that only runs `_start` and calls nothing local.
fn open_node_directory(settings: &ContainerSettings) -> Result<Option<NodeDirectory>, String> {
    if !settings.node_dir.exists() && !settings.node_dir_explicit {
        tracing::debug!(dir = %settings.node_dir.display(), "no node directory mounted");
        return Ok(None);
    }
    NodeDirectory::open(&settings.node_dir)
        .map(Some)
        .map_err(|e| format!("node directory: {e}"))
}

fn fail(code: i32, message: &str) -> i32 {
    eprintln!("cwasi: error: {message}");
    code
}

/// Logs of the runtime go to the container's stderr, filtered by
/// `CWASI_LOG`.
fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}
