//! Paths of the C guest programs, built with clang for wasm32-wasi by this
//! crate's build script: every program of `crates/test-programs/c/programs`
//! (`C_TRANSFORM`) and of `examples/c` (`SHOUT`) gets a constant named after
//! it in upper case, holding the absolute path of its `.wasm`; [`ALL`] lists
//! them. They use the core ABI through `guests/c/cwasi.h`.

include!(concat!(env!("OUT_DIR"), "/c_artifacts.rs"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_c_program_is_a_wasm_module() {
        assert!(ALL.len() >= 2, "{ALL:?}");
        for (name, path) in ALL {
            let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{name}: {path}: {e}"));
            assert_eq!(&bytes[..4], b"\0asm", "{name}: {path} is not a wasm module");
        }
    }

    #[test]
    fn the_header_defines_every_error_code_of_the_abi() {
        let header = include_str!("../../../../guests/c/cwasi.h");
        let defined: Vec<(String, i32)> = header
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("#define CWASI_")?;
                let (name, value) = rest.split_once(' ')?;
                let value = value.trim().trim_start_matches('(').trim_end_matches(')');
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect();
        for code in cwasi_abi::ErrorCode::ALL {
            assert!(
                defined.contains(&(code.name().to_string(), code.as_raw())),
                "cwasi.h lacks CWASI_{} ({}): {defined:?}",
                code.name(),
                code.as_raw()
            );
        }
        assert_eq!(
            defined.len(),
            cwasi_abi::ErrorCode::ALL.len(),
            "{defined:?}"
        );
    }
}
