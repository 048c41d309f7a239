//! The client side: a span per outbound call, its context written into the outbound request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{Hex, SpanId, TraceContext};
use crate::parts::{JsonRpcRequest, RequestParts};

/// An outbound request that can carry a trace context.
pub trait InjectTrace: RequestParts {
    /// Writes `ctx` into the request's carriers.
    fn inject(&mut self, ctx: &TraceContext);
}

impl<B> InjectTrace for http::Request<B> {
    fn inject(&mut self, ctx: &TraceContext) {
        ctx.inject_headers(self.headers_mut());
    }
}

impl InjectTrace for JsonRpcRequest {
    /// `_meta` is the only carrier over stdio and WebSocket; HTTP transports also copy it from
    /// `_meta` into headers.
    fn inject(&mut self, ctx: &TraceContext) {
        let traceparent = ctx.traceparent();
        let mut members = vec![("traceparent", traceparent.as_str())];
        let state = ctx.tracestate.as_ref().and_then(|v| v.to_str().ok());
        let baggage = ctx.baggage.as_ref().and_then(|v| v.to_str().ok());
        members.extend(state.map(|v| ("tracestate", v)));
        members.extend(baggage.map(|v| ("baggage", v)));
        self.message = self.message.with_meta(&members);
    }
}

/// Starts a client span under the request's [`TraceContext`] (or a new root) and writes the
/// client span's context into the outbound request.
#[derive(Debug, Clone, Copy, Default)]
pub struct PropagateTraceLayer;

impl PropagateTraceLayer {
    /// The layer.
    pub fn new() -> Self {
        PropagateTraceLayer
    }
}

impl<S> Layer<S> for PropagateTraceLayer {
    type Service = PropagateTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PropagateTrace { inner }
    }
}

/// The service made by [`PropagateTraceLayer`].
#[derive(Debug, Clone)]
pub struct PropagateTrace<S> {
    inner: S,
}

impl<S, Req> Service<Req> for PropagateTrace<S>
where
    S: Service<Req>,
    Req: InjectTrace,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = PropagateFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let ctx = match req.trace_context() {
            Some(server) => server.child(),
            None => TraceContext::root(1.0),
        };
        let parent_hex = ctx.parent_span_id.map(SpanId::hex);
        let span = tracing::info_span!(
            "mcp.client",
            otel.kind = "client",
            sampled = ctx.sampled,
            trace_id = ctx.trace_id.hex().as_str(),
            span_id = ctx.span_id.hex().as_str(),
            parent_span_id = parent_hex.as_ref().map(Hex::as_str),
            mcp.method.name = req.message().and_then(|m| m.method_name()),
            jsonrpc.request.id = req.message().and_then(|m| m.id_raw()),
        );
        req.inject(&ctx);
        req.set_trace_context(ctx);
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        PropagateFuture { inner, span }
    }
}

pin_project! {
    /// The future of [`PropagateTrace`]: runs the call inside the client span.
    #[derive(Debug)]
    pub struct PropagateFuture<F> {
        #[pin]
        inner: F,
        span: tracing::Span,
    }
}

impl<F: Future> Future for PropagateFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        this.inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::Message;
    use crate::trace::TraceParent;
    use tower::ServiceExt;

    #[tokio::test]
    async fn writes_the_client_span_into_meta_and_headers() {
        let server = TraceContext::child_of(
            &TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap(),
            None,
            None,
        );
        let msg = Message::parse(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#.into()).unwrap();
        let mut req = JsonRpcRequest::new(msg);
        req.extensions.insert(server.clone());
        let svc =
            PropagateTraceLayer::new().layer(tower::service_fn(|req: JsonRpcRequest| async move {
                Ok::<_, std::convert::Infallible>(req)
            }));
        let sent = svc.oneshot(req).await.unwrap();
        let tp = TraceParent::parse(sent.message.meta_traceparent().unwrap()).unwrap();
        assert_eq!(tp.trace_id, server.trace_id);
        assert_ne!(tp.span_id, server.span_id);
        assert_eq!(
            sent.trace_context().unwrap().parent_span_id,
            Some(server.span_id)
        );

        let mut http_req = http::Request::new(());
        http_req.extensions_mut().insert(server.clone());
        let svc = PropagateTraceLayer::new().layer(tower::service_fn(
            |req: http::Request<()>| async move { Ok::<_, std::convert::Infallible>(req) },
        ));
        let sent = svc.oneshot(http_req).await.unwrap();
        let tp = TraceParent::parse(sent.headers()["traceparent"].to_str().unwrap()).unwrap();
        assert_eq!(tp.trace_id, server.trace_id);
    }
}
