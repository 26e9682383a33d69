//! `component_entry` (world `cwasi:function/entry`): a WASI command that
//! calls the function named by its first argument with the bytes of its
//! second, and prints the answer on stdout. It exits 1 if the call fails,
//! printing `error <code> <message>` on stderr, and 64 on bad arguments.
//!
//! `component_entry --bench <size> <iterations> <target>` is the component
//! twin of the core `bench_caller`: it calls `target` with one payload of
//! `size` bytes `iterations` times and prints nothing (the host times the
//! calls).

wit_bindgen::generate!({
    world: "cwasi:function/entry",
    path: "../../../../wit",
    // The WASI interfaces of the world, which std already uses on
    // wasm32-wasip2; generated so that the world is complete.
    generate_all,
});

use std::io::Write;

use cwasi::function::invoke;

struct Entry;

impl exports::wasi::cli::run::Guest for Entry {
    fn run() -> Result<(), ()> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if let [flag, size, iterations, target] = args.as_slice() {
            if flag == "--bench" {
                return bench(size, iterations, target);
            }
        }
        let [target, text] = args.as_slice() else {
            eprintln!("usage: component_entry <target> <text>");
            std::process::exit(64);
        };
        match invoke::call(target, text.as_bytes()) {
            Ok(response) => {
                let mut out = std::io::stdout();
                out.write_all(&response).map_err(|_| ())?;
                out.write_all(b"\n").map_err(|_| ())?;
                out.flush().map_err(|_| ())
            }
            Err(e) => {
                eprintln!("error {:?} {}", e.code, e.message);
                Err(())
            }
        }
    }
}

/// Calls `target` `iterations` times with `size` bytes.
fn bench(size: &str, iterations: &str, target: &str) -> Result<(), ()> {
    let (Ok(size), Ok(iterations)) = (size.parse::<usize>(), iterations.parse::<u64>()) else {
        eprintln!("usage: component_entry --bench <size> <iterations> <target>");
        std::process::exit(64);
    };
    let payload: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
    for i in 0..iterations {
        if let Err(e) = invoke::call(target, &payload) {
            eprintln!("error call={i} {:?} {}", e.code, e.message);
            return Err(());
        }
    }
    Ok(())
}

export!(Entry);
