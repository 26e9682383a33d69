//! Distributed tracing of calls: the W3C trace context that travels with
//! every call in all modes ([`TraceContext`]), and the spans a call makes
//! when a binary has installed a tracer ([`install_tracer`]). The runtime
//! depends on the OpenTelemetry API only; the SDK and the OTLP exporter
//! belong to the binaries (`cwasi-trace`).

mod context;
mod span;

pub use context::{TraceContext, TRACE_CONTEXT_LEN};
pub(crate) use span::{active, CallSpan};
pub use span::{install_tracer, set_tracing_paused, tracing_enabled};
