use std::fmt;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::LimitScope;

impl EncodeLabelValue for LimitScope {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: LimitScope,
}

/// `gateway_connection_limit_reached_total{scope}`.
#[derive(Debug, Clone)]
pub struct LimitMetrics {
    reached: Family<ScopeLabels, Counter>,
}

impl LimitMetrics {
    /// Registers the refusal counter in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let reached = Family::default();
        registry.register(
            "gateway_connection_limit_reached",
            "Connections and requests refused by a limit, by scope (global, per_ip, in_flight)",
            reached.clone(),
        );
        LimitMetrics { reached }
    }

    pub(crate) fn record(&self, scope: LimitScope) {
        self.reached.get_or_create(&ScopeLabels { scope }).inc();
    }
}

/// `gateway_websocket_connections`: open WebSocket connections.
#[derive(Debug, Clone)]
pub struct WebSocketConnections {
    open: Gauge,
}

impl WebSocketConnections {
    /// Registers the gauge in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let open = Gauge::default();
        registry.register(
            "gateway_websocket_connections",
            "Open WebSocket connections",
            open.clone(),
        );
        WebSocketConnections { open }
    }

    /// Counts a connection as open until the guard is dropped.
    pub fn open(&self) -> WebSocketGuard {
        self.open.inc();
        WebSocketGuard {
            open: self.open.clone(),
        }
    }
}

/// Keeps one WebSocket connection counted; dropped when the connection ends.
#[derive(Debug)]
pub struct WebSocketGuard {
    open: Gauge,
}

impl Drop for WebSocketGuard {
    fn drop(&mut self) {
        self.open.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_gauge_follows_guards() {
        let mut registry = Registry::default();
        let ws = WebSocketConnections::register(&mut registry);
        let a = ws.open();
        let b = ws.open();
        assert_eq!(ws.open.get(), 2);
        drop(a);
        assert_eq!(ws.open.get(), 1);
        drop(b);
        assert_eq!(ws.open.get(), 0);
    }
}
