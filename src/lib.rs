//! mcp-gateway: puts MCP servers behind one observable endpoint.
//!
//! The reusable Tower layers live in the [`layers`] crate (`mcp-gateway-layers`).

pub use mcp_gateway_layers as layers;

pub mod backend;
pub mod config;
pub mod demo;
pub mod frontend;
pub mod mcp;
pub mod proxy;
pub mod telemetry;
