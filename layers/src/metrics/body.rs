use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::BoxError;

use super::layer::Recorder;
use crate::classify::{Classification, ErrorBody, ErrorClass, Verdict, classify_error};
use crate::jsonrpc::McpMethod;
use crate::parts::Namespace;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::trace::{Hex, SpanId, TraceId};

/// One request being measured: recorded exactly once, when the response ends or is dropped.
#[derive(Debug)]
pub struct Completion {
    state: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    recorder: Arc<Recorder>,
    method: McpMethod,
    namespace: Namespace,
    trace_id: Option<TraceId>,
    // The trace was sampled, so it is exported and an exemplar may link to it.
    sampled: bool,
    start: Instant,
    classification: Option<Classification>,
    log: Option<RequestLog>,
}

/// What the one log event of a request names, captured when it starts.
#[derive(Debug)]
pub(crate) struct RequestLog {
    pub(crate) span_id: Option<SpanId>,
    /// A slice of the request's bytes (a reference count, not a copy).
    pub(crate) request_id: Option<crate::jsonrpc::RawId>,
    pub(crate) session_id: Option<Arc<str>>,
    pub(crate) client_addr: Option<SocketAddr>,
}

/// The `target` of the request log event, whichever way it is written.
pub const REQUEST_LOG_TARGET: &str = module_path!();

/// The one log event of a request: `request completed` (info) or `request failed` (warn) and
/// its fields, as [`MetricsLayer::log_requests`](super::MetricsLayer::log_requests) describes.
/// The ids and the address are as they are held, not as text: a sink that writes its lines
/// later (the gateway's does, on its log thread) formats them there.
#[derive(Debug, Clone, Copy)]
pub struct RequestLogRecord<'a> {
    /// The request's trace id.
    pub trace_id: Option<TraceId>,
    /// The request's server span id.
    pub span_id: Option<SpanId>,
    /// The client session.
    pub session_id: Option<&'a str>,
    /// The JSON-RPC id as it was written.
    pub request_id: Option<&'a str>,
    /// The method label (`other` outside the MCP method set).
    pub method: &'a str,
    /// The namespace (and backend) the request went to.
    pub namespace: &'a str,
    /// `ok` or the error type.
    pub status: &'a str,
    /// From the request's start to the end of its response.
    pub duration_ms: f64,
    /// The client's address.
    pub client_addr: Option<SocketAddr>,
    /// The class of the error, when the request failed.
    pub failure: Option<&'a ErrorClass>,
}

impl RequestLogRecord<'_> {
    /// `request completed` or `request failed`.
    pub fn message(&self) -> &'static str {
        if self.failure.is_some() {
            "request failed"
        } else {
            "request completed"
        }
    }

    /// `INFO` when the request completed, `WARN` when it failed.
    pub fn level(&self) -> tracing::Level {
        if self.failure.is_some() {
            tracing::Level::WARN
        } else {
            tracing::Level::INFO
        }
    }
}

/// Writes a request's log event itself instead of emitting a `tracing` event: a logger that
/// formats lines on its own skips tracing's per-field dispatch for the one event every request
/// has. Whoever installs one is answerable for the other subscribers, which do not see the event.
pub trait RequestLogSink: Send + Sync + std::fmt::Debug + 'static {
    /// Whether a request's line is wanted (`failed`: a `request failed` line, else a `request
    /// completed` one), asked before its record is made. By default, what the log filter says of
    /// the event's target and level.
    fn enabled(&self, failed: bool) -> bool {
        request_event_enabled(failed)
    }

    /// Writes `record`; called only when [`enabled`](Self::enabled) said yes.
    fn log(&self, record: &RequestLogRecord<'_>);
}

/// Whether the log filter lets a request's event through, asked as the event's own target and
/// level: `request failed` is a warning, `request completed` information.
fn request_event_enabled(failed: bool) -> bool {
    if failed {
        tracing::enabled!(target: REQUEST_LOG_TARGET, tracing::Level::WARN)
    } else {
        tracing::enabled!(target: REQUEST_LOG_TARGET, tracing::Level::INFO)
    }
}

/// A client address as text on the stack: the standard formatter cost more than all the other
/// fields of the request's log line together.
///
/// ```
/// use mcp_gateway_layers::metrics::AddrText;
/// assert_eq!(AddrText::of("127.0.0.1:80".parse().unwrap()).as_str(), "127.0.0.1:80");
/// assert_eq!(AddrText::of("[::1]:5".parse().unwrap()).as_str(), "[::1]:5");
/// ```
pub struct AddrText {
    buf: [u8; 64],
    len: usize,
}

impl AddrText {
    /// `addr` as `Display` writes it.
    pub fn of(addr: SocketAddr) -> Self {
        let mut text = AddrText {
            buf: [0; 64],
            len: 0,
        };
        match addr {
            SocketAddr::V4(v4) => write_v4(v4, |part| text.push(part)),
            // At most 58 bytes with a scope id: it fits.
            SocketAddr::V6(_) => {
                let _ = std::fmt::Write::write_fmt(&mut text, format_args!("{addr}"));
            }
        }
        text
    }

    /// `addr` as `Display` writes it, appended to `out`: an IPv4 address (the usual client)
    /// straight into it, without the zeroed buffer on the stack and its copy.
    pub fn push_to(out: &mut Vec<u8>, addr: SocketAddr) {
        match addr {
            SocketAddr::V4(v4) => write_v4(v4, |part| out.extend_from_slice(part)),
            SocketAddr::V6(_) => out.extend_from_slice(AddrText::of(addr).as_bytes()),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let end = (self.len + bytes.len()).min(self.buf.len());
        self.buf[self.len..end].copy_from_slice(&bytes[..end - self.len]);
        self.len = end;
    }

    /// The text, as bytes (a writer of bytes skips `as_str`'s UTF-8 check).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

/// An IPv4 address and port as `Display` writes them, a part at a time.
fn write_v4(v4: std::net::SocketAddrV4, mut put: impl FnMut(&[u8])) {
    let mut digits = itoa::Buffer::new();
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            put(b".");
        }
        put(digits.format(octet).as_bytes());
    }
    put(b":");
    put(digits.format(v4.port()).as_bytes());
}

impl std::fmt::Write for AddrText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

/// `elapsed` in milliseconds, as the one float nearest the exact value: a line then reads
/// `0.652909`, where seconds times 1000 (two roundings) read `0.6529090000000001`.
fn millis(elapsed: std::time::Duration) -> f64 {
    // Through `u64`: a `u128` becomes a float in a library call (~45 instructions).
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX) as f64 / 1e6
}

impl RequestLog {
    /// Emits `request completed` or `request failed`, exactly once per request.
    fn emit(
        &self,
        sink: Option<&Arc<dyn RequestLogSink>>,
        method: McpMethod,
        namespace: &Namespace,
        trace_id: Option<TraceId>,
        verdict: Verdict,
        elapsed: std::time::Duration,
    ) {
        // A line the filter drops costs nothing past this: no record, no text.
        let failed = matches!(verdict, Verdict::Failure(_));
        let wanted = match sink {
            Some(sink) => sink.enabled(failed),
            None => request_event_enabled(failed),
        };
        if !wanted {
            return;
        }
        let failure = match &verdict {
            Verdict::Success => None,
            Verdict::Failure(class) => Some(class),
        };
        let record = RequestLogRecord {
            trace_id,
            span_id: self.span_id,
            session_id: self.session_id.as_deref(),
            request_id: self
                .request_id
                .as_deref()
                .and_then(|id| std::str::from_utf8(id).ok()),
            method: method.as_str(),
            namespace: namespace.as_str(),
            status: failure.map_or("ok", |class| class.error_type.as_str()),
            duration_ms: millis(elapsed),
            client_addr: self.client_addr,
            failure,
        };
        if let Some(sink) = sink {
            return sink.log(&record);
        }
        let RequestLogRecord {
            session_id,
            request_id,
            method,
            namespace,
            duration_ms,
            ..
        } = record;
        let (trace_hex, span_hex) = (trace_id.map(TraceId::hex), self.span_id.map(SpanId::hex));
        let trace_id = trace_hex.as_ref().map(Hex::as_str);
        let span_id = span_hex.as_ref().map(Hex::as_str);
        let addr_text = self.client_addr.map(AddrText::of);
        let client_addr = addr_text.as_ref().map(AddrText::as_str);
        match failure {
            None => tracing::info!(
                target: REQUEST_LOG_TARGET,
                trace_id,
                span_id,
                session_id,
                request_id,
                method,
                namespace,
                backend = namespace,
                status = "ok",
                duration_ms,
                client_addr,
                "request completed"
            ),
            Some(class) => tracing::warn!(
                target: REQUEST_LOG_TARGET,
                trace_id,
                span_id,
                session_id,
                request_id,
                method,
                namespace,
                backend = namespace,
                status = class.error_type.as_str(),
                duration_ms,
                client_addr,
                error_type = class.error_type.as_str(),
                severity = class.severity.as_str(),
                component = class.component.as_str(),
                retryable = class.retryable,
                http_status = class.http_status.as_u16(),
                "request failed"
            ),
        }
    }
}

impl Completion {
    pub(crate) fn start(
        recorder: Arc<Recorder>,
        method: McpMethod,
        namespace: Namespace,
        trace: Option<(TraceId, bool)>,
        log: Option<RequestLog>,
    ) -> Self {
        recorder.metrics.in_flight().inc();
        let (trace_id, sampled) = trace.map_or((None, false), |(id, sampled)| (Some(id), sampled));
        Completion {
            state: Some(Pending {
                recorder,
                method,
                namespace,
                trace_id,
                sampled,
                start: Instant::now(),
                classification: None,
                log,
            }),
        }
    }

    pub(crate) fn set_classification(&mut self, classification: Classification) {
        if let Some(p) = &mut self.state {
            p.classification = Some(classification);
        }
    }

    /// Records the request as ended with `verdict` unless its classification says otherwise.
    pub(crate) fn finish(mut self, verdict: Verdict) {
        self.record(|c| c.and_then(Classification::get).unwrap_or(verdict));
    }

    fn record(&mut self, verdict: impl FnOnce(Option<&Classification>) -> Verdict) {
        if let Some(p) = self.state.take() {
            let verdict = verdict(p.classification.as_ref());
            let metrics = &p.recorder.metrics;
            metrics.in_flight().dec();
            let elapsed = p.start.elapsed();
            if let Some(log) = &p.log {
                let sink = p.recorder.sink();
                log.emit(sink, p.method, &p.namespace, p.trace_id, verdict, elapsed);
            }
            let exemplar = p.trace_id.filter(|_| p.sampled);
            metrics.record(p.method, p.namespace, verdict, elapsed, exemplar);
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        // Dropped before its end: the client went away, unless the verdict was already decided.
        self.record(|c| c.map_or(Verdict::canceled(), Classification::get_or_canceled));
    }
}

pin_project! {
    /// A response body that records its request's metrics when it ends or is dropped.
    #[derive(Debug)]
    pub struct MetricsBody<B> {
        #[pin]
        inner: B,
        completion: Option<Completion>,
    }
}

impl<B: Body> MetricsBody<B> {
    pub(crate) fn new(inner: B, completion: Completion) -> Self {
        let mut body = MetricsBody {
            inner,
            completion: Some(completion),
        };
        if body.inner.is_end_stream() {
            body.end(Verdict::Success);
        }
        body
    }

    fn end(&mut self, verdict: Verdict) {
        if let Some(c) = self.completion.take() {
            c.finish(verdict);
        }
    }
}

impl<B> Body for MetricsBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        let ended = match &frame {
            None => Some(Verdict::Success),
            Some(Err(_)) => None,
            Some(Ok(_)) => this.inner.is_end_stream().then_some(Verdict::Success),
        };
        match frame {
            Some(Err(e)) => {
                let e: BoxError = e.into();
                if let Some(c) = this.completion.take() {
                    c.finish(Verdict::Failure(classify_error(&*e)));
                }
                Poll::Ready(Some(Err(e)))
            }
            frame => {
                if let (Some(verdict), Some(c)) = (ended, this.completion.take()) {
                    c.finish(verdict);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: ErrorBody> ErrorBody for MetricsBody<B> {
    fn from_bytes(bytes: Bytes) -> Self {
        MetricsBody {
            inner: B::from_bytes(bytes),
            completion: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_as_the_standard_formatter_writes_them() {
        for addr in [
            "127.0.0.1:8080",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.20.3.4:51234",
            "[::1]:9",
            "[fe80::1%4294967295]:65535",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:1",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(AddrText::of(addr).as_str(), addr.to_string());
        }
    }

    #[test]
    fn durations_are_written_as_their_exact_decimal_milliseconds() {
        use std::time::Duration;
        for (nanos, written) in [
            (652_909, "0.652909"),
            (43_634, "0.043634"),
            (1, "1e-6"),
            (1_000_000, "1.0"),
            (2_500_123_456, "2500.123456"),
            (86_400_000_000_000, "86400000.0"),
        ] {
            let ms = millis(Duration::from_nanos(nanos));
            assert_eq!(serde_json::to_string(&ms).unwrap(), written, "{nanos} ns");
        }
    }
}
