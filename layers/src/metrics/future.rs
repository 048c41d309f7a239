use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower::BoxError;

use super::RecordOnEnd;
use super::body::Completion;
use super::service::classification_of;
use crate::classify::{Verdict, classify_error};

pin_project! {
    /// The future of [`Metrics`](super::Metrics).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        completion: Option<Completion>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, completion: Completion) -> Self {
        ResponseFuture {
            inner,
            completion: Some(completion),
        }
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<R, E>>,
    R: RecordOnEnd,
    E: Into<BoxError>,
{
    type Output = Result<R::Output, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(mut completion) = this.completion.take() else {
            panic!("ResponseFuture polled after completion");
        };
        Poll::Ready(match result {
            Ok(resp) => {
                completion.set_classification(classification_of(&resp));
                Ok(resp.record_on_end(completion))
            }
            Err(e) => {
                let e: BoxError = e.into();
                completion.finish(Verdict::Failure(classify_error(&*e)));
                Err(e)
            }
        })
    }
}
