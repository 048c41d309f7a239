//! One client session of the proxy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::join_all;
use mcp_gateway_layers::BoxError;
use mcp_gateway_layers::classify::{
    Component, ErrorClass, ErrorType, GatewayError, classify_error, code,
};
use mcp_gateway_layers::hash::OwnKeys;
use mcp_gateway_layers::jsonrpc::{Kind, McpMethod, Message, RawId, set_members};
use mcp_gateway_layers::parts::{JsonRpcRequest, JsonRpcResponse, Namespace, RequestParts};
use mcp_gateway_layers::trace::{Hex, SpanId, TraceContext};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower::Service;

use super::names::{self, Names, decode_cursor, encode_cursor};
use super::{GatewayInner, MessageStack};
use crate::backend::{BackendClient, BackendEvent, EventTarget, Forwarded, connector};
use crate::lock;
use crate::mcp::{
    BoxFuture, Boxed, ClientStream, ClientTransport, Outbox, RequestContext, Session,
    class_error_response, negotiate_version, result_message,
};
use crate::telemetry::SessionGuard;

/// Where messages related to a request go while it runs (a Streamable HTTP POST's SSE stream).
#[derive(Debug, Clone)]
struct Related(mpsc::Sender<Bytes>);

/// The backend and original name a prefixed tool or prompt name resolved to.
struct Route(usize, String);

/// The server capabilities the gateway can route across backends.
const ROUTED_CAPABILITIES: [&str; 5] = ["tools", "prompts", "resources", "logging", "completions"];

/// The routed capabilities `caps` declares, as bits in [`ROUTED_CAPABILITIES`] order.
fn capability_bits(caps: &Value) -> u8 {
    ROUTED_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(_, name)| caps.get(**name).is_some())
        .fold(0, |bits, (i, _)| bits | 1 << i)
}

/// Whether a backend's capability bits include `capability`.
fn declares(bits: Option<u8>, capability: &str) -> bool {
    let position = ROUTED_CAPABILITIES.iter().position(|c| *c == capability);
    bits.zip(position)
        .is_some_and(|(bits, i)| bits & (1 << i) != 0)
}

fn json_string(s: &str) -> String {
    // A string always serializes; no `Value` is built on the way.
    serde_json::to_string(s).unwrap_or_default()
}

fn routing_error(error_type: ErrorType, code: i32, message: String) -> GatewayError {
    GatewayError::new(
        ErrorClass::new(error_type, Component::Router).with_jsonrpc_code(code),
        message,
    )
}

#[derive(Default)]
struct State {
    backends: Vec<BackendClient>,
    /// Which of the routed capabilities each backend declared in its `initialize` answer, as
    /// bits in [`ROUTED_CAPABILITIES`] order (`None`: it did not answer).
    capabilities: Vec<Option<u8>>,
    initialized: bool,
    names: Names,
    resource_owner: HashMap<String, usize>,
    template_owner: Vec<(String, usize)>,
    /// The client's requests in flight, for cancellation: (backend, gateway id) → client id (raw
    /// JSON). Keyed by the gateway's ids, which a fast hash serves (a
    /// client chooses its ids); a cancel, which is rare, looks through the values.
    in_flight: HashMap<(usize, u64), RawId, OwnKeys>,
    /// The backends' requests to the client: gateway id → (backend, backend's id).
    server_requests: HashMap<String, (usize, String)>,
    /// Progress tokens of backends' requests to the client → backend.
    server_tokens: HashMap<String, usize>,
    /// Streams of requests in flight, by backend, for the backend's own requests meanwhile.
    related: Vec<(usize, u64, mpsc::Sender<Bytes>)>,
}

/// One client session of the proxy.
pub struct ProxySession {
    gateway: Arc<GatewayInner>,
    outbox: Outbox,
    /// Called where it is kept, not cloned for each call (`call_kept`).
    stack: Mutex<MessageStack>,
    state: Mutex<State>,
    events: Mutex<Events>,
    this: Weak<ProxySession>,
    next_server_request: AtomicU64,
    closed: AtomicBool,
    counted: Mutex<Option<SessionGuard>>,
    /// Names this session to shared backends.
    key: u64,
}

/// What a forwarded request changes on its way to the backend, besides its id and `_meta`.
#[derive(Clone, Copy)]
struct Rewrite<'a> {
    /// `params` members set to raw JSON: the tool's name without its namespace, a completion's ref.
    params: &'a [(&'a str, &'a str)],
    /// The tool or prompt name the backend knows, for the call's span.
    tool: Option<&'a str>,
}

impl Rewrite<'_> {
    const NONE: Rewrite<'static> = Rewrite {
        params: &[],
        tool: None,
    };
}

/// The session's queue for its backends' own messages (requests and notifications).
enum Events {
    /// None came yet: an idle session holds no queue and no task to drain one.
    Unopened,
    Open(mpsc::Sender<BackendEvent>),
    Closed,
}

static NEXT_SESSION_KEY: AtomicU64 = AtomicU64::new(1);

/// The innermost service of the per-message stack: routes a request to its backends.
#[derive(Clone)]
pub(crate) struct Router {
    session: Weak<ProxySession>,
}

impl Service<JsonRpcRequest> for Router {
    type Response = JsonRpcResponse;
    type Error = BoxError;
    type Future = BoxFuture<Result<JsonRpcResponse, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: JsonRpcRequest) -> Self::Future {
        let Some(session) = self.session.upgrade() else {
            let closed = GatewayError::new(
                ErrorClass::new(ErrorType::Canceled, Component::Client),
                "session closed",
            );
            return Box::pin(std::future::ready(Err(closed.into())));
        };
        // The route's own future, made in its box: a block awaiting it would be copied whole first.
        crate::mcp::box_made(|| {
            session
                .route(req)
                .map(|routed| Ok(JsonRpcResponse::new(routed?)))
        })
    }
}

#[derive(Deserialize)]
struct Page<'a> {
    #[serde(borrow, default)]
    tools: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    prompts: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    resources: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default, rename = "resourceTemplates")]
    resource_templates: Option<Vec<&'a RawValue>>,
    #[serde(default, rename = "nextCursor")]
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct ResultOf<'a> {
    #[serde(borrow)]
    result: Page<'a>,
}

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uri: Option<String>,
    #[serde(default, rename = "uriTemplate")]
    uri_template: Option<String>,
}

#[derive(Clone, Copy)]
enum ListKind {
    Tools,
    Prompts,
    Resources,
    Templates,
}

impl ListKind {
    fn key(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::Templates => "resourceTemplates",
        }
    }

    fn capability(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources | ListKind::Templates => "resources",
        }
    }
}

/// Ends a call's registration with a shared backend, however the call ends.
struct SharedCall<'a>(&'a super::shared::SharedBackend, u64);

impl Drop for SharedCall<'_> {
    fn drop(&mut self) {
        self.0.call_ended(self.1);
    }
}

/// Removes what a forwarded call registered, however the call ends.
struct InFlightGuard<'a> {
    session: &'a ProxySession,
    backend: usize,
    id: u64,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.session.state);
        let (backend, id) = (self.backend, self.id);
        state.in_flight.remove(&(backend, id));
        state
            .related
            .retain(|(b, i, _)| !(*b == backend && *i == id));
    }
}

impl ProxySession {
    pub(crate) fn open(
        gateway: Arc<GatewayInner>,
        transport: ClientTransport,
        outbox: Outbox,
    ) -> Arc<ProxySession> {
        let counted = gateway.telemetry.session_opened(transport);
        Arc::new_cyclic(|weak: &Weak<ProxySession>| ProxySession {
            stack: Mutex::new(gateway.stack(Router {
                session: weak.clone(),
            })),
            gateway: gateway.clone(),
            outbox,
            state: Mutex::default(),
            events: Mutex::new(Events::Unopened),
            this: weak.clone(),
            next_server_request: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            counted: Mutex::new(Some(counted)),
            key: NEXT_SESSION_KEY.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The queue for backends' own messages, made with the task that drains it on first use.
    fn event_sender(&self) -> Option<mpsc::Sender<BackendEvent>> {
        let mut events = lock(&self.events);
        match &*events {
            Events::Open(queue) => Some(queue.clone()),
            Events::Closed => None,
            Events::Unopened => {
                let (queue, rx) = mpsc::channel(256);
                tokio::spawn(dispatch_events(self.this.clone(), rx));
                *events = Events::Open(queue.clone());
                Some(queue)
            }
        }
    }

    fn resolve_name(&self, prefixed: &str) -> Option<Route> {
        self.resolve(prefixed, |i, name| Route(i, name.to_owned()))
    }

    /// The backend a prefixed name belongs to, for the request's namespace label.
    fn resolve_backend(&self, prefixed: &str) -> Option<usize> {
        self.resolve(prefixed, |i, _| i)
    }

    fn resolve<T>(&self, prefixed: &str, found: impl FnOnce(usize, &str) -> T) -> Option<T> {
        let sep = &self.gateway.config.tool_name_separator;
        let namespaces = self.gateway.backends.iter().map(|b| b.namespace.as_str());
        if !names::may_be_shortened(prefixed) {
            let (index, name) = names::resolve_unshortened(namespaces, sep, prefixed)?;
            return Some(found(index, name));
        }
        let state = lock(&self.state);
        let (index, name) = state.names.resolve(namespaces, sep, prefixed)?;
        Some(found(index, name))
    }

    /// Sends a request to backend `index` and waits for its answer, keeping what cancellation,
    /// progress and the backend's own requests need to find their way.
    async fn forward(
        &self,
        index: usize,
        msg: &Message,
        rewrite: Rewrite<'_>,
        related: Option<&Related>,
        trace: Option<&TraceContext>,
    ) -> Result<Message, GatewayError> {
        // One lock for the client and the call's entries: each take and release of it is two
        // atomic read-modify-writes.
        let (client, id) = {
            let mut state = lock(&self.state);
            let client = state.backends.get(index).cloned().ok_or_else(|| {
                GatewayError::new(
                    ErrorClass::new(ErrorType::Validation, Component::Router),
                    "send initialize first",
                )
            })?;
            let id = client.next_id();
            if let Some(client_id) = msg.id_bytes() {
                state.in_flight.insert((index, id), client_id);
            }
            if let Some(related) = related {
                state.related.push((index, id, related.0.clone()));
            }
            (client, id)
        };
        let _guard = InFlightGuard {
            session: self,
            backend: index,
            id,
        };
        let shared = self.gateway.backends[index]
            .shared
            .then(|| self.gateway.shared_backend(index));
        let _shared_call = shared.as_ref().map(|s| {
            s.call_started(id, self.key);
            SharedCall(s, id)
        });
        let mut unique_token = None;
        // Progress goes to the call's stream, else the session's outbox, in arrival order. A
        // shared process sees a token unique across sessions, put back on the way out.
        let _progress = msg.meta_progress_token().map(|token| {
            let stream = related.map_or_else(
                || self.outbox.stream(),
                |r| ClientStream::Channel(r.0.clone()),
            );
            match &shared {
                Some(shared) => {
                    let unique = shared.unique_token();
                    let route = client.route_progress(
                        &json_string(&unique),
                        stream,
                        Some(token.to_owned()),
                    );
                    unique_token = Some(unique);
                    route
                }
                None => client.route_progress(token, stream, None),
            }
        });
        // Made in a block of their own: what only makes the outgoing message is not kept in the
        // call's future while the backend answers.
        let (span, outgoing) = {
            let unique_token = unique_token;
            // The backend call's span is a child of the request's; stdio and WebSocket carry it
            // only in _meta, HTTP transports also in headers.
            let call_ctx = trace.map(TraceContext::child);
            // Only a sampled call gets a span of its own (it is exported); log lines of an
            // unsampled one carry the request's span and trace id.
            let span = match call_ctx.as_ref().filter(|ctx| ctx.sampled) {
                Some(ctx) => {
                    let parent_hex = ctx.parent_span_id.map(SpanId::hex);
                    tracing::info_span!(
                        "mcp.client",
                        otel.kind = "client",
                        sampled = ctx.sampled,
                        trace_id = ctx.trace_id.hex().as_str(),
                        span_id = ctx.span_id.hex().as_str(),
                        parent_span_id = parent_hex.as_ref().map(Hex::as_str),
                        mcp.method.name = msg.method_name(),
                        jsonrpc.request.id = msg.id_raw(),
                        gen_ai.tool.name = rewrite.tool.or(msg.tool_name()),
                        network.transport = if self.gateway.backends[index].transport == crate::config::BackendTransport::Stdio { "pipe" } else { "tcp" },
                        mcp.backend = self.gateway.backends[index].namespace.as_str(),
                        error.type = tracing::field::Empty,
                    )
                }
                None => tracing::Span::none(),
            };
            let traceparent = call_ctx.as_ref().map(TraceContext::traceparent);
            // One rewrite (and one parse) for everything the backend sees differently, the id
            // among it; the members are at most these two, kept on the stack.
            let mut members = [("", ""); 2];
            let mut count = 0;
            for member in [
                unique_token.as_deref().map(|t| ("progressToken", t)),
                traceparent.as_deref().map(|t| ("traceparent", t)),
            ]
            .into_iter()
            .flatten()
            {
                members[count] = member;
                count += 1;
            }
            let outgoing = msg.with_params_and_id(rewrite.params, &members[..count], id);
            (span, outgoing)
        };
        // An unsampled call has no span to enter on every poll.
        let result = if span.is_none() {
            client.call(id, outgoing, msg).await
        } else {
            tracing::Instrument::instrument(client.call(id, outgoing, msg), span.clone()).await
        };
        let failure = match &result {
            Ok(resp) => resp.failure_class(Component::Backend).map(|c| c.error_type),
            Err(e) => Some(e.class().error_type),
        };
        if let Some(error_type) = failure {
            span.record("error.type", error_type.as_str());
        }
        result
    }

    async fn route(self: Arc<Self>, req: JsonRpcRequest) -> Result<Message, GatewayError> {
        let msg = &req.message;
        let related = req.extensions.get::<Related>();
        let trace = req.trace_context();
        let id = msg.id_raw();
        let method = msg.method();
        if method == McpMethod::Initialize {
            return self.initialize(msg, &req).await;
        }
        if method == McpMethod::Ping {
            return Ok(result_message(id, "{}"));
        }
        if !lock(&self.state).initialized {
            return Err(GatewayError::new(
                ErrorClass::new(ErrorType::Validation, Component::Client)
                    .with_jsonrpc_code(code::INVALID_REQUEST),
                "send initialize first",
            ));
        }
        match method {
            McpMethod::ToolsList => self.list(ListKind::Tools, msg, trace).await,
            McpMethod::PromptsList => self.list(ListKind::Prompts, msg, trace).await,
            McpMethod::ResourcesList => self.list(ListKind::Resources, msg, trace).await,
            McpMethod::ResourcesTemplatesList => self.list(ListKind::Templates, msg, trace).await,
            McpMethod::ToolsCall | McpMethod::PromptsGet => {
                let what = if method == McpMethod::ToolsCall {
                    "tool"
                } else {
                    "prompt"
                };
                // Resolved again rather than carried from the namespace label: an extension would
                // be an allocation and a copy in the retry layer's clone of every call.
                let route = msg.tool_name().and_then(|n| self.resolve_name(n));
                let Some(Route(index, name)) = route else {
                    let name = msg.tool_name().unwrap_or("");
                    return Err(routing_error(
                        ErrorType::NotFound,
                        code::INVALID_PARAMS,
                        format!("unknown {what}: {name}"),
                    ));
                };
                let backend_name = json_string(&name);
                let rewrite = Rewrite {
                    params: &[("name", &backend_name)],
                    tool: Some(&name),
                };
                self.forward(index, msg, rewrite, related, trace).await
            }
            McpMethod::ResourcesRead
            | McpMethod::ResourcesSubscribe
            | McpMethod::ResourcesUnsubscribe => {
                let uri = param_str(msg, "uri").unwrap_or_default();
                let index = self.resource_backend(&uri).ok_or_else(|| {
                    routing_error(
                        ErrorType::NotFound,
                        code::RESOURCE_NOT_FOUND,
                        format!("unknown resource: {uri}"),
                    )
                })?;
                self.forward(index, msg, Rewrite::NONE, related, trace)
                    .await
            }
            McpMethod::CompletionComplete => {
                // Boxed: larger than a forwarded call, and rarer (see `Boxed`).
                let complete: Boxed<'_, _> = Box::pin(self.complete(msg, related, trace));
                complete.await
            }
            McpMethod::LoggingSetLevel => {
                let count = lock(&self.state).backends.len();
                join_all((0..count).map(|i| self.forward(i, msg, Rewrite::NONE, None, trace)))
                    .await;
                Ok(result_message(id, "{}"))
            }
            _ if self.gateway.backends.len() == 1 => {
                self.forward(0, msg, Rewrite::NONE, related, trace).await
            }
            _ => Err(routing_error(
                ErrorType::NotFound,
                code::METHOD_NOT_FOUND,
                format!("method not found: {}", msg.method_name().unwrap_or("")),
            )),
        }
    }

    async fn initialize(
        &self,
        msg: &Message,
        req: &JsonRpcRequest,
    ) -> Result<Message, GatewayError> {
        let requested = param_str(msg, "protocolVersion");
        let version = negotiate_version(requested.as_deref());
        let forwarded = Forwarded {
            authorization: self
                .gateway
                .config
                .forward_credentials
                .then(|| {
                    RequestParts::header(req, &http::header::AUTHORIZATION)
                        .and_then(|v| http::HeaderValue::from_bytes(v).ok())
                })
                .flatten(),
        };
        let this = self.this.clone();
        let events: EventTarget = Arc::new(move || this.upgrade()?.event_sender());
        let clients = {
            if matches!(*lock(&self.events), Events::Closed) {
                return Err(GatewayError::new(
                    ErrorClass::new(ErrorType::Canceled, Component::Client),
                    "session closed",
                ));
            }
            let mut state = lock(&self.state);
            if !state.backends.is_empty() {
                return Err(GatewayError::new(
                    ErrorClass::new(ErrorType::Validation, Component::Client)
                        .with_jsonrpc_code(code::INVALID_REQUEST),
                    "the session is already initialized",
                ));
            }
            state.backends = self
                .gateway
                .backends
                .iter()
                .enumerate()
                .map(|(i, config)| {
                    if config.shared {
                        let shared = self.gateway.shared_backend(i);
                        if let Some(queue) = self.event_sender() {
                            shared.subscribe(self.key, queue);
                        }
                        return shared.client.clone();
                    }
                    let connector = if forwarded.authorization.is_none() {
                        self.gateway.connectors[i].clone()
                    } else {
                        connector(
                            config.clone(),
                            self.gateway.config.limits.max_message_bytes,
                            forwarded.clone(),
                            &self.gateway.http_pool,
                        )
                    };
                    BackendClient::start(
                        i,
                        config,
                        connector,
                        events.clone(),
                        self.gateway.telemetry.backends.clone(),
                    )
                })
                .collect();
            state.backends.clone()
        };
        let to_backends = msg.with_param("protocolVersion", &json_string(version));
        let trace = req.trace_context();
        let to_backends = &to_backends;
        let answers = join_all(clients.iter().enumerate().map(|(i, _)| async move {
            if !self.gateway.backends[i].shared {
                return self
                    .forward(i, to_backends, Rewrite::NONE, None, trace)
                    .await;
            }
            // A shared process is initialized once; later sessions read its first answer.
            let shared = self.gateway.shared_backend(i);
            let first = shared
                .initialized
                .get_or_try_init(|| self.forward(i, to_backends, Rewrite::NONE, None, trace))
                .await?;
            Ok(first.clone())
        }))
        .await;
        let mut capabilities = serde_json::Map::new();
        let mut per_backend = Vec::with_capacity(answers.len());
        for (answer, client) in answers.into_iter().zip(&clients) {
            let caps = match answer {
                Ok(resp) => serde_json::from_slice::<Value>(resp.raw())
                    .ok()
                    .and_then(|v| v["result"].get("capabilities").cloned()),
                Err(e) => {
                    tracing::warn!(
                        backend = client.namespace().as_str(),
                        error_type = e.class().error_type.as_str(),
                        reason = e.message(),
                        "backend did not initialize; left out"
                    );
                    None
                }
            };
            if let Some(Value::Object(caps)) = &caps {
                // Only what the gateway routes: a capability it cannot serve would be a promise broken.
                for (key, value) in caps
                    .iter()
                    .filter(|(k, _)| ROUTED_CAPABILITIES.contains(&k.as_str()))
                {
                    merge_capability(
                        capabilities.entry(key.clone()).or_insert_with(|| json!({})),
                        value,
                    );
                }
            }
            per_backend.push(caps.as_ref().map(capability_bits));
        }
        capabilities.entry("tools").or_insert_with(|| json!({}));
        {
            let mut state = lock(&self.state);
            state.capabilities = per_backend;
            state.initialized = true;
        }
        let result = json!({
            "protocolVersion": version,
            "capabilities": capabilities,
            "serverInfo": {"name": "mcp-gateway", "version": env!("CARGO_PKG_VERSION")},
        });
        Ok(result_message(msg.id_raw(), &result.to_string()))
    }

    async fn list(
        &self,
        kind: ListKind,
        msg: &Message,
        trace: Option<&TraceContext>,
    ) -> Result<Message, GatewayError> {
        let targets: Vec<(usize, Option<String>)> = match param_str(msg, "cursor") {
            Some(cursor) => decode_cursor(&cursor)
                .ok_or_else(|| {
                    routing_error(
                        ErrorType::Validation,
                        code::INVALID_PARAMS,
                        "invalid cursor".to_owned(),
                    )
                })?
                .into_iter()
                .map(|(i, c)| (i, Some(c)))
                .collect(),
            None => {
                let state = lock(&self.state);
                let has = |caps: &Option<u8>| declares(*caps, kind.capability());
                (0..state.backends.len())
                    .filter(|i| has(&state.capabilities[*i]))
                    .map(|i| (i, None))
                    .collect()
            }
        };
        let namespaces = self.gateway.namespaces.clone();
        let requests: Vec<(usize, Message)> = targets
            .into_iter()
            .filter(|(i, _)| *i < namespaces.len())
            .map(|(i, cursor)| {
                (
                    i,
                    match cursor {
                        Some(c) => msg.with_param("cursor", &json_string(&c)),
                        None => msg.clone(),
                    },
                )
            })
            .collect();
        let answers = join_all(
            requests
                .iter()
                .map(|(i, m)| self.forward(*i, m, Rewrite::NONE, None, trace)),
        )
        .await;
        let sep = self.gateway.config.tool_name_separator.clone();
        let mut items: Vec<String> = Vec::new();
        let mut next = Vec::new();
        let mut state = lock(&self.state);
        for ((index, _), answer) in requests.iter().zip(answers) {
            let namespace = namespaces[*index].as_str();
            let resp = match answer {
                Ok(resp) if resp.kind() == Kind::Response => resp,
                Ok(resp) => {
                    tracing::warn!(
                        backend = namespace,
                        code = resp.error_code(),
                        list = kind.key(),
                        "backend answered the list with an error; left out"
                    );
                    continue;
                }
                Err(e) => {
                    tracing::warn!(
                        backend = namespace,
                        error_type = e.class().error_type.as_str(),
                        reason = e.message(),
                        list = kind.key(),
                        "backend left out of the list"
                    );
                    continue;
                }
            };
            let Ok(page) = serde_json::from_slice::<ResultOf<'_>>(resp.raw()) else {
                tracing::warn!(
                    backend = namespace,
                    list = kind.key(),
                    "backend's list answer is malformed; left out"
                );
                continue;
            };
            let page = page.result;
            let entries = match kind {
                ListKind::Tools => page.tools,
                ListKind::Prompts => page.prompts,
                ListKind::Resources => page.resources,
                ListKind::Templates => page.resource_templates,
            };
            for item in entries.unwrap_or_default() {
                let Ok(named) = serde_json::from_str::<Named>(item.get()) else {
                    continue;
                };
                match kind {
                    ListKind::Tools | ListKind::Prompts => {
                        let Some(name) = named.name else { continue };
                        let prefixed = state.names.prefixed(*index, namespace, &sep, &name);
                        if let Some(rewritten) =
                            set_members(item.get(), &[("name", &json_string(&prefixed))])
                        {
                            items.push(rewritten);
                        }
                    }
                    ListKind::Resources => {
                        if let Some(uri) = named.uri {
                            state.resource_owner.insert(uri, *index);
                        }
                        items.push(item.get().to_owned());
                    }
                    ListKind::Templates => {
                        if let Some(template) = named.uri_template {
                            let prefix = template.split('{').next().unwrap_or("").to_owned();
                            if !state
                                .template_owner
                                .iter()
                                .any(|(p, i)| *p == prefix && i == index)
                            {
                                state.template_owner.push((prefix, *index));
                            }
                        }
                        items.push(item.get().to_owned());
                    }
                }
            }
            if let Some(cursor) = page.next_cursor {
                next.push((*index, cursor));
            }
        }
        drop(state);
        let next = if next.is_empty() {
            String::new()
        } else {
            format!(",\"nextCursor\":{}", json_string(&encode_cursor(&next)))
        };
        let result = format!("{{\"{}\":[{}]{next}}}", kind.key(), items.join(","));
        Ok(result_message(msg.id_raw(), &result))
    }

    fn resource_backend(&self, uri: &str) -> Option<usize> {
        let state = lock(&self.state);
        if let Some(index) = state.resource_owner.get(uri) {
            return Some(*index);
        }
        let by_template = state
            .template_owner
            .iter()
            .filter(|(prefix, _)| !prefix.is_empty() && uri.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, i)| *i);
        by_template.or_else(|| {
            let with_resources: Vec<usize> = (0..state.capabilities.len())
                .filter(|i| declares(state.capabilities[*i], "resources"))
                .collect();
            (with_resources.len() == 1).then(|| with_resources[0])
        })
    }

    async fn complete(
        &self,
        msg: &Message,
        related: Option<&Related>,
        trace: Option<&TraceContext>,
    ) -> Result<Message, GatewayError> {
        #[derive(Deserialize)]
        struct Peek<'a> {
            #[serde(borrow)]
            params: Params<'a>,
        }
        #[derive(Deserialize)]
        struct Params<'a> {
            #[serde(borrow, rename = "ref")]
            reference: &'a RawValue,
        }
        let unknown = || {
            routing_error(
                ErrorType::NotFound,
                code::INVALID_PARAMS,
                "unknown completion reference".to_owned(),
            )
        };
        let peek: Peek<'_> = serde_json::from_slice(msg.raw()).map_err(|_| unknown())?;
        let reference: Named =
            serde_json::from_str(peek.params.reference.get()).map_err(|_| unknown())?;
        if let Some(name) = reference.name {
            let Route(index, original) = self.resolve_name(&name).ok_or_else(unknown)?;
            let rewritten = set_members(
                peek.params.reference.get(),
                &[("name", &json_string(&original))],
            )
            .ok_or_else(unknown)?;
            return self
                .forward(
                    index,
                    msg,
                    Rewrite {
                        params: &[("ref", &rewritten)],
                        tool: None,
                    },
                    related,
                    trace,
                )
                .await;
        }
        let uri = reference.uri.ok_or_else(unknown)?;
        let index = self.resource_backend(&uri).ok_or_else(unknown)?;
        self.forward(index, msg, Rewrite::NONE, related, trace)
            .await
    }

    /// A notification from the client.
    async fn notify(&self, msg: Message) {
        let backends = lock(&self.state).backends.clone();
        match msg.method() {
            McpMethod::NotificationsCancelled => {
                let Some(request_id) = param_raw(&msg, "requestId") else {
                    return;
                };
                let owner = lock(&self.state)
                    .in_flight
                    .iter()
                    .find(|(_, client_id)| client_id[..] == *request_id.as_bytes())
                    .map(|(owner, _)| *owner);
                if let Some((index, id)) = owner {
                    let note = msg.with_param("requestId", &id.to_string());
                    if let Some(client) = backends.get(index) {
                        let _ = client.send(&note).await;
                    }
                }
            }
            McpMethod::NotificationsProgress => {
                let Some(token) = param_raw(&msg, "progressToken") else {
                    return;
                };
                let owner = lock(&self.state).server_tokens.get(&token).copied();
                if let Some(client) = owner.and_then(|i| backends.get(i)) {
                    let _ = client.send(&msg).await;
                }
            }
            _ => {
                let initialized = msg.method() == McpMethod::NotificationsInitialized;
                for (i, client) in backends.iter().enumerate() {
                    // A shared process hears `initialized` once, from the session that initialized it.
                    if initialized
                        && self.gateway.backends[i].shared
                        && !self.gateway.shared_backend(i).first_initialized()
                    {
                        continue;
                    }
                    let _ = client.send(&msg).await;
                }
            }
        }
    }

    /// The client's answer to a backend's request goes back to that backend, under its own id.
    async fn answer_backend(&self, msg: Message) {
        let Some(id) = msg.id_raw() else { return };
        let (owner, client) = {
            let mut state = lock(&self.state);
            let owner = state.server_requests.remove(id);
            let client = owner
                .as_ref()
                .and_then(|(i, _)| state.backends.get(*i).cloned());
            (owner, client)
        };
        match (owner, client) {
            (Some((_, original)), Some(client)) => {
                let _ = client.send(&msg.with_id(&original)).await;
            }
            _ => tracing::debug!(id, "answer to no backend request dropped"),
        }
    }

    /// A message from a backend to the client: to the stream of a related request, else the outbox.
    async fn to_client(&self, raw: Bytes, stream: Option<mpsc::Sender<Bytes>>) {
        if let Some(stream) = stream {
            match stream.send(raw).await {
                Ok(()) => return,
                Err(e) => {
                    let _ = self.outbox.send(e.0).await;
                    return;
                }
            }
        }
        let _ = self.outbox.send(raw).await;
    }
}

/// Merges one backend's capability object into the gateway's: objects union, flags OR.
fn merge_capability(into: &mut Value, from: &Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        for (key, value) in from {
            match (into.get_mut(key), value) {
                (Some(Value::Bool(have)), Value::Bool(more)) => *have |= more,
                (Some(_), _) => {}
                (None, _) => {
                    into.insert(key.clone(), value.clone());
                }
            }
        }
    }
}

/// `params.{key}` as a string.
fn param_str(msg: &Message, key: &str) -> Option<String> {
    let value: Value = serde_json::from_slice(msg.raw()).ok()?;
    value.get("params")?.get(key)?.as_str().map(str::to_owned)
}

/// `params.{key}` as raw JSON text, as ids and tokens are compared.
fn param_raw(msg: &Message, key: &str) -> Option<String> {
    msg.param_raw(key).map(str::to_owned)
}

/// Delivers the backends' own messages for one session until it closes.
async fn dispatch_events(session: Weak<ProxySession>, mut events: mpsc::Receiver<BackendEvent>) {
    while let Some(event) = events.recv().await {
        let Some(session) = session.upgrade() else {
            return;
        };
        match event {
            BackendEvent::Request(index, msg) => {
                let client_id = format!(
                    "\"gw-{}\"",
                    session.next_server_request.fetch_add(1, Ordering::Relaxed)
                );
                let stream = {
                    let mut state = lock(&session.state);
                    state.server_requests.insert(
                        client_id.clone(),
                        (index, msg.id_raw().unwrap_or("null").to_owned()),
                    );
                    if let Some(token) = msg.meta_progress_token() {
                        state.server_tokens.insert(token.to_owned(), index);
                    }
                    state
                        .related
                        .iter()
                        .rev()
                        .find(|(b, _, _)| *b == index)
                        .map(|(_, _, s)| s.clone())
                };
                session
                    .to_client(msg.with_id(&client_id).into_raw(), stream)
                    .await;
            }
            // Everything before it has been handed to the client's queue.
            BackendEvent::Barrier(passed) => {
                let _ = passed.send(());
            }
            BackendEvent::Notification(index, msg) => {
                let msg = if msg.method() == McpMethod::NotificationsCancelled {
                    // The backend withdraws its own request: name it by the id the client knows.
                    let backend_id = param_raw(&msg, "requestId");
                    let client_id = lock(&session.state)
                        .server_requests
                        .iter()
                        .find(|(_, (i, id))| *i == index && Some(id) == backend_id.as_ref())
                        .map(|(c, _)| c.clone());
                    match client_id {
                        Some(c) => msg.with_param("requestId", &c),
                        None => continue,
                    }
                } else {
                    msg
                };
                session.to_client(msg.into_raw(), None).await;
            }
        }
    }
}

impl Session for ProxySession {
    fn handle(
        self: Arc<Self>,
        message: Message,
        ctx: RequestContext,
    ) -> BoxFuture<Option<Message>> {
        match message.kind() {
            Kind::Request => {
                let backend = match message.method() {
                    McpMethod::ToolsCall | McpMethod::PromptsGet => {
                        message.tool_name().and_then(|n| self.resolve_backend(n))
                    }
                    _ => None,
                };
                let namespace = match backend {
                    Some(i) => self.gateway.namespaces[i],
                    None => Namespace::unrouted(),
                };
                let mut req = JsonRpcRequest::new(message);
                req.context = mcp_gateway_layers::parts::RequestContext {
                    namespace: Some(namespace),
                    headers: Some(ctx.headers),
                    client_addr: ctx.client_addr,
                    session_id: ctx.session_id,
                    trace: None,
                };
                if let Some(related) = ctx.related {
                    req.extensions.insert(Related(related));
                }
                let id = req.message.id_bytes();
                // The stack's own future, made in its box: a block awaiting it would be copied
                // whole first.
                crate::mcp::box_made(move || {
                    super::call_kept(&self.stack, req).map(move |answered| {
                        Some(match answered {
                            Ok(resp) => resp.message,
                            Err(e) => {
                                let class = classify_error(&*e);
                                let id = id.as_ref().and_then(|b| std::str::from_utf8(b).ok());
                                class_error_response(
                                    id,
                                    &class,
                                    "the gateway could not take the request",
                                    None,
                                )
                            }
                        })
                    })
                })
            }
            Kind::Notification => Box::pin(async move {
                self.notify(message).await;
                None
            }),
            Kind::Response | Kind::Error => Box::pin(async move {
                self.answer_backend(message).await;
                None
            }),
        }
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let backends = std::mem::take(&mut lock(&self.state).backends);
        for (i, client) in backends.into_iter().enumerate() {
            match self.gateway.shared[i].get() {
                Some(shared) => shared.unsubscribe(self.key),
                None => client.stop(),
            }
        }
        *lock(&self.events) = Events::Closed;
        lock(&self.counted).take();
    }
}

impl Drop for ProxySession {
    fn drop(&mut self) {
        self.close();
    }
}
