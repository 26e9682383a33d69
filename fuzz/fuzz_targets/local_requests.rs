//! The local frame parser and the local server's request state machine, fed
//! what a peer sends on a connection after its first frame.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cwasi_runtime::fuzzing::local_requests(data);
});
