//! Admission by peer: places for payloads still arriving and for TLS
//! handshakes, and call slots, taken and given back in any order.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cwasi_runtime::fuzzing::admission(data);
});
