//! `producer` (entry): `producer <size> <target> <expect> [count]` generates
//! `size` bytes, calls `target` with them and checks the reply, where
//! `expect` is `echo` (reply == data), `checksum` (reply == checksum(data))
//! or `xor-checksum` (reply == checksum(data ^ 0xA5), as producer ->
//! transform -> sink gives). With `count`, it makes that many calls in a
//! row (1 without it), each checked.
//!
//! Prints `ok size=<n> checksum=<hex>` (and ` calls=<count>` when `count`
//! was given) and exits 0; on a call error prints `error code=<raw>
//! message=<msg>` and exits 2; on a wrong reply prints `mismatch ...` and
//! exits 1; bad arguments exit 64.

use std::process::exit;
use test_programs::{checksum, checksum_masked, generate, TRANSFORM_MASK};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (size, target, expect, count) = match args.as_slice() {
        [_, size, target, expect] => (size, target, expect.as_str(), None),
        [_, size, target, expect, count] => (size, target, expect.as_str(), Some(count)),
        _ => usage(),
    };
    let Ok(size) = size.parse::<usize>() else {
        usage()
    };
    let calls = match count.map(|c| c.parse::<u32>()) {
        None => 1,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => usage(),
    };
    if !matches!(expect, "echo" | "checksum" | "xor-checksum") {
        usage();
    }

    let data = generate(size);
    let sum = checksum(&data);
    for _ in 0..calls {
        let reply = match cwasi_guest::call(target, &data) {
            Ok(reply) => reply,
            Err(e) => {
                println!("error code={} message={}", e.raw, e.message);
                exit(2);
            }
        };
        let good = match expect {
            "echo" => reply == data,
            "checksum" => reply == sum.to_le_bytes(),
            _ => reply == checksum_masked(&data, TRANSFORM_MASK).to_le_bytes(),
        };
        if !good {
            println!(
                "mismatch expect={expect} sent={size} got_len={} got_checksum={:016x}",
                reply.len(),
                checksum(&reply)
            );
            exit(1);
        }
    }
    match count {
        Some(_) => println!("ok size={size} checksum={sum:016x} calls={calls}"),
        None => println!("ok size={size} checksum={sum:016x}"),
    }
}

fn usage() -> ! {
    eprintln!("usage: producer <size> <target> <echo|checksum|xor-checksum> [count]");
    exit(64);
}
