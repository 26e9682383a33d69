//! Serves one module over HTTP: `cargo run -p cwasi-http-trigger --example
//! serve_module -- echo.wasm`, then `curl -d hello
//! http://127.0.0.1:8080/echo` (the function is named after the file).
//! Stops on Ctrl-C.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use cwasi_http_trigger::{HttpTrigger, TriggerConfig};
use cwasi_runtime::{FunctionSpec, Runtime, StopSignals};

fn main() -> anyhow::Result<()> {
    let module = PathBuf::from(
        std::env::args()
            .nth(1)
            .context("usage: serve_module FILE.wasm")?,
    );
    let name = module
        .file_stem()
        .and_then(|s| s.to_str())
        .context("the module's file name names the function")?
        .to_string();
    let mut signals = StopSignals::install()?;
    let runtime = Runtime::builder()
        .function(FunctionSpec::new(&name, "demo", module.clone()))
        .build()?;
    let trigger = HttpTrigger::start(
        "127.0.0.1:8080".parse()?,
        Arc::new(runtime),
        TriggerConfig::new("demo", vec![name.clone()]),
    )?;
    println!("POST http://{}/{name}", trigger.local_addr());
    signals.wait();
    Ok(())
}
