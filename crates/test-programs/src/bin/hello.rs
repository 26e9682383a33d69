//! `hello` (entry): the WASI hello-world of the container tests.
//! `hello [exit-code [file...]]` prints `hello from cwasi` and its arguments,
//! then each file's contents as `file <path>: <text>` (or `file <path>:
//! error <message>` if it cannot be read), and exits with `exit-code`
//! (default 0).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("hello from cwasi args={args:?}");
    for path in args.iter().skip(1) {
        match std::fs::read_to_string(path) {
            Ok(text) => println!("file {path}: {}", text.trim_end()),
            Err(e) => println!("file {path}: error {e}"),
        }
    }
    let code = args
        .first()
        .and_then(|a| a.parse::<i32>().ok())
        .unwrap_or(0);
    std::process::exit(code);
}
