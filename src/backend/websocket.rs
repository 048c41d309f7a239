//! WebSocket backends: subprotocol `mcp`, one JSON-RPC message per text frame.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message as Frame, Utf8Bytes};

use super::streamable_http::base_headers;
use super::{Connector, Forwarded, Inbound, Inbox, PipeTx, inbound};
use crate::config::BackendConfig;
use crate::mcp::BoxFuture;

pub(super) struct WebSocketConnector {
    config: Arc<BackendConfig>,
    max_message_bytes: usize,
    headers: HeaderMap,
}

impl WebSocketConnector {
    pub(super) fn new(
        config: Arc<BackendConfig>,
        max_message_bytes: usize,
        forwarded: Forwarded,
    ) -> Self {
        let headers = base_headers(&config, &forwarded);
        WebSocketConnector {
            config,
            max_message_bytes,
            headers,
        }
    }
}

impl Connector for WebSocketConnector {
    fn connect(&self, incoming: Inbox) -> BoxFuture<Result<PipeTx, String>> {
        let url = self.config.url.clone().unwrap_or_default();
        let headers = self.headers.clone();
        let max = self.max_message_bytes;
        let namespace = self.config.namespace.clone();
        Box::pin(async move {
            let mut request = url
                .as_str()
                .into_client_request()
                .map_err(|e| format!("invalid url: {e}"))?;
            request.headers_mut().extend(headers);
            request.headers_mut().insert(
                "sec-websocket-protocol",
                http::HeaderValue::from_static("mcp"),
            );
            let uri = request.uri().clone();
            let host = uri.host().ok_or("the url has no host")?;
            let port = uri.port_u16().unwrap_or(80);
            let stream = TcpStream::connect((host, port))
                .await
                .map_err(|e| format!("connect {host}:{port}: {e}"))?;
            let _ = stream.set_nodelay(true);
            let config = WebSocketConfig::default()
                .read_buffer_size(crate::frontend::WS_READ_BUFFER_BYTES)
                .max_message_size(Some(max))
                .max_frame_size(Some(max));
            let (socket, _) =
                tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                    .await
                    .map_err(|e| format!("WebSocket handshake with {url}: {e}"))?;
            let (mut sink, mut stream) = socket.split();
            let (tx, mut outgoing) = mpsc::channel::<mcp_gateway_layers::jsonrpc::Message>(256);
            tokio::spawn(async move {
                while let Some(raw) = outgoing.recv().await {
                    let Ok(text) = Utf8Bytes::try_from(raw.into_raw()) else {
                        continue;
                    };
                    if sink.send(Frame::Text(text)).await.is_err() {
                        break;
                    }
                }
                let _ = sink.close().await;
            });
            tokio::spawn(async move {
                while let Some(frame) = stream.next().await {
                    let next = match frame {
                        Ok(Frame::Text(text)) => inbound(Bytes::from(text)),
                        Ok(Frame::Binary(_)) => Inbound::Garbage("a binary frame".into()),
                        Ok(Frame::Close(_)) => break,
                        Ok(_) => continue,
                        Err(e) => {
                            tracing::warn!(backend = %namespace, error = %e, "backend WebSocket failed");
                            break;
                        }
                    };
                    if incoming.send(next).await.is_err() {
                        break;
                    }
                }
            });
            Ok(PipeTx::Queue(tx))
        })
    }
}
