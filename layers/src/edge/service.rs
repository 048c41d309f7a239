use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderValue;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use tower::{BoxError, Service};

use super::ResponseFuture;
use crate::classify::{Classification, ErrorBody, ErrorClass, Verdict, code};
use crate::jsonrpc::{Message, PeekError};
use crate::parts::{JsonRpcResponse, RequestParts, ResponseParts};
use crate::trace::TraceId;

/// The service made by [`ErrorResponseLayer`](super::ErrorResponseLayer).
#[derive(Debug, Clone)]
pub struct ErrorResponse<S> {
    pub(super) inner: S,
}

/// Writes a JSON-RPC error message for a gateway-made error. `id` is the raw JSON id of the
/// request (null when unknown).
pub fn error_message(
    id: Option<&str>,
    class: &ErrorClass,
    message: &str,
    trace_id: Option<TraceId>,
) -> Bytes {
    let mut out = BytesMut::with_capacity(160 + message.len()).writer();
    let code = class.jsonrpc_code.unwrap_or(code::INTERNAL_ERROR);
    let message = serde_json::to_string(message).unwrap_or_else(|_| "\"error\"".to_owned());
    let trace = trace_id
        .map(|t| format!(",\"trace_id\":\"{t}\""))
        .unwrap_or_default();
    let _ = std::io::Write::write_fmt(
        &mut out,
        format_args!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{},\"error\":{{\"code\":{code},\"message\":{message},\"data\":{{\"error_type\":\"{}\",\"retryable\":{}{trace}}}}}}}",
            id.unwrap_or("null"),
            class.error_type,
            class.retryable,
        ),
    );
    out.into_inner().freeze()
}

/// A response that the edge can make from an error class.
pub trait FromErrorClass: Sized {
    /// The error response for `class`, answering the request with raw id `id`.
    fn from_error_class(
        class: &ErrorClass,
        message: &str,
        id: Option<&str>,
        trace_id: Option<TraceId>,
    ) -> Self;
}

impl<B: ErrorBody> FromErrorClass for http::Response<B> {
    fn from_error_class(
        class: &ErrorClass,
        message: &str,
        id: Option<&str>,
        trace_id: Option<TraceId>,
    ) -> Self {
        let body = B::from_bytes(error_message(id, class, message, trace_id));
        let mut resp = http::Response::new(body);
        *resp.status_mut() = class.http_status;
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(after) = class.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        resp.set_classification(Classification::decided(Verdict::Failure(*class)));
        resp
    }
}

impl FromErrorClass for JsonRpcResponse {
    fn from_error_class(
        class: &ErrorClass,
        message: &str,
        id: Option<&str>,
        trace_id: Option<TraceId>,
    ) -> Self {
        let raw = error_message(id, class, message, trace_id);
        // The edge writes well-formed messages; a raw id from a peeked message is valid JSON.
        let message = Message::parse(raw).expect("the edge writes valid JSON-RPC");
        let mut resp = JsonRpcResponse::new(message);
        resp.set_classification(Classification::decided(Verdict::Failure(*class)));
        resp
    }
}

impl<S, Req> Service<Req> for ErrorResponse<S>
where
    S: Service<Req>,
    S::Response: FromErrorClass,
    S::Error: Into<BoxError>,
    Req: RequestParts,
{
    type Response = S::Response;
    // Readiness failures pass through; every call is answered, so its future never fails.
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let id = req.message().and_then(|m| m.id_bytes());
        let trace_id = req.trace_context().map(|c| c.trace_id);
        // A request that could not be read is answered here; the service never sees it.
        if let Some(invalid) = req.extensions().get::<PeekError>() {
            return ResponseFuture::rejected(Box::new(invalid.clone()), trace_id);
        }
        ResponseFuture::new(self.inner.call(req), id, trace_id)
    }
}
