//! What the tests of guests in other languages share (`c_guest.rs`,
//! `components.rs`, `polyglot.rs`): payloads, the transform every test
//! program applies, and runtime helpers.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cwasi_runtime::{FunctionSpec, Mode, Runtime};

use super::Scratch;

/// The payload sizes every guest is called with.
pub const SIZES: [usize; 3] = [0, 64 << 10, 10 << 20];

/// `len` bytes that differ from one position to the next.
pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

/// What every `transform` test program does: XOR each byte with 0xA5.
pub fn xor(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().map(|b| b ^ 0xA5).collect()
}

/// Checks `got` against `want` without printing megabytes.
pub fn same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    assert_eq!(first, None, "{what}: the first differing byte");
}

/// A function of namespace `ns`, forwarding to `next` if given
/// (`CWASI_NEXT`).
pub fn spec(name: &str, ns: &str, module: &str, next: Option<&str>) -> FunctionSpec {
    let mut s = FunctionSpec::new(name, ns, PathBuf::from(module));
    if let Some(next) = next {
        s.env = vec![("CWASI_NEXT".into(), next.into())];
    }
    s
}

/// The mode of the host's or a function's calls to `target`.
pub fn mode_of(rt: &Runtime, caller: &str, target: &str) -> Mode {
    rt.hops()
        .into_iter()
        .find(|h| h.caller == caller && h.target == target)
        .unwrap_or_else(|| panic!("no {caller} -> {target} hop"))
        .mode
}

/// A directory of `scratch` only this user can reach (a node directory).
pub fn private_dir(scratch: &Scratch, name: &str) -> PathBuf {
    let dir = scratch.0.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// What the polyglot example prints for its record.
pub const POLYGLOT_JSON: &str = r#"{"NAME":"ADA LOVELACE","YEAR":"1815","ROLE":"MATHEMATICIAN"}"#;

/// `examples/polyglot.toml`, written into `dir` with its modules pointed
/// at this build's (its build steps are left as they are, unused).
pub fn polyglot_composition(dir: &Path) -> PathBuf {
    use test_programs_artifacts as progs;
    use test_programs_componentize as scripted;
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/polyglot.toml");
    let mut text = std::fs::read_to_string(&example).unwrap();
    for (file, path) in [
        ("component_entry.wasm", progs::COMPONENT_ENTRY),
        ("parse.wasm", scripted::PARSE),
        ("upper.wasm", progs::UPPER),
        ("format.wasm", scripted::FORMAT),
    ] {
        let from = format!("\"../target/components/{file}\"");
        assert!(text.contains(&from), "{from} in {}", example.display());
        text = text.replace(&from, &format!("{path:?}"));
    }
    let composition = dir.join("polyglot.toml");
    std::fs::write(&composition, text).unwrap();
    composition
}
