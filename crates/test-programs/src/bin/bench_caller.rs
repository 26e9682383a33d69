//! `bench_caller` (entry): `bench_caller <size> <iterations> <target>` builds
//! one payload of `size` bytes, then calls `target` with it `iterations`
//! times, one blocking call after the other. It measures nothing itself: the
//! host times every call (`Runtime::hops`). Used by the embedded-mode
//! benchmark with `target = discard`.
//!
//! Prints nothing and exits 0 when every call succeeds (so benchmark output
//! stays readable); on a call error prints
//! `error call=<i> code=<raw> message=<msg>` and exits 2; bad arguments
//! exit 64.

use std::process::exit;
use test_programs::generate;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (size, iterations, target) = match args.as_slice() {
        [_, size, iterations, target] => match (size.parse::<usize>(), iterations.parse::<u64>()) {
            (Ok(size), Ok(iterations)) => (size, iterations, target.as_str()),
            _ => usage(),
        },
        _ => usage(),
    };

    // Built (and so touched) once, before the first call: the calls then
    // copy from warm memory.
    let payload = generate(size);
    for i in 0..iterations {
        if let Err(e) = cwasi_guest::call(target, &payload) {
            println!("error call={i} code={} message={}", e.raw, e.message);
            exit(2);
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: bench_caller <size> <iterations> <target>");
    exit(64);
}
