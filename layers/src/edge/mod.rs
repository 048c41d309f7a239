//! The error edge: the one place where an error becomes a response. Inner layers return typed
//! errors; this layer answers each with a JSON-RPC error whose `data` carries `error_type`,
//! `retryable` and `trace_id` — never internal error text — with the class's HTTP status and,
//! when known, `Retry-After`. The class goes on the response (an HTTP response's extensions, a
//! JSON-RPC response's `classification`) for the layers above.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use mcp_gateway_layers::edge::ErrorResponseLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let failing = service_fn(|_req: http::Request<Full<Bytes>>| async {
//!     Err::<http::Response<Full<Bytes>>, _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
//! });
//! let svc = ServiceBuilder::new().layer(ErrorResponseLayer::new()).service(failing);
//! let resp = svc.oneshot(http::Request::new(Full::default())).await.unwrap();
//! assert_eq!(resp.status(), 503);
//! let body = resp.into_body().collect().await.unwrap().to_bytes();
//! let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
//! assert_eq!(json["error"]["code"], -32010);
//! assert_eq!(json["error"]["data"]["error_type"], "unavailable");
//! assert_eq!(json["error"]["data"]["retryable"], true);
//! # }
//! ```

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::ErrorResponseLayer;
pub use service::{ErrorResponse, FromErrorClass, error_message};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{
        Classification, Component, ErrorClass, ErrorType, GatewayError, Verdict,
    };
    use crate::parts::{JsonRpcRequest, JsonRpcResponse, ResponseParts};
    use crate::test_support::*;
    use crate::trace::{TraceContext, TraceParent};
    use tower::{Layer, ServiceExt};
    use tower_test::mock;

    #[tokio::test]
    async fn answers_errors_with_the_request_id_and_trace_id_but_no_internal_text() {
        let (inner, mut handle) = mock::pair::<JsonRpcRequest, JsonRpcResponse>();
        let svc = ErrorResponseLayer::new().layer(inner);
        let mut req = message_request(r#"{"jsonrpc":"2.0","id":"abc","method":"tools/call"}"#);
        let parent =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        req.extensions
            .insert(TraceContext::child_of(&parent, None, None));
        let call = tokio::spawn(svc.oneshot(req));
        let (_req, send) = handle.next_request().await.unwrap();
        send.send_error(std::io::Error::other("secret: /etc/shadow"));
        let resp = call.await.unwrap().unwrap();
        let json: serde_json::Value = serde_json::from_slice(resp.message.raw()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"jsonrpc":"2.0","id":"abc","error":{"code":-32603,"message":"internal error",
                "data":{"error_type":"internal","retryable":false,"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}}})
        );
        let verdict = resp.classification().unwrap().get().unwrap();
        assert_eq!(verdict.failure().unwrap().error_type, ErrorType::Internal);
    }

    #[tokio::test]
    async fn http_errors_get_status_retry_after_and_a_safe_message() {
        let (inner, mut handle) = mock::pair::<
            http::Request<http_body_util::Full<bytes::Bytes>>,
            http::Response<http_body_util::Full<bytes::Bytes>>,
        >();
        let svc = ErrorResponseLayer::new().layer(inner);
        let call = tokio::spawn(svc.oneshot(http_request(
            r#"{"jsonrpc":"2.0","id":9,"method":"tools/call"}"#,
        )));
        let (_req, send) = handle.next_request().await.unwrap();
        let class = ErrorClass::new(ErrorType::RateLimited, Component::Backend)
            .with_retry_after(std::time::Duration::from_millis(1500));
        send.send_error(GatewayError::new(class, "slow down"));
        let resp = call.await.unwrap().unwrap();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "2");
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert!(matches!(
            resp.extensions().get::<Classification>().unwrap().get(),
            Some(Verdict::Failure(_))
        ));
        let json: serde_json::Value =
            serde_json::from_slice(&drain(resp.into_body()).await).unwrap();
        assert_eq!(json["id"], 9);
        assert_eq!(json["error"]["code"], -32029);
        assert_eq!(json["error"]["message"], "slow down");
        assert_eq!(json["error"]["data"]["retryable"], true);
    }
}
