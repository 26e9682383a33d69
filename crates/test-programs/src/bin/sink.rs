//! `sink`: answers with the 8-byte little-endian checksum of its request, so
//! large payloads can be verified without being sent back.

use std::convert::Infallible;

fn sink(request: &[u8]) -> Result<Vec<u8>, Infallible> {
    Ok(test_programs::checksum(request).to_le_bytes().to_vec())
}

cwasi_guest::export_handler!(sink);

fn main() {}
