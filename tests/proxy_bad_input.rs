//! Every kind of bad client input gets a clear, documented error (HTTP status and JSON-RPC
//! error), never a panic or a hang, and no other client's request is lost.

mod support;

use serde_json::json;
use support::clients::{HttpClient, WsClient, text};
use support::processes::{gateway, gateway_exe};
use support::{Conn, sample};
use tokio_tungstenite::tungstenite::Message as Frame;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_nobody_else_notices() {
    let yaml = format!(
        "limits: {{max_message_bytes: 65536}}\nbackends:\n  - {{namespace: a, transport: stdio, command: {}, args: [demo-server, stdio]}}\n",
        gateway_exe()
    );
    let gw = gateway(&yaml).await;
    // A bystander with a call in flight the whole time.
    let mut bystander = WsClient::connect(gw.addr).await;
    bystander.send(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "a__sleep", "arguments": {"ms": 1500}}})).await;

    let mut http = HttpClient::connect(gw.addr).await;
    let session = http.session.clone();
    let mut conn = Conn::open(gw.addr, None).await;
    let with_session = [("mcp-session-id", session.as_str())];
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let cases: Vec<(&str, support::Reply, u16, Option<i64>)> = vec![
        (
            "malformed JSON",
            conn.post("/mcp", "{\"jsonrpc\":", &with_session).await,
            400,
            Some(-32700),
        ),
        (
            "not JSON-RPC",
            conn.post("/mcp", r#"{"id":1,"method":"ping"}"#, &with_session)
                .await,
            400,
            Some(-32600),
        ),
        (
            "a batch",
            conn.post("/mcp", format!("[{ping}]"), &with_session).await,
            400,
            Some(-32600),
        ),
        (
            "wrong content type",
            {
                let req = http::Request::post("/mcp")
                    .header("host", "x")
                    .header("content-type", "text/plain")
                    .header("mcp-session-id", &session)
                    .body(http_body_util::Full::new(bytes::Bytes::from(ping.clone())))
                    .unwrap();
                conn.send(req).await
            },
            415,
            Some(-32600),
        ),
        (
            "oversized body",
            conn.post(
                "/mcp",
                format!(
                    r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
                    "x".repeat(70_000)
                ),
                &with_session,
            )
            .await,
            413,
            Some(-32600),
        ),
        (
            "missing session",
            conn.post("/mcp", ping.clone(), &[]).await,
            400,
            Some(-32600),
        ),
        (
            "unknown session",
            conn.post("/mcp", ping.clone(), &[("mcp-session-id", "nope")])
                .await,
            404,
            Some(-32601),
        ),
        (
            "unsupported protocol version",
            conn.post(
                "/mcp",
                ping.clone(),
                &[
                    ("mcp-session-id", &session),
                    ("mcp-protocol-version", "1999-01-01"),
                ],
            )
            .await,
            400,
            Some(-32600),
        ),
        (
            "foreign Origin",
            conn.post(
                "/mcp",
                ping.clone(),
                &[
                    ("mcp-session-id", &session),
                    ("origin", "https://evil.example"),
                ],
            )
            .await,
            403,
            Some(-32003),
        ),
        (
            "unknown SSE session",
            conn.post("/messages?sessionId=nope", ping.clone(), &[])
                .await,
            404,
            Some(-32601),
        ),
        (
            "no such endpoint",
            conn.get("/nowhere", &[]).await,
            404,
            Some(-32601),
        ),
        (
            "not a WebSocket upgrade",
            conn.get("/ws", &[]).await,
            400,
            Some(-32600),
        ),
        (
            "an Accept that allows neither JSON nor SSE",
            conn.post(
                "/mcp",
                ping.clone(),
                &[("mcp-session-id", &session), ("accept", "text/html")],
            )
            .await,
            406,
            Some(-32600),
        ),
        (
            "a wrong method on an endpoint",
            conn.send(
                http::Request::put("/mcp")
                    .header("host", "x")
                    .body(http_body_util::Full::<bytes::Bytes>::default())
                    .unwrap(),
            )
            .await,
            405,
            Some(-32600),
        ),
        (
            "a WebSocket subprotocol other than mcp",
            conn.get(
                "/ws",
                &[
                    ("connection", "upgrade"),
                    ("upgrade", "websocket"),
                    ("sec-websocket-version", "13"),
                    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                    ("sec-websocket-protocol", "chat"),
                ],
            )
            .await,
            400,
            Some(-32600),
        ),
    ];
    for (what, reply, status, code) in cases {
        assert_eq!(reply.status, status, "{what}: {:?}", reply.body);
        let body = reply.json();
        assert_eq!(body["error"]["code"].as_i64(), code, "{what}: {body}");
        assert!(
            body["error"]["data"]["error_type"].is_string(),
            "{what}: {body}"
        );
    }

    // JSON-RPC level: an unknown tool, an unknown method, a request before initialize.
    let unknown_tool = http.call(2, "a__nosuch", json!({})).await;
    assert_eq!(unknown_tool["error"]["code"], -32602, "{unknown_tool}");
    let unknown_tool = http.call(3, "nowhere__echo", json!({})).await;
    assert_eq!(
        (
            unknown_tool["error"]["code"].as_i64(),
            unknown_tool["error"]["data"]["error_type"].as_str()
        ),
        (Some(-32602), Some("not_found"))
    );
    // With one backend, a method the gateway does not route goes to it, which knows none.
    let unknown_method = http.request(5, "no/such/method", json!({})).await;
    assert_eq!(unknown_method["error"]["code"], -32601, "{unknown_method}");
    let mut fresh = WsClient::open(gw.addr).await;
    let early = fresh.request(1, "tools/list", json!({})).await;
    assert_eq!(early["error"]["code"], -32600, "{early}");
    fresh.send_frame(Frame::Text("{not json".into())).await;
    let parse = fresh.next().await.unwrap();
    assert_eq!(parse["error"]["code"], -32700, "{parse}");
    // A binary frame closes that connection with 1003.
    fresh
        .send_frame(Frame::Binary(bytes::Bytes::from_static(b"\x00\x01")))
        .await;
    assert_eq!(fresh.next().await, Err(Some(1003)));

    // The bystander's call completed untouched.
    let done = bystander.next().await.unwrap();
    assert_eq!(text(&done), "slept 1500 ms");
    // DELETE ends the session; it is then unknown.
    let deleted = conn
        .send(
            http::Request::delete("/mcp")
                .header("host", "x")
                .header("mcp-session-id", &session)
                .body(http_body_util::Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(deleted.status, 200);
    assert_eq!(
        http.post(json!({"jsonrpc": "2.0", "id": 4, "method": "ping"}))
            .await
            .status,
        404
    );

    let mut metrics_conn = Conn::open(gw.metrics, None).await;
    let metrics =
        String::from_utf8_lossy(&metrics_conn.get("/metrics", &[]).await.body).into_owned();
    assert_eq!(
        sample(
            &metrics,
            r#"gateway_errors_total{error_type="parse",component="client",severity="low",http_status="400",retryable="false"}"#
        ),
        Some(2.0),
        "one over HTTP, one over WebSocket: {metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"gateway_errors_total{error_type="forbidden",component="client",severity="medium",http_status="403",retryable="false"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    // Log lines are JSON with timestamp, level and msg; an event inside a request carries that
    // request's trace, span and method.
    let lines: Vec<serde_json::Value> = gw
        .process
        .log_lines()
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON log line"))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["timestamp"].is_string() && l["level"].is_string() && l["msg"].is_string())
    );
    let edge = lines
        .iter()
        .find(|l| l["msg"] == "error answered at the edge" && l["method"] == "tools/call")
        .expect("the edge's event for the unknown tool");
    assert_eq!(edge["trace_id"].as_str().map(str::len), Some(32), "{edge}");
    assert_eq!(edge["span_id"].as_str().map(str::len), Some(16), "{edge}");
    assert!(edge["session_id"].is_string(), "{edge}");

    // The refused WebSocket's client went away; only the bystander stays connected.
    drop(fresh);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text =
            String::from_utf8_lossy(&metrics_conn.get("/metrics", &[]).await.body).into_owned();
        if sample(&text, "gateway_websocket_connections") == Some(1.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the bystander alone should be connected: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
