use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use tower::{BoxError, Service};

use super::body::Inspect;
use super::{Classification, ClassifyBody, Component, ErrorClass, ResponseFuture, Verdict};
use crate::parts::{JsonRpcResponse, ResponseParts};
use crate::sse::SseParser;

/// The service made by [`ClassifyLayer`](super::ClassifyLayer).
#[derive(Debug, Clone)]
pub struct Classify<S> {
    pub(super) inner: S,
    pub(super) component: Component,
    pub(super) max_json_body: usize,
}

/// A response the classify layer knows how to judge.
pub trait ClassifyResponse: Sized {
    /// The response once its classification is attached.
    type Classified;

    /// Attaches a [`Classification`] to the response, decided now or when its body ends.
    fn classify(self, component: Component, max_json_body: usize) -> Self::Classified;
}

/// Reads `Retry-After` given in seconds (the HTTP-date form is not used by MCP servers).
pub(crate) fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

impl<B> ClassifyResponse for http::Response<B> {
    type Classified = http::Response<ClassifyBody<B>>;

    fn classify(mut self, component: Component, max_json_body: usize) -> Self::Classified {
        let classification = Classification::pending();
        let inspect = match ErrorClass::from_http_status(self.status(), component) {
            Some(mut class) => {
                class.retry_after = retry_after(self.headers());
                classification.set(Verdict::Failure(class));
                Inspect::Decided
            }
            None => {
                let content_type = self
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if content_type.starts_with("application/json") {
                    Inspect::Json {
                        chunks: Vec::new(),
                        len: 0,
                        limit: max_json_body,
                    }
                } else if content_type.starts_with("text/event-stream") {
                    Inspect::Sse(SseParser::new(max_json_body))
                } else {
                    classification.set(Verdict::Success);
                    Inspect::Decided
                }
            }
        };
        self.set_classification(classification.clone());
        self.map(|body| ClassifyBody::new(body, inspect, classification, component))
    }
}

impl ClassifyResponse for JsonRpcResponse {
    type Classified = JsonRpcResponse;

    fn classify(mut self, component: Component, _max_json_body: usize) -> Self::Classified {
        let verdict = match self.message.failure_class(component) {
            Some(class) => Verdict::Failure(class),
            None => Verdict::Success,
        };
        self.set_classification(Classification::decided(verdict));
        self
    }
}

impl<S, Req> Service<Req> for Classify<S>
where
    S: Service<Req>,
    S::Response: ClassifyResponse,
    S::Error: Into<BoxError>,
{
    type Response = <S::Response as ClassifyResponse>::Classified;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        ResponseFuture::new(self.inner.call(req), self.component, self.max_json_body)
    }
}
