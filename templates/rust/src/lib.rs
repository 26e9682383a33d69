//! `{{name}}`: a CWASI function in Rust, a core module built with the guest
//! SDK (`cwasi-guest`). It answers with its request upper-cased.
//!
//! To call another function by name: `cwasi_guest::call("other", bytes)`.

/// Handles one request. An `Err` is the function's own failure: its caller
/// gets `CALLEE_ERROR` with the message.
fn handle(request: &[u8]) -> Result<Vec<u8>, String> {
    if request.is_empty() {
        return Err("the request is empty: send some text, e.g. --data 'hello'".to_string());
    }
    let text = String::from_utf8_lossy(request).to_uppercase();
    Ok(format!("{text} (upper-cased by {{name}}, in Rust)").into_bytes())
}

cwasi_guest::export_handler!(handle);
