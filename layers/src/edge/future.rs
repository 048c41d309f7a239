use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower::BoxError;

use super::FromErrorClass;
use crate::classify::{classify_error, public_message};
use crate::jsonrpc::RawId;
use crate::trace::TraceId;

pin_project! {
    /// The future of [`ErrorResponse`](super::ErrorResponse).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        rejected: Option<BoxError>,
        id: Option<RawId>,
        trace_id: Option<TraceId>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, id: Option<RawId>, trace_id: Option<TraceId>) -> Self {
        ResponseFuture {
            inner: Some(inner),
            rejected: None,
            id,
            trace_id,
        }
    }

    pub(super) fn rejected(error: BoxError, trace_id: Option<TraceId>) -> Self {
        ResponseFuture {
            inner: None,
            rejected: Some(error),
            id: None,
            trace_id,
        }
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<R, E>>,
    R: FromErrorClass,
    E: Into<BoxError>,
{
    type Output = Result<R, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match (this.inner.as_pin_mut(), this.rejected.take()) {
            (Some(inner), _) => ready!(inner.poll(cx)).map_err(Into::into),
            (None, Some(rejected)) => Err(rejected),
            (None, None) => panic!("ResponseFuture polled after completion"),
        };
        Poll::Ready(Ok(match result {
            Ok(resp) => resp,
            Err(e) => {
                let class = classify_error(&*e);
                tracing::debug!(error = %e, error_type = class.error_type.as_str(), "error answered at the edge");
                let id = this.id.as_ref().and_then(|b| std::str::from_utf8(b).ok());
                R::from_error_class(&class, &public_message(&*e, &class), id, *this.trace_id)
            }
        }))
    }
}
