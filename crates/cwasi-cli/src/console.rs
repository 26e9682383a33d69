//! Writing to the terminal without panicking. `println!` and `eprintln!`
//! panic when the stream fails: a full disk behind `2>/dev/full`, or a
//! reader that went away (`cwasi run … | head -1`, where the write fails
//! with `EPIPE` since Rust ignores `SIGPIPE`). Diagnostics ([`note!`]) are
//! best-effort and ignore such failures; data ([`output`]) fails the
//! command cleanly, with an error.

use std::fmt;
use std::io::{self, Write};

use anyhow::{Context, Result};

/// Writes a diagnostic line to stderr, as `eprintln!` would, ignoring a
/// stderr that cannot take it.
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::console::diagnostic(format_args!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use note;

/// Writes `args` to stderr; a failure to write is ignored (there is
/// nowhere left to report it).
pub fn diagnostic(args: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.flush());
}

/// Writes the command's output, `bytes`, to stdout; a stdout that cannot
/// take it is an error of the command.
pub fn output(bytes: &[u8]) -> Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("cannot write the output to stdout")
}
