//! `source` (entry of the demo pipeline): `source [size] [target]` generates
//! `size` bytes (default 1 MiB) of deterministic English-like text, calls
//! `target` (default `normalize`, which forwards to `count`), and prints the
//! reply and `checksum=<hex>` (FNV-1a 64) of the text it sent.

use std::process::exit;

/// Common English words, most frequent first; earlier words are picked more
/// often, so the word counts look like real text.
const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "it",
    "you",
    "that",
    "he",
    "was",
    "for",
    "on",
    "are",
    "with",
    "as",
    "his",
    "they",
    "be",
    "at",
    "one",
    "have",
    "this",
    "from",
    "or",
    "had",
    "by",
    "word",
    "but",
    "what",
    "some",
    "we",
    "can",
    "out",
    "other",
    "were",
    "all",
    "there",
    "when",
    "up",
    "use",
    "your",
    "how",
    "said",
    "an",
    "each",
    "she",
    "which",
    "do",
    "their",
    "time",
    "if",
    "will",
    "way",
    "about",
    "many",
    "then",
    "them",
    "write",
    "would",
    "like",
    "so",
    "these",
    "her",
    "long",
    "make",
    "thing",
    "see",
    "him",
    "two",
    "has",
    "look",
    "more",
    "day",
    "could",
    "go",
    "come",
    "did",
    "number",
    "sound",
    "no",
    "most",
    "people",
    "my",
    "over",
    "know",
    "water",
    "than",
    "call",
    "first",
    "who",
    "may",
    "down",
    "side",
    "been",
    "now",
    "find",
    "serverless",
    "function",
    "module",
    "memory",
    "runtime",
    "message",
    "network",
];

/// Deterministic pseudo-random numbers (xorshift64), so every run sends the
/// same text.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A word index skewed towards the start of [`WORDS`].
    fn word(&mut self) -> usize {
        let n = WORDS.len() as u64;
        let (a, b) = (self.next() % n, self.next() % n);
        (a * b / n) as usize
    }
}

/// `size` bytes of sentences: capitalised first word, commas now and then,
/// a full stop every few words.
fn generate_text(size: usize) -> Vec<u8> {
    let mut rng = Rng((0x5EED_0FC0_FFEE ^ size as u64) | 1);
    let mut text = Vec::with_capacity(size + 16);
    let mut words_in_sentence = 0;
    while text.len() < size {
        let word = WORDS[rng.word()].as_bytes();
        if words_in_sentence == 0 {
            text.push(word[0].to_ascii_uppercase());
            text.extend_from_slice(&word[1..]);
        } else {
            text.extend_from_slice(word);
        }
        words_in_sentence += 1;
        let r = rng.next() % 16;
        if words_in_sentence >= 4 && r < 3 {
            text.extend_from_slice(b". ");
            words_in_sentence = 0;
        } else if r == 3 {
            text.extend_from_slice(b", ");
        } else {
            text.push(b' ');
        }
    }
    text.truncate(size);
    text
}

/// FNV-1a 64 of `data`, printed so runs can be compared.
fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size = match args.get(1) {
        Some(s) => s.parse::<usize>().unwrap_or_else(|_| {
            eprintln!("usage: source [size-in-bytes] [target]");
            exit(64);
        }),
        None => 1_048_576,
    };
    let target = args.get(2).map_or("normalize", String::as_str);

    let text = generate_text(size);
    match cwasi_guest::call(target, &text) {
        Ok(reply) => {
            println!("source sent={} target={target}", text.len());
            println!("{}", String::from_utf8_lossy(&reply));
            println!("checksum={:016x}", fnv1a64(&text));
        }
        Err(e) => {
            eprintln!("source: {e}");
            println!("error code={} message={}", e.raw, e.message);
            exit(2);
        }
    }
}
