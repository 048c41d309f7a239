//! Tower layers for MCP and HTTP services.
//!
//! Each layer works on any `Service<http::Request<B>>` — drop it into an existing hyper or
//! axum service — and, through the small traits in [`parts`], on a per-JSON-RPC-message service,
//! so that each request on one WebSocket or SSE connection is measured and classified on its own.
//!
//! | layer | module | what it does |
//! |---|---|---|
//! | [`classify::ClassifyLayer`] | [`classify`] | one [`classify::ErrorClass`] verdict per response or error |
//! | [`edge::ErrorResponseLayer`] | [`edge`] | turns errors into JSON-RPC error responses |
//! | [`tower::retry::RetryLayer`] + [`retry::RetryPolicy`] | [`retry`] | retries only what cannot repeat a side effect |
//! | [`metrics::MetricsLayer`] | [`metrics`] | request counters and latency histograms with exemplars |
//! | [`limit::InFlightLimitLayer`], [`limit::ConnectionLimiter`] | [`limit`] | in-flight and connection limits that shed load |
//! | [`trace::TraceLayer`], [`trace::PropagateTraceLayer`] | [`trace`] | W3C trace context in headers and `params._meta` |
//! | [`peek::PeekJsonRpcLayer`] | [`peek`] | reads an HTTP body as one JSON-RPC message for the layers above |
//!
//! A typical HTTP stack, outermost first: peek, trace, metrics, edge, in-flight limit, retry,
//! classify; `examples/stack_layers.rs` builds it. The in-flight limit sits above retry so that
//! shed requests are answered at once instead of being queued by retries.

#![warn(missing_docs)]
#![deny(unreachable_pub)]

pub mod classify;
pub mod edge;
pub mod hash;
pub mod headers;
pub mod jsonrpc;
pub mod limit;
pub mod metrics;
pub mod parts;
pub mod peek;
pub mod retry;
pub mod sse;
pub mod trace;

pub use tower::BoxError;

#[cfg(test)]
mod test_support;
