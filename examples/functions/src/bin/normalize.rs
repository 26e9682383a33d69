//! `normalize` (middle of the demo pipeline): lower-cases ASCII letters,
//! turns every other byte into a space, then calls the function named by
//! `CWASI_NEXT` (default `count`) and answers with its reply.

use cwasi_guest::CallError;

fn normalize(request: &[u8]) -> Result<Vec<u8>, CallError> {
    let text: Vec<u8> = request
        .iter()
        .map(|&b| {
            if b.is_ascii_alphabetic() {
                b.to_ascii_lowercase()
            } else {
                b' '
            }
        })
        .collect();
    let next = std::env::var("CWASI_NEXT")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "count".to_string());
    cwasi_guest::call(&next, &text)
}

cwasi_guest::export_handler!(normalize);

fn main() {}
