//! The `mcp-gateway` binary.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mcp_gateway::config::Config;
use mcp_gateway::demo::{DemoServer, serve_stdio};
use mcp_gateway::frontend::Workers;
use mcp_gateway::mcp::McpHandler;
use mcp_gateway::telemetry::Telemetry;
use tokio::net::TcpListener;

mod allocator;

// glibc's malloc was a fifth of a proxied call's instructions (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: allocator::MiMalloc = allocator::MiMalloc;

const USAGE: &str = "\
usage:
  mcp-gateway [--config FILE] [--listen ADDR] [--metrics-listen ADDR]
      run the gateway; without --config (or MCP_GATEWAY_CONFIG) it serves the built-in
      default: /mcp, /sse and /ws on 127.0.0.1:8080, metrics on 127.0.0.1:9090/metrics, and the
      demo server as a stdio backend under the namespace `demo`
  mcp-gateway check-config FILE
      validate a configuration file and exit
  mcp-gateway demo-server stdio
  mcp-gateway demo-server http ADDR
      the demo MCP server, over stdio or over Streamable HTTP (/mcp), SSE (/sse) and WebSocket (/ws)

environment: MCP_GATEWAY_CONFIG, MCP_GATEWAY_LISTEN, MCP_GATEWAY_METRICS_LISTEN,
  MCP_GATEWAY_LOG (a tracing filter, default info), MCP_GATEWAY_LOG_FORMAT (json or text, default json)
SIGINT or SIGTERM: stop accepting, drain in-flight requests (10 s), stop backends, exit";

/// Logs (filtered by `MCP_GATEWAY_LOG`) and, when configured, OTLP export of sampled spans
/// (never filtered by the log level).
fn init_telemetry(otlp: Option<mcp_gateway::otlp::OtlpLayer>) {
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("MCP_GATEWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let text = std::env::var("MCP_GATEWAY_LOG_FORMAT").as_deref() == Ok("text");
    if !text {
        // The JSON layer is the only log layer: request lines can skip tracing's dispatch.
        mcp_gateway::logs::json_layer_only();
    }
    mcp_gateway::logs::subscriber(filter, text, otlp).init();
}

fn fail(message: impl std::fmt::Display) -> ! {
    mcp_gateway::logs::flush();
    eprintln!("mcp-gateway: {message}");
    std::process::exit(2);
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => fail(format!("cannot listen for SIGTERM: {e}")),
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> TcpListener {
    match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => fail(format!("cannot listen on {addr} ({what}): {e}")),
    }
}

fn load_config(args: &[String]) -> Config {
    let mut config_path = std::env::var_os("MCP_GATEWAY_CONFIG").map(PathBuf::from);
    let mut listen = std::env::var("MCP_GATEWAY_LISTEN").ok();
    let mut metrics_listen = std::env::var("MCP_GATEWAY_METRICS_LISTEN").ok();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .unwrap_or_else(|| fail(format!("{name} needs a value\n{USAGE}")))
        };
        match arg.as_str() {
            "--config" => config_path = Some(PathBuf::from(value("--config"))),
            "--listen" => listen = Some(value("--listen")),
            "--metrics-listen" => metrics_listen = Some(value("--metrics-listen")),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => fail(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let mut config = match &config_path {
        Some(path) => Config::load(path).unwrap_or_else(|e| fail(e)),
        None => {
            let exe = std::env::current_exe()
                .unwrap_or_else(|e| fail(format!("cannot find this program's path: {e}")));
            Config::builtin(&exe)
        }
    };
    if let Some(addr) = listen {
        config.listen = addr
            .parse()
            .unwrap_or_else(|e| fail(format!("--listen {addr}: {e}")));
    }
    if let Some(addr) = metrics_listen {
        config.metrics.listen = addr
            .parse()
            .unwrap_or_else(|e| fail(format!("--metrics-listen {addr}: {e}")));
    }
    config
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = |builder: &mut tokio::runtime::Builder| {
        builder
            .enable_all()
            .build()
            .unwrap_or_else(|e| fail(format!("cannot start the runtime: {e}")))
    };
    match args.first().map(String::as_str) {
        Some("demo-server") => {
            runtime(&mut tokio::runtime::Builder::new_multi_thread()).block_on(async {
                init_telemetry(None);
                let handler: Arc<dyn McpHandler> = Arc::new(DemoServer::new());
                match (args.get(1).map(String::as_str), args.get(2)) {
                    (Some("stdio"), None) => {
                        if let Err(e) = serve_stdio(handler).await {
                            fail(format!("demo server: {e}"));
                        }
                    }
                    (Some("http"), Some(addr)) => {
                        let mut config = Config::from_yaml("{}").unwrap_or_else(|e| fail(e));
                        config.listen = addr
                            .parse()
                            .unwrap_or_else(|e| fail(format!("{addr}: {e}")));
                        let listener = bind(config.listen, "demo server").await;
                        eprintln!(
                            "demo server listening on http://{}",
                            listener
                                .local_addr()
                                .map(|a| a.to_string())
                                .unwrap_or_default()
                        );
                        mcp_gateway::frontend::serve(
                            None,
                            listener,
                            handler,
                            Arc::new(config),
                            Telemetry::new(),
                            shutdown_signal(),
                            Duration::from_secs(2),
                        )
                        .await;
                    }
                    _ => fail(USAGE),
                }
            })
        }
        Some("check-config") => match args.get(1).inspect(|_| init_telemetry(None)) {
            Some(path) => match Config::load(std::path::Path::new(path)) {
                Ok(config) => println!("{path}: valid ({} backends)", config.backends.len()),
                Err(e) => fail(e),
            },
            None => fail(USAGE),
        },
        _ => {
            let config = load_config(&args);
            let otlp = config
                .tracing
                .otlp
                .as_ref()
                .map(mcp_gateway::otlp::pipeline);
            let (layer, exporter) = match otlp {
                Some((layer, exporter)) => (Some(layer), Some(exporter)),
                None => (None, None),
            };
            init_telemetry(layer);
            // Connections on threads of their own; this thread accepts, serves metrics, exports
            // spans and waits for the signal.
            let workers = Workers::start(Workers::default_count())
                .unwrap_or_else(|e| fail(format!("cannot start the connection threads: {e}")));
            runtime(&mut tokio::runtime::Builder::new_current_thread()).block_on(async {
                if let Some(exporter) = exporter {
                    tokio::spawn(exporter);
                }
                if let Err(e) = mcp_gateway::run_on(&workers, config, shutdown_signal()).await {
                    fail(format!("cannot serve: {e}"));
                }
            });
            drop(workers);
        }
    }
    mcp_gateway::logs::flush();
}
