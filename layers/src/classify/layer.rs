use tower::Layer;

use super::{Classify, Component};

/// Puts a [`Classification`](super::Classification) on every response and classifies every
/// error; see the [module docs](super).
#[derive(Debug, Clone, Copy)]
pub struct ClassifyLayer {
    component: Component,
    max_json_body: usize,
}

impl ClassifyLayer {
    /// Classifies failures of the wrapped service as the backend's, peeking JSON bodies up to 4 MiB.
    pub fn new() -> Self {
        ClassifyLayer {
            component: Component::Backend,
            max_json_body: 4 << 20,
        }
    }

    /// Blames failures of the wrapped service on `component`.
    pub fn component(mut self, component: Component) -> Self {
        self.component = component;
        self
    }

    /// Peeks JSON bodies up to `bytes` long; longer ones are judged by status alone.
    pub fn max_json_body(mut self, bytes: usize) -> Self {
        self.max_json_body = bytes;
        self
    }
}

impl Default for ClassifyLayer {
    fn default() -> Self {
        ClassifyLayer::new()
    }
}

impl<S> Layer<S> for ClassifyLayer {
    type Service = Classify<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Classify {
            inner,
            component: self.component,
            max_json_body: self.max_json_body,
        }
    }
}
