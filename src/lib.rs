//! mcp-gateway: puts MCP servers behind one observable endpoint.
//!
//! The reusable Tower layers live in the [`layers`] crate (`mcp-gateway-layers`).

pub use mcp_gateway_layers as layers;

pub mod backend;
pub mod config;
pub mod demo;
pub mod frontend;
pub mod logs;
pub mod mcp;
pub mod otlp;
pub mod proxy;
pub mod telemetry;

/// Runs the gateway for `config` until `shutdown` resolves: binds the client and metrics
/// listeners, serves, then drains requests in flight (10 s), stops the backends gracefully and
/// waits for their processes. Connections are served on the caller's runtime.
pub async fn run(
    config: config::Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    run_with(None, config, shutdown).await
}

/// As [`run`], each client connection served on one of `workers`' threads (the binary's way:
/// see [`frontend::Workers`]).
pub async fn run_on(
    workers: &frontend::Workers,
    config: config::Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    run_with(Some(workers), config, shutdown).await
}

async fn run_with(
    workers: Option<&frontend::Workers>,
    config: config::Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    use std::sync::Arc;
    use std::time::Duration;
    let config = Arc::new(config);
    let telemetry = telemetry::Telemetry::new();
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics.listen).await?;
    tracing::info!(
        listen = %listener.local_addr()?,
        metrics = %metrics_listener.local_addr()?,
        backends = config.backends.len(),
        "mcp-gateway serving /mcp, /sse and /ws"
    );
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics = tokio::spawn(telemetry::serve_metrics(
        metrics_listener,
        telemetry.registry.clone(),
        config.limits.request_read_timeout(),
        async {
            let _ = metrics_stopped.await;
        },
    ));
    let handler: Arc<dyn mcp::McpHandler> =
        Arc::new(proxy::Gateway::new(config.clone(), telemetry.clone()));
    frontend::serve(
        workers,
        listener,
        handler,
        config.clone(),
        telemetry,
        shutdown,
        Duration::from_secs(10),
    )
    .await;
    let grace = config
        .backends
        .iter()
        .map(|b| b.restart.grace_secs)
        .max()
        .unwrap_or(0);
    backend::wait_for_children(Duration::from_secs(grace * 2 + 1)).await;
    let _ = stop_metrics.send(());
    let _ = metrics.await;
    tracing::info!("mcp-gateway stopped");
    Ok(())
}

/// Locks a mutex, taking over from a thread that panicked while holding it: the data behind the
/// gateway's locks are maps and counters that every critical section leaves consistent.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Resolves once `done` holds; whoever makes it hold calls `notify.notify_waiters()`.
pub(crate) async fn wait_until(notify: &tokio::sync::Notify, done: impl Fn() -> bool) {
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        // Registered before `done` is read, so a wake-up in between is not missed.
        notified.as_mut().enable();
        if done() {
            return;
        }
        notified.await;
    }
}
