//! `fanout` (entry): `fanout <n> <target> <payload>` calls `target` `n` times
//! concurrently with `call_all`, sends all replies (each prefixed by its
//! `u32` little-endian length) to `aggregator`, and prints
//! `fanout n=<n> aggregate=<reply>`. Any call error prints
//! `error code=<raw> message=<msg>` and exits 2; bad arguments exit 64.

use std::process::exit;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (n, target, payload) = match args.as_slice() {
        [_, n, target, payload] => match n.parse::<usize>() {
            Ok(n) => (n, target.as_str(), payload.as_bytes()),
            Err(_) => usage(),
        },
        _ => usage(),
    };

    let replies = cwasi_guest::call_all((0..n).map(|_| (target, payload)));
    let mut aggregate = Vec::new();
    for reply in replies {
        let reply = reply.unwrap_or_else(|e| fail(e));
        aggregate.extend_from_slice(&(reply.len() as u32).to_le_bytes());
        aggregate.extend_from_slice(&reply);
    }
    let summary = cwasi_guest::call("aggregator", &aggregate).unwrap_or_else(|e| fail(e));
    println!(
        "fanout n={n} aggregate={}",
        String::from_utf8_lossy(&summary)
    );
}

fn fail(e: cwasi_guest::CallError) -> ! {
    println!("error code={} message={}", e.raw, e.message);
    exit(2);
}

fn usage() -> ! {
    eprintln!("usage: fanout <n> <target> <payload>");
    exit(64);
}
