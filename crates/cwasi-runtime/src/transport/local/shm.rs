//! The shared-memory region of a local connection: a sealed memfd that the
//! client creates, passes once with SCM_RIGHTS, and either side grows. It
//! starts with the call slot's control block (`slot.rs`, [`CONTROL_LEN`]
//! bytes, mapped on its own); large payloads lie in the data area after it.
//!
//! Safety argument (also in `docs/protocol.md`):
//! - The memfd carries `F_SEAL_SHRINK | F_SEAL_SEAL`, checked by the receiver,
//!   so no side can shrink the file under the other's mapping (which would
//!   turn accesses into SIGBUS) or add seals that stop growth.
//! - Every access is bounded by this side's own mapping length, which only
//!   grows (after `fstat` confirms the file is large enough).
//! - The protocol is lock-step: a side touches the region only between sending
//!   its frame and receiving the peer's. A misbehaving peer that writes out of
//!   turn can only change the bytes of its own call, which are untrusted data
//!   anyway; the host copies them with raw pointer copies and never forms a
//!   reference whose invariants a concurrent write could break.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use super::slot::layout::CONTROL_LEN;
use super::slot::ControlBlock;
use super::wire::{self, Header, FLAG_CHUNKED, FLAG_SHM};
use rustix::fs::{
    fcntl_add_seals, fcntl_get_seals, fstat, ftruncate, memfd_create, MemfdFlags, SealFlags,
};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use std::sync::Arc;

/// Smallest size a region grows to.
const MIN_GROWTH: usize = 1 << 20;

/// A mapped memfd shared with one peer: its control block, and its data
/// area mapped as far as it is known to be backed.
pub(crate) struct SharedRegion {
    fd: OwnedFd,
    control: Arc<ControlBlock>,
    ptr: *mut u8,
    mapped: usize,
}

// SAFETY: the region is owned by one connection, used by one thread at a
// time; the raw pointer is only a mapping address.
unsafe impl Send for SharedRegion {}

impl SharedRegion {
    /// Creates a sealed region holding a zeroed control block (the data
    /// area is mapped when it grows).
    pub fn create() -> io::Result<SharedRegion> {
        let fd = memfd_create("cwasi-shm", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        ftruncate(&fd, CONTROL_LEN as u64)?;
        fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::SEAL)?;
        let control = Arc::new(ControlBlock::map(fd.as_fd())?);
        Ok(SharedRegion {
            fd,
            control,
            ptr: std::ptr::null_mut(),
            mapped: 0,
        })
    }

    /// Adopts a region received from a peer, after checking its seals and
    /// that it holds a control block.
    pub fn adopt(fd: OwnedFd) -> io::Result<SharedRegion> {
        let seals = fcntl_get_seals(&fd)?;
        if !seals.contains(SealFlags::SHRINK | SealFlags::SEAL) || seals.contains(SealFlags::GROW) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the shared region is not sealed against shrinking",
            ));
        }
        let size = fstat(&fd)?.st_size as usize;
        if size < CONTROL_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the shared region has {size} bytes, less than the {CONTROL_LEN}-byte control block"),
            ));
        }
        let control = Arc::new(ControlBlock::map(fd.as_fd())?);
        Ok(SharedRegion {
            fd,
            control,
            ptr: std::ptr::null_mut(),
            mapped: 0,
        })
    }

    /// The call slot's control block.
    pub fn control(&self) -> &Arc<ControlBlock> {
        &self.control
    }

    /// The descriptor, for passing to the peer.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Makes at least `len` bytes of data area available, growing the file
    /// if needed.
    pub fn grow_to(&mut self, len: usize) -> io::Result<()> {
        if len <= self.mapped {
            return Ok(());
        }
        let size = data_len(&self.fd)?;
        if size < len {
            let target = len.next_power_of_two().max(MIN_GROWTH);
            ftruncate(&self.fd, (CONTROL_LEN + target) as u64)?;
        }
        self.remap()
    }

    /// Maps what the peer says it wrote: `len` bytes that must already be in
    /// the file (a peer cannot make this side read past the end).
    pub fn expect(&mut self, len: usize) -> io::Result<()> {
        if len <= self.mapped {
            return Ok(());
        }
        let size = data_len(&self.fd)?;
        if size < len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the peer announced {len} bytes in a shared region of {size}"),
            ));
        }
        self.remap()
    }

    fn remap(&mut self) -> io::Result<()> {
        let size = data_len(&self.fd)?;
        self.unmap();
        if size == 0 {
            return Ok(());
        }
        // SAFETY: a fresh shared mapping of the file's data area; the file
        // cannot shrink (sealed), so every byte of the mapping stays backed.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                size,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &self.fd,
                CONTROL_LEN as u64,
            )?
        };
        self.ptr = ptr.cast();
        self.mapped = size;
        Ok(())
    }

    fn unmap(&mut self) {
        if self.mapped > 0 {
            // SAFETY: ptr/mapped describe our own live mapping.
            let _ = unsafe { munmap(self.ptr.cast(), self.mapped) };
            self.ptr = std::ptr::null_mut();
            self.mapped = 0;
        }
    }

    /// Copies `src` into the region at `offset` (after `grow_to`).
    pub fn write_at(&mut self, offset: usize, src: &[u8]) {
        assert!(offset + src.len() <= self.mapped, "grow_to must come first");
        // SAFETY: bounded by our mapping; see the module docs on concurrency.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(offset), src.len()) }
    }

    /// Copies the region at `offset` into `dst` (after `expect`).
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) {
        assert!(offset + dst.len() <= self.mapped, "expect must come first");
        // SAFETY: bounded by our mapping; see the module docs on concurrency.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), dst.as_mut_ptr(), dst.len()) }
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        self.unmap();
    }
}

/// Bytes of data area in the file after the control block.
fn data_len(fd: &OwnedFd) -> io::Result<usize> {
    Ok((fstat(fd)?.st_size as usize).saturating_sub(CONTROL_LEN))
}

/// Payloads of at least this size go through the shared region.
pub const SHM_THRESHOLD: usize = 64 << 10;

/// Payloads larger than this are pipelined: the sender fills the region a
/// chunk at a time and announces each on the socket, while the receiver
/// copies out what has arrived, so the two copies overlap.
pub const CHUNK: usize = 1 << 20;

fn protocol(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Where a payload is read from: a socket, or the server's request reader,
/// which bounds each progress count of a pipelined payload by a deadline of
/// its own.
pub(crate) trait PayloadSource: Read {
    /// Called before each progress count is read.
    fn next_step(&mut self) {}
}

impl PayloadSource for UnixStream {}

/// Sends frame `h` (with `target`) and its payload: inline when small,
/// through the region when large, pipelined when larger than a chunk.
pub(crate) fn send_frame(
    stream: &mut impl Write,
    shm: &mut SharedRegion,
    h: &mut Header,
    target: &[u8],
    payload: &[u8],
) -> io::Result<()> {
    h.payload_len = payload.len() as u64;
    if payload.len() < SHM_THRESHOLD {
        return wire::write_frame(stream, h, target, payload);
    }
    shm.grow_to(payload.len())?;
    if payload.len() <= CHUNK {
        shm.write_at(0, payload);
        h.flags = FLAG_SHM;
        return wire::write_frame(stream, h, target, &[]);
    }
    h.flags = FLAG_SHM | FLAG_CHUNKED;
    wire::write_frame(stream, h, target, &[])?;
    let mut done = 0;
    while done < payload.len() {
        let end = (done + CHUNK).min(payload.len());
        shm.write_at(done, &payload[done..end]);
        done = end;
        stream.write_all(&(done as u64).to_le_bytes())?;
    }
    Ok(())
}

/// Receives the payload of frame `h` into `dst`, which may be shorter than the
/// payload (the rest is consumed and dropped). Protocol violations come back
/// as `InvalidData`.
pub(crate) fn recv_payload(
    stream: &mut impl PayloadSource,
    shm: &mut SharedRegion,
    h: &Header,
    dst: &mut [u8],
) -> io::Result<()> {
    let len = h.payload_len as usize;
    let keep = dst.len().min(len);
    if !h.in_shm() {
        stream.read_exact(&mut dst[..keep])?;
        if keep < len {
            io::copy(
                &mut (&mut *stream).take((len - keep) as u64),
                &mut io::sink(),
            )?;
        }
        return Ok(());
    }
    shm.expect(len)?;
    if !h.chunked() {
        shm.read_at(0, &mut dst[..keep]);
        return Ok(());
    }
    let mut done = 0;
    while done < len {
        let mut count = [0u8; 8];
        stream.next_step();
        stream.read_exact(&mut count)?;
        let ready = u64::from_le_bytes(count) as usize;
        if ready <= done || ready > len {
            return Err(protocol(format!(
                "progress {ready} after {done} of a {len}-byte payload"
            )));
        }
        let (from, to) = (done.min(keep), ready.min(keep));
        shm.read_at(from, &mut dst[from..to]);
        done = ready;
    }
    Ok(())
}

/// Whether `e` means the peer is gone (nothing can be told to it).
pub(crate) fn is_peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::NotConnected
    )
}

/// Whether `e` is a receive timeout (`SO_RCVTIMEO` reports `EAGAIN`).
pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Sends `bytes` with one file descriptor attached.
pub(crate) fn send_with_fd(sock: &UnixStream, bytes: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
    let fds = [fd];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("cannot build the SCM_RIGHTS message"));
    }
    let sent = sendmsg(
        sock,
        &[io::IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if sent != bytes.len() {
        // The descriptor went with the first bytes; send the rest plainly.
        use std::io::Write;
        (&mut &*sock).write_all(&bytes[sent..])?;
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes and returns the descriptor that came with
/// them, if any (extra descriptors are closed).
pub(crate) fn recv_with_fd(sock: &UnixStream, buf: &mut [u8]) -> io::Result<Option<OwnedFd>> {
    let mut got = 0;
    let mut fd = None;
    while got < buf.len() {
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [io::IoSliceMut::new(&mut buf[got..])];
        let msg = recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = m {
                for f in fds {
                    if fd.is_none() {
                        fd = Some(f);
                    }
                }
            }
        }
        if msg.bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the connection",
            ));
        }
        got += msg.bytes;
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_is_shared_through_a_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut mine = SharedRegion::create().unwrap();
        mine.grow_to(100).unwrap();
        mine.write_at(0, b"hello shared world");
        send_with_fd(&a, b"hdr", mine.fd()).unwrap();
        let mut buf = [0u8; 3];
        let fd = recv_with_fd(&b, &mut buf).unwrap().unwrap();
        assert_eq!(&buf, b"hdr");
        let mut theirs = SharedRegion::adopt(fd).unwrap();
        theirs.expect(18).unwrap();
        let mut out = [0u8; 18];
        theirs.read_at(0, &mut out);
        assert_eq!(&out, b"hello shared world");
        // The peer grows it; this side sees the new size.
        theirs.grow_to(3 << 20).unwrap();
        theirs.write_at(0, &vec![7u8; 3 << 20]);
        mine.expect(3 << 20).unwrap();
        let mut big = vec![0u8; 3 << 20];
        mine.read_at(0, &mut big);
        assert!(big.iter().all(|&b| b == 7));
        assert!(mine.expect(1 << 30).is_err(), "cannot read past the file");
    }

    #[test]
    fn payloads_of_every_kind_cross_intact() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let mut mine = SharedRegion::create().unwrap();
        send_with_fd(&a, b"x", mine.fd()).unwrap();
        let mut one = [0u8; 1];
        let mut theirs = SharedRegion::adopt(recv_with_fd(&b, &mut one).unwrap().unwrap()).unwrap();
        for len in [0usize, 10, SHM_THRESHOLD, CHUNK, CHUNK + 1, 3 * CHUNK + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sender = std::thread::scope(|s| {
                let t = s.spawn(|| {
                    let mut h = Header::new(wire::Kind::Request, 1);
                    send_frame(&mut a, &mut mine, &mut h, b"", &data).unwrap();
                    h
                });
                let mut head = [0u8; wire::HEADER_LEN];
                b.read_exact(&mut head).unwrap();
                let h = Header::decode(&head, 1 << 30).unwrap();
                let mut got = vec![0u8; h.payload_len as usize];
                recv_payload(&mut b, &mut theirs, &h, &mut got).unwrap();
                assert!(got == data, "{len} bytes differ");
                // A shorter destination keeps a prefix and consumes the rest.
                t.join().unwrap()
            });
            assert_eq!(sender.chunked(), len > CHUNK, "{len}");
        }
        let mut h = Header::new(wire::Kind::Request, 2);
        let data = vec![9u8; 2 * CHUNK + 5];
        std::thread::scope(|s| {
            s.spawn(|| send_frame(&mut a, &mut mine, &mut h, b"", &data).unwrap());
            let mut head = [0u8; wire::HEADER_LEN];
            b.read_exact(&mut head).unwrap();
            let h = Header::decode(&head, 1 << 30).unwrap();
            let mut prefix = [0u8; 10];
            recv_payload(&mut b, &mut theirs, &h, &mut prefix).unwrap();
            assert_eq!(prefix, [9u8; 10]);
        });
    }

    #[test]
    fn an_unsealed_region_is_refused() {
        let fd = memfd_create("plain", MemfdFlags::CLOEXEC).unwrap();
        assert!(SharedRegion::adopt(fd).is_err());
    }
}
