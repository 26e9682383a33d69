//! `cwasi up`: every function of a composition at `POST /<name>` over HTTP
//! (the `cwasi-http-trigger` crate), as a caller of one namespace. The
//! functions of that namespace are loaded in this process; the others are
//! served by `cwasi serve` children, as `cwasi run` does, and reached in
//! local mode.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use cwasi_http_trigger::{HttpTrigger, TriggerConfig};
use cwasi_runtime::{validate_namespace, Composition, Runtime};

use crate::console::{self, note};
use crate::{build, notices, served};

/// The arguments of `cwasi up`.
#[derive(clap::Args)]
pub struct UpArgs {
    /// The composition file (.toml).
    composition: PathBuf,
    /// The address to listen on, IP:PORT (port 0 picks one; the URLs
    /// printed at start name it).
    #[arg(long, value_name = "IP:PORT")]
    http: SocketAddr,
    /// The namespace the HTTP calls come from: its functions run in this
    /// process (embedded), the others in `cwasi serve` children (default:
    /// the entry's).
    #[arg(long)]
    namespace: Option<String>,
    /// Builds the functions whose module is stale first (see `cwasi build`).
    #[arg(long)]
    build: bool,
    /// Calls that run at once; more wait for a slot up to the call timeout,
    /// then get 503.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    max_concurrent: u16,
    /// HTTP connections open at once (half of them per client address).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u16).range(2..))]
    max_connections: u16,
    /// The node directory (see `run --help`).
    #[arg(long)]
    runtime_dir: Option<PathBuf>,
}

/// Serves the composition until a stop signal ends the process (which
/// stops the children first).
pub fn up(args: UpArgs) -> Result<()> {
    let comp = Composition::from_file(&args.composition)?;
    if args.build {
        build::build(&comp, &args.composition, build::Which::Stale)?;
    }
    notices::warn_defaulted_namespace(&comp);
    let namespace = match args.namespace {
        Some(ns) => {
            validate_namespace(&ns).map_err(anyhow::Error::msg)?;
            ns
        }
        None => served::entry_namespace(&comp),
    };
    let served::Placed {
        mine,
        dir,
        servers: _servers,
    } = served::place(&comp, &namespace, &args.runtime_dir)?;
    // Said before the children are stopped: a stop signal runs the newest
    // stopper first.
    let _say_stopping = crate::stop::on_stop(|| note!("cwasi: stopping"))?;
    let mut builder = crate::with_broker(
        Runtime::builder()
            .limits(comp.limits.clone())
            .mode(comp.mode)
            .on_load(notices::compile_notes),
    )?;
    if let Some(d) = dir {
        builder = builder.node_directory(d);
    }
    let runtime = mine
        .into_iter()
        .fold(builder, |b, f| b.function(f))
        .build()
        .with_context(|| format!("cannot load {}", args.composition.display()))?;
    let names: Vec<String> = comp.functions.iter().map(|f| f.name.clone()).collect();
    let config = TriggerConfig {
        max_concurrent_calls: args.max_concurrent.into(),
        max_connections: args.max_connections.into(),
        ..TriggerConfig::new(&namespace, names.clone())
    };
    let trigger = HttpTrigger::start(args.http, Arc::new(runtime), config)?;
    let mut urls = format!(
        "cwasi: serving {} over HTTP as a caller of namespace '{namespace}':\n",
        args.composition.display()
    );
    for name in &names {
        urls.push_str(&format!("POST http://{}/{name}\n", trigger.local_addr()));
    }
    console::output(urls.as_bytes())?;
    // The stop thread ends the process; this thread only keeps the
    // children's death signal armed (they die with the thread that
    // started them) and the trigger alive.
    loop {
        std::thread::park();
    }
}
