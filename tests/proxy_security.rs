//! Secure defaults: a client's credentials stay at the gateway unless forwarding is configured;
//! configured backend headers (with `${VAR}` secrets) are sent; idle sessions expire.

mod support;

use std::time::Duration;

use serde_json::json;
use support::Conn;
use support::clients::{initialize, text};
use support::processes::{demo_http, gateway};

/// Initializes a Streamable HTTP session carrying `Authorization: Bearer client-token`.
async fn session_with_token(addr: std::net::SocketAddr) -> (Conn, String) {
    let mut conn = Conn::open(addr, None).await;
    let auth = [("authorization", "Bearer client-token")];
    let r = conn.post("/mcp", initialize(0).to_string(), &auth).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let session = r.headers["mcp-session-id"].to_str().unwrap().to_owned();
    (conn, session)
}

async fn auth_seen(conn: &mut Conn, session: &str) -> String {
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "up__headers", "arguments": {}}});
    let headers = [
        ("mcp-session-id", session),
        ("authorization", "Bearer client-token"),
        ("traceparent", CLIENT_TRACE),
    ];
    let r = conn.post("/mcp", call.to_string(), &headers).await;
    let seen: serde_json::Value = serde_json::from_str(text(&r.json())).unwrap();
    // The backend's request is in the client's trace, as a span of the gateway's.
    let traceparent = seen["traceparent"].as_str().unwrap();
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{traceparent}"
    );
    assert!(
        !traceparent.contains("00f067aa0ba902b7"),
        "a new span, not the client's: {traceparent}"
    );
    seen["authorization"].as_str().unwrap().to_owned()
}

const CLIENT_TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_forwarded_only_when_configured() {
    let (_demo, demo) = demo_http().await;
    let backend = format!(
        "backends:\n  - {{namespace: up, transport: streamable_http, url: 'http://{demo}/mcp'}}\n"
    );

    let gw = gateway(&backend).await;
    let (mut conn, session) = session_with_token(gw.addr).await;
    assert_eq!(
        auth_seen(&mut conn, &session).await,
        "none",
        "by default the backend never sees the client's token"
    );

    let gw = gateway(&format!("forward_credentials: true\n{backend}")).await;
    let (mut conn, session) = session_with_token(gw.addr).await;
    assert_eq!(auth_seen(&mut conn, &session).await, "Bearer client-token");

    // A configured header, its secret from the environment of the gateway.
    let yaml = format!(
        "backends:\n  - {{namespace: up, transport: streamable_http, url: 'http://{demo}/mcp', headers: {{Authorization: 'Bearer ${{HOME}}'}}}}\n"
    );
    let gw = gateway(&yaml).await;
    let (mut conn, session) = session_with_token(gw.addr).await;
    let home = std::env::var("HOME").unwrap();
    assert_eq!(
        auth_seen(&mut conn, &session).await,
        format!("Bearer {home}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire() {
    let yaml = format!(
        "sessions: {{idle_timeout_secs: 1}}\nbackends:\n  - {{namespace: a, transport: stdio, command: {}, args: [demo-server, stdio]}}\n",
        support::processes::gateway_exe()
    );
    let gw = gateway(&yaml).await;
    let (mut conn, session) = session_with_token(gw.addr).await;
    let ping = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}).to_string();
    assert_eq!(
        conn.post("/mcp", ping.clone(), &[("mcp-session-id", &session)])
            .await
            .status,
        200
    );
    // Untouched for twice the idle timeout (a probe would renew it), then it is gone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut fresh = Conn::open(gw.addr, None).await;
    assert_eq!(
        fresh
            .post("/mcp", ping, &[("mcp-session-id", &session)])
            .await
            .status,
        404
    );
}
