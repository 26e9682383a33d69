//! Paths of the Python and JavaScript guest components, built by this
//! crate's build script with componentize-py and componentize-js for the
//! world `cwasi:function/function` of `wit/`: every program of
//! `crates/test-programs/componentize/programs` (`PY_TRANSFORM`,
//! `JS_TRANSFORM`) and the examples of `examples/python` (`PARSE`) and
//! `examples/js` (`FORMAT`) gets a constant named after it in upper case,
//! holding the absolute path of its `.wasm`; [`ALL`] lists them.

include!(concat!(env!("OUT_DIR"), "/componentize_artifacts.rs"));

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn every_program_is_a_component() {
        assert_eq!(ALL.len(), 4, "{ALL:?}");
        for (name, path) in ALL {
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
}
