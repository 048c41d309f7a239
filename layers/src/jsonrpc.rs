//! The raw JSON-RPC message: bytes as they came, plus a peeked head (kind, id, method, tool name,
//! error code, `isError`, `_meta` trace fields) that points into those bytes.
//!
//! Nothing is re-encoded to read a message, and fields the gateway does not own are never touched.
//!
//! ```
//! use mcp_gateway_layers::jsonrpc::{Kind, McpMethod, Message};
//!
//! let msg = Message::parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo"}}"#.to_vec().into()).unwrap();
//! assert_eq!(msg.kind(), Kind::Request);
//! assert_eq!(msg.method(), McpMethod::ToolsCall);
//! assert_eq!(msg.id_raw(), Some("7"));
//! assert_eq!(msg.tool_name(), Some("echo"));
//! ```

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::classify::{Component, ErrorClass, ErrorType, code};

mod scan;

/// Which of the four JSON-RPC message shapes a message has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Has `method` and `id`: expects an answer.
    Request,
    /// Has `method`, no `id`.
    Notification,
    /// Has `id` and `result`.
    Response,
    /// Has `id` (possibly null) and `error`.
    Error,
}

macro_rules! mcp_methods {
    ($($variant:ident => $name:literal, $safe:literal;)*) => {
        /// The MCP method set. Anything else is [`McpMethod::Other`], so a metric label built from it is bounded.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum McpMethod {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )*
            /// A method outside the MCP method set, or no method at all (responses).
            Other,
        }

        impl McpMethod {
            /// Every method of the set, `Other` last.
            pub const ALL: &'static [McpMethod] = &[$(McpMethod::$variant,)* McpMethod::Other];

            /// The method's wire name; `other` for [`McpMethod::Other`].
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(McpMethod::$variant => $name,)*
                    McpMethod::Other => "other",
                }
            }

            /// Looks a wire name up in the MCP method set.
            pub fn from_name(name: &str) -> McpMethod {
                match name {
                    $($name => McpMethod::$variant,)*
                    _ => McpMethod::Other,
                }
            }

            /// Whether the method has no side effect, so that retrying it is harmless.
            pub const fn is_safe(self) -> bool {
                match self {
                    $(McpMethod::$variant => $safe,)*
                    McpMethod::Other => false,
                }
            }
        }
    };
}

mcp_methods! {
    Initialize => "initialize", true;
    Ping => "ping", true;
    ToolsList => "tools/list", true;
    ToolsCall => "tools/call", false;
    PromptsList => "prompts/list", true;
    PromptsGet => "prompts/get", true;
    ResourcesList => "resources/list", true;
    ResourcesTemplatesList => "resources/templates/list", true;
    ResourcesRead => "resources/read", true;
    ResourcesSubscribe => "resources/subscribe", false;
    ResourcesUnsubscribe => "resources/unsubscribe", false;
    CompletionComplete => "completion/complete", false;
    LoggingSetLevel => "logging/setLevel", false;
    SamplingCreateMessage => "sampling/createMessage", false;
    ElicitationCreate => "elicitation/create", false;
    RootsList => "roots/list", true;
    TasksGet => "tasks/get", true;
    TasksResult => "tasks/result", true;
    TasksList => "tasks/list", true;
    TasksCancel => "tasks/cancel", false;
    NotificationsInitialized => "notifications/initialized", false;
    NotificationsCancelled => "notifications/cancelled", false;
    NotificationsProgress => "notifications/progress", false;
    NotificationsMessage => "notifications/message", false;
    NotificationsResourcesUpdated => "notifications/resources/updated", false;
    NotificationsResourcesListChanged => "notifications/resources/list_changed", false;
    NotificationsToolsListChanged => "notifications/tools/list_changed", false;
    NotificationsPromptsListChanged => "notifications/prompts/list_changed", false;
    NotificationsRootsListChanged => "notifications/roots/list_changed", false;
    NotificationsTasksStatus => "notifications/tasks/status", false;
    NotificationsElicitationComplete => "notifications/elicitation/complete", false;
}

impl fmt::Display for McpMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl prometheus_client::encoding::EncodeLabelValue for McpMethod {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Why bytes are not a JSON-RPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeekError {
    /// Not JSON at all (-32700).
    Parse(String),
    /// JSON, but not a JSON-RPC 2.0 message (-32600).
    Invalid(&'static str),
    /// Larger than the configured limit (HTTP 413, -32600).
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
}

impl PeekError {
    /// The error's class: `parse` or `validation`, blamed on the client.
    pub fn class(&self) -> ErrorClass {
        match self {
            PeekError::Parse(_) => ErrorClass::new(ErrorType::Parse, Component::Client),
            PeekError::Invalid(_) => ErrorClass::new(ErrorType::Validation, Component::Client)
                .with_jsonrpc_code(code::INVALID_REQUEST),
            PeekError::TooLarge { .. } => {
                let mut class = ErrorClass::new(ErrorType::Validation, Component::Client);
                class.http_status = http::StatusCode::PAYLOAD_TOO_LARGE;
                class
            }
        }
    }
}

impl fmt::Display for PeekError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeekError::Parse(e) => write!(f, "invalid JSON: {e}"),
            PeekError::Invalid(why) => write!(f, "invalid JSON-RPC message: {why}"),
            PeekError::TooLarge { limit } => write!(f, "message larger than {limit} bytes"),
        }
    }
}

impl std::error::Error for PeekError {}

/// A string field of the message: a range of the raw bytes, or decoded when it had escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Text {
    Span(Range<usize>),
    Decoded(Box<str>),
}

/// Trace context carried in `params._meta` (SEP-414).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct MetaTrace {
    traceparent: Option<Text>,
    tracestate: Option<Text>,
    baggage: Option<Text>,
    progress_token: Option<Range<usize>>,
    /// Whether `params` has a `_meta` member at all.
    present: bool,
}

/// A JSON-RPC message: raw bytes and what the gateway peeked from them. One pointer wide, so
/// that channels, queues and futures holding messages stay small (an idle session holds several).
#[derive(Clone, PartialEq, Eq)]
pub struct Message(Box<Fields>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    raw: Bytes,
    kind: Kind,
    method: McpMethod,
    method_name: Option<Text>,
    id: Option<Range<usize>>,
    tool_name: Option<Text>,
    error_code: Option<i64>,
    is_tool_error: bool,
    meta: MetaTrace,
    /// Where `params` is, when it is an object: a rewrite touches only these bytes.
    params: Option<Range<usize>>,
}

/// A string member, borrowed from the message unless it had escapes. (serde's `borrow` does not
/// reach through `Option<Cow<str>>`: that type always allocates.)
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visit(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<Str<'a>>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Str<'a>>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ParamsPeek<'a> {
    #[serde(borrow, default)]
    name: Option<Str<'a>>,
    #[serde(borrow, default, rename = "_meta")]
    meta: Option<MetaPeek<'a>>,
}

#[derive(Deserialize)]
struct MetaPeek<'a> {
    #[serde(borrow, default)]
    traceparent: Option<Str<'a>>,
    #[serde(borrow, default)]
    tracestate: Option<Str<'a>>,
    #[serde(borrow, default)]
    baggage: Option<Str<'a>>,
    #[serde(borrow, default, rename = "progressToken")]
    progress_token: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ErrorPeek {
    code: i64,
}

#[derive(Deserialize)]
struct ResultPeek {
    #[serde(default, rename = "isError")]
    is_error: Option<bool>,
}

fn is_object(raw: &RawValue) -> bool {
    raw.get().starts_with('{')
}

impl Fields {
    /// Peeks what the gateway reads inside `params` (an object at `params`, whose buffer starts
    /// at address `base`): the tool's name and the trace context in `_meta`.
    fn peek_params(&mut self, params: &str, base: usize) -> Result<(), PeekError> {
        let text = |s: Str<'_>| text_at(s, base);
        let peek: ParamsPeek<'_> = serde_json::from_str(params)
            .map_err(|_| PeekError::Invalid("\"params\" has a member of the wrong type"))?;
        self.tool_name = None;
        if matches!(self.method, McpMethod::ToolsCall | McpMethod::PromptsGet) {
            self.tool_name = peek.name.map(text);
        }
        self.meta = MetaTrace::default();
        if let Some(meta) = peek.meta {
            let progress_token = meta.progress_token.map(|t| span_at(t.get(), base));
            self.meta = MetaTrace {
                traceparent: meta.traceparent.map(text),
                tracestate: meta.tracestate.map(text),
                baggage: meta.baggage.map(text),
                progress_token,
                present: true,
            };
        }
        self.params = Some(span_at(params, base));
        Ok(())
    }

    /// Peeks the `params` object that `buf[at]` holds (a rewrite's new bytes); false when they
    /// do not peek.
    fn peek_params_at(&mut self, buf: &[u8], at: Range<usize>) -> bool {
        if let Some((name, meta)) = scan::peek_params(&buf[..at.end], at.start) {
            let named = matches!(self.method, McpMethod::ToolsCall | McpMethod::PromptsGet);
            self.tool_name = name.filter(|_| named).map(Text::Span);
            self.meta = meta;
            self.params = Some(at);
            return true;
        }
        std::str::from_utf8(&buf[at])
            .is_ok_and(|p| self.peek_params(p, buf.as_ptr() as usize).is_ok())
    }

    /// These fields for bytes in which what was at `old_end..` now starts at `new_end`: every
    /// span from there on moves, the others stay.
    fn moved(&self, old_end: usize, new_end: usize) -> Fields {
        let moved = |r: &Range<usize>| {
            if r.start >= old_end {
                r.start - old_end + new_end..r.end - old_end + new_end
            } else {
                r.clone()
            }
        };
        let moved_text = |t: &Option<Text>| match t {
            Some(Text::Span(r)) => Some(Text::Span(moved(r))),
            other => other.clone(),
        };
        Fields {
            raw: Bytes::new(),
            kind: self.kind,
            method: self.method,
            method_name: moved_text(&self.method_name),
            id: self.id.as_ref().map(moved),
            tool_name: moved_text(&self.tool_name),
            error_code: self.error_code,
            is_tool_error: self.is_tool_error,
            meta: MetaTrace {
                traceparent: moved_text(&self.meta.traceparent),
                tracestate: moved_text(&self.meta.tracestate),
                baggage: moved_text(&self.meta.baggage),
                progress_token: self.meta.progress_token.as_ref().map(moved),
                present: self.meta.present,
            },
            params: self.params.as_ref().map(moved),
        }
    }
}

/// Where `s`, a slice of the buffer starting at address `base`, lies in that buffer.
fn span_at(s: &str, base: usize) -> Range<usize> {
    let start = s.as_ptr() as usize - base;
    start..start + s.len()
}

/// A peeked string: its place in the buffer at `base`, or its decoded text when it had escapes.
fn text_at(Str(s): Str<'_>, base: usize) -> Text {
    match s {
        Cow::Borrowed(b) => Text::Span(span_at(b, base)),
        Cow::Owned(o) => Text::Decoded(o.into_boxed_str()),
    }
}

/// A request id's raw JSON, held apart from its message. Ids are short (a number, a UUID): up to
/// [`RawId::INLINE`] bytes are copied, where a slice of the message's bytes would take and later
/// give back a reference to them (two atomic operations, each a full barrier); a longer one is
/// such a slice.
#[derive(Clone)]
pub struct RawId(RawIdRepr);

#[derive(Clone)]
enum RawIdRepr {
    Inline { len: u8, bytes: [u8; RawId::INLINE] },
    Shared(Bytes),
}

impl RawId {
    /// The longest id kept as a copy: a quoted UUID and then some.
    pub const INLINE: usize = 46;

    fn of(raw: &Bytes, span: Range<usize>) -> RawId {
        let text = &raw[span.clone()];
        match u8::try_from(text.len()) {
            Ok(len) if text.len() <= RawId::INLINE => {
                let mut bytes = [0; RawId::INLINE];
                bytes[..text.len()].copy_from_slice(text);
                RawId(RawIdRepr::Inline { len, bytes })
            }
            _ => RawId(RawIdRepr::Shared(raw.slice(span))),
        }
    }
}

impl std::ops::Deref for RawId {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            RawIdRepr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            RawIdRepr::Shared(bytes) => bytes,
        }
    }
}

impl fmt::Debug for RawId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(self), f)
    }
}

impl Message {
    /// Peeks a message. The bytes are kept as they are.
    pub fn parse(raw: Bytes) -> Result<Message, PeekError> {
        let first = raw.iter().find(|b| !b.is_ascii_whitespace());
        match first {
            Some(b'{') => {}
            Some(b'[') => return Err(PeekError::Invalid("batches are not supported")),
            Some(_) | None => {
                // Let serde say what is wrong with non-JSON; valid JSON that is not an object is invalid.
                return Err(
                    match serde_json::from_slice::<serde::de::IgnoredAny>(&raw) {
                        Ok(_) => PeekError::Invalid("a message must be a JSON object"),
                        Err(e) => PeekError::Parse(e.to_string()),
                    },
                );
            }
        }
        if let Some(mut fields) = scan::peek(&raw) {
            fields.raw = raw;
            return Ok(Message(Box::new(fields)));
        }
        Self::parse_with_serde(raw).map(|fields| Message(Box::new(fields)))
    }

    /// The peek by serde: for what the one-pass scan leaves (escapes, duplicates, error
    /// responses), and for the errors' messages.
    fn parse_with_serde(raw: Bytes) -> Result<Fields, PeekError> {
        let base = raw.as_ptr() as usize;
        let text = |s: Str<'_>| text_at(s, base);
        let env: Envelope<'_> = serde_json::from_slice(&raw).map_err(|e| {
            if e.is_data() {
                PeekError::Invalid("a member has the wrong type")
            } else {
                PeekError::Parse(e.to_string())
            }
        })?;
        if env.jsonrpc.as_ref().map(|s| &*s.0) != Some("2.0") {
            return Err(PeekError::Invalid("\"jsonrpc\" must be \"2.0\""));
        }
        let id = match env.id {
            Some(id) => {
                let s = id.get();
                if !(s.starts_with('"') || s.starts_with('-') || s.as_bytes()[0].is_ascii_digit()) {
                    return Err(PeekError::Invalid("\"id\" must be a string or a number"));
                }
                Some(span_at(s, base))
            }
            None => None,
        };
        let (kind, method, method_name) = match (env.method, env.result, env.error) {
            (Some(name), None, None) => {
                let kind = if id.is_some() {
                    Kind::Request
                } else {
                    Kind::Notification
                };
                (kind, McpMethod::from_name(&name.0), Some(text(name)))
            }
            (None, Some(_), None) if id.is_some() => (Kind::Response, McpMethod::Other, None),
            (None, None, Some(_)) => (Kind::Error, McpMethod::Other, None),
            _ => {
                return Err(PeekError::Invalid(
                    "a message has exactly one of method, result, error",
                ));
            }
        };
        let mut msg = Fields {
            raw: Bytes::new(),
            kind,
            method,
            method_name,
            id,
            tool_name: None,
            error_code: None,
            is_tool_error: false,
            meta: MetaTrace::default(),
            params: None,
        };
        if let Some(params) = env.params {
            if !(is_object(params) || params.get().starts_with('[')) {
                return Err(PeekError::Invalid(
                    "\"params\" must be an object or an array",
                ));
            }
            if is_object(params) {
                msg.peek_params(params.get(), base)?;
            }
        }
        if let Some(error) = env.error {
            let peek: ErrorPeek = serde_json::from_str(error.get()).map_err(|_| {
                PeekError::Invalid("\"error\" must be an object with an integer code")
            })?;
            msg.error_code = Some(peek.code);
        }
        if let Some(result) = env.result.filter(|r| is_object(r)) {
            let peek: ResultPeek = serde_json::from_str(result.get())
                .map_err(|_| PeekError::Invalid("\"result.isError\" must be a boolean"))?;
            msg.is_tool_error = peek.is_error == Some(true);
        }
        msg.raw = raw;
        Ok(msg)
    }

    fn text<'a>(&'a self, t: &'a Text) -> &'a str {
        match t {
            // The span was cut from valid UTF-8 at token boundaries.
            Text::Span(r) => std::str::from_utf8(&self.0.raw[r.clone()]).unwrap_or_default(),
            Text::Decoded(s) => s,
        }
    }

    /// The bytes exactly as they came.
    pub fn raw(&self) -> &Bytes {
        &self.0.raw
    }

    /// A copy that owns its bytes, for a message kept long: the original may be a slice of a
    /// connection's read buffer, which it would keep alive whole.
    pub fn detached(&self) -> Message {
        let mut fields = self.0.clone();
        fields.raw = Bytes::copy_from_slice(&self.0.raw);
        Message(fields)
    }

    /// Gives the bytes back.
    pub fn into_raw(self) -> Bytes {
        self.0.raw
    }

    /// The message's shape.
    pub fn kind(&self) -> Kind {
        self.0.kind
    }

    /// The method, bounded to the MCP set; [`McpMethod::Other`] for responses.
    pub fn method(&self) -> McpMethod {
        self.0.method
    }

    /// The method's name as sent, for requests and notifications.
    pub fn method_name(&self) -> Option<&str> {
        self.0.method_name.as_ref().map(|t| self.text(t))
    }

    /// The id's raw JSON (`7`, `"abc"`), absent for notifications and null ids.
    pub fn id_raw(&self) -> Option<&str> {
        let r = self.0.id.clone()?;
        std::str::from_utf8(&self.0.raw[r]).ok()
    }

    /// The id when it is a number that fits a `u64` (as the gateway's own ids are), read from
    /// the bytes without making text of them.
    pub fn id_number(&self) -> Option<u64> {
        let digits = &self.0.raw[self.0.id.clone()?];
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        digits.iter().try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
    }

    /// The id's raw JSON, kept apart from the message ([`RawId`]).
    pub fn id_bytes(&self) -> Option<RawId> {
        Some(RawId::of(&self.0.raw, self.0.id.clone()?))
    }

    /// `params.name` of `tools/call` and `prompts/get`.
    pub fn tool_name(&self) -> Option<&str> {
        self.0.tool_name.as_ref().map(|t| self.text(t))
    }

    /// `error.code` of an error response.
    pub fn error_code(&self) -> Option<i64> {
        self.0.error_code
    }

    /// Whether a response is a tool result with `isError: true`.
    pub fn is_tool_error(&self) -> bool {
        self.0.is_tool_error
    }

    /// `params._meta.traceparent`.
    pub fn meta_traceparent(&self) -> Option<&str> {
        self.0.meta.traceparent.as_ref().map(|t| self.text(t))
    }

    /// `params._meta.traceparent` as the bytes of its text, for a writer that needs no `str`.
    pub fn meta_traceparent_bytes(&self) -> Option<&[u8]> {
        self.0.meta.traceparent.as_ref().map(|t| match t {
            Text::Span(r) => &self.0.raw[r.clone()],
            Text::Decoded(s) => s.as_bytes(),
        })
    }

    /// `params._meta.tracestate`.
    pub fn meta_tracestate(&self) -> Option<&str> {
        self.0.meta.tracestate.as_ref().map(|t| self.text(t))
    }

    /// `params.{key}` as raw JSON, when `params` is an object that has it.
    pub fn param_raw(&self, key: &str) -> Option<&str> {
        #[derive(Deserialize)]
        struct Params<'a> {
            #[serde(borrow)]
            params: std::collections::HashMap<&'a str, &'a RawValue>,
        }
        let peek: Params<'_> = serde_json::from_slice(&self.0.raw).ok()?;
        peek.params.get(key).map(|v| v.get())
    }

    /// `params._meta.progressToken` as raw JSON (`"t1"` or `5`).
    pub fn meta_progress_token(&self) -> Option<&str> {
        let r = self.0.meta.progress_token.clone()?;
        std::str::from_utf8(&self.0.raw[r]).ok()
    }

    /// `params._meta.baggage`.
    pub fn meta_baggage(&self) -> Option<&str> {
        self.0.meta.baggage.as_ref().map(|t| self.text(t))
    }

    /// The class of this message when it is a response that failed, `None` when it succeeded or
    /// is not a response.
    pub fn failure_class(&self, component: Component) -> Option<ErrorClass> {
        match self.0.kind {
            Kind::Error => Some(ErrorClass::from_jsonrpc_code(
                self.0.error_code.unwrap_or(i64::from(code::INTERNAL_ERROR)),
                component,
            )),
            Kind::Response if self.0.is_tool_error => Some(ErrorClass::tool_error()),
            _ => None,
        }
    }

    /// A copy with the id replaced by `raw_id` (raw JSON: `7` or `"abc"`), every other byte kept.
    /// Messages without an id are returned unchanged.
    pub fn with_id(&self, raw_id: &str) -> Message {
        if !is_id_token(raw_id) {
            return self.clone();
        }
        self.with_id_token(raw_id.as_bytes())
    }

    /// A copy with the id replaced by the number `id` (the gateway's own ids), every other byte
    /// kept; as [`with_id`](Self::with_id) without parsing the token to check it.
    pub fn with_id_number(&self, id: u64) -> Message {
        self.with_id_token(itoa::Buffer::new().format(id).as_bytes())
    }

    /// A copy with the id replaced by `other`'s (checked when `other` was parsed), every other
    /// byte kept; unchanged when either has no id.
    pub fn with_id_of(&self, other: &Message) -> Message {
        match &other.0.id {
            Some(range) => self.with_id_token(&other.0.raw[range.clone()]),
            None => self.clone(),
        }
    }

    /// The id replaced by `token`, which must be a JSON number or string.
    fn with_id_token(&self, token: &[u8]) -> Message {
        let Some(range) = self.0.id.clone() else {
            return self.clone();
        };
        // Exactly as long as the result: `Bytes` then takes the buffer as it is, without a
        // shared header of its own (one allocation fewer).
        let mut out = Vec::with_capacity(self.0.raw.len() - range.len() + token.len());
        out.extend_from_slice(&self.0.raw[..range.start]);
        out.extend_from_slice(token);
        out.extend_from_slice(&self.0.raw[range.end..]);
        // Only the id token changed: what was peeked after it moves by the difference in length,
        // nothing needs parsing again.
        let new_end = range.start + token.len();
        let mut fields = self.0.moved(range.end, new_end);
        fields.id = Some(range.start..new_end);
        fields.raw = Bytes::from(out);
        Message(Box::new(fields))
    }

    /// A copy with `params.{key}` set to the raw JSON `raw_value`, every other byte kept.
    pub fn with_param(&self, key: &str, raw_value: &str) -> Message {
        self.with_params(&[(key, raw_value)], &[])
    }

    /// A copy with `params._meta` members set (added or replaced), every other byte kept.
    /// Requests and notifications only; others are returned unchanged.
    pub fn with_meta(&self, members: &[(&str, &str)]) -> Message {
        if !matches!(self.0.kind, Kind::Request | Kind::Notification) {
            return self.clone();
        }
        self.with_params(&[], members)
    }

    /// A copy with `params` members set to raw JSON values and `params._meta` members set to
    /// strings, in one rewrite, every other byte kept. Unchanged when there is nothing to set.
    ///
    /// ```
    /// use mcp_gateway_layers::jsonrpc::Message;
    ///
    /// let msg = Message::parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a__echo","arguments":{}}}"#.to_vec().into()).unwrap();
    /// let out = msg.with_params(&[("name", r#""echo""#)], &[("traceparent", "00-1-2-01")]);
    /// assert_eq!(out.tool_name(), Some("echo"));
    /// assert_eq!(out.meta_traceparent(), Some("00-1-2-01"));
    /// assert_eq!(&out.raw()[..], br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{},"_meta":{"traceparent":"00-1-2-01"}}}"#);
    /// ```
    pub fn with_params(&self, params: &[(&str, &str)], meta: &[(&str, &str)]) -> Message {
        self.rewritten(params, meta, None)
    }

    /// [`with_params`](Self::with_params) and [`with_id_number`](Self::with_id_number) in one
    /// rewrite: the copy a backend is sent.
    ///
    /// ```
    /// use mcp_gateway_layers::jsonrpc::Message;
    ///
    /// let msg = Message::parse(br#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"a__echo"}}"#.to_vec().into()).unwrap();
    /// let out = msg.with_params_and_id(&[("name", r#""echo""#)], &[], 12);
    /// assert_eq!(out.id_raw(), Some("12"));
    /// assert_eq!(out.tool_name(), Some("echo"));
    /// assert_eq!(&out.raw()[..], br#"{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"echo"}}"#);
    /// ```
    pub fn with_params_and_id(
        &self,
        params: &[(&str, &str)],
        meta: &[(&str, &str)],
        id: u64,
    ) -> Message {
        self.rewritten(
            params,
            meta,
            Some(itoa::Buffer::new().format(id).as_bytes()),
        )
    }

    /// `params` and `_meta` members set and, with `id`, the id replaced, in one buffer when the
    /// message has the common shape.
    fn rewritten(
        &self,
        params: &[(&str, &str)],
        meta: &[(&str, &str)],
        id: Option<&[u8]>,
    ) -> Message {
        if params.is_empty() && meta.is_empty() {
            return match id {
                Some(token) => self.with_id_token(token),
                None => self.clone(),
            };
        }
        let extra: usize = params
            .iter()
            .chain(meta)
            .map(|(k, v)| k.len() + v.len() + 8)
            .sum::<usize>()
            + id.map_or(0, <[u8]>::len);
        let mut out = Vec::with_capacity(self.0.raw.len() + extra + 16);
        if let Some(spliced) = self.spliced_params(params, meta, &mut out, id) {
            return spliced;
        }
        let Ok(text) = std::str::from_utf8(&self.0.raw) else {
            return self.clone();
        };
        let write_params =
            |out: &mut Vec<u8>, old: Option<&str>| write_params(out, old, params, meta);
        if let Some(range) = self.0.params.clone() {
            // `params` is an object: only its bytes are rewritten and peeked again; the rest is
            // copied and what was peeked after it (rare: it usually comes last) moves.
            out.extend_from_slice(&text.as_bytes()[..range.start]);
            write_params(&mut out, text.get(range.clone()));
            let new_end = out.len();
            out.extend_from_slice(&text.as_bytes()[range.end..]);
            let mut fields = self.0.moved(range.end, new_end);
            if fields.peek_params_at(&out, range.start..new_end) {
                if let Some(token) = id {
                    fields = with_id_spliced(&mut out, fields, token);
                }
                fields.raw = Bytes::from(out);
                return Message(Box::new(fields));
            }
        } else {
            write_object(
                &mut out,
                Some(text),
                &[("params", NewValue::Object(&write_params))],
            );
        }
        // The rewrite keeps the message an object with valid members, so it peeks.
        let rewritten = Message::parse(Bytes::from(out)).unwrap_or_else(|_| self.clone());
        match id {
            Some(token) => rewritten.with_id_token(token),
            None => rewritten,
        }
    }

    /// The common rewrite of a call without `_meta` (a new tool name, `_meta` added at the end
    /// of `params`) by splicing at the peeked positions, without taking `params` apart; `None`
    /// when the message has another shape.
    fn spliced_params(
        &self,
        params: &[(&str, &str)],
        meta: &[(&str, &str)],
        out: &mut Vec<u8>,
        id: Option<&[u8]>,
    ) -> Option<Message> {
        let range = self.0.params.clone()?;
        if self.0.meta.present && !meta.is_empty() {
            return None;
        }
        // Only `name` is peeked with its place; a name with escapes was decoded, not placed.
        let name = match params {
            [] => None,
            [("name", value)] => match &self.0.tool_name {
                Some(Text::Span(at)) => Some((at.start - 1..at.end + 1, *value)),
                _ => return None,
            },
            _ => return None,
        };
        let raw = &self.0.raw[..];
        let close = range.end - 1;
        // What is peeked inside the new `params` is placed as it is written, without reading
        // `params` again, when nothing else in it was peeked and every new string is plain.
        let mut placed = (!self.0.meta.present).then(|| MetaTrace {
            present: !meta.is_empty(),
            ..MetaTrace::default()
        });
        let mut tool_name = self.0.tool_name.clone();
        match &name {
            Some((at, value)) => {
                out.extend_from_slice(&raw[..at.start]);
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(&raw[at.end..close]);
                tool_name = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .filter(|inner| needs_no_escape(inner.as_bytes()))
                    .map(|inner| Text::Span(at.start + 1..at.start + 1 + inner.len()));
                if tool_name.is_none() {
                    placed = None;
                }
            }
            None => out.extend_from_slice(&raw[..close]),
        }
        if !meta.is_empty() {
            if !raw[range.start + 1..close].trim_ascii().is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(b"\"_meta\":{");
            for (i, (key, value)) in meta.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_json_string(out, key);
                out.push(b':');
                let start = out.len();
                push_json_string(out, value);
                let (quoted, inner) = (start..out.len(), start + 1..out.len() - 1);
                let repeated = meta[..i].iter().any(|(k, _)| k == key);
                if let Some(placed) = placed
                    .as_mut()
                    .filter(|_| needs_no_escape(value.as_bytes()) && !repeated)
                {
                    match *key {
                        "traceparent" => placed.traceparent = Some(Text::Span(inner)),
                        "tracestate" => placed.tracestate = Some(Text::Span(inner)),
                        "baggage" => placed.baggage = Some(Text::Span(inner)),
                        "progressToken" => placed.progress_token = Some(quoted),
                        _ => {}
                    }
                } else {
                    placed = None;
                }
            }
            out.push(b'}');
        }
        out.push(b'}');
        let new_end = out.len();
        out.extend_from_slice(&raw[range.end..]);
        let mut fields = self.0.moved(range.end, new_end);
        let peeked = match placed {
            Some(placed) => {
                fields.tool_name = tool_name;
                fields.meta = placed;
                fields.params = Some(range.start..new_end);
                true
            }
            None => fields.peek_params_at(out, range.start..new_end),
        };
        if !peeked {
            out.clear();
            return None;
        }
        if let Some(token) = id {
            fields = with_id_spliced(out, fields, token);
        }
        fields.raw = Bytes::from(std::mem::take(out));
        Some(Message(Box::new(fields)))
    }
}

/// The id of the message in `out` (laid out as `fields` says) replaced by `token` in place: what
/// follows it moves, and so does what was peeked there.
fn with_id_spliced(out: &mut Vec<u8>, fields: Fields, token: &[u8]) -> Fields {
    let Some(range) = fields.id.clone() else {
        return fields;
    };
    out.splice(range.clone(), token.iter().copied());
    let new_end = range.start + token.len();
    let mut moved = fields.moved(range.end, new_end);
    moved.id = Some(range.start..new_end);
    moved
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("kind", &self.0.kind)
            .field("method", &self.method_name())
            .field("id", &self.id_raw())
            .field("bytes", &self.0.raw.len())
            .finish()
    }
}

/// The members of a JSON object in order, each as its raw key and raw value.
fn object_members(object: &str) -> Option<Vec<(&str, &RawValue)>> {
    struct Members<'a>(Vec<(&'a str, &'a RawValue)>);
    impl<'de> Deserialize<'de> for Members<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Members<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Self::Value, A::Error> {
                    let mut members = Vec::new();
                    while let Some(key) = map.next_key::<&'de str>()? {
                        members.push((key, map.next_value::<&'de RawValue>()?));
                    }
                    Ok(Members(members))
                }
            }
            d.deserialize_map(Visit)
        }
    }
    serde_json::from_str::<Members<'_>>(object)
        .ok()
        .map(|m| m.0)
}

/// Appends `s` to `out` as a JSON string.
pub fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // Most strings (ids, names, methods) need no escaping: one scan, one copy.
    if needs_no_escape(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // serde_json escapes exactly as JSON requires; writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Whether these bytes are valid inside a JSON string as they are (no escapes needed): then a
/// peeked string's place is its bytes, and a writer copies them.
pub fn needs_no_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    // Eight bytes a step: whether any is a control byte, a quote or a backslash.
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let w = u64::from_le_bytes(eight);
        if w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0
            || has_zero(w ^ (ONES * u64::from(b'"')))
            || has_zero(w ^ (ONES * u64::from(b'\\')))
        {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// The new value of an object member.
enum NewValue<'a> {
    /// A JSON string.
    String(&'a str),
    /// Raw JSON, written as it is.
    Raw(&'a str),
    /// An object written from the member's old value (`None` when the member is new).
    Object(&'a dyn Fn(&mut Vec<u8>, Option<&str>)),
}

/// Writes `params` (from its old text, if any) with `params` members set to raw JSON and
/// `_meta` members to strings.
fn write_params(
    out: &mut Vec<u8>,
    old: Option<&str>,
    params: &[(&str, &str)],
    meta: &[(&str, &str)],
) {
    let meta_set: Vec<(&str, NewValue<'_>)> = meta
        .iter()
        .map(|(k, v)| (*k, NewValue::String(v)))
        .collect();
    let write_meta = |out: &mut Vec<u8>, old: Option<&str>| write_object(out, old, &meta_set);
    let mut params_set: Vec<(&str, NewValue<'_>)> =
        params.iter().map(|(k, v)| (*k, NewValue::Raw(v))).collect();
    if !meta.is_empty() {
        params_set.push(("_meta", NewValue::Object(&write_meta)));
    }
    write_object(out, old, &params_set);
}

/// Writes `object` with the members in `set` written anew, every other member's bytes kept.
fn write_object(out: &mut Vec<u8>, object: Option<&str>, set: &[(&str, NewValue<'_>)]) {
    let write = |out: &mut Vec<u8>, value: &NewValue<'_>, old: Option<&str>| match value {
        NewValue::String(s) => push_json_string(out, s),
        NewValue::Raw(r) => out.extend_from_slice(r.as_bytes()),
        NewValue::Object(f) => f(out, old),
    };
    let mut done = vec![false; set.len()];
    out.push(b'{');
    let empty = out.len();
    let members = object
        .filter(|o| o.starts_with('{'))
        .and_then(object_members);
    for (k, v) in members.unwrap_or_default() {
        if out.len() > empty {
            out.push(b',');
        }
        // A key borrowed from the input had no escapes: its bytes are already valid JSON text.
        out.push(b'"');
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"\":");
        match set.iter().position(|(key, _)| *key == k) {
            Some(i) => {
                done[i] = true;
                write(out, &set[i].1, Some(v.get()));
            }
            None => out.extend_from_slice(v.get().as_bytes()),
        }
    }
    for ((key, value), done) in set.iter().zip(done) {
        if !done {
            if out.len() > empty {
                out.push(b',');
            }
            push_json_string(out, key);
            out.push(b':');
            write(out, value, None);
        }
    }
    out.push(b'}');
}

/// Sets members of a raw JSON object (values given as raw JSON), keeping every other member's
/// bytes and order; `None` if `object` is not a JSON object.
///
/// ```
/// let out = mcp_gateway_layers::jsonrpc::set_members(r#"{"name":"echo","x":[1, 2]}"#, &[("name", r#""demo__echo""#)]);
/// assert_eq!(out.as_deref(), Some(r#"{"name":"demo__echo","x":[1, 2]}"#));
/// ```
pub fn set_members(object: &str, members: &[(&str, &str)]) -> Option<String> {
    object_members(object)?;
    let set: Vec<(&str, NewValue<'_>)> = members
        .iter()
        .map(|(k, v)| (*k, NewValue::Raw(v)))
        .collect();
    let mut out = Vec::with_capacity(object.len() + 32);
    write_object(&mut out, Some(object), &set);
    String::from_utf8(out).ok()
}

/// Whether `raw` is one JSON string or number token, as an id may be.
fn is_id_token(raw: &str) -> bool {
    let first = raw.as_bytes().first().copied();
    matches!(first, Some(b'"' | b'-' | b'0'..=b'9'))
        && serde_json::from_str::<&RawValue>(raw).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<Message, PeekError> {
        Message::parse(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn an_id_is_its_raw_json_whether_copied_or_shared() {
        let longest = format!("\"{}\"", "a".repeat(RawId::INLINE - 2));
        let longer = format!("\"{}\"", "b".repeat(RawId::INLINE - 1));
        for id in [
            "7",
            "-1.5e3",
            "\"x\\\"y\"",
            longest.as_str(),
            longer.as_str(),
        ] {
            let msg = parse(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#)).unwrap();
            let raw = msg.id_bytes().unwrap();
            assert_eq!(&raw[..], id.as_bytes());
            let shared = matches!(raw.0, RawIdRepr::Shared(_));
            assert_eq!(shared, id.len() > RawId::INLINE, "{id}");
            assert_eq!(format!("{raw:?}"), format!("{id:?}"));
        }
        assert!(
            parse(r#"{"jsonrpc":"2.0","method":"ping"}"#)
                .unwrap()
                .id_bytes()
                .is_none()
        );
    }

    #[test]
    fn plain_strings_are_borrowed_and_escaped_ones_decoded() {
        let plain: Str<'_> = serde_json::from_str(r#""tools/call""#).unwrap();
        assert!(matches!(plain.0, Cow::Borrowed("tools/call")));
        let escaped: Str<'_> = serde_json::from_str(r#""a\"b""#).unwrap();
        assert!(matches!(escaped.0, Cow::Owned(ref s) if s == "a\"b"));
    }

    #[test]
    fn a_new_id_moves_what_was_peeked_after_it() {
        let messages = [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a\u0062c","_meta":{"traceparent":"00-x","tracestate":"k=v","baggage":"b=1","progressToken":"p"}}}"#,
            r#"{"method":"tools/call","params":{"name":"echo","_meta":{"progressToken":5}},"jsonrpc":"2.0","id":"long-client-id"}"#,
            r#"{"jsonrpc":"2.0","result":{"isError":true},"id":12345}"#,
            r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32601,"message":"no"}}"#,
        ];
        for text in messages {
            let msg = parse(text).unwrap();
            for id in ["9", r#""gw-17""#, "123456789012", "-1"] {
                let moved = msg.with_id(id);
                assert_eq!(
                    moved,
                    Message::parse(moved.raw().clone()).unwrap(),
                    "{text} with id {id}"
                );
                assert_eq!(moved.id_raw(), Some(id));
            }
            // Not an id token: nothing changes.
            assert_eq!(msg.with_id("{}"), msg);
            for id in [0, 17, u64::MAX] {
                let moved = msg.with_id_number(id);
                assert_eq!(moved, msg.with_id(&id.to_string()), "{text} with id {id}");
                assert_eq!(moved, Message::parse(moved.raw().clone()).unwrap());
            }
            for other in [
                r#"{"jsonrpc":"2.0","id":"c-1","method":"ping"}"#,
                r#"{"jsonrpc":"2.0","id":-4,"result":{}}"#,
            ] {
                let other = parse(other).unwrap();
                let moved = msg.with_id_of(&other);
                assert_eq!(moved, msg.with_id(other.id_raw().unwrap()), "{text}");
                assert_eq!(moved, Message::parse(moved.raw().clone()).unwrap());
            }
            let notification =
                parse(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
            assert_eq!(msg.with_id_of(&notification), msg);
        }
    }

    #[test]
    fn peeks_each_kind() {
        let req = parse(r#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#).unwrap();
        assert_eq!(
            (req.kind(), req.method(), req.id_raw()),
            (Kind::Request, McpMethod::ToolsList, Some("\"a\""))
        );
        let note = parse(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!((note.kind(), note.id_raw()), (Kind::Notification, None));
        let resp =
            parse(r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#).unwrap();
        assert_eq!(resp.kind(), Kind::Response);
        assert!(resp.is_tool_error());
        assert_eq!(
            resp.failure_class(Component::Backend).unwrap().error_type,
            ErrorType::ToolError
        );
        let err =
            parse(r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}"#).unwrap();
        assert_eq!(err.error_code(), Some(-32601));
        assert_eq!(
            err.failure_class(Component::Backend).unwrap().error_type,
            ErrorType::NotFound
        );
        let custom = parse(r#"{"jsonrpc":"2.0","id":1,"method":"x/y"}"#).unwrap();
        assert_eq!(
            (custom.method(), custom.method_name()),
            (McpMethod::Other, Some("x/y"))
        );
    }

    #[test]
    fn peeks_tool_and_meta_with_escapes() {
        let m = parse(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a\u0062c","_meta":{"traceparent":"00-x","progressToken":5}}}"#).unwrap();
        assert_eq!(m.tool_name(), Some("abc"));
        assert_eq!(m.meta_traceparent(), Some("00-x"));
        assert_eq!(m.meta_progress_token(), Some("5"));
        assert_eq!(m.param_raw("name"), Some(r#""a\u0062c""#));
        assert_eq!(m.param_raw("missing"), None);
        assert_eq!(m.meta_tracestate(), None);
    }

    #[test]
    fn rejects_what_is_not_jsonrpc() {
        let cases = [
            ("", "parse"),
            ("{", "parse"),
            ("nonsense", "parse"),
            ("42", "validation"),
            ("[]", "validation"),
            (r#"{"id":1,"method":"ping"}"#, "validation"),
            (r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, "validation"),
            (r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#, "validation"),
            (r#"{"jsonrpc":"2.0","id":1}"#, "validation"),
            (r#"{"jsonrpc":"2.0","id":1,"method":5}"#, "validation"),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"a","result":{}}"#,
                "validation",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"a","params":"x"}"#,
                "validation",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"error":{"message":"no code"}}"#,
                "validation",
            ),
        ];
        for (input, expected) in cases {
            let err = parse(input).unwrap_err();
            assert_eq!(
                err.class().error_type.as_str(),
                expected,
                "{input:?}: {err}"
            );
        }
    }

    #[test]
    fn with_id_and_with_param_keep_every_other_byte() {
        let m = parse(r#"{"jsonrpc":"2.0", "id" : "client-1","method":"tools/call","params":{"name":"demo__echo","arguments":{"b":1,"a":2}}}"#).unwrap();
        let with_id = m.with_id("17");
        assert_eq!(
            std::str::from_utf8(with_id.raw()).unwrap(),
            r#"{"jsonrpc":"2.0", "id" : 17,"method":"tools/call","params":{"name":"demo__echo","arguments":{"b":1,"a":2}}}"#
        );
        // Only `params` is re-punctuated; its members' values and everything outside keep their bytes.
        let out = with_id.with_param("name", r#""echo""#);
        assert_eq!(
            std::str::from_utf8(out.raw()).unwrap(),
            r#"{"jsonrpc":"2.0", "id" : 17,"method":"tools/call","params":{"name":"echo","arguments":{"b":1,"a":2}}}"#
        );
        assert_eq!((out.id_raw(), out.tool_name()), (Some("17"), Some("echo")));
    }

    #[test]
    fn a_rewrite_peeks_what_a_full_parse_of_its_bytes_peeks() {
        let inputs = [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a__t","arguments":{}}}"#,
            r#"{"params":{"name":"a__\u0074","_meta":{"progressToken":7,"tracestate":"s"}},"id":"x","method":"tools/call","jsonrpc":"2.0"}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"_meta":{"traceparent":"old"}},"x":[1]}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"x","params":[1,2]}"#,
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{ "name" : "a__t" , "arguments":{"name":"x"} },"after":{"id":9}}"#,
            r#"{"jsonrpc":"2.0","id":6,"method":"prompts/get","params":{"name":"p"}}"#,
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{ }}"#,
        ];
        for input in inputs {
            let m = parse(input).unwrap();
            let every_meta = [
                ("progressToken", "p"),
                ("tracestate", "k=v"),
                ("baggage", "b"),
                ("x", "y"),
                ("traceparent", "00-new"),
            ];
            for meta in [
                &[("traceparent", "00-new")][..],
                &every_meta,
                &[("traceparent", "a\"b")],
            ] {
                let out = m.with_params(&[("name", r#""t""#)], meta);
                assert_eq!(
                    out,
                    parse(std::str::from_utf8(out.raw()).unwrap()).unwrap(),
                    "{input}"
                );
                assert_eq!(out.id_raw(), m.id_raw(), "{input}");
                // With the id too, in one rewrite: what the two rewrites make, bytes and peek.
                for (params, id) in [(&[("name", r#""t""#)][..], 123_456_789_012), (&[], 7)] {
                    let both = m.with_params_and_id(params, meta, id);
                    assert_eq!(
                        both,
                        m.with_params(params, meta).with_id_number(id),
                        "{input}"
                    );
                    assert_eq!(
                        both,
                        parse(std::str::from_utf8(both.raw()).unwrap()).unwrap(),
                        "{input}"
                    );
                }
            }
            assert_eq!(m.with_params_and_id(&[], &[], 9), m.with_id_number(9));
        }
    }

    #[test]
    fn a_spliced_rewrite_writes_what_the_member_rewrite_writes() {
        let cases = [
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a__t","arguments":{"name":"n"}},"z":1}"#,
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"name":"n"},"_meta":{"traceparent":"00-new"}},"z":1}"#,
            ),
            (
                r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}"#,
                r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"_meta":{"traceparent":"00-new"}}}"#,
            ),
        ];
        for (input, expected) in cases {
            let m = parse(input).unwrap();
            let name: &[(&str, &str)] = if m.tool_name().is_some() {
                &[("name", r#""t""#)]
            } else {
                &[]
            };
            let mut out = Vec::new();
            let spliced = m
                .spliced_params(name, &[("traceparent", "00-new")], &mut out, None)
                .expect("a call without _meta is spliced");
            assert_eq!(std::str::from_utf8(spliced.raw()).unwrap(), expected);
            let mut general = Vec::new();
            write_params(
                &mut general,
                Some(&input[m.0.params.clone().unwrap()]),
                name,
                &[("traceparent", "00-new")],
            );
            assert!(expected.contains(std::str::from_utf8(&general).unwrap()));
        }
        // A call that already has _meta, or a name with escapes, takes the member rewrite.
        for input in [
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"t","_meta":{}}}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"\u0074"}}"#,
        ] {
            let m = parse(input).unwrap();
            let spliced = m.spliced_params(
                &[("name", r#""t""#)],
                &[("traceparent", "x")],
                &mut Vec::new(),
                None,
            );
            assert!(spliced.is_none(), "{input}");
        }
    }

    #[test]
    fn a_numeric_id_is_read_from_its_bytes_as_text_would_parse() {
        for id in [
            "0",
            "12",
            "-1",
            "1.5",
            "1e3",
            r#""12""#,
            "18446744073709551615",
            "18446744073709551616",
        ] {
            let m = parse(&format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#)).unwrap();
            assert_eq!(m.id_number(), id.parse::<u64>().ok(), "{id}");
        }
        let m = parse(
            r#"{"jsonrpc":"2.0","method":"x","params":{"_meta":{"traceparent":"00-\u0061b"}}}"#,
        )
        .unwrap();
        assert_eq!(
            m.meta_traceparent_bytes(),
            m.meta_traceparent().map(str::as_bytes)
        );
        assert_eq!(m.meta_traceparent(), Some("00-ab"));
    }

    #[test]
    fn the_word_scan_finds_every_byte_that_needs_escaping_at_every_place() {
        for byte in 0..=255u8 {
            for place in 0..17 {
                let mut bytes = vec![b'a'; 17];
                bytes[place] = byte;
                let naive = bytes.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\');
                assert_eq!(needs_no_escape(&bytes), naive, "{byte:#x} at {place}");
            }
        }
    }

    #[test]
    fn with_meta_keeps_every_other_byte() {
        let m = parse(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"z":1,"a":[1, 2]},"_meta":{"progressToken":"p","traceparent":"old"}},"x-unknown":true}"#).unwrap();
        let out = m.with_meta(&[("traceparent", "00-new"), ("tracestate", "k=v")]);
        assert_eq!(
            std::str::from_utf8(out.raw()).unwrap(),
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"z":1,"a":[1, 2]},"_meta":{"progressToken":"p","traceparent":"00-new","tracestate":"k=v"}},"x-unknown":true}"#
        );
        let bare = parse(r#"{"jsonrpc":"2.0","method":"ping","id":2}"#)
            .unwrap()
            .with_meta(&[("traceparent", "t")]);
        assert_eq!(
            std::str::from_utf8(bare.raw()).unwrap(),
            r#"{"jsonrpc":"2.0","method":"ping","id":2,"params":{"_meta":{"traceparent":"t"}}}"#
        );
        assert_eq!(bare.meta_traceparent(), Some("t"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Message::parse(Bytes::from(bytes));
        }

        #[test]
        fn mutated_messages_never_panic(cut in 0usize..80, junk in "[{}\\[\\]\",:a-z0-9\\\\ ]{0,8}") {
            let base = r#"{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"e","_meta":{"traceparent":"t"}}}"#;
            let cut = cut.min(base.len());
            let input = format!("{}{}{}", &base[..cut], junk, &base[cut..]);
            if let Ok(m) = Message::parse(Bytes::from(input)) {
                let _ = (m.tool_name(), m.meta_traceparent(), m.id_raw(), m.with_meta(&[("traceparent", "x")]));
            }
        }

        #[test]
        fn ids_and_names_round_trip(id in any::<i64>(), name in "\\PC{0,20}") {
            let input = serde_json::json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":name}}).to_string();
            let m = Message::parse(Bytes::from(input)).unwrap();
            let expected = id.to_string();
            prop_assert_eq!(m.id_raw(), Some(expected.as_str()));
            prop_assert_eq!(m.tool_name(), Some(name.as_str()));
        }
    }
}
