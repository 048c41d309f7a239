use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower::BoxError;

use super::LogScope;
use crate::classify::{Classification, Verdict, classify_error};
use crate::parts::ResponseParts;

pin_project! {
    /// The future of [`Trace`](super::Trace): runs the inner future inside the server span (or
    /// the log scope of an unsampled request) and records `error.type` on the span.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        span: tracing::Span,
        scope: Option<Arc<LogScope>>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, span: tracing::Span, scope: Option<Arc<LogScope>>) -> Self {
        ResponseFuture { inner, span, scope }
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<R, E>>,
    R: ResponseParts,
    E: Into<BoxError>,
{
    type Output = Result<R, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let _scoped = LogScope::enter(this.scope);
        let result = ready!(this.inner.poll(cx)).map_err(Into::into);
        let failure = match &result {
            Ok(resp) => match resp.classification().and_then(Classification::get) {
                Some(Verdict::Failure(class)) => Some(class),
                _ => None,
            },
            Err(e) => Some(classify_error(&**e)),
        };
        if let Some(class) = failure {
            this.span.record("error.type", class.error_type.as_str());
        }
        Poll::Ready(result)
    }
}
