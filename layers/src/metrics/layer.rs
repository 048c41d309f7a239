use std::sync::Arc;

use tower::Layer;

use super::{GatewayMetrics, Metrics, RequestLogSink};

/// Records request metrics; see the [module docs](super).
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    /// Shared by every service the layer makes (one allocation, not one per service).
    recorder: Arc<Recorder>,
}

/// Whether the layer logs each request: as a `tracing` event (`On(None)`), or handed to a sink
/// of the caller's.
#[derive(Debug, Clone, Default)]
pub(super) enum RequestLogging {
    #[default]
    Off,
    On(Option<Arc<dyn RequestLogSink>>),
}

/// What every request's [`Completion`](super::body::Completion) records into and logs to:
/// one reference for each request to take, where one for each part was two atomic operations
/// apiece.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    pub(crate) metrics: GatewayMetrics,
    pub(super) log: RequestLogging,
}

impl Recorder {
    /// The sink request lines go to, when they are logged and not as `tracing` events.
    pub(crate) fn sink(&self) -> Option<&Arc<dyn RequestLogSink>> {
        match &self.log {
            RequestLogging::On(sink) => sink.as_ref(),
            RequestLogging::Off => None,
        }
    }
}

impl MetricsLayer {
    /// Records into `metrics`.
    pub fn new(metrics: GatewayMetrics) -> Self {
        MetricsLayer {
            recorder: Arc::new(Recorder {
                metrics,
                log: RequestLogging::Off,
            }),
        }
    }

    /// Also emits one log event per request from the same verdict: `request completed` (info) or
    /// `request failed` (warn), with trace_id, span_id, session_id, request_id, method,
    /// namespace, backend, status, duration_ms, client_addr and, on failure, error_type,
    /// severity, component, retryable and http_status.
    pub fn log_requests(mut self) -> Self {
        Arc::make_mut(&mut self.recorder).log = RequestLogging::On(None);
        self
    }

    /// Logs each request as [`log_requests`](Self::log_requests) does, but hands the event to
    /// `sink` instead of `tracing` (see [`RequestLogSink`]).
    pub fn log_requests_to(mut self, sink: Arc<dyn RequestLogSink>) -> Self {
        Arc::make_mut(&mut self.recorder).log = RequestLogging::On(Some(sink));
        self
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics {
            inner,
            recorder: self.recorder.clone(),
        }
    }
}
