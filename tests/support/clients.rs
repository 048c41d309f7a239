//! MCP clients for the tests: Streamable HTTP, legacy SSE and WebSocket, over real sockets.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::Conn;

pub const LIMIT: Duration = Duration::from_secs(20);

pub fn initialize(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {"sampling": {}, "roots": {}},
        "clientInfo": {"name": "tests", "version": "1"}}})
}

/// Reads SSE `data:` payloads from a body into a channel.
fn sse_messages(
    mut body: hyper::body::Incoming,
) -> mpsc::UnboundedReceiver<(Option<String>, Value)> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut parser = mcp_gateway_layers::sse::SseParser::new(16 << 20);
        while let Some(Ok(frame)) = body.frame().await {
            let Some(data) = frame.data_ref() else {
                continue;
            };
            let mut events = Vec::new();
            parser
                .feed(data, &mut |e| events.push(e))
                .expect("valid SSE");
            for e in events {
                if e.event == "endpoint" {
                    let _ = tx.send((Some("endpoint".into()), Value::String(e.data)));
                } else if let Ok(v) = serde_json::from_str(&e.data) {
                    let _ = tx.send((e.id, v));
                }
            }
        }
    });
    rx
}

/// A Streamable HTTP client session.
pub struct HttpClient {
    pub addr: SocketAddr,
    pub session: String,
    conn: Conn,
}

impl HttpClient {
    pub async fn connect(addr: SocketAddr) -> HttpClient {
        let mut conn = Conn::open(addr, None).await;
        let r = conn
            .post(
                "/mcp",
                initialize(0).to_string(),
                &[("accept", "application/json, text/event-stream")],
            )
            .await;
        assert_eq!(r.status, 200, "initialize: {:?}", r.body);
        let session = r.headers["mcp-session-id"].to_str().unwrap().to_owned();
        let mut client = HttpClient {
            addr,
            session,
            conn,
        };
        let r = client
            .post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(r.status, 202);
        client
    }

    pub async fn post(&mut self, msg: Value) -> super::Reply {
        let session = self.session.clone();
        self.conn
            .post(
                "/mcp",
                msg.to_string(),
                &[
                    ("mcp-session-id", &session),
                    ("mcp-protocol-version", "2025-06-18"),
                    ("accept", "application/json"),
                ],
            )
            .await
    }

    /// Sends a request and returns its response (JSON answers).
    pub async fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        let r = self
            .post(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        assert_eq!(r.status, 200, "{method}: {:?}", r.body);
        r.json()
    }

    pub async fn call(&mut self, id: u64, tool: &str, args: Value) -> Value {
        self.request(id, "tools/call", json!({"name": tool, "arguments": args}))
            .await
    }

    /// Sends a request accepting SSE on a fresh connection; returns the stream of messages.
    pub async fn request_streaming(
        &self,
        msg: Value,
    ) -> mpsc::UnboundedReceiver<(Option<String>, Value)> {
        let mut conn = Conn::open(self.addr, None).await;
        let req = http::Request::post("/mcp")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &self.session)
            .body(Full::new(Bytes::from(msg.to_string())))
            .unwrap();
        let resp = conn.send_streaming(req).await;
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        sse_messages(resp.into_body())
    }

    /// Opens the GET stream, resuming after `last_event_id` when given.
    pub async fn listen(
        &self,
        last_event_id: Option<&str>,
    ) -> mpsc::UnboundedReceiver<(Option<String>, Value)> {
        let mut conn = Conn::open(self.addr, None).await;
        let mut req = http::Request::get("/mcp")
            .header("host", "127.0.0.1")
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &self.session);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = conn
            .send_streaming(req.body(Full::<Bytes>::default()).unwrap())
            .await;
        assert_eq!(resp.status(), 200);
        sse_messages(resp.into_body())
    }
}

/// Waits for the message with `id` on a stream, returning it and what came before it.
pub async fn response_on(
    rx: &mut mpsc::UnboundedReceiver<(Option<String>, Value)>,
    id: &Value,
) -> (Value, Vec<Value>) {
    let mut before = Vec::new();
    let wait = async {
        while let Some((_, msg)) = rx.recv().await {
            if msg.get("method").is_none() && msg["id"] == *id {
                return msg;
            }
            before.push(msg);
        }
        panic!("the stream ended before the response to {id}");
    };
    let resp = tokio::time::timeout(LIMIT, wait)
        .await
        .expect("response within the limit");
    (resp, before)
}

/// A legacy SSE client session.
pub struct SseClient {
    messages: mpsc::UnboundedReceiver<(Option<String>, Value)>,
    endpoint: String,
    conn: Conn,
}

impl SseClient {
    pub async fn connect(addr: SocketAddr) -> SseClient {
        let mut conn = Conn::open(addr, None).await;
        let req = http::Request::get("/sse")
            .header("host", "127.0.0.1")
            .header("accept", "text/event-stream")
            .body(Full::<Bytes>::default())
            .unwrap();
        let resp = conn.send_streaming(req).await;
        assert_eq!(resp.status(), 200);
        let mut messages = sse_messages(resp.into_body());
        let (kind, endpoint) = tokio::time::timeout(LIMIT, messages.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kind.as_deref(), Some("endpoint"));
        let mut client = SseClient {
            messages,
            endpoint: endpoint.as_str().unwrap().to_owned(),
            conn: Conn::open(addr, None).await,
        };
        let init = client.request_value(initialize(0)).await;
        assert!(init["result"]["capabilities"].is_object(), "{init}");
        let r = client
            .conn
            .post(
                &client.endpoint.clone(),
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
                &[],
            )
            .await;
        assert_eq!(r.status, 202);
        client
    }

    async fn request_value(&mut self, msg: Value) -> Value {
        let id = msg["id"].clone();
        let r = self
            .conn
            .post(&self.endpoint.clone(), msg.to_string(), &[])
            .await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        response_on(&mut self.messages, &id).await.0
    }

    pub async fn call(&mut self, id: u64, tool: &str, args: Value) -> Value {
        self.request_value(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}})).await
    }

    pub async fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.request_value(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await
    }
}

/// A WebSocket client session.
pub struct WsClient {
    sink: futures_util::stream::SplitSink<
        tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
        Frame,
    >,
    stream: futures_util::stream::SplitStream<
        tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    >,
}

impl WsClient {
    /// Connects without initializing.
    pub async fn open(addr: SocketAddr) -> WsClient {
        let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            http::HeaderValue::from_static("mcp"),
        );
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (socket, resp) = tokio_tungstenite::client_async(request, stream)
            .await
            .expect("WebSocket handshake");
        assert_eq!(resp.headers()["sec-websocket-protocol"], "mcp");
        let (sink, stream) = socket.split();
        WsClient { sink, stream }
    }

    pub async fn connect(addr: SocketAddr) -> WsClient {
        let mut client = WsClient::open(addr).await;
        let init = client.request_value(initialize(0)).await;
        assert!(init["result"]["capabilities"].is_object(), "{init}");
        client
            .send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        client
    }

    pub async fn send(&mut self, msg: Value) {
        self.sink
            .send(Frame::Text(msg.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send_frame(&mut self, frame: Frame) {
        self.sink.send(frame).await.unwrap();
    }

    /// The next frame of any kind.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        tokio::time::timeout(LIMIT, self.stream.next())
            .await
            .expect("a frame within the limit")
            .and_then(Result::ok)
    }

    /// The next text message, or the close frame's code.
    pub async fn next(&mut self) -> Result<Value, Option<u16>> {
        loop {
            match tokio::time::timeout(LIMIT, self.stream.next())
                .await
                .expect("a frame within the limit")
            {
                Some(Ok(Frame::Text(t))) => return Ok(serde_json::from_str(&t).unwrap()),
                Some(Ok(Frame::Close(c))) => return Err(c.map(|c| u16::from(c.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(None),
            }
        }
    }

    pub async fn request_value(&mut self, msg: Value) -> Value {
        let id = msg["id"].clone();
        self.send(msg).await;
        loop {
            let m = self.next().await.expect("open connection");
            if m.get("method").is_none() && m["id"] == id {
                return m;
            }
        }
    }

    pub async fn call(&mut self, id: u64, tool: &str, args: Value) -> Value {
        self.request_value(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}})).await
    }

    pub async fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.request_value(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await
    }
}

/// The text of a tool result.
pub fn text(resp: &Value) -> &str {
    resp["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("not a text result: {resp}"))
}
