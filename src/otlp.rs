//! OTLP export of the gateway's spans: the server span of each request (`mcp.server`) and the
//! client span of each backend call (`mcp.client`), when sampled, batched and sent to a collector
//! over HTTP/protobuf or gRPC. The protobuf is written here, field by field, from the
//! OpenTelemetry proto definitions: a handful of messages do not need a code generator.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};
use tokio::sync::Notify;
use tracing::Subscriber;
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::config::{OtlpConfig, OtlpProtocol};
use crate::lock;
use crate::logs::Collect;

/// One finished span, ready to encode.
#[derive(Debug, Clone)]
struct FinishedSpan {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_span_id: Option<[u8; 8]>,
    name: &'static str,
    kind: u64,
    start: u64,
    end: u64,
    attributes: Map<String, Value>,
    error_type: Option<String>,
}

/// The span's fields and start time, kept in its extensions until it closes.
struct OpenSpan {
    fields: Map<String, Value>,
    start: u64,
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn hex<const N: usize>(v: Option<&Value>) -> Option<[u8; N]> {
    let s = v?.as_str()?;
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

/// Captures the gateway's spans and hands the sampled ones to the exporter.
#[derive(Debug)]
pub struct OtlpLayer {
    spans: Arc<SpanQueue>,
}

/// The most spans in one export.
const BATCH_SPANS: usize = 512;
/// The most spans waiting for the exporter; more are dropped.
const MAX_QUEUED_SPANS: usize = 4096;
/// How long the first span of a batch waits for the rest.
const BATCH_WAIT: Duration = Duration::from_secs(1);

/// Finished spans waiting for the exporter, which is woken for a batch rather than for each span:
/// a channel woke the exporter's thread for nearly every span, two wake-ups a sampled request.
#[derive(Debug, Default)]
struct SpanQueue {
    spans: Mutex<Vec<FinishedSpan>>,
    /// Signalled when a batch starts (the first span) and when one is full.
    wake: Notify,
}

impl SpanQueue {
    /// Queues `span` (dropped when the queue is full: tracing never slows requests down), waking
    /// the exporter when it starts or fills a batch.
    fn push(&self, span: FinishedSpan) {
        let queued = {
            let mut spans = lock(&self.spans);
            if spans.len() >= MAX_QUEUED_SPANS {
                return;
            }
            spans.push(span);
            spans.len()
        };
        if queued == 1 || queued % BATCH_SPANS == 0 {
            self.wake.notify_one();
        }
    }

    /// Waits for a batch: the first span, then a full batch or [`BATCH_WAIT`], whichever comes
    /// first; returns what is queued then (it may be more than a batch).
    async fn next_batch(&self) -> Vec<FinishedSpan> {
        while lock(&self.spans).is_empty() {
            self.wake.notified().await;
        }
        if lock(&self.spans).len() < BATCH_SPANS {
            // A wake-up left from the first span ends this wait early: then it waits again.
            let deadline = tokio::time::sleep(BATCH_WAIT);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    () = &mut deadline => break,
                    () = self.wake.notified() => {
                        if lock(&self.spans).len() >= BATCH_SPANS {
                            break;
                        }
                    }
                }
            }
        }
        std::mem::take(&mut *lock(&self.spans))
    }
}

/// Fields that describe the span itself rather than being attributes.
const NOT_ATTRIBUTES: [&str; 6] = [
    "trace_id",
    "span_id",
    "parent_span_id",
    "sampled",
    "otel.kind",
    "error.type",
];

/// Reads a span's `sampled` field.
struct Sampled(bool);

impl tracing::field::Visit for Sampled {
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        if field.name() == "sampled" {
            self.0 = value;
        }
    }
    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let name = attrs.metadata().name();
        if name != "mcp.server" && name != "mcp.client" {
            return;
        }
        // Most spans are not sampled: nothing is collected for them (a map of every field was
        // built for each request's span only to be dropped when it closed).
        let mut sampled = Sampled(false);
        attrs.record(&mut sampled);
        if !sampled.0 {
            return;
        }
        let mut fields = Map::new();
        attrs.record(&mut Collect(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(OpenSpan {
                fields,
                start: now_nanos(),
            });
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(open) = span.extensions_mut().get_mut::<OpenSpan>() {
                values.record(&mut Collect(&mut open.fields));
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(open) = span.extensions_mut().remove::<OpenSpan>() else {
            return;
        };
        let f = &open.fields;

        let (Some(trace_id), Some(span_id)) =
            (hex::<16>(f.get("trace_id")), hex::<8>(f.get("span_id")))
        else {
            return;
        };
        let name = span.metadata().name();
        let finished = FinishedSpan {
            trace_id,
            span_id,
            parent_span_id: hex::<8>(f.get("parent_span_id")),
            name: if name == "mcp.server" {
                "mcp.server"
            } else {
                "mcp.client"
            },
            kind: if f.get("otel.kind").and_then(Value::as_str) == Some("client") {
                3
            } else {
                2
            },
            start: open.start,
            end: now_nanos(),
            attributes: f
                .iter()
                .filter(|(k, _)| !NOT_ATTRIBUTES.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            error_type: f
                .get("error.type")
                .and_then(Value::as_str)
                .map(str::to_owned),
        };
        self.spans.push(finished);
    }
}

// === protobuf encoding ===

fn varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn key(out: &mut BytesMut, field: u32, wire: u8) {
    varint(out, u64::from(field << 3 | u32::from(wire)));
}

fn bytes_field(out: &mut BytesMut, field: u32, bytes: &[u8]) {
    key(out, field, 2);
    varint(out, bytes.len() as u64);
    out.put_slice(bytes);
}

fn message(out: &mut BytesMut, field: u32, write: impl FnOnce(&mut BytesMut)) {
    let mut inner = BytesMut::new();
    write(&mut inner);
    bytes_field(out, field, &inner);
}

/// A `KeyValue` as field `field` of its parent (Span.attributes is 9, Resource.attributes is 1).
fn key_value(out: &mut BytesMut, field: u32, k: &str, v: &Value) {
    message(out, field, |kv| {
        bytes_field(kv, 1, k.as_bytes());
        message(kv, 2, |any| match v {
            Value::Bool(b) => {
                key(any, 2, 0);
                varint(any, u64::from(*b));
            }
            Value::Number(n) if n.is_i64() => {
                key(any, 3, 0);
                varint(any, n.as_i64().unwrap_or(0) as u64);
            }
            Value::String(s) => bytes_field(any, 1, s.as_bytes()),
            other => bytes_field(any, 1, other.to_string().as_bytes()),
        });
    });
}

/// An `ExportTraceServiceRequest` holding `spans`.
fn encode(spans: &[FinishedSpan]) -> Bytes {
    let mut out = BytesMut::new();
    message(&mut out, 1, |resource_spans| {
        message(resource_spans, 1, |resource| {
            key_value(resource, 1, "service.name", &Value::from("mcp-gateway"));
            key_value(
                resource,
                1,
                "service.version",
                &Value::from(env!("CARGO_PKG_VERSION")),
            );
        });
        message(resource_spans, 2, |scope_spans| {
            message(scope_spans, 1, |scope| {
                bytes_field(scope, 1, b"mcp-gateway");
                bytes_field(scope, 2, env!("CARGO_PKG_VERSION").as_bytes());
            });
            for span in spans {
                message(scope_spans, 2, |s| {
                    bytes_field(s, 1, &span.trace_id);
                    bytes_field(s, 2, &span.span_id);
                    if let Some(parent) = span.parent_span_id {
                        bytes_field(s, 4, &parent);
                    }
                    bytes_field(s, 5, span.name.as_bytes());
                    key(s, 6, 0);
                    varint(s, span.kind);
                    key(s, 7, 1);
                    s.put_u64_le(span.start);
                    key(s, 8, 1);
                    s.put_u64_le(span.end);
                    for (k, v) in &span.attributes {
                        key_value(s, 9, k, v);
                    }
                    if let Some(error_type) = &span.error_type {
                        key_value(s, 9, "error.type", &Value::from(error_type.as_str()));
                    }
                    message(s, 15, |status| {
                        if let Some(error_type) = &span.error_type {
                            bytes_field(status, 2, error_type.as_bytes());
                        }
                        key(status, 3, 0);
                        varint(status, if span.error_type.is_some() { 2 } else { 1 });
                    });
                });
            }
        });
    });
    out.freeze()
}

// === export ===

/// The layer to install, and the exporter task to spawn on the runtime.
pub fn pipeline(
    config: &OtlpConfig,
) -> (
    OtlpLayer,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let spans = Arc::new(SpanQueue::default());
    (
        OtlpLayer {
            spans: spans.clone(),
        },
        export(config.clone(), spans),
    )
}

async fn export(config: OtlpConfig, spans: Arc<SpanQueue>) {
    let mut builder = Client::builder(TokioExecutor::new());
    if config.protocol == OtlpProtocol::Grpc {
        builder.http2_only(true);
    }
    let client: Client<_, Full<Bytes>> = builder.build_http();
    let base = config.endpoint.trim_end_matches('/');
    let url = match config.protocol {
        OtlpProtocol::HttpProtobuf => format!("{base}/v1/traces"),
        OtlpProtocol::Grpc => {
            format!("{base}/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        }
    };
    let headers: Vec<(HeaderName, HeaderValue)> = config
        .headers
        .iter()
        .filter_map(|(k, v)| {
            Some((
                HeaderName::try_from(k.as_str()).ok()?,
                HeaderValue::try_from(v.as_str()).ok()?,
            ))
        })
        .collect();
    loop {
        let queued = spans.next_batch().await;
        for batch in queued.chunks(BATCH_SPANS) {
            send_batch(&client, &url, &headers, config.protocol, batch).await;
        }
    }
}

/// Exports one batch; a refusal or a failure is logged and the spans dropped.
async fn send_batch(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
    headers: &[(HeaderName, HeaderValue)],
    protocol: OtlpProtocol,
    batch: &[FinishedSpan],
) {
    let payload = encode(batch);
    let count = batch.len();
    let body = match protocol {
        OtlpProtocol::HttpProtobuf => payload,
        OtlpProtocol::Grpc => {
            // gRPC framing: uncompressed flag, then the message's length.
            let mut framed = BytesMut::with_capacity(payload.len() + 5);
            framed.put_u8(0);
            framed.put_u32(payload.len() as u32);
            framed.put_slice(&payload);
            framed.freeze()
        }
    };
    let mut req = Request::builder().method(Method::POST).uri(url);
    if let Some(h) = req.headers_mut() {
        for (k, v) in headers {
            h.insert(k.clone(), v.clone());
        }
        let content_type = match protocol {
            OtlpProtocol::HttpProtobuf => "application/x-protobuf",
            OtlpProtocol::Grpc => "application/grpc",
        };
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        if protocol == OtlpProtocol::Grpc {
            h.insert(http::header::TE, HeaderValue::from_static("trailers"));
        }
    }
    let Ok(req) = req.body(Full::new(body)) else {
        return;
    };
    match client.request(req).await {
        Ok(resp) => {
            let status = resp.status();
            let collected = resp.into_body().collect().await.ok();
            let grpc_status = collected
                .as_ref()
                .and_then(|c| c.trailers())
                .and_then(|t| t.get("grpc-status"))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let ok = status.is_success() && grpc_status.as_deref().is_none_or(|s| s == "0");
            if !ok {
                tracing::warn!(
                    status = status.as_u16(),
                    grpc_status,
                    spans = count,
                    "the OTLP collector refused spans"
                );
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, spans = count, "OTLP export failed; spans dropped")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(n: u8) -> FinishedSpan {
        FinishedSpan {
            trace_id: [n; 16],
            span_id: [n; 8],
            parent_span_id: None,
            name: "mcp.server",
            kind: 2,
            start: 1,
            end: 2,
            attributes: Map::new(),
            error_type: None,
        }
    }

    #[tokio::test]
    async fn a_batch_waits_for_more_spans_until_full_or_its_time_is_up() {
        let queue = SpanQueue::default();
        queue.push(span(1));
        // One span: the batch waits (BATCH_WAIT) for more rather than going at once.
        let mut waiting = std::pin::pin!(queue.next_batch());
        let early = tokio::time::timeout(Duration::from_millis(300), &mut waiting).await;
        assert!(early.is_err(), "a batch of one went before its time");
        // Filling the batch ends the wait.
        for n in 2..=BATCH_SPANS {
            queue.push(span(n as u8));
        }
        let batch = tokio::time::timeout(Duration::from_millis(300), waiting)
            .await
            .expect("a full batch goes at once");
        assert_eq!(batch.len(), BATCH_SPANS);
        assert_eq!(batch[0].span_id, [1; 8], "spans keep their order");

        // A lone span goes once its time is up.
        queue.push(span(7));
        let started = std::time::Instant::now();
        let batch = tokio::time::timeout(BATCH_WAIT * 10, queue.next_batch())
            .await
            .expect("a lone span goes after BATCH_WAIT");
        assert_eq!(batch.len(), 1);
        assert!(started.elapsed() >= BATCH_WAIT);
    }

    #[tokio::test]
    async fn a_full_queue_drops_spans_and_hands_over_the_rest() {
        let queue = SpanQueue::default();
        for n in 0..MAX_QUEUED_SPANS + 10 {
            queue.push(span(n as u8));
        }
        let queued = queue.next_batch().await;
        assert_eq!(queued.len(), MAX_QUEUED_SPANS);
        assert!(lock(&queue.spans).is_empty());
    }
}
