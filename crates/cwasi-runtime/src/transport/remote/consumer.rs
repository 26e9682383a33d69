//! One consumer of a function's stream: it reads requests, runs the
//! [`Handler`] on them and answers, takes over the requests of consumers
//! that died, and backs off while the broker is away.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;

use super::codec::{ack, answer, answer_pipe, entries, now_ms, Entry, Payload, Refused, GROUP};
use super::conn::{Broker, SyncConn};
use super::keys::FnKeys;
use super::registry::sleep_unless_stopped;
use super::signed;
use crate::deadline::{Deadline, BROKER_OP_TIMEOUT, LEASE_GRACE};
use crate::error::{CallError, ErrorCode};
use crate::identity::CallerIdentity;
use crate::trace::TraceContext;

/// How long one read waits for a request (`XREADGROUP … BLOCK`, in ms): also
/// how soon a consumer sees its stop flag.
const READ_BLOCK_MS: u64 = 1000;
/// The wait after a first broker error; it doubles with each further one,
/// up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts while the broker is away.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Most entries taken over at once.
const RECLAIM_COUNT: usize = 16;

/// What a stream server's handler knows of a request besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMeta {
    /// When the caller stops waiting for the answer (the entry's wall-clock
    /// `deadline`): the handler's work should end by then.
    pub deadline: Deadline,
    /// The callee's nesting depth, as the caller gave it (`depth`; 1 if the
    /// caller did not say).
    pub depth: u32,
    /// The caller's span (`traceparent`; none if absent or malformed).
    pub trace: TraceContext,
    /// Who calls: sent by a caller, and as the server authenticated it
    /// (`caller`, checked against the entry's signature on a node with a
    /// cluster CA). `None`: none sent.
    pub caller: Option<Arc<CallerIdentity>>,
}

impl RequestMeta {
    /// A request due by `deadline`, whose callee runs at `depth`, untraced.
    pub fn new(deadline: Deadline, depth: u32) -> RequestMeta {
        RequestMeta {
            deadline,
            depth,
            trace: TraceContext::NONE,
            caller: None,
        }
    }
}

/// What a stream server runs for each request: its bytes and what is known
/// of it, to the response or the error the caller gets.
pub type Handler = Arc<dyn Fn(&[u8], RequestMeta) -> Result<Vec<u8>, CallError> + Send + Sync>;

/// One consumer of one stream, and where it is in its loop.
pub(super) struct Consumer {
    broker: Arc<Broker>,
    /// The function served: its stream, and the keys of its calls.
    function: FnKeys,
    /// This consumer's name in the group.
    name: String,
    /// How long an entry may stay pending before another consumer takes it.
    lease: Duration,
    handler: Handler,
    stop: Arc<AtomicBool>,
    /// Whether the consumer group is known to exist.
    group_ready: bool,
    /// When pending entries were last reclaimed.
    last_reclaim: Instant,
    /// This consumer's own connection for its reads and answers; dropped
    /// after a failure and opened again on next use.
    conn: Option<SyncConn>,
    /// The answer to the request just run: it goes out with the next read,
    /// in one write, unless something else comes first.
    owed: Option<redis::Pipeline>,
    /// The wait after the next broker error.
    backoff: Duration,
}

impl Consumer {
    /// A consumer named `name` of the stream of `function`, running
    /// `handler`, until `stop`.
    pub(super) fn new(
        broker: Arc<Broker>,
        function: FnKeys,
        name: String,
        lease: Duration,
        handler: Handler,
        stop: Arc<AtomicBool>,
    ) -> Consumer {
        Consumer {
            broker,
            function,
            name,
            lease,
            handler,
            stop,
            group_ready: false,
            last_reclaim: Instant::now(),
            conn: None,
            owed: None,
            backoff: MIN_BACKOFF,
        }
    }

    /// Serves requests until the stop flag is set, then sends the answer it
    /// owes.
    pub(super) fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            let reclaim_due = self.last_reclaim.elapsed() >= self.lease / 2;
            if reclaim_due || !self.group_ready {
                self.send_owed_answer();
            }
            match self.step(reclaim_due) {
                Ok(()) => self.backoff = MIN_BACKOFF,
                Err(e) => self.back_off(e),
            }
        }
        self.send_owed_answer();
    }

    /// One turn of the loop: the group, the entries reclaimed (when due) or
    /// else the next ones read, each processed.
    fn step(&mut self, reclaim_due: bool) -> Result<(), CallError> {
        self.ensure_group()?;
        let reclaimed = if reclaim_due { self.reclaim()? } else { None };
        let (list, reclaimed) = match reclaimed {
            Some(list) => (list, true),
            None => (self.read_next()?, false),
        };
        for entry in list {
            self.send_owed_answer();
            self.owed = self.process(entry, reclaimed);
        }
        Ok(())
    }

    /// After a broker error: forget the group and the connection, and wait
    /// (doubling the wait each time).
    fn back_off(&mut self, e: CallError) {
        tracing::warn!(
            stream = self.function.stream(),
            "broker error, retrying in {:?}: {e}",
            self.backoff
        );
        self.group_ready = false;
        self.conn = None;
        sleep_unless_stopped(self.backoff, || self.stop.load(Ordering::Relaxed));
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Sends the answer owed on its own (when no read follows it at once).
    fn send_owed_answer(&mut self) {
        let Some(p) = self.owed.take() else {
            return;
        };
        let broker = &self.broker;
        let sent = open(broker, &mut self.conn)
            .and_then(|c| p.query::<Vec<Value>>(c).map_err(|e| broker.down(e)));
        match sent {
            Ok(mut values) => self.check_answer(values.pop()),
            Err(err) => {
                self.conn = None;
                tracing::warn!(
                    stream = self.function.stream(),
                    "could not send an answer (its request stays pending and will be \
                     reclaimed): {err}"
                );
            }
        }
    }

    /// Creates the consumer group unless it is known to exist (from the
    /// stream's start, so requests added before any server existed are
    /// served too).
    fn ensure_group(&mut self) -> Result<(), CallError> {
        if self.group_ready {
            return Ok(());
        }
        let mut c = redis::cmd("XGROUP");
        c.arg("CREATE")
            .arg(self.function.stream())
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM");
        match self.broker.block_on(self.broker.query(&c)) {
            Ok(_) => {}
            Err(e) if e.message.contains("BUSYGROUP") => {}
            Err(e) => return Err(e),
        }
        self.group_ready = true;
        Ok(())
    }

    /// Takes over the entries left pending past their lease by dead
    /// consumers (`XAUTOCLAIM`); `None` if the reply has no list of them
    /// (then the consumer reads as usual).
    fn reclaim(&mut self) -> Result<Option<Vec<Result<Entry, Refused>>>, CallError> {
        self.last_reclaim = Instant::now();
        let mut c = redis::cmd("XAUTOCLAIM");
        c.arg(self.function.stream())
            .arg(GROUP)
            .arg(&self.name)
            .arg(self.lease.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(RECLAIM_COUNT);
        let Value::Array(mut parts) = self.broker.block_on(self.broker.query(&c))? else {
            return Ok(None);
        };
        if parts.len() < 2 {
            return Ok(None);
        }
        let list = entries(&self.function, parts.swap_remove(1));
        if !list.is_empty() {
            tracing::info!(count = list.len(), "reclaimed pending requests");
        }
        Ok(Some(list))
    }

    /// Reads the next request (`XREADGROUP … BLOCK`), sending the answer
    /// owed in the same write.
    fn read_next(&mut self) -> Result<Vec<Result<Entry, Refused>>, CallError> {
        let c = open(&self.broker, &mut self.conn)?;
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(GROUP)
            .arg(&self.name)
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(READ_BLOCK_MS)
            .arg("STREAMS")
            .arg(self.function.stream())
            .arg(">");
        let answering = self.owed.is_some();
        let mut p = self.owed.take().unwrap_or_else(answer_pipe);
        p.add_command(read);
        let mut values = match p.query::<Vec<Value>>(c) {
            Ok(values) => values,
            Err(e) => {
                self.conn = None;
                if answering {
                    tracing::warn!(
                        stream = self.function.stream(),
                        "could not send an answer (its request stays pending and will be \
                         reclaimed): {e}"
                    );
                }
                return Err(self.broker.down(e));
            }
        };
        let v = values.pop().unwrap_or(Value::Nil);
        if answering {
            self.check_answer(values.pop());
        }
        // [[stream, [entries...]]] or nil
        Ok(match v {
            Value::ServerError(e) => {
                if e.code() == "NOGROUP" {
                    self.group_ready = false;
                }
                return Err(self.broker.down(e));
            }
            Value::Array(mut streams) if !streams.is_empty() => match streams.swap_remove(0) {
                Value::Array(mut pair) if pair.len() == 2 => {
                    entries(&self.function, pair.swap_remove(1))
                }
                _ => Vec::new(),
            },
            Value::Map(mut m) if !m.is_empty() => entries(&self.function, m.swap_remove(0).1),
            _ => Vec::new(),
        })
    }

    /// Runs one request and returns the commands that answer it, or `None`
    /// if it is not run here (expired, malformed, answered or held
    /// elsewhere) or must stay pending (its payload could not be read).
    ///
    /// A fresh entry (delivered by `>`) was never given to another consumer,
    /// so it runs at once. A `reclaimed` one may have been answered by a
    /// consumer whose answer raced the reclaim (then the entry is gone,
    /// since the answer deletes it), or may still be running elsewhere (the
    /// claim): it runs only if neither holds. A consumer cannot keep a fresh
    /// entry past the lease while alive, since its call is stopped at the
    /// call timeout and the lease is longer.
    fn process(
        &mut self,
        entry: Result<Entry, Refused>,
        reclaimed: bool,
    ) -> Option<redis::Pipeline> {
        let e = match entry {
            // A fresh entry needs no broker round trip before it runs.
            Ok(e) if !reclaimed && now_ms() <= e.deadline_ms => e,
            entry => match self.broker.block_on(self.admit(entry, reclaimed)) {
                Ok(Some(e)) => e,
                Ok(None) => return None,
                Err(err) => {
                    tracing::warn!(
                        stream = self.function.stream(),
                        "could not admit a request (it stays pending): {err}"
                    );
                    return None;
                }
            },
        };
        let fetched;
        let payload: &[u8] = match &e.payload {
            Payload::Inline(bytes) => bytes,
            Payload::InKey => match self.fetch_payload(&e.keys.payload()) {
                Ok(Some(bytes)) => {
                    fetched = bytes;
                    &fetched
                }
                Ok(None) => {
                    let gone = CallError::new(
                        ErrorCode::Transport,
                        "the request's payload is no longer in the broker (expired or evicted)",
                    );
                    return Some(answer(&self.function, &e, Err(gone), reclaimed));
                }
                Err(err) => {
                    self.conn = None;
                    tracing::warn!(
                        stream = self.function.stream(),
                        "could not read a request's payload (it stays pending): {err}"
                    );
                    return None;
                }
            },
        };
        let result = match self.caller_of(&e, payload) {
            Ok(Some(caller)) => {
                let meta = RequestMeta {
                    deadline: Deadline::from_unix_ms(e.deadline_ms),
                    depth: e.depth,
                    trace: e.trace,
                    caller: Some(Arc::new(caller)),
                };
                (self.handler)(payload, meta)
            }
            Ok(None) => return None,
            Err(refused) => Err(refused),
        };
        Some(answer(&self.function, &e, result, reclaimed))
    }

    /// Decides whether a reclaimed, expired or malformed entry runs here;
    /// the ones that do not are acknowledged or left to their claim holder.
    async fn admit(
        &self,
        entry: Result<Entry, Refused>,
        reclaimed: bool,
    ) -> Result<Option<Entry>, CallError> {
        let (b, stream) = (&self.broker, self.function.stream());
        let e = match entry {
            Ok(e) => e,
            Err(Refused { entry_id, reason }) => {
                // Acknowledged and deleted, unanswered: no key it names is
                // touched.
                tracing::warn!(stream, entry = %entry_id, "dropping a malformed request: {reason}");
                b.query_pipe(&ack(stream, &entry_id)).await?;
                return Ok(None);
            }
        };
        if now_ms() > e.deadline_ms {
            // The caller has given up and reported the failure.
            tracing::debug!(id = %e.id, "dropping an expired request");
            b.query_pipe(&ack(stream, &e.entry_id)).await?;
            return Ok(None);
        }
        if !reclaimed {
            return Ok(Some(e));
        }
        let still_there = b
            .query(
                redis::cmd("XRANGE")
                    .arg(stream)
                    .arg(&e.entry_id)
                    .arg(&e.entry_id),
            )
            .await?;
        if matches!(&still_there, Value::Array(items) if items.is_empty()) {
            // Answered (the answer deletes the entry) by a consumer that
            // finished just as it was reclaimed.
            b.query_pipe(&ack(stream, &e.entry_id)).await?;
            return Ok(None);
        }
        let mut claim = redis::cmd("SET");
        claim
            .arg(e.keys.claim())
            .arg(&self.name)
            .arg("NX")
            .arg("PX")
            .arg(self.lease.as_millis() as u64);
        if b.query(&claim).await? == Value::Nil {
            // Another consumer runs it; if that one dies, the entry is
            // reclaimed once the claim's lease is over.
            return Ok(None);
        }
        Ok(Some(e))
    }

    /// Who sent entry `e` (with `payload`), as far as this node can prove
    /// it: `DENIED` for an entry whose claim does not verify; `None` for a
    /// signed entry whose request id another stream entry took first (a
    /// replayed copy: it is acknowledged and dropped, unanswered, so that
    /// it cannot answer for the original), or when that cannot be known
    /// yet (the entry stays pending).
    fn caller_of(
        &mut self,
        e: &Entry,
        payload: &[u8],
    ) -> Result<Option<CallerIdentity>, CallError> {
        let identity = self.broker.identity().cloned();
        let caller = signed::authenticate(identity.as_deref(), &self.function, e, payload)
            .map_err(|why| {
                tracing::warn!(stream = self.function.stream(), entry = %e.entry_id, id = %e.id, "refusing a request: {why}");
                CallError::new(ErrorCode::Denied, why)
            })?;
        if identity.is_none() {
            return Ok(Some(caller));
        }
        // The request id is taken by the first stream entry that carries
        // it, until the request's deadline; the same entry (reclaimed from
        // a consumer that died) may run again, another may not.
        let (b, stream) = (&*self.broker, self.function.stream());
        let ttl = e.deadline_ms.saturating_sub(now_ms()) + LEASE_GRACE.as_millis() as u64;
        let mut take = redis::cmd("SET");
        take.arg(e.keys.taken())
            .arg(&e.entry_id)
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(ttl.max(1));
        // On the consumer's own connection: no hop through the broker's
        // async runtime on the request's path.
        let conn = &mut self.conn;
        let taken_by = open(b, conn).and_then(|c| {
            let taken_by = match take.query::<Value>(c).map_err(|e| b.down(e))? {
                Value::BulkString(first) if first != e.entry_id.as_bytes() => Some(first),
                _ => None,
            };
            if taken_by.is_some() {
                ack(stream, &e.entry_id)
                    .query::<()>(c)
                    .map_err(|e| b.down(e))?;
            }
            Ok(taken_by)
        });
        match taken_by {
            Ok(None) => Ok(Some(caller)),
            Ok(Some(first)) => {
                tracing::warn!(
                    stream, entry = %e.entry_id, id = %e.id, caller = %caller,
                    "dropping a replayed request: entry {} took its id first",
                    String::from_utf8_lossy(&first)
                );
                Ok(None)
            }
            Err(err) => {
                *conn = None;
                tracing::warn!(
                    stream,
                    "could not mark a request taken (it stays pending): {err}"
                );
                Ok(None)
            }
        }
    }

    /// Reads a large request's payload key on the consumer's connection.
    fn fetch_payload(&mut self, key: &str) -> Result<Option<Vec<u8>>, CallError> {
        let c = open(&self.broker, &mut self.conn)?;
        redis::cmd("GET")
            .arg(key)
            .query::<Option<Vec<u8>>>(c)
            .map_err(|e| self.broker.down(e))
    }

    /// Logs an answer's `EXEC` that failed (the request then stays pending,
    /// to be reclaimed) or whose commands partly failed.
    fn check_answer(&self, exec: Option<Value>) {
        let failure = match exec {
            Some(Value::Array(items)) => items.into_iter().find_map(|v| match v {
                Value::ServerError(e) => Some(e.to_string()),
                _ => None,
            }),
            Some(Value::ServerError(e)) => Some(e.to_string()),
            other => Some(format!("unexpected reply {other:?}")),
        };
        if let Some(failure) = failure {
            tracing::warn!(
                stream = self.function.stream(),
                "an answer was not stored in full (its request may be reclaimed): {failure}"
            );
        }
    }
}

/// The consumer's own connection, opened if it has none.
fn open<'c>(b: &Broker, conn: &'c mut Option<SyncConn>) -> Result<&'c mut SyncConn, CallError> {
    match conn {
        Some(c) => Ok(c),
        None => Ok(conn.insert(b.sync_conn(BROKER_OP_TIMEOUT)?)),
    }
}
