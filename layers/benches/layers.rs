//! Per-request overhead of each layer over a no-op service, per JSON-RPC message.
//!
//! `cargo bench -p mcp-gateway-layers`. Each benchmark clones a prepared request, calls the
//! service and polls the (immediately ready) future once; `noop` is the baseline to subtract.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use divan::Bencher;
use mcp_gateway_layers::classify::ClassifyLayer;
use mcp_gateway_layers::edge::ErrorResponseLayer;
use mcp_gateway_layers::jsonrpc::Message;
use mcp_gateway_layers::limit::{InFlightLimitLayer, LimitMetrics};
use mcp_gateway_layers::metrics::{GatewayMetrics, MetricsLayer};
use mcp_gateway_layers::parts::{JsonRpcRequest, JsonRpcResponse};
use mcp_gateway_layers::retry::RetryPolicy;
use mcp_gateway_layers::trace::TraceLayer;
use prometheus_client::registry::Registry;
use tower::retry::RetryLayer;
use tower::{BoxError, Layer, Service};

const REQUEST: &str = r#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"echo","arguments":{"message":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}}}"#;
const RESPONSE: &str = r#"{"jsonrpc":"2.0","id":42,"result":{"content":[{"type":"text","text":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}]}}"#;

fn main() {
    divan::main();
}

#[derive(Clone)]
struct Noop(JsonRpcResponse);

impl Service<JsonRpcRequest> for Noop {
    type Response = JsonRpcResponse;
    type Error = BoxError;
    type Future = std::future::Ready<Result<JsonRpcResponse, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: JsonRpcRequest) -> Self::Future {
        std::future::ready(Ok(self.0.clone()))
    }
}

fn noop() -> Noop {
    Noop(JsonRpcResponse::new(
        Message::parse(Bytes::from_static(RESPONSE.as_bytes())).unwrap(),
    ))
}

fn request() -> JsonRpcRequest {
    JsonRpcRequest::new(Message::parse(Bytes::from_static(REQUEST.as_bytes())).unwrap())
}

fn bench_service<S>(bencher: Bencher<'_, '_>, mut svc: S)
where
    S: Service<JsonRpcRequest>,
    S::Error: std::fmt::Debug,
{
    let req = request();
    let mut cx = Context::from_waker(Waker::noop());
    bencher.bench_local(|| {
        assert!(svc.poll_ready(&mut cx).is_ready());
        let fut = pin!(svc.call(req.clone()));
        match fut.poll(&mut cx) {
            Poll::Ready(r) => divan::black_box(r.unwrap()),
            Poll::Pending => panic!("a no-op service is always ready"),
        };
    });
}

#[divan::bench]
fn noop_service(bencher: Bencher<'_, '_>) {
    bench_service(bencher, noop());
}

#[divan::bench]
fn classify(bencher: Bencher<'_, '_>) {
    bench_service(bencher, ClassifyLayer::new().layer(noop()));
}

#[divan::bench]
fn edge(bencher: Bencher<'_, '_>) {
    bench_service(bencher, ErrorResponseLayer::new().layer(noop()));
}

#[divan::bench]
fn retry(bencher: Bencher<'_, '_>) {
    bench_service(bencher, RetryLayer::new(RetryPolicy::new()).layer(noop()));
}

#[divan::bench]
fn metrics(bencher: Bencher<'_, '_>) {
    let mut registry = Registry::default();
    bench_service(
        bencher,
        MetricsLayer::new(GatewayMetrics::register(&mut registry)).layer(noop()),
    );
}

#[divan::bench]
fn in_flight_limit(bencher: Bencher<'_, '_>) {
    let mut registry = Registry::default();
    bench_service(
        bencher,
        InFlightLimitLayer::new(1024, LimitMetrics::register(&mut registry)).layer(noop()),
    );
}

#[divan::bench]
fn trace(bencher: Bencher<'_, '_>) {
    bench_service(bencher, TraceLayer::new().layer(noop()));
}

#[divan::bench]
fn all_layers(bencher: Bencher<'_, '_>) {
    let mut registry = Registry::default();
    let metrics = GatewayMetrics::register(&mut registry);
    let stack = tower::ServiceBuilder::new()
        .layer(TraceLayer::new())
        .layer(MetricsLayer::new(metrics.clone()))
        .layer(ErrorResponseLayer::new())
        .layer(InFlightLimitLayer::new(
            1024,
            LimitMetrics::register(&mut registry),
        ))
        .layer(RetryLayer::new(RetryPolicy::new().metrics(metrics)))
        .layer(ClassifyLayer::new())
        .service(noop());
    bench_service(bencher, stack);
}

#[divan::bench]
fn peek_message(bencher: Bencher<'_, '_>) {
    let raw = Bytes::from_static(REQUEST.as_bytes());
    bencher.bench_local(|| divan::black_box(Message::parse(raw.clone()).unwrap()));
}
