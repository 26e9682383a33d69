//! `transform`: XORs every byte with 0xA5, then forwards the result to the
//! function named by `CWASI_NEXT` (if set and non-empty) and answers with its
//! reply; otherwise answers with the transformed bytes. The middle stage of
//! producer -> transform -> sink.

use cwasi_guest::CallError;
use test_programs::{xor, TRANSFORM_MASK};

fn transform(request: &[u8]) -> Result<Vec<u8>, CallError> {
    let out = xor(request, TRANSFORM_MASK);
    match std::env::var("CWASI_NEXT") {
        Ok(next) if !next.is_empty() => cwasi_guest::call(&next, &out),
        _ => Ok(out),
    }
}

cwasi_guest::export_handler!(transform);

fn main() {}
