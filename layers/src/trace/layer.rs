use tower::Layer;

use super::Trace;

/// Starts a server span per request; see the [module docs](super).
#[derive(Debug, Clone, Copy)]
pub struct TraceLayer {
    sample_ratio: f64,
}

impl TraceLayer {
    /// Samples every new trace; a caller's sampling decision is always kept.
    pub fn new() -> Self {
        TraceLayer { sample_ratio: 1.0 }
    }

    /// Samples new traces (those without a caller context) with probability `ratio`.
    pub fn sample_ratio(mut self, ratio: f64) -> Self {
        self.sample_ratio = ratio.clamp(0.0, 1.0);
        self
    }
}

impl Default for TraceLayer {
    fn default() -> Self {
        TraceLayer::new()
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace {
            inner,
            sample_ratio: self.sample_ratio,
        }
    }
}
