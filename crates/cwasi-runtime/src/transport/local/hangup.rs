//! Waking a side that sleeps on its futex when something happens on its
//! socket: the peer hangs up (it died, or closed the connection), or, for
//! a server, a frame arrives on the socket instead of the slot.
//!
//! A futex cannot wait for a descriptor, so one thread per process, the
//! watcher, waits in `epoll` for the sockets of every sleeper. Before it
//! sleeps, a side arms its socket (one-shot); when the socket reports, the
//! watcher marks it, bumps the side's bell word in the control block and
//! wakes it. Because the bell word changes, a report that comes between
//! the side's last check and its `futex` call is not lost: the call then
//! returns at once. The kernel reports a hang-up of a dead peer's socket
//! as soon as the process is gone, so a sleeper learns of a SIGKILLed peer
//! within microseconds of the kernel closing its descriptors.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::slot::{futex_wake, ControlBlock, SocketWatch};

/// What the watcher needs to wake one side.
struct Bell {
    control: Arc<ControlBlock>,
    /// The offset of this side's bell word.
    bell: usize,
    fired: AtomicBool,
}

/// The process's watcher thread and its epoll set.
struct Watcher {
    epoll: OwnedFd,
    bells: Mutex<HashMap<u64, Arc<Bell>>>,
    next_token: AtomicU64,
}

fn watcher() -> io::Result<&'static Watcher> {
    static WATCHER: OnceLock<Result<&'static Watcher, String>> = OnceLock::new();
    WATCHER
        .get_or_init(|| {
            // SAFETY: epoll_create1 takes no pointers; a valid result is a
            // new descriptor we own.
            let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if fd < 0 {
                return Err(format!("epoll_create1: {}", io::Error::last_os_error()));
            }
            // SAFETY: `fd` was just created and is owned by nobody else.
            let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
            let w: &'static Watcher = Box::leak(Box::new(Watcher {
                epoll,
                bells: Mutex::new(HashMap::new()),
                next_token: AtomicU64::new(1),
            }));
            std::thread::Builder::new()
                .name("cwasi-hangup".into())
                .spawn(move || w.run())
                .map_err(|e| format!("cannot start the hang-up watcher: {e}"))?;
            Ok(w)
        })
        .clone()
        .map_err(io::Error::other)
}

impl Watcher {
    fn run(&self) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        loop {
            // SAFETY: `events` is valid for 64 entries; the epoll fd lives
            // as long as the process (the watcher is leaked).
            let n =
                unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 64, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("the hang-up watcher stopped: epoll_wait: {e}");
                    return;
                }
                continue;
            }
            for ev in &events[..n as usize] {
                let token = ev.u64;
                let bell = self
                    .bells
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&token)
                    .cloned();
                if let Some(bell) = bell {
                    bell.fired.store(true, Ordering::SeqCst);
                    let word = bell.control.word(bell.bell);
                    word.fetch_add(1, Ordering::SeqCst);
                    futex_wake(word);
                }
            }
        }
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is valid for the call; `fd` is a live descriptor the
        // caller borrows for the call.
        let rc = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// One connection's socket in the watcher's set. It must be dropped before
/// the socket is closed (declare it before the socket in a struct).
pub(crate) struct Watch {
    watcher: &'static Watcher,
    fd: RawFd,
    token: u64,
    bell: Arc<Bell>,
    events: u32,
}

impl Watch {
    /// Watches `socket` for the side whose bell word is at `bell` in
    /// `control`; with `input`, data arriving on the socket counts too.
    /// Nothing is reported until [`SocketWatch::arm`].
    pub fn new(
        socket: BorrowedFd<'_>,
        control: Arc<ControlBlock>,
        bell: usize,
        input: bool,
    ) -> io::Result<Watch> {
        let watcher = watcher()?;
        let token = watcher.next_token.fetch_add(1, Ordering::Relaxed);
        let bell = Arc::new(Bell {
            control,
            bell,
            fired: AtomicBool::new(false),
        });
        let mut events = (libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32;
        if input {
            events |= libc::EPOLLIN as u32;
        }
        watcher
            .bells
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, bell.clone());
        let fd = socket.as_raw_fd();
        // Added disarmed: one-shot with no events of interest (a hang-up
        // is still reported once; it is a true report).
        if let Err(e) = watcher.ctl(libc::EPOLL_CTL_ADD, fd, libc::EPOLLONESHOT as u32, token) {
            watcher
                .bells
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&token);
            return Err(e);
        }
        Ok(Watch {
            watcher,
            fd,
            token,
            bell,
            events,
        })
    }
}

impl Watch {
    /// Whether the socket has input (or has hung up) now, without waiting.
    pub fn readable_now(&self) -> bool {
        self.poll_now(libc::POLLIN | libc::POLLRDHUP) != 0
    }

    /// The events of `events` (and the hang-ups and errors `poll` always
    /// reports) that the socket has now, without waiting.
    fn poll_now(&self, events: libc::c_short) -> libc::c_short {
        let mut p = libc::pollfd {
            fd: self.fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd for a live descriptor, no waiting.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        if n > 0 {
            p.revents
        } else {
            0
        }
    }
}

impl SocketWatch for Watch {
    fn arm(&self) -> io::Result<()> {
        self.bell.fired.store(false, Ordering::SeqCst);
        self.watcher
            .ctl(libc::EPOLL_CTL_MOD, self.fd, self.events, self.token)
    }

    fn fired(&self) -> bool {
        self.bell.fired.load(Ordering::SeqCst)
    }

    fn hung_up_now(&self) -> bool {
        self.poll_now(libc::POLLRDHUP) & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self
            .watcher
            .ctl(libc::EPOLL_CTL_DEL, self.fd, 0, self.token);
        self.watcher
            .bells
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.token);
    }
}
