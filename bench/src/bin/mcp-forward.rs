//! The floor of an HTTP → HTTP proxy on the gateway's own stack, for the CPU target's yardstick:
//! `mcp-forward [--mcp [--no-request-lines]] LISTEN UPSTREAM` (UPSTREAM as `host:port`, requests
//! go to its `/mcp`).
//!
//! hyper's HTTP/1.1 server on one current-thread runtime per core (as the gateway's connection
//! threads), each request's body sent over a keep-alive connection of the thread's own, the
//! answer's body and `mcp-session-id` returned. It reads answers framed by `Content-Length` only,
//! as `mcp-echo` sends them (not chunked, not event streams): a yardstick for the echo, not a
//! proxy.
//!
//! Bare, it forwards bodies as they are: no MCP parsing, no sessions, no ids rewritten, no logs,
//! metrics or traces. With `--mcp` it also does, for each `tools/call`, the work no MCP gateway
//! can skip: both messages parsed, the tool's `namespace__` prefix taken off its name, the id
//! replaced on the way out and put back on the way in, a trace context in `_meta.traceparent`,
//! and the gateway's own request log line on stderr (`--no-request-lines` leaves it out, as the
//! gateway's observability off does). Still no sessions, routing, metrics, layers or timeouts:
//! what the gateway costs above it is that machinery.

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use mcp_gateway::logs::JsonRequestLog;
use mcp_gateway_layers::jsonrpc::{McpMethod, Message};
use mcp_gateway_layers::metrics::{RequestLogRecord, RequestLogSink};
use mcp_gateway_layers::trace::TraceContext;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A thread's idle upstream connections, each with its read buffer.
type Pool = Rc<RefCell<Vec<(TcpStream, BytesMut)>>>;

/// The end of the head and the value of `content-length` (0 when absent) and `mcp-session-id`,
/// once the head in `buf` is complete.
fn head(buf: &[u8]) -> std::io::Result<Option<(usize, usize, Option<Bytes>)>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(std::io::Error::other)?;
    let (mut length, mut session) = (0, None);
    for line in text.split("\r\n").skip(1) {
        let (name, value) = line.split_once(':').ok_or_else(|| bad("header line"))?;
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().map_err(|_| bad("content-length"))?;
        } else if name.eq_ignore_ascii_case("mcp-session-id") {
            session = Some(Bytes::copy_from_slice(value.trim().as_bytes()));
        }
    }
    Ok(Some((end + 4, length, session)))
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad {what}"))
}

/// One POST upstream: the answer's body and session id.
async fn exchange(
    pool: &Pool,
    upstream: &str,
    session: Option<&[u8]>,
    body: &[u8],
) -> std::io::Result<(Bytes, Option<Bytes>)> {
    let idle = pool.borrow_mut().pop();
    let (mut stream, mut buf) = match idle {
        Some(connection) => connection,
        None => {
            let stream = TcpStream::connect(upstream).await?;
            stream.set_nodelay(true)?;
            (stream, BytesMut::with_capacity(8192))
        }
    };
    let mut request = Vec::with_capacity(256 + body.len());
    request.extend_from_slice(b"POST /mcp HTTP/1.1\r\nhost: ");
    request.extend_from_slice(upstream.as_bytes());
    request.extend_from_slice(
        b"\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\n",
    );
    if let Some(session) = session {
        request.extend_from_slice(b"mcp-session-id: ");
        request.extend_from_slice(session);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    request.extend_from_slice(body);
    stream.write_all(&request).await?;
    loop {
        if let Some((end, length, session)) = head(&buf)? {
            while buf.len() < end + length {
                if stream.read_buf(&mut buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            let _ = buf.split_to(end);
            let answer = buf.split_to(length).freeze();
            pool.borrow_mut().push((stream, buf));
            return Ok((answer, session));
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// A `tools/call` on its way through `--mcp`: what its answer and its log line need.
struct Call {
    request: Message,
    namespace: String,
    trace: TraceContext,
    started: std::time::Instant,
}

/// What `--mcp` adds to a connection's requests.
struct Mcp {
    /// The client's address.
    client: SocketAddr,
    request_lines: bool,
}

thread_local! {
    /// A thread's next id for the calls it sends upstream.
    static NEXT_ID: std::cell::Cell<u64> = const { std::cell::Cell::new(1) };
}

/// The call's upstream body (prefix off its tool's name, its own id, a traceparent in `_meta`),
/// or `None` for a message that goes as it came.
fn rewrite(request: &Message) -> Option<(Bytes, String, TraceContext)> {
    if request.method() != McpMethod::ToolsCall {
        return None;
    }
    let (namespace, tool) = request.tool_name()?.split_once("__")?;
    let trace = TraceContext::root(0.0);
    let json = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let (name, traceparent) = (json(tool), json(&trace.child().traceparent()));
    let outgoing = request.with_params(&[("name", &name)], &[("traceparent", &traceparent)]);
    let id = NEXT_ID.with(|next| next.replace(next.get() + 1));
    let body = outgoing.with_id_number(id).raw().clone();
    Some((body, namespace.to_owned(), trace))
}

/// The answer to `call` with its id put back, after the call's request line (if `mcp` writes
/// them).
fn complete(call: Call, answer: Bytes, session: Option<&[u8]>, mcp: &Mcp) -> Option<Bytes> {
    let answer = Message::parse(answer).ok()?.with_id_of(&call.request);
    if !mcp.request_lines {
        return Some(answer.raw().clone());
    }
    JsonRequestLog.log(&RequestLogRecord {
        trace_id: Some(call.trace.trace_id),
        span_id: Some(call.trace.span_id),
        session_id: session.and_then(|s| std::str::from_utf8(s).ok()),
        request_id: call.request.id_raw(),
        method: "tools/call",
        namespace: &call.namespace,
        status: "ok",
        duration_ms: call.started.elapsed().as_secs_f64() * 1e3,
        client_addr: Some(mcp.client),
        failure: None,
    });
    Some(answer.raw().clone())
}

/// Forwards one request; with `mcp` (`--mcp`), a `tools/call` gets the MCP work.
async fn answer(
    pool: Pool,
    upstream: Rc<str>,
    mcp: Option<Rc<Mcp>>,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<Full<Bytes>> {
    let started = std::time::Instant::now();
    let session = req
        .headers()
        .get("mcp-session-id")
        .map(|v| Bytes::copy_from_slice(v.as_bytes()));
    let mut body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return status(400),
    };
    let mut call = None;
    if mcp.is_some() {
        let Ok(request) = Message::parse(body.clone()) else {
            return status(400);
        };
        if let Some((outgoing, namespace, trace)) = rewrite(&request) {
            body = outgoing;
            call = Some(Call {
                request,
                namespace,
                trace,
                started,
            });
        }
    }
    match exchange(&pool, &upstream, session.as_deref(), &body).await {
        Ok((answer, _)) if answer.is_empty() => status(202),
        Ok((answer, session)) => {
            let answer = match (call, &mcp) {
                (Some(call), Some(mcp)) => match complete(call, answer, session.as_deref(), mcp) {
                    Some(answer) => answer,
                    None => return status(502),
                },
                _ => answer,
            };
            let mut response = http::Response::builder().header("content-type", "application/json");
            if let Some(id) = session.and_then(|s| http::HeaderValue::from_maybe_shared(s).ok()) {
                response = response.header("mcp-session-id", id);
            }
            response
                .body(Full::new(answer))
                .unwrap_or_else(|_| status(500))
        }
        Err(_) => status(502),
    }
}

fn status(code: u16) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::new()));
    *response.status_mut() = http::StatusCode::from_u16(code).unwrap_or_default();
    response
}

/// Accepts on `listener` and serves each connection on this thread until the process ends;
/// with `mcp` (`Some(request_lines)`), each `tools/call` also gets the MCP work (module docs).
async fn serve(
    listener: std::net::TcpListener,
    upstream: Rc<str>,
    mcp: Option<bool>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let pool: Pool = Rc::default();
    loop {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (pool, upstream) = (pool.clone(), upstream.clone());
        let mcp = mcp.map(|request_lines| {
            Rc::new(Mcp {
                client: peer,
                request_lines,
            })
        });
        tokio::task::spawn_local(async move {
            let service = hyper::service::service_fn(move |req| {
                let (pool, upstream, mcp) = (pool.clone(), upstream.clone(), mcp.clone());
                async move { Ok::<_, Infallible>(answer(pool, upstream, mcp, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mcp, rest) = match args.as_slice() {
        [flag, quiet, rest @ ..] if flag == "--mcp" && quiet == "--no-request-lines" => {
            (Some(false), rest)
        }
        [flag, rest @ ..] if flag == "--mcp" => (Some(true), rest),
        rest => (None, rest),
    };
    let [listen, upstream] = rest else {
        eprintln!(
            "usage: mcp-forward [--mcp [--no-request-lines]] LISTEN UPSTREAM (host:port each)"
        );
        std::process::exit(2);
    };
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    eprintln!(
        "mcp-forward listening on http://{}/mcp",
        listener.local_addr()?
    );
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = (0..threads)
        .map(|_| {
            let (listener, upstream) = (listener.try_clone()?, upstream.clone());
            Ok(std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()?;
                tokio::task::LocalSet::new()
                    .block_on(&runtime, serve(listener, Rc::from(upstream.as_str()), mcp))
            }))
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    for worker in workers {
        worker
            .join()
            .map_err(|_| std::io::Error::other("a thread panicked"))??;
    }
    Ok(())
}
