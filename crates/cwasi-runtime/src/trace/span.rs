//! The spans calls make, through the process's one tracer. Without one (the
//! default), starting a span is one atomic load that finds nothing, and a
//! call's trace context passes through unchanged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};

use super::TraceContext;
use crate::config::Mode;
use crate::error::CallError;

/// The tracer every span of this process goes to, once installed.
static TRACER: OnceLock<BoxedTracer> = OnceLock::new();

/// Installs the tracer that every call's spans go to, for the rest of the
/// process. A binary calls this once, when an exporter is configured
/// (`cwasi-trace` does it from `OTEL_EXPORTER_OTLP_ENDPOINT`); a library
/// never does. Returns `false`, and changes nothing, if one was installed
/// before.
pub fn install_tracer(tracer: BoxedTracer) -> bool {
    TRACER.set(tracer).is_ok()
}

/// Set while span making is paused.
static PAUSED: AtomicBool = AtomicBool::new(false);

/// Whether a tracer is installed.
pub fn tracing_enabled() -> bool {
    TRACER.get().is_some()
}

/// Pauses span making (`true`) or resumes it, without uninstalling the
/// tracer: while paused, calls pass their trace context through as if no
/// tracer were installed. Benchmarks use it to compare both in one process.
pub fn set_tracing_paused(paused: bool) {
    PAUSED.store(paused, Ordering::Relaxed);
}

/// Whether spans are being made: a tracer is installed and not paused.
/// Lets a caller skip gathering a span's attributes.
#[inline]
pub(crate) fn active() -> bool {
    tracer().is_some()
}

/// The tracer, unless none is installed or span making is paused.
#[inline]
fn tracer() -> Option<&'static BoxedTracer> {
    let tracer = TRACER.get()?;
    (!PAUSED.load(Ordering::Relaxed)).then_some(tracer)
}

/// Attribute keys of the spans, as `docs/operations.md` lists them.
pub(crate) mod attr {
    /// The calling function (client spans).
    pub const CALLER: &str = "cwasi.caller";
    /// The called function (client spans).
    pub const CALLEE: &str = "cwasi.callee";
    /// The function that ran (server spans).
    pub const FUNCTION: &str = "cwasi.function";
    /// Its namespace (server spans).
    pub const NAMESPACE: &str = "cwasi.namespace";
    /// The mode: the route's (client) or the one the call came in by
    /// (server).
    pub const MODE: &str = "cwasi.mode";
    /// How the payload travelled, where a mode has more than one way.
    pub const PATH: &str = "cwasi.path";
    /// The call depth the callee ran at.
    pub const DEPTH: &str = "cwasi.depth";
    /// Request bytes.
    pub const REQUEST_BYTES: &str = "cwasi.request.bytes";
    /// Response bytes.
    pub const RESPONSE_BYTES: &str = "cwasi.response.bytes";
    /// 0, or the ABI error code the call ended with.
    pub const CODE: &str = "cwasi.code";
}

/// One span of a call, ended with its outcome.
pub(crate) struct CallSpan {
    span: BoxedSpan,
    context: TraceContext,
}

impl CallSpan {
    /// The caller's span of a call from `caller` to `callee` by `mode`,
    /// under `parent`; `None` without a tracer, or when the parent's trace
    /// is not sampled.
    pub fn client(
        parent: &TraceContext,
        caller: &str,
        callee: &str,
        mode: Mode,
        request_len: usize,
    ) -> Option<CallSpan> {
        start(parent, || {
            let attributes = attributes([
                KeyValue::new(attr::CALLER, caller.to_string()),
                KeyValue::new(attr::CALLEE, callee.to_string()),
                KeyValue::new(attr::MODE, mode.name()),
                KeyValue::new(attr::REQUEST_BYTES, request_len as i64),
            ]);
            (format!("call {callee}"), SpanKind::Client, attributes)
        })
    }

    /// The callee's span of `function` in `namespace`, running a call of
    /// `request_len` bytes at `depth` that came in by `via` (and `path`,
    /// where the mode has several), under `parent`. An embedded callee's
    /// span is internal to the process; a served one's is a server span.
    pub fn server(
        parent: &TraceContext,
        function: &str,
        namespace: &str,
        via: Mode,
        path: Option<&'static str>,
        depth: u32,
        request_len: usize,
    ) -> Option<CallSpan> {
        start(parent, || {
            let mut attributes = attributes([
                KeyValue::new(attr::FUNCTION, function.to_string()),
                KeyValue::new(attr::NAMESPACE, namespace.to_string()),
                KeyValue::new(attr::MODE, via.name()),
                KeyValue::new(attr::DEPTH, i64::from(depth)),
                KeyValue::new(attr::REQUEST_BYTES, request_len as i64),
            ]);
            if let Some(path) = path {
                attributes.push(KeyValue::new(attr::PATH, path));
            }
            let kind = match via {
                Mode::Embedded => SpanKind::Internal,
                _ => SpanKind::Server,
            };
            (function.to_string(), kind, attributes)
        })
    }

    /// The span of an entry's run (`cwasi run`): the root of its calls.
    pub fn entry(function: &str) -> Option<CallSpan> {
        start(&TraceContext::NONE, || {
            let attributes = attributes([KeyValue::new(attr::FUNCTION, function.to_string())]);
            (format!("run {function}"), SpanKind::Internal, attributes)
        })
    }

    /// What a call made under this span carries: this span as the parent.
    pub fn context(&self) -> TraceContext {
        self.context
    }

    /// Ends the span with the response's size and the call's outcome.
    pub fn end(mut self, response_len: usize, outcome: Result<(), &CallError>) {
        self.span
            .set_attribute(KeyValue::new(attr::RESPONSE_BYTES, response_len as i64));
        self.end_with(outcome);
    }

    /// Ends the span with the call's outcome alone.
    pub fn end_with(mut self, outcome: Result<(), &CallError>) {
        let code = match outcome {
            Ok(()) => 0,
            Err(e) => {
                self.span.set_status(Status::error(e.to_string()));
                e.code.as_raw()
            }
        };
        self.span
            .set_attribute(KeyValue::new(attr::CODE, i64::from(code)));
        self.span.end();
    }
}

/// The attributes a span starts with, with room for the two it ends with
/// (so that ending it does not grow the list).
fn attributes<const N: usize>(first: [KeyValue; N]) -> Vec<KeyValue> {
    let mut v = Vec::with_capacity(N + 3);
    v.extend(first);
    v
}

/// Starts a span under `parent` (a new trace if it is not valid), named and
/// described by `describe`; `None` without a tracer, or if the parent says
/// its trace is not sampled (its context then travels on unchanged). Both
/// are decided before `describe` allocates anything.
fn start(
    parent: &TraceContext,
    describe: impl FnOnce() -> (String, SpanKind, Vec<KeyValue>),
) -> Option<CallSpan> {
    let tracer = tracer()?;
    let parent_cx = if parent.is_valid() {
        if !parent.is_sampled() {
            return None;
        }
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(parent.trace_id),
            SpanId::from_bytes(parent.span_id),
            TraceFlags::new(parent.flags),
            true,
            TraceState::NONE,
        ))
    } else {
        Context::new()
    };
    let (name, kind, attributes) = describe();
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent_cx);
    let sc = span.span_context();
    let context = TraceContext {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
        flags: sc.trace_flags().to_u8(),
    };
    Some(CallSpan { span, context })
}
