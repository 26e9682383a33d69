//! `cwasi inspect` of a component shows its WIT world. The components are
//! made here from `wit/function.wit` (wit-component's dummy core module for
//! a world, with the world embedded, encoded as a component): one of the
//! `function` world and one of the `entry` world.

mod common;

use std::path::Path;

use common::{cwasi, Scratch, LIMIT};
use wit_component::{dummy_module, embed_component_metadata, ComponentEncoder, StringEncoding};
use wit_parser::{ManglingAndAbi, Resolve};

/// A component of `world` of the package in `wit/`.
fn component_of(world: &str) -> Vec<u8> {
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit");
    let mut resolve = Resolve::default();
    let (package, _) = resolve.push_dir(&wit).expect("wit/ parses");
    let world = resolve
        .select_world(&[package], Some(world))
        .expect("the world exists");
    let mut module = dummy_module(&resolve, world, ManglingAndAbi::Standard32);
    embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8).unwrap();
    ComponentEncoder::default()
        .module(&module)
        .unwrap()
        .validate(true)
        .encode()
        .expect("a valid component")
}

#[test]
fn inspect_shows_the_world_of_a_component() {
    let scratch = Scratch::new("inspect-component");
    for (world, kind, export) in [
        (
            "function",
            "CWASI world:           function",
            "cwasi:function/handler@0.1.0",
        ),
        (
            "entry",
            "CWASI world:           entry",
            "wasi:cli/run@0.2.12",
        ),
    ] {
        let path = scratch.0.join(format!("{world}.wasm"));
        std::fs::write(&path, component_of(world)).unwrap();
        let out = cwasi(&["inspect", path.to_str().unwrap()], LIMIT);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert!(out.stdout.contains(kind), "{}", out.stdout);
        let exports = out.stdout.split("exports:").nth(1).unwrap();
        assert!(exports.contains(export), "{}", out.stdout);
        let imports = out.stdout.split("imports:").nth(1).unwrap();
        assert!(
            imports.contains("cwasi:function/invoke@0.1.0"),
            "{}",
            out.stdout
        );
        assert!(
            imports.contains("wasi:cli/environment@0.2.12"),
            "{}",
            out.stdout
        );
        let runs = if world == "function" {
            "as a function"
        } else {
            "as an entry"
        };
        assert!(out.stdout.contains(runs), "{}", out.stdout);
    }
    // The smallest component has an empty world.
    let empty = scratch.0.join("empty.wasm");
    std::fs::write(&empty, b"\0asm\x0d\0\x01\0").unwrap();
    let out = cwasi(&["inspect", empty.to_str().unwrap()], LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("CWASI world:           none"),
        "{}",
        out.stdout
    );
    // Running one that is no entry says why it cannot, and fails.
    let out = cwasi(&["run", empty.to_str().unwrap()], LIMIT);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("component"), "{}", out.stderr);
}
