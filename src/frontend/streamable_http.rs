//! MCP Streamable HTTP (2025-03-26, 2025-06-18, 2025-11-25): POST answered as JSON or as an SSE
//! stream, GET stream for the server's own messages with `Last-Event-ID` resumption from a
//! bounded replay buffer, DELETE to end a session, `Mcp-Session-Id` issued at `initialize`.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use mcp_gateway_layers::classify::ErrorType;
use mcp_gateway_layers::hash::OwnKeys;
use mcp_gateway_layers::headers::{ClientHeaders, visible_ascii};
use mcp_gateway_layers::jsonrpc::{Kind, McpMethod};
use tokio::sync::{Notify, mpsc};

use super::body::{ChannelBody, ResponseBody, as_event, as_is, full, sse_event, sse_response};
use super::{ClientHead, ClientRequest, Frontend, client_error, context};
use crate::lock;
use crate::mcp::{ClientTransport, Outbox, SUPPORTED_PROTOCOL_VERSIONS, Session};

// Named once: a lookup by a string parses the name every time.
pub(super) const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
pub(super) const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// The server's own messages for one session, numbered, the last few kept for resumption.
struct EventLog {
    inner: Mutex<LogInner>,
    changed: Notify,
    capacity: usize,
}

struct LogInner {
    events: VecDeque<(u64, Bytes)>,
    next: u64,
    /// Bumped when a GET stream opens: each message goes to one stream only, the newest.
    stream: u64,
    closed: bool,
}

impl EventLog {
    fn new(capacity: usize) -> Self {
        EventLog {
            inner: Mutex::new(LogInner {
                events: VecDeque::new(),
                next: 1,
                stream: 0,
                closed: false,
            }),
            changed: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn push(&self, raw: Bytes) {
        let mut inner = lock(&self.inner);
        let seq = inner.next;
        inner.next += 1;
        inner.events.push_back((seq, raw));
        while inner.events.len() > self.capacity {
            inner.events.pop_front();
        }
        drop(inner);
        self.changed.notify_waiters();
    }

    fn close(&self) {
        lock(&self.inner).closed = true;
        self.changed.notify_waiters();
    }
}

struct Entry {
    /// Its id, shared with every request's context (one allocation per session).
    id: Arc<str>,
    session: Arc<dyn Session>,
    log: Arc<EventLog>,
    /// When it was last used, in nanoseconds since the map's `epoch`: a plain store a request,
    /// where a lock is two atomic read-modify-writes (docs/PERFORMANCE.md).
    last_used: AtomicU64,
}

/// The live Streamable HTTP sessions.
pub(crate) struct Sessions {
    /// By id: ids the gateway made (random), so a fast hash serves.
    map: Mutex<HashMap<Arc<str>, Arc<Entry>, OwnKeys>>,
    idle: Duration,
    /// What the entries' `last_used` count from.
    epoch: Instant,
}

impl Sessions {
    pub(crate) fn new(idle: Duration) -> Self {
        Sessions {
            map: Mutex::default(),
            idle,
            epoch: Instant::now(),
        }
    }

    /// `at` as an entry's `last_used`.
    fn since_epoch(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    /// How long the entry has not been used, as of `now`.
    fn unused_for(&self, entry: &Entry, now: Instant) -> Duration {
        let last_used = Duration::from_nanos(entry.last_used.load(Ordering::Relaxed));
        now.saturating_duration_since(self.epoch + last_used)
    }

    /// The session `id`, marked used at `now` (the request's start: one clock read a request).
    fn get(&self, id: &str, now: Instant) -> Option<Arc<Entry>> {
        let entry = lock(&self.map).get(id).cloned()?;
        entry
            .last_used
            .store(self.since_epoch(now), Ordering::Relaxed);
        Some(entry)
    }

    fn remove(&self, id: &str) -> bool {
        let removed = lock(&self.map).remove(id);
        match removed {
            Some(entry) => {
                entry.session.close();
                entry.log.close();
                true
            }
            None => false,
        }
    }

    pub(crate) fn close_all(&self) {
        let all: Vec<_> = lock(&self.map).drain().collect();
        for (_, entry) in all {
            entry.session.close();
            entry.log.close();
        }
    }
}

/// Expires sessions unused for the idle timeout.
pub(crate) async fn reap_idle(frontend: Weak<Frontend>) {
    loop {
        let Some(idle) = frontend.upgrade().map(|f| f.streamable.idle) else {
            return;
        };
        tokio::time::sleep((idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30)))
            .await;
        let Some(frontend) = frontend.upgrade() else {
            return;
        };
        let now = Instant::now();
        let sessions = &frontend.streamable;
        let expired: Vec<Arc<str>> = lock(&sessions.map)
            .iter()
            .filter(|(_, e)| sessions.unused_for(e, now) > idle)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            tracing::info!(session_id = %id, "session expired");
            frontend.streamable.remove(&id);
        }
    }
}

/// 128 random bits from the kernel: session ids must not be guessable.
pub(super) fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_err()
    {
        bytes = fastrand::u128(..).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Which answers a request's `Accept` allows, read once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Accepted {
    json: bool,
    event_stream: bool,
}

/// Media ranges compared case-insensitively, parameters (`;q=`) ignored. Without the header
/// neither is named: a POST is still answered (as JSON), an event stream needs asking for.
fn accepted(headers: &ClientHeaders) -> Accepted {
    let mut values = headers.get_all(&http::header::ACCEPT);
    // What MCP clients send, and what a client that wants JSON alone sends, read without
    // splitting.
    if let (Some(only), None) = (values.next(), values.next()) {
        match only {
            b"application/json, text/event-stream" => {
                return Accepted {
                    json: true,
                    event_stream: true,
                };
            }
            b"application/json" => {
                return Accepted {
                    json: true,
                    event_stream: false,
                };
            }
            _ => {}
        }
    }
    let mut accepted = Accepted {
        json: false,
        event_stream: false,
    };
    for range in headers
        .get_all(&http::header::ACCEPT)
        .filter_map(visible_ascii)
        .flat_map(|v| v.split(','))
    {
        let range = range.split(';').next().unwrap_or("").trim();
        let is = |media: &str| range.eq_ignore_ascii_case(media);
        accepted.json |= is("application/json") || is("application/*") || is("*/*");
        accepted.event_stream |= is("text/event-stream") || is("text/*") || is("*/*");
    }
    accepted
}

fn json_response(raw: Bytes, session_id: Option<&str>) -> Response<ResponseBody> {
    let mut resp = Response::new(full(raw));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(id) = session_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        resp.headers_mut().insert("mcp-session-id", id);
    }
    resp
}

impl Frontend {
    /// The session a request names: 400 without `Mcp-Session-Id`, 404 when unknown or expired,
    /// 400 for an unsupported `MCP-Protocol-Version`.
    fn session_of(
        &self,
        headers: &ClientHeaders,
        started: Instant,
    ) -> Result<Arc<Entry>, Box<Response<ResponseBody>>> {
        if let Some(version) = headers.get(&MCP_PROTOCOL_VERSION) {
            let supported = SUPPORTED_PROTOCOL_VERSIONS
                .iter()
                .any(|v| v.as_bytes() == version);
            if !supported {
                let class = client_error(ErrorType::Validation, StatusCode::BAD_REQUEST);
                return Err(Box::new(self.refused(
                    &class,
                    "unsupported MCP-Protocol-Version",
                    started,
                )));
            }
        }
        let Some(id) = headers.get_str(&MCP_SESSION_ID) else {
            let class = client_error(ErrorType::Validation, StatusCode::BAD_REQUEST);
            return Err(Box::new(self.refused(
                &class,
                "missing Mcp-Session-Id",
                started,
            )));
        };
        match self.streamable.get(id, started) {
            Some(entry) => Ok(entry),
            None => {
                let class = client_error(ErrorType::NotFound, StatusCode::NOT_FOUND);
                Err(Box::new(self.refused(
                    &class,
                    "unknown or expired session",
                    started,
                )))
            }
        }
    }

    pub(super) async fn streamable_post(
        self: Arc<Self>,
        req: ClientRequest,
        peer: SocketAddr,
        started: Instant,
    ) -> Response<ResponseBody> {
        let accepted = accepted(&req.head.headers);
        if !(accepted.json || accepted.event_stream)
            && req.head.headers.contains(&http::header::ACCEPT)
        {
            let class = client_error(ErrorType::Validation, StatusCode::NOT_ACCEPTABLE);
            return self.refused(
                &class,
                "Accept must allow application/json or text/event-stream",
                started,
            );
        }
        let (head, msg) = match self.read_message(req, started).await {
            Ok(read) => read,
            Err(resp) => return *resp,
        };
        if msg.method() == McpMethod::Initialize {
            return self.initialize(head, peer, msg).await;
        }
        let entry = match self.session_of(&head.headers, started) {
            Ok(found) => found,
            Err(resp) => return *resp,
        };
        let id = entry.id.clone();
        if msg.kind() != Kind::Request {
            // Handled before it is accepted: a client that waits for the 202 knows a cancellation
            // (or an answer) was handed on before what it sends next.
            let ctx = context(head, peer, None, Some(id));
            self.dispatch(entry.session.clone(), msg, ctx).await;
            let mut resp = Response::new(full(Bytes::new()));
            *resp.status_mut() = StatusCode::ACCEPTED;
            return resp;
        }
        // Calls may send progress and the backend's own requests while they run: stream them.
        if msg.method() == McpMethod::ToolsCall && accepted.event_stream {
            let (tx, rx) = mpsc::channel::<Bytes>(64);
            let session = entry.session.clone();
            let frontend = self;
            let ctx = context(head, peer, Some(tx.clone()), Some(id));
            tokio::spawn(async move {
                if let Some(resp) = frontend.dispatch(session, msg, ctx).await {
                    let _ = tx.send(resp.into_raw()).await;
                }
            });
            return sse_response(ChannelBody::boxed(rx, as_event, ()));
        }
        let ctx = context(head, peer, None, Some(id));
        match self.dispatch(entry.session.clone(), msg, ctx).await {
            Some(resp) => json_response(resp.into_raw(), None),
            None => {
                let mut resp = Response::new(full(Bytes::new()));
                *resp.status_mut() = StatusCode::ACCEPTED;
                resp
            }
        }
    }

    async fn initialize(
        self: Arc<Self>,
        head: ClientHead,
        peer: SocketAddr,
        msg: mcp_gateway_layers::jsonrpc::Message,
    ) -> Response<ResponseBody> {
        let id: Arc<str> = new_session_id().into();
        let log = Arc::new(EventLog::new(self.config.sessions.replay_events));
        let feed = log.clone();
        let outbox = Outbox::sink(move |raw| feed.push(raw));
        let session = self.handler.open(ClientTransport::StreamableHttp, outbox);
        let resp = session
            .clone()
            .handle(msg, context(head, peer, None, Some(id.clone())))
            .await;
        let Some(resp) = resp else {
            session.close();
            return Response::new(full(Bytes::new()));
        };
        if resp.kind() != Kind::Response {
            session.close();
            return json_response(resp.into_raw(), None);
        }
        lock(&self.streamable.map).insert(
            id.clone(),
            Arc::new(Entry {
                id: id.clone(),
                session,
                log,
                last_used: AtomicU64::new(self.streamable.since_epoch(Instant::now())),
            }),
        );
        tracing::info!(session_id = %id, transport = "streamable_http", "session opened");
        json_response(resp.into_raw(), Some(&id))
    }

    pub(super) fn streamable_get(
        self: Arc<Self>,
        req: ClientRequest,
        started: Instant,
    ) -> Response<ResponseBody> {
        let headers = &req.head.headers;
        if !accepted(headers).event_stream {
            let class = client_error(ErrorType::Validation, StatusCode::NOT_ACCEPTABLE);
            return self.refused(&class, "Accept must allow text/event-stream", started);
        }
        let entry = match self.session_of(headers, started) {
            Ok(found) => found,
            Err(resp) => return *resp,
        };
        let mut after: u64 = headers
            .get_str(&LAST_EVENT_ID)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let log = entry.log.clone();
        let generation = {
            let mut inner = lock(&log.inner);
            inner.stream += 1;
            if after == 0 {
                // A new stream (not a resumption) starts with what has not been delivered yet.
                after = inner
                    .events
                    .front()
                    .map_or(inner.next, |(seq, _)| *seq)
                    .saturating_sub(1);
            }
            inner.stream
        };
        log.changed.notify_waiters();
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        tokio::spawn(async move {
            loop {
                let notified = log.changed.notified();
                let (batch, closed, replaced) = {
                    let inner = lock(&log.inner);
                    let batch: Vec<(u64, Bytes)> = inner
                        .events
                        .iter()
                        .filter(|(seq, _)| *seq > after)
                        .cloned()
                        .collect();
                    (batch, inner.closed, inner.stream != generation)
                };
                if replaced {
                    return;
                }
                for (seq, raw) in batch {
                    if tx.send(sse_event(Some(seq), &raw)).await.is_err() {
                        return;
                    }
                    after = seq;
                }
                if closed {
                    return;
                }
                tokio::select! {
                    () = notified => {}
                    () = tx.closed() => return,
                }
            }
        });
        sse_response(ChannelBody::boxed(rx, as_is, ()))
    }

    pub(super) fn streamable_delete(
        self: Arc<Self>,
        req: ClientRequest,
        started: Instant,
    ) -> Response<ResponseBody> {
        let id = match self.session_of(&req.head.headers, started) {
            Ok(entry) => entry.id.clone(),
            Err(resp) => return *resp,
        };
        self.streamable.remove(&id);
        tracing::info!(session_id = %id, "session ended by the client");
        Response::new(full(Bytes::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted_for(values: &[&str]) -> (bool, bool) {
        let mut headers = http::HeaderMap::new();
        for v in values {
            headers.append(http::header::ACCEPT, HeaderValue::from_str(v).unwrap());
        }
        let a = accepted(&ClientHeaders::from(headers));
        (a.json, a.event_stream)
    }

    /// `sessions.replay_events`: a resumed stream can have only the last `capacity` events.
    #[test]
    fn the_event_log_keeps_the_last_events_up_to_its_capacity() {
        let log = EventLog::new(3);
        for n in 1..=5u8 {
            log.push(Bytes::from(vec![n]));
        }
        let kept: Vec<(u64, Bytes)> = lock(&log.inner).events.iter().cloned().collect();
        assert_eq!(
            kept,
            [3u8, 4, 5].map(|n| (u64::from(n), Bytes::from(vec![n])))
        );
        // No capacity still keeps the newest, for a stream that opens after it was sent.
        let log = EventLog::new(0);
        log.push(Bytes::from_static(b"only"));
        log.push(Bytes::from_static(b"newest"));
        assert_eq!(lock(&log.inner).events.len(), 1);
    }

    #[test]
    fn accept_is_read_as_media_ranges() {
        assert_eq!(accepted_for(&[]), (false, false));
        assert_eq!(accepted_for(&["application/json"]), (true, false));
        assert_eq!(
            accepted_for(&["application/json, text/event-stream"]),
            (true, true)
        );
        assert_eq!(accepted_for(&["Text/Event-Stream;q=0.9"]), (false, true));
        assert_eq!(accepted_for(&["text/html", "*/*;q=0.1"]), (true, true));
        assert_eq!(accepted_for(&["application/*"]), (true, false));
        assert_eq!(accepted_for(&["text/*"]), (false, true));
        assert_eq!(accepted_for(&["text/html"]), (false, false));
        // A media type that merely contains another's name is not it.
        assert_eq!(accepted_for(&["application/json-seq"]), (false, false));
    }
}
