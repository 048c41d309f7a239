use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower::{BoxError, Layer, Service};

use super::{LimitMetrics, LimitRejected, LimitScope};
use crate::parts::RequestParts;

/// At most `max` requests handled at once; the next is refused at once (load shedding), never queued.
#[derive(Debug, Clone)]
pub struct InFlightLimitLayer {
    in_flight: Arc<AtomicUsize>,
    max: usize,
    metrics: LimitMetrics,
}

impl InFlightLimitLayer {
    /// A limit of `max` requests in flight, shared by every service this layer makes.
    pub fn new(max: usize, metrics: LimitMetrics) -> Self {
        InFlightLimitLayer {
            in_flight: Arc::default(),
            max,
            metrics,
        }
    }
}

impl<S> Layer<S> for InFlightLimitLayer {
    type Service = InFlightLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InFlightLimit {
            inner,
            in_flight: self.in_flight.clone(),
            max: self.max,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service made by [`InFlightLimitLayer`].
#[derive(Debug, Clone)]
pub struct InFlightLimit<S> {
    inner: S,
    /// Requests admitted and not yet ended. A count, not a semaphore: nothing waits for a place,
    /// and a semaphore's release takes the lock of its waiters' queue (docs/PERFORMANCE.md).
    in_flight: Arc<AtomicUsize>,
    max: usize,
    metrics: LimitMetrics,
}

impl<S, Req> Service<Req> for InFlightLimit<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Req: RequestParts,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match Permit::take(&self.in_flight, self.max) {
            Some(permit) => ResponseFuture::admitted(self.inner.call(req), permit),
            None => {
                let rejected = LimitRejected::new(LimitScope::InFlight, self.max);
                self.metrics.record(LimitScope::InFlight);
                let method = req.message().and_then(|m| m.method_name()).unwrap_or("");
                let client_addr = req.client_addr().map(tracing::field::display);
                tracing::warn!(
                    scope = "in_flight",
                    limit = self.max,
                    method,
                    client_addr,
                    "request shed by in-flight limit"
                );
                ResponseFuture::shed(rejected)
            }
        }
    }
}

/// A place among the requests in flight, given back when dropped.
#[derive(Debug)]
struct Permit(Arc<AtomicUsize>);

impl Permit {
    /// A place, if fewer than `max` are taken.
    fn take(in_flight: &Arc<AtomicUsize>, max: usize) -> Option<Permit> {
        // Never counted over `max`, even for a moment: a request refused meanwhile would be
        // refused for a place that was free.
        in_flight
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(in_flight.clone()))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

pin_project! {
    /// The future of [`InFlightLimit`]: the call holding its permit, or an immediate refusal.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        permit: Option<Permit>,
        rejected: Option<LimitRejected>,
    }
}

impl<F> ResponseFuture<F> {
    fn admitted(inner: F, permit: Permit) -> Self {
        ResponseFuture {
            inner: Some(inner),
            permit: Some(permit),
            rejected: None,
        }
    }

    fn shed(rejected: LimitRejected) -> Self {
        ResponseFuture {
            inner: None,
            permit: None,
            rejected: Some(rejected),
        }
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<R, E>>,
    E: Into<BoxError>,
{
    type Output = Result<R, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.as_pin_mut() {
            Some(inner) => {
                let result = ready!(inner.poll(cx)).map_err(Into::into);
                this.permit.take();
                Poll::Ready(result)
            }
            None => {
                let rejected = this.rejected.take().expect("polled after completion");
                Poll::Ready(Err(Box::new(rejected.into_error())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{ErrorType, classify_error};
    use crate::parts::JsonRpcRequest;
    use crate::test_support::*;
    use prometheus_client::registry::Registry;
    use tower_test::mock;

    #[test]
    fn places_taken_at_once_from_many_threads_never_pass_the_limit() {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max = 3;
        let most = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        if let Some(permit) = Permit::take(&in_flight, max) {
                            most.fetch_max(permit.0.load(Ordering::SeqCst), Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert!(most.load(Ordering::SeqCst) <= max);
        assert_eq!(
            in_flight.load(Ordering::SeqCst),
            0,
            "every place given back"
        );
        let held: Vec<_> = (0..max)
            .filter_map(|_| Permit::take(&in_flight, max))
            .collect();
        assert_eq!(held.len(), max);
        assert!(Permit::take(&in_flight, max).is_none());
    }

    #[tokio::test]
    async fn sheds_past_the_limit_and_admits_again_when_a_request_ends() {
        let mut registry = Registry::default();
        let layer = InFlightLimitLayer::new(1, LimitMetrics::register(&mut registry));
        let (mut svc, mut handle) = mock::spawn_layer::<JsonRpcRequest, (), _>(layer);
        let ping = || message_request(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);

        assert!(svc.poll_ready().is_ready());
        let first = svc.call(ping());
        assert!(svc.poll_ready().is_ready());
        let shed = svc.call(ping()).await.unwrap_err();
        let class = classify_error(&*shed);
        assert_eq!(
            (class.error_type, class.reached_backend),
            (ErrorType::Unavailable, false)
        );
        assert_eq!(class.retry_after, Some(std::time::Duration::from_secs(1)));

        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.message.method_name(), Some("ping"));
        send.send_response(());
        first.await.unwrap();

        assert!(svc.poll_ready().is_ready());
        let again = svc.call(ping());
        let (_req, send) = handle.next_request().await.unwrap();
        send.send_response(());
        again.await.unwrap();
        assert_eq!(
            sample(
                &scrape(&registry),
                r#"gateway_connection_limit_reached_total{scope="in_flight"}"#
            ),
            Some(1.0)
        );
    }
}
