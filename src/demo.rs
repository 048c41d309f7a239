//! The demo MCP server: a handler with a few tools, one prompt and one resource, used as the
//! built-in default backend and by the tests. Served over stdio (`mcp-gateway demo-server stdio`)
//! or over the same HTTP frontends as the gateway (`mcp-gateway demo-server http ADDR`).
//!
//! Tools: `echo {message}`, `add {a, b}`, `sleep {ms}` (ends early when cancelled), `fail`
//! (a tool error), `progress {steps}` (progress notifications), `sample {prompt}` (asks the
//! client for `sampling/createMessage`), `roots` (asks the client for `roots/list`),
//! `cancellations` (how many `notifications/cancelled` this server received), `whoami`
//! (this process's pid), `change` (sends `notifications/tools/list_changed`), `headers` (the
//! `Authorization` and `traceparent` headers the call came with, over HTTP), `traceparent`
//! (the `params._meta.traceparent` the call carried), and on stdio `crash` (the process exits mid-call) and `garbage`
//! (writes a non-JSON line to stdout, then answers).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mcp_gateway_layers::jsonrpc::{Kind, Message};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::oneshot;

use crate::lock;
use crate::mcp::{
    BoxFuture, ClientTransport, McpHandler, Outbox, RequestContext, Session, negotiate_version,
    result_message,
};

/// The demo server.
#[derive(Debug, Default)]
pub struct DemoServer {
    cancellations: Arc<AtomicU64>,
}

impl DemoServer {
    /// A demo server.
    pub fn new() -> Self {
        DemoServer::default()
    }
}

impl McpHandler for DemoServer {
    fn open(&self, transport: ClientTransport, outbox: Outbox) -> Arc<dyn Session> {
        Arc::new(DemoSession {
            outbox,
            stdio: transport == ClientTransport::Stdio,
            cancellations: self.cancellations.clone(),
            next_id: AtomicU64::new(1),
            waiting: Mutex::default(),
            running: Mutex::default(),
        })
    }
}

struct DemoSession {
    outbox: Outbox,
    stdio: bool,
    cancellations: Arc<AtomicU64>,
    next_id: AtomicU64,
    /// Our own requests to the client, by id, waiting for the answer.
    waiting: Mutex<HashMap<String, oneshot::Sender<Message>>>,
    /// Running requests by raw id, for cancellation.
    running: Mutex<HashMap<String, oneshot::Sender<()>>>,
}

fn text_result(text: &str) -> String {
    json!({"content": [{"type": "text", "text": text}]}).to_string()
}

fn error(id: Option<&str>, code: i64, message: &str) -> Message {
    let raw = format!(
        r#"{{"jsonrpc":"2.0","id":{},"error":{{"code":{code},"message":{}}}}}"#,
        id.unwrap_or("null"),
        Value::from(message)
    );
    Message::parse(Bytes::from(raw)).expect("valid JSON-RPC")
}

impl DemoSession {
    async fn send(&self, ctx: &RequestContext, raw: String) {
        let raw = Bytes::from(raw);
        match &ctx.related {
            Some(related) => {
                let _ = related.send(raw).await;
            }
            None => {
                let _ = self.outbox.send(raw).await;
            }
        }
    }

    /// Sends a request to the client and waits for its answer.
    async fn ask(&self, ctx: &RequestContext, method: &str, params: Value) -> Option<Value> {
        let id = format!("demo-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(format!("\"{id}\""), tx);
        self.send(
            ctx,
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string(),
        )
        .await;
        let answer = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .ok()?
            .ok()?;
        let value: Value = serde_json::from_slice(answer.raw()).ok()?;
        value.get("result").cloned()
    }

    async fn call_tool(
        &self,
        id: Option<&str>,
        params: &Value,
        ctx: &RequestContext,
    ) -> Option<Message> {
        let args = &params["arguments"];
        let result = match params["name"].as_str().unwrap_or("") {
            "echo" => text_result(args["message"].as_str().unwrap_or("")),
            "add" => match (args["a"].as_f64(), args["b"].as_f64()) {
                (Some(a), Some(b)) => text_result(&(a + b).to_string()),
                _ => return Some(error(id, -32602, "add takes numbers a and b")),
            },
            "sleep" => {
                let (cancel, cancelled) = oneshot::channel();
                let key = id.unwrap_or("null").to_owned();
                lock(&self.running).insert(key.clone(), cancel);
                let ms = args["ms"].as_u64().unwrap_or(0);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(ms)) => {}
                    _ = cancelled => return None,
                }
                lock(&self.running).remove(&key);
                text_result(&format!("slept {ms} ms"))
            }
            "fail" => {
                json!({"content": [{"type": "text", "text": "the tool failed"}], "isError": true})
                    .to_string()
            }
            "progress" => {
                let steps = args["steps"].as_u64().unwrap_or(3);
                if let Some(token) = params["_meta"].get("progressToken") {
                    for step in 1..=steps {
                        let note = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                            "params": {"progressToken": token, "progress": step, "total": steps}});
                        self.send(ctx, note.to_string()).await;
                    }
                }
                text_result(&format!("{steps} steps done"))
            }
            "sample" => {
                let prompt = args["prompt"].as_str().unwrap_or("hello");
                let asked = json!({"messages": [{"role": "user", "content": {"type": "text", "text": prompt}}], "maxTokens": 50});
                match self.ask(ctx, "sampling/createMessage", asked).await {
                    Some(answer) => text_result(answer["content"]["text"].as_str().unwrap_or("")),
                    None => {
                        return Some(error(
                            id,
                            -32603,
                            "the client did not answer sampling/createMessage",
                        ));
                    }
                }
            }
            "roots" => match self.ask(ctx, "roots/list", json!({})).await {
                Some(answer) => text_result(&answer["roots"].to_string()),
                None => return Some(error(id, -32603, "the client did not answer roots/list")),
            },
            "cancellations" => text_result(&self.cancellations.load(Ordering::SeqCst).to_string()),
            "whoami" => text_result(&std::process::id().to_string()),
            "headers" => {
                let seen = |name: &'static str| {
                    let name = http::HeaderName::from_static(name);
                    ctx.headers.get_str(&name).unwrap_or("none").to_owned()
                };
                text_result(&json!({"authorization": seen("authorization"), "traceparent": seen("traceparent")}).to_string())
            }
            "traceparent" => text_result(params["_meta"]["traceparent"].as_str().unwrap_or("none")),
            "change" => {
                let note = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
                let _ = self.outbox.send(Bytes::from(note.to_string())).await;
                text_result("tools changed")
            }
            "crash" if self.stdio => std::process::exit(3),
            "garbage" if self.stdio => {
                // On stdio the outbox is stdout, one line per message.
                let _ = self
                    .outbox
                    .send(Bytes::from_static(b"this is not JSON-RPC"))
                    .await;
                text_result("garbage written")
            }
            other => return Some(error(id, -32602, &format!("unknown tool: {other}"))),
        };
        Some(result_message(id, &result))
    }

    async fn request(&self, msg: &Message, ctx: &RequestContext) -> Option<Message> {
        let id = msg.id_raw();
        let params: Value = serde_json::from_slice::<Value>(msg.raw())
            .ok()?
            .get("params")
            .cloned()
            .unwrap_or(Value::Null);
        let result = match msg.method_name().unwrap_or("") {
            "initialize" => json!({
                "protocolVersion": negotiate_version(params["protocolVersion"].as_str()),
                "capabilities": {"tools": {"listChanged": true}, "prompts": {}, "resources": {}, "logging": {}},
                "serverInfo": {"name": "mcp-gateway-demo", "version": env!("CARGO_PKG_VERSION")},
            })
            .to_string(),
            "ping" | "logging/setLevel" => "{}".to_owned(),
            "tools/list" => json!({"tools": [
                {"name": "echo", "description": "Returns its message", "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}},
                {"name": "add", "description": "Adds a and b", "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}},
                {"name": "sleep", "description": "Waits ms milliseconds", "inputSchema": {"type": "object", "properties": {"ms": {"type": "integer"}}}},
                {"name": "fail", "description": "Always reports a tool error", "inputSchema": {"type": "object"}},
                {"name": "progress", "description": "Sends progress notifications", "inputSchema": {"type": "object", "properties": {"steps": {"type": "integer"}}}},
                {"name": "sample", "description": "Asks the client to sample", "inputSchema": {"type": "object", "properties": {"prompt": {"type": "string"}}}},
                {"name": "roots", "description": "Asks the client for its roots", "inputSchema": {"type": "object"}},
                {"name": "cancellations", "description": "Cancellations received", "inputSchema": {"type": "object"}},
                {"name": "whoami", "description": "This server's process id", "inputSchema": {"type": "object"}},
                {"name": "change", "description": "Announces that the tool list changed", "inputSchema": {"type": "object"}},
                {"name": "headers", "description": "The Authorization and traceparent headers this call came with", "inputSchema": {"type": "object"}},
                {"name": "traceparent", "description": "The traceparent this call carried in params._meta", "inputSchema": {"type": "object"}},
            ]})
            .to_string(),
            "tools/call" => return self.call_tool(id, &params, ctx).await,
            "prompts/list" => json!({"prompts": [{"name": "greeting", "description": "A greeting", "arguments": [{"name": "name", "required": true}]}]}).to_string(),
            "prompts/get" if params["name"] == "greeting" => json!({"messages": [{"role": "user", "content": {"type": "text",
                "text": format!("Hello, {}!", params["arguments"]["name"].as_str().unwrap_or("you"))}}]})
            .to_string(),
            "prompts/get" => return Some(error(id, -32602, "unknown prompt")),
            // Two pages, so that paging across backends is exercised.
            "resources/list" if params["cursor"] == "page2" => json!({"resources": [{"uri": "demo://items/1", "name": "item 1"}]}).to_string(),
            "resources/list" => json!({"resources": [{"uri": "demo://readme", "name": "readme", "mimeType": "text/plain"}], "nextCursor": "page2"}).to_string(),
            "resources/templates/list" => json!({"resourceTemplates": [{"uriTemplate": "demo://items/{id}", "name": "item"}]}).to_string(),
            "resources/read" => match params["uri"].as_str().unwrap_or("") {
                "demo://readme" => json!({"contents": [{"uri": "demo://readme", "mimeType": "text/plain", "text": "This is the demo server."}]}).to_string(),
                uri if uri.starts_with("demo://items/") => json!({"contents": [{"uri": uri, "text": format!("item {}", &uri[13..])}]}).to_string(),
                _ => return Some(error(id, -32002, "resource not found")),
            },
            _ => return Some(error(id, -32601, "method not found")),
        };
        Some(result_message(id, &result))
    }
}

impl Session for DemoSession {
    fn handle(
        self: Arc<Self>,
        message: Message,
        ctx: RequestContext,
    ) -> BoxFuture<Option<Message>> {
        Box::pin(async move {
            match message.kind() {
                Kind::Request => self.request(&message, &ctx).await,
                Kind::Notification => {
                    if message.method_name() == Some("notifications/cancelled") {
                        self.cancellations.fetch_add(1, Ordering::SeqCst);
                        let params: Value =
                            serde_json::from_slice::<Value>(message.raw()).ok()?["params"].clone();
                        let key = params["requestId"].to_string();
                        if let Some(cancel) = lock(&self.running).remove(&key) {
                            let _ = cancel.send(());
                        }
                    }
                    None
                }
                Kind::Response | Kind::Error => {
                    let waiter = message
                        .id_raw()
                        .and_then(|id| lock(&self.waiting).remove(id));
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(message);
                    }
                    None
                }
            }
        })
    }

    fn close(&self) {
        lock(&self.running).clear();
        lock(&self.waiting).clear();
    }
}

/// Serves `handler` over stdin/stdout: one JSON-RPC message per line. Lines that are not
/// JSON-RPC are answered with a parse or invalid-request error.
pub async fn serve_stdio(handler: Arc<dyn McpHandler>) -> std::io::Result<()> {
    // One FIFO for everything written: answers never overtake notifications sent before them.
    let (outbox, mut outgoing) = Outbox::new(1024);
    let session = handler.open(ClientTransport::Stdio, outbox.clone());
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(raw) = outgoing.recv().await {
            if stdout.write_all(&raw).await.is_err()
                || stdout.write_all(b"\n").await.is_err()
                || stdout.flush().await.is_err()
            {
                break;
            }
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let reply = outbox.clone();
        match Message::parse(Bytes::from(line)) {
            // Notifications are handled in the order they arrive (a cancellation before the
            // request read after it); requests run on tasks of their own, so a slow one blocks none.
            Ok(msg) if msg.kind() == Kind::Notification => {
                session.clone().handle(msg, RequestContext::default()).await;
            }
            Ok(msg) => {
                let session = session.clone();
                tokio::spawn(async move {
                    if let Some(resp) = session.handle(msg, RequestContext::default()).await {
                        let _ = reply.send(resp.into_raw()).await;
                    }
                });
            }
            Err(e) => {
                let _ = reply
                    .send(
                        error(
                            None,
                            e.class().jsonrpc_code.unwrap_or(-32600).into(),
                            &e.to_string(),
                        )
                        .into_raw(),
                    )
                    .await;
            }
        }
    }
    session.close();
    drop(session);
    drop(outbox);
    let _ = writer.await;
    Ok(())
}
