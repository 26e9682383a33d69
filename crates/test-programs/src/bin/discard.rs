//! `discard`: a callable function that ignores its request and answers with
//! nothing, so a call to it moves the payload exactly once (the one-way
//! hand-off A -> B). Used by the embedded-mode benchmark.

use std::convert::Infallible;

fn discard(_request: &[u8]) -> Result<Vec<u8>, Infallible> {
    Ok(Vec::new())
}

cwasi_guest::export_handler!(discard);

fn main() {}
