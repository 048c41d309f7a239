//! The layers stacked in a plain hyper service (examples/stack_layers.rs), driven over real
//! loopback sockets with a known traffic mix; the scrape is checked exactly and by promtool.

#[allow(dead_code)]
#[path = "../examples/stack_layers.rs"]
mod stack_layers;
mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use support::{Conn, peer, run_peer, sample};

const T1: &str = "00-11111111111111111111111111111111-1111111111111111-01";
const T2: &str = "00-22222222222222222222222222222222-2222222222222222-01";
const T3: &str = "00-33333333333333333333333333333333-3333333333333333-01";

fn call(id: u32, tool: &str, args: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
    )
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

async fn start(limits: stack_layers::Limits) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(stack_layers::serve(
        listener,
        limits,
        std::future::pending(),
    ));
    addr
}

/// Waits (bounded) until the scrape shows `series` at `value`.
async fn wait_for(conn: &mut Conn, series: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&conn.get("/metrics", &[]).await.body).into_owned();
        if sample(&text, series) == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {value}:\n{text}"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_layer_counts_exactly_what_happened() {
    let limits = stack_layers::Limits {
        max_connections: 6,
        max_connections_per_ip: 4,
        max_in_flight: 2,
    };
    let addr = start(limits).await;
    let mut a = Conn::open(addr, Some(loopback(1))).await;

    // Successes, with trace context in a header and in params._meta.
    for i in 0..3 {
        let r = a
            .post("/mcp", call(i, "echo", r#"{"message":"hi"}"#), &[])
            .await;
        assert_eq!(
            (r.status, r.json()["result"]["content"][0]["text"].as_str()),
            (200, Some("hi"))
        );
    }
    let r = a
        .post(
            "/mcp",
            r#"{"jsonrpc":"2.0","id":"p","method":"ping"}"#,
            &[("traceparent", T1)],
        )
        .await;
    assert_eq!(r.status, 200);
    let list = format!(
        r#"{{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{{"_meta":{{"traceparent":"{T2}"}}}}}}"#
    );
    assert_eq!(
        a.post("/mcp", list, &[("traceparent", T3)]).await.status,
        200
    );

    // Failures of each kind.
    for i in 10..12 {
        let r = a.post("/mcp", call(i, "fail", "{}"), &[]).await;
        assert_eq!(
            (r.status, r.json()["result"]["isError"].as_bool()),
            (200, Some(true))
        );
    }
    let r = a.post("/mcp", call(12, "nosuch", "{}"), &[]).await;
    assert_eq!(r.json()["error"]["code"], -32602);
    let r = a
        .post(
            "/mcp",
            r#"{"jsonrpc":"2.0","id":13,"method":"bogus/method"}"#,
            &[],
        )
        .await;
    assert_eq!(r.json()["error"]["code"], -32601);
    let r = a.post("/mcp", "{bad", &[]).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_i64()),
        (400, Some(-32700))
    );
    let oversized = format!(
        r#"{{"jsonrpc":"2.0","id":14,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(1 << 20)
    );
    let r = a.post("/mcp", oversized, &[]).await;
    assert_eq!(
        (r.status, r.json()["error"]["data"]["error_type"].as_str()),
        (413, Some("validation"))
    );
    let r = a
        .post("/mcp", call(15, "refuse", "{}"), &[("traceparent", T3)])
        .await;
    assert_eq!(r.status, 503);
    let err = r.json();
    assert_eq!(err["id"], 15);
    assert_eq!(err["error"]["code"], -32010);
    assert_eq!(err["error"]["data"]["error_type"], "unavailable");
    assert_eq!(err["error"]["data"]["retryable"], true);
    assert_eq!(
        err["error"]["data"]["trace_id"],
        "33333333333333333333333333333333"
    );
    assert_eq!(
        a.post("/mcp", call(16, "reset", "{}"), &[]).await.status,
        503
    );
    for (id, tool, status, error_type) in [
        (40, "unauthorized", 401, "unauthorized"),
        (41, "forbidden", 403, "forbidden"),
        (42, "limited", 429, "rate_limited"),
        (43, "garbage", 200, "backend_protocol"),
        (44, "broken", 500, "internal"),
        (45, "stall", 504, "timeout"),
    ] {
        let r = a.post("/mcp", call(id, tool, "{}"), &[]).await;
        assert_eq!(r.status, status, "{tool}: {:?}", r.body);
        if status >= 500 {
            // Gateway-made errors: classified, never with internal text.
            let err = r.json();
            assert_eq!(
                err["error"]["data"]["error_type"], error_type,
                "{tool}: {err}"
            );
            assert!(
                !String::from_utf8_lossy(&r.body).contains("secret"),
                "{tool}: internal text leaked"
            );
        }
    }
    assert_eq!(
        a.post("/mcp", call(46, "limited", "{}"), &[]).await.headers["retry-after"],
        "60",
        "passed through, not waited for"
    );
    let r = a.post("/mcp", call(17, "flaky", "{}"), &[]).await;
    assert_eq!(
        r.json()["result"]["content"][0]["text"],
        "recovered",
        "the retry layer recovered it"
    );

    // In-flight limit: two slow calls hold both places; the third is shed at once.
    let mut b = Conn::open(addr, Some(loopback(1))).await;
    let mut c = Conn::open(addr, Some(loopback(1))).await;
    let slow_b = tokio::spawn(async move {
        (
            b.post("/mcp", call(20, "sleep", r#"{"ms":1500}"#), &[])
                .await
                .status,
            b,
        )
    });
    let slow_c = tokio::spawn(async move {
        (
            c.post("/mcp", call(21, "sleep", r#"{"ms":1500}"#), &[])
                .await
                .status,
            c,
        )
    });
    wait_for(&mut a, "gateway_requests_in_flight", 2.0).await;
    let shed = a
        .post("/mcp", call(22, "echo", r#"{"message":"x"}"#), &[])
        .await;
    assert_eq!(
        (
            shed.status,
            shed.headers.get("retry-after").map(|v| v.as_bytes())
        ),
        (503, Some(&b"1"[..]))
    );
    let (status_b, _b) = slow_b.await.expect("slow call b");
    let (status_c, _c) = slow_c.await.expect("slow call c");
    assert_eq!((status_b, status_c), (200, 200));

    // Connection limits: 4 per IP (a, b, c, d), 6 in all.
    let mut d = Conn::open(addr, Some(loopback(1))).await;
    assert_eq!(d.get("/metrics", &[]).await.status, 200);
    let r = Conn::open(addr, Some(loopback(1)))
        .await
        .post("/mcp", call(30, "echo", "{}"), &[])
        .await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_i64()),
        (503, Some(-32010))
    );
    assert_eq!(
        r.headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let mut f = Conn::open(addr, Some(loopback(2))).await;
    assert_eq!(f.get("/metrics", &[]).await.status, 200);
    let mut g = Conn::open(addr, Some(loopback(3))).await;
    assert_eq!(g.get("/metrics", &[]).await.status, 200);
    let r = Conn::open(addr, Some(loopback(4)))
        .await
        .get("/metrics", &[])
        .await;
    assert_eq!(
        r.status, 503,
        "the seventh connection is over the global limit"
    );

    let text = String::from_utf8_lossy(&a.get("/metrics", &[]).await.body).into_owned();
    let expected = [
        (
            r#"gateway_requests_total{method="tools/call",namespace="none",status="ok"}"#,
            6.0,
        ),
        (
            r#"gateway_requests_total{method="ping",namespace="none",status="ok"}"#,
            1.0,
        ),
        (
            r#"gateway_requests_total{method="tools/list",namespace="none",status="ok"}"#,
            1.0,
        ),
        (
            r#"gateway_requests_total{method="tools/call",namespace="none",status="tool_error"}"#,
            2.0,
        ),
        (
            r#"gateway_requests_total{method="tools/call",namespace="none",status="validation"}"#,
            1.0,
        ),
        (
            r#"gateway_requests_total{method="tools/call",namespace="none",status="unavailable"}"#,
            3.0,
        ),
        (
            r#"gateway_requests_total{method="other",namespace="none",status="not_found"}"#,
            1.0,
        ),
        (
            r#"gateway_requests_total{method="other",namespace="none",status="parse"}"#,
            1.0,
        ),
        (
            r#"gateway_requests_total{method="other",namespace="none",status="validation"}"#,
            1.0,
        ),
        (
            r#"gateway_request_duration_seconds_count{method="tools/call",namespace="none"}"#,
            19.0,
        ),
        (
            r#"gateway_request_duration_seconds_count{method="other",namespace="none"}"#,
            3.0,
        ),
        (
            r#"gateway_errors_total{error_type="unavailable",component="transport",severity="high",http_status="503",retryable="true"}"#,
            2.0,
        ),
        (
            r#"gateway_errors_total{error_type="unavailable",component="limiter",severity="high",http_status="503",retryable="true"}"#,
            1.0,
        ),
        (
            r#"gateway_errors_total{error_type="tool_error",component="backend",severity="low",http_status="200",retryable="false"}"#,
            2.0,
        ),
        (
            r#"gateway_errors_total{error_type="validation",component="backend",severity="low",http_status="400",retryable="false"}"#,
            1.0,
        ),
        (
            r#"gateway_errors_total{error_type="not_found",component="backend",severity="low",http_status="404",retryable="false"}"#,
            1.0,
        ),
        (
            r#"gateway_errors_total{error_type="parse",component="client",severity="low",http_status="400",retryable="false"}"#,
            1.0,
        ),
        (
            r#"gateway_errors_total{error_type="validation",component="client",severity="low",http_status="413",retryable="false"}"#,
            1.0,
        ),
        (
            r#"gateway_error_handling_duration_seconds_count{error_type="unavailable",component="transport"}"#,
            2.0,
        ),
        (
            r#"gateway_error_recovery_total{error_type="unavailable",mechanism="retry"}"#,
            1.0,
        ),
        (
            r#"gateway_connection_limit_reached_total{scope="in_flight"}"#,
            1.0,
        ),
        (
            r#"gateway_connection_limit_reached_total{scope="per_ip"}"#,
            1.0,
        ),
        (
            r#"gateway_connection_limit_reached_total{scope="global"}"#,
            1.0,
        ),
        ("gateway_requests_in_flight", 0.0),
    ];
    for (series, value) in expected {
        assert_eq!(sample(&text, series), Some(value), "{series}\n{text}");
    }
    let error_series = text
        .lines()
        .filter(|l| l.starts_with("gateway_errors_total{"))
        .count();
    assert_eq!(
        error_series, 13,
        "no error series beyond the expected ones:\n{text}"
    );

    // Exemplars: OpenMetrics only, carrying the trace id of the request (params._meta wins over the header).
    let open = a
        .get(
            "/metrics",
            &[("accept", "application/openmetrics-text; version=1.0.0")],
        )
        .await;
    assert!(
        open.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let open = String::from_utf8_lossy(&open.body).into_owned();
    let exemplar_of = |method: &str| {
        open.lines()
            .filter(|l| {
                l.starts_with("gateway_request_duration_seconds_bucket{le=")
                    && l.contains(&format!("method=\"{method}\""))
            })
            .find_map(|l| {
                l.split_once(" # {trace_id=\"")
                    .map(|(_, rest)| rest[..32].to_owned())
            })
    };
    assert_eq!(
        exemplar_of("ping").as_deref(),
        Some("11111111111111111111111111111111"),
        "{open}"
    );
    assert_eq!(
        exemplar_of("tools/list").as_deref(),
        Some("22222222222222222222222222222222"),
        "{open}"
    );
    assert!(!text.contains("# {"), "the 0.0.4 text carries no exemplars");

    if let Some(promtool) = peer("promtool") {
        run_peer(&promtool, &["check", "metrics"], text.as_bytes());
    }
}
