//! OTLP export, judged by a receiver built on the official OpenTelemetry protobuf definitions:
//! over gRPC and over HTTP/protobuf, one trace holds the client's span (from `traceparent`), the
//! gateway's server span and its backend call span, with the MCP attributes; the stdio backend
//! receives the call span's context in `params._meta`.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Conn;
use support::clients::{initialize, text};
use support::processes::{gateway, gateway_exe};
use tokio::io::{AsyncBufReadExt, BufReader};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn receiver_python() -> Option<PathBuf> {
    let peers = std::env::var_os("MCP_GATEWAY_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/peers"));
    let python = peers.join("venv/bin/python");
    let ready = std::process::Command::new(&python)
        .args([
            "-c",
            "import grpc, opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if ready {
        return Some(python);
    }
    if std::env::var_os("MCP_GATEWAY_REQUIRE_PEERS").is_some() {
        panic!("grpcio and opentelemetry-proto are required; run scripts/test");
    }
    eprintln!(
        "NOTICE: the OTLP receiver's packages are not installed; skipping (scripts/test installs them)"
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_client_through_gateway_to_backend_over_grpc_and_http() {
    let Some(python) = receiver_python() else {
        return;
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/otlp_receiver.py");
    let mut receiver = tokio::process::Command::new(python)
        .arg(script)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the OTLP receiver");
    let mut lines = BufReader::new(receiver.stdout.take().unwrap()).lines();
    let ready: Value = serde_json::from_str(
        &tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let (spans_tx, mut spans) = tokio::sync::mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = spans_tx.send(serde_json::from_str(&line).unwrap());
        }
    });

    for (protocol, port) in [
        ("grpc", ready["grpc"].as_u64().unwrap()),
        ("http_protobuf", ready["http"].as_u64().unwrap()),
    ] {
        let yaml = format!(
            "tracing: {{sampling_ratio: 0.0, otlp: {{endpoint: 'http://127.0.0.1:{port}', protocol: {protocol}, headers: {{x-api-key: test}}}}}}\nbackends:\n  - {{namespace: demo, transport: stdio, command: {}, args: [demo-server, stdio]}}\n",
            gateway_exe()
        );
        let gw = gateway(&yaml).await;
        let mut conn = Conn::open(gw.addr, None).await;
        let init = conn.post("/mcp", initialize(0).to_string(), &[]).await;
        let session = init.headers["mcp-session-id"].to_str().unwrap().to_owned();
        let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
        let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "demo__traceparent", "arguments": {}}});
        let reply = conn
            .post(
                "/mcp",
                call.to_string(),
                &[("mcp-session-id", &session), ("traceparent", &traceparent)],
            )
            .await;
        let at_backend = text(&reply.json()).to_owned();
        assert!(
            at_backend.starts_with(&format!("00-{CLIENT_TRACE}-")),
            "the backend got the trace in _meta: {at_backend}"
        );
        let backend_parent = &at_backend[36..52];

        // The receiver gets the gateway's two spans of that trace (new roots are not sampled: ratio 0).
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut trace = Vec::new();
        while trace.len() < 2 {
            let span = tokio::time::timeout(
                deadline.saturating_duration_since(Instant::now()),
                spans.recv(),
            )
            .await
            .unwrap_or_else(|_| panic!("{protocol}: spans never arrived; got {trace:?}"))
            .unwrap();
            assert_eq!(
                span["trace_id"], CLIENT_TRACE,
                "{protocol}: only the sampled client trace is exported: {span}"
            );
            trace.push(span);
        }
        let server = trace
            .iter()
            .find(|s| s["name"] == "mcp.server")
            .expect("a server span");
        let client = trace
            .iter()
            .find(|s| s["name"] == "mcp.client")
            .expect("a client span");
        assert_eq!(
            server["transport"],
            if protocol == "grpc" { "grpc" } else { "http" }
        );
        assert_eq!(
            server["x-api-key"], "test",
            "the configured export headers are sent"
        );
        assert_eq!(server["kind"], 2, "SPAN_KIND_SERVER");
        assert_eq!(client["kind"], 3, "SPAN_KIND_CLIENT");
        assert_eq!(server["parent_span_id"], CLIENT_SPAN, "client → gateway");
        assert_eq!(
            client["parent_span_id"], server["span_id"],
            "gateway → backend call"
        );
        assert_eq!(
            client["span_id"], backend_parent,
            "the backend's parent is the call span"
        );
        assert_eq!(server["resource"]["service.name"], "mcp-gateway");
        let attrs = &server["attributes"];
        assert_eq!(attrs["mcp.method.name"], "tools/call");
        assert_eq!(attrs["gen_ai.tool.name"], "demo__traceparent");
        assert_eq!(attrs["jsonrpc.request.id"], "7");
        assert_eq!(attrs["mcp.session.id"], session.as_str());
        assert_eq!(attrs["network.transport"], "tcp");
        let attrs = &client["attributes"];
        assert_eq!(
            (
                attrs["gen_ai.tool.name"].as_str(),
                attrs["network.transport"].as_str()
            ),
            (Some("traceparent"), Some("pipe"))
        );
        assert_eq!(server["status_code"], 1, "STATUS_CODE_OK");
        assert!(
            server["start"].as_u64() <= client["start"].as_u64()
                && client["end"].as_u64() <= server["end"].as_u64(),
            "{server} {client}"
        );
    }
}
