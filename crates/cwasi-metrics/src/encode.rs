//! The snapshot a scrape reads and its OpenMetrics text.

use std::fmt;
use std::sync::Arc;

use cwasi_runtime::{FunctionReport, HopReport, Runtime, ServeHandle, LATENCY_BUCKETS_SECONDS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// What one scrape reports: the runtime's edges and functions, and the
/// broker backlog of each function served through a broker.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Caller-side counters, per edge (`Runtime::hops`).
    pub hops: Vec<HopReport>,
    /// Callee-side counters and pools (`Runtime::functions`).
    pub functions: Vec<FunctionReport>,
    /// Pending entries of served functions' broker streams.
    pub pending: Vec<StreamBacklog>,
}

impl Snapshot {
    /// What `runtime` reports now, with the broker backlog of each function
    /// it serves through `served`.
    pub fn of(runtime: &Runtime, served: &[&ServeHandle]) -> Snapshot {
        let pending = served
            .iter()
            .filter_map(|h| {
                let result = h.broker_pending()?;
                let record = h.record();
                if let Err(e) = &result {
                    tracing::warn!(function = %record.name, error = %e, "metrics: no broker backlog");
                }
                Some(StreamBacklog {
                    function: record.name.clone(),
                    namespace: record.namespace.clone(),
                    pending: result.ok(),
                })
            })
            .collect();
        Snapshot {
            hops: runtime.hops(),
            functions: runtime.functions(),
            pending,
        }
    }
}

/// The backlog of one served function's broker stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamBacklog {
    /// The function.
    pub function: String,
    /// Its trust domain.
    pub namespace: String,
    /// Entries delivered to a consumer and not yet answered; `None` when
    /// the broker could not be asked (the sample is then left out).
    pub pending: Option<u64>,
}

/// Writes `snapshot` in the OpenMetrics text format (what `/metrics`
/// answers).
pub fn encode(snapshot: Snapshot) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Once(Arc::new(snapshot))));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// A collector of one snapshot.
#[derive(Debug)]
struct Once(Arc<Snapshot>);

type Labels = Vec<(&'static str, String)>;

fn edge(h: &HopReport) -> Labels {
    vec![
        ("caller", h.caller.clone()),
        ("callee", h.target.clone()),
        ("mode", h.mode.name().to_string()),
    ]
}

fn function(name: &str, namespace: &str) -> Labels {
    vec![
        ("function", name.to_string()),
        ("namespace", namespace.to_string()),
    ]
}

/// One metric family: its descriptor, then one sample per label set.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric_type: MetricType,
    samples: impl IntoIterator<Item = (Labels, M)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, unit, metric_type)?;
    for (labels, metric) in samples {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A histogram of call latencies, from a route's buckets.
#[derive(Debug)]
struct Latency<'a>(&'a HopReport);

impl EncodeMetric for Latency<'_> {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        let h = self.0;
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_SECONDS
            .iter()
            .copied()
            .zip(h.latency_buckets.iter().copied())
            .collect();
        let within: u64 = buckets.iter().map(|(_, n)| n).sum();
        buckets.push((f64::INFINITY, h.timed.saturating_sub(within)));
        encoder.encode_histogram::<NoLabelSet>(h.total.as_secs_f64(), h.timed, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// One counter per served function and mode: `pick` takes the calls or the
/// failures.
fn served(
    s: &Snapshot,
    pick: fn(u64, u64) -> u64,
) -> impl Iterator<Item = (Labels, ConstCounter<u64>)> + '_ {
    s.functions.iter().flat_map(move |f| {
        f.served.iter().map(move |&(mode, calls, failures)| {
            let mut labels = function(&f.name, &f.namespace);
            labels.push(("mode", mode.name().to_string()));
            (labels, ConstCounter::new(pick(calls, failures)))
        })
    })
}

impl Collector for Once {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let s = &*self.0;
        let counter = |n: u64| ConstCounter::new(n);
        family(
            &mut e,
            "cwasi_calls",
            "Calls made, per edge (caller, callee) and mode.",
            None,
            MetricType::Counter,
            s.hops.iter().map(|h| (edge(h), counter(h.calls))),
        )?;
        family(
            &mut e,
            "cwasi_call_failures",
            "Calls that failed, per edge, mode and ABI error code.",
            None,
            MetricType::Counter,
            s.hops.iter().flat_map(|h| {
                h.failures_by_code.iter().map(move |(code, n)| {
                    let mut labels = edge(h);
                    labels.push(("code", code.name().to_string()));
                    (labels, counter(*n))
                })
            }),
        )?;
        family(
            &mut e,
            "cwasi_call_request",
            "Request bytes sent, per edge and mode.",
            Some(&Unit::Bytes),
            MetricType::Counter,
            s.hops.iter().map(|h| (edge(h), counter(h.bytes_in))),
        )?;
        family(
            &mut e,
            "cwasi_call_response",
            "Response bytes received, per edge and mode.",
            Some(&Unit::Bytes),
            MetricType::Counter,
            s.hops.iter().map(|h| (edge(h), counter(h.bytes_out))),
        )?;
        family(
            &mut e,
            "cwasi_call_duration",
            "Latency of calls as the caller saw them, per edge and mode; embedded calls are \
             sampled (one in eight), every other call is timed.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
            s.hops.iter().map(|h| (edge(h), Latency(h))),
        )?;
        family(
            &mut e,
            "cwasi_served_calls",
            "Calls a served function ran for other processes, by the mode they came through.",
            None,
            MetricType::Counter,
            served(s, |calls, _| calls),
        )?;
        family(
            &mut e,
            "cwasi_served_call_failures",
            "Served calls that failed, by mode.",
            None,
            MetricType::Counter,
            served(s, |_, failures| failures),
        )?;
        let gauge = |n: u64| ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
        family(
            &mut e,
            "cwasi_in_flight_calls",
            "Calls from other processes a function is running now.",
            None,
            MetricType::Gauge,
            s.functions
                .iter()
                .map(|f| (function(&f.name, &f.namespace), gauge(f.in_flight))),
        )?;
        family(
            &mut e,
            "cwasi_pooled_instances",
            "Warm instances waiting in a function's pool.",
            None,
            MetricType::Gauge,
            s.functions.iter().map(|f| {
                let n = u64::try_from(f.pooled_instances).unwrap_or(u64::MAX);
                (function(&f.name, &f.namespace), gauge(n))
            }),
        )?;
        family(
            &mut e,
            "cwasi_broker_pending_entries",
            "Entries of a served function's broker stream delivered to a consumer of the \
             cwasi group and not yet answered.",
            None,
            MetricType::Gauge,
            s.pending
                .iter()
                .filter_map(|b| Some((function(&b.function, &b.namespace), gauge(b.pending?)))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_snapshot_is_valid_openmetrics() {
        let text = encode(Snapshot::default()).unwrap();
        assert!(text.contains("# TYPE cwasi_calls counter"), "{text}");
        assert!(
            text.contains("# TYPE cwasi_call_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("# UNIT cwasi_call_request_bytes bytes"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_backlog_that_could_not_be_read_is_left_out() {
        let snapshot = Snapshot {
            pending: vec![
                StreamBacklog {
                    function: "echo".into(),
                    namespace: "a".into(),
                    pending: Some(3),
                },
                StreamBacklog {
                    function: "other".into(),
                    namespace: "a".into(),
                    pending: None,
                },
            ],
            ..Snapshot::default()
        };
        let text = encode(snapshot).unwrap();
        assert!(
            text.contains("cwasi_broker_pending_entries{function=\"echo\",namespace=\"a\"} 3"),
            "{text}"
        );
        assert!(!text.contains("function=\"other\""), "{text}");
    }
}
