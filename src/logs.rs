//! JSON log lines as the log contract says: one event per line with `timestamp`, `level`, `msg`,
//! the event's own fields, and the current request's `trace_id`, `span_id`, `session_id`,
//! `request_id` and `method` taken from the span it happened in.

use std::io::Write;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Writes JSON lines to stderr.
#[derive(Debug, Default)]
pub struct JsonLogLayer;

/// The fields of a span that events inside it carry, under the log contract's names.
#[derive(Debug, Default)]
struct SpanFields(Map<String, Value>);

/// Span field names (OpenTelemetry's) → log field names (the contract's).
const CARRIED: [(&str, &str); 5] = [
    ("trace_id", "trace_id"),
    ("span_id", "span_id"),
    ("mcp.session.id", "session_id"),
    ("jsonrpc.request.id", "request_id"),
    ("mcp.method.name", "method"),
];

/// Records a span's or an event's fields into a JSON map (the logs' and the OTLP exporter's).
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

/// Records only the span fields that events carry, under the contract's names: the other
/// fields of a span are never formatted.
struct Carried<'a>(&'a mut Map<String, Value>);

impl Carried<'_> {
    fn put(&mut self, field: &Field, value: impl FnOnce() -> Value) {
        if let Some((_, to)) = CARRIED.iter().find(|(from, _)| *from == field.name()) {
            self.0.insert((*to).to_owned(), value());
        }
    }
}

impl Visit for Carried<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, || Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, || Value::from(format!("{value:?}")));
    }
}

impl<S> Layer<S> for JsonLogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        attrs.record(&mut Carried(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(existing) = span.extensions_mut().get_mut::<SpanFields>() {
                values.record(&mut Carried(&mut existing.0));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        event.record(&mut Collect(&mut fields));
        let mut line = Map::new();
        line.insert("timestamp".to_owned(), Value::from(rfc3339_now()));
        line.insert(
            "level".to_owned(),
            Value::from(event.metadata().level().as_str()),
        );
        line.insert(
            "msg".to_owned(),
            fields.remove("message").unwrap_or(Value::from("")),
        );
        line.insert("target".to_owned(), Value::from(event.metadata().target()));
        // The innermost span that knows a field wins; the event's own fields win over spans.
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(carried) = span.extensions().get::<SpanFields>() {
                    for (k, v) in &carried.0 {
                        line.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
            }
        }
        for (k, v) in fields {
            line.insert(k, v);
        }
        let mut bytes = serde_json::to_vec(&Value::Object(line)).unwrap_or_default();
        bytes.push(b'\n');
        // One write per line: lines from concurrent tasks never interleave.
        let _ = std::io::stderr().lock().write_all(&bytes);
    }
}

/// Now as RFC 3339 UTC with microseconds.
fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
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

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_781), (2026, 11, 24));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
