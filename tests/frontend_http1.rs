//! The frontend's HTTP/1.1 over raw sockets: requests its own loop answers (pipelined, with
//! `Connection: close`, streamed as SSE) and those it hands to hyper with the bytes it read
//! (chunked and `Expect` bodies, HTTP/1.0, `HEAD`, a large head), in order on one connection;
//! a client that goes away mid-call cancels the call at the backend; and a request that does not
//! arrive within `limits.request_read_timeout_secs` is refused (408) or its connection closed
//! (`/metrics` connections too).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::clients::{HttpClient, text};
use support::processes::{gateway, gateway_exe};
use support::sample;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response as it came off the wire.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// A client socket that writes bytes as given and reads responses one by one.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    async fn open(addr: SocketAddr) -> Wire {
        Wire {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads more; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
            .await
            .expect("an answer within 10 s")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "the connection closed mid-body");
        }
        self.buf.drain(..n).collect()
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.take(at + 2).await;
                return String::from_utf8(line[..at].to_vec()).unwrap();
            }
            assert!(self.fill().await, "the connection closed mid-line");
        }
    }

    /// The next response; `head_only` for a `HEAD` request's.
    async fn response(&mut self, head_only: bool) -> Raw {
        let status_line = self.line().await;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a status line: {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header line");
            headers.push((name.to_owned(), value.trim().to_owned()));
        }
        let mut raw = Raw {
            status,
            headers,
            body: Vec::new(),
        };
        if head_only || (100..200).contains(&status) {
            return raw;
        }
        if raw.header("transfer-encoding") == Some("chunked") {
            loop {
                let size = usize::from_str_radix(&self.line().await, 16).expect("a chunk size");
                let chunk = self.take(size + 2).await;
                raw.body.extend_from_slice(&chunk[..size]);
                if size == 0 {
                    break;
                }
            }
        } else {
            let length: usize = raw
                .header("content-length")
                .expect("a content-length")
                .parse()
                .unwrap();
            raw.body = self.take(length).await;
        }
        raw
    }

    async fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }
}

fn post(session: &str, extra: &str, body: &str) -> String {
    format!(
        "POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nmcp-session-id: {session}\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A POST whose body goes in these chunks.
fn chunked_post(session: &str, chunks: &[&str]) -> String {
    let mut wire = format!(
        "POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nmcp-session-id: {session}\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    for chunk in chunks {
        wire.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    wire + "0\r\n\r\n"
}

fn ping(id: u64) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "ping"}).to_string()
}

fn is_http_date(value: &str) -> bool {
    // `Sun, 06 Nov 1994 08:49:37 GMT`
    value.len() == 29 && value.ends_with(" GMT") && value.as_bytes()[3] == b','
}

async fn demo_gateway() -> support::processes::Gateway {
    demo_gateway_with_limits("{}").await
}

/// The demo backend behind a gateway with these `limits` (YAML flow mapping).
async fn demo_gateway_with_limits(limits: &str) -> support::processes::Gateway {
    gateway(&format!(
        "limits: {limits}\nbackends:\n  - {{namespace: a, transport: stdio, command: {}, args: [demo-server, stdio]}}\n",
        gateway_exe()
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_framing_is_answered_in_order_on_one_connection() {
    let gw = demo_gateway().await;
    let session = HttpClient::connect(gw.addr).await.session;
    let mut wire = Wire::open(gw.addr).await;

    // Two requests in one write: answered in order, each with its length and a date. Header
    // names are read whatever their case.
    let second = post(&session, "", &ping(2)).replace("mcp-session-id", "MCP-Session-Id");
    wire.write(format!("{}{second}", post(&session, "", &ping(1))).as_bytes())
        .await;
    for id in [1, 2] {
        let r = wire.response(false).await;
        assert_eq!((r.status, r.json()["id"].as_u64()), (200, Some(id)));
        assert!(
            r.header("date").is_some_and(is_http_date),
            "{:?}",
            r.headers
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
    }

    // A call answered as an event stream: chunked, the answer as one event.
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "a__echo", "arguments": {"message": "streamed"}}}).to_string();
    wire.write(
        post(
            &session,
            "accept: application/json, text/event-stream\r\n",
            &call,
        )
        .as_bytes(),
    )
    .await;
    let r = wire.response(false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    let event = String::from_utf8(r.body).unwrap();
    let data = event
        .strip_prefix("event: message\ndata: ")
        .and_then(|e| e.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("one SSE event: {event:?}"));
    let answer: Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        (answer["id"].as_u64(), text(&answer)),
        (Some(3), "streamed")
    );

    // A large head (over the own loop's 16 KiB) is hyper's, which still answers it.
    let big = format!("x-padding: {}\r\n", "p".repeat(20_000));
    wire.write(post(&session, &big, &ping(4)).as_bytes()).await;
    let r = wire.response(false).await;
    assert_eq!((r.status, r.json()["id"].as_u64()), (200, Some(4)));

    // From here hyper serves the connection: a chunked body, an `Expect` body, a HEAD, and a
    // plain request after them.
    let body = ping(5);
    let (first, second) = body.split_at(7);
    wire.write(chunked_post(&session, &[first, second]).as_bytes())
        .await;
    let r = wire.response(false).await;
    assert_eq!((r.status, r.json()["id"].as_u64()), (200, Some(5)));

    let body = ping(6);
    wire.write(
        format!(
            "POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nmcp-session-id: {session}\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(wire.response(false).await.status, 100);
    wire.write(body.as_bytes()).await;
    let r = wire.response(false).await;
    assert_eq!((r.status, r.json()["id"].as_u64()), (200, Some(6)));

    wire.write(b"HEAD /mcp HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(wire.response(true).await.status, 405);
    wire.write(post(&session, "", &ping(7)).as_bytes()).await;
    let r = wire.response(false).await;
    assert_eq!((r.status, r.json()["id"].as_u64()), (200, Some(7)));

    // HTTP/1.0 on a fresh connection: answered, then closed.
    let mut old = Wire::open(gw.addr).await;
    let body = ping(8);
    old.write(
        format!(
            "POST /mcp HTTP/1.0\r\ncontent-type: application/json\r\nmcp-session-id: {session}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    let r = old.response(false).await;
    assert_eq!((r.status, r.json()["id"].as_u64()), (200, Some(8)));
    assert!(
        old.closed().await,
        "an HTTP/1.0 connection closes after its answer"
    );

    // A head that is not HTTP: hyper's 400, then closed.
    let mut garbage = Wire::open(gw.addr).await;
    garbage.write(b"NOT HTTP AT ALL\r\n\r\n").await;
    assert_eq!(garbage.response(true).await.status, 400);

    // `Connection: close` on the own loop: said in the answer, then closed.
    let mut closing = Wire::open(gw.addr).await;
    closing
        .write(post(&session, "connection: close\r\n", &ping(9)).as_bytes())
        .await;
    let r = closing.response(false).await;
    assert_eq!((r.status, r.json()["id"].as_u64()), (200, Some(9)));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closing.closed().await, "closed after the answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_mid_call_cancels_it_at_the_backend() {
    let gw = demo_gateway().await;
    let mut http = HttpClient::connect(gw.addr).await;
    let mut wire = Wire::open(gw.addr).await;
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "a__sleep", "arguments": {"ms": 5000}}}).to_string();
    wire.write(post(&http.session, "", &call).as_bytes()).await;
    let mut metrics = support::Conn::open(gw.metrics, None).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = metrics.get("/metrics", &[]).await.body;
        if sample(
            &String::from_utf8_lossy(&body),
            "gateway_requests_in_flight",
        ) == Some(1.0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the call never got in flight");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(wire);
    // The backend hears of it well before the 5 s sleep would have ended.
    let started = Instant::now();
    loop {
        if text(&http.call(2, "a__cancellations", json!({})).await) == "1" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the backend was never told the call was cancelled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads until the connection closes; how long that took, or `None` when bytes came instead.
async fn closes_within(wire: &mut Wire, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut chunk = [0u8; 1024];
    match tokio::time::timeout(limit, wire.stream.read(&mut chunk)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Some(started.elapsed()),
        Ok(Ok(n)) => panic!(
            "bytes instead of the end: {:?}",
            String::from_utf8_lossy(&chunk[..n])
        ),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_does_not_arrive_in_time_is_refused_and_its_connection_closed() {
    let gw = demo_gateway_with_limits("{request_read_timeout_secs: 1}").await;
    let session = HttpClient::connect(gw.addr).await.session;
    let within = Duration::from_secs(5);
    let bound = |took: Option<Duration>, what: &str| {
        let took = took.unwrap_or_else(|| panic!("{what}: still open after {within:?}"));
        assert!(
            took >= Duration::from_millis(800),
            "{what}: closed after {took:?}, before the timeout"
        );
    };

    let silent = async {
        // Nothing sent at all: closed without an answer.
        let mut wire = Wire::open(gw.addr).await;
        bound(
            closes_within(&mut wire, within).await,
            "a silent connection",
        );
    };
    let idle_after_answer = async {
        // Answered, then idle: closed without an answer, timed from the answer.
        let mut wire = Wire::open(gw.addr).await;
        wire.write(post(&session, "", &ping(1)).as_bytes()).await;
        assert_eq!(wire.response(false).await.status, 200);
        bound(
            closes_within(&mut wire, within).await,
            "an idle keep-alive connection",
        );
    };
    let refused = |partial: String| async move {
        let mut wire = Wire::open(gw.addr).await;
        wire.write(partial.as_bytes()).await;
        let r = wire.response(false).await;
        assert_eq!(r.status, 408, "{:?}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("connection"), Some("close"));
        assert_eq!(r.json()["error"]["code"], -32008, "{}", r.json());
        assert!(wire.closed().await, "closed after the 408");
    };
    let slow_call = async {
        // Answering is not reading: a call longer than the timeout is answered.
        let mut wire = Wire::open(gw.addr).await;
        let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "a__sleep", "arguments": {"ms": 1500}}}).to_string();
        wire.write(post(&session, "", &call).as_bytes()).await;
        let r = wire.response(false).await;
        assert_eq!(
            (r.status, r.json()["result"].is_object()),
            (200, true),
            "{}",
            r.json()
        );
    };
    let handed_off = async {
        // A chunked body goes to hyper, whose head timeout then closes the idle connection.
        let mut wire = Wire::open(gw.addr).await;
        wire.write(chunked_post(&session, &[&ping(3)]).as_bytes())
            .await;
        assert_eq!(wire.response(false).await.status, 200);
        wire.write(b"POST /mcp HTTP/1.1\r\nhost: x\r\n").await;
        bound(
            closes_within(&mut wire, within).await,
            "a handed-off connection with half a head",
        );
    };
    let slow_chunked_body = async {
        // hyper reads a chunked body; the frontend times it: 408 as well.
        let mut wire = Wire::open(gw.addr).await;
        let whole = chunked_post(&session, &[&ping(5)]);
        let cut = whole.find("\r\n\r\n").unwrap() + 10;
        let started = Instant::now();
        wire.write(&whole.as_bytes()[..cut]).await;
        let r = wire.response(false).await;
        assert!(
            started.elapsed() >= Duration::from_millis(800),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(r.status, 408, "{:?}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["error"]["code"], -32008, "{}", r.json());
        assert!(wire.closed().await, "closed after the 408");
    };
    let metrics_listener = async {
        // `/metrics` is hyper's alone: an idle scrape connection is closed as well.
        let mut wire = Wire::open(gw.metrics).await;
        wire.write(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        assert_eq!(wire.response(false).await.status, 200);
        bound(
            closes_within(&mut wire, within).await,
            "an idle /metrics connection",
        );
    };
    tokio::join!(
        silent,
        idle_after_answer,
        // Half a head; then a whole head with part of its body.
        refused("POST /mcp HTTP/1.1\r\nhost: x\r\n".to_owned()),
        refused(format!(
            "POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nmcp-session-id: {session}\r\ncontent-length: 100\r\n\r\n{{\"jsonrpc\""
        )),
        slow_call,
        handed_off,
        slow_chunked_body,
        metrics_listener,
    );

    let mut metrics = support::Conn::open(gw.metrics, None).await;
    let text = String::from_utf8_lossy(&metrics.get("/metrics", &[]).await.body).into_owned();
    assert_eq!(
        sample(
            &text,
            r#"gateway_errors_total{error_type="timeout",component="client",severity="medium",http_status="408",retryable="true"}"#
        ),
        Some(3.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_connection_over_the_limit_is_closed_in_time_too() {
    let gw = demo_gateway_with_limits("{max_connections: 3, request_read_timeout_secs: 1}").await;
    // The client's connection and two calls longer than the timeout fill the limit.
    let http = HttpClient::connect(gw.addr).await;
    let mut busy = Vec::new();
    for id in [1, 2] {
        let mut wire = Wire::open(gw.addr).await;
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "a__sleep", "arguments": {"ms": 3000}}}).to_string();
        wire.write(post(&http.session, "", &call).as_bytes()).await;
        busy.push(wire);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Half a head: under the limit it would hear 408 (above); over it, hyper's head timeout
    // closes it without an answer (no bytes, which `closes_within` would refuse).
    let mut over = Wire::open(gw.addr).await;
    over.write(b"POST /mcp HTTP/1.1\r\nhost: x\r\n").await;
    let took = closes_within(&mut over, Duration::from_millis(2500))
        .await
        .expect("the connection over the limit is closed before the calls end");
    assert!(took >= Duration::from_millis(800), "closed after {took:?}");
    for mut wire in busy {
        assert_eq!(wire.response(false).await.status, 200);
    }
}
