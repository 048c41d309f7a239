//! All the layers stacked by `ServiceBuilder` in a plain hyper service — not the gateway.
//!
//! The service is a tiny JSON-RPC (MCP-shaped) app on `POST /mcp`; `GET /metrics` serves the
//! registry. Run it and poke it:
//!
//! ```text
//! cargo run --example stack_layers -- 127.0.0.1:8081
//! curl -s localhost:8081/mcp -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}'
//! curl -s localhost:8081/metrics
//! ```
//!
//! Tools: `echo` (returns `message`), `fail` (a tool error), `sleep` (waits `ms`), `refuse` and
//! `reset` (fail like a backend whose connection is refused or reset), `flaky` (refused once,
//! then answers: the retry layer recovers it), `unauthorized` (401), `forbidden` (403),
//! `limited` (429, `Retry-After: 60`), `garbage` (a body that is not JSON-RPC), `broken` (an
//! internal error whose text must not leak), `stall` (outlasts the 3 s timeout). Unknown tools
//! get -32602, unknown methods -32601.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mcp_gateway::layers::BoxError;
use mcp_gateway::layers::classify::ClassifyLayer;
use mcp_gateway::layers::edge::{ErrorResponseLayer, FromErrorClass};
use mcp_gateway::layers::limit::{ConnectionLimiter, InFlightLimitLayer, LimitMetrics};
use mcp_gateway::layers::metrics::{GatewayMetrics, MetricsLayer};
use mcp_gateway::layers::peek::PeekJsonRpcLayer;
use mcp_gateway::layers::retry::RetryPolicy;
use mcp_gateway::layers::trace::TraceLayer;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tower::retry::RetryLayer;
use tower::{ServiceBuilder, ServiceExt};

/// The limits the example enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections in all.
    pub max_connections: usize,
    /// Open connections from one client IP.
    pub max_connections_per_ip: usize,
    /// Requests handled at once.
    pub max_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_connections_per_ip: 256,
            max_in_flight: 512,
        }
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

fn full(text: impl Into<Bytes>) -> http::Response<Body> {
    http::Response::new(
        Full::new(text.into())
            .map_err(|never| match never {})
            .boxed(),
    )
}

fn status(code: u16) -> http::Response<Body> {
    let mut resp = full(Bytes::new());
    *resp.status_mut() =
        http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    resp
}

fn json(status: u16, body: serde_json::Value) -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

/// The app behind the layers: a few MCP-shaped methods.
async fn app(
    req: http::Request<Full<Bytes>>,
    flaky: Arc<AtomicU64>,
) -> Result<http::Response<Full<Bytes>>, BoxError> {
    let body = req.into_body().collect().await?.to_bytes();
    let msg: serde_json::Value = serde_json::from_slice(&body)?;
    let id = msg["id"].clone();
    let ok = |result: serde_json::Value| {
        json(
            200,
            serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result}),
        )
    };
    let text = |t: &str| serde_json::json!({"content": [{"type": "text", "text": t}]});
    match msg["method"].as_str().unwrap_or("") {
        "ping" => Ok(ok(serde_json::json!({}))),
        "tools/list" => Ok(ok(
            serde_json::json!({"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}),
        )),
        "tools/call" => {
            let args = &msg["params"]["arguments"];
            match msg["params"]["name"].as_str().unwrap_or("") {
                "echo" => Ok(ok(text(args["message"].as_str().unwrap_or("")))),
                "fail" => Ok(ok(
                    serde_json::json!({"content": [{"type": "text", "text": "it failed"}], "isError": true}),
                )),
                "sleep" => {
                    tokio::time::sleep(Duration::from_millis(args["ms"].as_u64().unwrap_or(0)))
                        .await;
                    Ok(ok(text("slept")))
                }
                "refuse" => Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into()),
                "reset" => Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into()),
                "flaky" if flaky.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) => {
                    Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into())
                }
                "flaky" => Ok(ok(text("recovered"))),
                "unauthorized" => Ok(json(
                    401,
                    serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32001, "message": "who are you?"}}),
                )),
                "forbidden" => Ok(json(
                    403,
                    serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32003, "message": "not you"}}),
                )),
                "limited" => {
                    let mut resp = json(
                        429,
                        serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32029, "message": "slow down"}}),
                    );
                    resp.headers_mut().insert(
                        http::header::RETRY_AFTER,
                        http::HeaderValue::from_static("60"),
                    );
                    Ok(resp)
                }
                "garbage" => Ok(http::Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(b"this is not JSON-RPC")))?),
                "broken" => Err(std::io::Error::other("the disk is on fire at /var/secret").into()),
                "stall" => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(ok(text("too late")))
                }
                other => Ok(json(
                    200,
                    serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": format!("unknown tool: {other}")}}),
                )),
            }
        }
        _ => Ok(json(
            200,
            serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "method not found"}}),
        )),
    }
}

/// Serves `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let mut registry = Registry::default();
    let metrics = GatewayMetrics::register(&mut registry);
    let limit_metrics = LimitMetrics::register(&mut registry);
    let registry = Arc::new(registry);
    let connections = ConnectionLimiter::new(
        limits.max_connections,
        limits.max_connections_per_ip,
        limit_metrics.clone(),
    );
    let flaky = Arc::new(AtomicU64::new(0));

    let stack = ServiceBuilder::new()
        .layer(PeekJsonRpcLayer::new(1 << 20))
        .layer(TraceLayer::new())
        .layer(MetricsLayer::new(metrics.clone()))
        .layer(ErrorResponseLayer::new())
        // Above retry: a shed request is answered at once, never re-queued by a retry.
        .layer(InFlightLimitLayer::new(limits.max_in_flight, limit_metrics))
        .layer(RetryLayer::new(RetryPolicy::new().metrics(metrics)))
        .layer(ClassifyLayer::new())
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(3)))
        .service(tower::service_fn(move |req| app(req, flaky.clone())));
    let stack: tower::util::BoxCloneService<
        http::Request<Incoming>,
        http::Response<Body>,
        BoxError,
    > = tower::util::BoxCloneService::new(ServiceExt::<http::Request<Incoming>>::map_response(
        stack,
        |resp| resp.map(BodyExt::boxed),
    ));

    let routes = move |req: http::Request<Incoming>| {
        let stack = stack.clone();
        let registry = registry.clone();
        async move {
            let resp = match (req.method(), req.uri().path()) {
                (&http::Method::GET, "/metrics") => {
                    let accept = req
                        .headers()
                        .get(http::header::ACCEPT)
                        .and_then(|v| v.to_str().ok());
                    let (content_type, text) =
                        mcp_gateway::layers::metrics::render(&registry, accept);
                    let mut resp = full(text);
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static(content_type),
                    );
                    resp
                }
                // The stack's edge answers every failure; only a failed readiness check is left.
                (&http::Method::POST, "/mcp") => match stack.oneshot(req).await {
                    Ok(resp) => resp,
                    Err(_) => status(503),
                },
                _ => status(404),
            };
            Ok::<_, Infallible>(resp)
        }
    };

    tokio::pin!(shutdown);
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let io = TokioIo::new(stream);
        match connections.try_acquire(peer.ip()) {
            Ok(permit) => {
                let routes = routes.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(routes);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                    drop(permit);
                });
            }
            Err(rejected) => {
                // One answer, then the connection closes: 503 with Retry-After and a JSON-RPC error.
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |_req: http::Request<Incoming>| async move {
                            let error = rejected.into_error();
                            let mut resp = http::Response::<Full<Bytes>>::from_error_class(
                                error.class(),
                                error.message(),
                                None,
                                None,
                            );
                            resp.headers_mut().insert(
                                http::header::CONNECTION,
                                http::HeaderValue::from_static("close"),
                            );
                            Ok::<_, Infallible>(resp)
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(io, service)
                        .await;
                });
            }
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!(
        "stack_layers listening on http://{}/mcp (metrics on /metrics)",
        listener.local_addr()?
    );
    serve(listener, Limits::default(), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
