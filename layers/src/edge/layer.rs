use tower::Layer;

use super::ErrorResponse;

/// Turns errors into JSON-RPC error responses; see the [module docs](super).
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorResponseLayer;

impl ErrorResponseLayer {
    /// The layer.
    pub fn new() -> Self {
        ErrorResponseLayer
    }
}

impl<S> Layer<S> for ErrorResponseLayer {
    type Service = ErrorResponse<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorResponse { inner }
    }
}
