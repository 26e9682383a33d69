//! `infinite_loop`: a handler that never returns; the host must stop it with
//! its call timeout (epoch interruption) and report `TIMEOUT`.

use std::convert::Infallible;
use std::hint::black_box;

fn spin_forever(_request: &[u8]) -> Result<Vec<u8>, Infallible> {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

cwasi_guest::export_handler!(spin_forever);

fn main() {}
