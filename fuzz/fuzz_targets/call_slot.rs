//! The call slot of a local connection, as a server and a caller read it:
//! fed what a hostile peer writes into the control block.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cwasi_runtime::fuzzing::call_slot(data);
});
