//! The network floor `tcp`: the payload over one raw TCP connection per A
//! worker, opened once and kept (`TCP_NODELAY` on both ends), between the
//! same two parties as the network contenders (loopback, or node A and node
//! B with `--netns`). No framing beyond a 9-byte header, no copy into a
//! function, no protocol: what remote-direct could cost at best.
//!
//! Send: A writes `b'S'`, the length (u64, little endian) and the payload in
//! one `writev`; B reads the payload into a buffer of its own and answers one
//! byte, which A waits for. Fetch: A writes `b'F'` and the length; B answers
//! with that many bytes from a warm buffer, which A reads into its own.
//!
//! B is a thread of this process per connection (plus one that accepts),
//! started where the placement puts B; their CPU time is counted apart from
//! A's.

use std::io::{BufReader, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::{lock, Contender, Kind, Parties, Placement, MAX_FAN, OP_TIMEOUT};
use crate::procfs;
use crate::BenchError;

const NAME: &str = "tcp";
/// Op byte of a send.
const SEND: u8 = b'S';
/// Op byte of a fetch.
const FETCH: u8 = b'F';
/// B's answer to a send.
const ACK: u8 = 1;
/// B's read buffer: small messages arrive in one `read`.
const READ_BUF: usize = 64 * 1024;

/// One A worker's connection and receive buffer.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// B's server threads and A's connections.
pub struct Tcp {
    // Clients first: closing them ends B's connection threads.
    clients: Vec<Mutex<Client>>,
    listener: Option<TcpListener>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: Option<JoinHandle<()>>,
    tids: Arc<Mutex<Vec<u32>>>,
}

impl Tcp {
    /// Starts B's server on a free port of B's address, connects the A
    /// workers from this thread, and makes one empty exchange on each (so
    /// that every B thread runs, and is counted, before measuring).
    pub fn start(place: &Placement) -> Result<Tcp, BenchError> {
        let bind = place.b_ip();
        let tids: Arc<Mutex<Vec<u32>>> = Arc::default();
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (t, th) = (tids.clone(), threads.clone());
        let (listener, acceptor) = place.in_b(move || {
            let listener = TcpListener::bind((bind, 0)).map_err(|e| BenchError::setup(NAME, e))?;
            let accepting = listener
                .try_clone()
                .map_err(|e| BenchError::setup(NAME, e))?;
            let acceptor = std::thread::Builder::new()
                .name("tcp-b-accept".into())
                .spawn(move || accept_loop(accepting, t, th))
                .map_err(|e| BenchError::setup(NAME, e))?;
            Ok((listener, acceptor))
        })?;
        let mut me = Tcp {
            clients: Vec::new(),
            listener: Some(listener),
            threads,
            acceptor: Some(acceptor),
            tids,
        };
        let addr = me
            .listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .ok_or_else(|| BenchError::setup(NAME, "the listener has no address"))?;
        for _ in 0..MAX_FAN {
            me.clients.push(Mutex::new(connect(addr)?));
        }
        let empty: Arc<[u8]> = Arc::from(Vec::new());
        for i in 0..MAX_FAN {
            me.send(i, &empty)?;
        }
        Ok(me)
    }
}

fn connect(addr: SocketAddr) -> Result<Client, BenchError> {
    let stream =
        TcpStream::connect_timeout(&addr, OP_TIMEOUT).map_err(|e| BenchError::setup(NAME, e))?;
    let setup = |r: std::io::Result<()>| r.map_err(|e| BenchError::setup(NAME, e));
    setup(stream.set_nodelay(true))?;
    setup(stream.set_read_timeout(Some(OP_TIMEOUT)))?;
    setup(stream.set_write_timeout(Some(OP_TIMEOUT)))?;
    Ok(Client {
        stream,
        buf: Vec::new(),
    })
}

/// B: accepts connections until the listener is shut down, one thread each.
fn accept_loop(
    listener: TcpListener,
    tids: Arc<Mutex<Vec<u32>>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    if let Some(t) = procfs::current_tid() {
        lock(&tids).push(t);
    }
    while let Ok((stream, _)) = listener.accept() {
        let tids = tids.clone();
        let spawned = std::thread::Builder::new()
            .name("tcp-b".into())
            .spawn(move || {
                if let Some(t) = procfs::current_tid() {
                    lock(&tids).push(t);
                }
                let _ = serve(stream);
            });
        match spawned {
            Ok(t) => lock(&threads).push(t),
            Err(_) => return,
        }
    }
}

/// B's side of one connection, until A closes it.
fn serve(stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut r = BufReader::with_capacity(READ_BUF, stream);
    let mut mine: Vec<u8> = Vec::new();
    let mut warm: Vec<u8> = Vec::new();
    loop {
        let mut header = [0u8; 9];
        match r.read_exact(&mut header) {
            Ok(()) => {}
            // A closed the connection: the run is over.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u64::from_le_bytes(header[1..].try_into().unwrap_or_default()) as usize;
        match header[0] {
            SEND => {
                if mine.len() != len {
                    mine.resize(len, 0);
                }
                r.read_exact(&mut mine)?;
                std::hint::black_box(&mine);
                r.get_mut().write_all(&[ACK])?;
            }
            FETCH => {
                if warm.len() != len {
                    warm = vec![7u8; len];
                }
                r.get_mut().write_all(&warm)?;
            }
            _ => return Ok(()),
        }
    }
}

/// Writes every byte of `bufs` (one `writev` when the socket takes it all).
fn write_all_vectored(s: &mut TcpStream, mut bufs: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    while !bufs.is_empty() {
        let n = s.write_vectored(bufs)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

fn header(op: u8, len: usize) -> [u8; 9] {
    let mut h = [0u8; 9];
    h[0] = op;
    h[1..].copy_from_slice(&(len as u64).to_le_bytes());
    h
}

impl Contender for Tcp {
    fn kind(&self) -> Kind {
        Kind::Tcp
    }

    fn prepare(&self, _size: usize) -> Result<(), BenchError> {
        Ok(())
    }

    fn send(&self, worker: usize, payload: &Arc<[u8]>) -> Result<(), BenchError> {
        let mut c = lock(&self.clients[worker]);
        let h = header(SEND, payload.len());
        let mut bufs = [IoSlice::new(&h), IoSlice::new(payload)];
        write_all_vectored(&mut c.stream, &mut bufs).map_err(|e| BenchError::op(NAME, e))?;
        let mut ack = [0u8; 1];
        c.stream
            .read_exact(&mut ack)
            .map_err(|e| BenchError::op(NAME, format!("waiting for B's answer: {e}")))?;
        if ack[0] != ACK {
            return Err(BenchError::op(NAME, format!("B answered {}", ack[0])));
        }
        Ok(())
    }

    fn fetch(&self, worker: usize, size: usize) -> Result<(), BenchError> {
        let mut c = lock(&self.clients[worker]);
        let Client { stream, buf } = &mut *c;
        stream
            .write_all(&header(FETCH, size))
            .map_err(|e| BenchError::op(NAME, e))?;
        if buf.len() != size {
            buf.resize(size, 0);
        }
        stream
            .read_exact(buf)
            .map_err(|e| BenchError::op(NAME, format!("reading B's {size} bytes: {e}")))
    }

    fn parties(&self) -> Parties {
        Parties {
            b_processes: Vec::new(),
            b_threads: lock(&self.tids).clone(),
            redis: None,
        }
    }
}

impl Drop for Tcp {
    fn drop(&mut self) {
        // A closes its connections: each B thread reads EOF and ends.
        self.clients.clear();
        // Shutting the listening socket down wakes the blocked accept.
        if let Some(l) = self.listener.take() {
            let _ = rustix::net::shutdown(&l, rustix::net::Shutdown::Read);
        }
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        for t in lock(&self.threads).drain(..) {
            let _ = t.join();
        }
    }
}
