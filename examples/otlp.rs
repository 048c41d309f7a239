//! The gateway exporting its traces to an OpenTelemetry collector.
//!
//! ```text
//! cargo run --example otlp -- http://127.0.0.1:4318 http_protobuf   # or http://127.0.0.1:4317 grpc
//! ```
//!
//! Serves the built-in default (the demo backend over stdio) on 127.0.0.1:8080 and samples every
//! trace; each request's server span and each backend call's client span go to the collector,
//! parented under the caller's `traceparent` when there is one.

use std::sync::Arc;

use mcp_gateway::config::{Config, OtlpConfig, OtlpProtocol};
use mcp_gateway::demo::{DemoServer, serve_stdio};
use tracing_subscriber::util::SubscriberInitExt;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Runtime::new()?;
    if args.first().map(String::as_str) == Some("demo-server") {
        return Ok(runtime.block_on(serve_stdio(Arc::new(DemoServer::new())))?);
    }
    let mut config = Config::builtin(&std::env::current_exe()?);
    config.backends[0].args = vec!["demo-server".to_owned()];
    config.tracing.otlp = Some(OtlpConfig {
        endpoint: args
            .first()
            .cloned()
            .unwrap_or_else(|| "http://127.0.0.1:4318".to_owned()),
        protocol: if args.get(1).map(String::as_str) == Some("grpc") {
            OtlpProtocol::Grpc
        } else {
            OtlpProtocol::HttpProtobuf
        },
        headers: Default::default(),
    });
    let (otlp, exporter) =
        mcp_gateway::otlp::pipeline(config.tracing.otlp.as_ref().expect("set above"));
    // JSON log lines at info (the exporter still gets every span), as the binary does.
    let filter = tracing_subscriber::EnvFilter::new("info");
    mcp_gateway::logs::subscriber(filter, false, Some(otlp)).init();
    runtime.block_on(async move {
        tokio::spawn(exporter);
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        mcp_gateway::run(config, ctrl_c).await
    })?;
    Ok(())
}
