//! `emit`: answers with as many bytes as its request asks for (the request
//! is the size as a `u64` little-endian; anything else is an error). The
//! callee of `cwasi bench`'s fan-in, where each B sends a payload back to A
//! and A sends almost nothing.

fn emit(request: &[u8]) -> Result<Vec<u8>, String> {
    let size: [u8; 8] = request
        .try_into()
        .map_err(|_| format!("emit: expected an 8-byte size, got {} bytes", request.len()))?;
    let size = usize::try_from(u64::from_le_bytes(size))
        .map_err(|_| "emit: size does not fit in memory".to_string())?;
    // Fresh linear memory is zeroed, so this costs at most a memset.
    Ok(vec![0u8; size])
}

cwasi_guest::export_handler!(emit);

fn main() {}
