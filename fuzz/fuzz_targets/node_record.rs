//! The node directory's record parser, fed a record file's name and
//! contents.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cwasi_runtime::fuzzing::node_record(data);
});
