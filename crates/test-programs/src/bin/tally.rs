//! `tally`: answers how many calls this instance has run, this one
//! included (`calls=<n>`), so that a test can see whether a request ran
//! again or was answered from a server's memory.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};

static CALLS: AtomicU64 = AtomicU64::new(0);

fn tally(_request: &[u8]) -> Result<Vec<u8>, Infallible> {
    let n = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    Ok(format!("calls={n}").into_bytes())
}

cwasi_guest::export_handler!(tally);

fn main() {}
