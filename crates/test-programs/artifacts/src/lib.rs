//! Paths of the CWASI guest programs, built for wasm32-wasip1 by this
//! crate's build script, so host tests can load them without knowing how or
//! where they were built.
//!
//! Every program of `crates/test-programs/src/bin` and
//! `examples/functions/src/bin` gets a constant named after it in upper case
//! (`ECHO`, `BAD_RESPONSE`, `SOURCE`, ...), holding the absolute path of its
//! `.wasm`; [`ALL`] lists them all and [`EXAMPLES_DIR`] is their directory.
//! [`wasm_bytes!`] compiles a program's bytes into the crate that uses it.
//!
//! The Rust components (`crates/test-programs/components/*`,
//! `examples/rust-component`, built for wasm32-wasip2) get constants too
//! (`COMPONENT_ECHO`, `COMPONENT_TRANSFORM`, `COMPONENT_FAULTS`,
//! `COMPONENT_ENTRY`, `UPPER`),
//! listed in [`COMPONENTS`] and kept in [`COMPONENTS_DIR`].

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn every_artifact_is_a_wasm_module() {
        assert!(!ALL.is_empty());
        for (name, path) in ALL {
            assert!(path.starts_with(EXAMPLES_DIR), "{name}: {path}");
            let mut magic = [0u8; 4];
            std::fs::File::open(path)
                .and_then(|mut f| f.read_exact(&mut magic))
                .unwrap_or_else(|e| panic!("{name}: cannot read {path}: {e}"));
            assert_eq!(&magic, b"\0asm", "{name}: {path} is not a wasm module");
        }
    }

    #[test]
    fn every_component_artifact_is_a_component() {
        assert_eq!(COMPONENTS.len(), 5);
        for (name, path) in COMPONENTS {
            assert!(path.starts_with(COMPONENTS_DIR), "{name}: {path}");
            let mut header = [0u8; 8];
            std::fs::File::open(path)
                .and_then(|mut f| f.read_exact(&mut header))
                .unwrap_or_else(|e| panic!("{name}: cannot read {path}: {e}"));
            assert_eq!(
                &header, b"\0asm\x0d\0\x01\0",
                "{name}: {path} is not a component"
            );
        }
    }

    #[test]
    fn expected_programs_are_listed() {
        let names: Vec<&str> = ALL.iter().map(|(name, _)| *name).collect();
        for expected in [
            "echo",
            "transform",
            "sink",
            "producer",
            "busy",
            "fanout",
            "aggregator",
            "trap",
            "bad_response",
            "infinite_loop",
            "memory_hog",
            "probe",
            "seed_caller",
            "seed_callee",
            "source",
            "normalize",
            "count",
            "discard",
            "bench_caller",
            "emit",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        assert_eq!(ECHO, ALL.iter().find(|(n, _)| *n == "echo").unwrap().1);
    }

    #[test]
    fn compiled_in_bytes_are_the_files() {
        assert_eq!(&wasm_bytes!(DISCARD)[..], std::fs::read(DISCARD).unwrap());
        assert_eq!(&wasm_bytes!(EMIT)[..4], b"\0asm");
    }
}
