//! The proxy assembled from the library: a config, the telemetry, the gateway handler, the
//! frontends and the metrics listener.
//!
//! ```text
//! cargo run --example proxy -- my-gateway.yaml
//! ```
//!
//! Without a config file it serves the built-in default, whose demo backend is this program
//! started again as `proxy demo-server`.

use std::sync::Arc;
use std::time::Duration;

use mcp_gateway::config::Config;
use mcp_gateway::demo::{DemoServer, serve_stdio};
use mcp_gateway::proxy::Gateway;
use mcp_gateway::telemetry::{Telemetry, serve_metrics};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = std::env::args().nth(1);
    if arg.as_deref() == Some("demo-server") {
        return Ok(serve_stdio(Arc::new(DemoServer::new())).await?);
    }
    let config = match arg {
        Some(path) => Config::load(path.as_ref())?,
        None => {
            let mut config = Config::builtin(&std::env::current_exe()?);
            config.backends[0].args = vec!["demo-server".to_owned()];
            config
        }
    };
    let config = Arc::new(config);
    let telemetry = Telemetry::new();
    let metrics = TcpListener::bind(config.metrics.listen).await?;
    tokio::spawn(serve_metrics(
        metrics,
        telemetry.registry.clone(),
        std::future::pending(),
    ));
    let listener = TcpListener::bind(config.listen).await?;
    eprintln!(
        "proxy on http://{}/mcp, /sse and /ws",
        listener.local_addr()?
    );
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
}
