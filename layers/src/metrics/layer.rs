use tower::Layer;

use super::{GatewayMetrics, Metrics};

/// Records request metrics; see the [module docs](super).
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: GatewayMetrics,
    log_requests: bool,
}

impl MetricsLayer {
    /// Records into `metrics`.
    pub fn new(metrics: GatewayMetrics) -> Self {
        MetricsLayer {
            metrics,
            log_requests: false,
        }
    }

    /// Also emits one log event per request from the same verdict: `request completed` (info) or
    /// `request failed` (warn), with trace_id, span_id, session_id, request_id, method,
    /// namespace, backend, status, duration_ms, client_addr and, on failure, error_type,
    /// severity, component, retryable and http_status.
    pub fn log_requests(mut self) -> Self {
        self.log_requests = true;
        self
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics {
            inner,
            metrics: self.metrics.clone(),
            log_requests: self.log_requests,
        }
    }
}
