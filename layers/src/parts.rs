//! The small traits through which every layer works on both HTTP messages and the gateway's
//! per-JSON-RPC-message service, and the per-message request and response types.
//!
//! One WebSocket or SSE connection carries many JSON-RPC requests; the gateway runs the layers
//! once per message by wrapping each in a [`JsonRpcRequest`] / [`JsonRpcResponse`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{Extensions, HeaderMap, HeaderName, HeaderValue};

use crate::classify::Classification;
use crate::headers::ClientHeaders;
use crate::jsonrpc::Message;
use crate::trace::TraceContext;

/// What a layer reads from (and adds to) a request.
pub trait RequestParts {
    /// Typed values that travel with the request.
    fn extensions(&self) -> &Extensions;
    /// Typed values that travel with the request, to add to.
    fn extensions_mut(&mut self) -> &mut Extensions;
    /// HTTP headers, when the request is an HTTP request.
    fn headers(&self) -> Option<&HeaderMap>;
    /// The first value of one HTTP header, when the request is an HTTP request and has it.
    /// Layers read single headers through this: a request can answer it without a `HeaderMap`.
    fn header(&self, name: &HeaderName) -> Option<&[u8]> {
        self.headers()?.get(name).map(HeaderValue::as_bytes)
    }
    /// The peeked JSON-RPC message, when known.
    fn message(&self) -> Option<&Message>;
    /// The namespace the request is routed to; [`Namespace::unrouted`] when none.
    fn namespace(&self) -> Namespace {
        Namespace::of(self.extensions())
    }
    /// The client's address, when known.
    fn client_addr(&self) -> Option<SocketAddr> {
        self.extensions().get::<ClientAddr>().map(|a| a.0)
    }
    /// The MCP session the request belongs to, when known.
    fn session_id(&self) -> Option<Arc<str>> {
        SessionId::of(self)
    }
    /// The trace context the trace layer gave the request, when it ran.
    fn trace_context(&self) -> Option<&TraceContext> {
        self.extensions().get::<TraceContext>()
    }
    /// Gives the request its trace context (the trace layer does).
    fn set_trace_context(&mut self, ctx: TraceContext) {
        self.extensions_mut().insert(ctx);
    }
}

/// What a layer reads from (and adds to) a response.
pub trait ResponseParts {
    /// Typed values that travel with the response.
    fn extensions(&self) -> &Extensions;
    /// Typed values that travel with the response, to add to.
    fn extensions_mut(&mut self) -> &mut Extensions;
    /// The verdict the classify (or edge) layer put on the response, when one ran.
    fn classification(&self) -> Option<&Classification> {
        self.extensions().get::<Classification>()
    }
    /// Puts the verdict on the response.
    fn set_classification(&mut self, classification: Classification) {
        self.extensions_mut().insert(classification);
    }
}

impl<B> RequestParts for http::Request<B> {
    fn extensions(&self) -> &Extensions {
        http::Request::extensions(self)
    }
    fn extensions_mut(&mut self) -> &mut Extensions {
        http::Request::extensions_mut(self)
    }
    fn headers(&self) -> Option<&HeaderMap> {
        Some(http::Request::headers(self))
    }
    fn message(&self) -> Option<&Message> {
        http::Request::extensions(self).get::<Message>()
    }
}

impl<B> ResponseParts for http::Response<B> {
    fn extensions(&self) -> &Extensions {
        http::Response::extensions(self)
    }
    fn extensions_mut(&mut self) -> &mut Extensions {
        http::Response::extensions_mut(self)
    }
}

/// One JSON-RPC request or notification from a client, on its way through the per-message stack.
#[derive(Debug, Clone)]
pub struct JsonRpcRequest {
    /// The message, raw.
    pub message: Message,
    /// Who sent it and where it goes.
    pub context: RequestContext,
    /// Other typed values set by the transport and layers (the trace context among them).
    pub extensions: Extensions,
}

/// What the transport, the router and the trace layer know of a [`JsonRpcRequest`], in fields
/// rather than extensions: the retry layer keeps a clone of every request, and a clone of these is
/// a few reference counts where each extension is an allocation. Where a field is unset, readers
/// fall back to the matching extension ([`Namespace`], [`RequestHeaders`], [`ClientAddr`],
/// [`SessionId`], [`TraceContext`]).
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The namespace the request is routed to.
    pub namespace: Option<Namespace>,
    /// The HTTP headers the request came with.
    pub headers: Option<Arc<ClientHeaders>>,
    /// The client's address.
    pub client_addr: Option<SocketAddr>,
    /// The MCP session.
    pub session_id: Option<Arc<str>>,
    /// The trace context, set by the trace layer.
    pub trace: Option<TraceContext>,
}

impl JsonRpcRequest {
    /// Wraps a message with an empty context and no extensions.
    pub fn new(message: Message) -> Self {
        JsonRpcRequest {
            message,
            context: RequestContext::default(),
            extensions: Extensions::new(),
        }
    }
}

/// The answer to one [`JsonRpcRequest`].
#[derive(Debug, Clone)]
pub struct JsonRpcResponse {
    /// The message, raw.
    pub message: Message,
    /// The verdict, set by the classify or edge layer; a field rather than an extension, as it is
    /// on every response.
    pub classification: Option<Classification>,
    /// Other typed values set on the way back.
    pub extensions: Extensions,
}

impl JsonRpcResponse {
    /// Wraps a message, not classified yet, with empty extensions.
    pub fn new(message: Message) -> Self {
        JsonRpcResponse {
            message,
            classification: None,
            extensions: Extensions::new(),
        }
    }
}

impl RequestParts for JsonRpcRequest {
    fn extensions(&self) -> &Extensions {
        &self.extensions
    }
    fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }
    fn headers(&self) -> Option<&HeaderMap> {
        match &self.context.headers {
            Some(headers) => Some(headers.map()),
            None => self.extensions.get::<RequestHeaders>().map(|h| &*h.0),
        }
    }
    fn header(&self, name: &HeaderName) -> Option<&[u8]> {
        match &self.context.headers {
            Some(headers) => headers.get(name),
            None => self
                .extensions
                .get::<RequestHeaders>()?
                .0
                .get(name)
                .map(HeaderValue::as_bytes),
        }
    }
    fn message(&self) -> Option<&Message> {
        Some(&self.message)
    }
    fn namespace(&self) -> Namespace {
        match &self.context.namespace {
            Some(namespace) => *namespace,
            None => Namespace::of(&self.extensions),
        }
    }
    fn client_addr(&self) -> Option<SocketAddr> {
        self.context
            .client_addr
            .or_else(|| self.extensions.get::<ClientAddr>().map(|a| a.0))
    }
    fn session_id(&self) -> Option<Arc<str>> {
        match &self.context.session_id {
            Some(id) => Some(id.clone()),
            None => SessionId::of(self),
        }
    }
    fn trace_context(&self) -> Option<&TraceContext> {
        self.context
            .trace
            .as_ref()
            .or_else(|| self.extensions.get::<TraceContext>())
    }
    fn set_trace_context(&mut self, ctx: TraceContext) {
        self.context.trace = Some(ctx);
    }
}

impl ResponseParts for JsonRpcResponse {
    fn extensions(&self) -> &Extensions {
        &self.extensions
    }
    fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }
    fn classification(&self) -> Option<&Classification> {
        self.classification
            .as_ref()
            .or_else(|| self.extensions.get::<Classification>())
    }
    fn set_classification(&mut self, classification: Classification) {
        self.classification = Some(classification);
    }
}

/// The namespace (backend group) a request is routed to: a bounded label, set by the router.
/// Interned: each distinct name is kept once for the process's life, so that a request's copies
/// of it (its context, the retry layer's copy, the metrics' key) touch no reference count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Namespace(&'static str);

impl Namespace {
    /// A namespace from configuration. Its names are as bounded as its labels must be: each
    /// distinct one is kept for the process's life.
    pub fn new(name: &str) -> Self {
        static INTERNED: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
        let mut interned = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
        match interned.get(name) {
            Some(kept) => Namespace(kept),
            None => {
                let kept: &'static str = Box::leak(name.into());
                interned.insert(kept);
                Namespace(kept)
            }
        }
    }

    /// The label of requests that are not routed to one namespace: `none`.
    pub fn unrouted() -> Self {
        Namespace("none")
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        self.0
    }

    /// The namespace a request carries, or [`Namespace::unrouted`].
    pub fn of(extensions: &Extensions) -> Self {
        extensions
            .get::<Namespace>()
            .cloned()
            .unwrap_or_else(Namespace::unrouted)
    }
}

impl prometheus_client::encoding::EncodeLabelValue for Namespace {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.0)
    }
}

/// The client's address, set by whoever accepted the connection; read by logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// The HTTP headers a JSON-RPC request came with, shared: the retry layer clones every request.
#[derive(Debug, Clone)]
pub struct RequestHeaders(pub Arc<HeaderMap>);

/// The MCP session a request belongs to, set by the transport; read by logs and spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionId(pub Arc<str>);

impl SessionId {
    /// The session a request carries: the extension, else its `Mcp-Session-Id` header.
    pub fn of<R: RequestParts + ?Sized>(req: &R) -> Option<Arc<str>> {
        if let Some(id) = req.extensions().get::<SessionId>() {
            return Some(id.0.clone());
        }
        const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
        let header = crate::headers::visible_ascii(req.header(&MCP_SESSION_ID)?)?;
        Some(Arc::from(header))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Verdict;

    #[test]
    fn a_namespace_is_kept_once_for_each_name() {
        let (a, b) = (
            Namespace::new("files"),
            Namespace::new(&String::from("files")),
        );
        assert_eq!(a, b);
        assert!(std::ptr::eq(a.as_str(), b.as_str()), "one copy of a name");
        assert_ne!(Namespace::new("search"), a);
        assert_eq!(Namespace::new("search").as_str(), "search");
        assert_eq!(Namespace::unrouted().as_str(), "none");
    }

    fn request() -> JsonRpcRequest {
        let raw = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        JsonRpcRequest::new(Message::parse(raw.into()).unwrap())
    }

    #[test]
    fn the_context_is_read_first_and_extensions_after() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("mcp-session-id", "from-header".parse().unwrap());
        // Nothing set: unrouted, no address; the session comes from the header.
        let mut req = request();
        assert_eq!(req.namespace(), Namespace::unrouted());
        assert_eq!(req.client_addr(), None);
        req.extensions
            .insert(RequestHeaders(Arc::new(headers.clone())));
        assert_eq!(req.session_id().as_deref(), Some("from-header"));
        // Extensions serve where the context is unset.
        req.extensions.insert(Namespace::new("ext"));
        req.extensions.insert(ClientAddr(addr));
        req.extensions.insert(SessionId("ext-session".into()));
        let from_extension = TraceContext::root(1.0);
        req.extensions.insert(from_extension.clone());
        assert_eq!(req.namespace().as_str(), "ext");
        assert_eq!(req.client_addr(), Some(addr));
        assert_eq!(req.session_id().as_deref(), Some("ext-session"));
        assert_eq!(req.trace_context().unwrap().span_id, from_extension.span_id);
        // The context wins, and a clone (the retry layer's) keeps it.
        let other: SocketAddr = "[::1]:10".parse().unwrap();
        req.context = RequestContext {
            namespace: Some(Namespace::new("ctx")),
            headers: Some(Arc::new(ClientHeaders::default())),
            client_addr: Some(other),
            session_id: Some("ctx-session".into()),
            trace: None,
        };
        let from_layer = from_extension.child();
        req.set_trace_context(from_layer.clone());
        let clone = req.clone();
        for r in [&req, &clone] {
            assert_eq!(r.namespace().as_str(), "ctx");
            assert_eq!(r.client_addr(), Some(other));
            assert_eq!(r.session_id().as_deref(), Some("ctx-session"));
            assert!(r.headers().unwrap().is_empty());
            assert_eq!(r.trace_context().unwrap().span_id, from_layer.span_id);
        }
    }

    #[test]
    fn a_messages_verdict_is_a_field_and_the_field_wins() {
        let raw = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        let mut resp = JsonRpcResponse::new(Message::parse(raw.into()).unwrap());
        assert!(resp.classification().is_none());
        let canceled = Verdict::canceled();
        resp.extensions.insert(Classification::decided(canceled));
        assert_eq!(resp.classification().unwrap().get(), Some(canceled));
        resp.set_classification(Classification::decided(Verdict::Success));
        assert_eq!(resp.classification().unwrap().get(), Some(Verdict::Success));
        assert!(resp.classification.is_some());
        // Setting through the trait adds no extension.
        let mut fresh = JsonRpcResponse::new(resp.message.clone());
        fresh.set_classification(Classification::decided(Verdict::Success));
        assert!(fresh.extensions.is_empty());
    }
}
