//! `hello` (entry): the WASI hello-world of the container tests.
//! `hello [exit-code]` prints `hello from cwasi` and its arguments, then exits
//! with `exit-code` (default 0).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("hello from cwasi args={args:?}");
    let code = args
        .first()
        .and_then(|a| a.parse::<i32>().ok())
        .unwrap_or(0);
    std::process::exit(code);
}
