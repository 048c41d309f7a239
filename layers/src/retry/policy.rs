use std::sync::Arc;
use std::time::Duration;

use tower::BoxError;
use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};

use crate::classify::{Classification, ErrorClass, ErrorType, Verdict, classify_error};
use crate::jsonrpc::McpMethod;
use crate::metrics::{GatewayMetrics, RecoveryMechanism};
use crate::parts::{RequestParts, ResponseParts};

/// A retry policy for MCP requests; see the [module docs](super).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Cloned for every request: one reference, where one for each of its parts was two atomic
    /// operations apiece.
    settings: Arc<Settings>,
    attempts: u32,
    last_error: Option<ErrorType>,
}

/// What every request's policy shares.
#[derive(Debug, Clone)]
struct Settings {
    budget: Arc<TpsBudget>,
    max_retries: u32,
    base_delay: Duration,
    max_delay: Duration,
    retry_tool_calls: bool,
    metrics: Option<GatewayMetrics>,
}

impl RetryPolicy {
    /// Up to 2 retries, backoff from 10 ms, `Retry-After` honoured up to 5 s, and a budget of
    /// 20% of requests over 10 s (at least 10 retries a second).
    pub fn new() -> Self {
        RetryPolicy {
            settings: Arc::new(Settings {
                budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
                max_retries: 2,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_secs(5),
                retry_tool_calls: false,
                metrics: None,
            }),
            attempts: 0,
            last_error: None,
        }
    }

    /// The settings to change; a policy cloned before keeps its own (and shares the budget).
    fn settings_mut(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }

    /// At most `n` retries per request.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.settings_mut().max_retries = n;
        self
    }

    /// The first backoff delay; each further retry doubles it (with jitter).
    pub fn base_delay(mut self, delay: Duration) -> Self {
        self.settings_mut().base_delay = delay;
        self
    }

    /// The longest wait before a retry; a `Retry-After` beyond it is not waited for.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.settings_mut().max_delay = delay;
        self
    }

    /// The retry budget, shared by every request of this policy.
    pub fn budget(mut self, budget: TpsBudget) -> Self {
        self.settings_mut().budget = Arc::new(budget);
        self
    }

    /// Also retry `tools/call` after it may have reached the backend. Only for tools known to be
    /// idempotent: a retried call can run its side effect twice.
    pub fn retry_tool_calls(mut self, yes: bool) -> Self {
        self.settings_mut().retry_tool_calls = yes;
        self
    }

    /// Counts successful retries in `gateway_error_recovery_total`.
    pub fn metrics(mut self, metrics: GatewayMetrics) -> Self {
        self.settings_mut().metrics = Some(metrics);
        self
    }

    /// Whether a request of `method` that failed with `class` may be sent again.
    pub fn may_retry(&self, method: McpMethod, class: &ErrorClass) -> bool {
        class.retryable
            && (!class.reached_backend
                || method.is_safe()
                || (method == McpMethod::ToolsCall && self.settings.retry_tool_calls))
    }

    fn delay(&self, class: &ErrorClass) -> Option<Duration> {
        match class.retry_after {
            Some(after) if after > self.settings.max_delay => None,
            Some(after) => Some(after),
            None => {
                let backoff = self
                    .settings
                    .base_delay
                    .saturating_mul(1 << self.attempts.min(16));
                // Full jitter between half and all of the backoff spreads retries of many clients.
                let jittered = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
                Some(jittered.min(self.settings.max_delay))
            }
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::new()
    }
}

impl<Req, Res> Policy<Req, Res, BoxError> for RetryPolicy
where
    Req: RequestParts + Clone,
    Res: ResponseParts,
{
    type Future = tokio::time::Sleep;

    fn retry(&mut self, req: &mut Req, result: &mut Result<Res, BoxError>) -> Option<Self::Future> {
        let failure = match result {
            Ok(resp) => match resp.classification().and_then(Classification::get) {
                Some(Verdict::Failure(class)) => Some(class),
                _ => None,
            },
            Err(e) => Some(classify_error(&**e)),
        };
        let Some(class) = failure else {
            self.settings.budget.deposit();
            if let (Some(metrics), Some(error_type)) = (&self.settings.metrics, self.last_error) {
                metrics.record_recovery(error_type, RecoveryMechanism::Retry);
            }
            return None;
        };
        let method = req.message().map_or(McpMethod::Other, |m| m.method());
        if self.attempts >= self.settings.max_retries || !self.may_retry(method, &class) {
            return None;
        }
        let delay = self.delay(&class)?;
        if !self.settings.budget.withdraw() {
            tracing::debug!(
                error_type = class.error_type.as_str(),
                "retry budget exhausted"
            );
            return None;
        }
        self.attempts += 1;
        self.last_error = Some(class.error_type);
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        // No copy kept for a request that can have no further attempt.
        (self.attempts < self.settings.max_retries).then(|| req.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Component;
    use crate::jsonrpc::Message;
    use crate::parts::{JsonRpcRequest, JsonRpcResponse};
    use prometheus_client::registry::Registry;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::{Layer, ServiceExt, retry::RetryLayer};

    fn request(method: &str) -> JsonRpcRequest {
        let raw =
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"name":"t"}}}}"#);
        JsonRpcRequest::new(Message::parse(raw.into()).unwrap())
    }

    fn ok() -> JsonRpcResponse {
        JsonRpcResponse::new(
            Message::parse(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#.into()).unwrap(),
        )
    }

    /// Fails the first `failures` calls with `error`, then answers; returns how many calls ran.
    async fn run(
        method: &str,
        failures: usize,
        error: fn() -> BoxError,
        policy: RetryPolicy,
    ) -> (usize, bool) {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let svc = RetryLayer::new(policy).layer(tower::service_fn(move |_req: JsonRpcRequest| {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            async move { if n < failures { Err(error()) } else { Ok(ok()) } }
        }));
        let result = svc.oneshot(request(method)).await;
        (calls.load(Ordering::SeqCst), result.is_ok())
    }

    fn refused() -> BoxError {
        std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into()
    }
    fn reset() -> BoxError {
        std::io::Error::from(std::io::ErrorKind::ConnectionReset).into()
    }
    fn invalid() -> BoxError {
        Box::new(crate::classify::GatewayError::new(
            ErrorClass::new(ErrorType::Validation, Component::Client),
            "bad",
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn retries_only_what_cannot_repeat_a_side_effect() {
        let policy = RetryPolicy::new;
        // Never sent: any method may be retried.
        assert_eq!(run("tools/call", 1, refused, policy()).await, (2, true));
        // Maybe sent: a tools/call is not retried, a safe method is.
        assert_eq!(run("tools/call", 1, reset, policy()).await, (1, false));
        assert_eq!(run("tools/list", 1, reset, policy()).await, (2, true));
        assert_eq!(
            run("tools/call", 1, reset, policy().retry_tool_calls(true)).await,
            (2, true)
        );
        // Not retryable at all.
        assert_eq!(run("ping", 1, invalid, policy()).await, (1, false));
        // At most max_retries.
        assert_eq!(
            run("ping", 5, refused, policy().max_retries(2)).await,
            (3, false)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn honours_retry_after_and_counts_recovery() {
        let mut registry = Registry::default();
        let metrics = GatewayMetrics::register(&mut registry);
        let started = tokio::time::Instant::now();
        let limited = || -> BoxError {
            let class = ErrorClass::new(ErrorType::RateLimited, Component::Backend)
                .with_retry_after(Duration::from_secs(3));
            Box::new(crate::classify::GatewayError::new(class, "slow down"))
        };
        assert_eq!(
            run(
                "ping",
                1,
                limited,
                RetryPolicy::new().metrics(metrics.clone())
            )
            .await,
            (2, true)
        );
        assert!(started.elapsed() >= Duration::from_secs(3));
        // A Retry-After beyond max_delay is not waited for.
        assert_eq!(
            run(
                "ping",
                1,
                limited,
                RetryPolicy::new().max_delay(Duration::from_secs(1))
            )
            .await,
            (1, false)
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                r#"gateway_error_recovery_total{error_type="rate_limited",mechanism="retry"} 1"#
            ),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_stops_retry_storms() {
        let budget = || TpsBudget::new(Duration::from_secs(10), 1, 0.0);
        let policy = RetryPolicy::new().budget(budget());
        let mut retried = 0;
        for _ in 0..30 {
            let (calls, _) = run("ping", 1, refused, policy.clone()).await;
            retried += calls - 1;
        }
        assert!(retried < 30, "the budget allowed {retried} retries of 30");
    }
}
