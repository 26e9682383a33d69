//! A small HTTP/1 server for the endpoints a CWASI process offers on the
//! side (`/metrics`, the HTTP trigger of `cwasi up`): hyper on a thread of
//! its own with a single-threaded tokio event loop, so that it never
//! competes with the calls it serves, and with every resource a client can
//! take bounded:
//!
//! - each connection is a task of the one event loop, not a thread or a
//!   slot others wait for, so idle and slow clients do not delay others;
//! - connections are capped in all and per address; one over a cap is
//!   closed at once;
//! - a client that has not sent its request line and headers within the
//!   header timeout of connecting is closed (a slowloris gets no longer);
//! - work that blocks (the handler's `spawn_blocking`) runs on a blocking
//!   pool of a bounded number of threads.
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use bounded_http::{HttpServer, ServerLimits};
//!
//! # fn main() -> Result<(), bounded_http::HttpServerError> {
//! let server = HttpServer::start(
//!     "hello",
//!     "127.0.0.1:0".parse().unwrap(),
//!     ServerLimits::default(),
//!     |_request| async { hyper::Response::new(Full::new(Bytes::from("hello\n"))) },
//! )?;
//! println!("http://{}/", server.local_addr());
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;

/// What a handler answers.
pub type Reply = Response<Full<Bytes>>;

/// The bounds a server holds its clients to.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one address, so that one client
    /// cannot take all of `max_connections`.
    pub max_connections_per_address: usize,
    /// How long a client may take to send its request line and headers.
    pub header_timeout: Duration,
    /// Whether a connection may carry more than one request.
    pub keep_alive: bool,
    /// Threads of the blocking pool (`tokio::task::spawn_blocking`).
    pub blocking_threads: usize,
}

impl Default for ServerLimits {
    /// 4096 connections (2048 per address), a 2 s header timeout, one
    /// request per connection, 16 blocking threads.
    fn default() -> Self {
        ServerLimits {
            max_connections: 4096,
            max_connections_per_address: 2048,
            header_timeout: Duration::from_secs(2),
            keep_alive: false,
            blocking_threads: 16,
        }
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpServerError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server's thread or event loop could not be started.
    #[error("cannot start the HTTP server: {0}")]
    Start(std::io::Error),
}

/// A running server; dropping it stops it (connections in progress are
/// dropped with its event loop).
pub struct HttpServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    /// Listens on `addr` (port 0 picks one) and answers every request with
    /// `handler`, on a thread named `name`.
    pub fn start<H, F>(
        name: &str,
        addr: SocketAddr,
        limits: ServerLimits,
        handler: H,
    ) -> Result<HttpServer, HttpServerError>
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Reply> + Send + 'static,
    {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|source| HttpServerError::Bind { addr, source })?;
        let local = listener.local_addr().map_err(HttpServerError::Start)?;
        listener
            .set_nonblocking(true)
            .map_err(HttpServerError::Start)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(limits.blocking_threads.max(1))
            .thread_name(format!("{name}-blocking"))
            .build()
            .map_err(HttpServerError::Start)?;
        let (stop, stopped) = watch::channel(false);
        let handler = Arc::new(handler);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || rt.block_on(serve(listener, limits, handler, stopped)))
            .map_err(HttpServerError::Start)?;
        Ok(HttpServer {
            addr: local,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The accept loop, until `stopped` turns true.
async fn serve<H, F>(
    listener: std::net::TcpListener,
    limits: ServerLimits,
    handler: Arc<H>,
    mut stopped: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "the HTTP listener cannot be used");
            return;
        }
    };
    let open = Arc::new(OpenConnections::default());
    loop {
        let accepted = tokio::select! {
            _ = stopped.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, say: wait a little rather than spin.
                tracing::warn!(error = %e, "http: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over a cap the connection is closed at once (dropped).
        let Some(counted) = open.admit(peer.ip(), &limits) else {
            tracing::debug!(%peer, "http: over the connection cap, closed");
            continue;
        };
        let handler = handler.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let answer = handler(req);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(limits.keep_alive)
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "http: connection ended");
            }
            drop(counted);
        });
    }
}

/// The connections open now, in all and by address.
#[derive(Default)]
struct OpenConnections(Mutex<(usize, HashMap<IpAddr, usize>)>);

impl OpenConnections {
    /// Counts a connection from `ip` until the guard is dropped, unless a
    /// cap is reached.
    fn admit(self: &Arc<Self>, ip: IpAddr, limits: &ServerLimits) -> Option<Counted> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_ip) = &mut *open;
        let from_ip = by_ip.entry(ip).or_insert(0);
        if *total >= limits.max_connections || *from_ip >= limits.max_connections_per_address {
            if *from_ip == 0 {
                by_ip.remove(&ip);
            }
            return None;
        }
        *total += 1;
        *from_ip += 1;
        Some(Counted(self.clone(), ip))
    }
}

/// One counted connection.
struct Counted(Arc<OpenConnections>, IpAddr);

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_ip) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = by_ip.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::TcpStream;

    use super::*;

    fn hello(addr: SocketAddr) -> std::io::Result<String> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }

    #[test]
    fn a_connection_over_the_per_address_cap_is_closed_at_once() {
        let limits = ServerLimits {
            max_connections_per_address: 2,
            ..ServerLimits::default()
        };
        let server = HttpServer::start(
            "test-http",
            "127.0.0.1:0".parse().unwrap(),
            limits,
            |_| async { Response::new(Full::new(Bytes::from("hi"))) },
        )
        .unwrap();
        let addr = server.local_addr();
        let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        // The third is accepted by the kernel, then closed with no answer.
        let refused = hello(addr).unwrap_or_default();
        assert_eq!(refused, "");
        drop(held);
        // Once the held ones are closed (the server sees it as it reads),
        // a client is answered again; the count goes down by itself.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let answer = hello(addr).unwrap_or_default();
            if answer.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never answered again");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
