//! Reading a file that someone else may have put in place: only a regular
//! file is read, never more than a cap, and opening it never blocks.
//!
//! The node directory and the `modules/` store are writable by every process
//! and container that shares them, and a composition names any path. A FIFO
//! would block `open`, a device such as `/dev/zero` never ends, and a sparse
//! file can claim any size. So the file is opened with `O_NONBLOCK` (and
//! `O_NOFOLLOW` where a link is unexpected), checked with `fstat` (regular,
//! within the cap), and read through `take(cap + 1)`, so that a file that
//! grows after the check is still bounded.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::error::RuntimeError;

/// Whether the last component of the path may be a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Links {
    /// A path the user gave (a composition's module, a CLI argument).
    Follow,
    /// A file the node directory publishes (records, `modules/<hex>.wasm`).
    Refuse,
}

/// Opens `path` for reading if it is a regular file of at most `cap` bytes.
pub(crate) fn open_regular(path: &Path, cap: u64, links: Links) -> Result<File, RuntimeError> {
    let mut flags = libc::O_NONBLOCK;
    if links == Links::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|source| refused_open(path, links, source))?;
    let meta = file.metadata().map_err(|source| RuntimeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(RuntimeError::NotRegularFile {
            path: path.to_path_buf(),
            kind: kind_of(&meta.file_type()),
        });
    }
    if meta.len() > cap {
        return Err(too_large(path, meta.len(), cap));
    }
    Ok(file)
}

/// Reads an opened file to its end, failing once it passes `cap` bytes.
pub(crate) fn read_capped(file: File, path: &Path, cap: u64) -> Result<Vec<u8>, RuntimeError> {
    let hint = file.metadata().map_or(0, |m| m.len().min(cap));
    let mut bytes = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > cap {
        return Err(too_large(path, bytes.len() as u64, cap));
    }
    Ok(bytes)
}

/// [`open_regular`], then [`read_capped`]: the whole file, or a clear error.
pub(crate) fn read_regular(path: &Path, cap: u64, links: Links) -> Result<Vec<u8>, RuntimeError> {
    read_capped(open_regular(path, cap, links)?, path, cap)
}

/// The error for a failed open: `O_NOFOLLOW` on a link fails with `ELOOP`.
fn refused_open(path: &Path, links: Links, source: std::io::Error) -> RuntimeError {
    if links == Links::Refuse && source.raw_os_error() == Some(libc::ELOOP) {
        return RuntimeError::NotRegularFile {
            path: path.to_path_buf(),
            kind: "symbolic link",
        };
    }
    RuntimeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn too_large(path: &Path, len: u64, max: u64) -> RuntimeError {
    RuntimeError::FileTooLarge {
        path: path.to_path_buf(),
        len,
        max,
    }
}

/// What a file that is not a regular file is, for the error message.
fn kind_of(t: &std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else if t.is_symlink() {
        "symbolic link"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cwasi-regular-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reads_a_regular_file_within_its_cap() {
        let d = scratch("ok");
        let f = d.join("a");
        std::fs::write(&f, b"hello").unwrap();
        assert_eq!(read_regular(&f, 5, Links::Refuse).unwrap(), b"hello");
        let err = read_regular(&f, 4, Links::Refuse).unwrap_err();
        assert!(
            matches!(err, RuntimeError::FileTooLarge { len: 5, max: 4, .. }),
            "{err}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn refuses_devices_fifos_and_unexpected_links() {
        let err = read_regular(Path::new("/dev/zero"), 1 << 20, Links::Follow).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        let d = scratch("special");
        let fifo = d.join("f");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let err = read_regular(&fifo, 1 << 20, Links::Follow).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        let target = d.join("t");
        std::fs::write(&target, b"x").unwrap();
        let link = d.join("l");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(read_regular(&link, 1, Links::Follow).unwrap(), b"x");
        let err = read_regular(&link, 1, Links::Refuse).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_that_grows_after_the_check_is_still_bounded() {
        let d = scratch("grow");
        let f = d.join("g");
        std::fs::write(&f, b"abc").unwrap();
        let opened = open_regular(&f, 3, Links::Refuse).unwrap();
        std::fs::write(&f, b"abcdef").unwrap();
        let err = read_capped(opened, &f, 3).unwrap_err();
        assert!(
            matches!(err, RuntimeError::FileTooLarge { max: 3, .. }),
            "{err}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
