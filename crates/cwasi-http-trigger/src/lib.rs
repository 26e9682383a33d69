//! An HTTP trigger for CWASI functions: `POST /<name>` calls the function
//! `name` with the request body as its payload and answers with its
//! response, as a caller of one namespace, through [`Runtime::call`]: the
//! same selection (embedded, local, remote), call policies and limits as
//! any other caller. `cwasi up` runs it, so that a user can try a
//! composition's functions with curl; it is also the smallest way to put a
//! function behind HTTP.
//!
//! ```no_run
//! use std::sync::Arc;
//! use cwasi_http_trigger::{HttpTrigger, TriggerConfig};
//! use cwasi_runtime::{FunctionSpec, Runtime};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::builder()
//!     .function(FunctionSpec::new("echo", "demo", "echo.wasm".into()))
//!     .build()?;
//! let trigger = HttpTrigger::start(
//!     "127.0.0.1:8080".parse()?,
//!     Arc::new(runtime),
//!     TriggerConfig::new("demo", vec!["echo".into()]),
//! )?;
//! // curl -d hello http://127.0.0.1:8080/echo
//! println!("POST http://{}/echo", trigger.local_addr());
//! # Ok(()) }
//! ```
//!
//! Answers: `200` with the function's response; for a failed call a
//! status by its error code ([`status_of`]), a `cwasi-error` header with the
//! code's name and a one-line text body (`TIMEOUT: ...`); `404` for a name
//! that is not served, `405` for a method other than POST, `413` for a body
//! over the payload limit, `408` for a body that does not arrive in time,
//! `503` when every call slot stays busy for the call timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bounded_http::{HttpServer, HttpServerError, Reply, ServerLimits};
use bytes::Bytes;
use cwasi_runtime::{CallError, ErrorCode, Runtime};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::Semaphore;

/// The header that names the error code of a failed call.
pub const ERROR_HEADER: &str = "cwasi-error";

/// How long any body may take to arrive, on top of its size at
/// [`MIN_BODY_RATE`].
pub const BODY_GRACE: Duration = Duration::from_secs(2);

/// The slowest a body may arrive at, in bytes per second: a body of N bytes
/// must be in within [`BODY_GRACE`] plus N at this rate, or the request is
/// answered `408`, so a slow sender holds a call slot only so long.
pub const MIN_BODY_RATE: u64 = 256 << 10;

/// How the trigger serves.
#[derive(Debug, Clone)]
pub struct TriggerConfig {
    /// The namespace the calls come from: it decides what is embedded and
    /// what the callees' call policies see.
    pub namespace: String,
    /// The functions served, each at `POST /<name>`; others get `404`.
    pub functions: Vec<String>,
    /// Calls that run at once, each on a blocking thread; the others wait
    /// for a slot up to the call timeout, then get `503`. Bodies are read
    /// only once a slot is taken, so memory stays under this many payloads.
    pub max_concurrent_calls: usize,
    /// Connections open at once in all (the per-address cap is half).
    pub max_connections: usize,
}

impl TriggerConfig {
    /// Serves `functions` as callers of `namespace`, 16 calls and 1024
    /// connections at once.
    pub fn new(namespace: &str, functions: Vec<String>) -> TriggerConfig {
        TriggerConfig {
            namespace: namespace.to_string(),
            functions,
            max_concurrent_calls: 16,
            max_connections: 1024,
        }
    }
}

/// Why the trigger could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TriggerError {
    /// Its HTTP server could not start (the address is taken, say).
    #[error(transparent)]
    Http(#[from] HttpServerError),
}

/// A running trigger; dropping it stops it.
pub struct HttpTrigger {
    server: HttpServer,
}

/// What every request needs, shared by the connections.
struct Shared {
    runtime: Arc<Runtime>,
    config: TriggerConfig,
    slots: Semaphore,
}

impl HttpTrigger {
    /// Listens on `addr` (port 0 picks one) and calls the functions of
    /// `config` in `runtime`.
    pub fn start(
        addr: SocketAddr,
        runtime: Arc<Runtime>,
        config: TriggerConfig,
    ) -> Result<HttpTrigger, TriggerError> {
        let calls = config.max_concurrent_calls.max(1);
        let limits = ServerLimits {
            max_connections: config.max_connections.max(1),
            max_connections_per_address: (config.max_connections / 2).max(1),
            keep_alive: true,
            blocking_threads: calls,
            ..ServerLimits::default()
        };
        let shared = Arc::new(Shared {
            runtime,
            slots: Semaphore::new(calls),
            config,
        });
        let server = HttpServer::start("cwasi-http", addr, limits, move |req| {
            answer(req, shared.clone())
        })?;
        Ok(HttpTrigger { server })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }
}

/// A text answer.
fn text(status: StatusCode, body: String) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The answer of a failed call: the status of its code, the code's name in
/// [`ERROR_HEADER`], and `CODE: message` as the body.
fn refusal(e: &CallError) -> Reply {
    let mut r = text(
        status_of(e.code),
        format!("{}: {}\n", e.code.name(), one_line(&e.message)),
    );
    r.headers_mut()
        .insert(ERROR_HEADER, HeaderValue::from_static(e.code.name()));
    r
}

/// The message on one line, so a body stays one line.
fn one_line(message: &str) -> String {
    message.replace(['\n', '\r'], " ")
}

/// The HTTP status of a call that failed with `code`: what the caller did
/// wrong is a 4xx, what the function or the path to it did is a 5xx.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::UnknownFunction => StatusCode::NOT_FOUND,
        ErrorCode::Denied => StatusCode::FORBIDDEN,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
        // A command (an entry) is not called: it has no handler.
        ErrorCode::NotCallable => StatusCode::NOT_IMPLEMENTED,
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::ResourceLimit => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Transport => StatusCode::BAD_GATEWAY,
        ErrorCode::CalleeTrapped
        | ErrorCode::CalleeError
        | ErrorCode::BadResponse
        | ErrorCode::AllocFailed
        | ErrorCode::UnknownHandle => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn answer(req: Request<Incoming>, shared: Arc<Shared>) -> Reply {
    let config = &shared.config;
    let name = req.uri().path().trim_start_matches('/');
    let Some(name) = config
        .functions
        .iter()
        .find(|f| f.as_str() == name)
        .cloned()
    else {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "no function at {}; served: {}\n",
                req.uri().path(),
                config
                    .functions
                    .iter()
                    .map(|f| format!("/{f}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    };
    if req.method() != Method::POST {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("call /{name} with POST, the request as the body\n"),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let limits = shared.runtime.limits();
    let max_payload = limits.max_payload_bytes;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("TOO_LARGE: the body is over the payload limit of {max_payload} bytes\n"),
        )
    };
    if declared.is_some_and(|n| n > max_payload as u64) {
        return too_large();
    }
    // A slot first, then the body: bodies in memory stay under the slots.
    let call_timeout = limits.call_timeout;
    let Ok(Ok(_slot)) = tokio::time::timeout(call_timeout, shared.slots.acquire()).await else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "RESOURCE_LIMIT: all {} call slots stayed busy for {call_timeout:?}\n",
                config.max_concurrent_calls
            ),
        );
    };
    let expected = declared.unwrap_or(max_payload as u64);
    let body_time = BODY_GRACE + Duration::from_secs_f64(expected as f64 / MIN_BODY_RATE as f64);
    let body = Limited::new(req.into_body(), max_payload).collect();
    let body = match tokio::time::timeout(body_time, body).await {
        Err(_) => {
            return text(
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {body_time:?}\n"),
            )
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(e)) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}\n"),
            )
        }
        Ok(Ok(body)) => body.to_bytes(),
    };
    let runtime = shared.runtime.clone();
    let namespace = config.namespace.clone();
    let target = name.clone();
    let called =
        tokio::task::spawn_blocking(move || runtime.call(&namespace, &target, &body)).await;
    match called {
        Ok(Ok(response)) => {
            let mut r = Response::new(Full::new(Bytes::from(response)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            r
        }
        Ok(Err(e)) => {
            tracing::debug!(function = %name, "http call failed: {e}");
            refusal(&e)
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the call of '{name}' was lost: {e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_an_error_status() {
        for code in ErrorCode::ALL {
            let status = status_of(code);
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{code:?}"
            );
        }
        let r = refusal(&CallError::new(ErrorCode::Denied, "not you\nat all"));
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.headers()[ERROR_HEADER], "DENIED");
    }
}
