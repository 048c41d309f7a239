use tower::Layer;

use super::PeekJsonRpc;

/// Peeks HTTP request bodies as JSON-RPC; see the [module docs](super).
#[derive(Debug, Clone, Copy)]
pub struct PeekJsonRpcLayer {
    max_body: usize,
}

impl PeekJsonRpcLayer {
    /// Reads bodies of at most `max_body` bytes.
    pub fn new(max_body: usize) -> Self {
        PeekJsonRpcLayer { max_body }
    }
}

impl<S> Layer<S> for PeekJsonRpcLayer {
    type Service = PeekJsonRpc<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PeekJsonRpc {
            inner,
            max_body: self.max_body,
        }
    }
}
