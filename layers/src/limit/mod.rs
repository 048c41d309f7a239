//! Connection limits for the accept loop (global and per client IP), an in-flight request
//! limit that sheds load instead of queueing, and the WebSocket connection gauge.
//!
//! Every refusal is counted in `gateway_connection_limit_reached_total{scope}` (`global`,
//! `per_ip`, `in_flight`), logged with the client address, and answered with 503 and
//! `Retry-After` over HTTP or a JSON-RPC `unavailable` error (-32010) per message.
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use mcp_gateway_layers::limit::{ConnectionLimiter, LimitMetrics, LimitScope};
//! use prometheus_client::registry::Registry;
//!
//! let mut registry = Registry::default();
//! let limiter = ConnectionLimiter::new(100, 1, LimitMetrics::register(&mut registry));
//! let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
//! let first = limiter.try_acquire(ip).unwrap();
//! assert_eq!(limiter.try_acquire(ip).unwrap_err().scope(), LimitScope::PerIp);
//! drop(first); // the permit is released when the connection ends
//! assert!(limiter.try_acquire(ip).is_ok());
//! ```

mod connection;
mod in_flight;
mod metrics;

pub use connection::{ConnectionLimiter, ConnectionPermit, LimitRejected, LimitScope};
pub use in_flight::{InFlightLimit, InFlightLimitLayer, ResponseFuture};
pub use metrics::{LimitMetrics, WebSocketConnections, WebSocketGuard};
