use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;
use std::time::Duration;

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::classify::{ErrorClass, ErrorType, Verdict};
use crate::hash::OwnKeys;
use crate::jsonrpc::McpMethod;
use crate::parts::Namespace;
use crate::trace::TraceId;

/// Histogram buckets in seconds, from 0.5 ms to 60 s; 0.5 s is a bucket edge for the latency SLO.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: McpMethod,
    namespace: Namespace,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: McpMethod,
    namespace: Namespace,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error_type: &'static str,
    component: &'static str,
    severity: &'static str,
    http_status: u16,
    retryable: bool,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorDurationLabels {
    error_type: &'static str,
    component: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecoveryLabels {
    error_type: &'static str,
    mechanism: RecoveryMechanism,
}

/// How a failure was recovered from.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RecoveryMechanism {
    /// A retry succeeded.
    Retry,
    /// A backend process was restarted.
    Restart,
    /// A connection to a backend was made again.
    Reconnect,
}

impl EncodeLabelValue for RecoveryMechanism {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        fmt::Write::write_str(
            encoder,
            match self {
                RecoveryMechanism::Retry => "retry",
                RecoveryMechanism::Restart => "restart",
                RecoveryMechanism::Reconnect => "reconnect",
            },
        )
    }
}

/// The exemplar label: the trace id, hex-encoded without allocating.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct TraceExemplar(TraceId);

impl EncodeLabelSet for TraceExemplar {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), fmt::Error> {
        let bytes = self.0.to_bytes();
        let mut hex = [0u8; 32];
        for (i, b) in bytes.iter().enumerate() {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            hex[2 * i] = DIGITS[usize::from(b >> 4)];
            hex[2 * i + 1] = DIGITS[usize::from(b & 15)];
        }
        let hex = std::str::from_utf8(&hex).map_err(|_| fmt::Error)?;
        prometheus_client::encoding::EncodeLabel::encode(&("trace_id", hex), encoder.encode_label())
    }
}

/// The request metrics, registered once and shared (cheap to clone) by every layer that records.
#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    // One reference count per clone: a per-request service stack clones it.
    inner: std::sync::Arc<MetricsInner>,
}

/// The two series every finished request records: its duration and its count.
type RequestSeries = (HistogramWithExemplars<TraceExemplar>, Counter);

/// Both series of a request by (method, namespace, status): keys no client chooses (methods are
/// an enum, namespaces come from configuration and statuses are static).
type SeriesCache = HashMap<(McpMethod, Namespace, &'static str), RequestSeries, OwnKeys>;

#[derive(Debug)]
struct MetricsInner {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, HistogramWithExemplars<TraceExemplar>>,
    /// Both series of a request by (method, namespace, status), handles into the two families:
    /// one cheap lookup where the families' maps take two under SipHash. As bounded as they are.
    series: RwLock<SeriesCache>,
    errors: Family<ErrorLabels, Counter>,
    error_duration: Family<ErrorDurationLabels, Histogram>,
    in_flight: Gauge,
    recovery: Family<RecoveryLabels, Counter>,
}

impl GatewayMetrics {
    /// Registers the request metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = MetricsInner {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                HistogramWithExemplars::new(LATENCY_BUCKETS.into_iter())
            }),
            errors: Family::default(),
            error_duration: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            in_flight: Gauge::default(),
            recovery: Family::default(),
            series: RwLock::default(),
        };
        registry.register(
            "gateway_requests",
            "JSON-RPC requests by MCP method, namespace and outcome (ok or the error type)",
            metrics.requests.clone(),
        );
        registry.register(
            "gateway_request_duration_seconds",
            "Time from request to the end of its response, by MCP method and namespace",
            metrics.duration.clone(),
        );
        registry.register(
            "gateway_errors",
            "Failed requests by error type, component, severity, HTTP status and retryability",
            metrics.errors.clone(),
        );
        registry.register(
            "gateway_error_handling_duration_seconds",
            "Time from request to the end of its error response, for failed requests",
            metrics.error_duration.clone(),
        );
        registry.register(
            "gateway_requests_in_flight",
            "Requests being handled now",
            metrics.in_flight.clone(),
        );
        registry.register(
            "gateway_error_recovery",
            "Failures recovered from, by error type and mechanism (retry, restart, reconnect)",
            metrics.recovery.clone(),
        );
        GatewayMetrics {
            inner: std::sync::Arc::new(metrics),
        }
    }

    /// Counts a failure of `error_type` recovered from by `mechanism`.
    pub fn record_recovery(&self, error_type: ErrorType, mechanism: RecoveryMechanism) {
        self.inner
            .recovery
            .get_or_create(&RecoveryLabels {
                error_type: error_type.as_str(),
                mechanism,
            })
            .inc();
    }

    pub(crate) fn in_flight(&self) -> &Gauge {
        &self.inner.in_flight
    }

    /// Records one finished request (the metrics layer calls this; a frontend calls it for a
    /// request it refused before any layer saw it). `exemplar` is the trace id to link the
    /// latency sample to: only a sampled (exported) trace's, or an exemplar links to nothing.
    pub fn record(
        &self,
        method: McpMethod,
        namespace: Namespace,
        verdict: Verdict,
        elapsed: Duration,
        exemplar: Option<TraceId>,
    ) {
        let seconds = elapsed.as_secs_f64();
        let key = (method, namespace, verdict.status_label());
        let record = |(duration, count): &RequestSeries| {
            duration.observe(seconds, exemplar.map(TraceExemplar), None);
            count.inc();
        };
        let known = self
            .inner
            .series
            .read()
            .map(|series| series.get(&key).map(record));
        if !matches!(known, Ok(Some(()))) {
            let (method, namespace, status) = key;
            let series = (
                self.inner
                    .duration
                    .get_or_create(&RouteLabels { method, namespace })
                    .clone(),
                self.inner
                    .requests
                    .get_or_create(&RequestLabels {
                        method,
                        namespace,
                        status,
                    })
                    .clone(),
            );
            record(&series);
            if let Ok(mut cache) = self.inner.series.write() {
                cache.insert(key, series);
            }
        }
        if let Verdict::Failure(class) = verdict {
            self.record_error(&class, seconds);
        }
    }

    fn record_error(&self, class: &ErrorClass, seconds: f64) {
        self.inner
            .errors
            .get_or_create(&ErrorLabels {
                error_type: class.error_type.as_str(),
                component: class.component.as_str(),
                severity: class.severity.as_str(),
                http_status: class.http_status.as_u16(),
                retryable: class.retryable,
            })
            .inc();
        self.inner
            .error_duration
            .get_or_create(&ErrorDurationLabels {
                error_type: class.error_type.as_str(),
                component: class.component.as_str(),
            })
            .observe(seconds);
    }
}
