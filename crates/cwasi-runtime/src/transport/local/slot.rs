//! The call slot: a control block at the start of every local connection's
//! shared region, through which small calls travel without the socket.
//!
//! The caller writes a request into the slot and advances the request
//! sequence; the server, spinning or asleep in `futex`, sees it, runs the
//! call and answers the same way. Each side spins for a bounded budget
//! (`spin.rs`) before it sleeps, and the writer wakes the other side's
//! futex only when that side has said it sleeps. The socket stays for
//! setup, credentials, connection errors, liveness (`hangup.rs`) and
//! payloads too large for the slot.
//!
//! Safety argument (also in `docs/protocol.md`): the peer is untrusted and
//! may write anything into the block at any time.
//! - Every word is read and written through atomics, and the inline area
//!   only with raw copies bounded by the block, so concurrent writes by the
//!   peer can give wrong values, never undefined behaviour.
//! - Every field is read once, into a local, and checked before use:
//!   lengths against the inline area and the payload limit, kinds and
//!   statuses against their known values, sequences against the one this
//!   side expects next. Anything else is a protocol error.
//! - Every wait is bounded: by the call's deadline on the caller's side,
//!   by the idle timeout on the server's; a peer that hangs up wakes the
//!   sleeper through the socket.
//! - The peer can wake this side spuriously (it owns the bell words too);
//!   that costs this side a re-check, nothing more.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::spin::{spin_until, Spun};
use crate::trace::{TraceContext, TRACE_CONTEXT_LEN};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

/// The layout of the control block, as documented in `docs/protocol.md`.
/// Offsets are in bytes from the start of the shared region; words are
/// little-endian `u32` (and one `u64`), each side's hot words on a cache
/// line of their own.
pub mod layout {
    /// Size of the control block; the data area for large payloads starts
    /// here.
    pub const CONTROL_LEN: usize = 8192;
    /// The request sequence the server last took, written before it runs
    /// the call: a caller whose server hung up reads it to know whether its
    /// request ran (on a line of its own, which the caller reads only
    /// then).
    pub const REQ_TAKEN: usize = 0;
    /// Request sequence, written by the caller (bit 31: closed by the
    /// server).
    pub const REQ_SEQ: usize = 64;
    /// The server's futex word: bumped by whoever wakes the server.
    pub const SERVER_BELL: usize = 128;
    /// 1 while the server sleeps (or is about to) on its bell.
    pub const SERVER_SLEEPING: usize = 132;
    /// Response sequence, written by the server.
    pub const RESP_SEQ: usize = 192;
    /// The caller's futex word.
    pub const CLIENT_BELL: usize = 256;
    /// 1 while the caller sleeps (or is about to) on its bell.
    pub const CLIENT_SLEEPING: usize = 260;
    /// Request: 1 inline, 2 a request frame follows on the socket.
    pub const REQ_KIND: usize = 320;
    /// Request: bytes of target name at the start of the inline area.
    pub const REQ_TARGET_LEN: usize = 324;
    /// Request: bytes of payload after the target name.
    pub const REQ_LEN: usize = 328;
    /// Request: the callee's call depth.
    pub const REQ_DEPTH: usize = 332;
    /// Request (`u64`): microseconds left of the caller's deadline.
    pub const REQ_BUDGET: usize = 336;
    /// Request: the trace id of the caller's span, 16 bytes (two `u64`
    /// words, in wire order; all zero: untraced).
    pub const REQ_TRACE_ID: usize = 344;
    /// Request (`u64`): the caller's span id, 8 bytes in wire order.
    pub const REQ_SPAN_ID: usize = 360;
    /// Request: the trace flags (the low byte).
    pub const REQ_TRACE_FLAGS: usize = 368;
    /// Request: flags; bit 0 ([`NO_QUEUE`]): do not wait for a call slot.
    pub const REQ_FLAGS: usize = 372;
    /// Request: bytes of the caller's identity after the target name in
    /// the inline area (the payload follows it).
    pub const REQ_CALLER_LEN: usize = 376;
    /// Request flag: answer at once with the declined kind (4) rather than
    /// wait when every call slot is busy (a caller checking whether a
    /// server it spills from has drained).
    pub const NO_QUEUE: u32 = 1;
    /// Response: 1 inline answer, 2 inline error, 3 a frame follows on the
    /// socket, 4 declined (every call slot was busy and the request asked
    /// not to wait: nothing ran).
    pub const RESP_KIND: usize = 384;
    /// Response: the ABI error code of an inline error.
    pub const RESP_STATUS: usize = 388;
    /// Response: bytes of answer (or error message) in the inline area.
    pub const RESP_LEN: usize = 392;
    /// Response: microseconds the request waited for one of the server's
    /// call slots (0: none; saturating): the load signal a caller spills
    /// on. Older servers leave it 0.
    pub const RESP_QUEUED_US: usize = 396;
    /// Start of the inline area.
    pub const INLINE_AT: usize = 448;
    /// Size of the inline area.
    pub const INLINE_LEN: usize = CONTROL_LEN - INLINE_AT;
    /// Largest payload (request or answer) that travels inline.
    pub const SLOT_MAX_PAYLOAD: usize = 4096;
    /// Set in the request sequence by a server that closed the connection
    /// while it was idle: no request posted after it will run.
    pub const CLOSED: u32 = 1 << 31;
}

use layout::*;

/// Request kind: target and payload are in the inline area.
pub(crate) const REQUEST_INLINE: u32 = 1;
/// Request kind: a request frame follows on the socket.
pub(crate) const REQUEST_ON_SOCKET: u32 = 2;
/// Response kind: the answer is in the inline area.
pub(crate) const RESPONSE_INLINE: u32 = 1;
/// Response kind: an error code and message are in the inline area.
pub(crate) const RESPONSE_ERROR: u32 = 2;
/// Response kind: a response or error frame follows on the socket.
pub(crate) const RESPONSE_ON_SOCKET: u32 = 3;
/// Response kind: declined, nothing ran: every call slot was busy, and
/// the request asked not to wait for one ([`NO_QUEUE`]). The inline area
/// holds a message, as for an error.
pub(crate) const RESPONSE_DECLINED: u32 = 4;

/// The next sequence number after `seq` (31 bits, wrapping).
pub(crate) fn next_seq(seq: u32) -> u32 {
    seq.wrapping_add(1) & !CLOSED
}

/// The control block of one connection, mapped on its own so that it never
/// moves when the data area grows.
pub(crate) struct ControlBlock {
    ptr: *mut u8,
}

// SAFETY: the block is only touched through atomics and bounded raw copies
// (see the module docs); the pointer is a mapping address that stays valid
// until drop.
unsafe impl Send for ControlBlock {}
// SAFETY: as above; concurrent use from several threads of this process is
// no different from use by the peer process.
unsafe impl Sync for ControlBlock {}

impl ControlBlock {
    /// Maps the first [`CONTROL_LEN`] bytes of `fd`, which the caller has
    /// checked are in the file (sealed against shrinking).
    pub fn map(fd: BorrowedFd<'_>) -> std::io::Result<ControlBlock> {
        // SAFETY: a fresh shared mapping of a range the file holds and
        // cannot lose (F_SEAL_SHRINK).
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                CONTROL_LEN,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )?
        };
        Ok(ControlBlock { ptr: ptr.cast() })
    }

    /// The 32-bit word at `at`.
    pub fn word(&self, at: usize) -> &AtomicU32 {
        assert!(at.is_multiple_of(4) && at + 4 <= INLINE_AT, "a header word");
        // SAFETY: in bounds and aligned (the mapping is page-aligned);
        // atomics may be modified concurrently, also by another process.
        unsafe { &*self.ptr.add(at).cast::<AtomicU32>() }
    }

    fn word64(&self, at: usize) -> &AtomicU64 {
        assert!(at.is_multiple_of(8) && at + 8 <= INLINE_AT, "a header word");
        // SAFETY: as for `word`.
        unsafe { &*self.ptr.add(at).cast::<AtomicU64>() }
    }

    /// Copies `src` into the inline area at `offset`.
    pub fn write_inline(&self, offset: usize, src: &[u8]) {
        assert!(offset + src.len() <= INLINE_LEN, "within the inline area");
        // SAFETY: bounded by the mapping; raw copies, no references to the
        // shared bytes (the peer may write them concurrently).
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(INLINE_AT + offset), src.len())
        }
    }

    /// Copies the inline area at `offset` into `dst`.
    pub fn read_inline(&self, offset: usize, dst: &mut [u8]) {
        assert!(offset + dst.len() <= INLINE_LEN, "within the inline area");
        // SAFETY: as for `write_inline`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.add(INLINE_AT + offset),
                dst.as_mut_ptr(),
                dst.len(),
            )
        }
    }
}

impl Drop for ControlBlock {
    fn drop(&mut self) {
        // SAFETY: our own live mapping of CONTROL_LEN bytes.
        let _ = unsafe { munmap(self.ptr.cast(), CONTROL_LEN) };
    }
}

/// A request as the caller writes it into the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotRequest {
    /// [`REQUEST_INLINE`] or [`REQUEST_ON_SOCKET`].
    pub kind: u32,
    /// Bytes of target name (inline requests).
    pub target_len: usize,
    /// Bytes of the caller's identity after it (inline requests).
    pub caller_len: usize,
    /// Bytes of payload (inline requests).
    pub len: usize,
    /// The callee's call depth.
    pub depth: u16,
    /// Microseconds left of the caller's deadline.
    pub budget_us: u64,
    /// The caller's span.
    pub trace: TraceContext,
    /// Do not wait for a call slot ([`NO_QUEUE`]).
    pub no_queue: bool,
}

/// A response as the server writes it into the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotResponse {
    /// One of the `RESPONSE_*` kinds.
    pub kind: u32,
    /// The ABI code of an inline error.
    pub status: i32,
    /// Bytes in the inline area.
    pub len: usize,
}

/// Why the slot cannot be used: the peer broke the protocol.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct SlotViolation(pub String);

impl ControlBlock {
    /// Writes the request fields (the payload is already in the inline
    /// area).
    pub fn put_request(&self, r: &SlotRequest) {
        self.word(REQ_KIND).store(r.kind, Ordering::Relaxed);
        self.word(REQ_TARGET_LEN)
            .store(r.target_len as u32, Ordering::Relaxed);
        self.word(REQ_CALLER_LEN)
            .store(r.caller_len as u32, Ordering::Relaxed);
        self.word(REQ_LEN).store(r.len as u32, Ordering::Relaxed);
        self.word(REQ_DEPTH)
            .store(u32::from(r.depth), Ordering::Relaxed);
        self.word64(REQ_BUDGET)
            .store(r.budget_us, Ordering::Relaxed);
        let t = &r.trace;
        let (high, low) = t.trace_id.split_at(8);
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
        self.word64(REQ_TRACE_ID)
            .store(word(high), Ordering::Relaxed);
        self.word64(REQ_TRACE_ID + 8)
            .store(word(low), Ordering::Relaxed);
        self.word64(REQ_SPAN_ID)
            .store(word(&t.span_id), Ordering::Relaxed);
        self.word(REQ_TRACE_FLAGS)
            .store(u32::from(t.flags), Ordering::Relaxed);
        self.word(REQ_FLAGS)
            .store(if r.no_queue { NO_QUEUE } else { 0 }, Ordering::Relaxed);
    }

    /// Reads the request's trace context; an invalid one is none.
    fn take_trace(&self) -> TraceContext {
        let mut b = [0u8; TRACE_CONTEXT_LEN];
        let word = |at: usize| self.word64(at).load(Ordering::Relaxed).to_le_bytes();
        b[..8].copy_from_slice(&word(REQ_TRACE_ID));
        b[8..16].copy_from_slice(&word(REQ_TRACE_ID + 8));
        b[16..24].copy_from_slice(&word(REQ_SPAN_ID));
        b[24] = self.word(REQ_TRACE_FLAGS).load(Ordering::Relaxed) as u8;
        TraceContext::decode(&b)
    }

    /// Reads and checks the request fields, each once; `max_payload` bounds
    /// an inline payload.
    pub fn take_request(&self, max_payload: usize) -> Result<SlotRequest, SlotViolation> {
        let kind = self.word(REQ_KIND).load(Ordering::Relaxed);
        let target_len = self.word(REQ_TARGET_LEN).load(Ordering::Relaxed) as usize;
        let caller_len = self.word(REQ_CALLER_LEN).load(Ordering::Relaxed) as usize;
        let len = self.word(REQ_LEN).load(Ordering::Relaxed) as usize;
        let depth = self.word(REQ_DEPTH).load(Ordering::Relaxed);
        let budget_us = self.word64(REQ_BUDGET).load(Ordering::Relaxed);
        let depth = u16::try_from(depth)
            .map_err(|_| SlotViolation(format!("call depth {depth} in the slot")))?;
        let flags = self.word(REQ_FLAGS).load(Ordering::Relaxed);
        if flags & !NO_QUEUE != 0 {
            return Err(SlotViolation(format!(
                "unknown request flags {flags:#x} in the slot"
            )));
        }
        match kind {
            REQUEST_ON_SOCKET => {}
            REQUEST_INLINE => {
                if target_len == 0 || target_len > super::wire::MAX_TARGET_LEN {
                    return Err(SlotViolation(format!(
                        "target name of {target_len} bytes in the slot"
                    )));
                }
                if caller_len == 0 || caller_len > super::wire::MAX_CALLER_LEN {
                    return Err(SlotViolation(format!(
                        "caller identity of {caller_len} bytes in the slot"
                    )));
                }
                if len > SLOT_MAX_PAYLOAD || len > max_payload {
                    return Err(SlotViolation(format!(
                        "inline payload of {len} bytes (at most {} travel inline)",
                        SLOT_MAX_PAYLOAD.min(max_payload)
                    )));
                }
            }
            other => return Err(SlotViolation(format!("unknown request kind {other}"))),
        }
        Ok(SlotRequest {
            kind,
            target_len,
            caller_len,
            len,
            depth,
            budget_us,
            trace: self.take_trace(),
            no_queue: flags & NO_QUEUE != 0,
        })
    }

    /// Writes the response fields (the answer is already in the inline
    /// area).
    pub fn put_response(&self, r: &SlotResponse) {
        self.word(RESP_KIND).store(r.kind, Ordering::Relaxed);
        self.word(RESP_STATUS)
            .store(r.status as u32, Ordering::Relaxed);
        self.word(RESP_LEN).store(r.len as u32, Ordering::Relaxed);
    }

    /// Reads and checks the response fields, each once; `max_payload`
    /// bounds an inline answer.
    pub fn take_response(&self, max_payload: usize) -> Result<SlotResponse, SlotViolation> {
        let kind = self.word(RESP_KIND).load(Ordering::Relaxed);
        let status = self.word(RESP_STATUS).load(Ordering::Relaxed) as i32;
        let len = self.word(RESP_LEN).load(Ordering::Relaxed) as usize;
        match kind {
            RESPONSE_ON_SOCKET => {}
            RESPONSE_INLINE if len <= SLOT_MAX_PAYLOAD && len <= max_payload => {}
            RESPONSE_ERROR | RESPONSE_DECLINED if len <= INLINE_LEN => {}
            RESPONSE_INLINE | RESPONSE_ERROR | RESPONSE_DECLINED => {
                return Err(SlotViolation(format!(
                    "inline answer of {len} bytes in the slot"
                )))
            }
            other => return Err(SlotViolation(format!("unknown response kind {other}"))),
        }
        Ok(SlotResponse { kind, status, len })
    }
}

/// One side's view of the words it waits on and the words it rings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Side {
    /// The sequence this side waits for the peer to advance.
    pub watch: usize,
    /// This side's futex word and sleeping flag.
    pub bell: usize,
    pub sleeping: usize,
    /// The peer's futex word and sleeping flag.
    pub peer_bell: usize,
    pub peer_sleeping: usize,
}

/// The caller's side: waits on the response sequence.
pub(crate) const CALLER: Side = Side {
    watch: RESP_SEQ,
    bell: CLIENT_BELL,
    sleeping: CLIENT_SLEEPING,
    peer_bell: SERVER_BELL,
    peer_sleeping: SERVER_SLEEPING,
};

/// The server's side: waits on the request sequence.
pub(crate) const SERVER: Side = Side {
    watch: REQ_SEQ,
    bell: SERVER_BELL,
    sleeping: SERVER_SLEEPING,
    peer_bell: CLIENT_BELL,
    peer_sleeping: CLIENT_SLEEPING,
};

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The watched sequence holds a new value.
    Changed(u32),
    /// The wait's time ran out.
    TimedOut,
    /// The watcher reported the socket (hang-up, or input on it).
    Socket,
}

/// Something that can tell a sleeper about its socket: armed before each
/// sleep (see `hangup.rs`), checked while spinning.
pub(crate) trait SocketWatch {
    /// Arranges for the bell at `bell` to be rung when the socket hangs up
    /// (or, for a server, has input).
    fn arm(&self) -> std::io::Result<()>;
    /// Whether the watcher has reported the socket since the last arm.
    fn fired(&self) -> bool;
    /// A direct check for a hang-up, made now and then while spinning.
    fn hung_up_now(&self) -> bool;
}

impl ControlBlock {
    /// Advances the watched-by-the-peer sequence `at` to `value` and wakes
    /// the peer if it sleeps.
    pub fn publish(&self, side: Side, at: usize, value: u32) {
        self.word(at).store(value, Ordering::SeqCst);
        self.ring(side);
    }

    /// Wakes the peer if it has said it sleeps.
    pub fn ring(&self, side: Side) {
        if self.word(side.peer_sleeping).load(Ordering::SeqCst) != 0 {
            self.word(side.peer_bell).fetch_add(1, Ordering::SeqCst);
            futex_wake(self.word(side.peer_bell));
        }
    }

    /// Waits until the sequence `side.watch` no longer holds `old`:
    /// spinning for up to `spin` (when the spin policy allows), then
    /// asleep on this side's bell, until `until`.
    pub fn wait(
        &self,
        side: Side,
        old: u32,
        spin: Duration,
        until: Instant,
        socket: &dyn SocketWatch,
    ) -> std::io::Result<Waited> {
        let seq = self.word(side.watch);
        match spin_until(
            spin,
            until,
            || {
                let v = seq.load(Ordering::Acquire);
                (v != old).then_some(v)
            },
            || socket.hung_up_now(),
        ) {
            Spun::Found(v) => return Ok(Waited::Changed(v)),
            Spun::Stopped => return Ok(Waited::Socket),
            Spun::GaveUp => {}
        }
        let bell = self.word(side.bell);
        let sleeping = self.word(side.sleeping);
        loop {
            socket.arm()?;
            let rung = bell.load(Ordering::SeqCst);
            sleeping.store(1, Ordering::SeqCst);
            let v = seq.load(Ordering::SeqCst);
            let outcome = if v != old {
                Some(Waited::Changed(v))
            } else if socket.fired() {
                Some(Waited::Socket)
            } else {
                let now = Instant::now();
                if now >= until {
                    Some(Waited::TimedOut)
                } else {
                    futex_wait(bell, rung, until - now);
                    None
                }
            };
            sleeping.store(0, Ordering::SeqCst);
            if let Some(outcome) = outcome {
                return Ok(outcome);
            }
            let v = seq.load(Ordering::Acquire);
            if v != old {
                return Ok(Waited::Changed(v));
            }
            if socket.fired() {
                return Ok(Waited::Socket);
            }
        }
    }
}

/// Sleeps while `word` holds `expected`, for at most `timeout` (a shared,
/// not process-private, futex: the peer process wakes it). Spurious returns
/// are fine: the caller re-checks.
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT reads the aligned word (valid for the call) and the
    // timespec; the other arguments are unused.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every sleeper on `word` (there is at most one, the peer or this
/// side's own thread).
pub(crate) fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the word's address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}
