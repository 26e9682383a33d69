//! The remote entry parser and the reply envelope decoder, fed what a broker
//! client could put in a function's stream or a reply list.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cwasi_runtime::fuzzing::remote_entries(data);
});
