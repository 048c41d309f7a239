//! An incremental parser for `text/event-stream` framing, as the HTML standard defines it: lines
//! end in LF, CRLF or CR; `data:` lines join with LF; a blank line ends an event.
//!
//! ```
//! use mcp_gateway_layers::sse::SseParser;
//!
//! let mut parser = SseParser::new(1 << 20);
//! let mut events = Vec::new();
//! parser.feed(b"event: message\r\nid: 7\r\ndata: {\"a\":", &mut |e| events.push(e)).unwrap();
//! parser.feed(b"1}\r\n\r\n", &mut |e| events.push(e)).unwrap();
//! assert_eq!(events[0].event, "message");
//! assert_eq!(events[0].id.as_deref(), Some("7"));
//! assert_eq!(events[0].data, "{\"a\":1}");
//! ```

use std::fmt;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field; `message` when absent.
    pub event: String,
    /// The `data:` lines joined with LF.
    pub data: String,
    /// The `id:` field, if the event had one.
    pub id: Option<String>,
    /// The `retry:` field in milliseconds, if the event had a valid one.
    pub retry: Option<u64>,
}

/// The stream broke the framing rules the gateway enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// An event or line grew past the configured limit.
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A line was not UTF-8.
    NotUtf8,
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::TooLarge { limit } => write!(f, "SSE event larger than {limit} bytes"),
            SseError::NotUtf8 => f.write_str("SSE line is not UTF-8"),
        }
    }
}

impl std::error::Error for SseError {}

/// Parses an event stream fed in chunks of any size.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    pending: SseEvent,
    has_data: bool,
    has_fields: bool,
    after_cr: bool,
    size: usize,
    max_event_bytes: usize,
}

impl SseParser {
    /// A parser that refuses events (and lines) larger than `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        SseParser {
            line: Vec::new(),
            pending: SseEvent::default(),
            has_data: false,
            has_fields: false,
            after_cr: false,
            size: 0,
            max_event_bytes,
        }
    }

    /// Feeds a chunk; `emit` is called for each event that the chunk completes.
    pub fn feed(&mut self, chunk: &[u8], emit: &mut dyn FnMut(SseEvent)) -> Result<(), SseError> {
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(end) => {
                    self.append(&rest[..end])?;
                    self.after_cr = rest[end] == b'\r';
                    rest = &rest[end + 1..];
                    self.end_line(emit)?;
                }
                None => {
                    self.append(rest)?;
                    rest = &[];
                }
            }
        }
        Ok(())
    }

    /// Whether a partial event or line is still buffered (a stream that ends here was cut short).
    pub fn is_mid_event(&self) -> bool {
        !self.line.is_empty() || self.has_fields
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        self.size += bytes.len();
        if self.size > self.max_event_bytes {
            return Err(SseError::TooLarge {
                limit: self.max_event_bytes,
            });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn end_line(&mut self, emit: &mut dyn FnMut(SseEvent)) -> Result<(), SseError> {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch(emit);
            return Ok(());
        }
        let line = std::str::from_utf8(&line).map_err(|_| SseError::NotUtf8)?;
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        self.has_fields = true;
        match field {
            "data" => {
                if self.has_data {
                    self.pending.data.push('\n');
                }
                self.pending.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.pending.event = value.to_owned(),
            "id" if !value.contains('\0') => self.pending.id = Some(value.to_owned()),
            "retry" => self.pending.retry = value.parse().ok(),
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, emit: &mut dyn FnMut(SseEvent)) {
        let mut event = std::mem::take(&mut self.pending);
        let had_data = std::mem::take(&mut self.has_data);
        self.has_fields = false;
        self.size = 0;
        if had_data {
            if event.event.is_empty() {
                event.event.push_str("message");
            }
            emit(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(chunks: &[&[u8]]) -> Result<Vec<SseEvent>, SseError> {
        let mut parser = SseParser::new(1024);
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut |e| out.push(e))?;
        }
        Ok(out)
    }

    #[test]
    fn joins_data_lines_and_skips_comments() {
        let events = parse_all(&[
            b": keepalive\n\ndata: a\ndata:b\n\nevent: endpoint\ndata: /messages?x=1\n\n",
        ])
        .unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].data, "a\nb");
        assert_eq!(events[0].event, "message");
        assert_eq!(events[1].event, "endpoint");
    }

    #[test]
    fn handles_cr_split_across_chunks() {
        let events = parse_all(&[b"data: x\r", b"\n\r", b"\n"]).unwrap();
        assert_eq!(
            events,
            vec![SseEvent {
                event: "message".into(),
                data: "x".into(),
                id: None,
                retry: None
            }]
        );
    }

    #[test]
    fn refuses_oversized_events_and_bad_utf8() {
        assert_eq!(
            parse_all(&[&[b'x'; 2000]]),
            Err(SseError::TooLarge { limit: 1024 })
        );
        assert_eq!(parse_all(&[b"data: \xff\n"]), Err(SseError::NotUtf8));
    }

    proptest! {
        #[test]
        fn chunking_does_not_change_events(split in 0usize..64, input in "(data: [a-z{}\"]{0,6}(\r\n|\n|\r)|event: m\n|id: 3\n|: c\n|\n){0,12}") {
            let bytes = input.as_bytes();
            let split = split.min(bytes.len());
            let whole = parse_all(&[bytes]);
            let parts = parse_all(&[&bytes[..split], &bytes[split..]]);
            prop_assert_eq!(whole, parts);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_all(&[&bytes]);
        }
    }
}
