//! MCP Streamable HTTP backends: each message is POSTed; answers come back as JSON or as an SSE
//! stream; the session id and protocol version from `initialize` go on every later request; a
//! GET stream carries the server's own messages; DELETE ends the session when the pipe closes.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::Either;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use mcp_gateway_layers::classify::{Component, ErrorClass, ErrorType, classify_error};
use mcp_gateway_layers::jsonrpc::{Kind, McpMethod, Message};
use mcp_gateway_layers::sse::SseParser;

use super::http1::{Body, Endpoint, HttpPool, Request};
use super::{Connector, Forwarded, Inbound, Inbox, PipeTx, inbound};
use crate::config::BackendConfig;
use crate::mcp::{BoxFuture, Boxed, class_error_response};
use crate::{lock, wait_until};

/// The configured headers plus a forwarded `Authorization`, ready to copy onto requests.
pub(super) fn base_headers(config: &BackendConfig, forwarded: &Forwarded) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in &config.headers {
        match (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            (Ok(name), Ok(value)) => {
                headers.insert(name, value);
            }
            _ => {
                tracing::warn!(backend = %config.namespace, header = %name, "invalid header in configuration skipped")
            }
        }
    }
    if let Some(auth) = &forwarded.authorization {
        headers.insert(http::header::AUTHORIZATION, auth.clone());
    }
    headers
}

/// The trace context the gateway wrote into `params._meta`, also as W3C headers.
pub(super) fn trace_headers(msg: &Message, request: &mut Request<'_>) {
    for (name, value) in [
        ("traceparent", msg.meta_traceparent_bytes()),
        ("tracestate", msg.meta_tracestate().map(str::as_bytes)),
    ] {
        // Only what a header value may hold is passed on (`HeaderValue`'s rule, without making
        // one: that copies the value).
        if let Some(value) = value.filter(|v| is_header_value(v)) {
            request.header(name, value);
        }
    }
}

/// Whether `value` may be a header value: no control characters but tab.
fn is_header_value(value: &[u8]) -> bool {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    let refused = |&b: &u8| (b < 0x20 && b != b'\t') || b == 0x7f;
    // Eight bytes a step (a `traceparent` is 55): only a word that may hold a byte under 0x20
    // (a tab among them) or a DEL is looked at byte by byte.
    let mut words = value.chunks_exact(8);
    for word in &mut words {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let w = u64::from_le_bytes(eight);
        let del = w ^ (ONES * 0x7f);
        let maybe = (w.wrapping_sub(ONES * 0x20) & !w | del.wrapping_sub(ONES) & !del) & HIGH;
        if maybe != 0 && word.iter().any(refused) {
            return false;
        }
    }
    !words.remainder().iter().any(refused)
}

/// What both HTTP transports need to reach a backend: its configuration and URL, the message
/// size limit, the headers every request carries, and the gateway's connection pool.
pub(super) struct HttpTarget {
    pub(super) config: Arc<BackendConfig>,
    /// The configured URL, or why it cannot be used.
    pub(super) endpoint: Result<Endpoint, String>,
    pub(super) max_message_bytes: usize,
    pub(super) headers: HeaderMap,
    pub(super) pool: HttpPool,
}

impl HttpTarget {
    pub(super) fn new(
        config: Arc<BackendConfig>,
        max_message_bytes: usize,
        forwarded: &Forwarded,
        pool: HttpPool,
    ) -> Self {
        HttpTarget {
            headers: base_headers(&config, forwarded),
            endpoint: Endpoint::parse(config.url.as_deref().unwrap_or_default()),
            config,
            max_message_bytes,
            pool,
        }
    }
}

pub(super) struct StreamableHttpConnector(pub(super) Arc<HttpTarget>);

#[derive(Default)]
struct SessionState {
    /// Notifications posted so far, and how many of them have been answered. Each POST has a
    /// connection of its own, so a notification would race what follows it; what is posted after
    /// a notification waits for its answer, and the backend sees them in the order sent (the
    /// handshake's `notifications/initialized` before anything else, a cancellation before the
    /// next call).
    notifications_posted: u64,
    notifications_done: u64,
    /// The GET stream opens once, after `notifications/initialized` is answered.
    stream_opened: bool,
    /// A copy, not a slice of the response: a slice would pin the connection's whole read buffer.
    session_id: Option<HeaderValue>,
    protocol_version: Option<HeaderValue>,
    /// The head every POST starts with, as written for the session id and protocol version above
    /// (request line and the headers every POST carries), and whether it names the host: the
    /// same for every call, so written once and copied.
    post_head: Option<(Vec<u8>, bool)>,
}

impl SessionState {
    fn set_session_id(&mut self, id: Option<HeaderValue>) {
        self.session_id = id;
        self.post_head = None;
    }

    fn set_protocol_version(&mut self, version: HeaderValue) {
        self.protocol_version = Some(version);
        self.post_head = None;
    }
}

/// One backend session as its requests see it; a call's POST borrows it, any other POST's task
/// holds a clone.
#[derive(Clone)]
struct Link {
    target: Arc<HttpTarget>,
    session: Arc<BackendSession>,
    incoming: Inbox,
}

#[derive(Default)]
struct BackendSession {
    state: Mutex<SessionState>,
    /// Wakes the messages that wait for earlier notifications to be answered.
    answered: tokio::sync::Notify,
}

/// A message's place in the order of posts: how many notifications were posted before it.
struct Place {
    is_notification: bool,
    before: u64,
    /// Some of those are not answered yet.
    must_wait: bool,
}

/// Counts a notification as answered when its POST ends, however it ends.
struct NotificationDone<'a>(&'a Link);

impl Drop for NotificationDone<'_> {
    fn drop(&mut self) {
        self.0.lock_state().notifications_done += 1;
        self.0.session.answered.notify_waiters();
    }
}

/// The sending side of one backend session: a call's POST runs in the calling task, every
/// other message's on a task of its own; no POST waits for another's answer, except for a
/// notification's (above). Dropping it ends the session (DELETE).
pub struct Poster {
    link: Link,
}

impl Poster {
    /// Posts a request in the caller's task.
    pub(super) fn post_here(
        &self,
        msg: Message,
    ) -> impl Future<Output = Result<(), Message>> + Send + '_ {
        if self.link.incoming.is_closed() {
            return Either::Left(std::future::ready(Err(msg)));
        }
        let place = self.link.take_place(&msg);
        Either::Right(self.link.post_in_place(place, msg).map(Ok))
    }

    /// Posts on a task of its own; `notifications/initialized` also opens the GET stream.
    pub(super) fn post(&self, msg: Message) -> Result<(), Message> {
        if self.link.incoming.is_closed() {
            return Err(msg);
        }
        let link = self.link.clone();
        let opens_stream = msg.method() == McpMethod::NotificationsInitialized && {
            let mut state = link.lock_state();
            !std::mem::replace(&mut state.stream_opened, true)
        };
        let place = link.take_place(&msg);
        tokio::spawn(async move {
            link.post_in_place(place, msg).await;
            if opens_stream {
                // The GET stream lives as long as the pipe does.
                tokio::select! {
                    () = link.listen() => {}
                    () = link.incoming.closed() => {}
                }
            }
        });
        Ok(())
    }
}

impl Drop for Poster {
    fn drop(&mut self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let link = self.link.clone();
            runtime.spawn(async move { link.delete().await });
        }
    }
}

impl Connector for StreamableHttpConnector {
    fn connect(&self, inbox: Inbox) -> BoxFuture<Result<PipeTx, String>> {
        if let Err(e) = &self.0.endpoint {
            let e = e.clone();
            return Box::pin(async move { Err(e) });
        }
        let link = Link {
            target: self.0.clone(),
            session: Arc::default(),
            incoming: inbox,
        };
        let tx = PipeTx::Post(Arc::new(Poster { link }));
        Box::pin(async move { Ok(tx) })
    }
}

impl Link {
    fn lock_state(&self) -> std::sync::MutexGuard<'_, SessionState> {
        lock(&self.session.state)
    }

    /// Takes `msg`'s place in the order of posts now, when it is sent, not when its POST starts.
    fn take_place(&self, msg: &Message) -> Place {
        let is_notification = msg.kind() == Kind::Notification;
        let mut state = self.lock_state();
        let before = state.notifications_posted;
        state.notifications_posted += u64::from(is_notification);
        Place {
            is_notification,
            before,
            must_wait: state.notifications_done < before,
        }
    }

    /// Posts `msg` once every notification posted before its place has been answered.
    async fn post_in_place(&self, place: Place, msg: Message) {
        let _done = place.is_notification.then(|| NotificationDone(self));
        if place.must_wait {
            wait_until(&self.session.answered, || {
                self.lock_state().notifications_done >= place.before
            })
            .await;
        }
        if place.is_notification {
            // What waits behind a notification waits no longer than a call would.
            let deadline = self.target.config.timeout();
            if tokio::time::timeout(deadline, self.post(msg))
                .await
                .is_err()
            {
                tracing::warn!(backend = %self.target.config.namespace, "backend did not answer a notification in time");
            }
        } else {
            self.post(msg).await
        }
    }

    /// A request to the backend with the headers every one carries: the configured ones, the
    /// session id and the negotiated protocol version. `None` when the URL cannot be used.
    fn request(&self, method: &str) -> Option<Request<'_>> {
        let endpoint = self.target.endpoint.as_ref().ok()?;
        Some(self.session_request(method, endpoint, &self.lock_state()))
    }

    fn session_request<'a>(
        &'a self,
        method: &str,
        endpoint: &'a Endpoint,
        state: &SessionState,
    ) -> Request<'a> {
        let mut request = Request::new(method, endpoint);
        request.headers(&self.target.headers);
        if let Some(id) = &state.session_id {
            request.header("mcp-session-id", id.as_bytes());
        }
        if let Some(version) = &state.protocol_version {
            request.header("mcp-protocol-version", version.as_bytes());
        }
        request
    }

    /// A POST with the headers every one carries, [`request`](Self::request)'s and the content
    /// type and `Accept`, copied from the session's [`SessionState::post_head`].
    fn post_request(&self) -> Option<Request<'_>> {
        let endpoint = self.target.endpoint.as_ref().ok()?;
        let mut state = self.lock_state();
        let (head, has_host) = match &state.post_head {
            Some(made) => made,
            None => {
                let mut request = self.session_request("POST", endpoint, &state);
                request
                    .header("content-type", b"application/json")
                    .header("accept", b"application/json, text/event-stream");
                let (mut head, has_host) = request.into_head();
                // Kept by every backend session, idle ones too: no spare room.
                head.shrink_to_fit();
                state.post_head.insert((head, has_host))
            }
        };
        Some(Request::with_head(endpoint, head, *has_host))
    }

    /// The answer to a request that failed before the backend could answer it.
    /// Boxed: a failure is rare, and its future would be part of every POST's (see `Boxed`).
    fn fail<'a>(&'a self, msg: &'a Message, class: ErrorClass, why: &'a str) -> Boxed<'a, ()> {
        Box::pin(async move {
            tracing::warn!(backend = %self.target.config.namespace, error_type = class.error_type.as_str(), reason = why, "backend HTTP request failed");
            if msg.kind() == Kind::Request {
                let answer = class_error_response(msg.id_raw(), &class, why, None);
                let _ = self.incoming.send(Inbound::Message(answer)).await;
            }
        })
    }

    async fn post(&self, msg: Message) {
        let Some(mut req) = self.post_request() else {
            let why = self
                .target
                .endpoint
                .as_ref()
                .err()
                .map_or("", String::as_str);
            let class = ErrorClass::new(ErrorType::Internal, Component::Gateway);
            return self.fail(&msg, class, why).await;
        };
        trace_headers(&msg, &mut req);
        let is_initialize = msg.method() == McpMethod::Initialize;
        if is_initialize {
            req.read_session_id();
        }
        let resp = match self.target.pool.send(req, msg.raw()).await {
            Ok(resp) => resp,
            Err(e) => {
                return self
                    .fail(&msg, classify_error(&e), "backend unreachable")
                    .await;
            }
        };
        let status = resp.status;
        if status == StatusCode::NOT_FOUND && self.lock_state().session_id.is_some() {
            // The backend forgot our session: end the pipe; the supervisor reconnects and re-initializes.
            tracing::warn!(backend = %self.target.config.namespace, "backend session expired");
            let class = ErrorClass::new(ErrorType::Unavailable, Component::Backend);
            return self.fail(&msg, class, "backend session expired").await;
        }
        if let Some(class) = ErrorClass::from_http_status(status, Component::Backend) {
            return self
                .fail(&msg, class, &format!("backend answered HTTP {status}"))
                .await;
        }
        if is_initialize {
            if let Some(id) = resp.session_id {
                self.lock_state().set_session_id(Some(id));
            }
        }
        if status == StatusCode::ACCEPTED || msg.kind() != Kind::Request && !resp.event_stream {
            return;
        }
        if resp.event_stream {
            // Boxed: an event stream's reading is larger than the rest of the POST together.
            let events: Boxed<'_, ()> = Box::pin(self.read_events(resp.body, is_initialize));
            events.await;
        } else {
            match resp.body.collect(self.target.max_message_bytes).await {
                Ok(body) => self.deliver(body, is_initialize).await,
                Err(e) => {
                    let class = ErrorClass::new(ErrorType::BackendProtocol, Component::Backend);
                    self.fail(&msg, class, &format!("reading the answer failed: {e}"))
                        .await
                }
            }
        }
    }

    async fn deliver(&self, raw: Bytes, is_initialize: bool) {
        let parsed = inbound(raw);
        if let (true, Inbound::Message(msg)) = (is_initialize, &parsed) {
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(msg.raw()) {
                if let Some(version) = value["result"]["protocolVersion"]
                    .as_str()
                    .and_then(|v| HeaderValue::from_str(v).ok())
                {
                    self.lock_state().set_protocol_version(version);
                }
            }
        }
        let _ = self.incoming.send(parsed).await;
    }

    async fn read_events(&self, mut body: Body<'_>, is_initialize: bool) {
        let mut parser = SseParser::new(self.target.max_message_bytes);
        while let Ok(Some(data)) = body.chunk().await {
            let mut events = Vec::new();
            if let Err(e) = parser.feed(&data, &mut |event| events.push(event)) {
                let _ = self
                    .incoming
                    .send(Inbound::Garbage(e.to_string().into()))
                    .await;
                break;
            }
            for event in events {
                if !event.data.is_empty() {
                    self.deliver(Bytes::from(event.data), is_initialize).await;
                }
            }
        }
    }

    /// The GET stream for messages the backend sends on its own; absent when it answers 405.
    async fn listen(&self) {
        let Some(mut req) = self.request("GET") else {
            return;
        };
        req.header("accept", b"text/event-stream");
        match self.target.pool.send(req, &[]).await {
            Ok(resp) if resp.status.is_success() => self.read_events(resp.body, false).await,
            Ok(resp) => {
                tracing::debug!(backend = %self.target.config.namespace, status = %resp.status, "backend offers no GET stream")
            }
            Err(e) => {
                tracing::debug!(backend = %self.target.config.namespace, error = %e, "backend GET stream failed")
            }
        }
    }

    async fn delete(&self) {
        if self.lock_state().session_id.is_none() {
            return;
        }
        if let Some(req) = self.request("DELETE") {
            let ended = async {
                // Read to its end, so that the connection can serve again.
                if let Ok(resp) = self.target.pool.send(req, &[]).await {
                    let _ = resp.body.collect(self.target.max_message_bytes).await;
                }
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), ended).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_value_is_what_http_would_take() {
        let filler = "00-0123456789abcdef0123";
        for c in (0..=0x7f).map(char::from).chain(['é', '€', '\u{85}']) {
            // At every place in an eight-byte word, and in the bytes after the last word.
            for at in 0..=filler.len() {
                let value = format!("{}{c}{}", &filler[..at], &filler[at..]);
                assert_eq!(
                    is_header_value(value.as_bytes()),
                    HeaderValue::from_str(&value).is_ok(),
                    "{value:?}"
                );
            }
        }
    }
}
