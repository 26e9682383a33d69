//! `cwasi inspect` of a component: the WIT world it was built for (its
//! imports and exports, read with wit-component), and which CWASI world of
//! `wit/function.wit` that is. The runtime runs core modules only, so this
//! is what a component's author can check today.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wit_component::DecodedWasm;

/// The export that makes a component a CWASI function (`world function`).
const HANDLER: &str = "cwasi:function/handler";
/// The export that makes a component a command (`world entry`).
const RUN: &str = "wasi:cli/run";

/// What `cwasi inspect` prints for the component `bytes` read from `path`.
pub fn describe(path: &Path, bytes: &[u8]) -> Result<String> {
    let decoded = wit_component::decode(bytes)
        .with_context(|| format!("{} is not a valid component", path.display()))?;
    let DecodedWasm::Component(resolve, world) = decoded else {
        anyhow::bail!("{} is a WIT package, not a component", path.display());
    };
    let world = &resolve.worlds[world];
    let names = |items: &wit_parser::IndexMap<wit_parser::WorldKey, wit_parser::WorldItem>| {
        items
            .keys()
            .map(|key| resolve.name_world_key(key))
            .collect::<Vec<_>>()
    };
    let (imports, exports) = (names(&world.imports), names(&world.exports));
    let unversioned = |name: &str| name.split('@').next().unwrap_or(name).to_string();
    let exports_one = |wanted: &str| exports.iter().any(|e| unversioned(e) == wanted);
    let (kind, runs) = match (exports_one(HANDLER), exports_one(RUN)) {
        (true, _) => (
            "function (exports cwasi:function/handler)",
            "as a function: called by name (cwasi serve, a composition, the shim)",
        ),
        (false, true) => (
            "entry (exports wasi:cli/run)",
            "as an entry (cwasi run, the shim)",
        ),
        (false, false) => (
            "none: it exports neither cwasi:function/handler nor wasi:cli/run",
            "no: nothing in it can be called or run",
        ),
    };
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join("\n                       ")
        }
    };
    let mut out = String::new();
    let _ = writeln!(out, "component:             {}", path.display());
    let _ = writeln!(
        out,
        "digest:                sha256:{:x}",
        Sha256::digest(bytes)
    );
    let _ = writeln!(out, "CWASI world:           {kind}");
    let _ = writeln!(out, "imports:               {}", list(&imports));
    let _ = writeln!(out, "exports:               {}", list(&exports));
    let _ = writeln!(out, "runs under cwasi:      {runs}");
    Ok(out)
}
