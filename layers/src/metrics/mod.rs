//! Request metrics on a prometheus-client registry the caller passes in:
//! `gateway_requests_total{method,namespace,status}`,
//! `gateway_request_duration_seconds{method,namespace}` (exemplars: sampled traces' ids),
//! `gateway_errors_total{error_type,component,severity,http_status,retryable}`,
//! `gateway_error_handling_duration_seconds{error_type,component}`,
//! `gateway_requests_in_flight` and `gateway_error_recovery_total{error_type,mechanism}`.
//!
//! Latency is recorded when the response body ends or is dropped, streams included, and read
//! from the one [`Classification`](crate::classify::Classification) of the response.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use mcp_gateway_layers::metrics::{GatewayMetrics, MetricsLayer};
//! use prometheus_client::registry::Registry;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mut registry = Registry::default();
//! let metrics = GatewayMetrics::register(&mut registry);
//! let svc = ServiceBuilder::new()
//!     .layer(MetricsLayer::new(metrics))
//!     .service(service_fn(|_req: http::Request<Full<Bytes>>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from("ok"))))
//!     }));
//! let resp = svc.oneshot(http::Request::new(Full::default())).await.unwrap();
//! resp.into_body().collect().await.unwrap(); // recorded when the body ends
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.contains(r#"gateway_requests_total{method="other",namespace="none",status="ok"} 1"#));
//! # }
//! ```

mod body;
mod exposition;
mod future;
mod layer;
mod registry;
mod service;

pub use body::{AddrText, MetricsBody, REQUEST_LOG_TARGET, RequestLogRecord, RequestLogSink};
pub use exposition::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE, render};
pub use future::ResponseFuture;
pub use layer::MetricsLayer;
pub use registry::{GatewayMetrics, LATENCY_BUCKETS, RecoveryMechanism};
pub use service::{Metrics, RecordOnEnd};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::ClassifyLayer;
    use crate::parts::{JsonRpcRequest, JsonRpcResponse, Namespace};
    use crate::test_support::*;
    use crate::trace::{TraceContext, TraceParent};
    use prometheus_client::registry::Registry;
    use tower::{Layer, ServiceExt};
    use tower_test::mock;

    #[tokio::test]
    async fn records_when_the_body_ends_not_when_headers_leave() {
        let mut registry = Registry::default();
        let metrics = GatewayMetrics::register(&mut registry);
        let (inner, mut handle) = mock::pair::<
            http::Request<http_body_util::Full<bytes::Bytes>>,
            http::Response<http_body_util::Full<bytes::Bytes>>,
        >();
        let svc = MetricsLayer::new(metrics.clone()).layer(ClassifyLayer::new().layer(inner));
        let mut req =
            http_request(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#);
        req.extensions_mut().insert(Namespace::new("demo"));
        let parent =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        req.extensions_mut()
            .insert(TraceContext::child_of(&parent, None, None));
        let call = tokio::spawn(svc.oneshot(req));
        let (_req, send) = handle.next_request().await.unwrap();
        send.send_response(http_response(
            200,
            "application/json",
            r#"{"jsonrpc":"2.0","id":1,"result":{"isError":true}}"#,
        ));
        let resp = call.await.unwrap().unwrap();
        let text = scrape(&registry);
        assert_eq!(
            sample(&text, "gateway_requests_in_flight"),
            Some(1.0),
            "still streaming:\n{text}"
        );
        assert!(
            !text.contains("gateway_requests_total{"),
            "nothing recorded before the body ends:\n{text}"
        );
        drain(resp.into_body()).await;
        let text = scrape(&registry);
        assert_eq!(sample(&text, "gateway_requests_in_flight"), Some(0.0));
        assert_eq!(
            sample(
                &text,
                r#"gateway_requests_total{method="tools/call",namespace="demo",status="tool_error"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"gateway_errors_total{error_type="tool_error",component="backend",severity="low",http_status="200",retryable="false"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"gateway_error_handling_duration_seconds_count{error_type="tool_error",component="backend"}"#
            ),
            Some(1.0)
        );
        assert!(
            text.contains(r#"# {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"}"#),
            "exemplar carries the trace id:\n{text}"
        );
    }

    #[tokio::test]
    async fn only_a_sampled_trace_becomes_an_exemplar() {
        let mut registry = Registry::default();
        let metrics = GatewayMetrics::register(&mut registry);
        for (flags, trace_id) in [
            ("01", "22222222222222222222222222222222"),
            // Second, so that in the same bucket it would replace the first's exemplar.
            ("00", "11111111111111111111111111111111"),
            // The series are looked up once: a later sample still reaches the same ones.
            ("01", "33333333333333333333333333333333"),
            ("00", "44444444444444444444444444444444"),
        ] {
            let pong = tower::service_fn(|_: http::Request<http_body_util::Full<bytes::Bytes>>| {
                let body = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
                std::future::ready(Ok::<_, std::convert::Infallible>(http_response(
                    200,
                    "application/json",
                    body,
                )))
            });
            let mut req = http_request(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
            let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-{flags}");
            let ctx =
                TraceContext::child_of(&TraceParent::parse(&traceparent).unwrap(), None, None);
            req.extensions_mut().insert(ctx);
            let svc = MetricsLayer::new(metrics.clone()).layer(pong);
            drain(svc.oneshot(req).await.unwrap().into_body()).await;
        }
        let text = scrape(&registry);
        assert_eq!(
            sample(
                &text,
                r#"gateway_request_duration_seconds_count{method="ping",namespace="none"}"#
            ),
            Some(4.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"gateway_requests_total{method="ping",namespace="none",status="ok"}"#
            ),
            Some(4.0),
            "{text}"
        );
        // An unsampled trace is never exported: an exemplar would link to nothing.
        assert!(!text.contains("1111111111111111"), "{text}");
        assert!(!text.contains("4444444444444444"), "{text}");
        assert!(
            text.contains(r#"# {trace_id="33333333333333333333333333333333"}"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_dropped_body_counts_as_canceled_and_errors_are_classified() {
        let mut registry = Registry::default();
        let metrics = GatewayMetrics::register(&mut registry);
        let (inner, mut handle) = mock::pair::<JsonRpcRequest, JsonRpcResponse>();
        let svc = MetricsLayer::new(metrics.clone()).layer(inner);
        let call = tokio::spawn(svc.clone().oneshot(message_request(
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        )));
        let (_req, send) = handle.next_request().await.unwrap();
        send.send_error(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(call.await.unwrap().is_err());

        // A response future dropped before it finished: the client went away.
        let call = svc.clone().oneshot(message_request(
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        ));
        let pending = tokio::spawn(call);
        let (_req, _send) = handle.next_request().await.unwrap();
        pending.abort();
        let _ = pending.await;

        let text = scrape(&registry);
        assert_eq!(
            sample(
                &text,
                r#"gateway_requests_total{method="ping",namespace="none",status="unavailable"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"gateway_requests_total{method="tools/list",namespace="none",status="canceled"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(sample(&text, "gateway_requests_in_flight"), Some(0.0));
    }

    #[tokio::test]
    async fn unknown_methods_are_bounded_to_other() {
        let mut registry = Registry::default();
        let svc = MetricsLayer::new(GatewayMetrics::register(&mut registry)).layer(
            tower::service_fn(|_r: JsonRpcRequest| async {
                Ok::<_, std::convert::Infallible>(message_response(
                    r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
                ))
            }),
        );
        for i in 0..5 {
            let raw = format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"made/up/{i}"}}"#);
            svc.clone().oneshot(message_request(&raw)).await.unwrap();
        }
        let text = scrape(&registry);
        assert_eq!(
            sample(
                &text,
                r#"gateway_requests_total{method="other",namespace="none",status="ok"}"#
            ),
            Some(5.0),
            "{text}"
        );
    }
}
