//! Reads an HTTP request's body (up to a limit) and peeks it as one JSON-RPC message, so that
//! the layers above see the method, id, tool name and `_meta` of HTTP requests too.
//!
//! A body that is too large, not JSON, or not JSON-RPC is not passed on: the request carries a
//! [`PeekError`](crate::jsonrpc::PeekError) and the [error edge](crate::edge) answers it
//! (413, or 400 with -32700 / -32600), so metrics, logs and traces still see the request.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use mcp_gateway_layers::{jsonrpc::Message, peek::PeekJsonRpcLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let svc = ServiceBuilder::new().layer(PeekJsonRpcLayer::new(1 << 20)).service(service_fn(
//!     |req: http::Request<Full<Bytes>>| async move {
//!         let method = req.extensions().get::<Message>().and_then(|m| m.method_name()).unwrap_or("").to_owned();
//!         Ok::<_, std::convert::Infallible>(http::Response::new(method))
//!     },
//! ));
//! let body = Full::new(Bytes::from(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#));
//! let resp = svc.oneshot(http::Request::new(body)).await.unwrap();
//! assert_eq!(resp.body(), "tools/list");
//! # }
//! ```

mod layer;
mod service;

pub use layer::PeekJsonRpcLayer;
pub use service::{PeekJsonRpc, ResponseFuture};
