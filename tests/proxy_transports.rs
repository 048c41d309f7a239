//! The real gateway in front of the demo server over each backend transport (stdio, Streamable
//! HTTP, legacy SSE, WebSocket), reached through each frontend (Streamable HTTP, SSE, WebSocket).

mod support;

use serde_json::{Value, json};
use support::clients::{HttpClient, SseClient, WsClient, text};
use support::processes::{demo_http, gateway, gateway_exe};

fn four_backends(demo: std::net::SocketAddr) -> String {
    format!(
        "backends:
  - {{namespace: local, transport: stdio, command: {exe}, args: [demo-server, stdio]}}
  - {{namespace: http, transport: streamable_http, url: 'http://{demo}/mcp'}}
  - {{namespace: legacy, transport: sse, url: 'http://{demo}/sse'}}
  - {{namespace: socket, transport: websocket, url: 'ws://{demo}/ws'}}
",
        exe = gateway_exe()
    )
}

const NAMESPACES: [&str; 4] = ["local", "http", "legacy", "socket"];

fn tool_names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

fn check_tools(list: &Value) {
    let names = tool_names(list);
    for ns in NAMESPACES {
        for tool in ["echo", "add", "sleep", "fail", "progress", "sample"] {
            assert!(
                names.contains(&format!("{ns}__{tool}")),
                "{ns}__{tool} missing from {names:?}"
            );
        }
    }
    assert_eq!(names.len(), NAMESPACES.len() * 12, "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_transport_through_every_frontend() {
    let (demo_process, demo) = demo_http().await;
    let gw = gateway(&four_backends(demo)).await;

    let mut http = HttpClient::connect(gw.addr).await;
    check_tools(&http.request(1, "tools/list", json!({})).await);
    for (i, ns) in NAMESPACES.iter().enumerate() {
        let echoed = http
            .call(
                10 + i as u64,
                &format!("{ns}__echo"),
                json!({"message": format!("via http to {ns}")}),
            )
            .await;
        assert_eq!(text(&echoed), format!("via http to {ns}"));
        let sum = http
            .call(
                20 + i as u64,
                &format!("{ns}__add"),
                json!({"a": 2, "b": 3}),
            )
            .await;
        assert_eq!(text(&sum), "5");
    }

    let mut sse = SseClient::connect(gw.addr).await;
    check_tools(&sse.request(1, "tools/list", json!({})).await);
    for (i, ns) in NAMESPACES.iter().enumerate() {
        let echoed = sse
            .call(
                10 + i as u64,
                &format!("{ns}__echo"),
                json!({"message": format!("via sse to {ns}")}),
            )
            .await;
        assert_eq!(text(&echoed), format!("via sse to {ns}"));
    }

    let mut ws = WsClient::connect(gw.addr).await;
    check_tools(&ws.request(1, "tools/list", json!({})).await);
    for (i, ns) in NAMESPACES.iter().enumerate() {
        let echoed = ws
            .call(
                10 + i as u64,
                &format!("{ns}__echo"),
                json!({"message": format!("via ws to {ns}")}),
            )
            .await;
        assert_eq!(text(&echoed), format!("via ws to {ns}"));
    }

    // Prompts and resources merge too; resources page across backends.
    let prompts = ws.request(2, "prompts/list", json!({})).await;
    assert_eq!(
        prompts["result"]["prompts"].as_array().unwrap().len(),
        4,
        "{prompts}"
    );
    let greeting = ws
        .request(
            3,
            "prompts/get",
            json!({"name": "http__greeting", "arguments": {"name": "Ada"}}),
        )
        .await;
    assert_eq!(
        greeting["result"]["messages"][0]["content"]["text"],
        "Hello, Ada!"
    );
    let first = ws.request(4, "resources/list", json!({})).await;
    assert_eq!(
        first["result"]["resources"].as_array().unwrap().len(),
        4,
        "{first}"
    );
    let cursor = first["result"]["nextCursor"]
        .as_str()
        .expect("more pages")
        .to_owned();
    let second = ws
        .request(5, "resources/list", json!({"cursor": cursor}))
        .await;
    assert_eq!(
        second["result"]["resources"].as_array().unwrap().len(),
        4,
        "{second}"
    );
    assert!(second["result"].get("nextCursor").is_none(), "{second}");
    // Resources route by the URIs and templates the lists showed.
    let templates = ws.request(6, "resources/templates/list", json!({})).await;
    assert_eq!(
        templates["result"]["resourceTemplates"]
            .as_array()
            .unwrap()
            .len(),
        4,
        "{templates}"
    );
    let read = ws
        .request(7, "resources/read", json!({"uri": "demo://items/7"}))
        .await;
    assert_eq!(read["result"]["contents"][0]["text"], "item 7", "{read}");
    // A URI no backend listed, nor any template's prefix, is answered here (docs/ERRORS.md).
    let unknown = ws
        .request(9, "resources/read", json!({"uri": "nowhere://x"}))
        .await;
    assert_eq!(unknown["error"]["code"], -32002, "{unknown}");
    assert_eq!(
        unknown["error"]["data"]["error_type"], "not_found",
        "{unknown}"
    );
    // A method the gateway does not route, with several backends to choose from: answered here.
    let unrouted = ws.request(10, "no/such/method", json!({})).await;
    assert_eq!(unrouted["error"]["code"], -32601, "{unrouted}");
    assert_eq!(
        unrouted["error"]["data"]["error_type"], "not_found",
        "{unrouted}"
    );

    // A backend's list_changed reaches the client.
    ws.send(json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "socket__change", "arguments": {}}})).await;
    let mut saw_change = false;
    loop {
        let m = ws.next().await.unwrap();
        if m["method"] == "notifications/tools/list_changed" {
            saw_change = true;
        }
        if m["id"] == 8 {
            break;
        }
    }
    assert!(saw_change, "notifications/tools/list_changed was forwarded");

    let metrics = reqwest_metrics(gw.metrics).await;
    for (ns, kind) in [
        ("local", "stdio"),
        ("http", "streamable_http"),
        ("legacy", "sse"),
        ("socket", "websocket"),
    ] {
        let series = format!(r#"gateway_backend_up{{backend="{ns}",backend_type="{kind}"}}"#);
        assert_eq!(
            support::sample(&metrics, &series),
            Some(3.0),
            "one connection per session: {series}\n{metrics}"
        );
    }
    for transport in ["streamable_http", "sse", "websocket"] {
        let series = format!(r#"gateway_sessions{{transport="{transport}"}}"#);
        assert_eq!(support::sample(&metrics, &series), Some(1.0), "{series}");
    }

    // Ending the client's session ends the gateway's session at the Streamable HTTP backend (DELETE).
    let before = ended_sessions(&demo_process);
    let mut conn = support::Conn::open(gw.addr, None).await;
    let req = http::Request::delete("/mcp")
        .header("host", "x")
        .header("mcp-session-id", &http.session)
        .body(http_body_util::Full::<bytes::Bytes>::default())
        .unwrap();
    assert_eq!(conn.send(req).await.status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ended_sessions(&demo_process) == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the backend never saw a DELETE"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn ended_sessions(demo: &support::processes::Running) -> usize {
    demo.log_lines()
        .iter()
        .filter(|l| l.contains("session ended by the client"))
        .count()
}

async fn reqwest_metrics(addr: std::net::SocketAddr) -> String {
    let mut conn = support::Conn::open(addr, None).await;
    String::from_utf8_lossy(&conn.get("/metrics", &[]).await.body).into_owned()
}

/// `tool_name_separator` joins namespace and name both ways: in the merged list, and when a
/// call is routed back (the default separator then names no tool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_separator_names_and_routes_tools() {
    let gw = gateway(&format!(
        "tool_name_separator: '.'\nbackends:
  - {{namespace: a, transport: stdio, command: {exe}, args: [demo-server, stdio]}}
  - {{namespace: b, transport: stdio, command: {exe}, args: [demo-server, stdio]}}
",
        exe = gateway_exe()
    ))
    .await;
    let mut http = HttpClient::connect(gw.addr).await;
    let names = tool_names(&http.request(1, "tools/list", json!({})).await);
    for ns in ["a", "b"] {
        assert!(names.contains(&format!("{ns}.echo")), "{names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("__")), "{names:?}");
    let echoed = http.call(2, "b.echo", json!({"message": "dotted"})).await;
    assert_eq!(text(&echoed), "dotted");
    let unknown = http.call(3, "b__echo", json!({"message": "x"})).await;
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
}
