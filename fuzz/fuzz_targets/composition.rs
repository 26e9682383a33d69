//! The composition parser, fed the text of a composition file.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cwasi_runtime::fuzzing::composition(data);
});
