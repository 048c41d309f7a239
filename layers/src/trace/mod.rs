//! W3C trace propagation for MCP: the caller's context is read from `traceparent`/`tracestate`/
//! `baggage` HTTP headers and from JSON-RPC `params._meta` (SEP-414; `_meta` wins), a server
//! span is started with the OpenTelemetry MCP attributes (a sampled one; an unsampled span is
//! never exported and carries only what log lines carry: `sampled`, trace and span ids, method,
//! request id, session), and its [`TraceContext`] goes with the request (an HTTP request's
//! extensions, a JSON-RPC request's context: [`RequestParts::trace_context`](crate::parts::RequestParts::trace_context)),
//! where log events, metric exemplars and [`PropagateTraceLayer`] read it.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use mcp_gateway_layers::trace::{TraceContext, TraceLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let svc = ServiceBuilder::new().layer(TraceLayer::new()).service(service_fn(|req: http::Request<Full<Bytes>>| async move {
//!     let ctx = req.extensions().get::<TraceContext>().unwrap();
//!     Ok::<_, std::convert::Infallible>(http::Response::new(ctx.trace_id.to_string()))
//! }));
//! let req = http::Request::builder()
//!     .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
//!     .body(Full::default()).unwrap();
//! let resp = svc.oneshot(req).await.unwrap();
//! assert_eq!(resp.body(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! # }
//! ```

mod context;
mod future;
mod layer;
mod propagate;
mod scope;
mod service;

pub use context::{Hex, SpanId, TraceContext, TraceId, TraceParent};
pub use future::ResponseFuture;
pub use layer::TraceLayer;
pub use propagate::{InjectTrace, PropagateTrace, PropagateTraceLayer};
pub use scope::{Entered, LogScope};
pub use service::Trace;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parts::{JsonRpcRequest, JsonRpcResponse, RequestParts};
    use crate::test_support::*;
    use tower::{Layer, Service, ServiceExt};
    use tower_test::mock;

    const HEADER_PARENT: &str = "00-11111111111111111111111111111111-2222222222222222-01";
    const META_PARENT: &str = "00-33333333333333333333333333333333-4444444444444444-00";

    async fn context_seen_by_inner(
        mut req: JsonRpcRequest,
        header: Option<&'static str>,
    ) -> TraceContext {
        if let Some(h) = header {
            let mut headers = http::HeaderMap::new();
            headers.insert("traceparent", http::HeaderValue::from_static(h));
            req.extensions
                .insert(crate::parts::RequestHeaders(std::sync::Arc::new(headers)));
        }
        let (inner, mut handle) = mock::pair::<JsonRpcRequest, JsonRpcResponse>();
        let call = tokio::spawn(TraceLayer::new().layer(inner).oneshot(req));
        let (seen, send) = handle.next_request().await.unwrap();
        send.send_response(message_response(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#));
        call.await.unwrap().unwrap();
        seen.trace_context().unwrap().clone()
    }

    /// The names of the fields each new span was given a value for.
    #[derive(Clone, Default)]
    struct SpanFieldNames(std::sync::Arc<std::sync::Mutex<Vec<Vec<&'static str>>>>);

    impl tracing::Subscriber for SpanFieldNames {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, attrs: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            let mut names = Vec::new();
            attrs.record(&mut |f: &tracing::field::Field, _: &dyn std::fmt::Debug| {
                names.push(f.name());
            });
            self.0.lock().unwrap().push(names);
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, _: &tracing::Event<'_>) {}
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn an_unsampled_span_carries_only_what_log_lines_carry() {
        let names = SpanFieldNames::default();
        tracing::subscriber::with_default(names.clone(), || {
            for flags in ["01", "00"] {
                let mut req = message_request(
                    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#,
                );
                let mut headers = http::HeaderMap::new();
                let parent =
                    format!("00-11111111111111111111111111111111-2222222222222222-{flags}");
                headers.insert("traceparent", parent.parse().unwrap());
                headers.insert("mcp-session-id", "s1".parse().unwrap());
                headers.insert("mcp-protocol-version", "2025-06-18".parse().unwrap());
                req.context.headers = Some(std::sync::Arc::new(headers.into()));
                let inner = tower::service_fn(|_: JsonRpcRequest| {
                    std::future::ready(Ok::<_, std::convert::Infallible>(message_response(
                        r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
                    )))
                });
                // The span is made in `call`; the future is not needed.
                drop(TraceLayer::new().layer(inner).call(req));
            }
        });
        let spans = names.0.lock().unwrap().clone();
        let carried = [
            "sampled",
            "trace_id",
            "span_id",
            "mcp.method.name",
            "jsonrpc.request.id",
            "mcp.session.id",
        ];
        let exported = [
            "otel.kind",
            "parent_span_id",
            "gen_ai.tool.name",
            "mcp.protocol.version",
            "network.transport",
        ];
        let mut all: Vec<_> = carried.iter().chain(&exported).copied().collect();
        let sorted = |mut v: Vec<&'static str>| {
            v.sort_unstable();
            v
        };
        all.sort_unstable();
        assert_eq!(spans.len(), 2);
        assert_eq!(
            sorted(spans[0].clone()),
            all,
            "a sampled span has every attribute"
        );
        assert_eq!(sorted(spans[1].clone()), sorted(carried.to_vec()));
    }

    #[tokio::test]
    async fn an_unsampled_request_can_run_in_a_log_scope_instead_of_a_span() {
        let names = SpanFieldNames::default();
        let _default = tracing::subscriber::set_default(names.clone());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for flags in ["01", "00"] {
            let mut req = message_request(r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#);
            let mut headers = http::HeaderMap::new();
            let parent = format!("00-11111111111111111111111111111111-2222222222222222-{flags}");
            headers.insert("traceparent", parent.parse().unwrap());
            req.context.headers = Some(std::sync::Arc::new(headers.into()));
            req.context.session_id = Some(std::sync::Arc::from("s1"));
            let record = seen.clone();
            let inner = tower::service_fn(move |_: JsonRpcRequest| {
                let record = record.clone();
                // Read when the inner future is polled, as a log line written there would be.
                async move {
                    let scope = LogScope::with_current(|s| {
                        s.map(|s| {
                            let id = s.request_id().map(str::to_owned);
                            (s.trace_id.to_string(), id, s.session_id.clone())
                        })
                    });
                    record.lock().unwrap().push(scope);
                    let resp = message_response(r#"{"jsonrpc":"2.0","id":7,"result":{}}"#);
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let mut svc = TraceLayer::new().scope_unsampled_requests().layer(inner);
            svc.ready().await.unwrap().call(req).await.unwrap();
        }
        LogScope::with_current(|s| assert!(s.is_none(), "the scope ends with the request"));
        assert_eq!(
            names.0.lock().unwrap().len(),
            1,
            "a span for the sampled request alone"
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0], None);
        assert_eq!(
            seen[1],
            Some((
                "1".repeat(32),
                Some("7".to_owned()),
                Some(std::sync::Arc::from("s1"))
            ))
        );
    }

    #[tokio::test]
    async fn meta_wins_over_headers_and_a_root_is_made_when_neither_is_valid() {
        let with_meta = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"x","_meta":{{"traceparent":"{META_PARENT}"}}}}}}"#
        );
        let ctx = context_seen_by_inner(message_request(&with_meta), Some(HEADER_PARENT)).await;
        assert_eq!(ctx.trace_id.to_string(), "33333333333333333333333333333333");
        assert_eq!(ctx.parent_span_id.unwrap().to_string(), "4444444444444444");
        assert!(!ctx.sampled, "the caller's sampling decision is kept");

        let plain = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        let ctx = context_seen_by_inner(message_request(plain), Some(HEADER_PARENT)).await;
        assert_eq!(ctx.trace_id.to_string(), "11111111111111111111111111111111");

        let bad_meta = r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"traceparent":"garbage"}}}"#;
        let ctx = context_seen_by_inner(message_request(bad_meta), None).await;
        assert_eq!(ctx.parent_span_id, None);
        assert!(ctx.sampled);
    }
}
