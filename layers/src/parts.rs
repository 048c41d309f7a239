//! The small traits through which every layer works on both HTTP messages and the gateway's
//! per-JSON-RPC-message service, and the per-message request and response types.
//!
//! One WebSocket or SSE connection carries many JSON-RPC requests; the gateway runs the layers
//! once per message by wrapping each in a [`JsonRpcRequest`] / [`JsonRpcResponse`].

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use http::{Extensions, HeaderMap};

use crate::jsonrpc::Message;

/// What a layer reads from (and adds to) a request.
pub trait RequestParts {
    /// Typed values that travel with the request.
    fn extensions(&self) -> &Extensions;
    /// Typed values that travel with the request, to add to.
    fn extensions_mut(&mut self) -> &mut Extensions;
    /// HTTP headers, when the request is an HTTP request.
    fn headers(&self) -> Option<&HeaderMap>;
    /// The peeked JSON-RPC message, when known.
    fn message(&self) -> Option<&Message>;
}

/// What a layer reads from (and adds to) a response.
pub trait ResponseParts {
    /// Typed values that travel with the response.
    fn extensions(&self) -> &Extensions;
    /// Typed values that travel with the response, to add to.
    fn extensions_mut(&mut self) -> &mut Extensions;
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
    /// Typed values set by the transport and layers (trace context, namespace, session,
    /// [`RequestHeaders`]).
    pub extensions: Extensions,
}

impl JsonRpcRequest {
    /// Wraps a message with empty extensions.
    pub fn new(message: Message) -> Self {
        JsonRpcRequest {
            message,
            extensions: Extensions::new(),
        }
    }
}

/// The answer to one [`JsonRpcRequest`].
#[derive(Debug, Clone)]
pub struct JsonRpcResponse {
    /// The message, raw.
    pub message: Message,
    /// Typed values set on the way back (classification).
    pub extensions: Extensions,
}

impl JsonRpcResponse {
    /// Wraps a message with empty extensions.
    pub fn new(message: Message) -> Self {
        JsonRpcResponse {
            message,
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
        self.extensions.get::<RequestHeaders>().map(|h| &*h.0)
    }
    fn message(&self) -> Option<&Message> {
        Some(&self.message)
    }
}

impl ResponseParts for JsonRpcResponse {
    fn extensions(&self) -> &Extensions {
        &self.extensions
    }
    fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }
}

/// The namespace (backend group) a request is routed to: a bounded label, set by the router.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace(Arc<str>);

static UNROUTED: LazyLock<Namespace> = LazyLock::new(|| Namespace(Arc::from("none")));

impl Namespace {
    /// A namespace from configuration.
    pub fn new(name: &str) -> Self {
        Namespace(Arc::from(name))
    }

    /// The label of requests that are not routed to one namespace: `none`.
    pub fn unrouted() -> Self {
        UNROUTED.clone()
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
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
        std::fmt::Write::write_str(encoder, &self.0)
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
    pub fn of<R: RequestParts>(req: &R) -> Option<Arc<str>> {
        if let Some(id) = req.extensions().get::<SessionId>() {
            return Some(id.0.clone());
        }
        const MCP_SESSION_ID: http::HeaderName = http::HeaderName::from_static("mcp-session-id");
        let header = req.headers()?.get(MCP_SESSION_ID)?.to_str().ok()?;
        Some(Arc::from(header))
    }
}
