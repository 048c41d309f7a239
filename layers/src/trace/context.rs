//! W3C trace context: `traceparent` parsing and formatting, ids, `tracestate` and `baggage`.

use std::fmt;

use http::{HeaderMap, HeaderValue};

/// A 16-byte trace id, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

/// An 8-byte span id, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId([u8; 8]);

/// An id as lowercase hex on the stack: spans and log lines record it as a `&str`, with no
/// formatting machinery and no allocation.
///
/// ```
/// let id = mcp_gateway_layers::trace::SpanId::from_hex("00f067aa0ba902b7").unwrap();
/// assert_eq!(id.hex().as_str(), "00f067aa0ba902b7");
/// ```
#[derive(Clone, Copy)]
pub struct Hex<const N: usize>([u8; N]);

impl<const N: usize> Hex<N> {
    fn of(bytes: &[u8]) -> Self {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; N];
        for (i, b) in bytes.iter().take(N / 2).enumerate() {
            buf[2 * i] = DIGITS[usize::from(b >> 4)];
            buf[2 * i + 1] = DIGITS[usize::from(b & 15)];
        }
        Hex(buf)
    }

    /// The hex digits, as bytes (a writer of bytes skips `as_str`'s UTF-8 check).
    pub fn as_bytes(&self) -> &[u8; N] {
        &self.0
    }

    /// The hex digits.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits were written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl<const N: usize> fmt::Display for Hex<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != N * 2 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

impl TraceId {
    /// A random trace id.
    pub fn random() -> Self {
        loop {
            let id = fastrand::u128(..).to_be_bytes();
            if id != [0; 16] {
                return TraceId(id);
            }
        }
    }

    /// Parses 32 lowercase hex digits; all-zero is invalid.
    pub fn from_hex(s: &str) -> Option<Self> {
        parse_hex::<16>(s).filter(|b| *b != [0; 16]).map(TraceId)
    }

    /// The bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// 32 lowercase hex digits.
    pub fn hex(self) -> Hex<32> {
        Hex::of(&self.0)
    }
}

impl SpanId {
    /// A random span id.
    pub fn random() -> Self {
        loop {
            let id = fastrand::u64(..).to_be_bytes();
            if id != [0; 8] {
                return SpanId(id);
            }
        }
    }

    /// Parses 16 lowercase hex digits; all-zero is invalid.
    pub fn from_hex(s: &str) -> Option<Self> {
        parse_hex::<8>(s).filter(|b| *b != [0; 8]).map(SpanId)
    }

    /// The bytes.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0
    }

    /// 16 lowercase hex digits.
    pub fn hex(self) -> Hex<16> {
        Hex::of(&self.0)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.hex(), f)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.hex(), f)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.hex(), f)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.hex(), f)
    }
}

/// A parsed `traceparent`: the caller's trace and span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace.
    pub trace_id: TraceId,
    /// The caller's span.
    pub span_id: SpanId,
    /// The trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` value: `00-{trace}-{span}-{flags}`. Versions above 00 may carry
    /// more fields after the flags, which are ignored; version `ff` is invalid.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        if value.len() < 55 || !value.is_ascii() {
            return None;
        }
        let version = parse_hex::<1>(&value[0..2])?[0];
        if version == 0xff
            || (version == 0 && value.len() != 55)
            || (value.len() > 55 && value.as_bytes()[55] != b'-')
        {
            return None;
        }
        let b = value.as_bytes();
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        Some(TraceParent {
            trace_id: TraceId::from_hex(&value[3..35])?,
            span_id: SpanId::from_hex(&value[36..52])?,
            flags: parse_hex::<1>(&value[53..55])?[0],
        })
    }
}

/// The trace context of the current span, carried with the request
/// ([`RequestParts::trace_context`](crate::parts::RequestParts::trace_context)): log events,
/// metrics exemplars and outbound requests read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace.
    pub trace_id: TraceId,
    /// This span.
    pub span_id: SpanId,
    /// The caller's span, when the trace came from outside.
    pub parent_span_id: Option<SpanId>,
    /// Whether the trace is sampled.
    pub sampled: bool,
    /// `tracestate`, passed on unchanged.
    pub tracestate: Option<HeaderValue>,
    /// `baggage`, passed on unchanged.
    pub baggage: Option<HeaderValue>,
}

impl TraceContext {
    /// A new root span, sampled with probability `sample_ratio`.
    pub fn root(sample_ratio: f64) -> Self {
        TraceContext {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            parent_span_id: None,
            sampled: sample_ratio >= 1.0 || fastrand::f64() < sample_ratio,
            tracestate: None,
            baggage: None,
        }
    }

    /// A new span under `self` in the same trace.
    pub fn child(&self) -> Self {
        TraceContext {
            span_id: SpanId::random(),
            parent_span_id: Some(self.span_id),
            ..self.clone()
        }
    }

    /// A new span under the caller's `parent`, which keeps its sampling decision.
    pub fn child_of(
        parent: &TraceParent,
        tracestate: Option<HeaderValue>,
        baggage: Option<HeaderValue>,
    ) -> Self {
        TraceContext {
            trace_id: parent.trace_id,
            span_id: SpanId::random(),
            parent_span_id: Some(parent.span_id),
            sampled: parent.flags & 1 == 1,
            tracestate,
            baggage,
        }
    }

    /// This span as a `traceparent` value.
    pub fn traceparent(&self) -> String {
        // Written piece by piece: the formatting machinery costs more than the call's header.
        let mut out = String::with_capacity(55);
        out.push_str("00-");
        out.push_str(self.trace_id.hex().as_str());
        out.push('-');
        out.push_str(self.span_id.hex().as_str());
        out.push_str(if self.sampled { "-01" } else { "-00" });
        out
    }

    /// Writes `traceparent`, `tracestate` and `baggage` into outbound HTTP headers.
    pub fn inject_headers(&self, headers: &mut HeaderMap) {
        if let Ok(v) = HeaderValue::from_str(&self.traceparent()) {
            headers.insert("traceparent", v);
        }
        for (name, value) in [("tracestate", &self.tracestate), ("baggage", &self.baggage)] {
            match value {
                Some(v) => {
                    headers.insert(name, v.clone());
                }
                None => {
                    headers.remove(name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_spec_example() {
        let tp =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(tp.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.span_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(tp.flags, 1);
        let ctx = TraceContext::child_of(&tp, None, None);
        assert!(
            ctx.traceparent()
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        );
        assert!(ctx.sampled);
        assert_eq!(ctx.parent_span_id, Some(tp.span_id));
    }

    #[test]
    fn rejects_invalid_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future")
                .is_some()
        );
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in "\\PC{0,80}") {
            let _ = TraceParent::parse(&s);
        }

        #[test]
        fn formatting_round_trips(t in 1u128.., s in 1u64.., sampled: bool) {
            let ctx = TraceContext {
                trace_id: TraceId(t.to_be_bytes()),
                span_id: SpanId(s.to_be_bytes()),
                parent_span_id: None,
                sampled,
                tracestate: None,
                baggage: None,
            };
            let back = TraceParent::parse(&ctx.traceparent()).unwrap();
            prop_assert_eq!(back.trace_id, ctx.trace_id);
            prop_assert_eq!(back.span_id, ctx.span_id);
            prop_assert_eq!(back.flags & 1 == 1, sampled);
        }
    }
}
