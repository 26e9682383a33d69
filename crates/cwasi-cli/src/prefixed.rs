//! The output of `cwasi run`'s served children, forwarded line by line with
//! the function's name in front, as docker compose does: `transform | ...`.

use std::io::{self, Read, Write};
use std::thread::JoinHandle;

/// Longest line kept whole; a longer one is forwarded in pieces of this
/// size, each prefixed, so a child that never writes a newline cannot make
/// the run buffer without bound.
const MAX_LINE: usize = 64 << 10;

/// Where a child's lines go.
#[derive(Debug, Clone, Copy)]
pub enum Sink {
    /// This process's stdout.
    Stdout,
    /// This process's stderr.
    Stderr,
}

impl Sink {
    /// Writes one line (with its newline), under the stream's lock, so that
    /// lines of different children never interleave.
    fn write_line(self, prefix: &[u8], line: &[u8]) -> io::Result<()> {
        let newline: &[u8] = if line.ends_with(b"\n") { b"" } else { b"\n" };
        let parts = [prefix, line, newline];
        match self {
            Sink::Stdout => write_parts(io::stdout().lock(), &parts),
            Sink::Stderr => write_parts(io::stderr().lock(), &parts),
        }
    }
}

/// Writes `parts` to `out` and flushes it.
fn write_parts(mut out: impl Write, parts: &[&[u8]]) -> io::Result<()> {
    for part in parts {
        out.write_all(part)?;
    }
    out.flush()
}

/// Forwards what `from` yields to `to` until end of file, each line after
/// `prefix`, on a thread of its own. If `to` fails (its reader went away),
/// the rest is read and dropped, so that the child never blocks on a full
/// pipe.
pub fn forward(
    prefix: String,
    from: impl Read + Send + 'static,
    to: Sink,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("cwasi-run-output".into())
        .spawn(move || {
            let mut broken = false;
            let read = copy_lines(from, |line| {
                if !broken {
                    if let Err(e) = to.write_line(prefix.as_bytes(), line) {
                        tracing::debug!("cannot forward a server's output: {e}");
                        broken = true;
                    }
                }
                Ok(())
            });
            if let Err(e) = read {
                tracing::debug!("cannot read a server's output: {e}");
            }
        })
}

/// Reads `from` to its end and hands every complete line (and the last,
/// unfinished one) to `emit`.
fn copy_lines(
    mut from: impl Read,
    mut emit: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        pending.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(i) = pending[start..].iter().position(|&b| b == b'\n') {
            emit(&pending[start..start + i + 1])?;
            start += i + 1;
        }
        while pending.len() - start >= MAX_LINE {
            emit(&pending[start..start + MAX_LINE])?;
            start += MAX_LINE;
        }
        pending.drain(..start);
    }
    if !pending.is_empty() {
        emit(&pending)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        copy_lines(input, |l| {
            out.push(l.to_vec());
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn lines_are_cut_at_newlines_and_bounded() {
        assert_eq!(
            lines(b"one\ntwo\n\nlast"),
            vec![
                b"one\n".to_vec(),
                b"two\n".to_vec(),
                b"\n".to_vec(),
                b"last".to_vec()
            ]
        );
        assert!(lines(b"").is_empty());
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let got = lines(&long);
        assert_eq!(
            got.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![MAX_LINE, MAX_LINE, 5]
        );
    }
}
