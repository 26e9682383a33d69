//! The `/metrics` endpoint: HTTP/1 (hyper) on its own thread and
//! single-threaded tokio runtime, so that it never competes with the calls.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;

use cwasi_runtime::{Runtime, ServeHandle};

use crate::encode::{encode, Snapshot};

/// The content type of the answer: OpenMetrics text, which Prometheus asks
/// for and parses.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Connections open at once; a connection over it is closed at once. Each
/// is a task of the server's one event loop, not a thread or a slot that
/// others wait for, so idle and slow clients do not delay a scrape: each
/// connection answers one request and closes (no keep-alive), and one that
/// has not sent its request whole within [`HEADER_TIMEOUT`] is closed.
pub const MAX_CONNECTIONS: usize = 4096;

/// Connections open at once from one address; more from it are closed at
/// once, so that one client cannot take all of [`MAX_CONNECTIONS`].
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = MAX_CONNECTIONS / 2;

/// How long a client may take to send its request line and headers, from
/// the moment it connects (a slowloris gets no longer).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The address could not be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server's thread or runtime could not be started.
    #[error("cannot start the metrics server: {0}")]
    Start(std::io::Error),
}

type Source = Arc<dyn Fn() -> Snapshot + Send + Sync>;

/// A running `/metrics` endpoint; dropping it stops it.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `addr` (port 0 picks one) and answers `GET /metrics` with
    /// what `source` reports at that moment. `source` runs on a blocking
    /// thread, so it may ask the broker.
    pub fn start(
        addr: SocketAddr,
        source: impl Fn() -> Snapshot + Send + Sync + 'static,
    ) -> Result<MetricsServer, MetricsError> {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let local = listener.local_addr().map_err(MetricsError::Start)?;
        listener
            .set_nonblocking(true)
            .map_err(MetricsError::Start)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(MetricsError::Start)?;
        let (stop, stopped) = watch::channel(false);
        let source: Source = Arc::new(source);
        let thread = std::thread::Builder::new()
            .name("cwasi-metrics".into())
            .spawn(move || rt.block_on(serve(listener, source, stopped)))
            .map_err(MetricsError::Start)?;
        tracing::info!(addr = %local, "serving metrics on /metrics");
        Ok(MetricsServer {
            addr: local,
            stop,
            thread: Some(thread),
        })
    }

    /// Serves the metrics of `runtime` while it serves a function through
    /// `served` (whose broker backlog is reported too): what `cwasi serve`
    /// and the shim run. Says where on stderr, as both print their endpoints.
    pub fn for_served(
        addr: SocketAddr,
        runtime: Arc<Runtime>,
        served: Arc<ServeHandle>,
    ) -> Result<MetricsServer, MetricsError> {
        let server = MetricsServer::start(addr, move || Snapshot::of(&runtime, &[&served]))?;
        eprintln!("cwasi: metrics at http://{}/metrics", server.local_addr());
        Ok(server)
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The accept loop, until `stopped` turns true.
async fn serve(
    listener: std::net::TcpListener,
    source: Source,
    mut stopped: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "the metrics listener cannot be used");
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
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over a cap the connection is closed at once (dropped).
        let Some(counted) = open.admit(peer.ip()) else {
            tracing::debug!(%peer, "metrics: over the connection cap, closed");
            continue;
        };
        let source = source.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(req, source.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics: connection ended");
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
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Counted> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_ip) = &mut *open;
        let from_ip = by_ip.entry(ip).or_insert(0);
        if *total >= MAX_CONNECTIONS || *from_ip >= MAX_CONNECTIONS_PER_ADDRESS {
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

async fn answer(
    req: Request<Incoming>,
    source: Source,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != "/metrics" {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            "only /metrics is served\n".into(),
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into()));
    }
    let text = tokio::task::spawn_blocking(move || encode(source())).await;
    Ok(match text {
        Ok(Ok(text)) => {
            let mut r = reply(StatusCode::OK, text);
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(CONTENT_TYPE),
            );
            r
        }
        Ok(Err(_)) | Err(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be gathered\n".into(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::TcpStream;

    use super::*;

    /// Sends one HTTP/1.1 request (keep-alive by default) and reads until
    /// the server closes the connection; panics if it keeps it open.
    fn scrape_and_see_it_closed(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)
            .expect("the server closes the connection after one answer");
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[test]
    fn every_connection_gets_one_answer_and_is_closed() {
        let server =
            MetricsServer::start("127.0.0.1:0".parse().unwrap(), Snapshot::default).unwrap();
        // Clients one after the other, each asking for keep-alive: none
        // keeps its connection after its answer.
        for _ in 0..10 {
            let answer = scrape_and_see_it_closed(server.local_addr());
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            assert!(answer.contains(CONTENT_TYPE), "{answer}");
            assert!(answer.ends_with("# EOF\n"), "{answer}");
        }
    }

    #[test]
    fn idle_and_slow_clients_neither_delay_a_scrape_nor_stay() {
        let server =
            MetricsServer::start("127.0.0.1:0".parse().unwrap(), Snapshot::default).unwrap();
        let addr = server.local_addr();
        let idle: Vec<TcpStream> = (0..200)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        let mut slow: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
        for s in &mut slow {
            s.write_all(b"GET /metr").unwrap();
        }
        let answer = scrape_and_see_it_closed(addr);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // Both kinds are closed once the header timeout has passed.
        for mut s in idle.into_iter().chain(slow) {
            s.set_read_timeout(Some(HEADER_TIMEOUT * 3)).unwrap();
            let mut rest = Vec::new();
            s.read_to_end(&mut rest)
                .expect("the server closes a client that sends no whole request");
        }
    }
}
