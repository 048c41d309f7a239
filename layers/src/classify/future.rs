use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower::BoxError;

use super::{ClassifiedError, ClassifyResponse, Component, classify_error};

pin_project! {
    /// The future of [`Classify`](super::Classify).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        component: Component,
        max_json_body: usize,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, component: Component, max_json_body: usize) -> Self {
        ResponseFuture {
            inner,
            component,
            max_json_body,
        }
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<R, E>>,
    R: ClassifyResponse,
    E: Into<BoxError>,
{
    type Output = Result<R::Classified, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.inner.poll(cx)) {
            Ok(resp) => Ok(resp.classify(*this.component, *this.max_json_body)),
            Err(e) => {
                let e: BoxError = e.into();
                if e.is::<ClassifiedError>() {
                    Err(e)
                } else {
                    Err(Box::new(ClassifiedError::new(classify_error(&*e), e)))
                }
            }
        })
    }
}
