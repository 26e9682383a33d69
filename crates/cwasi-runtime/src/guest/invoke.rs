//! The one callee-side path, shared by the embedded transport and by every
//! server: take a warm instance armed with the call's depth, deadline and
//! span, copy the request straight into its memory, run the handler, copy
//! the response straight out, and pool the instance again or drop it.

use std::sync::Arc;

use super::function::Function;
use super::instance::{ResponseRange, WarmInstance};
use crate::call::{deliver, CallMeta, CallerIo};
use crate::config::Mode;
use crate::engine::GuestRunning;
use crate::error::CallError;
use crate::trace::{self, CallSpan};

/// Where a callee's request comes from and its response goes: the caller's
/// memory (embedded), a socket and shared region (local server), or the
/// broker's buffers (remote server).
pub(crate) trait Exchange {
    /// The request's length.
    fn request_len(&self) -> usize;
    /// Copies the request into `dst`, which is exactly that long.
    fn read_request(&mut self, dst: &mut [u8]) -> Result<(), CallError>;
    /// Hands the response over.
    fn write_response(&mut self, response: &[u8]) -> Result<(), CallError>;
    /// How the request came, where its mode has more than one way (for
    /// the callee's span).
    fn path(&self) -> Option<&'static str> {
        None
    }
    /// The request where it lies, when it can be read in place (a caller
    /// in this process): a component callee then takes it in one copy.
    fn request_in_place(&self) -> Option<&[u8]> {
        None
    }
    /// Hands over a response that is already a host buffer.
    fn write_response_owned(&mut self, response: Vec<u8>) -> Result<(), CallError> {
        self.write_response(&response)
    }
}

/// A caller in this process as an [`Exchange`].
pub(crate) struct CallerExchange<'a>(pub &'a mut dyn CallerIo);

impl Exchange for CallerExchange<'_> {
    fn request_len(&self) -> usize {
        self.0.request().len()
    }

    fn read_request(&mut self, dst: &mut [u8]) -> Result<(), CallError> {
        dst.copy_from_slice(self.0.request());
        Ok(())
    }

    fn write_response(&mut self, response: &[u8]) -> Result<(), CallError> {
        deliver(self.0, response)
    }

    fn request_in_place(&self) -> Option<&[u8]> {
        Some(self.0.request())
    }

    fn write_response_owned(&mut self, response: Vec<u8>) -> Result<(), CallError> {
        self.0.take_response(response)
    }
}

/// [`invoke`] for a call from another process that came in through `via`:
/// counted in the function's served calls and in-flight gauge.
pub(crate) fn serve_call(
    function: &Function,
    call: CallMeta,
    via: Mode,
    exchange: &mut dyn Exchange,
) -> Result<(), CallError> {
    let counted = function.served.enter(via);
    let result = invoke(function, call, via, exchange);
    if result.is_err() {
        counted.failed();
    }
    result
}

/// Runs one call of `function`, which came in by `via`: the whole
/// callee-side path, on this thread. It borrows the function, so a call
/// costs no reference count.
pub(crate) fn invoke(
    function: &Function,
    call: CallMeta,
    via: Mode,
    exchange: &mut dyn Exchange,
) -> Result<(), CallError> {
    let _running = GuestRunning::enter();
    let (span, call) = callee_span(function, call, via, &*exchange);
    let mut response_len = 0;
    let result = function.acquire(call).and_then(|mut instance| {
        let handled = match exchange.request_in_place() {
            Some(request) if instance.is_component() => instance
                .handle_request(request)
                .and_then(|range| check_response(function, &instance, range)),
            _ => place(&mut instance, exchange)
                .and_then(|request| run(function, &mut instance, request)),
        };
        let result = handled.and_then(|range| {
            response_len = range.len;
            deliver_response(&mut instance, range, exchange)
        });
        function.release(instance, result.as_ref().map(|_| ()));
        result
    });
    if let Some(span) = span {
        span.end(response_len, result.as_ref().map(|_| ()));
    }
    result
}

/// The callee's span, if this process traces, and the call re-armed under
/// it, so that the calls the guest makes are its children: a guest with no
/// tracing of its own still appears in the trace.
fn callee_span(
    function: &Function,
    call: CallMeta,
    via: Mode,
    exchange: &dyn Exchange,
) -> (Option<CallSpan>, CallMeta) {
    if !trace::active() {
        return (None, call);
    }
    let span = CallSpan::server(
        &call.trace,
        &function.spec.name,
        &function.spec.namespace,
        via,
        exchange.path(),
        call.depth,
        exchange.request_len(),
    );
    let call = span.as_ref().map_or(call, |s| call.traced(s.context()));
    (span, call)
}

/// Copies the request into the instance; returns where it lies.
fn place(
    instance: &mut WarmInstance,
    exchange: &mut dyn Exchange,
) -> Result<(usize, usize), CallError> {
    let len = exchange.request_len();
    let (ptr, dst) = instance.request_buffer(len)?;
    exchange.read_request(dst)?;
    Ok((ptr, len))
}

/// Runs the handler on the request placed at `request`; the response stays
/// in the callee's memory until delivered.
fn run(
    function: &Function,
    instance: &mut WarmInstance,
    (ptr, len): (usize, usize),
) -> Result<ResponseRange, CallError> {
    let range = instance.handle(ptr, len)?;
    check_response(function, instance, range)
}

/// The response at `range`, if it is within the payload limit.
fn check_response(
    function: &Function,
    instance: &WarmInstance,
    range: ResponseRange,
) -> Result<ResponseRange, CallError> {
    let max = function.limits().max_payload_bytes;
    if range.len > max {
        // A range outside the memory is the worse fault: report that one.
        instance.response(range)?;
        return Err(CallError::too_large("response", range.len, max));
    }
    Ok(range)
}

/// Copies the response at `range` out of the callee's memory, or hands a
/// component's response buffer over.
fn deliver_response(
    instance: &mut WarmInstance,
    range: ResponseRange,
    exchange: &mut dyn Exchange,
) -> Result<(), CallError> {
    match instance.take_response() {
        Some(response) => exchange.write_response_owned(response),
        None => exchange.write_response(instance.response(range)?),
    }
}

/// One call in progress in one instance, step by step, for a started call
/// whose handler runs on another thread than the one that placed its
/// request (so it owns its function).
pub(crate) struct Invocation {
    function: Arc<Function>,
    instance: Box<WarmInstance>,
    request: (usize, usize),
    span: Option<CallSpan>,
}

impl Invocation {
    /// Takes an instance armed for `call`, which came in by `via`, and
    /// copies the request into it.
    pub fn begin(
        function: &Arc<Function>,
        call: CallMeta,
        via: Mode,
        exchange: &mut dyn Exchange,
    ) -> Result<Invocation, CallError> {
        let _running = GuestRunning::enter();
        let (span, call) = callee_span(function, call, via, &*exchange);
        let placed =
            function
                .acquire(call)
                .and_then(|mut instance| match place(&mut instance, exchange) {
                    Ok(request) => Ok((instance, request)),
                    Err(e) => {
                        function.release(instance, Err(&e));
                        Err(e)
                    }
                });
        match placed {
            Ok((instance, request)) => Ok(Invocation {
                function: function.clone(),
                instance,
                request,
                span,
            }),
            Err(e) => {
                if let Some(span) = span {
                    span.end(0, Err(&e));
                }
                Err(e)
            }
        }
    }

    /// Runs the handler on the request.
    pub fn run(&mut self) -> Result<ResponseRange, CallError> {
        run(&self.function, &mut self.instance, self.request)
    }

    /// Copies the response out of the callee's memory.
    pub fn deliver(
        &mut self,
        range: ResponseRange,
        exchange: &mut dyn Exchange,
    ) -> Result<(), CallError> {
        deliver_response(&mut self.instance, range, exchange)
    }

    /// Ends the call, whose response was `response_len` bytes: pools the
    /// instance again if `outcome` leaves it in a known state.
    pub fn finish(self, response_len: usize, outcome: Result<(), &CallError>) {
        self.function.release(self.instance, outcome);
        if let Some(span) = self.span {
            span.end(response_len, outcome);
        }
    }
}
