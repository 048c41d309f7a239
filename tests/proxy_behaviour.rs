//! The proxy's routing under load and faults, over real processes and sockets: many clients
//! with the same ids, server-initiated requests, cancellation, a backend killed mid-call, a slow
//! backend, garbage on a backend's stdout, and resumable GET streams.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::clients::{HttpClient, WsClient, response_on, text};
use support::processes::{gateway, gateway_exe};
use support::{Conn, sample};

fn stdio_backends(names: &[&str], extra: &str) -> String {
    let mut yaml = String::from("backends:\n");
    for ns in names {
        yaml.push_str(&format!("  - {{namespace: {ns}, transport: stdio, command: {}, args: [demo-server, stdio]{extra}}}\n", gateway_exe()));
    }
    yaml
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut conn = Conn::open(addr, None).await;
    String::from_utf8_lossy(&conn.get("/metrics", &[]).await.body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_with_the_same_ids_never_collide() {
    let gw = gateway(&stdio_backends(&["a"], "")).await;
    let mut tasks = Vec::new();
    for client in 0..12 {
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            let mut http = HttpClient::connect(addr).await;
            for id in 1..=10u64 {
                let msg = format!("client {client} request {id}");
                let resp = http.call(id, "a__echo", json!({"message": msg})).await;
                assert_eq!(resp["id"], id);
                assert_eq!(text(&resp), msg);
            }
        }));
    }
    // The same ids, concurrently, on one WebSocket session too.
    let mut ws = WsClient::connect(gw.addr).await;
    for id in 1..=10u64 {
        ws.send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "a__echo", "arguments": {"message": format!("ws {id}")}}})).await;
    }
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < 10 {
        let m = ws.next().await.unwrap();
        seen.insert(m["id"].as_u64().unwrap(), text(&m).to_owned());
    }
    for (id, msg) in seen {
        assert_eq!(msg, format!("ws {id}"));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Exactly one log event per JSON-RPC request (12 × (initialize + 10 calls) + the same on
    // the WebSocket), each with the fields of the log contract.
    let expected = 12 * 11 + 11;
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events: Vec<serde_json::Value> = gw
            .process
            .log_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["msg"] == "request completed" || e["msg"] == "request failed")
            .collect();
        if events.len() >= expected || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(events.len(), expected);
    let mut seen = std::collections::HashSet::new();
    for e in &events {
        assert_eq!(e["msg"], "request completed", "{e}");
        assert_eq!(e["status"], "ok", "{e}");
        assert_eq!(e["trace_id"].as_str().map(str::len), Some(32), "{e}");
        assert_eq!(e["span_id"].as_str().map(str::len), Some(16), "{e}");
        assert!(
            e["duration_ms"].as_f64().is_some() && e["client_addr"].is_string(),
            "{e}"
        );
        let method = e["method"].as_str().unwrap();
        let expected_namespace = if method == "tools/call" { "a" } else { "none" };
        assert_eq!(
            (e["namespace"].as_str(), e["backend"].as_str()),
            (Some(expected_namespace), Some(expected_namespace)),
            "{e}"
        );
        let key = (
            e["session_id"].as_str().expect("session_id").to_owned(),
            e["request_id"].as_str().expect("request_id").to_owned(),
        );
        assert!(seen.insert(key), "two events for one request: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_initiated_requests_reach_the_right_client_and_come_back() {
    let gw = gateway(&stdio_backends(&["a", "b"], "")).await;
    // WebSocket: the backend's sampling request arrives with a gateway id; the answer goes back.
    let mut ws = WsClient::connect(gw.addr).await;
    let mut other = WsClient::connect(gw.addr).await;
    ws.send(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "b__sample", "arguments": {"prompt": "capital of France?"}}})).await;
    let asked = ws.next().await.unwrap();
    assert_eq!(asked["method"], "sampling/createMessage", "{asked}");
    assert!(asked["id"].as_str().unwrap().starts_with("gw-"), "{asked}");
    ws.send(json!({"jsonrpc": "2.0", "id": asked["id"], "result": {"role": "assistant", "content": {"type": "text", "text": "Paris"}, "model": "test"}})).await;
    let done = ws.next().await.unwrap();
    assert_eq!((done["id"].as_u64(), text(&done)), (Some(1), "Paris"));
    // roots/list from the other backend, answered while its call waits.
    ws.send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "a__roots", "arguments": {}}})).await;
    let asked = ws.next().await.unwrap();
    assert_eq!(asked["method"], "roots/list", "{asked}");
    ws.send(json!({"jsonrpc": "2.0", "id": asked["id"], "result": {"roots": [{"uri": "file:///work", "name": "work"}]}})).await;
    let done = ws.next().await.unwrap();
    assert_eq!(done["id"], 2);
    assert!(text(&done).contains("file:///work"), "{done}");
    other
        .send(json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}))
        .await;
    assert_eq!(
        other.next().await.unwrap()["id"],
        9,
        "the other client sees nothing of it"
    );

    // Streamable HTTP: the request arrives on the call's own SSE stream; the answer is POSTed.
    let mut http = HttpClient::connect(gw.addr).await;
    let mut stream = http.request_streaming(json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "a__sample", "arguments": {"prompt": "2+2?"}}})).await;
    let (_, asked) = tokio::time::timeout(Duration::from_secs(20), stream.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(asked["method"], "sampling/createMessage");
    let r = http.post(json!({"jsonrpc": "2.0", "id": asked["id"], "result": {"role": "assistant", "content": {"type": "text", "text": "4"}, "model": "test"}})).await;
    assert_eq!(r.status, 202);
    let (done, _) = response_on(&mut stream, &json!(5)).await;
    assert_eq!(text(&done), "4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_streams_with_its_call_and_cancellation_reaches_only_its_backend() {
    let gw = gateway(&stdio_backends(&["a", "b"], "")).await;
    let http = HttpClient::connect(gw.addr).await;
    let mut stream = http
        .request_streaming(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "a__progress", "arguments": {"steps": 3}, "_meta": {"progressToken": "tok"}}}))
        .await;
    let (done, before) = response_on(&mut stream, &json!(3)).await;
    assert_eq!(text(&done), "3 steps done");
    let progress: Vec<_> = before
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .map(|m| m["params"]["progress"].as_u64().unwrap())
        .collect();
    assert_eq!(
        progress,
        vec![1, 2, 3],
        "every step, in order, before the answer"
    );
    assert!(before.iter().all(|m| m["params"]["progressToken"] == "tok"));

    let mut ws = WsClient::connect(gw.addr).await;
    ws.send(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "a__sleep", "arguments": {"ms": 30000}}})).await;
    // The call is in flight once a later request on the same backend has been answered.
    assert_eq!(
        text(&ws.call(8, "a__echo", json!({"message": "x"})).await),
        "x"
    );
    ws.send(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7, "reason": "user"}})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = ws.call(9, "a__cancellations", json!({})).await;
        if text(&a) == "1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cancellation never reached backend a"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(
        text(&ws.call(10, "b__cancellations", json!({})).await),
        "0",
        "backend b never hears of it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_call_fails_its_calls_at_once_and_comes_back() {
    let gw = gateway(&stdio_backends(
        &["a", "b"],
        ", restart: {backoff_initial_ms: 50}",
    ))
    .await;
    let mut ws = WsClient::connect(gw.addr).await;
    let pid_before = text(&ws.call(1, "a__whoami", json!({})).await).to_owned();
    ws.send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "a__sleep", "arguments": {"ms": 30000}}})).await;
    ws.send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "b__sleep", "arguments": {"ms": 300}}})).await;
    let started = Instant::now();
    ws.send(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "a__crash", "arguments": {}}})).await;
    let mut answers = std::collections::BTreeMap::new();
    while answers.len() < 3 {
        let m = ws.next().await.unwrap();
        answers.insert(m["id"].as_u64().unwrap(), m);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "pending calls fail at once, not at their timeout"
    );
    for id in [2, 4] {
        let err = &answers[&id]["error"];
        assert_eq!(
            (err["code"].as_i64(), err["data"]["error_type"].as_str()),
            (Some(-32010), Some("unavailable")),
            "{}",
            answers[&id]
        );
    }
    assert_eq!(
        text(&answers[&3]),
        "slept 300 ms",
        "the other backend's call is untouched"
    );
    // Restarted with the session's handshake replayed: the same session works again.
    let deadline = Instant::now() + Duration::from_secs(15);
    let pid_after = loop {
        let m = ws.call(5, "a__whoami", json!({})).await;
        if m.get("result").is_some() {
            break text(&m).to_owned();
        }
        assert!(Instant::now() < deadline, "backend a never came back: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(pid_before, pid_after, "a new process");
    let metrics = scrape(gw.metrics).await;
    assert_eq!(
        sample(
            &metrics,
            r#"gateway_backend_restarts_total{backend="a",backend_type="stdio"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"gateway_error_recovery_total{error_type="unavailable",mechanism="restart"}"#
        ),
        Some(1.0)
    );
}

/// A 10 s call to the backend namespaced `slow` (timeout 1 s) is answered with a timeout at the
/// deadline, and the backend hears it should stop.
async fn times_out_and_is_told_to_stop(gw: &support::processes::Gateway) {
    let mut ws = WsClient::connect(gw.addr).await;
    let started = Instant::now();
    let resp = ws.call(1, "slow__sleep", json!({"ms": 10000})).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(5),
        "answered at the timeout, not before it: {waited:?}"
    );
    assert_eq!(resp["error"]["code"], -32008, "{resp}");
    assert_eq!(resp["error"]["data"]["error_type"], "timeout");
    assert_eq!(
        text(&ws.call(2, "slow__cancellations", json!({})).await),
        "1",
        "the backend was told to stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_times_out_and_is_told_to_stop() {
    let gw = gateway(&stdio_backends(&["slow"], ", timeout_secs: 1")).await;
    times_out_and_is_told_to_stop(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_http_backend_times_out_and_is_told_to_stop() {
    // The POST of a call to a Streamable HTTP backend runs under the call's deadline.
    let (_demo, demo) = support::processes::demo_http().await;
    let gw = gateway(&format!(
        "backends:\n  - {{namespace: slow, transport: streamable_http, url: 'http://{demo}/mcp', timeout_secs: 1}}\n"
    ))
    .await;
    times_out_and_is_told_to_stop(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_backends_stdout_is_dropped_and_counted() {
    let gw = gateway(&stdio_backends(&["g"], "")).await;
    let mut ws = WsClient::connect(gw.addr).await;
    assert_eq!(
        text(&ws.call(1, "g__garbage", json!({})).await),
        "garbage written"
    );
    assert_eq!(
        text(
            &ws.call(2, "g__echo", json!({"message": "still fine"}))
                .await
        ),
        "still fine"
    );
    let metrics = scrape(gw.metrics).await;
    assert_eq!(
        sample(
            &metrics,
            r#"gateway_backend_protocol_errors_total{backend="g",backend_type="stdio"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_get_stream_resumes_from_last_event_id() {
    let gw = gateway(&stdio_backends(&["a"], "")).await;
    let mut http = HttpClient::connect(gw.addr).await;
    // Answered as JSON, so the backend's request has no call stream: it goes to the GET stream.
    let call = {
        let mut conn = Conn::open(gw.addr, None).await;
        let session = http.session.clone();
        tokio::spawn(async move {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "a__roots", "arguments": {}}}).to_string();
            conn.post(
                "/mcp",
                body,
                &[("mcp-session-id", &session), ("accept", "application/json")],
            )
            .await
            .json()
        })
    };
    let mut events = http.listen(None).await;
    let (event_id, asked) = tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(asked["method"], "roots/list");
    let event_id = event_id.expect("GET stream events carry ids");
    // Reconnect as if the first stream broke: the event is replayed after the id before it.
    let previous = (event_id.parse::<u64>().unwrap() - 1).to_string();
    let mut resumed = http.listen(Some(&previous)).await;
    let (again_id, again) = tokio::time::timeout(Duration::from_secs(20), resumed.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (again_id.as_deref(), &again),
        (Some(event_id.as_str()), &asked)
    );
    let r = http.post(json!({"jsonrpc": "2.0", "id": asked["id"], "result": {"roots": [{"uri": "file:///tmp", "name": "tmp"}]}})).await;
    assert_eq!(r.status, 202);
    let done = call.await.unwrap();
    assert!(text(&done).contains("file:///tmp"), "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_limit_sheds_at_once() {
    let gw = gateway(&format!(
        "limits: {{max_in_flight: 1}}\n{}",
        stdio_backends(&["a"], "")
    ))
    .await;
    let mut ws = WsClient::connect(gw.addr).await;
    ws.send(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "a__sleep", "arguments": {"ms": 1500}}})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sample(&scrape(gw.metrics).await, "gateway_requests_in_flight") != Some(1.0) {
        assert!(Instant::now() < deadline, "the call never got in flight");
        tokio::task::yield_now().await;
    }
    let shed = ws.call(2, "a__echo", json!({"message": "x"})).await;
    assert_eq!(
        (
            shed["error"]["code"].as_i64(),
            shed["error"]["data"]["retryable"].as_bool()
        ),
        (Some(-32010), Some(true)),
        "{shed}"
    );
    assert_eq!(text(&ws.next().await.unwrap()), "slept 1500 ms");
    let metrics = scrape(gw.metrics).await;
    assert_eq!(
        sample(
            &metrics,
            r#"gateway_connection_limit_reached_total{scope="in_flight"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
}
