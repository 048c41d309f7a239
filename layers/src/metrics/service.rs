use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::Body;
use tower::{BoxError, Service};

use super::body::{Completion, RequestLog};
use super::layer::{Recorder, RequestLogging};
use super::{MetricsBody, ResponseFuture};
use crate::classify::{Classification, Component, ErrorClass, Verdict};
use crate::jsonrpc::McpMethod;
use crate::parts::{JsonRpcResponse, RequestParts, ResponseParts};

/// The service made by [`MetricsLayer`](super::MetricsLayer).
#[derive(Debug, Clone)]
pub struct Metrics<S> {
    pub(super) inner: S,
    pub(super) recorder: Arc<Recorder>,
}

/// A response whose end the metrics layer can observe.
pub trait RecordOnEnd: ResponseParts + Sized {
    /// The response once it records at its end.
    type Output;

    /// The verdict when no classify layer ran below.
    fn fallback_verdict(&self) -> Verdict;

    /// Arranges for `completion` to be recorded when the response ends.
    #[doc(hidden)]
    fn record_on_end(self, completion: Completion) -> Self::Output;
}

impl<B: Body> RecordOnEnd for http::Response<B> {
    type Output = http::Response<MetricsBody<B>>;

    fn fallback_verdict(&self) -> Verdict {
        match ErrorClass::from_http_status(self.status(), Component::Backend) {
            Some(class) => Verdict::Failure(class),
            None => Verdict::Success,
        }
    }

    fn record_on_end(self, completion: Completion) -> Self::Output {
        self.map(|body| MetricsBody::new(body, completion))
    }
}

impl RecordOnEnd for JsonRpcResponse {
    type Output = JsonRpcResponse;

    fn fallback_verdict(&self) -> Verdict {
        match self.message.failure_class(Component::Backend) {
            Some(class) => Verdict::Failure(class),
            None => Verdict::Success,
        }
    }

    fn record_on_end(self, completion: Completion) -> Self::Output {
        completion.finish(Verdict::Success);
        self
    }
}

impl<S, Req> Service<Req> for Metrics<S>
where
    S: Service<Req>,
    S::Response: RecordOnEnd,
    S::Error: Into<BoxError>,
    Req: RequestParts,
{
    type Response = <S::Response as RecordOnEnd>::Output;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let method = req.message().map_or(McpMethod::Other, |m| m.method());
        let namespace = req.namespace();
        let trace = req.trace_context();
        let log = match &self.recorder.log {
            RequestLogging::Off => None,
            RequestLogging::On(_) => Some(RequestLog {
                span_id: trace.map(|c| c.span_id),
                request_id: req.message().and_then(|m| m.id_bytes()),
                session_id: req.session_id(),
                client_addr: req.client_addr(),
            }),
        };
        let completion = Completion::start(
            self.recorder.clone(),
            method,
            namespace,
            trace.map(|c| (c.trace_id, c.sampled)),
            log,
        );
        ResponseFuture::new(self.inner.call(req), completion)
    }
}

/// The classification a response carries, or one decided from the response itself.
pub(super) fn classification_of<R: RecordOnEnd>(resp: &R) -> Classification {
    resp.classification()
        .cloned()
        .unwrap_or_else(|| Classification::decided(resp.fallback_verdict()))
}
