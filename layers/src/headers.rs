//! A request's HTTP headers, read where they lie.
//!
//! A server that parsed a request's head itself (the gateway's own HTTP/1 loop) keeps the head and
//! where each header is in it; a lookup compares names in place. An [`http::HeaderMap`] costs a
//! hash, an allocation and a name parse per header to build, and a request reads four or five of
//! its headers, so it is built only for a reader that asks for one ([`ClientHeaders::map`]).
//!
//! ```
//! use bytes::Bytes;
//! use http::header::CONTENT_TYPE;
//! use mcp_gateway_layers::headers::ClientHeaders;
//!
//! let head = Bytes::from_static(b"POST /mcp HTTP/1.1\r\nContent-Type: application/json\r\n\r\n");
//! // name at 20 (12 bytes), value at 34 (16 bytes)
//! let headers = ClientHeaders::from_head(head, vec![(20, 12, 34, 16)]);
//! assert_eq!(headers.get(&CONTENT_TYPE), Some(&b"application/json"[..]));
//! assert_eq!(headers.map()["content-type"], "application/json");
//! ```

use std::ops::Range;
use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

/// Where one header lies in a head: its name's start and length, its value's start and length.
pub type HeaderSpan = (u16, u16, u16, u16);

/// A header value as text when it is visible ASCII (and tabs), as [`HeaderValue::to_str`] reads it.
pub fn visible_ascii(value: &[u8]) -> Option<&str> {
    is_visible_ascii(value)
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// Whether a header value is visible ASCII (and tabs): what [`HeaderValue::to_str`] takes.
pub fn is_visible_ascii(value: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Eight bytes at a time: a byte under 0x20 (a tab, say) or from 0x7f up sends the chunk to
    // the byte-by-byte check.
    let visible = |v: u64| (v.wrapping_sub(ONES * 0x20) | v.wrapping_add(ONES) | v) & HIGH == 0;
    let plain = |b: &u8| *b == b'\t' || (b' '..0x7f).contains(b);
    let mut chunks = value.chunks_exact(8);
    let chunks_ok = chunks.by_ref().all(|c| {
        visible(u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))) || c.iter().all(plain)
    });
    chunks_ok && chunks.remainder().iter().all(plain)
}

/// The HTTP headers a request came with: a [`HeaderMap`], or the request's head and where each
/// header is in it.
#[derive(Debug, Clone)]
pub struct ClientHeaders {
    repr: Repr,
}

#[derive(Debug, Clone)]
enum Repr {
    Map(HeaderMap),
    Head {
        head: Bytes,
        spans: Vec<HeaderSpan>,
        /// Built on the first call to `map`.
        map: OnceLock<HeaderMap>,
    },
}

impl Default for ClientHeaders {
    fn default() -> Self {
        ClientHeaders::from(HeaderMap::new())
    }
}

impl From<HeaderMap> for ClientHeaders {
    fn from(map: HeaderMap) -> Self {
        ClientHeaders {
            repr: Repr::Map(map),
        }
    }
}

impl ClientHeaders {
    /// The headers at `spans` of `head`, in the order they came. The names are expected to be
    /// HTTP tokens and the values free of control characters, as an HTTP/1 parser (`httparse`)
    /// leaves them; a span out of `head`'s bounds is never read.
    pub fn from_head(head: Bytes, spans: Vec<HeaderSpan>) -> Self {
        let spans = spans
            .into_iter()
            .filter(|&(n, nl, v, vl)| {
                range(n, nl).end <= head.len() && range(v, vl).end <= head.len()
            })
            .collect();
        ClientHeaders {
            repr: Repr::Head {
                head,
                spans,
                map: OnceLock::new(),
            },
        }
    }

    /// The request's head as it was read, when the headers are looked up in it
    /// ([`from_head`](Self::from_head)).
    pub fn head(&self) -> Option<&[u8]> {
        match &self.repr {
            Repr::Head { head, .. } => Some(head),
            Repr::Map(_) => None,
        }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &HeaderName) -> Option<&[u8]> {
        match &self.repr {
            Repr::Map(map) => map.get(name).map(HeaderValue::as_bytes),
            Repr::Head { head, spans, .. } => {
                let wanted = name.as_str().as_bytes();
                spans
                    .iter()
                    .find_map(|&span| value_if_named(head, span, wanted))
            }
        }
    }

    /// The first value of `name`, when it is visible ASCII (as [`HeaderValue::to_str`] requires).
    pub fn get_str(&self, name: &HeaderName) -> Option<&str> {
        visible_ascii(self.get(name)?)
    }

    /// Whether `name` came at all.
    pub fn contains(&self, name: &HeaderName) -> bool {
        self.get(name).is_some()
    }

    /// Every value of `name`, in the order they came.
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        let (map_values, head_values) = match &self.repr {
            Repr::Map(map) => (Some(map.get_all(name).iter()), None),
            Repr::Head { head, spans, .. } => {
                let wanted = name.as_str().as_bytes();
                let values = spans
                    .iter()
                    .filter_map(move |&span| value_if_named(head, span, wanted));
                (None, Some(values))
            }
        };
        let map_values = map_values.into_iter().flatten().map(HeaderValue::as_bytes);
        map_values.chain(head_values.into_iter().flatten())
    }

    /// Every header as an [`http::HeaderMap`], built on first use when the headers are a head's.
    /// A header `http` would not take (never one from `httparse`) is left out.
    pub fn map(&self) -> &HeaderMap {
        match &self.repr {
            Repr::Map(map) => map,
            Repr::Head { head, spans, map } => map.get_or_init(|| {
                let mut built = HeaderMap::with_capacity(spans.len());
                for &(n, nl, v, vl) in spans {
                    let name = HeaderName::from_bytes(&head[range(n, nl)]);
                    let value = HeaderValue::from_maybe_shared(head.slice(range(v, vl)));
                    if let (Ok(name), Ok(value)) = (name, value) {
                        built.append(name, value);
                    }
                }
                built
            }),
        }
    }

    /// How many header lines came.
    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Map(map) => map.len(),
            Repr::Head { spans, .. } => spans.len(),
        }
    }

    /// No header came.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn range(at: u16, len: u16) -> Range<usize> {
    usize::from(at)..usize::from(at) + usize::from(len)
}

/// The value at `span` when its name is `wanted` (lowercase), compared in place.
#[inline]
fn value_if_named<'a>(head: &'a [u8], span: HeaderSpan, wanted: &[u8]) -> Option<&'a [u8]> {
    let (n, nl, v, vl) = span;
    // Lengths first, in the caller's loop: most names differ in length.
    (usize::from(nl) == wanted.len() && same_name(&head[range(n, nl)], wanted))
        .then(|| &head[range(v, vl)])
}

/// Whether `name` is `lowercase` in any case: a byte may differ only in the case bit (0x20), and
/// only where `lowercase` has a letter. Eight bytes at a time, the last eight overlapping.
fn same_name(name: &[u8], lowercase: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let len = name.len();
    if len != lowercase.len() {
        return false;
    }
    if len < 8 {
        return name
            .iter()
            .zip(lowercase)
            .all(|(&h, &l)| h == l || (h ^ l == 0x20 && l.is_ascii_lowercase()));
    }
    let word = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
    (0..len - 8).step_by(8).chain([len - 8]).all(|at| {
        let (h, l) = (word(name, at), word(lowercase, at));
        // A header name is ASCII, so no byte carries into the next: the high bit is set where a
        // byte is at least b'a', and again where it is past b'z'.
        let from_a = l.wrapping_add(0x1f1f_1f1f_1f1f_1f1f);
        let past_z = l.wrapping_add(0x0505_0505_0505_0505);
        let letters = from_a & !past_z & HIGH & !l;
        (h ^ l) & !(letters >> 2) == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{ACCEPT, CONTENT_TYPE, ORIGIN};

    /// The headers of `lines` both ways: as a head with spans, and as a `HeaderMap`.
    fn both(lines: &[(&str, &str)]) -> [ClientHeaders; 2] {
        let mut head = b"POST /mcp HTTP/1.1\r\n".to_vec();
        let mut spans = Vec::new();
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            let n = head.len() as u16;
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            let v = head.len() as u16;
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
            spans.push((n, name.len() as u16, v, value.len() as u16));
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        head.extend_from_slice(b"\r\n");
        [
            ClientHeaders::from_head(Bytes::from(head), spans),
            ClientHeaders::from(map),
        ]
    }

    #[test]
    fn a_head_reads_as_its_header_map_would() {
        let session = HeaderName::from_static("mcp-session-id");
        for headers in both(&[
            ("Content-Type", "application/json"),
            ("accept", "application/json"),
            ("ACCEPT", "text/event-stream"),
            ("Mcp-Session-Id", "abc"),
            ("X-Bin", "caf\u{e9}"),
        ]) {
            assert_eq!(headers.get(&CONTENT_TYPE), Some(&b"application/json"[..]));
            assert_eq!(headers.get_str(&session), Some("abc"));
            let accepts: Vec<_> = headers.get_all(&ACCEPT).collect();
            assert_eq!(
                accepts,
                [&b"application/json"[..], &b"text/event-stream"[..]]
            );
            assert!(headers.contains(&ACCEPT));
            assert!(!headers.contains(&ORIGIN));
            assert_eq!(headers.get(&ORIGIN), None);
            // Not visible ASCII: the bytes, but no text.
            let bin = HeaderName::from_static("x-bin");
            assert_eq!(headers.get(&bin), Some("caf\u{e9}".as_bytes()));
            assert_eq!(headers.get_str(&bin), None);
            assert_eq!(headers.len(), 5);
            let map = headers.map();
            assert_eq!(map.len(), 5);
            assert_eq!(map.get_all(ACCEPT).iter().count(), 2);
            assert_eq!(map["mcp-session-id"], "abc");
        }
    }

    #[test]
    fn names_match_in_any_case_and_only_in_case() {
        for (name, wanted, same) in [
            ("Content-Type", "content-type", true),
            ("CONTENT-TYPE", "content-type", true),
            ("Mcp-Session-Id", "mcp-session-id", true),
            ("X-A", "x-a", true),
            ("Last-Event-ID", "last-event-id", true),
            ("Mcp-Protocol-Version", "mcp-protocol-version", true),
            ("Mcp-Protocol-Versioo", "mcp-protocol-version", false),
            ("Ncp-Protocol-Version", "mcp-protocol-version", false),
            ("x-bbbbbbbbbbbbbbbbbbbb^", "x-bbbbbbbbbbbbbbbbbbbb~", false),
            ("Content-Typf", "content-type", false),
            ("content-type", "content-typ", false),
            // Only letters fold: these differ from the wanted byte by the case bit alone.
            ("a^", "a~", false),
            ("a@", "a`", false),
            ("x\x0d", "x-", false),
            ("ab1", "ab\x11", false),
        ] {
            assert_eq!(
                same_name(name.as_bytes(), wanted.as_bytes()),
                same,
                "{name} / {wanted}"
            );
        }
    }

    #[test]
    fn visible_ascii_is_what_header_value_to_str_takes() {
        let mut values: Vec<Vec<u8>> = (0u8..=255).map(|b| vec![b]).collect();
        values.push(b"application/json, text/event-stream".to_vec());
        values.push(b"0123456789abcdef0123456789abcdef\t!".to_vec());
        for b in 0u8..=255 {
            let mut long = b"0123456789abcdef".to_vec();
            long.insert(usize::from(b % 16), b);
            values.push(long);
        }
        for value in values {
            let by_http = HeaderValue::from_bytes(&value)
                .ok()
                .and_then(|v| v.to_str().ok().map(str::to_owned));
            assert_eq!(
                visible_ascii(&value).map(str::to_owned),
                by_http,
                "{value:?}"
            );
        }
    }

    #[test]
    fn a_span_outside_the_head_is_dropped() {
        let head = Bytes::from_static(b"GET / HTTP/1.1\r\nA: b\r\n\r\n");
        let headers = ClientHeaders::from_head(head, vec![(16, 1, 19, 1), (16, 1, 40, 4)]);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers.get(&HeaderName::from_static("a")), Some(&b"b"[..]));
        assert!(ClientHeaders::default().is_empty());
    }
}
