use tower::Layer;

use super::Trace;

/// Starts a server span per request; see the [module docs](super).
#[derive(Debug, Clone, Copy)]
pub struct TraceLayer {
    sample_ratio: f64,
    scope_unsampled: bool,
}

impl TraceLayer {
    /// Samples every new trace; a caller's sampling decision is always kept.
    pub fn new() -> Self {
        TraceLayer {
            sample_ratio: 1.0,
            scope_unsampled: false,
        }
    }

    /// Samples new traces (those without a caller context) with probability `ratio`.
    pub fn sample_ratio(mut self, ratio: f64) -> Self {
        self.sample_ratio = ratio.clamp(0.0, 1.0);
        self
    }

    /// Runs unsampled requests in a [`LogScope`](super::LogScope) instead of a `tracing` span
    /// (sampled ones keep their span, which is exported). Only for a process whose log layer
    /// reads [`LogScope::with_current`](super::LogScope::with_current): other layers see no
    /// request fields on the lines of unsampled requests.
    pub fn scope_unsampled_requests(mut self) -> Self {
        self.scope_unsampled = true;
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
            scope_unsampled: self.scope_unsampled,
        }
    }
}
