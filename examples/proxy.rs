//! The proxy from the library: a configuration, then `mcp_gateway::run` (the listeners, the
//! gateway handler, the frontends, the metrics, and the drain on Ctrl-C).
//!
//! ```text
//! cargo run --example proxy -- my-gateway.yaml
//! ```
//!
//! Without a config file it serves the built-in default, whose demo backend is this program
//! started again as `proxy demo-server`.

use std::sync::Arc;

use mcp_gateway::config::Config;
use mcp_gateway::demo::{DemoServer, serve_stdio};

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
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    mcp_gateway::run(config, ctrl_c).await?;
    Ok(())
}
