//! `shout`: a CWASI function in Rust (a core module with the guest SDK),
//! called by name by `{{name}}`. It answers with its request upper-cased.

fn shout(request: &[u8]) -> Result<Vec<u8>, String> {
    Ok(String::from_utf8_lossy(request).to_uppercase().into_bytes())
}

cwasi_guest::export_handler!(shout);
