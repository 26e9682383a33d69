//! `cwasi`: runs compositions of WebAssembly functions on one machine, and
//! inspects modules. Thin over `cwasi-runtime`.

mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use cwasi_runtime::engine::{load_module, new_engine};
use cwasi_runtime::{Composition, ModeOverride, Runtime};

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
    /// Runs a composition (a .toml file) or a module with its callees; the
    /// entry's `_start` runs and its calls are resolved in this process.
    Run(RunArgs),
    /// Shows which ABI imports and exports a module has.
    Inspect {
        /// The .wasm file.
        module: PathBuf,
    },
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
    /// Forces a mode: auto, embedded, local or remote.
    #[arg(long, env = "CWASI_MODE", default_value = "auto")]
    mode: ModeOverride,
    /// Starts even if some modules cannot be loaded; calls to them fail with
    /// NOT_CALLABLE. By default such a composition is refused.
    #[arg(long)]
    keep_unloadable: bool,
    /// Does not print the per-hop timings.
    #[arg(long, short)]
    quiet: bool,
    /// Arguments for the entry (with a module only), after `--`.
    #[arg(last = true)]
    args: Vec<String>,
}

fn parse_with(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PATH, got '{s}'"))?;
    Ok((name.to_string(), PathBuf::from(path)))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Inspect { module } => inspect(&module).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        eprintln!("cwasi: error: {e:#}");
        ExitCode::FAILURE
    })
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
    let load = Instant::now();
    let runtime = Runtime::from_composition(&comp, args.mode, args.keep_unloadable)
        .with_context(|| format!("cannot load {}", args.target.display()))?;
    tracing::info!(functions = comp.functions.len(), elapsed = ?load.elapsed(), "loaded");
    let started = Instant::now();
    let outcome = runtime.run_entry(&comp.entry);
    let elapsed = started.elapsed();
    if args.explain {
        eprint!("{}", report::explain(&runtime.decisions()));
    }
    if !args.quiet {
        eprint!("{}", report::hops(&comp.entry, elapsed, &runtime.hops()));
    }
    let code = outcome?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

fn inspect(path: &std::path::Path) -> Result<()> {
    let (engine, _ticker) = new_engine()?;
    let module = load_module(&engine, path)?;
    println!("module:                {}", path.display());
    println!("digest:                {}", module.digest);
    println!("{}", module.info);
    Ok(())
}
