//! WebSocket at `/ws`: subprotocol `mcp`, one JSON-RPC message per text frame. A binary frame
//! closes the connection with 1003; pings keep it alive; an idle connection is closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mcp_gateway_layers::classify::ErrorType;
use mcp_gateway_layers::headers::ClientHeaders;
use mcp_gateway_layers::jsonrpc::Message;
use tokio::sync::oneshot;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message as Frame, Utf8Bytes};

/// The read buffer of each WebSocket connection (larger messages still arrive, in more reads).
pub(crate) const WS_READ_BUFFER_BYTES: usize = 2 * 1024;

use super::body::{ResponseBody, full};
use super::{ClientRequest, Frontend, client_error};
use crate::mcp::{ClientTransport, Outbox, RequestContext};

/// A copy of `headers` whose values own their bytes.
fn owned_headers(headers: &http::HeaderMap) -> http::HeaderMap {
    let mut owned = http::HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if let Ok(mut copy) = HeaderValue::from_bytes(value.as_bytes()) {
            copy.set_sensitive(value.is_sensitive());
            owned.append(name.clone(), copy);
        }
    }
    owned
}

/// Asks the writer to send a Close frame (once).
fn send_close(
    close: &mut Option<oneshot::Sender<CloseFrame>>,
    code: CloseCode,
    reason: &'static str,
) {
    if let Some(close) = close.take() {
        let _ = close.send(CloseFrame {
            code,
            reason: reason.into(),
        });
    }
}

fn header_has(headers: &http::HeaderMap, name: http::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|v| super::http1::has_token(v.as_bytes(), token))
}

impl Frontend {
    pub(super) fn websocket(
        self: Arc<Self>,
        mut req: ClientRequest,
        peer: SocketAddr,
        permit: super::HeldPermit,
        started: Instant,
    ) -> Response<ResponseBody> {
        // Upgrades come through hyper, whose headers are a map already.
        let headers = req.head.headers.map();
        let upgrade = header_has(headers, http::header::UPGRADE, "websocket")
            && header_has(headers, http::header::CONNECTION, "upgrade");
        let version_ok = headers
            .get(http::header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
        let Some(key) = headers
            .get(http::header::SEC_WEBSOCKET_KEY)
            .filter(|_| upgrade && version_ok)
        else {
            let class = client_error(ErrorType::Validation, StatusCode::BAD_REQUEST);
            return self.refused(
                &class,
                "a WebSocket upgrade (version 13) is required",
                started,
            );
        };
        let offered = headers.get(http::header::SEC_WEBSOCKET_PROTOCOL).is_some();
        if offered && !header_has(headers, http::header::SEC_WEBSOCKET_PROTOCOL, "mcp") {
            let class = client_error(ErrorType::Validation, StatusCode::BAD_REQUEST);
            return self.refused(&class, "the WebSocket subprotocol must be mcp", started);
        }
        let accept = derive_accept_key(key.as_bytes());
        // Copied, not cloned: a clone's values are slices of the connection's read buffer and would
        // keep all of it for as long as the WebSocket lives.
        let upgrade_headers = Arc::new(ClientHeaders::from(owned_headers(headers)));
        // hyper finds the connection's upgrade among the request's extensions.
        let mut upgrade = Request::new(());
        *upgrade.extensions_mut() = std::mem::take(&mut req.head.extensions);
        let on_upgrade = hyper::upgrade::on(&mut upgrade);
        let frontend = self.clone();
        // The WebSocket keeps the connection's place under the limit for as long as it lives.
        tokio::spawn(async move {
            let _permit = permit;
            match on_upgrade.await {
                Ok(upgraded) => {
                    frontend
                        .run_websocket(TokioIo::new(upgraded), upgrade_headers, peer)
                        .await
                }
                Err(e) => {
                    tracing::warn!(client_addr = %peer, error = %e, "WebSocket upgrade failed")
                }
            }
        });
        let mut resp = Response::new(full(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("Upgrade"),
        );
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            h.insert(http::header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if offered {
            h.insert(
                http::header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static("mcp"),
            );
        }
        resp
    }

    async fn run_websocket(
        self: Arc<Self>,
        io: TokioIo<hyper::upgrade::Upgraded>,
        headers: Arc<ClientHeaders>,
        peer: SocketAddr,
    ) {
        let max = self.config.limits.max_message_bytes;
        // The read buffer is allocated up front for every connection: tungstenite's 128 KiB
        // default made 10,000 idle clients cost over a gigabyte.
        let config = WebSocketConfig::default()
            .read_buffer_size(WS_READ_BUFFER_BYTES)
            .max_message_size(Some(max))
            .max_frame_size(Some(max));
        let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        let _open = self.telemetry.websockets.open();
        let (outbox, mut outgoing) = Outbox::new(256);
        let session = self
            .handler
            .open(ClientTransport::WebSocket, outbox.clone());
        let session_id: Arc<str> = Arc::from(super::streamable_http::new_session_id());
        tracing::info!(client_addr = %peer, transport = "websocket", "session opened");
        let (mut sink, mut stream) = socket.split();
        // One close, so a oneshot: a queue's first block would cost 1.3 KiB per connection.
        let (close_tx, mut close_rx) = oneshot::channel::<CloseFrame>();
        let mut close_tx = Some(close_tx);
        let ping_every = Duration::from_secs(self.config.websocket.ping_interval_secs.max(1));
        let writer = tokio::spawn(async move {
            let mut ping = tokio::time::interval(ping_every);
            ping.tick().await;
            loop {
                tokio::select! {
                    next = outgoing.recv() => match next {
                        Some(raw) => {
                            let Ok(text) = Utf8Bytes::try_from(raw) else { continue };
                            if sink.send(Frame::Text(text)).await.is_err() {
                                break;
                            }
                        }
                        None => break,
                    },
                    close = &mut close_rx => {
                        let _ = sink.send(Frame::Close(close.ok())).await;
                        break;
                    }
                    _ = ping.tick() => {
                        if sink.send(Frame::Ping(Bytes::new())).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = sink.close().await;
        });
        let idle = Duration::from_secs(self.config.websocket.idle_timeout_secs.max(1));
        let mut closing = self.closing.subscribe();
        let mut we_closed = false;
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(idle, stream.next()) => next,
                // The flag only ever turns on, so any change means: close.
                _ = closing.changed() => {
                    we_closed = true;
                    send_close(&mut close_tx, CloseCode::Away, "the gateway is stopping");
                    break;
                }
            };
            let frame = match next {
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(e))) => {
                    tracing::info!(client_addr = %peer, error = %e, "WebSocket closed with an error");
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    we_closed = true;
                    send_close(&mut close_tx, CloseCode::Away, "idle timeout");
                    break;
                }
            };
            match frame {
                Frame::Text(text) => match Message::parse(Bytes::from(text)) {
                    Ok(msg) => {
                        let session = session.clone();
                        let reply = outbox.clone();
                        let frontend = self.clone();
                        let ctx = RequestContext {
                            related: None,
                            headers: headers.clone(),
                            client_addr: Some(peer),
                            session_id: Some(session_id.clone()),
                        };
                        tokio::spawn(async move {
                            if let Some(resp) = frontend.dispatch(session, msg, ctx).await {
                                let _ = reply.send(resp.into_raw()).await;
                            }
                        });
                    }
                    Err(e) => {
                        let class = e.class();
                        self.count_refusal(&class, &e.to_string(), Instant::now());
                        let _ = outbox
                            .send(mcp_gateway_layers::edge::error_message(
                                None,
                                &class,
                                &e.to_string(),
                                None,
                            ))
                            .await;
                    }
                },
                Frame::Binary(_) => {
                    let reason = "binary frames are not MCP messages";
                    we_closed = true;
                    send_close(&mut close_tx, CloseCode::Unsupported, reason);
                    break;
                }
                Frame::Close(_) => break,
                Frame::Ping(_) | Frame::Pong(_) | Frame::Frame(_) => {}
            }
        }
        session.close();
        drop(outbox);
        drop(close_tx);
        let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
        // The close handshake: keep the socket until the client's Close comes back (or 2 s pass).
        let handshake = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(frame)) = stream.next().await {
                if matches!(frame, Frame::Close(_)) {
                    break;
                }
            }
        });
        if we_closed {
            let _ = handshake.await;
        }
        tracing::info!(client_addr = %peer, transport = "websocket", "session closed");
    }
}
