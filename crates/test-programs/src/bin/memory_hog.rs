//! `memory_hog`: the request is a decimal number of MiB; allocates and
//! touches that much memory, then answers with the byte count (decimal).
//! Over the host's memory limit the allocation traps, which the caller must
//! see as `RESOURCE_LIMIT`.

use std::hint::black_box;

/// Wasm page size: touching one byte per page commits every page.
const PAGE: usize = 64 * 1024;

fn hog(request: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(request)
        .map_err(|e| format!("memory_hog: request is not UTF-8: {e}"))?;
    let mib: usize = text
        .trim()
        .parse()
        .map_err(|e| format!("memory_hog: request {text:?} is not a number of MiB: {e}"))?;
    let len = mib
        .checked_mul(1024 * 1024)
        .ok_or_else(|| format!("memory_hog: {mib} MiB does not fit in usize"))?;
    let block = black_box(vec![1u8; len]);
    let mut sum = 0usize;
    for i in (0..block.len()).step_by(PAGE) {
        sum += usize::from(block[i]);
    }
    black_box(sum);
    Ok(block.len().to_string().into_bytes())
}

cwasi_guest::export_handler!(hog);

fn main() {}
