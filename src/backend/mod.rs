//! Backends: each transport connects with an [`Inbox`] for what the backend sends and returns a
//! [`PipeTx`] for what goes to it; a [`BackendClient`] sits on the connection, rewrites request
//! ids so that many clients' ids never collide, matches answers to calls, times calls out, and
//! keeps the connection up: a stdio process is restarted, a network connection re-made, with
//! exponential backoff and jitter, until too many failures in a window mark the backend down
//! (crash-loop protection).

mod client;
mod http1;
mod sse;
mod stdio;
mod streamable_http;
mod websocket;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::Either;
use mcp_gateway_layers::jsonrpc::Message;
use tokio::sync::mpsc;

pub use client::{BackendClient, BackendEvent, BackendMetrics, EventTarget, Inbox, ProgressRoute};
pub use http1::HttpPool;
pub(crate) use http1::set_connection_thread;
pub use stdio::wait_for_children;

use crate::config::{BackendConfig, BackendTransport};
use crate::mcp::BoxFuture;

/// What came from a backend.
#[derive(Debug)]
pub enum Inbound {
    /// A JSON-RPC message.
    Message(Message),
    /// Something that is not one (logged and counted as a backend protocol error).
    Garbage(Box<str>),
}

/// Where messages to a backend go.
#[derive(Clone)]
pub enum PipeTx {
    /// A queue the transport's writer drains (stdio, WebSocket, legacy SSE).
    Queue(mpsc::Sender<Message>),
    /// A Streamable HTTP session: each message is POSTed at once, a call's in the caller's task
    /// and any other on a task of its own, with no queue or writer task in between (an idle
    /// session holds neither).
    Post(Arc<streamable_http::Poster>),
}

impl PipeTx {
    /// Sends, waiting while the queue is full; the message comes back when the connection is gone.
    pub async fn send(&self, msg: Message) -> Result<(), Message> {
        match self {
            PipeTx::Queue(tx) => tx.send(msg).await.map_err(|e| e.0),
            PipeTx::Post(poster) => poster.post(msg),
        }
    }

    /// Sends a call's request. A Streamable HTTP POST runs to its end in the caller's task (its
    /// caller waits for this answer anyway: no task of its own, no wake-up of another worker),
    /// so the answer is in the inbox when this returns; the other transports queue it.
    // Not an `async fn`: its future is the transport's, which one of its own would copy whole.
    pub fn send_call(&self, msg: Message) -> impl Future<Output = Result<(), Message>> + Send + '_ {
        match self {
            PipeTx::Queue(tx) => Either::Left(tx.send(msg).map(|sent| sent.map_err(|e| e.0))),
            PipeTx::Post(poster) => Either::Right(poster.post_here(msg)),
        }
    }

    /// Sends without waiting; the message comes back when the queue is full or the connection gone.
    pub fn try_send(&self, msg: Message) -> Result<(), Message> {
        match self {
            PipeTx::Queue(tx) => tx.try_send(msg).map_err(|e| e.into_inner()),
            PipeTx::Post(poster) => poster.post(msg),
        }
    }
}

/// Makes connections to one backend.
pub trait Connector: Send + Sync + 'static {
    /// Connects (spawns the process, opens the connection); what the backend sends goes to
    /// `inbox`. The connection ends when every clone of `inbox` is gone; dropping the returned
    /// sender asks it to end (a stdio process is stopped gracefully).
    fn connect(&self, inbox: Inbox) -> BoxFuture<Result<PipeTx, String>>;
}

/// What outbound HTTP requests may carry from the client.
#[derive(Debug, Clone, Default)]
pub struct Forwarded {
    /// The client's `Authorization` header, when `forward_credentials` is on.
    pub authorization: Option<http::HeaderValue>,
}

/// The connector for `config`; HTTP transports take their connections from `pool`.
pub fn connector(
    config: Arc<BackendConfig>,
    max_message_bytes: usize,
    forwarded: Forwarded,
    pool: &HttpPool,
) -> Arc<dyn Connector> {
    let http = |config| {
        streamable_http::HttpTarget::new(config, max_message_bytes, &forwarded, pool.clone())
    };
    match config.transport {
        BackendTransport::Stdio => Arc::new(stdio::StdioConnector::new(config, max_message_bytes)),
        BackendTransport::StreamableHttp => Arc::new(streamable_http::StreamableHttpConnector(
            Arc::new(http(config)),
        )),
        BackendTransport::Sse => Arc::new(sse::SseConnector(http(config))),
        BackendTransport::Websocket => Arc::new(websocket::WebSocketConnector::new(
            config,
            max_message_bytes,
            forwarded,
        )),
    }
}

/// Parses one message from a backend.
fn inbound(raw: Bytes) -> Inbound {
    match Message::parse(raw) {
        Ok(msg) => Inbound::Message(msg),
        Err(e) => Inbound::Garbage(e.to_string().into()),
    }
}
