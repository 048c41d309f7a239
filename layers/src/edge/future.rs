use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use pin_project_lite::pin_project;
use tower::BoxError;

use super::FromErrorClass;
use crate::classify::{classify_error, public_message};
use crate::trace::TraceId;

pin_project! {
    /// The future of [`ErrorResponse`](super::ErrorResponse).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        id: Option<Bytes>,
        trace_id: Option<TraceId>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, id: Option<Bytes>, trace_id: Option<TraceId>) -> Self {
        ResponseFuture {
            inner,
            id,
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
        Poll::Ready(Ok(match ready!(this.inner.poll(cx)) {
            Ok(resp) => resp,
            Err(e) => {
                let e: BoxError = e.into();
                let class = classify_error(&*e);
                tracing::debug!(error = %e, error_type = class.error_type.as_str(), "error answered at the edge");
                let id = this.id.as_ref().and_then(|b| std::str::from_utf8(b).ok());
                R::from_error_class(&class, &public_message(&*e, &class), id, *this.trace_id)
            }
        }))
    }
}
