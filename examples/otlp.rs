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
use std::time::Duration;

use mcp_gateway::config::{Config, OtlpConfig, OtlpProtocol};
use mcp_gateway::demo::{DemoServer, serve_stdio};
use mcp_gateway::proxy::Gateway;
use mcp_gateway::telemetry::Telemetry;
use tracing_subscriber::layer::SubscriberExt;
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
    tracing_subscriber::registry()
        .with(mcp_gateway::logs::JsonLogLayer)
        .with(otlp)
        .init();
    let config = Arc::new(config);
    runtime.block_on(async move {
        tokio::spawn(exporter);
        let telemetry = Telemetry::new();
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let gateway = Arc::new(Gateway::new(config.clone(), telemetry.clone()));
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        mcp_gateway::frontend::serve(
            listener,
            gateway,
            config,
            telemetry,
            ctrl_c,
            Duration::from_secs(10),
        )
        .await;
        mcp_gateway::backend::wait_for_children(Duration::from_secs(5)).await;
        Ok(())
    })
}
