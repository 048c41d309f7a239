//! What every frontend serves: an [`McpHandler`] opens a [`Session`] per client; the session
//! answers the client's messages and sends its own (notifications, server-initiated requests)
//! through an [`Outbox`]. The gateway's proxy and the demo server are both handlers, so both are
//! reachable over Streamable HTTP, legacy SSE, WebSocket and stdio.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use mcp_gateway_layers::classify::{ErrorClass, GatewayError};
use mcp_gateway_layers::edge::error_message;
use mcp_gateway_layers::jsonrpc::Message;
use mcp_gateway_layers::trace::TraceId;
use tokio::sync::mpsc;

/// Protocol versions the gateway speaks, newest first.
pub const SUPPORTED_PROTOCOL_VERSIONS: [&str; 4] =
    ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// The version to answer a client that asked for `requested`: the same when supported, else the
/// newest the gateway speaks (the client then decides whether it can use it).
pub fn negotiate_version(requested: Option<&str>) -> &'static str {
    requested
        .and_then(|r| {
            SUPPORTED_PROTOCOL_VERSIONS
                .iter()
                .find(|v| **v == r)
                .copied()
        })
        .unwrap_or(SUPPORTED_PROTOCOL_VERSIONS[0])
}

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Which client transport a session came in on (the `transport` label of sessions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientTransport {
    /// Streamable HTTP at `/mcp`.
    StreamableHttp,
    /// Legacy HTTP+SSE at `/sse`.
    Sse,
    /// WebSocket at `/ws`.
    WebSocket,
    /// stdin/stdout (the demo server).
    Stdio,
}

impl ClientTransport {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientTransport::StreamableHttp => "streamable_http",
            ClientTransport::Sse => "sse",
            ClientTransport::WebSocket => "websocket",
            ClientTransport::Stdio => "stdio",
        }
    }
}

/// Messages from the server side to the client that are not answers to the client's requests.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Bytes>,
}

impl Outbox {
    /// An outbox and the receiver its frontend drains; `capacity` bounds what waits.
    pub fn new(capacity: usize) -> (Outbox, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Outbox { tx }, rx)
    }

    /// The channel behind the outbox, for routes that deliver to the client directly.
    pub fn sender(&self) -> mpsc::Sender<Bytes> {
        self.tx.clone()
    }

    /// Sends a message to the client; waits while the client is slow, fails when it is gone.
    pub async fn send(&self, raw: Bytes) -> Result<(), Bytes> {
        self.tx.send(raw).await.map_err(|e| e.0)
    }
}

/// What a frontend knows about one client message.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// Where messages related to this request go (a Streamable HTTP POST answered as SSE):
    /// progress and server requests made while it runs. `None`: they go to the outbox.
    pub related: Option<mpsc::Sender<Bytes>>,
    /// The HTTP headers the message came with (the upgrade request's for WebSocket, shared by
    /// every message of the connection).
    pub headers: Arc<HeaderMap>,
    /// The client's address.
    pub client_addr: Option<std::net::SocketAddr>,
    /// The transport's session id (`Mcp-Session-Id`, the SSE `sessionId`, the WebSocket's own).
    pub session_id: Option<Arc<str>>,
}

/// A client session.
pub trait Session: Send + Sync + 'static {
    /// Handles one message from the client. Requests resolve to their response; notifications
    /// and responses resolve to `None`.
    fn handle(self: Arc<Self>, message: Message, ctx: RequestContext)
    -> BoxFuture<Option<Message>>;

    /// The session ends (client gone, DELETE, shutdown): release what it holds.
    fn close(&self);
}

/// Makes sessions.
pub trait McpHandler: Send + Sync + 'static {
    /// Opens a session for a client on `transport`; its server-to-client messages go to `outbox`.
    fn open(&self, transport: ClientTransport, outbox: Outbox) -> Arc<dyn Session>;

    /// The server stops: release what outlives sessions (shared backend processes).
    fn shutdown(&self) {}
}

/// A JSON-RPC success response to the request with raw id `id`.
pub fn result_message(id: Option<&str>, result: &str) -> Message {
    let raw = format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{result}}}"#,
        id.unwrap_or("null")
    );
    Message::parse(Bytes::from(raw)).expect("a result built from valid JSON")
}

/// A JSON-RPC error response for a gateway-made error.
pub fn error_response(
    id: Option<&str>,
    error: &GatewayError,
    trace_id: Option<TraceId>,
) -> Message {
    class_error_response(id, error.class(), error.message(), trace_id)
}

/// A JSON-RPC error response for a class and a public message.
pub fn class_error_response(
    id: Option<&str>,
    class: &ErrorClass,
    message: &str,
    trace_id: Option<TraceId>,
) -> Message {
    Message::parse(error_message(id, class, message, trace_id))
        .expect("the edge writes valid JSON-RPC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_answers_supported_versions_and_falls_back_to_the_newest() {
        assert_eq!(negotiate_version(Some("2025-06-18")), "2025-06-18");
        assert_eq!(negotiate_version(Some("2026-07-28")), "2025-11-25");
        assert_eq!(negotiate_version(None), "2025-11-25");
    }
}
