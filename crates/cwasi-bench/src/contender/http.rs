//! Baseline `http`: A POSTs the payload to B over HTTP/1.1 (loopback, or
//! across network namespaces with `--netns`), as through a gateway (hyper 1 on both sides, one kept-alive connection per
//! A worker, `TCP_NODELAY`). B reads the whole body into its memory and
//! answers `200` with no body; for `fetch`, A sends `GET /emit/<size>` and
//! B answers with that many bytes from a warm buffer.
//!
//! B is one HTTP server in this process on a two-thread tokio runtime (its
//! threads' CPU time is counted apart from A's; with `--netns` its threads
//! and listener are in node B); each A worker drives its connection from a
//! current-thread runtime of its own.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::runtime::Runtime;

use super::{lock, Contender, Kind, Parties, Placement, MAX_FAN, OP_TIMEOUT};
use crate::procfs;
use crate::BenchError;

const NAME: &str = "http";

/// Warm response bodies of B, by size.
type Bodies = Arc<Mutex<HashMap<usize, Bytes>>>;

/// One A worker: its runtime and connection.
struct Client {
    rt: Runtime,
    sender: SendRequest<Full<Bytes>>,
}

/// The server (B) and the clients (A).
pub struct Http {
    // Clients first: their connections close before the server stops.
    clients: Vec<Mutex<Client>>,
    server: Option<Runtime>,
    server_tids: Arc<Mutex<Vec<u32>>>,
}

async fn handle(
    req: Request<Incoming>,
    bodies: Bodies,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: Bytes| {
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = status;
        r
    };
    if let Some(size) = req.uri().path().strip_prefix("/emit/") {
        let Ok(size) = size.parse::<usize>() else {
            return Ok(reply(StatusCode::BAD_REQUEST, Bytes::new()));
        };
        let body = lock(&bodies)
            .entry(size)
            .or_insert_with(|| Bytes::from(vec![7u8; size]))
            .clone();
        return Ok(reply(StatusCode::OK, body));
    }
    // The payload, gathered into B's memory.
    match req.into_body().collect().await {
        Ok(body) => {
            std::hint::black_box(body.to_bytes());
            Ok(reply(StatusCode::OK, Bytes::new()))
        }
        Err(_) => Ok(reply(StatusCode::BAD_REQUEST, Bytes::new())),
    }
}

impl Http {
    /// Starts B's server on a free port of B's address and connects the A
    /// workers.
    pub fn start(place: &Placement) -> Result<Http, BenchError> {
        let server_tids = Arc::new(Mutex::new(Vec::new()));
        let tids = server_tids.clone();
        let tids_started = server_tids.clone();
        let bind = place.b_ip();
        // Built where B belongs, so that its worker threads and listener
        // are there.
        let (server, addr) = place.in_b(move || {
            let server = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("http-b")
                .on_thread_start(move || {
                    if let Some(t) = procfs::current_tid() {
                        lock(&tids).push(t);
                    }
                })
                .enable_all()
                .build()
                .map_err(|e| BenchError::setup(NAME, e))?;
            // The workers record their thread ids as they start, which
            // may be after `build` returns: the placement check reads them.
            let started = Instant::now();
            while lock(&tids_started).len() < 2 && started.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let listener = server
                .block_on(tokio::net::TcpListener::bind((bind, 0)))
                .map_err(|e| BenchError::setup(NAME, e))?;
            let addr = listener
                .local_addr()
                .map_err(|e| BenchError::setup(NAME, e))?;
            let bodies: Bodies = Arc::default();
            server.spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let _ = stream.set_nodelay(true);
                    let bodies = bodies.clone();
                    tokio::spawn(async move {
                        let service =
                            hyper::service::service_fn(move |req| handle(req, bodies.clone()));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            Ok((server, addr))
        })?;
        let clients = (0..MAX_FAN)
            .map(|_| connect(addr).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Http {
            clients,
            server: Some(server),
            server_tids,
        })
    }

    /// Sends `req` on worker `worker`'s connection and returns the body of a
    /// `200` answer.
    fn exchange(&self, worker: usize, req: Request<Full<Bytes>>) -> Result<Bytes, BenchError> {
        let mut c = lock(&self.clients[worker]);
        let Client { rt, sender } = &mut *c;
        rt.block_on(async {
            let call = async {
                sender.ready().await?;
                let resp = sender.send_request(req).await?;
                let status = resp.status();
                let body = resp.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, body))
            };
            match tokio::time::timeout(OP_TIMEOUT, call).await {
                Ok(Ok((StatusCode::OK, body))) => Ok(body),
                Ok(Ok((status, _))) => Err(BenchError::op(NAME, format!("B answered {status}"))),
                Ok(Err(e)) => Err(BenchError::op(NAME, e)),
                Err(_) => Err(BenchError::op(
                    NAME,
                    format!("no answer within {OP_TIMEOUT:?}"),
                )),
            }
        })
    }
}

/// Opens one kept-alive HTTP/1.1 connection to B.
fn connect(addr: SocketAddr) -> Result<Client, BenchError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::setup(NAME, e))?;
    let sender = rt.block_on(async {
        let stream = tokio::time::timeout(OP_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| BenchError::setup(NAME, "connect timed out"))?
            .map_err(|e| BenchError::setup(NAME, e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| BenchError::setup(NAME, e))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| BenchError::setup(NAME, e))?;
        tokio::spawn(conn);
        Ok::<_, BenchError>(sender)
    })?;
    Ok(Client { rt, sender })
}

fn request(
    method: Method,
    path: &str,
    body: Full<Bytes>,
) -> Result<Request<Full<Bytes>>, BenchError> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "bench-b")
        .body(body)
        .map_err(|e| BenchError::op(NAME, e))
}

impl Contender for Http {
    fn kind(&self) -> Kind {
        Kind::Http
    }

    fn prepare(&self, _size: usize) -> Result<(), BenchError> {
        Ok(())
    }

    fn send(&self, worker: usize, payload: &Arc<[u8]>) -> Result<(), BenchError> {
        // The body shares the payload's memory: no copy on A's side.
        let body = Full::new(Bytes::from_owner(payload.clone()));
        let req = request(Method::POST, "/discard", body)?;
        self.exchange(worker, req).map(drop)
    }

    fn fetch(&self, worker: usize, size: usize) -> Result<(), BenchError> {
        let req = request(
            Method::GET,
            &format!("/emit/{size}"),
            Full::new(Bytes::new()),
        )?;
        let body = self.exchange(worker, req)?;
        if body.len() != size {
            return Err(BenchError::op(
                NAME,
                format!("B answered {} bytes instead of {size}", body.len()),
            ));
        }
        Ok(())
    }

    fn parties(&self) -> Parties {
        Parties {
            b_processes: Vec::new(),
            b_threads: lock(&self.server_tids).clone(),
            redis: None,
        }
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        self.clients.clear();
        if let Some(rt) = self.server.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}
