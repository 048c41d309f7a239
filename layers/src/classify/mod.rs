//! Error classification: one verdict per request, put on the response (an HTTP response's
//! extensions, a JSON-RPC response's `classification` field) or in the error once, and read by
//! metrics, retry, logs and the error edge.
//!
//! HTTP statuses are classified at once; JSON-RPC error objects and `isError` tool results in JSON
//! bodies and in SSE streams are classified when the body ends, as tower-http's `ClassifyEos`
//! does; transport errors (refused, reset, broken pipe, timeout) are classified from the error.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use mcp_gateway_layers::classify::{Classification, ClassifyLayer, ErrorType, Verdict};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let backend = service_fn(|_req: http::Request<Full<Bytes>>| async {
//!     let body = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no such method"}}"#;
//!     let resp = http::Response::builder().header("content-type", "application/json").body(Full::new(Bytes::from(body))).unwrap();
//!     Ok::<_, std::convert::Infallible>(resp)
//! });
//! let svc = ServiceBuilder::new().layer(ClassifyLayer::new()).service(backend);
//! let resp = svc.oneshot(http::Request::new(Full::default())).await.unwrap();
//! let classification = resp.extensions().get::<Classification>().unwrap().clone();
//! resp.into_body().collect().await.unwrap(); // decided when the body ends
//! assert!(matches!(classification.get(), Some(Verdict::Failure(c)) if c.error_type == ErrorType::NotFound));
//! # }
//! ```

mod body;
mod class;
mod error;
mod future;
mod layer;
mod service;

use std::sync::{Arc, OnceLock};

pub use body::{ClassifyBody, ErrorBody};
pub use class::{CLIENT_CLOSED_REQUEST, Component, ErrorClass, ErrorType, Severity, Verdict, code};
pub(crate) use error::public_message;
pub use error::{ClassifiedError, GatewayError, classify_error};
pub use future::ResponseFuture;
pub use layer::ClassifyLayer;
pub use service::{Classify, ClassifyResponse};

/// The verdict on a response, shared by everyone who reads it. Set once: at once for statuses
/// and messages, when the body ends for JSON bodies and SSE streams.
#[derive(Debug, Clone)]
pub struct Classification(Decision);

/// A verdict known when the classification is made needs no sharing (every JSON-RPC message's);
/// one decided when a body ends is shared with the body.
#[derive(Debug, Clone)]
enum Decision {
    Made(Verdict),
    Shared(Arc<OnceLock<Verdict>>),
}

impl Default for Classification {
    fn default() -> Self {
        Classification::pending()
    }
}

impl Classification {
    /// A classification not decided yet.
    pub fn pending() -> Self {
        Classification(Decision::Shared(Arc::default()))
    }

    /// A classification decided now.
    pub fn decided(verdict: Verdict) -> Self {
        Classification(Decision::Made(verdict))
    }

    /// The verdict, once decided.
    pub fn get(&self) -> Option<Verdict> {
        match &self.0 {
            Decision::Made(verdict) => Some(*verdict),
            Decision::Shared(cell) => cell.get().copied(),
        }
    }

    /// Decides the verdict; the first decision wins.
    pub fn set(&self, verdict: Verdict) {
        if let Decision::Shared(cell) = &self.0 {
            let _ = cell.set(verdict);
        }
    }

    /// The verdict, or the fallback: a response that ended undecided because it was dropped
    /// (the client went away) is `canceled`.
    pub fn get_or_canceled(&self) -> Verdict {
        self.get().unwrap_or(Verdict::canceled())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parts::ResponseParts;
    use crate::test_support::*;
    use http_body_util::BodyExt;
    use tower::{Layer, ServiceExt};
    use tower_test::mock;

    async fn classify_http(
        resp: http::Response<http_body_util::Full<bytes::Bytes>>,
    ) -> Option<Verdict> {
        let (mock, mut handle) = mock::pair::<http::Request<()>, _>();
        let svc = ClassifyLayer::new().layer(mock);
        let call = tokio::spawn(svc.oneshot(http::Request::new(())));
        let (_req, send) = handle.next_request().await.unwrap();
        send.send_response(resp);
        let resp = call.await.unwrap().unwrap();
        let classification = resp.extensions().get::<Classification>().unwrap().clone();
        resp.into_body().collect().await.unwrap();
        classification.get()
    }

    fn error_type(v: Option<Verdict>) -> Option<&'static str> {
        v.and_then(|v| v.failure().map(|c| c.error_type.as_str()))
    }

    #[test]
    fn the_first_decision_wins_and_clones_share_it() {
        let success = Verdict::Success;
        let canceled = Verdict::canceled();
        let decided = Classification::decided(success);
        decided.set(canceled);
        assert_eq!(decided.clone().get(), Some(success));
        let pending = Classification::pending();
        let reader = pending.clone();
        assert_eq!(reader.get(), None);
        assert_eq!(reader.get_or_canceled(), canceled);
        pending.set(success);
        pending.set(canceled);
        assert_eq!(reader.get(), Some(success));
    }

    #[tokio::test]
    async fn classifies_statuses_json_bodies_and_sse_streams() {
        let ok = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        let tool_err = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#;
        let rpc_err = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"bad"}}"#;
        let cases: [(u16, &str, String, Option<&str>); 8] = [
            (200, "application/json", ok.into(), None),
            (200, "application/json", tool_err.into(), Some("tool_error")),
            (200, "application/json", rpc_err.into(), Some("validation")),
            (
                200,
                "application/json",
                "{not json".into(),
                Some("backend_protocol"),
            ),
            (503, "text/plain", "down".into(), Some("unavailable")),
            (
                200,
                "text/event-stream",
                format!(
                    "event: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}}\n\ndata: {ok}\n\n"
                ),
                None,
            ),
            (
                200,
                "text/event-stream",
                format!("data: {rpc_err}\n\n"),
                Some("validation"),
            ),
            (
                200,
                "text/event-stream",
                "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"res".into(),
                Some("backend_protocol"),
            ),
        ];
        for (status, content_type, body, expected) in cases {
            let verdict = classify_http(http_response(status, content_type, &body)).await;
            assert_eq!(
                error_type(verdict),
                expected,
                "{status} {content_type} {body}"
            );
            assert!(verdict.is_some(), "decided by the end of the body");
        }
    }

    #[tokio::test]
    async fn reads_retry_after_from_the_response() {
        let mut resp = http_response(429, "text/plain", "");
        resp.headers_mut()
            .insert("retry-after", http::HeaderValue::from_static("7"));
        let class = *classify_http(resp).await.unwrap().failure().unwrap();
        assert_eq!(class.retry_after, Some(std::time::Duration::from_secs(7)));
        assert!(class.retryable);
    }

    #[tokio::test]
    async fn classifies_messages_and_errors_once() {
        let (mut svc, mut handle) =
            mock::spawn_layer::<crate::parts::JsonRpcRequest, crate::parts::JsonRpcResponse, _>(
                ClassifyLayer::new(),
            );
        assert!(svc.poll_ready().is_ready());
        let call = svc.call(message_request(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
        ));
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.message.method(), crate::jsonrpc::McpMethod::ToolsCall);
        send.send_response(message_response(
            r#"{"jsonrpc":"2.0","id":1,"result":{"isError":true}}"#,
        ));
        let resp = call.await.unwrap();
        let verdict = resp.classification().unwrap().get();
        assert_eq!(error_type(verdict), Some("tool_error"));

        assert!(svc.poll_ready().is_ready());
        let call = svc.call(message_request(
            r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#,
        ));
        let (_req, send) = handle.next_request().await.unwrap();
        send.send_error(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        let err = call.await.unwrap_err();
        let classified = err
            .downcast_ref::<ClassifiedError>()
            .expect("errors leave classified");
        assert_eq!(classified.class().error_type, ErrorType::Unavailable);
        assert_eq!(classify_error(&*err).error_type, ErrorType::Unavailable);
    }
}
