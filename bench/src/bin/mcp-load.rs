//! Drives real MCP sessions: `initialize`, `notifications/initialized`, then `tools/call` from C
//! concurrent workers spread over S sessions, with a payload of B bytes, for D seconds or N
//! requests. Every answer is checked (id and echoed payload); the result is one JSON line with
//! req/s and latency percentiles from an HDR histogram. Transports: `http` (Streamable HTTP,
//! JSON answers), `http-sse` (Streamable HTTP, SSE answers), `ws` (WebSocket), `sse` (legacy
//! HTTP+SSE: POSTs to the endpoint the stream names, answers on the stream), `stdio` (the
//! backend itself, one process per session, `--command "PATH ARGS"`: direct-to-stdio runs).
//! `--idle N` opens N sessions and holds them. Its flags are in [`USAGE`] (`mcp-load --help`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use mcp_gateway_bench::Args;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone)]
struct Options {
    url: http::Uri,
    transport: String,
    tool_json: String,
    concurrency: usize,
    sessions: usize,
    payload: String,
    payload_json: String,
    seconds: f64,
    requests: Option<u64>,
    /// `--transport stdio`: the backend command line, one process per session.
    command: Option<String>,
    /// Open this many sessions, report, and hold them idle for `seconds`.
    idle: Option<usize>,
}

const USAGE: &str =
    "mcp-load --url URL --transport http|http-sse|ws|sse|stdio --tool NAME [--concurrency C]
         [--sessions S] [--payload B] [--seconds D | --requests N] [--command CMD]
mcp-load --url URL --transport http|ws --idle N --seconds D   (open N sessions, hold them)";

fn options() -> Result<Options, Error> {
    let args = Args::from_env_or_exit(
        USAGE,
        &[
            "--url",
            "--transport",
            "--tool",
            "--concurrency",
            "--sessions",
            "--payload",
            "--seconds",
            "--requests",
            "--command",
            "--idle",
        ],
        &[],
    );
    let get = |name: &str| args.get(name).map(str::to_owned);
    let payload = "x".repeat(args.number("--payload").unwrap_or(64));
    Ok(Options {
        // Direct-to-stdio runs have no URL.
        url: get("--url")
            .unwrap_or_else(|| "http://127.0.0.1/".to_owned())
            .parse()?,
        transport: get("--transport").unwrap_or_else(|| "http".to_owned()),
        tool_json: serde_json::to_string(&get("--tool").unwrap_or_else(|| "echo".to_owned()))?,
        concurrency: args.number("--concurrency").unwrap_or(16),
        sessions: args.number("--sessions").unwrap_or(4),
        payload_json: serde_json::to_string(&payload)?,
        payload,
        seconds: args.number("--seconds").unwrap_or(5.0),
        requests: args.number("--requests"),
        command: get("--command"),
        idle: args.number("--idle"),
    })
}

/// A `tools/call` of `tool` with `{"message": payload}`; the tool name and payload are JSON
/// strings already (`Options` holds them encoded).
fn call(id: u64, tool: &str, payload: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":{tool},"arguments":{{"message":{payload}}}}}}}"#
    )
}

#[derive(serde::Deserialize)]
struct Answer<'a> {
    id: Option<u64>,
    #[serde(borrow)]
    result: Option<AnswerResult<'a>>,
}

#[derive(serde::Deserialize)]
struct AnswerResult<'a> {
    #[serde(borrow)]
    content: Vec<Content<'a>>,
}

#[derive(serde::Deserialize)]
struct Content<'a> {
    #[serde(borrow)]
    text: std::borrow::Cow<'a, str>,
}

/// Checks one answer: its id and the echoed payload (a typed, borrowing parse: the load
/// generator shares the machine with what it measures).
fn check(answer: &[u8], id: u64, payload: &str) -> Result<(), Error> {
    let wrong = || {
        format!(
            "wrong answer to request {id}: {}",
            String::from_utf8_lossy(answer)
        )
    };
    let parsed: Answer<'_> = serde_json::from_slice(answer).map_err(|_| wrong())?;
    let text = parsed
        .result
        .as_ref()
        .and_then(|r| r.content.first())
        .map(|c| &*c.text);
    if parsed.id != Some(id) || text != Some(payload) {
        return Err(wrong().into());
    }
    Ok(())
}

/// The text of the first SSE event carrying a JSON-RPC response.
fn sse_response(body: &[u8]) -> Option<Bytes> {
    let mut parser = mcp_gateway_layers::sse::SseParser::new(1 << 24);
    let mut found = None;
    parser
        .feed(body, &mut |event| {
            if found.is_none()
                && (event.data.contains("\"result\"") || event.data.contains("\"error\""))
            {
                found = Some(Bytes::from(event.data));
            }
        })
        .ok()?;
    found
}

struct HttpSession {
    session: String,
}

async fn http_connection(url: &http::Uri) -> Result<SendRequest<Full<Bytes>>, Error> {
    let host = url.host().ok_or("no host")?;
    let stream = tokio::net::TcpStream::connect((host, url.port_u16().unwrap_or(80))).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn post(
    sender: &mut SendRequest<Full<Bytes>>,
    url: &http::Uri,
    session: Option<&str>,
    accept: &str,
    body: String,
) -> Result<(http::StatusCode, http::HeaderMap, Bytes), Error> {
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let mut req = http::Request::post(path)
        .header("host", url.host().unwrap_or(""))
        .header("content-type", "application/json")
        .header("accept", accept);
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    let exchange = async {
        sender.ready().await?;
        let resp = sender
            .send_request(req.body(Full::new(Bytes::from(body)))?)
            .await?;
        let (parts, body) = resp.into_parts();
        Ok::<_, Error>((
            parts.status,
            parts.headers,
            body.collect().await?.to_bytes(),
        ))
    };
    tokio::time::timeout(Duration::from_secs(30), exchange).await?
}

async fn http_session(url: &http::Uri) -> Result<HttpSession, Error> {
    let mut conn = http_connection(url).await?;
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "mcp-load", "version": "1"}}});
    let (status, headers, _) = post(
        &mut conn,
        url,
        None,
        "application/json, text/event-stream",
        init.to_string(),
    )
    .await?;
    if !status.is_success() {
        return Err(format!("initialize: HTTP {status}").into());
    }
    let session = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    post(
        &mut conn,
        url,
        Some(&session),
        "application/json",
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
    )
    .await?;
    Ok(HttpSession { session })
}

/// A WebSocket or stdio session shared by several workers: answers are matched to requests by id.
struct Multiplexed {
    out: mpsc::Sender<String>,
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>>,
}

async fn ws_session(url: &http::Uri) -> Result<Multiplexed, Error> {
    let mut request = url.to_string().into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        http::HeaderValue::from_static("mcp"),
    );
    let stream = tokio::net::TcpStream::connect((
        url.host().ok_or("no host")?,
        url.port_u16().unwrap_or(80),
    ))
    .await?;
    stream.set_nodelay(true)?;
    let (socket, _) = tokio_tungstenite::client_async(request, stream).await?;
    let (mut sink, mut frames) = socket.split();
    let waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>> = Arc::default();
    let (out, mut outgoing) = mpsc::channel::<String>(1024);
    tokio::spawn(async move {
        while let Some(text) = outgoing.recv().await {
            if sink.send(Frame::Text(text.into())).await.is_err() {
                break;
            }
        }
    });
    let readers = waiting.clone();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = frames.next().await {
            if let Frame::Text(text) = frame {
                deliver(&readers, Bytes::from(text));
            }
        }
    });
    Multiplexed { out, waiting }.handshake().await
}

/// A session with a backend process of its own, spoken to directly over its stdin and stdout.
async fn stdio_session(command: &str) -> Result<Multiplexed, Error> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut words = command.split_whitespace();
    let program = words.next().ok_or("--command is empty")?;
    let mut child = tokio::process::Command::new(program)
        .args(words)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err("the backend's pipes are missing".into());
    };
    let waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>> = Arc::default();
    let (out, mut outgoing) = mpsc::channel::<String>(1024);
    tokio::spawn(async move {
        let mut batch = Vec::new();
        while let Some(first) = outgoing.recv().await {
            // What is queued goes in one write, as the gateway writes to its stdio backends.
            batch.clear();
            batch.extend_from_slice(first.as_bytes());
            batch.push(b'\n');
            while let Ok(more) = outgoing.try_recv() {
                batch.extend_from_slice(more.as_bytes());
                batch.push(b'\n');
            }
            if stdin.write_all(&batch).await.is_err() {
                break;
            }
        }
        drop(stdin);
        let _ = child.wait().await;
    });
    let readers = waiting.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::with_capacity(1 << 16, stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            deliver(&readers, Bytes::from(line));
        }
    });
    Multiplexed { out, waiting }.handshake().await
}

/// Opens `count` sessions (16 at a time), says so on stdout, and holds them for `seconds`.
async fn hold_idle(opts: &Options, count: usize) -> Result<(), Error> {
    let mut held: Vec<Multiplexed> = Vec::new();
    let mut opened = 0;
    while opened < count {
        let batch = (count - opened).min(16);
        let sessions = futures_util::future::join_all((0..batch).map(|_| async {
            match opts.transport.as_str() {
                "ws" => ws_session(&opts.url).await.map(Some),
                _ => http_session(&opts.url).await.map(|_| None),
            }
        }))
        .await;
        for session in sessions {
            held.extend(session?);
        }
        opened += batch;
    }
    println!(
        "{}",
        json!({"transport": opts.transport, "idle_sessions": opened})
    );
    tokio::time::sleep(Duration::from_secs_f64(opts.seconds)).await;
    drop(held);
    Ok(())
}

/// Hands an answer to the worker waiting for its id (a typed peek: no `Value` per answer).
fn deliver(waiting: &Mutex<HashMap<u64, oneshot::Sender<Bytes>>>, answer: Bytes) {
    #[derive(serde::Deserialize)]
    struct Id {
        id: Option<u64>,
    }
    let id = serde_json::from_slice::<Id>(&answer)
        .ok()
        .and_then(|m| m.id);
    if let Some(waiter) = id.and_then(|id| waiting.lock().unwrap().remove(&id)) {
        let _ = waiter.send(answer);
    }
}

impl Multiplexed {
    /// `initialize`, then `notifications/initialized`.
    async fn handshake(self) -> Result<Multiplexed, Error> {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "mcp-load", "version": "1"}}});
        self.request(0, init.to_string()).await?;
        self.out
            .send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string())
            .await?;
        Ok(self)
    }

    async fn request(&self, id: u64, body: String) -> Result<Bytes, Error> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap().insert(id, tx);
        self.out.send(body).await?;
        Ok(tokio::time::timeout(Duration::from_secs(30), rx).await??)
    }
}

/// A legacy HTTP+SSE session shared by several workers: requests are POSTed to the endpoint
/// the stream named (each worker on its own connection), answers arrive on the one stream and
/// are matched by id.
struct SseSession {
    endpoint: http::Uri,
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>>,
}

async fn sse_session(url: &http::Uri) -> Result<SseSession, Error> {
    let mut conn = http_connection(url).await?;
    let req = http::Request::get(url.path())
        .header("host", url.host().unwrap_or(""))
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::new()))?;
    let resp = conn.send_request(req).await?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", resp.status()).into());
    }
    let mut body = resp.into_body();
    let waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>> = Arc::default();
    let (endpoint_tx, endpoint_rx) = oneshot::channel::<String>();
    let readers = waiting.clone();
    tokio::spawn(async move {
        // The connection lives as long as its stream is read.
        let _conn = conn;
        let mut endpoint_tx = Some(endpoint_tx);
        let mut parser = mcp_gateway_layers::sse::SseParser::new(1 << 24);
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let fed = parser.feed(&data, &mut |event| {
                if event.event == "endpoint" {
                    if let Some(tx) = endpoint_tx.take() {
                        let _ = tx.send(event.data);
                    }
                    return;
                }
                deliver(&readers, Bytes::from(event.data));
            });
            if fed.is_err() {
                break;
            }
        }
    });
    let endpoint = tokio::time::timeout(Duration::from_secs(30), endpoint_rx).await??;
    // The endpoint may be relative to the stream's URL.
    let endpoint: http::Uri = match endpoint.parse::<http::Uri>() {
        Ok(uri) if uri.host().is_some() => uri,
        _ => format!(
            "http://{}{endpoint}",
            url.authority().map_or("", |a| a.as_str())
        )
        .parse()?,
    };
    let session = SseSession { endpoint, waiting };
    let mut conn = http_connection(url).await?;
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "mcp-load", "version": "1"}}});
    session.request(&mut conn, 0, init.to_string()).await?;
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
    post(&mut conn, &session.endpoint, None, "application/json", note).await?;
    Ok(session)
}

impl SseSession {
    async fn request(
        &self,
        conn: &mut SendRequest<Full<Bytes>>,
        id: u64,
        body: String,
    ) -> Result<Bytes, Error> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap().insert(id, tx);
        let (status, _, _) = post(conn, &self.endpoint, None, "application/json", body).await?;
        if !status.is_success() {
            self.waiting.lock().unwrap().remove(&id);
            return Err(format!("POST {}: HTTP {status}", self.endpoint).into());
        }
        Ok(tokio::time::timeout(Duration::from_secs(30), rx).await??)
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let opts = options()?;
    let next_id = Arc::new(AtomicU64::new(1));
    let errors = Arc::new(AtomicU64::new(0));
    let issued = Arc::new(AtomicU64::new(0));
    if let Some(count) = opts.idle {
        return hold_idle(&opts, count).await;
    }
    let mut multiplexed_sessions: Vec<Arc<Multiplexed>> = Vec::new();
    for _ in 0..opts.sessions {
        match opts.transport.as_str() {
            "ws" => multiplexed_sessions.push(Arc::new(ws_session(&opts.url).await?)),
            "stdio" => {
                let command = opts.command.as_deref().ok_or("stdio needs --command")?;
                multiplexed_sessions.push(Arc::new(stdio_session(command).await?));
            }
            _ => {}
        }
    }
    let mut sse_sessions: Vec<Arc<SseSession>> = Vec::new();
    if opts.transport == "sse" {
        for _ in 0..opts.sessions {
            sse_sessions.push(Arc::new(sse_session(&opts.url).await?));
        }
    }
    let mut http_sessions = Vec::new();
    if opts.transport == "http" || opts.transport == "http-sse" {
        for _ in 0..opts.sessions {
            http_sessions.push(http_session(&opts.url).await?.session);
        }
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(opts.seconds);
    let mut workers = Vec::new();
    for w in 0..opts.concurrency {
        let opts = opts.clone();
        let (next_id, errors, issued) = (next_id.clone(), errors.clone(), issued.clone());
        let multiplexed = multiplexed_sessions.get(w % opts.sessions.max(1)).cloned();
        let session = http_sessions.get(w % opts.sessions.max(1)).cloned();
        let sse = sse_sessions.get(w % opts.sessions.max(1)).cloned();
        workers.push(tokio::spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            // A worker's own connection, opened before its first request and again after a
            // failed one; one that cannot be opened is counted as an error like any other.
            let mut conn = None;
            let accept = if opts.transport == "http-sse" {
                "application/json, text/event-stream"
            } else {
                "application/json"
            };
            loop {
                if Instant::now() >= deadline && opts.requests.is_none() {
                    break;
                }
                if let Some(limit) = opts.requests {
                    if issued.fetch_add(1, Ordering::Relaxed) >= limit {
                        break;
                    }
                }
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let body = call(id, &opts.tool_json, &opts.payload_json);
                let connect_failure = if multiplexed.is_none() && conn.is_none() {
                    http_connection(&opts.url)
                        .await
                        .map(|c| conn = Some(c))
                        .err()
                } else {
                    None
                };
                let sent = Instant::now();
                let answer = match (&multiplexed, &sse, conn.as_mut()) {
                    (Some(session), _, _) => session.request(id, body).await,
                    (None, Some(sse), Some(conn)) => sse.request(conn, id, body).await,
                    (None, None, Some(conn)) => {
                        post(conn, &opts.url, session.as_deref(), accept, body)
                            .await
                            .and_then(|(status, headers, bytes)| {
                                if !status.is_success() {
                                    return Err(format!("HTTP {status}").into());
                                }
                                let sse = headers.get("content-type").is_some_and(|v| {
                                    v.as_bytes().starts_with(b"text/event-stream")
                                });
                                if sse {
                                    sse_response(&bytes)
                                        .ok_or_else(|| "no answer in the stream".into())
                                } else {
                                    Ok(bytes)
                                }
                            })
                    }
                    (None, _, None) => {
                        Err(connect_failure.unwrap_or_else(|| "no connection to the target".into()))
                    }
                };
                let latency = sent.elapsed();
                match answer.and_then(|a| check(&a, id, &opts.payload)) {
                    Ok(()) => {
                        let _ = histogram.record(latency.as_micros().max(1) as u64);
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("mcp-load: {e}");
                        }
                        if conn.take().is_none() && multiplexed.is_none() {
                            // Refused: the next attempt waits a little rather than spinning.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
            histogram
        }));
    }
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    for worker in workers {
        total.add(worker.await?)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let ok = total.len();
    let line = json!({
        "transport": opts.transport, "concurrency": opts.concurrency, "sessions": opts.sessions,
        "payload": opts.payload.len(), "requests": ok, "errors": errors.load(Ordering::Relaxed),
        "seconds": seconds, "rps": ok as f64 / seconds,
        "p50_us": total.value_at_quantile(0.5), "p90_us": total.value_at_quantile(0.9),
        "p99_us": total.value_at_quantile(0.99), "p999_us": total.value_at_quantile(0.999), "max_us": total.max(),
    });
    println!("{line}");
    Ok(())
}
