//! Who is at the other end of a local connection: the peer's uid and pid,
//! as the kernel says (`SO_PEERCRED`).

use std::io;
use std::os::unix::net::UnixStream;

/// The peer's uid and pid (`SO_PEERCRED`). The pid is 0 when the peer runs
/// in another PID namespace (another container), which is why this reads
/// the raw structure: only the uid decides, the pid is for logs.
pub(super) fn peer_credentials(stream: &UnixStream) -> io::Result<(u32, i32)> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given, and
    // the fd is a live socket borrowed for the call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<libc::ucred>() {
        return Err(io::Error::other("SO_PEERCRED returned a short structure"));
    }
    Ok((cred.uid, cred.pid))
}
