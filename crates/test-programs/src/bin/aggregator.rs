//! `aggregator`: parses a sequence of parts, each a `u32` little-endian
//! length followed by that many bytes, and answers `parts=<k> bytes=<total>`
//! (total of the part lengths). The second stage of `fanout`.

fn aggregate(request: &[u8]) -> Result<Vec<u8>, String> {
    let mut rest = request;
    let (mut parts, mut total) = (0usize, 0usize);
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(format!(
                "aggregator: truncated length prefix after {parts} parts"
            ));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        rest = &rest[4..];
        if rest.len() < len {
            return Err(format!(
                "aggregator: part {parts} claims {len} bytes but only {} remain",
                rest.len()
            ));
        }
        rest = &rest[len..];
        parts += 1;
        total += len;
    }
    Ok(format!("parts={parts} bytes={total}").into_bytes())
}

cwasi_guest::export_handler!(aggregate);

fn main() {}
