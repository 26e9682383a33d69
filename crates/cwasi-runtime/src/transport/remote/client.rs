//! The caller's side of remote mode: [`Broker::call`] puts a request on the
//! function's stream and waits for its reply key; [`RemoteClient`] makes
//! such calls for a route.

use std::sync::Arc;
use std::time::Instant;

use redis::Value;

use super::codec::{decode_reply, Reply, PAYLOAD_KEY_MIN, STREAM_MAXLEN};
use super::conn::{exchange, Broker};
use super::consumer::RequestMeta;
use super::keys::{FnKeys, KeyError};
use crate::call::{deliver, CallMeta, CallerIo};
use crate::deadline::{ANSWER_GRACE, BROKER_OP_TIMEOUT, LEASE_GRACE};
use crate::error::{CallError, ErrorCode};
use crate::transport::{on_worker, PendingCall, Transport};

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
        } = meta;
        let id = self.new_request_id();
        // The server derives the same keys from the function and the id.
        let bad = |e: KeyError| CallError::new(ErrorCode::InvalidArgument, e.to_string());
        let function = FnKeys::new(ns, name).map_err(bad)?;
        let keys = function.call(&id).map_err(bad)?;
        let reply = keys.reply();
        let timeout = deadline.remaining();
        let mut add = redis::cmd("XADD");
        add.arg(function.stream())
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAXLEN)
            .arg("*")
            .arg("id")
            .arg(&id)
            .arg("deadline")
            .arg(deadline.to_unix_ms())
            .arg("depth")
            .arg(depth);
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
        // The request and the wait go out together, on a connection of their
        // own: one round trip to the broker. A popped list is gone; an
        // unanswered key expires with its reply.
        p.add_command(add)
            .cmd("BLPOP")
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
        let mut conn = self.sync_conn(timeout + ANSWER_GRACE)?;
        let value = match exchange(&mut conn, &p, until) {
            Ok(Some(mut replies)) if replies.len() == p.len() => {
                replies.pop().unwrap_or(Value::Nil)
            }
            Ok(Some(other)) => return Err(self.down(format!("unexpected reply {other:?}"))),
            // Out of time: the connection, which may still have the wait
            // pending, is dropped.
            Ok(None) => return Err(timed_out()),
            Err(e) => return Err(self.down(e)),
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

    /// Takes a large response from its `key` (`GETDEL`: taking it deletes
    /// it), on the call's connection.
    fn take_response(&self, conn: &mut redis::Connection, key: &str) -> Result<Vec<u8>, CallError> {
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
    namespace: String,
    name: String,
    max_payload: usize,
}

impl RemoteClient {
    /// A client of `name` in `namespace`, through `broker`, accepting
    /// responses of up to `max_payload` bytes.
    pub fn new(broker: Arc<Broker>, namespace: String, name: String, max_payload: usize) -> Self {
        RemoteClient {
            broker,
            namespace,
            name,
            max_payload,
        }
    }
}

/// What a call made under `call` sends.
fn request_meta(call: &CallMeta) -> RequestMeta {
    RequestMeta {
        deadline: call.deadline,
        depth: call.depth,
        trace: call.trace,
    }
}

impl Transport for RemoteClient {
    fn call(&self, io: &mut dyn CallerIo, call: &CallMeta) -> Result<(), CallError> {
        let response = self.broker.call(
            &self.namespace,
            &self.name,
            io.request(),
            request_meta(call),
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
        on_worker(format!("cwasi-remote-{name}"), meta, move || {
            broker.call(&ns, &name, &request, request_meta(&meta), max)
        })
    }
}
