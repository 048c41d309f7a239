//! One backend connection as the proxy sees it: calls with rewritten ids, matched answers,
//! timeouts, and a supervisor that restarts or reconnects.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use mcp_gateway_layers::classify::{Component, ErrorClass, ErrorType, GatewayError};
use mcp_gateway_layers::hash::OwnKeys;
use mcp_gateway_layers::jsonrpc::{Kind, McpMethod, Message};
use mcp_gateway_layers::metrics::{GatewayMetrics, RecoveryMechanism};
use mcp_gateway_layers::parts::Namespace;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::{Connector, Inbound, PipeTx};
use crate::config::{BackendConfig, BackendTransport};
use crate::mcp::ClientStream;
use crate::{lock, wait_until};

/// A message a backend sent on its own: a request to the client (sampling, elicitation,
/// roots) or a notification.
#[derive(Debug)]
pub enum BackendEvent {
    /// A server-initiated request from the backend at this index.
    Request(usize, Message),
    /// A notification from the backend at this index.
    Notification(usize, Message),
    /// Acknowledge once every earlier event has been passed on: an answer that arrived after
    /// them waits for it, so that it never overtakes them on the client's stream.
    Barrier(oneshot::Sender<()>),
}

/// Where a backend's own messages go: hands out the queue's sender, `None` once nobody listens.
/// A session makes its queue when first asked, so that an idle session holds no queue and no task.
pub type EventTarget = Arc<dyn Fn() -> Option<mpsc::Sender<BackendEvent>> + Send + Sync>;

/// Queues an event; dropped when nobody listens any more.
async fn send_event(events: &EventTarget, event: BackendEvent) -> bool {
    match events() {
        Some(queue) => queue.send(event).await.is_ok(),
        None => false,
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: Namespace,
    backend_type: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendNameLabels {
    backend: Namespace,
    backend_type: &'static str,
}

/// Backend metrics: requests by outcome, connections up, process restarts, protocol errors.
#[derive(Debug, Clone)]
pub struct BackendMetrics {
    requests: Family<BackendLabels, Counter>,
    up: Family<BackendNameLabels, Gauge>,
    restarts: Family<BackendNameLabels, Counter>,
    garbage: Family<BackendNameLabels, Counter>,
    marked_down: Family<BackendNameLabels, Counter>,
    gateway: GatewayMetrics,
}

impl BackendMetrics {
    /// Registers the backend metrics.
    pub fn register(registry: &mut Registry, gateway: GatewayMetrics) -> Self {
        let m = BackendMetrics {
            requests: Family::default(),
            up: Family::default(),
            restarts: Family::default(),
            garbage: Family::default(),
            marked_down: Family::default(),
            gateway,
        };
        registry.register(
            "gateway_backend_requests",
            "Requests sent to backends, by backend, backend type and outcome (ok or the error type)",
            m.requests.clone(),
        );
        registry.register(
            "gateway_backend_up",
            "Backend connections (or processes) up now",
            m.up.clone(),
        );
        registry.register(
            "gateway_backend_restarts",
            "Backend processes restarted and connections re-made after a failure",
            m.restarts.clone(),
        );
        registry.register(
            "gateway_backend_protocol_errors",
            "Lines or messages from a backend that were not JSON-RPC",
            m.garbage.clone(),
        );
        registry.register(
            "gateway_backend_marked_down",
            "Backends marked down by crash-loop protection (too many failures within the window)",
            m.marked_down.clone(),
        );
        m
    }
}

/// Where a transport puts what its backend sends. An answer goes straight to its caller when
/// nothing the backend sent before it is still queued or unacknowledged by the session; the
/// rest queues for the supervisor, which keeps the order (one task hop fewer per call).
#[derive(Clone)]
pub struct Inbox {
    queue: mpsc::Sender<Inbound>,
    /// Messages queued and not yet delivered by the supervisor.
    queued: Arc<AtomicUsize>,
    shared: Arc<Shared>,
}

impl Inbox {
    /// Delivers an answer or queues the message; fails once the connection is being dropped.
    pub async fn send(&self, inbound: Inbound) -> Result<(), mpsc::error::SendError<Inbound>> {
        let inbound = match inbound {
            Inbound::Message(msg) => match self.answer_directly(msg) {
                None => return Ok(()),
                Some(msg) => Inbound::Message(msg),
            },
            garbage => garbage,
        };
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.queue.send(inbound).await.inspect_err(|_| {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        })
    }

    /// Whether the supervisor has let go of the connection.
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Resolves when the supervisor lets go of the connection.
    pub async fn closed(&self) {
        self.queue.closed().await
    }

    /// Hands `msg` to the call waiting for it, or gives it back for the queue.
    fn answer_directly(&self, msg: Message) -> Option<Message> {
        if !matches!(msg.kind(), Kind::Response | Kind::Error)
            || self.queued.load(Ordering::SeqCst) > 0
            || self.shared.events_pending.load(Ordering::SeqCst)
        {
            return Some(msg);
        }
        match self.shared.take_waiter(&msg) {
            Some(waiter) => {
                let _ = waiter.send(Ok(msg));
                None
            }
            None => Some(msg),
        }
    }
}

/// A live connection as the supervisor holds it.
struct Pipe {
    tx: PipeTx,
    rx: mpsc::Receiver<Inbound>,
    queued: Arc<AtomicUsize>,
}

impl Pipe {
    /// The next queued message.
    async fn recv(&mut self) -> Option<Inbound> {
        self.rx.recv().await
    }

    /// Marks the last received message as delivered (after its effects are visible).
    fn delivered(&self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Connects through `connector`, with an inbox that answers calls of `shared`.
async fn connect(connector: &dyn Connector, shared: &Arc<Shared>) -> Result<Pipe, String> {
    let (queue, rx) = mpsc::channel(256);
    let queued = Arc::new(AtomicUsize::new(0));
    let inbox = Inbox {
        queue,
        queued: queued.clone(),
        shared: shared.clone(),
    };
    let tx = connector.connect(inbox).await?;
    Ok(Pipe { tx, rx, queued })
}

/// Where the connection stands.
#[derive(Clone)]
enum Link {
    Connecting,
    Up(PipeTx),
    Down(Arc<str>),
}

type Reply = Result<Message, GatewayError>;

struct Shared {
    namespace: Namespace,
    index: usize,
    transport: BackendTransport,
    timeout: Duration,
    link: watch::Sender<Link>,
    /// Calls awaiting their answer, with their deadlines.
    pending: Mutex<Pending>,
    next_id: AtomicU64,
    /// Events sent to the session since the last answer was released.
    events_pending: AtomicBool,
    /// Progress tokens of calls in flight → the stream their progress goes to. Routed here, in
    /// arrival order, so that progress never overtakes the answer it precedes.
    progress: Mutex<HashMap<String, ProgressTarget>>,
    /// The client's `initialize` and whether `notifications/initialized` followed: replayed
    /// after a restart so the new process is in the same state.
    handshake: Mutex<(Option<Message>, bool)>,
    metrics: BackendMetrics,
    /// The series of this backend's successful calls, looked up once: most calls succeed.
    ok_calls: Counter,
    /// Set once the backend is to stop; `stop` wakes the supervisor.
    stopping: AtomicBool,
    stop: Notify,
}

impl Shared {
    fn request_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
    }

    /// Resolves once the backend is to stop.
    async fn stopped(&self) {
        wait_until(&self.stop, || self.stopping.load(Ordering::SeqCst)).await
    }

    /// The call waiting for the answer `msg`, taken out of the pending calls.
    fn take_waiter(&self, msg: &Message) -> Option<oneshot::Sender<Reply>> {
        lock(&self.pending)
            .calls
            .remove(&msg.id_number()?)
            .map(|c| c.reply)
    }

    /// Waits for `id`'s answer on `reply`, until the timeout; the sweeper is told of a client
    /// with calls waiting when its first one starts.
    fn add_pending(self: &Arc<Self>, id: u64, reply: oneshot::Sender<Reply>) {
        let deadline = Instant::now() + self.timeout;
        let register = {
            let mut pending = lock(&self.pending);
            pending.calls.insert(id, PendingCall { reply, deadline });
            !std::mem::replace(&mut pending.swept, true)
        };
        if register {
            Sweeper::get().watch(Arc::downgrade(self));
        }
    }

    fn remove_pending(&self, id: u64) -> bool {
        lock(&self.pending).calls.remove(&id).is_some()
    }

    /// The sweeper's answer to a call past its deadline ([`is_timeout`] tells it apart).
    fn timed_out(&self) -> GatewayError {
        GatewayError::new(
            ErrorClass::new(ErrorType::Timeout, Component::Backend),
            format!(
                "backend {} did not answer within {} s",
                self.namespace.as_str(),
                self.timeout.as_secs()
            ),
        )
    }

    /// Answers the calls past their deadline with a timeout; whether calls still wait.
    fn expire(&self, now: Instant) -> bool {
        let (expired, waiting) = {
            let mut pending = lock(&self.pending);
            let due: Vec<u64> = (pending.calls.iter())
                .filter(|(_, call)| call.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            let expired: Vec<_> = (due.into_iter())
                .filter_map(|id| pending.calls.remove(&id))
                .collect();
            let waiting = !pending.calls.is_empty();
            pending.swept = waiting;
            (expired, waiting)
        };
        for call in expired {
            // The call tells the backend to stop: it holds the connection the call went out on.
            let _ = call.reply.send(Err(self.timed_out()));
        }
        waiting
    }
}

/// Whether a pending call's error is the sweeper's timeout: nothing else answers one with a
/// timeout (a lost connection answers `unavailable`).
fn is_timeout(e: &GatewayError) -> bool {
    e.class().error_type == ErrorType::Timeout
}

/// The calls of one backend connection waiting for their answers. Their deadlines are checked by
/// one sweeper thread for the process rather than by a timer each: a timer's entry in the
/// runtime's wheel, added and taken out, and the clock reads around it, were about 2% of a
/// call's instructions.
#[derive(Default)]
struct Pending {
    calls: HashMap<u64, PendingCall, OwnKeys>,
    /// The sweeper watches this client: from its first waiting call to a sweep that finds none.
    swept: bool,
}

struct PendingCall {
    reply: oneshot::Sender<Reply>,
    deadline: Instant,
}

/// How often the sweeper looks: a call times out at most this long after its deadline.
const SWEEP_PERIOD: Duration = Duration::from_millis(100);

/// Times out calls past their deadline, every [`SWEEP_PERIOD`] while any client has calls
/// waiting. One thread for the process, started on first use: a task per client would be held
/// by each of 10,000 idle sessions for a while after its `initialize`, and a task is bound to
/// the runtime that spawned it, which may shut down first.
struct Sweeper {
    watched: Mutex<Watched>,
    wake: std::sync::Condvar,
}

#[derive(Default)]
struct Watched {
    clients: Vec<std::sync::Weak<Shared>>,
    /// The sweeper waits for a client: the next one to come must wake it.
    waiting: bool,
}

impl Sweeper {
    fn get() -> &'static Sweeper {
        static SWEEPER: std::sync::OnceLock<Sweeper> = std::sync::OnceLock::new();
        SWEEPER.get_or_init(|| {
            let started = std::thread::Builder::new()
                .name("call-deadlines".to_owned())
                .spawn(|| Sweeper::get().run());
            if let Err(e) = started {
                tracing::error!(error = %e, "cannot start the thread that times calls out");
            }
            Sweeper {
                watched: Mutex::default(),
                wake: std::sync::Condvar::new(),
            }
        })
    }

    fn watch(&self, client: std::sync::Weak<Shared>) {
        let mut watched = lock(&self.watched);
        watched.clients.push(client);
        if std::mem::take(&mut watched.waiting) {
            self.wake.notify_one();
        }
    }

    fn run(&self) {
        loop {
            let clients = {
                let mut watched = lock(&self.watched);
                while watched.clients.is_empty() {
                    watched.waiting = true;
                    watched = (self.wake.wait(watched)).unwrap_or_else(|e| e.into_inner());
                }
                std::mem::take(&mut watched.clients)
            };
            let now = Instant::now();
            let still: Vec<_> = (clients.into_iter())
                .filter(|client| client.upgrade().is_some_and(|c| c.expire(now)))
                .collect();
            lock(&self.watched).clients.extend(still);
            std::thread::sleep(SWEEP_PERIOD);
        }
    }
}

/// The clients' hold on a backend's state, apart from the supervisor's: the last client to go
/// stops the backend.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.request_stop();
    }
}

impl std::ops::Deref for StopOnDrop {
    type Target = Arc<Shared>;

    fn deref(&self) -> &Arc<Shared> {
        &self.0
    }
}

/// A supervised connection to one backend, for one session (or shared by all).
#[derive(Clone)]
pub struct BackendClient {
    /// One reference, so that the clone each call takes is two atomic operations, not four.
    shared: Arc<StopOnDrop>,
}

impl std::fmt::Debug for BackendClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendClient")
            .field("namespace", &self.shared.namespace)
            .finish()
    }
}

fn unavailable(message: String, reached: bool) -> GatewayError {
    let class = ErrorClass::new(ErrorType::Unavailable, Component::Transport);
    GatewayError::new(if reached { class } else { class.not_sent() }, message)
}

impl BackendClient {
    /// Starts the supervisor for backend `index` of the session; events go to `events`.
    pub fn start(
        index: usize,
        config: &BackendConfig,
        connector: Arc<dyn Connector>,
        events: EventTarget,
        metrics: BackendMetrics,
    ) -> BackendClient {
        let (link, _) = watch::channel(Link::Connecting);
        let namespace = Namespace::new(&config.namespace);
        let ok_calls = metrics
            .requests
            .get_or_create(&BackendLabels {
                backend: namespace,
                backend_type: config.transport.as_str(),
                status: "ok",
            })
            .clone();
        let shared = Arc::new(Shared {
            namespace,
            index,
            transport: config.transport,
            timeout: config.timeout(),
            link,
            pending: Mutex::default(),
            next_id: AtomicU64::new(1),
            progress: Mutex::default(),
            events_pending: AtomicBool::new(false),
            handshake: Mutex::default(),
            metrics,
            ok_calls,
            stopping: AtomicBool::new(false),
            stop: Notify::new(),
        });
        tokio::spawn(supervise(
            shared.clone(),
            connector,
            events,
            config.restart.clone(),
        ));
        BackendClient {
            shared: Arc::new(StopOnDrop(shared)),
        }
    }

    /// The backend's namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.shared.namespace
    }

    /// A fresh id for the next request to this backend.
    pub fn next_id(&self) -> u64 {
        self.shared.next_id.fetch_add(1, Ordering::Relaxed)
    }

    async fn sender(&self) -> Result<PipeTx, GatewayError> {
        // Up, the usual case: no subscription and no deadline (a clock read and a timer entry).
        if let Link::Up(tx) = &*self.shared.link.borrow() {
            return Ok(tx.clone());
        }
        let mut link = self.shared.link.subscribe();
        let wait = async {
            loop {
                match &*link.borrow_and_update() {
                    Link::Up(tx) => return Ok(tx.clone()),
                    Link::Down(why) => {
                        // The reason (a path, an address) is logged where it happened; the client gets the fact.
                        let _ = why;
                        return Err(unavailable(
                            format!("backend {} is down", self.shared.namespace.as_str()),
                            false,
                        ));
                    }
                    Link::Connecting => {}
                }
                if link.changed().await.is_err() {
                    return Err(unavailable(
                        format!("backend {} stopped", self.shared.namespace.as_str()),
                        false,
                    ));
                }
            }
        };
        match tokio::time::timeout(self.shared.timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(unavailable(
                format!(
                    "backend {} did not come up in time",
                    self.shared.namespace.as_str()
                ),
                false,
            )),
        }
    }

    /// Sends `outgoing`, the client's `request` as the backend sees it (under the gateway's id
    /// `id`, [`Message::with_params_and_id`]), and waits for the answer, whose id is put back to
    /// the request's own. Dropping the future cancels the call at the backend.
    // Not an `async fn`: its future is `call_inner`'s, which one of its own would copy whole.
    pub fn call<'a>(
        &'a self,
        id: u64,
        outgoing: Message,
        request: &'a Message,
    ) -> impl Future<Output = Reply> + Send + 'a {
        self.call_inner(id, outgoing, request).map(move |result| {
            self.count(&result);
            result
        })
    }

    /// Counts a call's outcome in `gateway_backend_requests_total`.
    fn count(&self, result: &Reply) {
        let failed = match result {
            Ok(resp) => resp.failure_class(Component::Backend).map(|c| c.error_type),
            Err(e) => Some(e.class().error_type),
        };
        match failed {
            None => {
                self.shared.ok_calls.inc();
            }
            Some(error_type) => {
                self.shared
                    .metrics
                    .requests
                    .get_or_create(&BackendLabels {
                        backend: self.shared.namespace,
                        backend_type: self.shared.transport.as_str(),
                        status: error_type.as_str(),
                    })
                    .inc();
            }
        }
    }

    async fn call_inner(&self, id: u64, outgoing: Message, request: &Message) -> Reply {
        let tx = self.sender().await?;
        if request.method() == McpMethod::Initialize {
            // Replayed as the backend saw it, under a new id.
            lock(&self.shared.handshake).0 = Some(outgoing.detached());
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        self.shared.add_pending(id, reply_tx);
        let mut guard = CancelOnDrop {
            client: self,
            id,
            tx: &tx,
            reply: reply_rx,
            armed: true,
        };
        // The answer, or the sweeper's timeout, may come before the send ends (an HTTP backend's
        // POST is the whole call; an SSE stream may stay open): then it is enough.
        // Pinned where it is made: the POST's future is large, and moving it costs a copy.
        let mut send = std::pin::pin!(tx.send_call(outgoing));
        let replied = tokio::select! {
            biased;
            sent = &mut send => match sent {
                Ok(()) => Some((&mut guard.reply).await),
                Err(_) => None,
            },
            reply = &mut guard.reply => Some(reply),
        };
        let answer = match replied {
            Some(Ok(Err(e))) if is_timeout(&e) => {
                // The sweeper's: the backend is told to stop working on it.
                guard.armed = false;
                cancel_at_backend(&tx, id);
                return Err(e);
            }
            Some(Ok(answer)) => answer,
            Some(Err(_)) => Err(unavailable(
                format!("backend {} connection lost", self.shared.namespace.as_str()),
                true,
            )),
            None => {
                guard.armed = false;
                self.shared.remove_pending(id);
                return Err(unavailable(
                    format!("backend {} connection lost", self.shared.namespace.as_str()),
                    false,
                ));
            }
        };
        guard.armed = false;
        let resp = answer?;
        // Requests carry ids: the answer gets the request's own back.
        Ok(resp.with_id_of(request))
    }

    /// Sends the progress of the call carrying `token` (raw JSON) to `stream` until the guard
    /// drops; with `original`, the token is put back to the client's own on the way.
    pub fn route_progress(
        &self,
        token: &str,
        stream: ClientStream,
        original: Option<String>,
    ) -> ProgressRoute {
        lock(&self.shared.progress).insert(token.to_owned(), ProgressTarget { stream, original });
        ProgressRoute {
            shared: Arc::clone(&self.shared.0),
            token: token.to_owned(),
        }
    }

    /// Sends a notification or a response to the backend.
    pub async fn send(&self, message: &Message) -> Result<(), GatewayError> {
        if message.method() == McpMethod::NotificationsInitialized {
            lock(&self.shared.handshake).1 = true;
        }
        let tx = self.sender().await?;
        tx.send(message.clone()).await.map_err(|_| {
            unavailable(
                format!("backend {} connection lost", self.shared.namespace.as_str()),
                false,
            )
        })
    }

    /// Stops the backend: a stdio process gets stdin closed, then SIGTERM, then SIGKILL.
    pub fn stop(&self) {
        self.shared.request_stop();
    }
}

/// Where one call's progress goes.
#[derive(Debug, Clone)]
struct ProgressTarget {
    stream: ClientStream,
    /// The client's token, when the backend saw a gateway-made one.
    original: Option<String>,
}

/// Keeps a call's progress routed to its stream.
pub struct ProgressRoute {
    shared: Arc<Shared>,
    token: String,
}

impl Drop for ProgressRoute {
    fn drop(&mut self) {
        lock(&self.shared.progress).remove(&self.token);
    }
}

/// Cancels a call at the backend when its caller goes away (or it times out) before the answer.
struct CancelOnDrop<'a> {
    client: &'a BackendClient,
    id: u64,
    tx: &'a PipeTx,
    /// Where the answer, or the sweeper's timeout, comes.
    reply: oneshot::Receiver<Reply>,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Still waiting, or timed out by the sweeper with no one left to read it.
        let timed_out = matches!(&self.reply.try_recv(), Ok(Err(e)) if is_timeout(e));
        if self.client.shared.remove_pending(self.id) || timed_out {
            cancel_at_backend(self.tx, self.id);
        }
    }
}

/// Tells the backend to stop working on call `id`: its caller went away or timed out.
fn cancel_at_backend(tx: &PipeTx, id: u64) {
    let note = format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{id},"reason":"the gateway's caller went away or timed out"}}}}"#
    );
    if let Ok(note) = Message::parse(Bytes::from(note)) {
        let _ = tx.try_send(note);
    }
}

fn fail_pending(shared: &Shared, why: &str) {
    let pending: Vec<_> = lock(&shared.pending).calls.drain().collect();
    for (_, call) in pending {
        let _ = call.reply.send(Err(unavailable(
            format!("backend {} {why}", shared.namespace.as_str()),
            true,
        )));
    }
}

/// Delivers one message from the backend: answers to their calls, the rest to the session.
async fn deliver(shared: &Shared, events: &EventTarget, inbound: Inbound) {
    match inbound {
        Inbound::Message(msg) => match msg.kind() {
            Kind::Response | Kind::Error => match shared.take_waiter(&msg) {
                Some(waiter) => {
                    if shared.events_pending.swap(false, Ordering::SeqCst) {
                        let (passed, acked) = oneshot::channel();
                        if send_event(events, BackendEvent::Barrier(passed)).await {
                            let _ = acked.await;
                        }
                    }
                    let _ = waiter.send(Ok(msg));
                }
                None => {
                    tracing::debug!(backend = %shared.namespace.as_str(), id = msg.id_raw(), "answer to no pending call dropped")
                }
            },
            Kind::Request => {
                shared.events_pending.store(true, Ordering::SeqCst);
                send_event(events, BackendEvent::Request(shared.index, msg)).await;
            }
            Kind::Notification => {
                let stream = match msg.method() {
                    McpMethod::NotificationsProgress => msg
                        .param_raw("progressToken")
                        .and_then(|t| lock(&shared.progress).get(t).cloned()),
                    _ => None,
                };
                match stream {
                    Some(ProgressTarget { stream, original }) => {
                        let msg = match original {
                            Some(token) => msg.with_param("progressToken", &token),
                            None => msg,
                        };
                        let _ = stream.send(msg.into_raw()).await;
                    }
                    None => {
                        shared.events_pending.store(true, Ordering::SeqCst);
                        send_event(events, BackendEvent::Notification(shared.index, msg)).await;
                    }
                }
            }
        },
        Inbound::Garbage(why) => {
            shared
                .metrics
                .garbage
                .get_or_create(&BackendNameLabels {
                    backend: shared.namespace,
                    backend_type: shared.transport.as_str(),
                })
                .inc();
            tracing::warn!(backend = %shared.namespace.as_str(), error_type = "backend_protocol", reason = %why, "backend sent something that is not JSON-RPC; dropped");
        }
    }
}

/// Replays the session's handshake on a fresh connection before anyone else may use it.
async fn replay_handshake(
    shared: &Shared,
    pipe: &mut Pipe,
    events: &EventTarget,
) -> Result<(), String> {
    let (initialize, initialized) = lock(&shared.handshake).clone();
    let Some(initialize) = initialize else {
        return Ok(());
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    pipe.tx
        .send(initialize.with_id_number(id))
        .await
        .map_err(|_| "closed during the handshake")?;
    let answered = async {
        while let Some(inbound) = pipe.recv().await {
            if let Inbound::Message(msg) = &inbound {
                if matches!(msg.kind(), Kind::Response | Kind::Error)
                    && msg.id_raw() == Some(id.to_string().as_str())
                {
                    pipe.delivered();
                    return Ok(());
                }
            }
            deliver(shared, events, inbound).await;
            pipe.delivered();
        }
        Err("closed during the handshake")
    };
    tokio::time::timeout(shared.timeout, answered)
        .await
        .map_err(|_| "no answer to initialize")??;
    if initialized {
        let note = Message::parse(Bytes::from_static(
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        ))
        .map_err(|_| "invalid initialized notification")?;
        pipe.tx
            .send(note)
            .await
            .map_err(|_| "closed during the handshake")?;
    }
    Ok(())
}

async fn supervise(
    shared: Arc<Shared>,
    connector: Arc<dyn Connector>,
    events: EventTarget,
    restart: crate::config::RestartConfig,
) {
    let labels = BackendNameLabels {
        backend: shared.namespace,
        backend_type: shared.transport.as_str(),
    };
    let mut failures: VecDeque<Instant> = VecDeque::new();
    let mut backoff = Duration::from_millis(restart.backoff_initial_ms);
    let mut first = true;
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let connected = tokio::select! {
            c = connect(&*connector, &shared) => c,
            () = shared.stopped() => break,
        };
        match connected {
            Ok(mut pipe) => {
                let replayed = if first {
                    Ok(())
                } else {
                    // Boxed: a rare path should not widen every idle supervisor's task.
                    Box::pin(replay_handshake(&shared, &mut pipe, &events)).await
                };
                match replayed {
                    Ok(()) => {
                        if !first {
                            shared.metrics.restarts.get_or_create(&labels).inc();
                            let mechanism = match shared.transport {
                                BackendTransport::Stdio => RecoveryMechanism::Restart,
                                _ => RecoveryMechanism::Reconnect,
                            };
                            shared
                                .metrics
                                .gateway
                                .record_recovery(ErrorType::Unavailable, mechanism);
                            tracing::info!(backend = %shared.namespace.as_str(), "backend recovered");
                        }
                        first = false;
                        let up_since = Instant::now();
                        shared.link.send_replace(Link::Up(pipe.tx.clone()));
                        shared.metrics.up.get_or_create(&labels).inc();
                        let stop_requested = loop {
                            tokio::select! {
                                next = pipe.recv() => match next {
                                    Some(inbound) => {
                                        deliver(&shared, &events, inbound).await;
                                        pipe.delivered();
                                    }
                                    None => break false,
                                },
                                () = shared.stopped() => break true,
                            }
                        };
                        shared.metrics.up.get_or_create(&labels).dec();
                        shared.link.send_replace(Link::Connecting);
                        drop(pipe);
                        fail_pending(&shared, "connection lost");
                        if stop_requested {
                            break;
                        }
                        // A connection that stayed up a whole window earns a fresh backoff.
                        if up_since.elapsed() > Duration::from_secs(restart.window_secs) {
                            backoff = Duration::from_millis(restart.backoff_initial_ms);
                        }
                        tracing::warn!(backend = %shared.namespace.as_str(), "backend connection lost; restarting");
                    }
                    Err(why) => {
                        tracing::warn!(backend = %shared.namespace.as_str(), reason = why, "backend handshake replay failed")
                    }
                }
            }
            Err(why) => {
                tracing::warn!(backend = %shared.namespace.as_str(), reason = %why, "backend connect failed");
                if first {
                    shared
                        .link
                        .send_replace(Link::Down(Arc::from(why.as_str())));
                }
            }
        }
        let now = Instant::now();
        failures.push_back(now);
        while failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(restart.window_secs))
        {
            failures.pop_front();
        }
        if failures.len() > restart.max_restarts as usize {
            let why = format!(
                "{} failures within {} s (crash loop)",
                failures.len(),
                restart.window_secs
            );
            tracing::error!(backend = %shared.namespace.as_str(), reason = %why, "backend marked down");
            shared.metrics.marked_down.get_or_create(&labels).inc();
            shared
                .link
                .send_replace(Link::Down(Arc::from(why.as_str())));
            fail_pending(&shared, "is down");
            break;
        }
        let jittered = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
        tokio::select! {
            () = Box::pin(tokio::time::sleep(jittered)) => {}
            () = shared.stopped() => break,
        }
        backoff = (backoff * 2).min(Duration::from_millis(restart.backoff_max_ms));
        if first {
            shared.link.send_replace(Link::Connecting);
        }
    }
    if !matches!(&*shared.link.borrow(), Link::Down(_)) {
        shared.link.send_replace(Link::Down(Arc::from("stopped")));
    }
    fail_pending(&shared, "stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// A backend that takes every message, shows it to the test, and answers none.
    struct Silent {
        seen: mpsc::UnboundedSender<Message>,
        /// Held: the connection ends when its inbox goes.
        inboxes: Mutex<Vec<Inbox>>,
    }

    impl Connector for Silent {
        fn connect(&self, inbox: Inbox) -> crate::mcp::BoxFuture<Result<PipeTx, String>> {
            lock(&self.inboxes).push(inbox);
            let (tx, mut rx) = mpsc::channel::<Message>(16);
            let seen = self.seen.clone();
            tokio::spawn(async move {
                while let Some(msg) = rx.recv().await {
                    let _ = seen.send(msg);
                }
            });
            Box::pin(async move { Ok(PipeTx::Queue(tx)) })
        }
    }

    fn silent_backend(timeout_secs: u64) -> (BackendClient, mpsc::UnboundedReceiver<Message>) {
        let yaml = format!(
            "backends:\n  - {{namespace: s, transport: stdio, command: /bin/true, timeout_secs: {timeout_secs}}}\n"
        );
        let config = Config::from_yaml(&yaml).unwrap().backends.remove(0);
        let (seen, rx) = mpsc::unbounded_channel();
        let connector = Arc::new(Silent {
            seen,
            inboxes: Mutex::default(),
        });
        let mut registry = Registry::default();
        let metrics = BackendMetrics::register(
            &mut registry,
            GatewayMetrics::register(&mut Registry::default()),
        );
        let client = BackendClient::start(0, &config, connector, Arc::new(|| None), metrics);
        (client, rx)
    }

    fn call_request() -> Message {
        Message::parse(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}"#,
        ))
        .unwrap()
    }

    /// The latest a call may time out in these tests: its deadline, the sweeper's period, and
    /// room for a loaded machine.
    const LATE: Duration = Duration::from_millis(100 + 400);

    #[tokio::test]
    async fn unanswered_calls_time_out_at_their_deadline_and_are_cancelled() {
        let timeout = Duration::from_secs(1);
        let (client, mut seen) = silent_backend(timeout.as_secs());
        let request = call_request();
        // Calls that start at different points between the sweeper's looks.
        let offsets_ms = [0, 1, 37, 99, 150, 420];
        let calls = offsets_ms.map(|offset| {
            let client = client.clone();
            let request = request.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(offset)).await;
                let id = client.next_id();
                let started = Instant::now();
                let reply = client.call(id, request.with_id_number(id), &request).await;
                (id, started.elapsed(), reply)
            })
        });
        let mut timed_out = Vec::new();
        for call in calls {
            let (id, waited, reply) = call.await.unwrap();
            let error = reply.expect_err("nobody answers");
            assert_eq!(error.class().error_type, ErrorType::Timeout, "{error}");
            assert!(
                waited >= timeout && waited <= timeout + LATE,
                "call {id} timed out after {waited:?}"
            );
            timed_out.push(id);
        }
        // Each call reached the backend, and then its cancellation.
        let mut cancelled = Vec::new();
        while let Ok(msg) = seen.try_recv() {
            if msg.method_name() == Some("notifications/cancelled") {
                cancelled.push(msg.param_raw("requestId").unwrap().parse::<u64>().unwrap());
            }
        }
        cancelled.sort_unstable();
        timed_out.sort_unstable();
        assert_eq!(cancelled, timed_out);
        // With nothing left to time out, the sweeper lets the client go at its next look.
        tokio::time::sleep(LATE).await;
        assert!(!lock(&client.shared.pending).swept);
    }

    #[tokio::test]
    async fn an_answered_call_is_not_timed_out_and_the_next_is_watched_again() {
        let timeout = Duration::from_secs(1);
        let (client, mut seen) = silent_backend(timeout.as_secs());
        let request = call_request();
        let answer = |id: u64| {
            let raw = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#);
            Message::parse(Bytes::from(raw)).unwrap()
        };
        for round in 0..2 {
            let id = client.next_id();
            let call = client.call(id, request.with_id_number(id), &request);
            let answering = async {
                let sent = seen.recv().await.unwrap();
                assert_eq!(sent.id_number(), Some(id));
                assert!(lock(&client.shared.pending).swept, "round {round}");
                tokio::time::sleep(timeout - Duration::from_millis(300)).await;
                let waiter = client.shared.take_waiter(&answer(id)).unwrap();
                waiter.send(Ok(answer(id))).unwrap();
            };
            let (reply, ()) = tokio::join!(call, answering);
            assert!(reply.is_ok(), "round {round}: {reply:?}");
            tokio::time::sleep(LATE).await;
            assert!(!lock(&client.shared.pending).swept, "round {round}");
        }
        assert!(seen.try_recv().is_err(), "no cancellation was sent");
    }

    #[tokio::test]
    async fn a_call_dropped_with_its_timeout_unread_still_cancels_at_the_backend() {
        let (client, mut seen) = silent_backend(1);
        let request = call_request();
        let id = client.next_id();
        {
            let mut call = std::pin::pin!(client.call(id, request.with_id_number(id), &request));
            let sent = tokio::select! {
                _ = &mut call => panic!("nobody answers"),
                sent = seen.recv() => sent.unwrap(),
            };
            assert_eq!(sent.id_number(), Some(id));
            // Left unpolled past its deadline: the sweeper's timeout waits unread.
            tokio::time::sleep(Duration::from_secs(1) + LATE).await;
            assert!(
                lock(&client.shared.pending).calls.is_empty(),
                "the sweeper took it"
            );
        }
        let cancel = tokio::time::timeout(LATE, seen.recv()).await;
        let cancel = cancel.expect("a cancellation").unwrap();
        assert_eq!(cancel.method_name(), Some("notifications/cancelled"));
        assert_eq!(cancel.param_raw("requestId"), Some(id.to_string().as_str()));
    }
}
