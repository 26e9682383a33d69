//! `count` (end of the demo pipeline): counts the whitespace-separated words
//! of its request and answers `words=<n> distinct=<d> top=w1:c1,...` with the
//! five most frequent words.

use std::collections::HashMap;
use std::convert::Infallible;

/// How many of the most frequent words the reply lists.
const TOP: usize = 5;

fn count(request: &[u8]) -> Result<Vec<u8>, Infallible> {
    let mut counts: HashMap<&[u8], u64> = HashMap::new();
    let mut words = 0u64;
    for word in request
        .split(u8::is_ascii_whitespace)
        .filter(|w| !w.is_empty())
    {
        *counts.entry(word).or_default() += 1;
        words += 1;
    }
    let mut ranked: Vec<(&[u8], u64)> = counts.iter().map(|(w, c)| (*w, *c)).collect();
    ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let top: Vec<String> = ranked
        .iter()
        .take(TOP)
        .map(|(w, c)| format!("{}:{c}", String::from_utf8_lossy(w)))
        .collect();
    Ok(format!(
        "words={words} distinct={} top={}",
        counts.len(),
        top.join(",")
    )
    .into_bytes())
}

cwasi_guest::export_handler!(count);

fn main() {}
