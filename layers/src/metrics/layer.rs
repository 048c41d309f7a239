use tower::Layer;

use super::{GatewayMetrics, Metrics};

/// Records request metrics; see the [module docs](super).
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: GatewayMetrics,
}

impl MetricsLayer {
    /// Records into `metrics`.
    pub fn new(metrics: GatewayMetrics) -> Self {
        MetricsLayer { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}
