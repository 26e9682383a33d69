//! Embedded mode: the callee runs in this process, on the same engine, in its
//! own store, through the callee-side path of `guest::invoke`. The payload
//! moves from the caller's memory straight into the callee's, and the
//! response straight back: one copy each way. There is no server: the client
//! is the whole path.

use std::sync::mpsc;
use std::sync::{Arc, Weak};

use super::{PendingCall, Transport};
use crate::call::{admit, deliver, CallMeta, CallerIo, VecIo};
use crate::config::Mode;
use crate::deadline::ANSWER_GRACE;
use crate::error::{CallError, ErrorCode};
use crate::guest::function::Function;
use crate::guest::instance::ResponseRange;
use crate::guest::invoke::{invoke, CallerExchange, Invocation};
use crate::identity::CallerIdentity;
use crate::native_stack::{has_room_for_a_call, NESTED_STACK_SIZE};

/// Calls a function loaded in this process.
pub(crate) struct EmbeddedClient {
    callee: Callee,
    name: String,
    /// Who calls through this client: the callee's policy admits it on
    /// every call.
    caller: Arc<CallerIdentity>,
}

/// How a client holds its callee.
enum Callee {
    /// Weakly, for a route that lives in an instance of another function:
    /// a strong link would let two functions that call each other keep each
    /// other alive.
    Weak(Weak<Function>),
    /// Strongly, for a route of the host's own calls. Nothing a function
    /// owns holds such a route, so there is no cycle, and a call costs no
    /// upgrade.
    Held(Arc<Function>),
}

impl EmbeddedClient {
    /// A client of `function` for a route of another function's.
    pub fn new(function: &Arc<Function>, caller: Arc<CallerIdentity>) -> EmbeddedClient {
        EmbeddedClient {
            callee: Callee::Weak(Arc::downgrade(function)),
            name: function.spec.name.clone(),
            caller,
        }
    }

    /// A client of `function` for a route of the host's.
    pub fn held(function: &Arc<Function>, caller: Arc<CallerIdentity>) -> EmbeddedClient {
        EmbeddedClient {
            callee: Callee::Held(function.clone()),
            name: function.spec.name.clone(),
            caller,
        }
    }

    /// Runs `f` with the callee, if it is still loaded.
    fn with_function<R>(
        &self,
        f: impl FnOnce(&Arc<Function>) -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        match &self.callee {
            Callee::Held(function) => f(function),
            Callee::Weak(weak) => match weak.upgrade() {
                Some(function) => f(&function),
                None => Err(CallError::new(
                    ErrorCode::Transport,
                    format!(
                        "'{}' is no longer loaded (its runtime shut down)",
                        self.name
                    ),
                )),
            },
        }
    }
}

impl EmbeddedClient {
    /// Runs a call on a thread of its own with a fresh stack, for a chain
    /// of nested calls that has used up this thread's (`native_stack.rs`).
    /// The caller's memory belongs to this thread, so the request is copied
    /// out first and the response in after: two more copies, at the depths
    /// where this happens.
    fn invoke_on_fresh_stack(
        &self,
        function: &Function,
        call: CallMeta,
        io: &mut dyn CallerIo,
    ) -> Result<(), CallError> {
        tracing::debug!(callee = %self.name, depth = call.depth, "nested call moves to a fresh stack");
        let request = io.request().to_vec();
        let response = std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name(format!("cwasi-nested-{}", self.name))
                .stack_size(NESTED_STACK_SIZE)
                .spawn_scoped(scope, || {
                    let mut own = VecIo {
                        request: &request,
                        response: Vec::new(),
                    };
                    invoke(
                        function,
                        call,
                        Mode::Embedded,
                        &mut CallerExchange(&mut own),
                    )
                    .map(|()| own.response)
                })
                .map_err(|e| {
                    CallError::new(
                        ErrorCode::ResourceLimit,
                        format!("cannot start a thread for a nested call: {e}"),
                    )
                })?;
            worker.join().unwrap_or_else(|_| {
                Err(CallError::new(
                    ErrorCode::CalleeTrapped,
                    format!("the nested call of '{}' panicked", self.name),
                ))
            })
        })?;
        deliver(io, &response)
    }
}

impl Transport for EmbeddedClient {
    fn call(&self, io: &mut dyn CallerIo, call: &CallMeta) -> Result<(), CallError> {
        self.with_function(|function| {
            admit(&self.caller, &function.spec)?;
            if has_room_for_a_call() {
                invoke(function, *call, Mode::Embedded, &mut CallerExchange(io))
            } else {
                self.invoke_on_fresh_stack(function, *call, io)
            }
        })
    }

    fn start(
        &self,
        io: &mut dyn CallerIo,
        call: &CallMeta,
    ) -> Result<Box<dyn PendingCall>, CallError> {
        // The request is copied in on the caller's thread, so the caller may
        // reuse its buffer at once; the handler runs on a worker.
        let mut invocation = self.with_function(|function| {
            admit(&self.caller, &function.spec)?;
            Invocation::begin(function, *call, Mode::Embedded, &mut CallerExchange(io))
        })?;
        let (tx, rx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(format!("cwasi-call-{}", self.name))
            .spawn(move || {
                let result = invocation.run();
                let _ = tx.send((invocation, result));
            })
            .map_err(|e| {
                CallError::new(
                    ErrorCode::ResourceLimit,
                    format!("cannot start a worker thread: {e}"),
                )
            })?;
        Ok(Box::new(EmbeddedPending {
            name: self.name.clone(),
            call: *call,
            rx,
        }))
    }
}

type WorkerResult = (Invocation, Result<ResponseRange, CallError>);

struct EmbeddedPending {
    name: String,
    call: CallMeta,
    rx: mpsc::Receiver<WorkerResult>,
}

impl PendingCall for EmbeddedPending {
    fn wait(self: Box<Self>, io: &mut dyn CallerIo) -> Result<(), CallError> {
        let (mut invocation, result) = self
            .rx
            .recv_timeout(self.call.deadline.remaining() + ANSWER_GRACE)
            .map_err(|_| {
                CallError::new(
                    ErrorCode::Timeout,
                    format!("callee '{}' did not answer within its deadline", self.name),
                )
            })?;
        let response_len = result.as_ref().map_or(0, |range| range.len);
        let result = result.and_then(|range| invocation.deliver(range, &mut CallerExchange(io)));
        invocation.finish(response_len, result.as_ref().map(|_| ()));
        result
    }
}
