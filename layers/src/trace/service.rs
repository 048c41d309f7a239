use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue};
use tower::{BoxError, Service};
use tracing::field::Empty;

use std::sync::Arc;

use super::{Hex, LogScope, ResponseFuture, SpanId, TraceContext, TraceParent};
use crate::parts::{RequestParts, ResponseParts};

/// The service made by [`TraceLayer`](super::TraceLayer).
#[derive(Debug, Clone)]
pub struct Trace<S> {
    pub(super) inner: S,
    pub(super) sample_ratio: f64,
    pub(super) scope_unsampled: bool,
}

// Named once: a lookup by a string parses the name every time.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const BAGGAGE: HeaderName = HeaderName::from_static("baggage");
const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");

/// The caller's context: `_meta` first, then HTTP headers; a new root when neither is valid.
pub(crate) fn incoming_context<R: RequestParts>(req: &R, sample_ratio: f64) -> TraceContext {
    if let Some(msg) = req.message() {
        if let Some(parent) = msg.meta_traceparent().and_then(TraceParent::parse) {
            let value = |v: Option<&str>| v.and_then(|s| HeaderValue::from_str(s).ok());
            return TraceContext::child_of(
                &parent,
                value(msg.meta_tracestate()),
                value(msg.meta_baggage()),
            );
        }
    }
    if let Some(parent) = header(req, &TRACEPARENT).and_then(TraceParent::parse) {
        let value = |name| {
            req.header(name)
                .and_then(|v| HeaderValue::from_bytes(v).ok())
        };
        return TraceContext::child_of(&parent, value(&TRACESTATE), value(&BAGGAGE));
    }
    TraceContext::root(sample_ratio)
}

fn header<'a, R: RequestParts>(req: &'a R, name: &HeaderName) -> Option<&'a str> {
    crate::headers::visible_ascii(req.header(name)?)
}

impl<S, Req> Service<Req> for Trace<S>
where
    S: Service<Req>,
    S::Response: ResponseParts,
    S::Error: Into<BoxError>,
    Req: RequestParts,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let ctx = incoming_context(&req, self.sample_ratio);
        let msg = req.message();
        // An unsampled span is never exported: it carries only what log lines carry (ids,
        // method, session), and the exporter's attributes are neither computed nor visited.
        let sampled = ctx.sampled;
        let (span, mut scope) = if !sampled && self.scope_unsampled {
            let session = req
                .session_id()
                .or_else(|| header(&req, &MCP_SESSION_ID).map(Arc::from));
            let scope = LogScope::new(ctx.trace_id, ctx.span_id, session, msg);
            (tracing::Span::none(), Some(Arc::new(scope)))
        } else {
            let parent_hex = ctx.parent_span_id.filter(|_| sampled).map(SpanId::hex);
            let span = tracing::info_span!(
                "mcp.server",
                otel.kind = sampled.then_some("server"),
                sampled,
                trace_id = ctx.trace_id.hex().as_str(),
                span_id = ctx.span_id.hex().as_str(),
                parent_span_id = parent_hex.as_ref().map(Hex::as_str),
                mcp.method.name = msg.and_then(|m| m.method_name()),
                jsonrpc.request.id = msg.and_then(|m| m.id_raw()),
                gen_ai.tool.name = msg.filter(|_| sampled).and_then(|m| m.tool_name()),
                mcp.session.id = header(&req, &MCP_SESSION_ID),
                mcp.protocol.version =
                    sampled.then(|| header(&req, &MCP_PROTOCOL_VERSION)).flatten(),
                network.transport = sampled.then_some("tcp"),
                error.type = Empty,
            );
            (span, None)
        };
        req.set_trace_context(ctx);
        let future = {
            let _entered = span.enter();
            let _scoped = LogScope::enter(&mut scope);
            self.inner.call(req)
        };
        ResponseFuture::new(future, span, scope)
    }
}
