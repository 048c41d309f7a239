//! What every frontend serves: an [`McpHandler`] opens a [`Session`] per client; the session
//! answers the client's messages and sends its own (notifications, server-initiated requests)
//! through an [`Outbox`]. The gateway's proxy and the demo server are both handlers, so both are
//! reachable over Streamable HTTP, legacy SSE, WebSocket and stdio.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use mcp_gateway_layers::classify::{ErrorClass, GatewayError};
use mcp_gateway_layers::edge::error_message;
use mcp_gateway_layers::headers::ClientHeaders;
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

/// Boxes the future `make` returns, made in its box: `Box::pin(future)` builds a future on the
/// stack and copies it whole (its largest state, not what it holds yet) into the box.
#[inline(always)]
pub(crate) fn box_made<F>(make: impl FnOnce() -> F) -> BoxFuture<F::Output>
where
    F: Future + Send + 'static,
{
    let made: Box<F> = Box::write(Box::new_uninit(), make());
    Box::into_pin(made)
}

/// A boxed future that may borrow: for a rare or once-a-connection path, so that the futures
/// that await it (each copied whole into its parent on a call's path) hold a pointer, not its
/// size (docs/PERFORMANCE.md).
pub(crate) type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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

/// Where messages for a client go: a frontend's channel, which its writer drains, or a sink that
/// takes each at once.
#[derive(Clone)]
pub enum ClientStream {
    /// Waits while the channel is full (the client is slow); fails when its receiver is gone.
    Channel(mpsc::Sender<Bytes>),
    /// Takes the message at once: a Streamable HTTP session's replay log, kept without a
    /// channel and a task of its own (2 KB of each idle session's 8 KB).
    Sink(Arc<dyn Fn(Bytes) + Send + Sync>),
}

impl ClientStream {
    /// Sends a message; gives it back when the channel's receiver is gone. A sink takes it at
    /// once, before the future is polled. Not an `async fn`: a nested one added 96 bytes to
    /// every future that awaits it, the idle tasks of every session among them.
    pub fn send(&self, raw: Bytes) -> impl Future<Output = Result<(), Bytes>> + Send + '_ {
        use futures_util::FutureExt;
        use futures_util::future::Either;
        match self {
            ClientStream::Channel(tx) => Either::Left(tx.send(raw).map(|r| r.map_err(|e| e.0))),
            ClientStream::Sink(sink) => {
                sink(raw);
                Either::Right(std::future::ready(Ok(())))
            }
        }
    }
}

impl std::fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientStream::Channel(_) => "ClientStream::Channel",
            ClientStream::Sink(_) => "ClientStream::Sink",
        })
    }
}

/// Messages from the server side to the client that are not answers to the client's requests.
#[derive(Debug, Clone)]
pub struct Outbox {
    stream: ClientStream,
}

impl Outbox {
    /// An outbox and the receiver its frontend drains; `capacity` bounds what waits.
    pub fn new(capacity: usize) -> (Outbox, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(capacity);
        let stream = ClientStream::Channel(tx);
        (Outbox { stream }, rx)
    }

    /// An outbox whose messages `sink` takes at once, in order.
    pub fn sink(sink: impl Fn(Bytes) + Send + Sync + 'static) -> Outbox {
        let stream = ClientStream::Sink(Arc::new(sink));
        Outbox { stream }
    }

    /// Where the outbox's messages go, for routes that deliver to the client directly.
    pub fn stream(&self) -> ClientStream {
        self.stream.clone()
    }

    /// Sends a message to the client: through a channel it waits while the client is slow and
    /// fails when it is gone; a sink takes it at once.
    pub fn send(&self, raw: Bytes) -> impl Future<Output = Result<(), Bytes>> + Send + '_ {
        self.stream.send(raw)
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
    pub headers: Arc<ClientHeaders>,
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

    /// Every session's idle tasks hold futures that await the outbox: its send may cost no more
    /// than the channel's own (a nested `async fn` had added 96 bytes).
    #[test]
    fn an_outbox_send_is_as_small_as_the_channel_send() {
        let (outbox, _rx) = Outbox::new(1);
        let (tx, _rx) = mpsc::channel::<Bytes>(1);
        let outbox_send = std::mem::size_of_val(&outbox.send(Bytes::new()));
        let channel_send = std::mem::size_of_val(&tx.send(Bytes::new()));
        assert!(
            outbox_send <= channel_send + 16,
            "{outbox_send} against {channel_send}"
        );
    }

    #[tokio::test]
    async fn a_sink_outbox_takes_each_message_at_once_in_order() {
        let taken = Arc::new(std::sync::Mutex::new(Vec::new()));
        let into = taken.clone();
        let outbox = Outbox::sink(move |raw| into.lock().unwrap().push(raw));
        let stream = outbox.stream();
        let first = outbox.send(Bytes::from_static(b"1"));
        // Taken before the future is polled: what is sent next cannot overtake it.
        assert_eq!(taken.lock().unwrap().len(), 1);
        stream.send(Bytes::from_static(b"2")).await.unwrap();
        first.await.unwrap();
        assert_eq!(
            *taken.lock().unwrap(),
            [Bytes::from_static(b"1"), Bytes::from_static(b"2")]
        );
    }
}
