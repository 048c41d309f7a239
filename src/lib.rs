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

/// Locks a mutex, taking over from a thread that panicked while holding it: the data behind the
/// gateway's locks are maps and counters that every critical section leaves consistent.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
