//! The caller's side of remote mode: [`Broker::call`] puts a request on the
//! function's stream and waits for its reply key; [`RemoteClient`] makes
//! such calls for a route.

use std::sync::Arc;
use std::time::Instant;

use redis::Value;

use super::codec::{decode_reply, Reply, PAYLOAD_KEY_MIN, STREAM_MAXLEN};
use super::conn::{exchange, Broker, SyncConn};
use super::consumer::RequestMeta;
use super::keys::{FnKeys, KeyError};
use super::signed;
use crate::call::{deliver, CallMeta, CallerIo};
use crate::deadline::{ANSWER_GRACE, BROKER_OP_TIMEOUT, LEASE_GRACE};
use crate::error::{CallError, ErrorCode};
use crate::identity::CallerIdentity;
use crate::transport::{on_worker, PendingCall, Transport};

/// The first wait before a request is sent again to a cluster in failover.
const FAILOVER_BACKOFF_START: std::time::Duration = std::time::Duration::from_millis(50);
/// The longest wait between two attempts.
const FAILOVER_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_millis(500);

impl Broker {
    /// Calls `name` of namespace `ns` through its stream and waits for the
    /// reply until `meta.deadline`, which travels with the request (as
    /// wall-clock time) together with the callee's nesting depth and the
    /// caller's trace context (`traceparent`). A response larger than
    /// `max_payload` is refused.
    pub fn call(
        &self,
        ns: &str,
        name: &str,
        request: &[u8],
        meta: RequestMeta,
        max_payload: usize,
    ) -> Result<Vec<u8>, CallError> {
        let RequestMeta {
            deadline,
            depth,
            trace,
            caller,
        } = meta;
        let id = self.new_request_id();
        // The server derives the same keys from the function and the id.
        let bad = |e: KeyError| CallError::new(ErrorCode::InvalidArgument, e.to_string());
        let function = FnKeys::new(ns, name).map_err(bad)?;
        let keys = function.call(&id).map_err(bad)?;
        let reply = keys.reply();
        let timeout = deadline.remaining();
        let deadline_ms = deadline.to_unix_ms();
        let mut add = redis::cmd("XADD");
        add.arg(function.stream())
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAXLEN)
            .arg("*")
            .arg("id")
            .arg(&id)
            .arg("deadline")
            .arg(deadline_ms)
            .arg("depth")
            .arg(depth);
        if let Some(caller) = &caller {
            let to_sign = || {
                signed::message(
                    &function,
                    &id,
                    deadline_ms,
                    depth,
                    caller.as_bytes(),
                    request,
                )
            };
            let fields = signed::fields(self.identity().map(|i| &**i), caller, to_sign)
                .map_err(|e| CallError::new(ErrorCode::Denied, e))?;
            for (field, value) in fields {
                add.arg(field).arg(value);
            }
        }
        if let Some(traceparent) = trace.traceparent() {
            add.arg("traceparent").arg(traceparent);
        }
        let mut p = redis::pipe();
        if request.len() >= PAYLOAD_KEY_MIN {
            // It lives until the request's deadline, and a little longer for
            // clocks that differ between nodes; a server deletes it when it
            // answers.
            p.cmd("SET")
                .arg(keys.payload())
                .arg(request)
                .arg("PX")
                .arg((timeout + LEASE_GRACE).as_millis() as u64);
            add.arg("payload_in_key").arg(1);
        } else {
            add.arg("payload").arg(request);
        }
        p.add_command(add);
        // With durability asked for, the request must be on that many
        // replicas before the call goes on: one more round trip.
        let (replicas, within) = self.durability();
        let mut conn = None;
        if replicas > 0 {
            p.cmd("WAIT").arg(replicas).arg(within.as_millis() as u64);
            conn = Some(self.replicate(&p, replicas, within, deadline)?);
            p = redis::pipe();
        }
        // The request and the wait go out together, on a connection of their
        // own: one round trip to the broker. A popped list is gone; an
        // unanswered key expires with its reply.
        p.cmd("BLPOP")
            .arg(&reply)
            .arg(timeout.as_secs_f64().max(0.01));
        let timed_out = || {
            CallError::new(
                ErrorCode::Timeout,
                format!(
                    "'{name}' (namespace '{ns}') did not answer within {timeout:?} through the \
                     broker"
                ),
            )
        };
        // Every reply by the deadline, and the grace for the server's own
        // timeout error, however the broker stalls.
        let until = Instant::now() + timeout + ANSWER_GRACE;
        let mut conn = conn;
        let mut backoff = FAILOVER_BACKOFF_START;
        let (mut conn, value) = loop {
            let attempt = match conn.take() {
                Some(c) => Ok(c),
                None => self.open_sync(timeout + ANSWER_GRACE),
            }
            .and_then(|mut c| exchange(&mut c, &p, until).map(|r| (c, r)));
            match attempt {
                Ok((c, Some(mut replies))) if replies.len() == p.len() => {
                    break (c, replies.pop().unwrap_or(Value::Nil));
                }
                Ok((_, Some(other))) => {
                    return Err(self.down(format!("unexpected reply {other:?}")))
                }
                // Out of time: the connection, which may still have the wait
                // pending, is dropped.
                Ok((_, None)) => return Err(timed_out()),
                // A cluster in failover: the slot's master is gone and its
                // replica not yet promoted. The same request (same id, so
                // the same reply key) is sent again until the deadline: if
                // the first one survived too, its caller still takes one
                // answer, and the other expires.
                Err(e) if self.in_failover(&e) && deadline.remaining() > backoff => {
                    tracing::debug!("broker failover, trying again in {backoff:?}: {e}");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(FAILOVER_BACKOFF_MAX);
                }
                Err(e) => return Err(self.down(e)),
            }
        };
        let envelope = match value {
            Value::Array(mut items) if items.len() == 2 => match items.pop() {
                Some(Value::BulkString(b)) => b,
                _ => return Err(self.down("malformed reply")),
            },
            Value::Nil => {
                self.give_back(conn);
                return Err(timed_out());
            }
            other => return Err(self.down(format!("unexpected reply {other:?}"))),
        };
        let response = match decode_reply(envelope) {
            Ok(Reply::Body(body)) => body,
            // A large response waits in the call's response key; a reply
            // naming any other key is not obeyed.
            Ok(Reply::InKey(key)) if key == keys.response() => {
                self.take_response(&mut conn, &key)?
            }
            Ok(Reply::InKey(_)) => {
                self.give_back(conn);
                return Err(CallError::new(
                    ErrorCode::Transport,
                    "the reply names a key other than the call's response key",
                ));
            }
            Err(e) => {
                self.give_back(conn);
                return Err(e);
            }
        };
        self.give_back(conn);
        if response.len() > max_payload {
            return Err(CallError::too_large(
                "response",
                response.len(),
                max_payload,
            ));
        }
        Ok(response)
    }

    /// Sends the request pipeline `p`, which ends in `WAIT replicas`, and
    /// checks that enough replicas hold the request; returns the connection
    /// for the rest of the call.
    fn replicate(
        &self,
        p: &redis::Pipeline,
        replicas: u32,
        within: std::time::Duration,
        deadline: crate::deadline::Deadline,
    ) -> Result<SyncConn, CallError> {
        let budget = deadline.remaining() + ANSWER_GRACE;
        let mut conn = self.sync_conn(budget)?;
        let acked = match exchange(&mut conn, p, Instant::now() + budget) {
            Ok(Some(replies)) => match replies.last() {
                Some(Value::Int(n)) => *n,
                other => return Err(self.down(format!("unexpected WAIT reply {other:?}"))),
            },
            Ok(None) => {
                return Err(CallError::new(
                    ErrorCode::Timeout,
                    "the broker did not store the request within its deadline",
                ))
            }
            Err(e) => return Err(self.down(e)),
        };
        if acked < i64::from(replicas) {
            self.give_back(conn);
            return Err(CallError::new(
                ErrorCode::Transport,
                format!(
                    "the request reached {acked} of the {replicas} replicas asked for \
                     (CWASI_REDIS_WAIT) within {within:?}, so a failover could lose it; the \
                     call was not waited for (the request may still run)"
                ),
            ));
        }
        Ok(conn)
    }

    /// Takes a large response from its `key` (`GETDEL`: taking it deletes
    /// it), on the call's connection.
    fn take_response(&self, conn: &mut SyncConn, key: &str) -> Result<Vec<u8>, CallError> {
        conn.set_read_timeout(Some(BROKER_OP_TIMEOUT))
            .map_err(|e| self.down(e))?;
        match redis::cmd("GETDEL").arg(key).query::<Option<Vec<u8>>>(conn) {
            Ok(Some(body)) => Ok(body),
            Ok(None) => Err(CallError::new(
                ErrorCode::Transport,
                format!("the response in {key} is no longer in the broker (expired)"),
            )),
            Err(e) => Err(self.down(e)),
        }
    }
}

/// Calls one function served on another node.
pub(crate) struct RemoteClient {
    broker: Arc<Broker>,
    /// Who calls through this client, named in every request.
    caller: Arc<CallerIdentity>,
    namespace: String,
    name: String,
    max_payload: usize,
}

impl RemoteClient {
    /// A client of `name` in `namespace`, through `broker`, for calls of
    /// `caller`, accepting responses of up to `max_payload` bytes.
    pub fn new(
        broker: Arc<Broker>,
        caller: Arc<CallerIdentity>,
        namespace: String,
        name: String,
        max_payload: usize,
    ) -> Self {
        RemoteClient {
            broker,
            caller,
            namespace,
            name,
            max_payload,
        }
    }
}

/// What a call made under `call` sends.
fn request_meta(call: &CallMeta, caller: &Arc<CallerIdentity>) -> RequestMeta {
    RequestMeta {
        deadline: call.deadline,
        depth: call.depth,
        trace: call.trace,
        caller: Some(caller.clone()),
    }
}

impl Transport for RemoteClient {
    fn call(&self, io: &mut dyn CallerIo, call: &CallMeta) -> Result<(), CallError> {
        let response = self.broker.call(
            &self.namespace,
            &self.name,
            io.request(),
            request_meta(call, &self.caller),
            self.max_payload,
        )?;
        deliver(io, &response)
    }

    fn start(
        &self,
        io: &mut dyn CallerIo,
        call: &CallMeta,
    ) -> Result<Box<dyn PendingCall>, CallError> {
        let request = io.request().to_vec();
        let (broker, ns, name, max) = (
            self.broker.clone(),
            self.namespace.clone(),
            self.name.clone(),
            self.max_payload,
        );
        let meta = *call;
        let caller = self.caller.clone();
        on_worker(format!("cwasi-remote-{name}"), meta, move || {
            broker.call(&ns, &name, &request, request_meta(&meta, &caller), max)
        })
    }
}
