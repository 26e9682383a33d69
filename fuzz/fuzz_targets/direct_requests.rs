//! The direct data plane's request reader, fed what a peer of another node
//! sends on a TCP connection after the server's ready frame.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cwasi_runtime::fuzzing::direct_requests(data);
});
