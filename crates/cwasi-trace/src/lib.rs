//! OpenTelemetry export of CWASI's call spans, for the binaries (`cwasi`,
//! the shim, the benchmarks). The runtime makes a span of every call once a
//! tracer is installed ([`cwasi_runtime::trace::install_tracer`]); this
//! crate builds that tracer from the standard OpenTelemetry settings and
//! sends the spans to an OTLP collector over HTTP (`http/protobuf`).
//!
//! Nothing is exported, and the runtime's spans cost one atomic load per
//! call, unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.
//!
//! ```no_run
//! # fn main() -> Result<(), cwasi_trace::TraceError> {
//! // Keep the export alive for as long as calls are made: dropping it
//! // sends what is still buffered.
//! let _export = cwasi_trace::TraceExport::from_env("cwasi")?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

use std::time::Duration;

use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

/// The standard setting that turns export on: the collector's base URL
/// (`/v1/traces` is appended).
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The standard per-signal setting: the full URL of the traces endpoint.
pub const TRACES_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The standard setting of the service name spans are reported under.
pub const SERVICE_NAME_VAR: &str = "OTEL_SERVICE_NAME";
/// The standard setting of the OTLP protocol: only `http/protobuf` is
/// built in.
pub const PROTOCOL_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];
/// How long dropping the export waits for buffered spans to be sent.
/// Spans are best-effort: a collector that does not answer must not hold
/// up the exit of `cwasi call` or `cwasi run`, nor outlast the 5 s a
/// stopping `cwasi run` gives its served children before it kills them.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(500);
/// The instrumentation scope the spans are reported under.
pub const SCOPE: &str = "cwasi";

/// Why spans cannot be exported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// A setting has a value that cannot be used.
    #[error("{var}={value:?}: {reason}")]
    Setting {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The OTLP exporter could not be built (for example, a malformed
    /// endpoint URL).
    #[error("cannot export traces: {0}")]
    Exporter(String),
    /// This process installed a tracer already.
    #[error("a tracer is installed already")]
    AlreadyInstalled,
}

/// The export of this process's call spans. Dropping it sends the spans
/// still buffered (waiting up to [`SHUTDOWN_TIMEOUT`]).
#[derive(Debug)]
pub struct TraceExport {
    provider: SdkTracerProvider,
}

impl TraceExport {
    /// Exports as the standard settings in this process's environment
    /// say; see [`TraceExport::from_vars`].
    pub fn from_env(service: &str) -> Result<Option<TraceExport>, TraceError> {
        Self::from_vars(&|k| std::env::var(k).ok(), service)
    }

    /// Exports as the standard settings that `var` looks up say (a
    /// container's env, for the shim), if an endpoint is set
    /// ([`TRACES_ENDPOINT_VAR`] as it is, else [`ENDPOINT_VAR`] with
    /// `/v1/traces` appended); `None` when neither is. Spans are reported
    /// under [`SERVICE_NAME_VAR`], or `service` when that is unset. The
    /// batch settings (`OTEL_BSP_*`) and the headers
    /// (`OTEL_EXPORTER_OTLP_HEADERS`) are read from the process's
    /// environment, as the SDK does.
    pub fn from_vars(
        var: &dyn Fn(&str) -> Option<String>,
        service: &str,
    ) -> Result<Option<TraceExport>, TraceError> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let url = match (set(TRACES_ENDPOINT_VAR), set(ENDPOINT_VAR)) {
            (Some(url), _) => url,
            (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        for name in PROTOCOL_VARS {
            if let Some(v) = set(name).filter(|v| v != "http/protobuf") {
                return Err(TraceError::Setting {
                    var: name,
                    value: v,
                    reason: "only http/protobuf is supported",
                });
            }
        }
        let service = set(SERVICE_NAME_VAR).unwrap_or_else(|| service.to_string());
        Self::to_url(&url, &service).map(Some)
    }

    /// Exports to the traces endpoint `url` (the full URL, such as
    /// `http://collector:4318/v1/traces`) under the service name
    /// `service`, whatever the environment says, and installs the tracer.
    pub fn to_url(url: &str, service: &str) -> Result<TraceExport, TraceError> {
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(TraceError::Setting {
                var: TRACES_ENDPOINT_VAR,
                value: url.to_string(),
                reason: "expected an http:// or https:// URL",
            });
        }
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .build()
            .map_err(|e| TraceError::Exporter(e.to_string()))?;
        let resource = Resource::builder()
            .with_service_name(service.to_string())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = BoxedTracer::new(Box::new(provider.tracer(SCOPE)));
        if !cwasi_runtime::trace::install_tracer(tracer) {
            let _ = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT);
            return Err(TraceError::AlreadyInstalled);
        }
        tracing::debug!(url, service, "exporting call spans over OTLP");
        Ok(TraceExport { provider })
    }

    /// Sends the spans buffered so far, and waits for that.
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!("cannot send the call spans: {e}");
        }
    }
}

impl Drop for TraceExport {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            tracing::warn!("cannot send the last call spans: {e}");
        }
    }
}
