//! The peek in one pass over the bytes: a JSON validator that finds, as it goes, what
//! [`Message::parse`](super::Message::parse) reads. serde's path read the envelope, then `params`
//! and `result` a second time.
//!
//! It answers only for what it is sure of: valid UTF-8 and strict JSON, peeked strings without
//! escapes, no repeated member among those peeked, no `error` member, nesting under 64. Anything
//! else answers `None` and serde's path decides, errors included, so the two cannot disagree on
//! what they both accept (a differential test holds them to it).

use std::ops::Range;

use super::{Fields, Kind, McpMethod, MetaTrace, Text};

/// Deeper than this is left to serde (its own limit is 128).
const MAX_DEPTH: u32 = 64;

/// The peeked head of the message in `b`, with an empty `raw`, or `None` for serde to decide.
pub(super) fn peek(b: &[u8]) -> Option<Fields> {
    let mut s = Scanner::new(b, 0);
    let mut env = Envelope::default();
    s.ws();
    s.object(|s, key| env.member(s, key?))?;
    s.ws();
    if s.at != b.len() || !s.utf8() {
        return None;
    }
    let jsonrpc = env.jsonrpc.flatten()?;
    if &b[jsonrpc.clone()] != b"\"2.0\"" {
        return None;
    }
    let id = env.id.flatten();
    if let Some(id) = &id {
        let first = b[id.start];
        if !(first == b'"' || first == b'-' || first.is_ascii_digit()) {
            return None;
        }
    }
    let (kind, method, method_name) = match (env.method.flatten(), env.result.flatten()) {
        (Some(name), None) => {
            let name = unquoted(b, name)?;
            let method_name = std::str::from_utf8(&b[name.clone()]).ok()?;
            let kind = if id.is_some() {
                Kind::Request
            } else {
                Kind::Notification
            };
            (kind, McpMethod::from_name(method_name), Some(name))
        }
        (None, Some(_)) if id.is_some() => (Kind::Response, McpMethod::Other, None),
        _ => return None,
    };
    let params = env.params.flatten();
    let (tool_name, meta) = match params {
        Some(_) => env.params_peek?,
        None => (None, MetaTrace::default()),
    };
    let named = matches!(method, McpMethod::ToolsCall | McpMethod::PromptsGet);
    Some(Fields {
        raw: bytes::Bytes::new(),
        kind,
        method,
        method_name: method_name.map(Text::Span),
        id,
        tool_name: tool_name.filter(|_| named).map(Text::Span),
        error_code: None,
        is_tool_error: env.is_tool_error,
        meta,
        params: params.filter(|p| b[p.start] == b'{'),
    })
}

/// `params` alone (the object that ends `b`, from `start`): the range of `name`'s text and the
/// trace context in `_meta`, or `None` for serde to decide.
pub(super) fn peek_params(b: &[u8], start: usize) -> Option<(Option<Range<usize>>, MetaTrace)> {
    let mut s = Scanner::new(b, start);
    let peeked = s.params()?;
    (s.at == b.len() && s.utf8()).then_some(peeked)
}

/// The envelope's members: `None` when absent, `Some(None)` when null, else the value's range.
#[derive(Default)]
struct Envelope {
    jsonrpc: Option<Option<Range<usize>>>,
    id: Option<Option<Range<usize>>>,
    method: Option<Option<Range<usize>>>,
    params: Option<Option<Range<usize>>>,
    result: Option<Option<Range<usize>>>,
    params_peek: Option<(Option<Range<usize>>, MetaTrace)>,
    is_tool_error: bool,
}

impl Envelope {
    fn member(&mut self, s: &mut Scanner<'_>, key: &[u8]) -> Option<()> {
        let slot = match key {
            b"jsonrpc" => &mut self.jsonrpc,
            b"id" => &mut self.id,
            b"method" => &mut self.method,
            b"params" => &mut self.params,
            b"result" => &mut self.result,
            // An error response is rare on the hot path: serde peeks its code.
            b"error" => return None,
            _ => return s.value().map(drop),
        };
        if slot.is_some() {
            return None;
        }
        let start = s.at;
        let value = match (key, s.byte()?) {
            (_, b'n') => {
                s.literal(b"null")?;
                *slot = Some(None);
                return Some(());
            }
            (b"params", b'{') => {
                self.params_peek = Some(s.params()?);
                start..s.at
            }
            (b"params", b'[') => {
                self.params_peek = Some((None, MetaTrace::default()));
                s.value()?
            }
            (b"params", _) => return None,
            (b"result", b'{') => {
                self.is_tool_error = s.result()?;
                start..s.at
            }
            (b"jsonrpc" | b"method", b'"') => s.value()?,
            (b"jsonrpc" | b"method", _) => return None,
            _ => s.value()?,
        };
        *slot = Some(Some(value));
        Some(())
    }
}

/// The text between the quotes of the string at `r`, when it has no escapes.
fn unquoted(b: &[u8], r: Range<usize>) -> Option<Range<usize>> {
    let inner = r.start + 1..r.end - 1;
    (b[r.start] == b'"' && !b[inner.clone()].contains(&b'\\')).then_some(inner)
}

struct Scanner<'a> {
    b: &'a [u8],
    /// Where scanning started; `at` is where it is.
    start: usize,
    at: usize,
    depth: u32,
    /// A string held a byte over 0x7f: only then is UTF-8 checked (outside strings the scan
    /// accepts ASCII alone).
    non_ascii: bool,
}

impl<'a> Scanner<'a> {
    fn new(b: &'a [u8], start: usize) -> Self {
        Scanner {
            b,
            start,
            at: start,
            depth: 0,
            non_ascii: false,
        }
    }

    /// Whether what was scanned is UTF-8.
    fn utf8(&self) -> bool {
        !self.non_ascii || std::str::from_utf8(&self.b[self.start..self.at]).is_ok()
    }

    fn byte(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.byte() {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.byte()? == c).then(|| self.at += 1)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.b.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// Any value; its range.
    fn value(&mut self) -> Option<Range<usize>> {
        let start = self.at;
        match self.byte()? {
            b'"' => {
                self.string()?;
            }
            b'{' => self.object(|s, _| s.value().map(drop))?,
            b'[' => self.array()?,
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return None,
        }
        Some(start..self.at)
    }

    /// A string from its opening quote; whether it had escapes.
    // Inlined: a message's strings are a dozen short keys, and a call each cost more than its scan.
    #[inline(always)]
    fn string(&mut self) -> Option<bool> {
        self.at += 1;
        let mut escaped = false;
        loop {
            self.skip_plain();
            let c = self.byte()?;
            self.at += 1;
            match c {
                b'"' => return Some(escaped),
                b'\\' => {
                    escaped = true;
                    match self.byte()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                        b'u' => {
                            let hex = self.b.get(self.at + 1..self.at + 5)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.at += 5;
                        }
                        _ => return None,
                    }
                }
                // A control character must be escaped.
                _ => return None,
            }
        }
    }

    /// Past the bytes of a string that need no look: not `"`, `\` or a control character.
    /// Eight at a time while it can (string contents are most of a message's bytes).
    fn skip_plain(&mut self) {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        // The lowest flagged byte is exact (a borrow only flags bytes above a true match).
        let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        // In locals, stored once: the scanner's fields would be written back every chunk.
        let (b, mut at, mut seen) = (self.b, self.at, 0u64);
        while let Some(chunk) = b.get(at..at + 8) {
            let v = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            let special = has_zero(v ^ (ONES * u64::from(b'"')))
                | has_zero(v ^ (ONES * u64::from(b'\\')))
                | (v.wrapping_sub(ONES * 0x20) & !v & HIGH);
            // Over-reports when the byte is past the string: that costs only a UTF-8 check.
            seen |= v;
            if special != 0 {
                self.at = at + special.trailing_zeros() as usize / 8;
                self.non_ascii |= seen & HIGH != 0;
                return;
            }
            at += 8;
        }
        self.non_ascii |= seen & HIGH != 0;
        while let Some(&c) = b.get(at) {
            if c == b'"' || c == b'\\' || c < 0x20 {
                break;
            }
            self.non_ascii |= c > 0x7f;
            at += 1;
        }
        self.at = at;
    }

    fn number(&mut self) -> Option<()> {
        if self.byte() == Some(b'-') {
            self.at += 1;
        }
        match self.byte()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.byte() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.byte() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.byte() {
                self.at += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.byte().is_some_and(|c| c.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }

    fn nested(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// An object from its `{`: `member` is called at each value with the key's bytes (`None`
    /// when the key has escapes) and must read the value.
    fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, Option<&[u8]>) -> Option<()>,
    ) -> Option<()> {
        self.container(b'{', b'}', |s| {
            let start = s.at;
            if s.byte()? != b'"' {
                return None;
            }
            let escaped = s.string()?;
            let key = (!escaped).then(|| &s.b[start + 1..s.at - 1]);
            s.ws();
            s.eat(b':')?;
            s.ws();
            member(s, key)
        })
    }

    fn array(&mut self) -> Option<()> {
        self.container(b'[', b']', |s| s.value().map(drop))
    }

    /// `open`, then elements read by `element` separated by commas, then `close`.
    fn container(
        &mut self,
        open: u8,
        close: u8,
        mut element: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.eat(open)?;
        self.nested()?;
        self.ws();
        if self.eat(close).is_none() {
            loop {
                self.ws();
                element(self)?;
                self.ws();
                match self.byte()? {
                    b',' => self.at += 1,
                    c if c == close => {
                        self.at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// A string without escapes (the range of its text) or null (`Some(None)`).
    fn plain_string_or_null(&mut self) -> Option<Option<Range<usize>>> {
        match self.byte()? {
            b'n' => self.literal(b"null").map(|()| None),
            b'"' => {
                let start = self.at;
                let escaped = self.string()?;
                (!escaped).then(|| Some(start + 1..self.at - 1))
            }
            _ => None,
        }
    }

    /// The `params` object: `name`'s text and `_meta`'s trace context.
    fn params(&mut self) -> Option<(Option<Range<usize>>, MetaTrace)> {
        let (mut name, mut meta) = (None, None);
        self.object(|s, key| match key? {
            b"name" if name.is_none() => {
                name = Some(s.plain_string_or_null()?);
                Some(())
            }
            b"_meta" if meta.is_none() => {
                meta = Some(match s.byte()? {
                    b'{' => s.meta()?,
                    _ => s.literal(b"null").map(|()| MetaTrace::default())?,
                });
                Some(())
            }
            b"name" | b"_meta" => None,
            _ => s.value().map(drop),
        })?;
        Some((name.flatten(), meta.unwrap_or_default()))
    }

    /// The `_meta` object: its trace context and progress token.
    fn meta(&mut self) -> Option<MetaTrace> {
        let mut seen = [false; 4];
        let mut meta = MetaTrace {
            present: true,
            ..MetaTrace::default()
        };
        self.object(|s, key| {
            let slot = match key? {
                b"traceparent" => 0,
                b"tracestate" => 1,
                b"baggage" => 2,
                b"progressToken" => 3,
                _ => return s.value().map(drop),
            };
            if std::mem::replace(&mut seen[slot], true) {
                return None;
            }
            let text = |r: Option<Range<usize>>| r.map(Text::Span);
            match slot {
                0 => meta.traceparent = text(s.plain_string_or_null()?),
                1 => meta.tracestate = text(s.plain_string_or_null()?),
                2 => meta.baggage = text(s.plain_string_or_null()?),
                _ => meta.progress_token = Some(s.value()?).filter(|r| s.b[r.start] != b'n'),
            }
            Some(())
        })?;
        Some(meta)
    }

    /// A `result` object: whether `isError` is true.
    fn result(&mut self) -> Option<bool> {
        let mut is_error = None;
        self.object(|s, key| match key? {
            b"isError" if is_error.is_none() => {
                is_error = Some(match s.byte()? {
                    b't' => s.literal(b"true").map(|()| true)?,
                    b'f' => s.literal(b"false").map(|()| false)?,
                    _ => s.literal(b"null").map(|()| false)?,
                });
                Some(())
            }
            b"isError" => None,
            _ => s.value().map(drop),
        })?;
        Some(is_error == Some(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::Message;
    use bytes::Bytes;
    use proptest::prelude::*;

    /// Whether the scan answered for `b`; when it did, serde must accept `b` and peek the same.
    fn agrees_with_serde(b: &[u8]) -> bool {
        let serde = Message::parse_with_serde(Bytes::copy_from_slice(b));
        if let Ok(fields) = &serde {
            if let Some(params) = fields.params.clone() {
                if let Some((name, meta)) = peek_params(&b[..params.end], params.start) {
                    let named =
                        matches!(fields.method, McpMethod::ToolsCall | McpMethod::PromptsGet);
                    let name = name.filter(|_| named).map(Text::Span);
                    assert_eq!(
                        (name, meta),
                        (fields.tool_name.clone(), fields.meta.clone())
                    );
                }
            }
        }
        let Some(mut scanned) = peek(b) else {
            return false;
        };
        scanned.raw = Bytes::copy_from_slice(b);
        let text = String::from_utf8_lossy(b);
        let serde =
            serde.unwrap_or_else(|e| panic!("the scan accepted what serde refuses ({e}): {text}"));
        assert_eq!(scanned, serde, "{text}");
        true
    }

    /// What clients and servers send: the scan answers for all of it.
    const ORDINARY: &[&str] = &[
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"roots":{"listChanged":true}},"clientInfo":{"name":"c","version":"1.0"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":"a-1","method":"tools/call","params":{"name":"demo__echo","arguments":{"text":"h\u00e9llo\n\"q\"","n":-12.5e+3,"ok":true,"none":null,"list":[1,[2,{}],[]]},"_meta":{"progressToken":"p1","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","tracestate":"k=v","baggage":"b=1"}}}"#,
        r#"{"jsonrpc":"2.0","id":-7,"method":"prompts/get","params":{"name":"p","_meta":{"progressToken":5}}}"#,
        "{ \"jsonrpc\" : \"2.0\" ,\n\t\"id\" : 0 , \"method\" : \"ping\" }\r\n",
        r#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"naïve ✓ 𝄞"}],"isError":false}}"#,
        r#"{"jsonrpc":"2.0","id":3,"result":{"content":[],"isError":true}}"#,
        r#"{"result":{"isError":null},"id":"x","jsonrpc":"2.0","extra":{"a\"b":[0.5,1E9,-0]}}"#,
        r#"{"jsonrpc":"2.0","id":4,"result":[1,2]}"#,
        r#"{"jsonrpc":"2.0","id":5,"method":"x","params":[1,"two"]}"#,
        r#"{"jsonrpc":"2.0","id":6,"method":"tools/list","params":null}"#,
        r#"{"jsonrpc":"2.0","id":null,"method":"notifications/cancelled","params":{"requestId":1,"_meta":null}}"#,
        r#"{"jsonrpc":"2.0","id":8,"method":"resources/read","params":{"uri":"file:///a","name":null}}"#,
        r#"{"jsonrpc":"2.0","id":9,"method":"tools/list","params":{ }}"#,
    ];

    /// What the scan leaves to serde, valid or not.
    const LEFT_TO_SERDE: &[&str] = &[
        r#"{"jsonrpc":"2.0","id":1,"method":"tools\/call"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a\u0062"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","i\u0064":1,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"traceparent":"a","traceparent":"b"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":["a"]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"isError":"yes"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"isError":false,"isError":true}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{},"_meta":{}}}"#,
        r#"{"jsonrpc":"2.0","id":true,"method":"ping"}"#,
        r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","method":"ping","result":{}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"} x"#,
        r#"{"jsonrpc":"2.0","id":01,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1.,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","x":[1,]}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping",}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","x":"\x"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","x":"\u12G4"}"#,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"x\":\"a\u{1}b\"}",
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","x":tru}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping""#,
    ];

    #[test]
    fn the_scan_answers_for_ordinary_messages_as_serde_does() {
        for text in ORDINARY {
            assert!(agrees_with_serde(text.as_bytes()), "left to serde: {text}");
        }
    }

    #[test]
    fn the_scan_leaves_the_unusual_to_serde() {
        for text in LEFT_TO_SERDE {
            assert!(!agrees_with_serde(text.as_bytes()), "scanned: {text}");
        }
        let deep = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"a":{}1{}}}}}"#,
            "[".repeat(70),
            "]".repeat(70)
        );
        assert!(!agrees_with_serde(deep.as_bytes()));
        // Latin-1 where UTF-8 belongs, byte by byte and inside an eight-byte step.
        for latin1 in [&b"\"\xe9\"}"[..], b"\"abc\xe9defghijklm\"}"] {
            let mut b = br#"{"jsonrpc":"2.0","id":1,"method":"ping","x":"#.to_vec();
            b.extend_from_slice(latin1);
            assert!(!agrees_with_serde(&b), "{b:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Messages a few edits away from ordinary ones: wherever the scan answers, serde agrees.
        #[test]
        fn edited_messages_scan_as_serde_peeks_them(
            which in 0..ORDINARY.len(),
            edits in proptest::collection::vec(
                (any::<prop::sample::Index>(), 0..3u8, prop::sample::select(
                    b"{}[],:\"\\ 0-1e.+nultrfasxE\x01\xc3\xa9".to_vec(),
                )),
                1..4,
            ),
        ) {
            let mut b = ORDINARY[which].as_bytes().to_vec();
            for (at, op, byte) in edits {
                let i = at.index(b.len());
                match op {
                    0 => b[i] = byte,
                    1 => b.insert(i, byte),
                    _ => {
                        b.remove(i);
                    }
                }
            }
            agrees_with_serde(&b);
        }
    }
}
