//! The container's mounts as WASI preopens.
//!
//! The Wasm runs inside the container's mount namespace, so the directories
//! the spec mounts (volumes, hostPaths, `ctr run --mount`) are where the spec
//! put them. Each becomes a preopen at the same path. Left out: the root (the
//! image rootfs holds the module, nothing a function needs), the kernel's
//! `/proc`, `/sys` and `/dev`, and the node directory with everything above
//! it, since a guest that could write there could replace records and
//! modules other functions trust.

use std::path::{Path, PathBuf};

use cwasi_runtime::Preopen;

/// Mount points read from `/proc/self/mountinfo` text, in order, unescaped.
pub fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| {
            bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) && d[0] <= b'3'
        });
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points that become preopens, given the node directory.
pub fn preopen_paths(points: &[PathBuf], node_dir: &Path) -> Vec<PathBuf> {
    let kernel = [Path::new("/proc"), Path::new("/sys"), Path::new("/dev")];
    let mut out: Vec<PathBuf> = points
        .iter()
        .filter(|p| p.as_path() != Path::new("/"))
        .filter(|p| !kernel.iter().any(|k| p.starts_with(k)))
        // Neither the node directory, nor anything inside it, nor a mount
        // that contains it.
        .filter(|p| !p.starts_with(node_dir) && !node_dir.starts_with(p))
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Preopens for this container: every directory mount at its own path,
/// writable (the mount's own options still apply).
pub fn container_preopens(node_dir: &Path) -> Vec<Preopen> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    preopen_paths(&mount_points(&text), node_dir)
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| {
            let guest = p.to_str()?.to_string();
            Some(Preopen {
                host: p,
                guest,
                writable: true,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
611 540 0:52 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
612 611 0:55 / /proc rw,nosuid - proc proc rw
613 611 0:56 / /dev rw,nosuid - tmpfs tmpfs rw
614 613 0:57 / /dev/pts rw - devpts devpts rw
615 611 0:58 / /sys ro - sysfs sysfs ro
616 611 0:59 / /run rw - tmpfs tmpfs rw
617 616 8:1 /tmp/node /run/cwasi rw - ext4 /dev/sda1 rw
618 611 8:1 /srv/data /data rw - ext4 /dev/sda1 rw
619 611 8:1 /srv/my\\040files /my\\040files rw - ext4 /dev/sda1 rw
620 611 8:1 /etc/hosts /etc/hosts ro - ext4 /dev/sda1 ro
";

    #[test]
    fn mount_points_are_read_and_unescaped() {
        let points = mount_points(MOUNTINFO);
        assert_eq!(points.len(), 10);
        assert_eq!(points[8], PathBuf::from("/my files"));
    }

    #[test]
    fn kernel_root_and_node_directory_mounts_are_left_out() {
        let points = mount_points(MOUNTINFO);
        let chosen = preopen_paths(&points, Path::new("/run/cwasi"));
        assert_eq!(
            chosen,
            vec![
                PathBuf::from("/data"),
                PathBuf::from("/etc/hosts"),
                PathBuf::from("/my files")
            ]
        );
    }

    #[test]
    fn garbage_gives_no_preopens() {
        assert!(mount_points("nonsense\n\n").is_empty());
        assert_eq!(unescape("a\\04"), "a\\04");
        assert_eq!(unescape("\\"), "\\");
    }
}
