//! `busy`: the request is a decimal number of milliseconds; spins (no sleep,
//! so it really occupies a thread) for that long and answers with the
//! request. Used to show that fan-out runs concurrently.

use std::time::{Duration, Instant};

fn busy(request: &[u8]) -> Result<Vec<u8>, String> {
    let text =
        std::str::from_utf8(request).map_err(|e| format!("busy: request is not UTF-8: {e}"))?;
    let ms: u64 = text
        .trim()
        .parse()
        .map_err(|e| format!("busy: request {text:?} is not a number of milliseconds: {e}"))?;
    let until = Duration::from_millis(ms);
    let start = Instant::now();
    let mut spins = 0u64;
    while start.elapsed() < until {
        spins = std::hint::black_box(spins.wrapping_add(1));
    }
    Ok(request.to_vec())
}

cwasi_guest::export_handler!(busy);

fn main() {}
