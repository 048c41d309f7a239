use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::classify::{Component, ErrorClass, ErrorType, GatewayError};

use super::LimitMetrics;

/// Which limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitScope {
    /// All open connections.
    Global,
    /// Open connections from one client IP.
    PerIp,
    /// Requests being handled at once.
    InFlight,
}

impl LimitScope {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            LimitScope::Global => "global",
            LimitScope::PerIp => "per_ip",
            LimitScope::InFlight => "in_flight",
        }
    }
}

/// A limit refused a connection or request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitRejected {
    scope: LimitScope,
    limit: usize,
}

impl LimitRejected {
    pub(crate) fn new(scope: LimitScope, limit: usize) -> Self {
        LimitRejected { scope, limit }
    }

    /// Which limit refused.
    pub fn scope(&self) -> LimitScope {
        self.scope
    }

    /// The class: `unavailable`, blamed on the limiter, never sent to a backend (safe to retry),
    /// with `Retry-After: 1`.
    pub fn class(&self) -> ErrorClass {
        ErrorClass::new(ErrorType::Unavailable, Component::Limiter)
            .not_sent()
            .with_retry_after(Duration::from_secs(1))
    }

    /// The refusal as a gateway error, for the error edge to answer.
    pub fn into_error(self) -> GatewayError {
        GatewayError::new(
            self.class(),
            format!("{} limit reached", self.scope.as_str()),
        )
    }
}

impl fmt::Display for LimitRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} limit of {} reached", self.scope.as_str(), self.limit)
    }
}

impl std::error::Error for LimitRejected {}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Limits open connections in an accept loop; take a permit per accepted connection and keep
/// it for the connection's life.
#[derive(Debug, Clone)]
pub struct ConnectionLimiter {
    open: Arc<Mutex<Open>>,
    max_total: usize,
    max_per_ip: usize,
    metrics: LimitMetrics,
}

impl ConnectionLimiter {
    /// At most `max_total` connections, and at most `max_per_ip` from one IP.
    pub fn new(max_total: usize, max_per_ip: usize, metrics: LimitMetrics) -> Self {
        ConnectionLimiter {
            open: Arc::default(),
            max_total,
            max_per_ip,
            metrics,
        }
    }

    /// A permit for one more connection from `ip`, or the limit that refused it (counted and logged).
    pub fn try_acquire(&self, ip: IpAddr) -> Result<ConnectionPermit, LimitRejected> {
        let refused = {
            // The lock is held only per accepted connection, never per request.
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            let from_ip = open.per_ip.get(&ip).copied().unwrap_or(0);
            if open.total >= self.max_total {
                Some(LimitRejected::new(LimitScope::Global, self.max_total))
            } else if from_ip >= self.max_per_ip {
                Some(LimitRejected::new(LimitScope::PerIp, self.max_per_ip))
            } else {
                open.total += 1;
                open.per_ip.insert(ip, from_ip + 1);
                None
            }
        };
        match refused {
            Some(rejected) => {
                self.metrics.record(rejected.scope);
                tracing::warn!(client_addr = %ip, scope = rejected.scope.as_str(), limit = rejected.limit, "connection refused by limit");
                Err(rejected)
            }
            None => Ok(ConnectionPermit {
                open: self.open.clone(),
                ip,
            }),
        }
    }

    /// Open connections now.
    pub fn open_connections(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

/// One admitted connection; releases its place when dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    open: Arc<Mutex<Open>>,
    ip: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total -= 1;
        if let Some(n) = open.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;
    use std::net::Ipv4Addr;

    #[test]
    fn global_and_per_ip_limits_refuse_and_release() {
        let mut registry = Registry::default();
        let limiter = ConnectionLimiter::new(3, 2, LimitMetrics::register(&mut registry));
        let a = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let p1 = limiter.try_acquire(a).unwrap();
        let _p2 = limiter.try_acquire(a).unwrap();
        assert_eq!(
            limiter.try_acquire(a).unwrap_err().scope(),
            LimitScope::PerIp
        );
        let _p3 = limiter.try_acquire(b).unwrap();
        assert_eq!(
            limiter.try_acquire(b).unwrap_err().scope(),
            LimitScope::Global
        );
        drop(p1);
        assert_eq!(limiter.open_connections(), 2);
        let _p4 = limiter.try_acquire(b).unwrap();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("gateway_connection_limit_reached_total{scope=\"per_ip\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("gateway_connection_limit_reached_total{scope=\"global\"} 1"),
            "{text}"
        );
    }
}
