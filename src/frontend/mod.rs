//! Where clients connect: Streamable HTTP at `/mcp`, legacy HTTP+SSE at `/sse` (+ the POST URL
//! its `endpoint` event names), WebSocket at `/ws`. One accept loop under the connection
//! limiter; `Origin` validated on every request; graceful drain on shutdown.

mod body;
mod http1;
mod sse;
mod streamable_http;
mod websocket;
mod workers;

use std::convert::Infallible;
use std::future::ready;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mcp_gateway_layers::classify::{Component, ErrorClass, ErrorType, Verdict};
use mcp_gateway_layers::edge::error_message;
use mcp_gateway_layers::headers::{is_visible_ascii, visible_ascii};
use mcp_gateway_layers::jsonrpc::{McpMethod, Message, PeekError};
use mcp_gateway_layers::limit::ConnectionLimiter;
use mcp_gateway_layers::parts::Namespace;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub(crate) use body::ResponseBody;
use body::full;
pub(crate) use http1::{ClientHead, ClientRequest, RequestBody};
pub(crate) use websocket::WS_READ_BUFFER_BYTES;
pub use workers::Workers;

use crate::config::Config;
use crate::mcp::{Boxed, McpHandler};
use crate::telemetry::Telemetry;

/// The frontends' shared state.
pub(crate) struct Frontend {
    handler: Arc<dyn McpHandler>,
    config: Arc<Config>,
    telemetry: Telemetry,
    streamable: streamable_http::Sessions,
    sse: sse::Sessions,
    requests: Requests,
    /// Set when shutdown begins: new requests are refused, in-flight ones finish.
    draining: std::sync::atomic::AtomicBool,
    /// Set when the drain is over: long-lived connections (WebSocket) close.
    closing: watch::Sender<bool>,
}

/// Client requests being handled now, across every frontend, so shutdown can wait for them.
#[derive(Default)]
struct Requests {
    count: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

struct RequestGuard<'a>(&'a Requests);

impl Drop for RequestGuard<'_> {
    fn drop(&mut self) {
        if self
            .0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.0.idle.notify_waiters();
        }
    }
}

impl Requests {
    fn track(&self) -> RequestGuard<'_> {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        RequestGuard(self)
    }

    async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Serves the frontends on `listener` until `shutdown` resolves, then drains in-flight requests
/// (up to `drain`) and closes every session. Each connection is served on one of `workers`'
/// threads, or on the caller's runtime without them; accepting, refusals and the drain stay on
/// the caller's runtime.
pub async fn serve(
    workers: Option<&Workers>,
    listener: TcpListener,
    handler: Arc<dyn McpHandler>,
    config: Arc<Config>,
    telemetry: Telemetry,
    shutdown: impl std::future::Future<Output = ()>,
    drain: Duration,
) {
    let limiter = ConnectionLimiter::new(
        config.limits.max_connections,
        config.limits.max_connections_per_ip,
        telemetry.limits.clone(),
    );
    let frontend = Arc::new(Frontend {
        streamable: streamable_http::Sessions::new(Duration::from_secs(
            config.sessions.idle_timeout_secs,
        )),
        sse: sse::Sessions::default(),
        handler,
        config,
        telemetry,
        requests: Requests::default(),
        draining: std::sync::atomic::AtomicBool::new(false),
        closing: watch::channel(false).0,
    });
    let reaper = tokio::spawn(streamable_http::reap_idle(Arc::downgrade(&frontend)));
    let (draining, drain_signal) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        match limiter.try_acquire(peer.ip()) {
            Ok(permit) => {
                let connection = Connection {
                    frontend: frontend.clone(),
                    peer,
                    permit,
                    drain_signal: drain_signal.clone(),
                };
                match workers {
                    None => {
                        tokio::spawn(connection.serve(stream));
                    }
                    // The socket moves to the worker's own reactor.
                    Some(workers) => match stream.into_std() {
                        Ok(stream) => {
                            workers.next().spawn(async move {
                                match tokio::net::TcpStream::from_std(stream) {
                                    Ok(stream) => connection.serve(stream).await,
                                    Err(e) => {
                                        tracing::warn!(error = %e, "cannot serve a connection")
                                    }
                                }
                            });
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot serve a connection"),
                    },
                }
            }
            Err(rejected) => {
                let io = TokioIo::new(stream);
                let mut http1 = hyper_http1(frontend.config.limits.request_read_timeout());
                http1.keep_alive(false);
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |_req: Request<Incoming>| async move {
                            let class = rejected.class();
                            let mut resp = error_response(&class, &rejected.to_string(), None);
                            resp.headers_mut().insert(
                                http::header::CONNECTION,
                                HeaderValue::from_static("close"),
                            );
                            Ok::<_, Infallible>(resp)
                        });
                    let _ = http1.serve_connection(io, service).await;
                });
            }
        }
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    frontend
        .draining
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // Idle keep-alive connections close now; busy ones after their response.
    let _ = draining.send(true);
    if tokio::time::timeout(drain, frontend.requests.idle())
        .await
        .is_err()
    {
        tracing::warn!(
            seconds = drain.as_secs(),
            "drain timed out; closing with requests still in flight"
        );
    }
    reaper.abort();
    let _ = frontend.closing.send(true);
    frontend.streamable.close_all();
    frontend.sse.close_all();
    frontend.handler.shutdown();
}

/// An accepted connection under the limit, served until it closes or the drain begins.
struct Connection {
    frontend: Arc<Frontend>,
    peer: SocketAddr,
    permit: mcp_gateway_layers::limit::ConnectionPermit,
    drain_signal: watch::Receiver<bool>,
}

impl Connection {
    /// The connection's task, served until it closes or the drain begins; boxed where it is made,
    /// out of line, so that the frames polling it stay shallow (see `Boxed`).
    #[inline(never)]
    fn serve(self, stream: tokio::net::TcpStream) -> Boxed<'static, ()> {
        Box::pin(self.run(stream))
    }

    async fn run(self, stream: tokio::net::TcpStream) {
        let Connection {
            frontend,
            peer,
            permit,
            mut drain_signal,
        } = self;
        // Shared with an upgraded WebSocket, which outlives this HTTP connection.
        let permit = Arc::new(permit);
        let mut conn =
            http1::ServerConn::new(stream, frontend.config.limits.request_read_timeout());
        let state = LoopState::default();
        let handed_off = {
            let mut own = own_loop(&frontend, &mut conn, peer, &permit, &state);
            tokio::select! {
                biased;
                handed_off = &mut own => handed_off,
                _ = PolledWhenWoken::new(drain_signal.changed()) => {
                    // Idle, it closes now; else after the request in flight.
                    state.draining.store(true, Relaxed);
                    if state.idle.load(Relaxed) {
                        return;
                    }
                    own.await
                }
            }
        };
        if handed_off {
            let draining = state.draining.load(Relaxed);
            hand_to_hyper(frontend, conn, peer, permit, draining, drain_signal).await;
        }
    }
}

pin_project_lite::pin_project! {
    /// Polls `inner` only when it woke its task (and at first), not whenever the task is polled:
    /// the drain signal beside a connection (the own loop's or hyper's) would otherwise be polled
    /// on every wake-up of the connection, two or three a call, each poll taking the watch's
    /// waiter lock (~480 instructions a call).
    struct PolledWhenWoken<F> {
        #[pin]
        inner: F,
        gate: Arc<WakeGate>,
        waker: std::task::Waker,
        // The task's waker the gate holds: while each poll brings the same, the gate is not
        // written (a registration is two atomic read-modify-writes, and a poll two or three a call).
        registered: Option<std::task::Waker>,
    }
}

/// Whether the inner future woke, and the task to wake when it does.
struct WakeGate {
    woken: AtomicBool,
    task: futures_util::task::AtomicWaker,
}

impl std::task::Wake for WakeGate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, std::sync::atomic::Ordering::Release);
        self.task.wake();
    }
}

impl<F> PolledWhenWoken<F> {
    fn new(inner: F) -> Self {
        let gate = Arc::new(WakeGate {
            woken: AtomicBool::new(true),
            task: Default::default(),
        });
        let waker = std::task::Waker::from(gate.clone());
        PolledWhenWoken {
            inner,
            gate,
            waker,
            registered: None,
        }
    }
}

impl<F: Future> Future for PolledWhenWoken<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if !this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            this.gate.task.register(cx.waker());
            *this.registered = Some(cx.waker().clone());
        }
        // A load first: the swap, a read-modify-write, only once the gate was opened.
        if !this.gate.woken.load(std::sync::atomic::Ordering::Acquire)
            || !this
                .gate
                .woken
                .swap(false, std::sync::atomic::Ordering::Acquire)
        {
            return Poll::Pending;
        }
        this.inner
            .poll(&mut std::task::Context::from_waker(this.waker))
    }
}

/// Serves the rest of a connection the own loop left with hyper (its bytes read so far first),
/// shut down gracefully at once if the drain had begun; boxed out of line, as the connection's
/// task is.
#[inline(never)]
fn hand_to_hyper(
    frontend: Arc<Frontend>,
    conn: http1::ServerConn,
    peer: SocketAddr,
    permit: Arc<mcp_gateway_layers::limit::ConnectionPermit>,
    draining: bool,
    mut drain_signal: watch::Receiver<bool>,
) -> Boxed<'static, ()> {
    Box::pin(async move {
        let held = permit.clone();
        let http1 = hyper_http1(frontend.config.limits.request_read_timeout());
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let frontend = frontend.clone();
            let held = HeldPermit {
                _permit: held.clone(),
            };
            async move {
                Ok::<_, Infallible>(frontend.route(ClientRequest::from(req), peer, held).await)
            }
        });
        let conn = http1
            .serve_connection(TokioIo::new(conn.into_rewind()), service)
            .with_upgrades();
        tokio::pin!(conn);
        if draining {
            conn.as_mut().graceful_shutdown();
        }
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = PolledWhenWoken::new(drain_signal.changed()), if !draining => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
        drop(permit);
    })
}

/// hyper's HTTP/1.1 server as the gateway runs it (frontend and `/metrics`): `read_timeout` for
/// each request head, idle waits included, as the own loop has; hyper bounds only the head, and
/// closes without an answer when it passes.
pub(crate) fn hyper_http1(
    read_timeout: std::time::Duration,
) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(read_timeout);
    builder
}

/// What the connection's own loop shares with the drain watching it (on the same task: relaxed
/// atomics, because the future must be `Send`).
#[derive(Default)]
struct LoopState {
    /// Waiting for a request with nothing of it read.
    idle: AtomicBool,
    draining: AtomicBool,
}

/// Serves requests on the connection's own loop; true when one is left for hyper. Boxed out of
/// line, as the connection's task is.
#[inline(never)]
fn own_loop<'a>(
    frontend: &'a Arc<Frontend>,
    conn: &'a mut http1::ServerConn,
    peer: SocketAddr,
    permit: &'a Arc<mcp_gateway_layers::limit::ConnectionPermit>,
    state: &'a LoopState,
) -> Boxed<'a, bool> {
    Box::pin(serve_requests(frontend, conn, peer, permit, state))
}

async fn serve_requests(
    frontend: &Arc<Frontend>,
    conn: &mut http1::ServerConn,
    peer: SocketAddr,
    permit: &Arc<mcp_gateway_layers::limit::ConnectionPermit>,
    state: &LoopState,
) -> bool {
    let max_body = frontend.config.limits.max_message_bytes;
    loop {
        state.idle.store(conn.is_idle(), Relaxed);
        let next = conn.next_request(max_body).await;
        state.idle.store(false, Relaxed);
        let (req, close) = match next {
            Ok(request) => request,
            Err(http1::NoRequest::Closed) => return false,
            Err(http1::NoRequest::HandOff) => return true,
            Err(http1::NoRequest::TimedOut(waiting_since)) => {
                // An idle connection just closes; one that sent part of a request hears why.
                if !conn.is_idle() {
                    let resp = frontend.late_request(waiting_since);
                    let timeout = frontend.config.limits.request_read_timeout();
                    let late: Boxed<'_, _> = Box::pin(tokio::time::timeout(
                        timeout,
                        conn.write_response(resp, true),
                    ));
                    let _ = late.await;
                }
                return false;
            }
        };
        let held = HeldPermit {
            _permit: permit.clone(),
        };
        // Pinned where it is made: the route's future is large, and moving it costs a copy.
        let route = std::pin::pin!(frontend.clone().route(req, peer, held));
        let Some(resp) = conn.while_open(route).await else {
            return false;
        };
        let close = close || state.draining.load(Relaxed);
        if conn.write_response(resp, close).await.is_err() || close {
            return false;
        }
    }
}

/// What the session learns of a message that came with `head`.
pub(crate) fn context(
    head: ClientHead,
    peer: SocketAddr,
    related: Option<tokio::sync::mpsc::Sender<Bytes>>,
    session_id: Option<Arc<str>>,
) -> crate::mcp::RequestContext {
    crate::mcp::RequestContext {
        related,
        client_addr: Some(peer),
        session_id,
        headers: Arc::new(head.headers),
    }
}

/// A connection's place under the connection limit, held by whatever serves it longest.
pub(crate) struct HeldPermit {
    _permit: Arc<mcp_gateway_layers::limit::ConnectionPermit>,
}

/// A JSON-RPC error response for a request refused before it became a message.
pub(crate) fn error_response(
    class: &ErrorClass,
    message: &str,
    id: Option<&str>,
) -> Response<ResponseBody> {
    let mut resp = Response::new(full(error_message(id, class, message, None)));
    *resp.status_mut() = class.http_status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(after) = class.retry_after {
        resp.headers_mut().insert(
            http::header::RETRY_AFTER,
            HeaderValue::from(after.as_secs().max(1)),
        );
    }
    resp
}

fn client_error(error_type: ErrorType, status: StatusCode) -> ErrorClass {
    let mut class = ErrorClass::new(error_type, Component::Client);
    class.http_status = status;
    class
}

/// Whether `origin` may call: loopback origins always, others when configured.
fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    if allowed.iter().any(|a| a == origin || a == "*") {
        return true;
    }
    let Ok(uri) = origin.parse::<http::Uri>() else {
        return false;
    };
    matches!(uri.scheme_str(), Some("http") | Some("https"))
        && matches!(
            uri.host(),
            Some("localhost") | Some("127.0.0.1") | Some("[::1]") | Some("::1")
        )
}

impl Frontend {
    /// Handles one client message, counted in flight until answered; while the server drains,
    /// new requests are refused with `unavailable` (-32010, retryable).
    pub(crate) async fn dispatch(
        self: Arc<Self>,
        session: Arc<dyn crate::mcp::Session>,
        msg: Message,
        ctx: crate::mcp::RequestContext,
    ) -> Option<Message> {
        if self.draining.load(std::sync::atomic::Ordering::SeqCst)
            && msg.kind() == mcp_gateway_layers::jsonrpc::Kind::Request
        {
            let class = ErrorClass::new(ErrorType::Unavailable, Component::Gateway)
                .with_retry_after(Duration::from_secs(1));
            return Some(crate::mcp::class_error_response(
                msg.id_raw(),
                &class,
                "the gateway is shutting down",
                None,
            ));
        }
        let _in_flight = self.requests.track();
        session.handle(msg, ctx).await
    }

    /// The 408 for a request that did not arrive within the read timeout (counted and logged).
    fn late_request(&self, started: Instant) -> Response<ResponseBody> {
        let class = client_error(ErrorType::Timeout, StatusCode::REQUEST_TIMEOUT);
        let why = format!(
            "the request did not arrive within {} s",
            self.config.limits.request_read_timeout_secs
        );
        self.refused(&class, &why, started)
    }

    /// Counts a request the frontend refused before any layer saw it.
    pub(crate) fn refused(
        &self,
        class: &ErrorClass,
        message: &str,
        started: Instant,
    ) -> Response<ResponseBody> {
        self.count_refusal(class, message, started);
        error_response(class, message, None)
    }

    /// Counts and logs input refused before it became a message (HTTP or WebSocket).
    pub(crate) fn count_refusal(&self, class: &ErrorClass, message: &str, started: Instant) {
        self.telemetry.gateway.record(
            McpMethod::Other,
            Namespace::unrouted(),
            Verdict::Failure(*class),
            started.elapsed(),
            None,
        );
        tracing::info!(
            error_type = class.error_type.as_str(),
            http_status = class.http_status.as_u16(),
            reason = message,
            "request refused"
        );
    }

    // Not an `async fn`: its future is the endpoint's, which one of its own would copy whole.
    fn route(
        self: Arc<Self>,
        req: ClientRequest,
        peer: SocketAddr,
        permit: HeldPermit,
    ) -> impl Future<Output = Response<ResponseBody>> + Send + 'static {
        use futures_util::future::Either::{Left, Right};
        let started = Instant::now();
        if let Some(origin) = req.head.headers.get(&http::header::ORIGIN) {
            let ok = visible_ascii(origin)
                .is_some_and(|o| origin_allowed(o, &self.config.allowed_origins));
            if !ok {
                let class = client_error(ErrorType::Forbidden, StatusCode::FORBIDDEN);
                return Left(ready(self.refused(&class, "origin not allowed", started)));
            }
        }
        let answered = match (&req.head.method, req.head.path()) {
            (&Method::POST, "/mcp") => {
                return Right(Left(self.streamable_post(req, peer, started)));
            }
            (&Method::POST, "/messages") => return Right(Right(self.sse_post(req, peer, started))),
            (&Method::GET, "/mcp") => self.streamable_get(req, started),
            (&Method::DELETE, "/mcp") => self.streamable_delete(req, started),
            (&Method::GET, "/sse") => self.sse_open(),
            (&Method::GET, "/ws") => self.websocket(req, peer, permit, started),
            (_, "/mcp" | "/sse" | "/messages" | "/ws") => {
                let class = client_error(ErrorType::Validation, StatusCode::METHOD_NOT_ALLOWED);
                self.refused(&class, "method not allowed", started)
            }
            _ => {
                let class = client_error(ErrorType::NotFound, StatusCode::NOT_FOUND);
                self.refused(&class, "no such endpoint", started)
            }
        };
        Left(ready(answered))
    }

    /// Reads a POST body as one JSON-RPC message: 415 for another content type, 413 when too
    /// large, 400 with -32700 / -32600 when it is not a JSON-RPC message.
    // Not an `async fn`: only hyper's bodies are waited for, and their wait is boxed.
    fn read_message(
        &self,
        req: ClientRequest,
        started: Instant,
    ) -> impl Future<Output = Result<(ClientHead, Message), Box<Response<ResponseBody>>>> + Send + '_
    {
        use futures_util::future::Either::{Left, Right};
        let json = req
            .head
            .headers
            .get(&http::header::CONTENT_TYPE)
            .is_some_and(|v| v.starts_with(b"application/json") && is_visible_ascii(v));
        if !json {
            let class = client_error(ErrorType::Validation, StatusCode::UNSUPPORTED_MEDIA_TYPE);
            let refused = self.refused(&class, "Content-Type must be application/json", started);
            return Left(ready(Err(Box::new(refused))));
        }
        let ClientRequest { head, body } = req;
        match body {
            // The own loop read it, within the limit and the read timeout.
            RequestBody::Read(bytes) => Left(ready(self.parse_message(head, Ok(bytes), started))),
            // hyper times only the head: a body (chunked, say) gets the read timeout here.
            RequestBody::Hyper(body) => {
                let limit = self.config.limits.max_message_bytes;
                let collect = Limited::new(body, limit).collect();
                let timeout = self.config.limits.request_read_timeout();
                let read: Boxed<'_, _> = Box::pin(async move {
                    match tokio::time::timeout(timeout, collect).await {
                        Ok(collected) => {
                            let bytes = collected.map(|collected| collected.to_bytes());
                            self.parse_message(head, bytes, started)
                        }
                        Err(_) => Err(Box::new(self.late_request(started))),
                    }
                });
                Right(read)
            }
        }
    }

    /// The message in a body read whole (or why it is refused).
    fn parse_message(
        &self,
        head: ClientHead,
        body: Result<Bytes, mcp_gateway_layers::BoxError>,
        started: Instant,
    ) -> Result<(ClientHead, Message), Box<Response<ResponseBody>>> {
        let limit = self.config.limits.max_message_bytes;
        let bytes: Bytes = match body {
            Ok(bytes) => bytes,
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                let err = PeekError::TooLarge { limit };
                return Err(Box::new(self.refused(
                    &err.class(),
                    &err.to_string(),
                    started,
                )));
            }
            Err(_) => {
                let class = client_error(
                    ErrorType::Canceled,
                    mcp_gateway_layers::classify::CLIENT_CLOSED_REQUEST,
                );
                return Err(Box::new(self.refused(
                    &class,
                    "the request body could not be read",
                    started,
                )));
            }
        };
        match Message::parse(bytes) {
            Ok(msg) => Ok((head, msg)),
            Err(e) => Err(Box::new(self.refused(&e.class(), &e.to_string(), started))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The drain signal's wrapper polls it at first and after it woke the task, never on the
    /// task's other wake-ups, and still sees it complete.
    #[test]
    fn a_future_polled_when_woken_is_polled_only_after_its_own_wake() {
        use std::sync::atomic::AtomicUsize;
        use std::task::{Context, Waker};

        #[derive(Default)]
        struct Probe {
            polls: AtomicUsize,
            ready: AtomicBool,
            waker: std::sync::Mutex<Option<Waker>>,
        }
        let probe = Arc::new(Probe::default());
        let polled = probe.clone();
        let inner = std::future::poll_fn(move |cx| {
            polled.polls.fetch_add(1, Relaxed);
            *polled.waker.lock().unwrap() = Some(cx.waker().clone());
            if polled.ready.load(Relaxed) {
                Poll::Ready(7)
            } else {
                Poll::Pending
            }
        });
        struct Task(AtomicUsize);
        impl std::task::Wake for Task {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Relaxed);
            }
        }
        let task = Arc::new(Task(AtomicUsize::new(0)));
        let task_waker = Waker::from(task.clone());
        let mut gated = std::pin::pin!(PolledWhenWoken::new(inner));
        let mut cx = Context::from_waker(&task_waker);
        assert!(gated.as_mut().poll(&mut cx).is_pending());
        assert_eq!(probe.polls.load(Relaxed), 1, "polled at first, to register");
        for _ in 0..3 {
            // The task woke for something else.
            assert!(gated.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(
            probe.polls.load(Relaxed),
            1,
            "not polled for others' wake-ups"
        );
        probe.ready.store(true, Relaxed);
        probe.waker.lock().unwrap().take().unwrap().wake();
        assert_eq!(task.0.load(Relaxed), 1, "its wake-up wakes the task");
        assert_eq!(gated.as_mut().poll(&mut cx), Poll::Ready(7));
        assert_eq!(probe.polls.load(Relaxed), 2);
    }

    #[test]
    fn only_loopback_or_configured_origins_pass() {
        assert!(origin_allowed("http://localhost:6274", &[]));
        assert!(origin_allowed("http://127.0.0.1", &[]));
        assert!(origin_allowed("http://[::1]:3000", &[]));
        assert!(!origin_allowed("https://evil.example", &[]));
        assert!(!origin_allowed("http://localhost.evil.example", &[]));
        assert!(!origin_allowed("null", &[]));
        assert!(origin_allowed(
            "https://app.example",
            &["https://app.example".to_owned()]
        ));
    }
}
