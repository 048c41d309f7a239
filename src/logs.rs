//! JSON log lines as the log contract says: one event per line with `timestamp`, `level`, `msg`,
//! the event's own fields, and the current request's `trace_id`, `span_id`, `session_id`,
//! `request_id` and `method` taken from the span it happened in.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::lock;
use mcp_gateway_layers::classify::ErrorClass;
use mcp_gateway_layers::jsonrpc::{needs_no_escape, push_json_string};
use mcp_gateway_layers::metrics::{AddrText, REQUEST_LOG_TARGET, RequestLogRecord, RequestLogSink};
use mcp_gateway_layers::trace::{LogScope, SpanId, TraceId};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Writes JSON lines to stderr, through a buffer that one thread drains ([`flush`] at exit).
#[derive(Debug, Default)]
pub struct JsonLogLayer;

/// The fields of a span that events carry, as JSON text in one buffer: where each of
/// [`CARRIED`] is in it, if the span has it.
#[derive(Debug, Default)]
struct SpanFields {
    json: Vec<u8>,
    at: [Option<(u32, u32)>; CARRIED.len()],
}

impl SpanFields {
    /// The carried fields present: (log field name, JSON text, index in [`CARRIED`]).
    fn present(&self) -> impl Iterator<Item = (&'static str, &[u8], usize)> {
        self.at.iter().enumerate().filter_map(|(i, at)| {
            let (start, end) = (*at)?;
            let json = self.json.get(start as usize..end as usize)?;
            Some((CARRIED[i].1, json, i))
        })
    }
}

/// Span field names (OpenTelemetry's) → log field names (the contract's).
const CARRIED: [(&str, &str); 5] = [
    ("trace_id", "trace_id"),
    ("span_id", "span_id"),
    ("mcp.session.id", "session_id"),
    ("jsonrpc.request.id", "request_id"),
    ("mcp.method.name", "method"),
];

/// Keys every line starts with; an event's fields of the same name are left out.
const HEADER: [&str; 4] = ["timestamp", "level", "msg", "target"];

/// Records a span's or an event's fields into a JSON map (the OTLP exporter's).
pub(crate) struct Collect<'a>(pub(crate) &'a mut Map<String, Value>);

impl Visit for Collect<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::from(format!("{value:?}")));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), Value::from(value.to_string()));
    }
}

/// Appends a formatted value to `out` as a JSON string, formatted in place when it needs no
/// escaping (addresses, numbers), else escaped from a copy.
fn json_display(out: &mut Vec<u8>, value: &dyn std::fmt::Debug) {
    let start = out.len();
    out.push(b'"');
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{value:?}");
    if needs_no_escape(&out[start + 1..]) {
        out.push(b'"');
    } else {
        let text = String::from_utf8_lossy(&out[start + 1..]).into_owned();
        out.truncate(start);
        push_json_string(out, &text);
    }
}

/// Records only the span fields that events carry, under the contract's names, as JSON text:
/// the other fields of a span are never formatted.
struct Carried<'a>(&'a mut SpanFields);

impl Carried<'_> {
    /// The index in [`CARRIED`] of a carried field; `None` for the fields logs leave out.
    fn carried(field: &Field) -> Option<usize> {
        CARRIED.iter().position(|(from, _)| *from == field.name())
    }

    /// Records field `index` as the JSON text `write` appends (a value recorded again is
    /// appended again: spans record a field once or twice).
    fn put(&mut self, index: usize, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.0.json.len();
        write(&mut self.0.json);
        let end = self.0.json.len();
        self.0.at[index] = u32::try_from(start).ok().zip(u32::try_from(end).ok());
    }
}

impl Visit for Carried<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if let Some(index) = Self::carried(field) {
            self.put(index, |json| push_json_string(json, value));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if let Some(index) = Self::carried(field) {
            // Trace and span ids are hex: formatted in place, escaped only if they need it.
            self.put(index, |json| json_display(json, value));
        }
    }
}

/// Writes an event's fields as `,"name":value` members; `message` becomes `msg`.
struct EventFields<'a> {
    out: &'a mut Vec<u8>,
    message: Option<String>,
}

impl EventFields<'_> {
    fn key(&mut self, field: &Field) -> bool {
        if HEADER.contains(&field.name()) {
            return false;
        }
        push_member_name(self.out, field.name());
        true
    }
}

/// `,"name":` for a member whose name is an identifier (a field's, a carried one's): nothing in
/// it needs escaping.
fn push_member_name(line: &mut Vec<u8>, name: &str) {
    line.extend_from_slice(b",\"");
    line.extend_from_slice(name.as_bytes());
    line.extend_from_slice(b"\":");
}

impl Visit for EventFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
        } else if self.key(field) {
            push_json_string(self.out, value);
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field) {
            let _ = write!(self.out, "{value}");
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field) {
            let _ = write!(self.out, "{value}");
        }
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field) {
            let _ = serde_json::to_writer(&mut *self.out, &value);
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            self.out
                .extend_from_slice(if value { b"true" } else { b"false" });
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = Some(format!("{value:?}"));
        } else if self.key(field) {
            json_display(self.out, value);
        }
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.key(field) {
            push_json_string(self.out, &value.to_string());
        }
    }
}

impl<S> Layer<S> for JsonLogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        // Spans without a carried field (most of the libraries') get nothing stored.
        let fields_of_span = attrs.metadata().fields();
        if !fields_of_span
            .iter()
            .any(|f| Carried::carried(&f).is_some())
        {
            return;
        }
        let mut fields = SpanFields {
            // Room for the five carried fields of a request's span: one allocation.
            json: Vec::with_capacity(128),
            ..SpanFields::default()
        };
        attrs.record(&mut Carried(&mut fields));
        if fields.at.iter().any(Option::is_some) {
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(fields);
            }
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut extensions = span.extensions_mut();
            match extensions.get_mut::<SpanFields>() {
                Some(existing) => values.record(&mut Carried(existing)),
                None => {
                    let mut fields = SpanFields::default();
                    values.record(&mut Carried(&mut fields));
                    if fields.at.iter().any(Option::is_some) {
                        extensions.insert(fields);
                    }
                }
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        writer().push(&event_line(event, &ctx));
    }
}

/// The start of every line: `{"timestamp":…,"level":…,"target":…`.
fn line_start(line: &mut Vec<u8>, level: &tracing::Level, target: &str) {
    line.extend_from_slice(b"{\"timestamp\":\"");
    rfc3339_now(line);
    level_and_target(line, level, target);
}

/// `","level":…,"target":…`: the rest of a line's start after the timestamp.
fn level_and_target(line: &mut Vec<u8>, level: &tracing::Level, target: &str) {
    line.extend_from_slice(b"\",\"level\":\"");
    line.extend_from_slice(level.as_str().as_bytes());
    line.extend_from_slice(b"\",\"target\":");
    push_json_string(line, target);
}

/// An event's line: its own fields, `msg`, then the carried fields of the spans it is in.
fn event_line<S>(event: &Event<'_>, ctx: &Context<'_, S>) -> Vec<u8>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let mut line = Vec::with_capacity(512);
    line_start(
        &mut line,
        event.metadata().level(),
        event.metadata().target(),
    );
    let mut fields = EventFields {
        out: &mut line,
        message: None,
    };
    event.record(&mut fields);
    let message = fields.message.take();
    line.extend_from_slice(b",\"msg\":");
    push_json_string(&mut line, message.as_deref().unwrap_or(""));
    // The event's own fields win over spans'; the innermost span that knows a field wins.
    let own = event.metadata().fields();
    // One bit per CARRIED field already written.
    let mut written = 0u8;
    let mut carry = |line: &mut Vec<u8>, index: usize, write: &dyn Fn(&mut Vec<u8>)| {
        let name = CARRIED[index].1;
        if written & (1 << index) != 0 || own.field(name).is_some() {
            return;
        }
        written |= 1 << index;
        push_member_name(line, name);
        write(line);
    };
    if let Some(scope) = ctx.event_scope(event) {
        for span in scope {
            if let Some(carried) = span.extensions().get::<SpanFields>() {
                for (_, json, index) in carried.present() {
                    carry(&mut line, index, &|line| line.extend_from_slice(json));
                }
            }
        }
    }
    // An unsampled request's fields, when it runs in a log scope instead of a span: outermost.
    LogScope::with_current(|scope| {
        let Some(scope) = scope else { return };
        let (trace, span) = (scope.trace_id.hex(), scope.span_id.hex());
        // In CARRIED's order: as the request's span would have carried them.
        let values = [
            Some(trace.as_str()),
            Some(span.as_str()),
            scope.session_id.as_deref(),
            scope.request_id(),
            scope.method_name(),
        ];
        for (index, value) in values.into_iter().enumerate() {
            if let Some(value) = value {
                carry(&mut line, index, &|line| push_json_string(line, value));
            }
        }
    });
    line.extend_from_slice(b"}\n");
    line
}

/// The binary's subscriber: log lines (JSON, or `text`) through `filter`, and spans to `otlp`
/// whatever `filter` says. Each layer has a filter of its own: an unfiltered layer beside the log
/// layer would make every event enabled, and the JSON request lines ask exactly that
/// (`tracing::enabled!`) before they are written.
pub fn subscriber(
    filter: tracing_subscriber::EnvFilter,
    text: bool,
    otlp: Option<crate::otlp::OtlpLayer>,
) -> impl Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static {
    use tracing_subscriber::layer::SubscriberExt;
    let logs = if text {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    } else {
        JsonLogLayer.with_filter(filter).boxed()
    };
    // The exporter takes spans only, and without one, nothing (not even its empty place).
    let exporting = otlp.is_some();
    let spans = otlp.with_filter(tracing_subscriber::filter::filter_fn(move |m| {
        exporting && m.is_span()
    }));
    tracing_subscriber::registry().with(logs).with(spans)
}

static JSON_LAYER_ONLY: AtomicBool = AtomicBool::new(false);

/// Declares that [`JsonLogLayer`] is the process's only log layer, so that gateways started
/// afterwards write their request lines with [`JsonRequestLog`] and run unsampled requests in a
/// [`LogScope`] rather than a span (the layer reads both). Without it, they emit `tracing` events
/// and spans that every layer sees.
pub fn json_layer_only() {
    JSON_LAYER_ONLY.store(true, Ordering::Relaxed);
}

/// Whether [`json_layer_only`] was called.
pub(crate) fn is_json_layer_only() -> bool {
    JSON_LAYER_ONLY.load(Ordering::Relaxed)
}

/// The sink for request lines, when [`json_layer_only`] was called: one for the process, shared
/// by every session's stack.
pub(crate) fn request_log_sink() -> Option<Arc<dyn RequestLogSink>> {
    static SINK: OnceLock<Arc<dyn RequestLogSink>> = OnceLock::new();
    is_json_layer_only().then(|| {
        SINK.get_or_init(|| Arc::new(ProcessRequestLog::default()))
            .clone()
    })
}

/// [`JsonRequestLog`] for the process, asking the log filter once per level: the binary's filter
/// (`MCP_GATEWAY_LOG`) is set before it serves and never changes, and asking it again cost every
/// request about 250 instructions.
#[derive(Debug, Default)]
struct ProcessRequestLog {
    /// The filter's answer for `request completed` and for `request failed`.
    wanted: [OnceLock<bool>; 2],
}

impl RequestLogSink for ProcessRequestLog {
    fn enabled(&self, failed: bool) -> bool {
        *self.wanted[usize::from(failed)].get_or_init(|| JsonRequestLog.enabled(failed))
    }

    fn log(&self, record: &RequestLogRecord<'_>) {
        JsonRequestLog.log(record);
    }
}

/// Writes each request's `request completed` / `request failed` line straight from its fields,
/// member for member as [`JsonLogLayer`] writes the `tracing` event, without tracing's per-field
/// dispatch (the largest cost of a request's logging). The request only queues its record: the
/// log thread formats it with the lines around it. For a process whose log layer is
/// [`JsonLogLayer`] alone: other layers do not see the event. The log filter still decides
/// (the sink's default [`RequestLogSink::enabled`], asked before the record is made).
#[derive(Debug, Default)]
pub struct JsonRequestLog;

impl RequestLogSink for JsonRequestLog {
    fn log(&self, record: &RequestLogRecord<'_>) {
        writer().push_request(record, since_epoch());
    }
}

/// A request's line at `at` (since the epoch), in the order the event's fields are declared.
/// Straight-line, with each member's name and quote written as one constant: every request
/// writes one.
fn request_line(line: &mut Vec<u8>, record: &RequestLogRecord<'_>, at: Duration) {
    /// `,"name":` and a value the gateway makes itself (hex ids, labels, an address, the
    /// message): copied without the escape check, which debug builds (the tests) still make.
    #[inline(always)]
    fn plain(line: &mut Vec<u8>, member: &[u8], value: &[u8]) {
        debug_assert!(mcp_gateway_layers::jsonrpc::needs_no_escape(value));
        line.extend_from_slice(member);
        line.push(b'"');
        line.extend_from_slice(value);
        line.push(b'"');
    }
    /// `,"name":` and a value that may need escaping (a client's session or request id).
    #[inline(always)]
    fn string(line: &mut Vec<u8>, member: &[u8], value: &str) {
        line.extend_from_slice(member);
        push_json_string(line, value);
    }
    line.extend_from_slice(b"{\"timestamp\":\"");
    rfc3339_cached(line, at);
    line.extend_from_slice(request_level_and_target(record.failure.is_some()));
    if let Some(id) = record.trace_id {
        plain(line, b",\"trace_id\":", id.hex().as_bytes());
    }
    if let Some(id) = record.span_id {
        plain(line, b",\"span_id\":", id.hex().as_bytes());
    }
    if let Some(id) = record.session_id {
        string(line, b",\"session_id\":", id);
    }
    if let Some(id) = record.request_id {
        string(line, b",\"request_id\":", id);
    }
    plain(line, b",\"method\":", record.method.as_bytes());
    string(line, b",\"namespace\":", record.namespace);
    string(line, b",\"backend\":", record.namespace);
    plain(line, b",\"status\":", record.status.as_bytes());
    line.extend_from_slice(b",\"duration_ms\":");
    push_millis(line, record.duration_ms);
    if let Some(addr) = record.client_addr {
        line.extend_from_slice(b",\"client_addr\":\"");
        AddrText::push_to(line, addr);
        line.push(b'"');
    }
    if let Some(class) = record.failure {
        plain(
            line,
            b",\"error_type\":",
            class.error_type.as_str().as_bytes(),
        );
        plain(line, b",\"severity\":", class.severity.as_str().as_bytes());
        plain(
            line,
            b",\"component\":",
            class.component.as_str().as_bytes(),
        );
        line.extend_from_slice(if class.retryable {
            b",\"retryable\":true"
        } else {
            b",\"retryable\":false"
        });
        line.extend_from_slice(b",\"http_status\":");
        line.extend_from_slice(
            itoa::Buffer::new()
                .format(class.http_status.as_u16())
                .as_bytes(),
        );
    }
    plain(line, b",\"msg\":", record.message().as_bytes());
    line.extend_from_slice(b"}\n");
}

/// `ms` as `serde_json` writes it. A whole number of nanoseconds in milliseconds (as the layers
/// measure) is written from integers, `1234.5678`: the float's shortest form, which costs
/// the float formatter ~200 instructions a line. Anything else goes to the formatter.
fn push_millis(line: &mut Vec<u8>, ms: f64) {
    // Rounded half up without a library call; a tie the float cannot tell apart fails the check.
    let scaled = ms * 1e6 + 0.5;
    // Below ten nanoseconds the formatter writes `1e-6`; from 2^53 floats skip integers.
    if (10.0..9.0e15).contains(&scaled) && (scaled as u64) as f64 / 1e6 == ms {
        let nanos = scaled as u64;
        let (whole, fraction) = (nanos / 1_000_000, nanos % 1_000_000);
        let mut digits = itoa::Buffer::new();
        line.extend_from_slice(digits.format(whole).as_bytes());
        line.push(b'.');
        if fraction == 0 {
            line.push(b'0');
            return;
        }
        // Six places, the trailing zeros left out.
        let (mut fraction, mut places) = (fraction, 6);
        while fraction % 10 == 0 {
            fraction /= 10;
            places -= 1;
        }
        let mut text = [b'0'; 6];
        for place in text[..places].iter_mut().rev() {
            *place = b'0' + (fraction % 10) as u8;
            fraction /= 10;
        }
        line.extend_from_slice(&text[..places]);
    } else {
        let _ = serde_json::to_writer(&mut *line, &ms);
    }
}

/// A request line's `","level":…,"target":…`, made once per level: the target is the same on
/// every request line.
fn request_level_and_target(failed: bool) -> &'static [u8] {
    static PARTS: std::sync::LazyLock<[Vec<u8>; 2]> = std::sync::LazyLock::new(|| {
        [tracing::Level::INFO, tracing::Level::WARN].map(|level| {
            let mut part = Vec::new();
            level_and_target(&mut part, &level, REQUEST_LOG_TARGET);
            part
        })
    });
    &PARTS[usize::from(failed)]
}

/// Writes whatever log lines are still buffered (call before the process exits).
pub fn flush() {
    if let Some(writer) = WRITER.get() {
        writer.flush();
    }
}

static WRITER: OnceLock<Arc<LineWriter>> = OnceLock::new();

/// The process's log writer, its thread started on first use.
fn writer() -> &'static LineWriter {
    WRITER.get_or_init(|| {
        let writer = Arc::new(LineWriter::new(Box::new(std::io::stderr())));
        let drain = writer.clone();
        let started = std::thread::Builder::new()
            .name("log-writer".to_owned())
            .spawn(move || drain.run());
        if started.is_err() {
            // No thread: lines are written as they come.
            writer.direct.store(true, Ordering::Relaxed);
        }
        writer
    })
}

/// Log lines are appended to a buffer that one thread writes out every [`WRITE_PAUSE`] at most:
/// a request never waits for a write syscall, and the lines of a burst cost one. A request's own
/// line is queued as its record and formatted by that thread, in its place among the lines, so
/// the request does not run the formatting code (nor miss it in the instruction cache). Past
/// [`MAX_PENDING_BYTES`] (the output is stuck) lines are dropped and counted, and the count is
/// written as a line of its own when the output moves again.
struct LineWriter {
    pending: Mutex<Pending>,
    wake: Condvar,
    output: Mutex<Output>,
    direct: AtomicBool,
}

/// What waits for the writer.
#[derive(Default)]
struct Pending {
    /// Lines formatted by whoever logged them, in order.
    lines: Vec<u8>,
    /// Request lines still to format, in order, each placed among `lines` by its `after`.
    requests: Vec<QueuedRequest>,
    /// The queued requests' texts, back to back.
    text: String,
    dropped: u64,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.requests.is_empty() && self.dropped == 0
    }

    fn held_bytes(&self) -> usize {
        self.lines.len() + self.text.len() + self.requests.len() * size_of::<QueuedRequest>()
    }

    fn clear(&mut self) {
        self.lines.clear();
        self.requests.clear();
        self.text.clear();
    }
}

/// A request's log record as it was given, its texts copied into [`Pending::text`].
struct QueuedRequest {
    /// How many bytes of [`Pending::lines`] came before it.
    after: usize,
    /// When it was logged, since the epoch.
    at: Duration,
    trace_id: Option<TraceId>,
    span_id: Option<SpanId>,
    client_addr: Option<SocketAddr>,
    duration_ms: f64,
    failure: Option<ErrorClass>,
    /// Where its texts start in [`Pending::text`], and where each ends: session id, request id,
    /// method, namespace, status.
    start: u32,
    ends: [u32; 5],
    has_session_id: bool,
    has_request_id: bool,
}

impl QueuedRequest {
    fn record<'a>(&'a self, text: &'a str) -> RequestLogRecord<'a> {
        let mut start = self.start as usize;
        // Each part was pushed as a whole `str`: its ends are character boundaries.
        let [session_id, request_id, method, namespace, status] = self.ends.map(|end| {
            let part = text.get(start..end as usize).unwrap_or_default();
            start = end as usize;
            part
        });
        RequestLogRecord {
            trace_id: self.trace_id,
            span_id: self.span_id,
            session_id: self.has_session_id.then_some(session_id),
            request_id: self.has_request_id.then_some(request_id),
            method,
            namespace,
            status,
            duration_ms: self.duration_ms,
            client_addr: self.client_addr,
            failure: self.failure.as_ref(),
        }
    }
}

struct Output {
    sink: Box<dyn Write + Send>,
    /// What the writer took from [`Pending`] last; kept for its buffers.
    taken: Pending,
    /// The text of a write that has request lines in it.
    formatted: Vec<u8>,
}

const MAX_PENDING_BYTES: usize = 8 << 20;

/// The most each of the writer's buffers keeps between writes.
const KEPT_BUFFER_BYTES: usize = 256 << 10;

/// How much formatted text the writer gathers before a write.
const WRITE_CHUNK_BYTES: usize = 64 << 10;

/// The writer's pause after each write. Each pause is a sleep and a wake-up of the writer thread,
/// and the first line after it a `futex` wake from a connection thread: at 1 ms the writer cost
/// about 1 µs of CPU a call at c=64 and 6–12 µs at c=1 (where nearly every line woke it), at
/// 10 ms 0.25 and about 1 µs (docs/PERFORMANCE.md). A line reaches the output 10 ms late at most.
const WRITE_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

impl LineWriter {
    fn new(sink: Box<dyn Write + Send>) -> Self {
        LineWriter {
            pending: Mutex::default(),
            wake: Condvar::new(),
            output: Mutex::new(Output {
                sink,
                taken: Pending::default(),
                formatted: Vec::new(),
            }),
            direct: AtomicBool::new(false),
        }
    }

    fn push(&self, line: &[u8]) {
        let mut pending = lock(&self.pending);
        if pending.held_bytes() + line.len() > MAX_PENDING_BYTES {
            pending.dropped += 1;
            return;
        }
        let was_empty = pending.is_empty();
        pending.lines.extend_from_slice(line);
        drop(pending);
        self.pushed(was_empty);
    }

    /// Queues a request's line, logged at `at` (since the epoch), for the writer to format.
    fn push_request(&self, record: &RequestLogRecord<'_>, at: Duration) {
        let texts = [
            record.session_id.unwrap_or_default(),
            record.request_id.unwrap_or_default(),
            record.method,
            record.namespace,
            record.status,
        ];
        let text_len: usize = texts.iter().map(|t| t.len()).sum();
        let mut pending = lock(&self.pending);
        if pending.held_bytes() + size_of::<QueuedRequest>() + text_len > MAX_PENDING_BYTES {
            pending.dropped += 1;
            return;
        }
        let was_empty = pending.is_empty();
        let start = pending.text.len() as u32;
        let ends = texts.map(|t| {
            pending.text.push_str(t);
            pending.text.len() as u32
        });
        let after = pending.lines.len();
        pending.requests.push(QueuedRequest {
            after,
            at,
            trace_id: record.trace_id,
            span_id: record.span_id,
            client_addr: record.client_addr,
            duration_ms: record.duration_ms,
            failure: record.failure.copied(),
            start,
            ends,
            has_session_id: record.session_id.is_some(),
            has_request_id: record.request_id.is_some(),
        });
        drop(pending);
        self.pushed(was_empty);
    }

    /// After a push: written at once without a writer thread, else the thread woken if it waits.
    fn pushed(&self, was_empty: bool) {
        if self.direct.load(Ordering::Relaxed) {
            self.flush();
        } else if was_empty {
            self.wake.notify_one();
        }
    }

    /// Writes out what is buffered; the output lock keeps lines in order across writers.
    fn flush(&self) {
        let mut output = lock(&self.output);
        let Output {
            sink,
            taken,
            formatted,
        } = &mut *output;
        let dropped = {
            let mut pending = lock(&self.pending);
            taken.clear();
            std::mem::swap(&mut *pending, taken);
            std::mem::take(&mut taken.dropped)
        };
        if dropped > 0 {
            let mut line = b"{\"timestamp\":\"".to_vec();
            rfc3339_now(&mut line);
            let _ = writeln!(
                line,
                r#"","level":"WARN","target":"mcp_gateway::logs","msg":"log lines dropped: the log output did not keep up","dropped":{dropped}}}"#
            );
            let _ = sink.write_all(&line);
        }
        if taken.requests.is_empty() {
            let _ = sink.write_all(&taken.lines);
        } else {
            // Written a chunk at a time: a burst's lines need no buffer of their size.
            formatted.clear();
            let mut written = 0;
            for request in &taken.requests {
                formatted.extend_from_slice(&taken.lines[written..request.after]);
                written = request.after;
                request_line(formatted, &request.record(&taken.text), request.at);
                if formatted.len() >= WRITE_CHUNK_BYTES {
                    let _ = sink.write_all(formatted);
                    formatted.clear();
                }
            }
            formatted.extend_from_slice(&taken.lines[written..]);
            let _ = sink.write_all(formatted);
        }
        let _ = sink.flush();
        // A burst's buffers are not kept: what a pause's lines need, at tens of thousands of
        // requests a second, is well under this.
        if taken.lines.capacity() + taken.text.capacity() > KEPT_BUFFER_BYTES
            || taken.requests.capacity() * size_of::<QueuedRequest>() > KEPT_BUFFER_BYTES
        {
            *taken = Pending::default();
        }
        if formatted.capacity() > KEPT_BUFFER_BYTES {
            *formatted = Vec::new();
        }
    }

    fn run(&self) {
        loop {
            {
                let mut pending = lock(&self.pending);
                while pending.is_empty() {
                    pending = self
                        .wake
                        .wait(pending)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            }
            self.flush();
            // Lines that come in the meantime go out together in the next write.
            std::thread::sleep(WRITE_PAUSE);
        }
    }
}

/// Now, since the epoch.
fn since_epoch() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Appends now as RFC 3339 UTC with microseconds.
fn rfc3339_now(out: &mut Vec<u8>) {
    rfc3339_cached(out, since_epoch());
}

/// [`rfc3339`], with the text up to the fraction written once a second per thread.
fn rfc3339_cached(out: &mut Vec<u8>, now: std::time::Duration) {
    thread_local! {
        // The second last written and its text up to the fraction: it changes once a second.
        static SECOND: std::cell::Cell<(u64, [u8; 20])> = const { std::cell::Cell::new((u64::MAX, [0; 20])) };
    }
    let (second, mut text) = SECOND.get();
    if second != now.as_secs() {
        let mut line = Vec::with_capacity(28);
        rfc3339(&mut line, now);
        text.copy_from_slice(&line[..20]);
        SECOND.set((now.as_secs(), text));
    }
    out.extend_from_slice(&text);
    let micros = now.subsec_micros();
    for i in (0..6).rev() {
        out.push(b'0' + (micros / 10u32.pow(i) % 10) as u8);
    }
    out.push(b'Z');
}

/// Writes `since_epoch` as `YYYY-MM-DDTHH:MM:SS.ffffffZ`, digit by digit (every log line has one).
fn rfc3339(out: &mut Vec<u8>, since_epoch: std::time::Duration) {
    fn digits(out: &mut Vec<u8>, value: u64, width: u32) {
        for i in (0..width).rev() {
            out.push(b'0' + (value / 10u64.pow(i) % 10) as u8);
        }
    }
    let secs = since_epoch.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    digits(out, y.clamp(0, 9999) as u64, 4);
    out.push(b'-');
    digits(out, u64::from(m), 2);
    out.push(b'-');
    digits(out, u64::from(d), 2);
    out.push(b'T');
    digits(out, rem / 3600, 2);
    out.push(b':');
    digits(out, rem % 3600 / 60, 2);
    out.push(b':');
    digits(out, rem % 60, 2);
    out.push(b'.');
    digits(out, u64::from(since_epoch.subsec_micros()), 6);
    out.push(b'Z');
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's algorithm.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Held by each test that installs a subscriber: `tracing` caches a callsite's interest over
    /// every subscriber alive in the process, so one test's unfiltered subscriber could make a
    /// filtered one in another test look interested in what its filter refuses.
    static SUBSCRIBERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// A sink that hands what it is given to the test, and can be held shut.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_stay_in_order_and_overflow_is_counted() {
        let sink = Shared::default();
        let writer = LineWriter::new(Box::new(sink.clone()));
        writer.push(b"one\n");
        writer.push(b"two\n");
        writer.flush();
        assert_eq!(&*lock(&sink.0), b"one\ntwo\n");
        // Nothing drains the buffer: past the bound, lines are dropped and counted.
        let big = vec![b'x'; MAX_PENDING_BYTES / 2];
        writer.push(&big);
        writer.push(&big);
        writer.push(&big);
        writer.flush();
        let out = String::from_utf8(lock(&sink.0).clone()).unwrap();
        let notice = out.lines().nth(2).unwrap();
        let notice: Value = serde_json::from_str(notice).unwrap();
        assert_eq!(notice["dropped"], 1);
        assert_eq!(notice["level"], "WARN");
        assert!(notice["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            out.len(),
            "one\ntwo\n".len() + out.lines().nth(2).unwrap().len() + 1 + 2 * big.len()
        );
    }

    /// Request lines are queued as records and formatted by the writer: each comes out where
    /// it was logged among the other lines, as [`request_line`] writes its record at its time.
    #[test]
    fn queued_request_lines_keep_their_place_and_their_text() {
        use mcp_gateway_layers::classify::{Component, ErrorType};
        let class = ErrorClass::new(ErrorType::Timeout, Component::Backend);
        let completed = RequestLogRecord {
            trace_id: TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736"),
            span_id: SpanId::from_hex("00f067aa0ba902b7"),
            session_id: Some("s\"1"),
            request_id: Some("7"),
            method: "tools/call",
            namespace: "demo",
            status: "ok",
            duration_ms: 0.652909,
            client_addr: Some("127.0.0.1:5".parse().unwrap()),
            failure: None,
        };
        let failed = RequestLogRecord {
            trace_id: None,
            span_id: None,
            session_id: None,
            request_id: None,
            status: class.error_type.as_str(),
            client_addr: Some("[::1]:6".parse().unwrap()),
            failure: Some(&class),
            ..completed
        };
        let (first, second) = (
            Duration::new(1_795_518_245, 7_000),
            Duration::new(1_795_518_246, 0),
        );
        let sink = Shared::default();
        let writer = LineWriter::new(Box::new(sink.clone()));
        writer.push(b"one\n");
        writer.push_request(&completed, first);
        writer.push_request(&failed, second);
        writer.push(b"two\n");
        writer.push_request(&completed, second);
        writer.flush();
        let line = |record: &RequestLogRecord<'_>, at: Duration| {
            let mut line = Vec::new();
            request_line(&mut line, record, at);
            String::from_utf8(line).unwrap()
        };
        let expected = [
            "one\n".to_owned(),
            line(&completed, first),
            line(&failed, second),
            "two\n".to_owned(),
            line(&completed, second),
        ]
        .concat();
        assert_eq!(String::from_utf8(lock(&sink.0).clone()).unwrap(), expected);
        let lines: Vec<Value> = expected
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["timestamp"], "2026-11-24T11:04:05.000007Z");
        assert_eq!(lines[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(lines[0]["span_id"], "00f067aa0ba902b7");
        assert_eq!(lines[0]["session_id"], "s\"1");
        assert_eq!(lines[0]["request_id"], "7");
        assert_eq!(lines[0]["duration_ms"], 0.652909);
        assert_eq!(lines[0]["client_addr"], "127.0.0.1:5");
        assert_eq!(lines[0]["msg"], "request completed");
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["status"], "timeout");
        assert_eq!(lines[1]["error_type"], "timeout");
        assert_eq!(lines[1]["client_addr"], "[::1]:6");
        assert!(lines[1].get("session_id").is_none() && lines[1].get("trace_id").is_none());

        // A burst longer than a write's chunk comes out whole and in order.
        lock(&sink.0).clear();
        writer.push(b"before\n");
        for _ in 0..(2 * WRITE_CHUNK_BYTES / 200) {
            writer.push_request(&completed, first);
        }
        writer.push(b"after\n");
        writer.flush();
        let burst = [
            "before\n".to_owned(),
            line(&completed, first).repeat(2 * WRITE_CHUNK_BYTES / 200),
            "after\n".to_owned(),
        ]
        .concat();
        assert!(burst.len() > 2 * WRITE_CHUNK_BYTES);
        assert_eq!(String::from_utf8(lock(&sink.0).clone()).unwrap(), burst);
        lock(&sink.0).clear();

        // Queued records count toward the bound like lines: past it they are dropped and counted.
        let big = vec![b'x'; MAX_PENDING_BYTES - 100];
        writer.push(&big);
        writer.push_request(&completed, first);
        writer.flush();
        let out = String::from_utf8(lock(&sink.0).clone()).unwrap();
        let notice: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        assert_eq!(notice["dropped"], 1);
    }

    #[test]
    fn durations_are_written_as_serde_json_writes_them() {
        let mut nanos: Vec<u64> = (0..200_000).collect();
        let mut n: u64 = 1;
        while n < 1 << 53 {
            nanos.extend(n..n + 100);
            n = n * 3 + 7;
        }
        let floats = nanos.iter().map(|&n| n as f64 / 1e6).chain([
            0.1,
            1.0 / 3.0,
            1e-9,
            2.5e20,
            -1.5,
            f64::MAX,
            f64::MIN_POSITIVE,
        ]);
        for ms in floats {
            let mut line = Vec::new();
            push_millis(&mut line, ms);
            assert_eq!(
                String::from_utf8(line).unwrap(),
                serde_json::to_string(&ms).unwrap(),
                "{ms}"
            );
        }
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let v4 = [0u8, 1, 9, 10, 99, 100, 127, 255];
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for (a, b) in v4.iter().zip(v4.iter().rev()) {
            for port in [0u16, 5, 80, 443, 8080, 65535] {
                addrs.push(SocketAddr::from(([*a, *b, 0, 1], port)));
            }
        }
        addrs.push("[::1]:5".parse().unwrap());
        addrs.push("[fe80::1%4294967295]:65535".parse().unwrap());
        for addr in addrs {
            let mut line = Vec::new();
            AddrText::push_to(&mut line, addr);
            assert_eq!(String::from_utf8(line).unwrap(), addr.to_string());
        }
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for value in [
            "",
            "tools/call",
            "quote \" and backslash \\",
            "tab\tnew line\n\u{1}",
            "ünïcödé ✓",
            "\u{7f} is left as it is",
            "eight by eight: 0123456789abcdef\u{1f}",
            "a quote late in a long value: 0123456789abcdef\"",
            "a backslash at byte eight\\ and more",
            "é at the edge of a word: abcdeé",
        ] {
            let expected = serde_json::to_string(value).unwrap();
            let mut out = Vec::new();
            push_json_string(&mut out, value);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{value:?}");

            let mut out = b"{".to_vec();
            json_display(&mut out, &tracing::field::display(value));
            assert_eq!(String::from_utf8(out).unwrap(), format!("{{{expected}"));
        }
    }

    /// Lines as the JSON layer writes them, kept for the test.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Lines {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            JsonLogLayer.on_new_span(attrs, id, ctx);
        }
        fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
            let line = String::from_utf8(event_line(event, &ctx)).unwrap();
            lock(&self.0).push(line);
        }
    }

    impl std::fmt::Debug for Lines {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Lines")
        }
    }

    impl RequestLogSink for Lines {
        // Every line, whatever the filter: these tests read how lines are written.
        fn enabled(&self, _: bool) -> bool {
            true
        }

        fn log(&self, record: &RequestLogRecord<'_>) {
            let mut line = Vec::new();
            request_line(&mut line, record, since_epoch());
            let line = String::from_utf8(line).unwrap();
            lock(&self.0).push(line);
        }
    }

    /// Counts the request lines it is asked to write (with the default filter check).
    #[derive(Debug)]
    struct Admitted(Arc<Mutex<usize>>);

    impl RequestLogSink for Admitted {
        fn log(&self, _: &RequestLogRecord<'_>) {
            *lock(&self.0) += 1;
        }
    }

    /// The line with its two values that differ from run to run (time and duration) blanked.
    fn steady(line: &str) -> String {
        let mut out = line.to_owned();
        for (key, end) in [("\"timestamp\":\"", '"'), ("\"duration_ms\":", ',')] {
            let start = out.find(key).unwrap() + key.len();
            let len = out[start..].find(end).unwrap();
            out.replace_range(start..start + len, "_");
        }
        out
    }

    #[tokio::test]
    async fn a_line_in_an_unsampled_request_s_log_scope_carries_what_its_span_carried() {
        use mcp_gateway_layers::jsonrpc::Message;
        use mcp_gateway_layers::parts::{JsonRpcRequest, JsonRpcResponse};
        use mcp_gateway_layers::trace::TraceLayer;
        use tower::{ServiceExt, service_fn};
        use tracing_subscriber::layer::SubscriberExt;

        let _alone = SUBSCRIBERS.lock().await;
        let lines = Lines::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(lines.clone()));
        let unsampled = TraceLayer::new().sample_ratio(0.0);
        for layer in [unsampled, unsampled.scope_unsampled_requests()] {
            let mut req = JsonRpcRequest::new(
                Message::parse(r#"{"jsonrpc":"2.0","id":"a\"7","method":"tools/call"}"#.into())
                    .unwrap(),
            );
            let mut headers = http::HeaderMap::new();
            headers.insert("mcp-session-id", "s1".parse().unwrap());
            req.context.headers = Some(Arc::new(headers.into()));
            let svc = service_fn(|_: JsonRpcRequest| async {
                tracing::warn!(detail = 1, "inside the request");
                let msg = Message::parse(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#.into());
                Ok::<_, std::convert::Infallible>(JsonRpcResponse::new(msg.unwrap()))
            });
            tower::Layer::layer(&layer, svc).oneshot(req).await.unwrap();
        }
        tracing::warn!("after it");
        let lines: Vec<Value> = lock(&lines.0)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        let (spanned, scoped) = (&lines[0], &lines[1]);
        for key in [
            "session_id",
            "request_id",
            "method",
            "detail",
            "msg",
            "level",
        ] {
            assert_eq!(spanned[key], scoped[key], "{key}: {spanned} {scoped}");
        }
        assert_eq!(scoped["request_id"], r#""a\"7""#);
        assert_eq!(scoped["trace_id"].as_str().map(str::len), Some(32));
        assert_eq!(scoped["span_id"].as_str().map(str::len), Some(16));
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(spanned), keys(scoped));
        assert!(lines[2].get("trace_id").is_none(), "{}", lines[2]);
    }

    #[tokio::test]
    async fn request_lines_written_directly_are_the_lines_of_the_event() {
        let _alone = SUBSCRIBERS.lock().await;
        use mcp_gateway_layers::jsonrpc::Message;
        use mcp_gateway_layers::metrics::{GatewayMetrics, MetricsLayer};
        use mcp_gateway_layers::parts::{
            ClientAddr, JsonRpcRequest, JsonRpcResponse, Namespace, SessionId,
        };
        use mcp_gateway_layers::trace::TraceContext;
        use tower::{ServiceExt, service_fn};
        use tracing_subscriber::layer::SubscriberExt;

        let answers = [
            r#"{"jsonrpc":"2.0","id":"a\"7","result":{"content":[]}}"#,
            r#"{"jsonrpc":"2.0","id":"a\"7","error":{"code":-32601,"message":"no"}}"#,
        ];
        for answer in answers {
            let run = |layer: MetricsLayer| async move {
                let mut req = JsonRpcRequest::new(
                    Message::parse(
                        r#"{"jsonrpc":"2.0","id":"a\"7","method":"tools/call","params":{"name":"x"}}"#
                            .into(),
                    )
                    .unwrap(),
                );
                req.extensions.insert(TraceContext::root(1.0));
                req.extensions.insert(Namespace::new("demo"));
                req.extensions.insert(SessionId("s\u{1}1".into()));
                req.extensions
                    .insert(ClientAddr("[::1]:5".parse().unwrap()));
                let svc = service_fn(move |_: JsonRpcRequest| async move {
                    let msg = Message::parse(answer.into()).unwrap();
                    Ok::<_, std::convert::Infallible>(JsonRpcResponse::new(msg))
                });
                tower::Layer::layer(&layer, svc).oneshot(req).await.unwrap();
            };
            let metrics =
                GatewayMetrics::register(&mut prometheus_client::registry::Registry::default());
            // The filters the gateway is run with, the benchmark's "off" among them.
            for filter in [
                "warn",
                "off",
                "warn,mcp_gateway=info",
                "warn,mcp_gateway=info,mcp_gateway_layers=warn",
                "mcp_gateway_layers=warn",
            ] {
                let events = Lines::default();
                let admitted = Arc::new(Mutex::new(0));
                let filtered = events
                    .clone()
                    .with_filter(tracing_subscriber::EnvFilter::new(filter));
                let subscriber = tracing_subscriber::registry().with(filtered);
                let guard = tracing::subscriber::set_default(subscriber);
                run(MetricsLayer::new(metrics.clone()).log_requests()).await;
                let asked = Arc::new(Admitted(admitted.clone()));
                run(MetricsLayer::new(metrics.clone()).log_requests_to(asked)).await;
                drop(guard);
                let written = lock(&events.0).len();
                // The sink writes a line exactly when the event would have been.
                assert_eq!(*lock(&admitted), written, "{filter} {answer}");
            }
            let events = Lines::default();
            let subscriber = tracing_subscriber::registry().with(events.clone());
            let guard = tracing::subscriber::set_default(subscriber);
            run(MetricsLayer::new(metrics.clone()).log_requests()).await;
            drop(guard);
            let direct = Lines::default();
            run(MetricsLayer::new(metrics).log_requests_to(Arc::new(direct.clone()))).await;
            let (events, direct) = (lock(&events.0).clone(), lock(&direct.0).clone());
            assert_eq!(events.len(), 1, "{events:?}");
            assert_eq!(direct.len(), 1);
            // Same members, same order, same escaping; only the trace and span ids differ.
            let ids = |line: &str| {
                let v: Value = serde_json::from_str(line).unwrap();
                (
                    v["trace_id"].as_str().unwrap().len(),
                    v["span_id"].as_str().unwrap().len(),
                )
            };
            assert_eq!(ids(&events[0]), (32, 16));
            assert_eq!(ids(&direct[0]), (32, 16));
            let without_ids = |line: &str| {
                let v: Value = serde_json::from_str(line).unwrap();
                let (t, s) = (
                    v["trace_id"].as_str().unwrap(),
                    v["span_id"].as_str().unwrap(),
                );
                steady(line).replace(t, "T").replace(s, "S")
            };
            assert_eq!(without_ids(&events[0]), without_ids(&direct[0]));
        }
    }

    /// The binary's own subscriber, with and without the span exporter beside the log layer:
    /// whether a request line is written is the log filter's decision alone (an unfiltered
    /// exporter layer once made every line pass, whatever `MCP_GATEWAY_LOG` said), and an
    /// exporter, when there is one, still sees every span.
    #[test]
    fn the_log_filter_alone_decides_which_request_lines_are_written() {
        let _alone = SUBSCRIBERS.blocking_lock();
        let otlp = || {
            let config = crate::config::OtlpConfig {
                endpoint: "http://127.0.0.1:4318".to_owned(),
                protocol: Default::default(),
                headers: Default::default(),
            };
            crate::otlp::pipeline(&config).0
        };
        // (filter, a completed request's line written, a failed one's)
        for (filter, completed, failed) in [
            ("info", true, true),
            ("warn", false, true),
            ("off", false, false),
            ("info,mcp_gateway_layers=warn", false, true),
            ("info,mcp_gateway_layers=off", false, false),
            // A directive's target matches as a prefix: mcp_gateway names the layers too.
            ("warn,mcp_gateway=info", true, true),
            ("warn,mcp_gateway=info,mcp_gateway_layers=warn", false, true),
            ("error,mcp_gateway_layers::metrics=info", true, true),
        ] {
            for exporter in [None, Some(otlp())] {
                let with_exporter = exporter.is_some();
                let env = tracing_subscriber::EnvFilter::new(filter);
                let subscriber = subscriber(env, false, exporter);
                let process = ProcessRequestLog::default();
                let (admitted, span) = tracing::subscriber::with_default(subscriber, || {
                    let admitted = [JsonRequestLog.enabled(false), JsonRequestLog.enabled(true)];
                    // The process's sink asks once and keeps the answer.
                    for _ in 0..2 {
                        assert_eq!([process.enabled(false), process.enabled(true)], admitted);
                    }
                    let span = tracing::span_enabled!(target: "mcp_gateway", tracing::Level::INFO);
                    (admitted, span)
                });
                assert_eq!([process.enabled(false), process.enabled(true)], admitted);
                assert_eq!(
                    admitted,
                    [completed, failed],
                    "{filter}, exporter: {with_exporter}"
                );
                // The exporter sees every span whatever the log filter; without it, spans are
                // the log filter's.
                let logged = !matches!(
                    filter,
                    "warn" | "off" | "error,mcp_gateway_layers::metrics=info"
                );
                assert_eq!(
                    span,
                    with_exporter || logged,
                    "{filter}, exporter: {with_exporter}"
                );
            }
        }
    }

    #[test]
    fn cached_timestamps_are_the_full_writer_s_text() {
        use std::time::Duration;
        // Within a second, across seconds, days and a year, and back in time.
        let instants = [
            Duration::new(1_795_518_245, 7_000),
            Duration::new(1_795_518_245, 999_999_000),
            Duration::new(1_795_518_246, 0),
            Duration::new(1_795_571_199, 500_000_000),
            Duration::new(1_795_571_200, 1_000),
            Duration::new(1_798_761_599, 123_456_000),
            Duration::new(1_798_761_600, 0),
            Duration::new(1_795_518_245, 42_000),
        ];
        for now in instants {
            let (mut cached, mut full) = (Vec::new(), Vec::new());
            rfc3339_cached(&mut cached, now);
            rfc3339(&mut full, now);
            assert_eq!(
                String::from_utf8(cached),
                String::from_utf8(full),
                "{now:?}"
            );
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_781), (2026, 11, 24));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let mut line = Vec::new();
        rfc3339(&mut line, std::time::Duration::new(1_795_518_245, 7_000));
        assert_eq!(line, b"2026-11-24T11:04:05.000007Z");
    }
}
