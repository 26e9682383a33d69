//! What `cwasi run` does with its entry: runs a command's `_start`, or
//! calls a function once from the host with the request of `--data`.

use anyhow::{bail, Result};
use cwasi_runtime::{Composition, Runtime, RuntimeError};

use crate::report::Ended;

/// How the entry ended, when it did.
pub enum Outcome {
    /// A command's `_start` returned with this exit code.
    Exited(i32),
    /// A function answered with this response.
    Answered(Vec<u8>),
}

/// Starts the entry of `comp`: a function that is callable and not a
/// command is called from the host as a caller of its own namespace `ns`,
/// with `request` (empty if `None`); anything else runs as a command, which
/// refuses a function that is neither. A request for a command is refused.
pub fn start(
    runtime: &Runtime,
    comp: &Composition,
    ns: &str,
    request: Option<&[u8]>,
) -> Result<Outcome> {
    let name = &comp.entry;
    let info = runtime.module_info(name);
    let seed_handler = comp
        .functions
        .iter()
        .any(|f| f.name == *name && f.seed.handler.is_some());
    let command = info.is_some_and(|i| i.is_entry());
    if command && request.is_some() {
        bail!(
            "--data is for an entry that is a function, and '{name}' is a command (it exports \
             _start or wasi:cli/run): give it arguments instead (after -- with a module, or \
             `args` in the composition)"
        );
    }
    let callable = info.is_some_and(|i| i.is_callable()) || seed_handler;
    if callable && !command {
        let response = runtime.call(ns, name, request.unwrap_or_default())?;
        return Ok(Outcome::Answered(response));
    }
    Ok(Outcome::Exited(runtime.run_entry(name)?))
}

/// How an outcome reads in the line above the hop table.
pub fn ended(outcome: &Result<Outcome>) -> Ended {
    match outcome {
        Ok(_) => Ended::Finished,
        Err(e) => match e.downcast_ref::<RuntimeError>() {
            Some(RuntimeError::NotAnEntry(_) | RuntimeError::UnknownFunction(_)) => Ended::Refused,
            _ => Ended::Failed,
        },
    }
}
