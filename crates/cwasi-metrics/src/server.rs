//! The `/metrics` endpoint: a `bounded-http` server (HTTP/1 with hyper, on
//! its own thread and single-threaded tokio runtime, so that it never
//! competes with the calls).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bounded_http::{HttpServer, HttpServerError, Reply, ServerLimits};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

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

/// Scrapes gathered at once (each on a blocking thread, as it may ask the
/// broker).
const GATHERING_THREADS: usize = 4;

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
    server: HttpServer,
}

impl MetricsServer {
    /// Listens on `addr` (port 0 picks one) and answers `GET /metrics` with
    /// what `source` reports at that moment. `source` runs on a blocking
    /// thread, so it may ask the broker.
    pub fn start(
        addr: SocketAddr,
        source: impl Fn() -> Snapshot + Send + Sync + 'static,
    ) -> Result<MetricsServer, MetricsError> {
        let source: Source = Arc::new(source);
        let limits = ServerLimits {
            max_connections: MAX_CONNECTIONS,
            max_connections_per_address: MAX_CONNECTIONS_PER_ADDRESS,
            header_timeout: HEADER_TIMEOUT,
            keep_alive: false,
            blocking_threads: GATHERING_THREADS,
        };
        let server = HttpServer::start("cwasi-metrics", addr, limits, move |req| {
            answer(req, source.clone())
        })
        .map_err(|e| match e {
            HttpServerError::Bind { addr, source } => MetricsError::Bind { addr, source },
            HttpServerError::Start(e) => MetricsError::Start(e),
            other => MetricsError::Start(std::io::Error::other(other.to_string())),
        })?;
        tracing::info!(addr = %server.local_addr(), "serving metrics on /metrics");
        Ok(MetricsServer { server })
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
        self.server.local_addr()
    }
}

async fn answer(req: Request<Incoming>, source: Source) -> Reply {
    let reply = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "only /metrics is served\n".into());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
    }
    let text = tokio::task::spawn_blocking(move || encode(source())).await;
    match text {
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
    }
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
