//! The metrics registry with every metric the gateway records, and the `/metrics` listener.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use mcp_gateway_layers::limit::{LimitMetrics, WebSocketConnections};
use mcp_gateway_layers::metrics::{GatewayMetrics, render};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::backend::BackendMetrics;
use crate::mcp::ClientTransport;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    transport: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Every metric handle the gateway records into, and the registry that serves them.
#[derive(Debug, Clone)]
pub struct Telemetry {
    /// The registry `/metrics` serves.
    pub registry: Arc<Registry>,
    /// Request metrics (the layers').
    pub gateway: GatewayMetrics,
    /// Limit refusals.
    pub limits: LimitMetrics,
    /// Backend requests, health and restarts.
    pub backends: BackendMetrics,
    /// Open WebSocket connections.
    pub websockets: WebSocketConnections,
    sessions: Family<TransportLabels, Gauge>,
}

impl Telemetry {
    /// Registers everything in a new registry.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let gateway = GatewayMetrics::register(&mut registry);
        let limits = LimitMetrics::register(&mut registry);
        let backends = BackendMetrics::register(&mut registry, gateway.clone());
        let websockets = WebSocketConnections::register(&mut registry);
        let sessions = Family::<TransportLabels, Gauge>::default();
        registry.register(
            // The contract's `gateway_session_count` fails promtool's lint (`_count` is reserved
            // for histograms and summaries); see docs/ARCHITECTURE.md.
            "gateway_sessions",
            "Open client sessions, by client transport",
            sessions.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "gateway_build_info",
            "The running gateway's version (always 1)",
            build.clone(),
        );
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        Telemetry {
            registry: Arc::new(registry),
            gateway,
            limits,
            backends,
            websockets,
            sessions,
        }
    }

    /// Counts a session as open until the guard is dropped.
    pub fn session_opened(&self, transport: ClientTransport) -> SessionGuard {
        let gauge = self
            .sessions
            .get_or_create(&TransportLabels {
                transport: transport.as_str(),
            })
            .clone();
        gauge.inc();
        SessionGuard { gauge }
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

/// Keeps one session counted.
#[derive(Debug)]
pub struct SessionGuard {
    gauge: Gauge,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Serves `GET /metrics` (OpenMetrics when asked for, else Prometheus text 0.0.4) until
/// `shutdown`. A connection whose next request head does not arrive within `read_timeout` (idle
/// between scrapes included) is closed.
pub async fn serve_metrics(
    listener: TcpListener,
    registry: Arc<Registry>,
    read_timeout: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener accept failed");
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let registry = registry.clone();
                    async move {
                        let resp = if req.uri().path() == "/metrics"
                            && req.method() == http::Method::GET
                        {
                            let accept = req
                                .headers()
                                .get(http::header::ACCEPT)
                                .and_then(|v| v.to_str().ok());
                            let (content_type, text) = render(&registry, accept);
                            http::Response::builder()
                                .header(http::header::CONTENT_TYPE, content_type)
                                .body(Full::new(Bytes::from(text)))
                        } else {
                            http::Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::from_static(b"not found")))
                        };
                        Ok::<_, Infallible>(resp.unwrap_or_default())
                    }
                });
            let _ = crate::frontend::hyper_http1(read_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
