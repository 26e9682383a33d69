//! `echo`: a callable function that answers with its request unchanged, the
//! simplest round trip for the host's tests.

use std::convert::Infallible;

fn echo(request: &[u8]) -> Result<Vec<u8>, Infallible> {
    Ok(request.to_vec())
}

cwasi_guest::export_handler!(echo);

fn main() {}
