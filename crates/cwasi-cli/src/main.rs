//! `cwasi`: runs compositions of WebAssembly functions on one machine, serves
//! functions to other processes, calls them, and inspects modules. Thin over
//! `cwasi-runtime`.

mod bench;
mod build;
mod component;
mod console;
mod entry;
mod image;
mod notices;
mod prefixed;
mod reference;
mod report;
mod scaffold;
mod served;
mod startup;
mod stop;
mod up;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use console::note;
use cwasi_runtime::broker::{Broker, BrokerConfig};
use cwasi_runtime::{
    Composition, DirectConfig, FunctionSpec, Limits, ModeOverride, NodeDirectory, Runtime,
    SeedConfig, ServeOptions, StopSignals,
};

#[derive(Parser)]
#[command(
    name = "cwasi",
    version,
    about = "CWASI: WebAssembly functions that pick the cheapest data path"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes a new function project from a template (rust, rust-component,
    /// c, python, js, composition), ready to build and run.
    New(scaffold::NewArgs),
    /// Runs a composition (a .toml file) or a module with its callees: the
    /// entry's `_start` runs, or, if the entry is a function, it is called
    /// once with --data; calls are resolved by the selector.
    Run(RunArgs),
    /// Runs the build steps of a composition's functions
    /// (`build = { command = "…", watch = [...] }`), in order, each with
    /// `sh -c` in its workdir; stops at the first that fails.
    Build(BuildArgs),
    /// Compiles every module of a composition (or one .wasm) into the
    /// compile cache ahead of time, so that runs start without compiling.
    Compile {
        /// A composition file (.toml), or a module (.wasm).
        target: PathBuf,
    },
    /// Serves every function of a composition over HTTP, at
    /// `POST /<name>` (the body is the request, the answer the response),
    /// as a caller of one namespace, until SIGTERM or SIGINT.
    Up(up::UpArgs),
    /// Hosts a callable function in this process for other processes of the
    /// node, until SIGTERM or SIGINT.
    Serve(ServeArgs),
    /// Calls a served function from the shell.
    Call(CallArgs),
    /// Builds OCI images of modules for containerd.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Measures the modes against redis-storage, HTTP and memcpy (the
    /// paper's experiments); see docs/benchmarks.md.
    Bench(bench::BenchArgs),
    /// Shows which ABI imports and exports a module has, or the WIT world
    /// of a component.
    Inspect {
        /// The .wasm file.
        module: PathBuf,
    },
    /// Prints a shell completion script for cwasi, e.g.
    /// `cwasi completions bash > /etc/bash_completion.d/cwasi`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Prints the CLI reference of the docs (docs/reference/cli.md).
    #[command(hide = true)]
    Reference,
}

#[derive(clap::Args)]
struct RunArgs {
    /// A composition file (.toml), or the entry module (.wasm).
    target: PathBuf,
    /// With a module: a callee as NAME=PATH (repeatable).
    #[arg(long = "with", value_name = "NAME=PATH", value_parser = parse_with)]
    with: Vec<(String, PathBuf)>,
    /// Prints, for each caller → callee edge, the mode chosen and why.
    #[arg(long)]
    explain: bool,
    /// Forces a mode: auto, embedded, local, remote (either remote path),
    /// remote-direct or remote-broker.
    #[arg(long, env = "CWASI_MODE", default_value = "auto")]
    mode: ModeOverride,
    /// Starts even if some modules cannot be loaded; calls to them fail with
    /// NOT_CALLABLE. By default such a composition is refused.
    #[arg(long)]
    keep_unloadable: bool,
    /// The node directory (default: $CWASI_RUNTIME_DIR, /run/cwasi for root,
    /// else $XDG_RUNTIME_DIR/cwasi).
    #[arg(long)]
    runtime_dir: Option<PathBuf>,
    /// Does not print the per-hop timings.
    #[arg(long, short)]
    quiet: bool,
    /// The request for an entry that is a function (no `_start`): the
    /// text itself, @FILE, or `-` for stdin (empty if not given). The
    /// response goes to stdout.
    #[arg(long)]
    data: Option<String>,
    /// Writes the response of an entry that is a function here instead of
    /// stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Builds the functions whose module is stale first (missing, or older
    /// than a file it watches; see `cwasi build`).
    #[arg(long)]
    build: bool,
    /// Arguments for the entry (with a module only), after `--`.
    #[arg(last = true)]
    args: Vec<String>,
}

#[derive(clap::Args)]
struct BuildArgs {
    /// The composition file (.toml).
    composition: PathBuf,
    /// Builds only this function.
    #[arg(long, value_name = "NAME")]
    function: Option<String>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The .wasm file.
    module: PathBuf,
    /// The name callers use.
    #[arg(long)]
    name: String,
    /// The trust domain.
    #[arg(long, default_value = cwasi_runtime::DEFAULT_NAMESPACE)]
    namespace: String,
    /// For a function written for the CWASI prototype: its handler export.
    #[arg(long)]
    handler: Option<String>,
    /// An environment variable for the function, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// The node directory (see `run --help`).
    #[arg(long)]
    runtime_dir: Option<PathBuf>,
    /// Calls that may run at once.
    #[arg(long, default_value_t = 16)]
    max_concurrent: usize,
    /// Connections open at once; more are refused with RESOURCE_LIMIT.
    #[arg(long, default_value_t = 128)]
    max_connections: usize,
    /// Seconds an idle connection is kept open.
    #[arg(long, default_value_t = 30)]
    idle_timeout_secs: u64,
    /// The slowest a request's payload may arrive at, in KiB per second:
    /// a payload of N bytes that holds a call slot must be in within 2 s
    /// plus N at this rate, or its request is cut off with an error frame.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    min_payload_kib_per_sec: u64,
    /// Seconds a stop (SIGTERM, SIGINT, SIGHUP) waits for the calls in
    /// flight to finish, after the record is withdrawn.
    #[arg(long, env = "CWASI_DRAIN_SECS", default_value_t = 10)]
    drain_secs: u64,
    /// Another uid allowed to call (the server's own and root always are).
    /// Its calls come from the caller `uid.<uid>/@<node>`, whatever they
    /// claim.
    #[arg(long = "allow-uid")]
    allow_uid: Vec<u32>,
    /// A caller allowed to call this function (repeatable):
    /// `<namespace>/<function>[@<node>]`, each part a name, `*`, or a
    /// name's start and `*` (`team-*/*`). With none given every caller
    /// may call; with any, only the callers they match, and the others
    /// get DENIED (docs/operations.md, "Call policies").
    #[arg(long = "allow-caller", value_name = "RULE", value_parser = parse_caller_rule)]
    allow_caller: Vec<cwasi_runtime::CallerPattern>,
    /// Allows no caller at all (a policy with no rule).
    #[arg(long, conflicts_with = "allow_caller")]
    allow_no_caller: bool,
    /// Also takes direct calls from other nodes on this address (IP:PORT,
    /// the address they reach this node at; port 0 picks one), announced
    /// in the cluster registry. Needs CWASI_REDIS_URL, and mutual TLS
    /// (CWASI_TLS_CA, CWASI_TLS_CERT, CWASI_TLS_KEY) or plain TCP asked
    /// for with CWASI_DIRECT_PLAIN=1.
    #[arg(long, env = "CWASI_LISTEN", value_name = "IP:PORT")]
    listen: Option<std::net::SocketAddr>,
    /// Serves Prometheus metrics on http://IP:PORT/metrics (port 0 picks
    /// one, printed on stderr); see docs/operations.md.
    #[arg(long, env = "CWASI_METRICS_ADDR", value_name = "IP:PORT")]
    metrics: Option<std::net::SocketAddr>,
    #[command(flatten)]
    limits: LimitArgs,
    /// WASI arguments for the function, after `--`.
    #[arg(last = true)]
    args: Vec<String>,
}

#[derive(clap::Args)]
struct LimitArgs {
    /// Linear memory per instance, in MiB.
    #[arg(long)]
    max_memory_mib: Option<usize>,
    /// Largest request or response, in MiB.
    #[arg(long)]
    max_payload_mib: Option<usize>,
    /// Timeout of one call, in milliseconds.
    #[arg(long)]
    call_timeout_ms: Option<u64>,
    /// Deepest chain of nested calls (default 32, at most 256); a call
    /// deeper than it gets RESOURCE_LIMIT, here and from other processes.
    #[arg(long)]
    max_call_depth: Option<u32>,
    /// Warm instances kept per function between calls (default 16).
    #[arg(long)]
    max_idle_instances: Option<usize>,
    /// Largest module or component file read, in MiB (default 256).
    #[arg(long)]
    max_module_mib: Option<u64>,
    /// How long each side of a local call spins on shared memory before it
    /// sleeps, in microseconds (0: never spin; default 50).
    #[arg(long, env = "CWASI_SPIN_US")]
    spin_us: Option<u64>,
    /// Never spill calls from a local server that is full to the next path
    /// (another node); by default they spill, and come back when it frees.
    #[arg(long, env = "CWASI_NO_SPILL")]
    no_spill: bool,
    /// How long a local server's answers may say their requests waited for
    /// one of its call slots before calls spill from it, in microseconds
    /// (default 1000).
    #[arg(long, env = "CWASI_SPILL_QUEUE_US")]
    spill_queue_us: Option<u64>,
}

impl LimitArgs {
    fn apply(&self, mut l: Limits) -> Limits {
        if let Some(m) = self.max_memory_mib {
            l.max_memory_bytes = m << 20;
        }
        if let Some(m) = self.max_payload_mib {
            l.max_payload_bytes = m << 20;
        }
        if let Some(ms) = self.call_timeout_ms {
            l.call_timeout = Duration::from_millis(ms.max(1));
        }
        if let Some(d) = self.max_call_depth {
            l.max_call_depth = d;
        }
        if let Some(n) = self.max_idle_instances {
            l.max_idle_instances = n;
        }
        if let Some(m) = self.max_module_mib {
            l.max_module_bytes = m.clamp(1, 4095) << 20;
        }
        if let Some(us) = self.spin_us {
            l.spin_budget = Duration::from_micros(us);
        }
        if self.no_spill {
            l.spill_over = false;
        }
        if let Some(us) = self.spill_queue_us {
            l.spill_queue = Duration::from_micros(us);
        }
        l
    }
}

#[derive(clap::Args)]
struct CallArgs {
    /// The function to call.
    name: String,
    /// The request: @FILE, - for stdin, or the text itself.
    #[arg(long, default_value = "")]
    data: String,
    /// Writes the response here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The caller's namespace, which decides what may be embedded.
    #[arg(long, default_value = cwasi_runtime::DEFAULT_NAMESPACE)]
    namespace: String,
    /// Calls this socket directly instead of looking the function up.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Prints the mode chosen and why (and any later change of path) to
    /// stderr.
    #[arg(long)]
    explain: bool,
    /// Forces a mode (see `run --help`).
    #[arg(long, env = "CWASI_MODE", default_value = "auto")]
    mode: ModeOverride,
    /// The node directory (see `run --help`).
    #[arg(long)]
    runtime_dir: Option<PathBuf>,
    #[command(flatten)]
    limits: LimitArgs,
}

fn parse_with(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PATH, got '{s}'"))?;
    Ok((name.to_string(), PathBuf::from(path)))
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got '{s}'"))?;
    Ok((k.to_string(), v.to_string()))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(startup::log_filter())
        .with_writer(std::io::stderr)
        .init();
    startup::raise_open_files_limit();
    // Leaked once: clap keeps the text for the life of the process.
    let version: &'static str = Box::leak(startup::long_version().into_boxed_str());
    let matches = Cli::command().long_version(version).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::New(args) => scaffold::run(args).map(|()| ExitCode::SUCCESS),
        Command::Run(args) => traced("cwasi", || run(args)),
        Command::Build(args) => build_command(&args).map(|()| ExitCode::SUCCESS),
        Command::Compile { target } => compile(&target).map(|()| ExitCode::SUCCESS),
        Command::Up(args) => traced("cwasi", || up::up(args)).map(|()| ExitCode::SUCCESS),
        Command::Serve(args) => {
            let service = args.name.clone();
            traced(&service, || serve(args)).map(|()| ExitCode::SUCCESS)
        }
        Command::Call(args) => traced("cwasi", || call(args)).map(|()| ExitCode::SUCCESS),
        Command::Image(command) => image::image(command).map(|()| ExitCode::SUCCESS),
        Command::Inspect { module } => inspect(&module).map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => bench::run(args),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "cwasi", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Reference => console::output(reference::markdown(&Cli::command()).as_bytes())
            .map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        note!("cwasi: error: {}", startup::error_text(&e));
        ExitCode::FAILURE
    })
}

/// Runs `command` with its call spans exported over OTLP if
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set (under `OTEL_SERVICE_NAME`, or
/// `service`); what is still buffered is sent when it returns.
fn traced<T>(service: &str, command: impl FnOnce() -> Result<T>) -> Result<T> {
    let _export = cwasi_trace::TraceExport::from_env(service)?;
    command()
}

/// The broker of `CWASI_REDIS_URL`, if set: remote mode and the cluster
/// registry; and the direct data plane's settings (`CWASI_TLS_*`,
/// `CWASI_DIRECT_PLAIN`).
fn with_broker(builder: cwasi_runtime::RuntimeBuilder) -> Result<cwasi_runtime::RuntimeBuilder> {
    let builder = builder.direct(DirectConfig::from_env()?);
    Ok(match BrokerConfig::from_env() {
        Some(cfg) => {
            tracing::info!(?cfg, "using a broker");
            builder.broker(Broker::new(cfg)?)
        }
        None => builder,
    })
}

fn node_directory(explicit: &Option<PathBuf>) -> Result<NodeDirectory> {
    let path = explicit.clone().unwrap_or_else(NodeDirectory::default_path);
    Ok(NodeDirectory::open(&path)?)
}

fn run(args: RunArgs) -> Result<ExitCode> {
    let is_toml = args.target.extension().is_some_and(|e| e == "toml");
    let comp = if is_toml {
        if !args.with.is_empty() || !args.args.is_empty() {
            bail!("--with and entry arguments are for a .wasm entry; a composition lists its functions itself");
        }
        Composition::from_file(&args.target)?
    } else {
        Composition::from_modules(&args.target, args.args.clone(), &args.with)
            .map_err(anyhow::Error::msg)?
    };
    if args.build {
        build::build(&comp, &args.target, build::Which::Stale)?;
    }
    notices::warn_defaulted_namespace(&comp);
    let entry_ns = served::entry_namespace(&comp);
    // Functions of the entry's namespace share its VM; the others are served
    // by processes of their own and reached in local mode.
    let served::Placed {
        mine,
        dir,
        servers: _servers,
    } = served::place(&comp, &entry_ns, &args.runtime_dir)?;
    let mode = if args.mode == ModeOverride::Auto {
        comp.mode
    } else {
        args.mode
    };
    let mut builder = with_broker(
        Runtime::builder()
            .limits(comp.limits.clone())
            .mode(mode)
            .keep_unloadable(args.keep_unloadable)
            .on_load(notices::compile_notes),
    )?;
    if let Some(d) = dir {
        builder = builder.node_directory(d);
    }
    let request = args.data.as_deref().map(read_request).transpose()?;
    let load = Instant::now();
    let runtime = mine
        .into_iter()
        .fold(builder, |b, f| b.function(f))
        .build()
        .with_context(|| format!("cannot load {}", args.target.display()))?;
    tracing::info!(functions = comp.functions.len(), elapsed = ?load.elapsed(), "loaded");
    let started = Instant::now();
    let outcome = entry::start(&runtime, &comp, &entry_ns, request.as_deref());
    let elapsed = started.elapsed();
    if args.explain {
        let text = report::explain(&runtime.decisions());
        let text = notices::annotate_explain(&text, &comp.defaulted_namespace);
        console::diagnostic(format_args!("{text}"));
    }
    if !args.quiet {
        console::diagnostic(format_args!(
            "{}",
            report::hops(
                &comp.entry,
                entry::ended(&outcome),
                elapsed,
                &runtime.hops()
            )
        ));
    }
    match outcome? {
        entry::Outcome::Exited(code) => Ok(ExitCode::from(code.clamp(0, 255) as u8)),
        entry::Outcome::Answered(response) => {
            write_response(&response, args.out.as_deref()).map(|()| ExitCode::SUCCESS)
        }
    }
}

/// A request given as `--data`: `@FILE`, `-` for stdin, or the text itself.
fn read_request(data: &str) -> Result<Vec<u8>> {
    Ok(match data {
        "-" => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read stdin")?;
            buf
        }
        d if d.starts_with('@') => {
            std::fs::read(&d[1..]).with_context(|| format!("cannot read {}", &d[1..]))?
        }
        d => d.as_bytes().to_vec(),
    })
}

/// Writes a response to `out`, or to stdout; on a terminal, a response
/// that does not end a line is followed by a newline, so that the prompt or
/// the hop table does not run on from it.
fn write_response(response: &[u8], out: Option<&Path>) -> Result<()> {
    use std::io::IsTerminal;
    match out {
        Some(p) => {
            std::fs::write(p, response).with_context(|| format!("cannot write {}", p.display()))
        }
        None if std::io::stdout().is_terminal() && !response.ends_with(b"\n") => {
            console::output(&[response, b"\n"].concat())
        }
        None => console::output(response),
    }
}

/// `cwasi build`: every build step of a composition, or one.
fn build_command(args: &BuildArgs) -> Result<()> {
    let comp = Composition::from_file(&args.composition)?;
    let which = match &args.function {
        Some(name) => build::Which::Only(name),
        None => build::Which::All,
    };
    build::build(&comp, &args.composition, which)
}

/// `cwasi compile`: every module of a composition (or one module) compiled
/// into the compile cache, one line per module on stdout.
fn compile(target: &Path) -> Result<()> {
    let comp = if target.extension().is_some_and(|e| e == "toml") {
        Composition::from_file(target)?
    } else {
        Composition::from_modules(target, Vec::new(), &[]).map_err(anyhow::Error::msg)?
    };
    notices::warn_defaulted_namespace(&comp);
    let uncached = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = uncached.clone();
    comp.functions
        .iter()
        .cloned()
        .fold(
            Runtime::builder()
                .limits(comp.limits.clone())
                .on_load(move |load| {
                    if matches!(
                        load.stage,
                        cwasi_runtime::LoadStage::Compiled { cached: false, .. }
                    ) {
                        seen.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    if let Some(line) = notices::compile_report(load) {
                        // Shown as it happens; a failed stdout fails below.
                        let _ = console::output(format!("{line}\n").as_bytes());
                    }
                }),
            cwasi_runtime::RuntimeBuilder::function,
        )
        .build()
        .with_context(|| format!("cannot compile {}", target.display()))?;
    if uncached.load(std::sync::atomic::Ordering::Relaxed) {
        bail!(
            "the compile cache is off or unusable ({}, see docs/operations.md), so nothing was kept",
            cwasi_runtime::COMPILE_CACHE_ENV
        );
    }
    console::output(b"")
}

/// A `--allow-caller` rule.
fn parse_caller_rule(text: &str) -> std::result::Result<cwasi_runtime::CallerPattern, String> {
    text.parse()
}

fn serve(args: ServeArgs) -> Result<()> {
    let dir = node_directory(&args.runtime_dir)?;
    let mut spec = FunctionSpec::new(&args.name, &args.namespace, args.module.clone());
    spec.args = args.args;
    spec.env = args.env;
    spec.seed = SeedConfig {
        handler: args.handler,
        connect_to: None,
    };
    if args.allow_no_caller || !args.allow_caller.is_empty() {
        spec.policy = cwasi_runtime::CallPolicy::allowing(args.allow_caller);
    }
    let runtime = with_broker(Runtime::builder())?
        .limits(args.limits.apply(Limits::default()))
        .on_load(notices::compile_notes)
        .node_directory(dir.clone())
        .function(spec)
        .build()
        .with_context(|| format!("cannot load {}", args.module.display()))?;
    let opts = ServeOptions {
        max_concurrent_calls: args.max_concurrent,
        max_connections: args.max_connections,
        allowed_uids: args.allow_uid,
        idle_timeout: Duration::from_secs(args.idle_timeout_secs.max(1)),
        listen: args.listen,
        drain_timeout: Duration::from_secs(args.drain_secs),
        min_payload_rate: args.min_payload_kib_per_sec.saturating_mul(1024),
    };
    let mut signals = StopSignals::install().context("cannot install signal handlers")?;
    let runtime = Arc::new(runtime);
    let handle = Arc::new(runtime.serve(&args.name, &dir, opts)?);
    let metrics = match args.metrics {
        None => None,
        Some(addr) => Some(cwasi_metrics::MetricsServer::for_served(
            addr,
            runtime.clone(),
            handle.clone(),
        )?),
    };
    let record = handle.record();
    match &record.data_addr {
        Some(addr) => note!(
            "cwasi: serving '{}' (namespace '{}') at {} and {addr}",
            args.name,
            args.namespace,
            record.socket.display()
        ),
        None => note!(
            "cwasi: serving '{}' (namespace '{}') at {}",
            args.name,
            args.namespace,
            record.socket.display()
        ),
    }
    signals.wait();
    drop(metrics);
    drop(handle);
    Ok(())
}

fn call(args: CallArgs) -> Result<()> {
    let request = read_request(&args.data)?;
    // `call` reaches the served instance itself, never a copy of its module
    // embedded in this short-lived process.
    let mut builder = with_broker(Runtime::builder())?
        .limits(args.limits.apply(Limits::default()))
        .mode(args.mode)
        .embed_served(false);
    if args.socket.is_none() {
        builder = builder.node_directory(node_directory(&args.runtime_dir)?);
    }
    let runtime = builder.build()?;
    let response = match &args.socket {
        Some(s) => runtime.call_socket(s, &args.name, &request),
        None => runtime.call(&args.namespace, &args.name, &request),
    };
    if args.explain {
        console::diagnostic(format_args!("{}", report::explain(&runtime.decisions())));
    }
    write_response(&response?, args.out.as_deref())
}

fn inspect(path: &Path) -> Result<()> {
    // The same bounded read as `run` and `serve`: a FIFO, a device or a
    // file over the module limit is refused at once.
    let bytes = cwasi_runtime::read_module_file(path, Limits::default().max_module_bytes)?;
    if cwasi_oci::is_component(&bytes) {
        console::output(component::describe(path, &bytes)?.as_bytes())?;
        return Ok(());
    }
    let module = cwasi_runtime::inspect_module_bytes(path, &bytes)?;
    let text = format!(
        "module:                {}\ndigest:                {}\n{}\n",
        path.display(),
        module.digest,
        module.info
    );
    console::output(text.as_bytes())?;
    Ok(())
}
