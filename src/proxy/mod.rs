//! The MCP proxy: a [`Gateway`] handler whose sessions put many backends, each under a
//! namespace, behind one MCP endpoint.
//!
//! Each client session gets its own connection to every backend (for stdio, its own process),
//! started at `initialize`; `initialize` is answered with the merged capabilities; list methods
//! are fanned out, merged and prefixed (`{namespace}__{name}`); calls are routed by prefix with
//! the prefix stripped; request ids are rewritten per backend; a backend's own requests get ids
//! of the gateway's so that the client's answers find their way back; `notifications/cancelled`
//! goes only to the backend that owns the request. Every client request runs through the
//! per-message layer stack: trace, metrics, error edge, in-flight limit, retry, classify.

mod names;
mod session;
mod shared;

use std::sync::Arc;

use mcp_gateway_layers::classify::{Classify, ClassifyLayer};
use mcp_gateway_layers::edge::{ErrorResponse, ErrorResponseLayer};
use mcp_gateway_layers::limit::{InFlightLimit, InFlightLimitLayer};
use mcp_gateway_layers::metrics::{Metrics, MetricsLayer};
use mcp_gateway_layers::parts::Namespace;
use mcp_gateway_layers::retry::RetryPolicy;
use mcp_gateway_layers::trace::{Trace, TraceLayer};
use tower::ServiceBuilder;
use tower::retry::{Retry, RetryLayer};

pub use session::ProxySession;

use crate::backend::{Connector, Forwarded, HttpPool, connector};
use crate::config::{BackendConfig, Config};
use crate::mcp::{ClientTransport, McpHandler, Outbox, Session};
use crate::telemetry::Telemetry;

/// The per-message stack around a session's router, named rather than boxed: a box would cost
/// every call an allocation for the clone and another for the future.
pub(crate) type MessageStack =
    Trace<Metrics<ErrorResponse<InFlightLimit<Retry<RetryPolicy, Classify<session::Router>>>>>>;

/// Calls the service `kept` holds, without a clone of it when it is ready at once (a stack of
/// this crate's layers always is). A clone of a layered stack takes and later gives back a
/// reference to each layer's shared parts (metrics, limits, the retry budget, the session): a
/// dozen atomic operations a call, each a full barrier (docs/PERFORMANCE.md). A service that is
/// not ready, or failed, is cloned and driven as `oneshot` drives it.
pub(crate) fn call_kept<S, R>(
    kept: &std::sync::Mutex<S>,
    req: R,
) -> futures_util::future::Either<S::Future, tower::util::Oneshot<S, R>>
where
    S: tower::Service<R> + Clone,
{
    use std::task::{Context, Poll, Waker};
    use tower::ServiceExt;
    let mut service = crate::lock(kept);
    match service.poll_ready(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(())) => futures_util::future::Either::Left(service.call(req)),
        _ => futures_util::future::Either::Right(service.clone().oneshot(req)),
    }
}

/// The proxy: opens a [`ProxySession`] per client.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<GatewayInner>,
}

pub(crate) struct GatewayInner {
    pub(crate) config: Arc<Config>,
    pub(crate) backends: Vec<Arc<BackendConfig>>,
    /// Each backend's namespace as the layers label it, made once (a request clones one).
    pub(crate) namespaces: Vec<Namespace>,
    pub(crate) telemetry: Telemetry,
    in_flight: InFlightLimitLayer,
    /// Connections to HTTP backends, shared by every session.
    pub(crate) http_pool: HttpPool,
    /// One connector per backend, for shared backends and for sessions that forward no
    /// credentials (connectors hold no state of their own, so sessions need not each build one).
    pub(crate) connectors: Vec<Arc<dyn Connector>>,
    /// Backends with `shared: true`, started by the first session that needs them.
    pub(crate) shared: Vec<std::sync::OnceLock<Arc<shared::SharedBackend>>>,
    /// The layers every session's stack shares, made for the first (when the process's logging
    /// is set up): one metrics recorder, and one retry budget for the whole gateway, as the
    /// backends it protects are the same whichever session retries.
    shared_layers: std::sync::OnceLock<(MetricsLayer, RetryPolicy)>,
}

impl Gateway {
    /// A gateway for `config`, recording into `telemetry`.
    pub fn new(config: Arc<Config>, telemetry: Telemetry) -> Self {
        let in_flight =
            InFlightLimitLayer::new(config.limits.max_in_flight, telemetry.limits.clone());
        let backends: Vec<_> = config.backends.iter().cloned().map(Arc::new).collect();
        let shared = backends
            .iter()
            .map(|_| std::sync::OnceLock::new())
            .collect();
        let http_pool = HttpPool::default();
        let connectors = backends
            .iter()
            .map(|b| {
                connector(
                    b.clone(),
                    config.limits.max_message_bytes,
                    Forwarded::default(),
                    &http_pool,
                )
            })
            .collect();
        let namespaces = backends
            .iter()
            .map(|b| Namespace::new(&b.namespace))
            .collect();
        Gateway {
            inner: Arc::new(GatewayInner {
                config,
                backends,
                namespaces,
                telemetry,
                in_flight,
                http_pool,
                connectors,
                shared,
                shared_layers: std::sync::OnceLock::new(),
            }),
        }
    }
}

impl GatewayInner {
    /// The shared process of backend `index`, started on first use.
    pub(crate) fn shared_backend(&self, index: usize) -> Arc<shared::SharedBackend> {
        self.shared[index]
            .get_or_init(|| {
                shared::SharedBackend::start(
                    index,
                    &self.backends[index],
                    self.connectors[index].clone(),
                    &self.telemetry,
                )
            })
            .clone()
    }

    /// The per-message layers around `router`.
    pub(crate) fn stack(&self, router: session::Router) -> MessageStack {
        let (metrics_layer, retry_policy) = self.shared_layers.get_or_init(|| {
            let metrics = self.telemetry.gateway.clone();
            let metrics_layer = match crate::logs::request_log_sink() {
                Some(sink) => MetricsLayer::new(metrics.clone()).log_requests_to(sink),
                None => MetricsLayer::new(metrics.clone()).log_requests(),
            };
            (metrics_layer, RetryPolicy::new().metrics(metrics))
        });
        let trace_layer = TraceLayer::new().sample_ratio(self.config.tracing.sampling_ratio);
        let trace_layer = if crate::logs::is_json_layer_only() {
            trace_layer.scope_unsampled_requests()
        } else {
            trace_layer
        };
        ServiceBuilder::new()
            .layer(trace_layer)
            .layer(metrics_layer.clone())
            .layer(ErrorResponseLayer::new())
            .layer(self.in_flight.clone())
            .layer(RetryLayer::new(retry_policy.clone()))
            .layer(ClassifyLayer::new())
            .service(router)
    }
}

impl McpHandler for Gateway {
    fn open(&self, transport: ClientTransport, outbox: Outbox) -> Arc<dyn Session> {
        ProxySession::open(self.inner.clone(), transport, outbox)
    }

    fn shutdown(&self) {
        for shared in self.inner.shared.iter().filter_map(|s| s.get()) {
            shared.client.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    use super::call_kept;

    /// Counts its clones; not ready on its first `poll_ready` when `late`, as each clone is.
    struct Counted<'a> {
        clones: &'a AtomicUsize,
        late: bool,
    }

    impl Clone for Counted<'_> {
        fn clone(&self) -> Self {
            self.clones.fetch_add(1, Ordering::SeqCst);
            Counted {
                clones: self.clones,
                late: true,
            }
        }
    }

    impl tower::Service<u32> for Counted<'_> {
        type Response = u32;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<u32, Self::Error>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            if self.late {
                self.late = false;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: u32) -> Self::Future {
            std::future::ready(Ok(req + 1))
        }
    }

    fn kept(clones: &AtomicUsize, late: bool) -> Mutex<Counted<'_>> {
        Mutex::new(Counted { clones, late })
    }

    #[tokio::test]
    async fn a_ready_service_is_called_where_it_is_kept() {
        let clones = AtomicUsize::new(0);
        let kept = kept(&clones, false);
        for i in 0..3 {
            assert_eq!(call_kept(&kept, i).await, Ok(i + 1));
        }
        assert_eq!(clones.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_service_not_ready_at_once_is_cloned_and_waited_for() {
        let clones = AtomicUsize::new(0);
        let kept = kept(&clones, true);
        // The clone is not ready at its first poll either: the call waits for it.
        assert_eq!(call_kept(&kept, 7).await, Ok(8));
        assert_eq!(clones.load(Ordering::SeqCst), 1);
    }
}
