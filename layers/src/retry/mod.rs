//! Retryable tagging and a retry policy that cannot repeat a side effect.
//!
//! Every [`ErrorClass`](crate::classify::ErrorClass) says whether a retry may help
//! (`retryable`, honouring `Retry-After`) and whether the request reached the backend.
//! [`RetryPolicy`] is a `tower::retry::Policy` that retries, within a budget, only what provably
//! never reached the backend (connection refused, limit shed) or a safe MCP method (`initialize`,
//! `ping`, `*/list`, `resources/read`, `prompts/get`). `tools/call` is never retried unless
//! [`RetryPolicy::retry_tool_calls`] says so. A retry that succeeds is counted in
//! `gateway_error_recovery_total{mechanism="retry"}`.
//!
//! ```
//! use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
//! use mcp_gateway_layers::{jsonrpc::Message, parts::{JsonRpcRequest, JsonRpcResponse}, retry::RetryPolicy};
//! use tower::{ServiceBuilder, ServiceExt, retry::RetryLayer, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let calls = Arc::new(AtomicUsize::new(0));
//! let counter = calls.clone();
//! let flaky = service_fn(move |req: JsonRpcRequest| {
//!     let n = counter.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         if n == 0 {
//!             return Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into());
//!         }
//!         let reply = Message::parse(r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#.into()).unwrap();
//!         Ok::<_, tower::BoxError>(JsonRpcResponse::new(reply))
//!     }
//! });
//! let svc = ServiceBuilder::new().layer(RetryLayer::new(RetryPolicy::new())).service(flaky);
//! let list = Message::parse(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.into()).unwrap();
//! svc.oneshot(JsonRpcRequest::new(list)).await.unwrap();
//! assert_eq!(calls.load(Ordering::SeqCst), 2);
//! # }
//! ```

mod policy;

pub use policy::RetryPolicy;
