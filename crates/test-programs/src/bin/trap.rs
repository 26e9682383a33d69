//! `trap`: a handler that panics, which traps (`unreachable`) on
//! wasm32-wasip1; the host must report `CALLEE_TRAPPED` to the caller.

use std::convert::Infallible;

fn trap(_request: &[u8]) -> Result<Vec<u8>, Infallible> {
    panic!("trap: this handler always panics");
}

cwasi_guest::export_handler!(trap);

fn main() {}
