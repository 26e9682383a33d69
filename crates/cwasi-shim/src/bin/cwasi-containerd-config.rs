//! `cwasi-containerd-config <config.toml>`: merges the `cwasi` runtime
//! handler into a node's containerd config (see
//! `cwasi_shim::containerd_config`), keeping every runtime and setting it
//! already has. A missing file is created. When the config changes, the old
//! one is kept beside it as `<config>.cwasi-backup-<unix time>` and the new
//! one replaces it through a rename; when nothing changes, nothing is
//! written. A config it cannot read or merge is left untouched, and the exit
//! code is 1. `deploy/install-node.sh` runs it.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use cwasi_shim::containerd_config::merge;

const ME: &str = "cwasi-containerd-config";
/// A containerd config is a few KiB; anything this large is not one.
const MAX_CONFIG_BYTES: u64 = 16 << 20;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path] = args.as_slice() else {
        eprintln!("usage: {ME} <containerd config.toml>");
        std::process::exit(2);
    };
    if let Err(e) = run(Path::new(path)) {
        eprintln!("{ME}: error: {e:#}");
        eprintln!("{ME}: {path} was left as it was");
        std::process::exit(1);
    }
}

fn run(path: &Path) -> anyhow::Result<()> {
    let existing = match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => bail!("{} is not a regular file", path.display()),
        Ok(meta) if meta.len() > MAX_CONFIG_BYTES => {
            bail!("{} is larger than {MAX_CONFIG_BYTES} bytes", path.display())
        }
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let text = match &existing {
        Some(_) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => String::new(),
    };
    let merged = merge(&text).with_context(|| format!("{}", path.display()))?;
    for w in &merged.warnings {
        eprintln!("{ME}: warning: {w}");
    }
    if merged.changes.is_empty() {
        println!(
            "{ME}: {} already has the cwasi runtime; nothing changed",
            path.display()
        );
        return Ok(());
    }
    let mode = existing
        .as_ref()
        .map_or(0o644, |m| m.permissions().mode() & 0o7777);
    if existing.is_some() {
        let backup = backup_path(path);
        std::fs::copy(path, &backup).with_context(|| {
            format!("cannot back up {} to {}", path.display(), backup.display())
        })?;
        println!("{ME}: kept the old config as {}", backup.display());
    } else if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    replace(path, merged.text.as_bytes(), mode)?;
    for change in &merged.changes {
        println!("{ME}: {change}");
    }
    println!("{ME}: wrote {}", path.display());
    Ok(())
}

/// `<config>.cwasi-backup-<unix seconds>`, with `.<n>` added if that is
/// taken (two runs in one second).
fn backup_path(path: &Path) -> PathBuf {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let first = format!("{}.cwasi-backup-{now}", path.display());
    std::iter::once(PathBuf::from(&first))
        .chain((2..).map(|n| PathBuf::from(format!("{first}.{n}"))))
        .find(|p| !p.exists())
        .expect("an unbounded sequence has a free name")
}

/// Writes `bytes` to a temporary file beside `path` and renames it over
/// `path`, so that containerd never reads half a config.
fn replace(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".cwasi-tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}
