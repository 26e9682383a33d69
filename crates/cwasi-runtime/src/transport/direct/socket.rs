//! One connection of the direct data plane, plain or TLS, with the socket
//! options every one gets: `TCP_NODELAY` (a frame leaves at once),
//! keepalive probes and `TCP_USER_TIMEOUT`, so that a peer behind a link
//! that went down is noticed within seconds, not minutes.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection, StreamOwned};

/// Idle time before the first keepalive probe.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(1);
/// Time between probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Probes unanswered before the connection is declared dead.
const KEEPALIVE_PROBES: u32 = 2;
/// How long sent data may stay unacknowledged before the connection is
/// declared dead (milliseconds).
const USER_TIMEOUT_MS: u32 = 5_000;

/// A connection, plain or TLS (client or server side).
pub(crate) enum DataStream {
    /// Plain TCP (asked for explicitly).
    Plain(TcpStream),
    /// TLS, as the caller.
    Client(Box<StreamOwned<ClientConnection, TcpStream>>),
    /// TLS, as the server.
    Server(Box<StreamOwned<ServerConnection, DueSocket>>),
}

/// A server's TCP socket under TLS, with a time by which reads must be
/// done: rustls reads a record whole before it returns any of it, so a
/// peer that trickles a record (or its ClientHello) a byte at a time would
/// keep a read going for as long as it likes. Each read of the socket
/// checks the time, and fails with `TimedOut` past it.
pub(crate) struct DueSocket {
    tcp: TcpStream,
    due: Option<Instant>,
}

impl Read for DueSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.due.is_some_and(|due| Instant::now() >= due) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer did not send in time",
            ));
        }
        self.tcp.read(buf)
    }
}

impl Write for DueSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.tcp.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

impl DataStream {
    /// The TCP socket underneath, for timeouts and shutdown.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            DataStream::Plain(s) => s,
            DataStream::Client(s) => &s.sock,
            DataStream::Server(s) => &s.sock.tcp,
        }
    }

    /// Sets the time by which reads must be done, on the server's side of
    /// a TLS connection (see [`DueSocket`]); `None` lifts it. Plain reads
    /// return whatever arrived, so their callers check the time themselves.
    pub fn set_read_due(&mut self, due: Option<Instant>) {
        if let DataStream::Server(s) = self {
            s.sock.due = due;
        }
    }

    /// The certificate the peer presented (the end of its chain), on the
    /// server's side of a TLS connection after the handshake.
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        match self {
            DataStream::Server(s) => s.conn.peer_certificates()?.first().map(|c| c.to_vec()),
            _ => None,
        }
    }

    /// Wraps a connected socket as the caller: TLS with `tls` (naming the
    /// server `name`), or plain. The handshake happens on first use.
    pub fn client(
        tcp: TcpStream,
        tls: Option<(&Arc<ClientConfig>, ServerName<'static>)>,
    ) -> io::Result<DataStream> {
        Ok(match tls {
            None => DataStream::Plain(tcp),
            Some((config, name)) => {
                let conn = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
                DataStream::Client(Box::new(StreamOwned::new(conn, tcp)))
            }
        })
    }

    /// Wraps an accepted socket as the server, TLS with `tls` or plain.
    pub fn server(tcp: TcpStream, tls: Option<&Arc<ServerConfig>>) -> io::Result<DataStream> {
        Ok(match tls {
            None => DataStream::Plain(tcp),
            Some(config) => {
                let conn = ServerConnection::new(config.clone()).map_err(io::Error::other)?;
                let sock = DueSocket { tcp, due: None };
                DataStream::Server(Box::new(StreamOwned::new(conn, sock)))
            }
        })
    }

    /// Completes the TLS handshake now (nothing for plain TCP), under the
    /// socket's current timeouts.
    pub fn handshake(&mut self) -> io::Result<()> {
        match self {
            DataStream::Plain(_) => Ok(()),
            DataStream::Client(s) => {
                while s.conn.is_handshaking() {
                    s.conn.complete_io(&mut s.sock)?;
                }
                Ok(())
            }
            DataStream::Server(s) => {
                while s.conn.is_handshaking() {
                    s.conn.complete_io(&mut s.sock)?;
                }
                Ok(())
            }
        }
    }
}

impl Read for DataStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            DataStream::Plain(s) => s.read(buf),
            DataStream::Client(s) => s.read(buf),
            DataStream::Server(s) => s.read(buf),
        }
    }
}

impl Write for DataStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            DataStream::Plain(s) => s.write(buf),
            DataStream::Client(s) => s.write(buf),
            DataStream::Server(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            DataStream::Plain(s) => s.write_vectored(bufs),
            DataStream::Client(s) => write_gathered(s, bufs),
            DataStream::Server(s) => write_gathered(s, bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            DataStream::Plain(s) => s.flush(),
            DataStream::Client(s) => s.flush(),
            DataStream::Server(s) => s.flush(),
        }
    }
}

/// Most bytes a vectored TLS write gathers into one record.
const GATHER_MAX: usize = 16 << 10;

/// A vectored write through rustls, which would send each slice as a TLS
/// record of its own: a small frame's slices (header, names, payload) are
/// gathered first, so that the frame goes as one record and arrives whole
/// in the peer's first read (a server counts a request whose payload it
/// does not hold yet as still arriving).
fn write_gathered(w: &mut impl Write, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    if bufs.len() < 2 || total > GATHER_MAX {
        return w.write_vectored(bufs);
    }
    let mut one = Vec::with_capacity(total);
    for b in bufs {
        one.extend_from_slice(b);
    }
    w.write(&one)
}

/// Sets the options every data-plane socket gets.
pub(crate) fn tune(tcp: &TcpStream) -> io::Result<()> {
    use rustix::net::sockopt;
    tcp.set_nodelay(true)?;
    sockopt::set_socket_keepalive(tcp, true)?;
    sockopt::set_tcp_keepidle(tcp, KEEPALIVE_IDLE)?;
    sockopt::set_tcp_keepintvl(tcp, KEEPALIVE_INTERVAL)?;
    sockopt::set_tcp_keepcnt(tcp, KEEPALIVE_PROBES)?;
    sockopt::set_tcp_user_timeout(tcp, USER_TIMEOUT_MS)?;
    Ok(())
}

/// Whether `e` is a socket timeout this side set (`SO_RCVTIMEO`,
/// `SO_SNDTIMEO`), as opposed to the kernel giving up on the peer
/// (keepalive or user timeout: `ETIMEDOUT`, the peer is gone).
pub(crate) fn is_own_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock)
        || (e.kind() == io::ErrorKind::TimedOut && e.raw_os_error() != Some(libc::ETIMEDOUT))
}

/// Sets a socket timeout only when it changes by more than 100 ms (one
/// syscall saved per call); `armed` remembers what was set.
pub(crate) fn arm(
    tcp: &TcpStream,
    armed: &mut Option<Duration>,
    want: Duration,
    set: fn(&TcpStream, Option<Duration>) -> io::Result<()>,
) -> io::Result<()> {
    let want = want.max(Duration::from_millis(1));
    if armed.is_none_or(|t| t.abs_diff(want) > Duration::from_millis(100)) {
        set(tcp, Some(want))?;
        *armed = Some(want);
    }
    Ok(())
}
