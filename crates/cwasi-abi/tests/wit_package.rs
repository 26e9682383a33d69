//! The component ABI, the WIT package `cwasi:function` in `wit/`, parses
//! with its WASI dependencies (`wit/deps/`), has the two worlds
//! `docs/abi.md` describes, and names the same error codes as the core ABI,
//! in the same order.

use std::path::Path;

use cwasi_abi::ErrorCode;
use wit_parser::{Resolve, TypeDefKind, WorldItem, WorldKey};

fn resolve() -> (Resolve, wit_parser::PackageId) {
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit");
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_dir(&wit)
        .unwrap_or_else(|e| panic!("{} does not parse: {e:?}", wit.display()));
    (resolve, package)
}

/// The names a world imports or exports, as `namespace:package/interface`
/// for interfaces of other packages and the bare name for its own.
fn names(resolve: &Resolve, items: &wit_parser::IndexMap<WorldKey, WorldItem>) -> Vec<String> {
    items
        .iter()
        .map(|(key, _)| match key {
            WorldKey::Name(n) => n.clone(),
            WorldKey::Interface(id) => {
                let iface = &resolve.interfaces[*id];
                let name = iface.name.clone().unwrap_or_default();
                match iface.package {
                    Some(p) => {
                        let pkg = &resolve.packages[p].name;
                        format!("{}:{}/{name}", pkg.namespace, pkg.name)
                    }
                    None => name,
                }
            }
        })
        .collect()
}

#[test]
fn the_package_parses_and_has_both_worlds() {
    let (resolve, package) = resolve();
    let pkg = &resolve.packages[package];
    assert_eq!(pkg.name.to_string(), "cwasi:function@0.1.0");
    for iface in ["types", "handler", "invoke"] {
        assert!(pkg.interfaces.contains_key(iface), "interface {iface}");
    }
    let function = &resolve.worlds[pkg.worlds["function"]];
    let exports = names(&resolve, &function.exports);
    assert_eq!(
        exports,
        ["cwasi:function/handler"],
        "the function world exports"
    );
    let imports = names(&resolve, &function.imports);
    for needed in [
        "cwasi:function/invoke",
        "wasi:cli/environment",
        "wasi:cli/stdout",
    ] {
        assert!(
            imports.iter().any(|i| i == needed),
            "{needed} in {imports:?}"
        );
    }
    let entry = &resolve.worlds[pkg.worlds["entry"]];
    assert_eq!(names(&resolve, &entry.exports), ["wasi:cli/run"]);
    assert!(names(&resolve, &entry.imports).contains(&"cwasi:function/invoke".to_string()));
}

#[test]
fn the_error_codes_are_the_core_abis() {
    let (resolve, package) = resolve();
    let types = &resolve.interfaces[resolve.packages[package].interfaces["types"]];
    let TypeDefKind::Enum(codes) = &resolve.types[types.types["error-code"]].kind else {
        panic!("error-code is not an enum");
    };
    let wit: Vec<String> = codes.cases.iter().map(|c| c.name.clone()).collect();
    // In the ABI's order: case i is code -(i + 1).
    let abi: Vec<String> = ErrorCode::ALL
        .iter()
        .map(|c| c.name().to_ascii_lowercase().replace('_', "-"))
        .collect();
    assert_eq!(wit, abi);
    for (i, code) in ErrorCode::ALL.iter().enumerate() {
        assert_eq!(code.as_raw(), -(i as i32) - 1, "{}", code.name());
    }
}
