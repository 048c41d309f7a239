//! The HTTP/1.1 client of the HTTP backends: a request is written and its answer read in the task
//! that sends it, over a pooled keep-alive connection. No connection task and no channel stand
//! between the caller and the socket: hyper-util's pooled client paid a task hop, a pool checkout
//! and a header map each way for every call (a quarter of the gateway's CPU a call in an A/B run,
//! docs/PERFORMANCE.md).
//!
//! It speaks what MCP backends answer: `Content-Length`, chunked and read-to-close bodies, 1xx
//! interim answers skipped, `Connection: close` honoured. A connection goes back to the pool only
//! when its answer was read to the end with nothing after it.

use std::io;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::lock;

/// Idle connections kept per backend address; more than this are closed when their answer ends.
const MAX_IDLE_PER_HOST: usize = 64;
/// The most a response head (status line and headers) may take.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most a chunk-size or trailer line may take.
const MAX_LINE_BYTES: usize = 4 * 1024;
/// Read buffer per connection: an MCP answer of a few KiB arrives in one read.
const READ_BUFFER: usize = 8 * 1024;
const MAX_HEADERS: usize = 64;

fn invalid(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

// === impl Endpoint ===

/// Where a backend's requests go, parsed once from its `http://` URL.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    /// `host:port`: what is connected to, and the pool's key.
    address: Arc<str>,
    /// The `Host` header.
    authority: Box<str>,
    /// The request target: path and query.
    target: Box<str>,
}

impl Endpoint {
    pub(super) fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("invalid url {url:?}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("{url:?} is not an http:// URL"));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{url:?} has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        Ok(Endpoint {
            // An IPv6 literal keeps its brackets: `[::1]:80` is what `connect` parses.
            address: format!("{}:{port}", authority.host()).into(),
            authority: authority.as_str().into(),
            target: if target.is_empty() { "/" } else { target }.into(),
        })
    }
}

// === impl Request ===

/// A request head being written: the request line, then whatever headers are added; `Host` (unless
/// one was added) and the body's length are written when it is sent.
pub(super) struct Request<'a> {
    endpoint: &'a Endpoint,
    head: Vec<u8>,
    has_host: bool,
    /// The answer's `Mcp-Session-Id` is kept ([`read_session_id`](Self::read_session_id)).
    session_id: bool,
}

impl<'a> Request<'a> {
    pub(super) fn new(method: &str, endpoint: &'a Endpoint) -> Self {
        // Room for the usual headers and a small body: one allocation.
        let mut head = Vec::with_capacity(1024);
        for part in [method, " ", &endpoint.target, " HTTP/1.1\r\n"] {
            head.extend_from_slice(part.as_bytes());
        }
        Request {
            endpoint,
            head,
            has_host: false,
            session_id: false,
        }
    }

    /// A request whose head so far is `head` (written by another request's
    /// [`into_head`](Self::into_head)), `has_host` if it names the host.
    pub(super) fn with_head(endpoint: &'a Endpoint, head: &[u8], has_host: bool) -> Self {
        let mut copy = Vec::with_capacity(head.len().max(1024));
        copy.extend_from_slice(head);
        Request {
            endpoint,
            head: copy,
            has_host,
            session_id: false,
        }
    }

    /// The head written so far, and whether it names the host.
    pub(super) fn into_head(self) -> (Vec<u8>, bool) {
        (self.head, self.has_host)
    }

    /// Keeps the answer's `Mcp-Session-Id` (a copy, made only when asked: `initialize`'s answer
    /// is the one it is read from).
    pub(super) fn read_session_id(&mut self) -> &mut Self {
        self.session_id = true;
        self
    }

    pub(super) fn header(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.has_host |= name.eq_ignore_ascii_case("host");
        for part in [name.as_bytes(), b": ", value, b"\r\n"] {
            self.head.extend_from_slice(part);
        }
        self
    }

    /// Adds configured headers, except those that frame the message: this client writes the
    /// body's length itself and decides whether the connection stays open.
    pub(super) fn headers(&mut self, headers: &HeaderMap) -> &mut Self {
        for (name, value) in headers {
            if name == http::header::CONTENT_LENGTH
                || name == http::header::TRANSFER_ENCODING
                || name == http::header::CONNECTION
            {
                continue;
            }
            self.header(name.as_str(), value.as_bytes());
        }
        self
    }
}

// === impl HttpPool ===

/// Keep-alive connections to HTTP backends, shared by every session of a gateway: an idle
/// session holds a session id, not a socket. On the binary's connection threads each thread
/// reuses the connections it opened: a socket is polled by the runtime that registered it, and
/// one used from another thread's task costs a wake-up across threads each way.
#[derive(Clone)]
pub struct HttpPool {
    /// By connection thread (slot 0: any other thread), so that threads do not share a lock.
    slots: Arc<[Slot; POOL_SLOTS]>,
}

impl Default for HttpPool {
    fn default() -> Self {
        HttpPool {
            slots: Arc::new(std::array::from_fn(|_| Slot::default())),
        }
    }
}

/// More connection threads than this share slots (each keeps its own list in it).
const POOL_SLOTS: usize = 16;

/// One cache line per slot: two threads' locks never share one.
#[derive(Default)]
#[repr(align(64))]
struct Slot(Mutex<Vec<Idle>>);

/// The idle connections to a backend's address that one connection thread opened (`thread`
/// `None`: opened on any other thread). A gateway has a few backends: a list, not a hash map.
struct Idle {
    address: Arc<str>,
    thread: Option<usize>,
    conns: Vec<Conn>,
}

thread_local! {
    static CONNECTION_THREAD: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Marks the current thread as connection thread `index` (see [`HttpPool`]).
pub(crate) fn set_connection_thread(index: usize) {
    CONNECTION_THREAD.set(Some(index));
}

struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet handed out.
    buf: BytesMut,
}

impl HttpPool {
    /// Sends `request` with `body` and reads the answer's head; the body is read from the
    /// returned [`Response`].
    pub(super) async fn send<'a>(
        &'a self,
        request: Request<'a>,
        body: &[u8],
    ) -> io::Result<Response<'a>> {
        let Request {
            endpoint,
            mut head,
            has_host,
            session_id,
        } = request;
        if !has_host {
            for part in ["host: ", &endpoint.authority, "\r\n"] {
                head.extend_from_slice(part.as_bytes());
            }
        }
        if !body.is_empty() {
            head.extend_from_slice(b"content-length: ");
            head.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        head.extend_from_slice(body);
        let mut conn = loop {
            match self.checkout(&endpoint.address) {
                Some(mut conn) => {
                    // A failed write never delivered a whole request: a fresh connection may try.
                    if conn.stream.write_all(&head).await.is_ok() {
                        break conn;
                    }
                }
                None => {
                    let stream = TcpStream::connect(&*endpoint.address).await?;
                    // Small request, small answer: Nagle's algorithm could only hold a write back.
                    stream.set_nodelay(true)?;
                    let mut conn = Conn {
                        stream,
                        buf: BytesMut::with_capacity(READ_BUFFER),
                    };
                    conn.stream.write_all(&head).await?;
                    break conn;
                }
            }
        };
        let head = read_head(&mut conn, session_id).await?;
        let framing = if head.no_body || head.content_length == Some(0) {
            Framing::Done
        } else if head.chunked {
            Framing::Chunked(Chunked::Size)
        } else if let Some(length) = head.content_length {
            Framing::Length(length)
        } else {
            Framing::UntilClose
        };
        let mut body = Body {
            conn: Some(conn),
            framing,
            keep_alive: head.keep_alive,
            home: Some((self, &endpoint.address)),
        };
        body.release_if_done();
        Ok(Response {
            status: head.status,
            event_stream: head.event_stream,
            session_id: head.session_id,
            body,
        })
    }

    /// An idle connection to `address` that the backend has not closed.
    fn checkout(&self, address: &Arc<str>) -> Option<Conn> {
        let thread = CONNECTION_THREAD.get();
        let slot = self.slot(thread);
        loop {
            let conn = lock(&slot.0)
                .iter_mut()
                .find(|idle| idle.holds(address, thread))?
                .conns
                .pop()?;
            // Readable while idle means closed (or garbage): either way it cannot carry a request.
            // The probe reads only when the reactor saw the socket readable, and not under the lock.
            let mut probe = [0u8; 1];
            if let Err(e) = conn.stream.try_read(&mut probe) {
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Some(conn);
                }
            }
        }
    }

    fn put_back(&self, address: &Arc<str>, conn: Conn) {
        let thread = CONNECTION_THREAD.get();
        let mut slot = lock(&self.slot(thread).0);
        let at = match slot.iter().position(|idle| idle.holds(address, thread)) {
            Some(at) => at,
            // An emptied list serves the new address: the lists stay as many as the addresses
            // with idle connections, however many a legacy SSE backend's endpoints name.
            None => match slot.iter().position(|idle| idle.conns.is_empty()) {
                Some(free) => {
                    slot[free].address = address.clone();
                    slot[free].thread = thread;
                    free
                }
                None => {
                    slot.push(Idle {
                        address: address.clone(),
                        thread,
                        conns: Vec::new(),
                    });
                    slot.len() - 1
                }
            },
        };
        let conns = &mut slot[at].conns;
        if conns.len() < MAX_IDLE_PER_HOST {
            conns.push(conn);
        }
    }

    fn slot(&self, thread: Option<usize>) -> &Slot {
        &self.slots[thread.map_or(0, |i| 1 + i % (POOL_SLOTS - 1))]
    }
}

impl Idle {
    fn holds(&self, address: &Arc<str>, thread: Option<usize>) -> bool {
        self.thread == thread && (Arc::ptr_eq(&self.address, address) || self.address == *address)
    }
}

/// Reads more of the connection into its buffer; the backend closing it is an error here.
async fn fill(conn: &mut Conn) -> io::Result<()> {
    if conn.buf.capacity() - conn.buf.len() < 1024 {
        conn.buf.reserve(READ_BUFFER);
    }
    if conn.stream.read_buf(&mut conn.buf).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the backend closed the connection before the answer ended",
        ));
    }
    Ok(())
}

// === impl Response ===

/// What the head of an answer says.
struct Head {
    status: StatusCode,
    content_length: Option<usize>,
    chunked: bool,
    keep_alive: bool,
    no_body: bool,
    event_stream: bool,
    session_id: Option<HeaderValue>,
}

/// Reads and parses an answer's head, skipping interim (1xx) answers; `Mcp-Session-Id` is
/// copied out of it when `session_id`.
async fn read_head(conn: &mut Conn, session_id: bool) -> io::Result<Head> {
    loop {
        if conn.buf.is_empty() {
            fill(conn).await?;
        }
        // Parsed outside this future: the header array (2 KiB) would otherwise be part of it, and
        // of every future around it, copied each time one is moved.
        let Some(ParsedHead {
            len,
            mut head,
            session_id_at,
        }) = parse_head(&conn.buf)?
        else {
            fill(conn).await?;
            continue;
        };
        // A copy, not a slice: a slice would be a reference taken and given back (two atomic
        // operations); and only when asked, not an allocation on every answer.
        head.session_id = session_id_at
            .filter(|_| session_id)
            .and_then(|range| HeaderValue::from_bytes(&conn.buf[range]).ok());
        conn.buf.advance(len);
        let status = head.status;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            continue;
        }
        if status == StatusCode::SWITCHING_PROTOCOLS {
            // The connection now speaks something else: never pooled.
            head.keep_alive = false;
        }
        if head.chunked {
            // Chunked wins over a length, and such an answer cannot be trusted to end cleanly.
            head.content_length = None;
        }
        return Ok(head);
    }
}

/// A complete head at the start of the read buffer.
struct ParsedHead {
    /// Its length in bytes.
    len: usize,
    head: Head,
    /// Where `Mcp-Session-Id`'s value is in the buffer.
    session_id_at: Option<std::ops::Range<usize>>,
}

/// The head at the start of `buf`; `None` while it is incomplete.
fn parse_head(buf: &[u8]) -> io::Result<Option<ParsedHead>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(invalid("answer head too large")),
        Err(_) => return Err(invalid("invalid HTTP answer")),
    };
    let code = parsed.code.unwrap_or_default();
    let status = StatusCode::from_u16(code).map_err(|_| invalid("invalid HTTP status"))?;
    let mut head = Head {
        status,
        content_length: None,
        chunked: false,
        keep_alive: parsed.version == Some(1),
        no_body: status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED,
        event_stream: false,
        session_id: None,
    };
    let mut session_id = None;
    for header in parsed.headers.iter() {
        let name = header.name;
        let value = header.value;
        if name.eq_ignore_ascii_case("content-length") {
            let length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| invalid("invalid content-length"))?;
            if head.content_length.is_some_and(|l| l != length) {
                return Err(invalid("conflicting content-length"));
            }
            head.content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked only counts as the last coding.
            head.chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    head.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            head.event_stream = value
                .get(..17)
                .is_some_and(|v| v.eq_ignore_ascii_case(b"text/event-stream"));
        } else if name.eq_ignore_ascii_case("mcp-session-id") {
            let start = value.as_ptr() as usize - buf.as_ptr() as usize;
            session_id = Some(start..start + value.len());
        }
    }
    Ok(Some(ParsedHead {
        len,
        head,
        session_id_at: session_id,
    }))
}

/// An answer: its status, what the gateway reads of its head, and its body.
pub(super) struct Response<'a> {
    pub(super) status: StatusCode,
    /// `Content-Type: text/event-stream`.
    pub(super) event_stream: bool,
    /// `Mcp-Session-Id`, a copy, when the request asked for it ([`Request::read_session_id`]).
    pub(super) session_id: Option<HeaderValue>,
    pub(super) body: Body<'a>,
}

// === impl Body ===

/// An answer's body, read from its connection; the connection goes back to the pool when the
/// body has been read to its end, and is closed if the body is dropped before.
pub(super) struct Body<'a> {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    /// Where the connection goes back to at the body's end: borrowed, as the request's endpoint
    /// is (a clone of each is two atomic operations a call); `None` once the body is read on a
    /// task of its own ([`Body::unpooled`]).
    home: Option<(&'a HttpPool, &'a Arc<str>)>,
}

#[derive(Clone, Copy)]
enum Framing {
    Length(usize),
    Chunked(Chunked),
    UntilClose,
    Done,
}

#[derive(Clone, Copy)]
enum Chunked {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this much left.
    Data(usize),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

impl Body<'_> {
    /// The body to be read on a task of its own (a legacy SSE stream, which lasts as long as
    /// its backend connection): its connection is closed at its end, not pooled.
    pub(super) fn unpooled(self) -> Body<'static> {
        Body {
            conn: self.conn,
            framing: self.framing,
            keep_alive: false,
            home: None,
        }
    }

    /// The next piece of the body; `None` at its end.
    pub(super) async fn chunk(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(None);
            };
            match self.framing {
                Framing::Done => {
                    self.release_if_done();
                    return Ok(None);
                }
                Framing::Length(left) => {
                    if conn.buf.is_empty() {
                        fill(conn).await?;
                    }
                    let take = left.min(conn.buf.len());
                    let piece = conn.buf.split_to(take).freeze();
                    self.framing = match left - take {
                        0 => Framing::Done,
                        left => Framing::Length(left),
                    };
                    self.release_if_done();
                    return Ok(Some(piece));
                }
                Framing::UntilClose => {
                    if conn.buf.is_empty() {
                        conn.buf.reserve(READ_BUFFER);
                        if conn.stream.read_buf(&mut conn.buf).await? == 0 {
                            self.framing = Framing::Done;
                            self.conn = None;
                            return Ok(None);
                        }
                    }
                    return Ok(Some(conn.buf.split().freeze()));
                }
                Framing::Chunked(state) => {
                    if let Some(piece) = self.chunked(state).await? {
                        return Ok(Some(piece));
                    }
                }
            }
        }
    }

    /// One step of chunked decoding: a piece of data, or `None` after a step that yields none.
    async fn chunked(&mut self, state: Chunked) -> io::Result<Option<Bytes>> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        match state {
            Chunked::Size => {
                let line = take_line(conn).await?;
                let digits = line.split(|&b| b == b';').next().unwrap_or_default();
                let size =
                    parse_hex(digits.trim_ascii()).ok_or_else(|| invalid("invalid chunk size"))?;
                self.framing = Framing::Chunked(if size == 0 {
                    Chunked::Trailers
                } else {
                    Chunked::Data(size)
                });
                Ok(None)
            }
            Chunked::Data(left) => {
                if conn.buf.is_empty() {
                    fill(conn).await?;
                }
                let take = left.min(conn.buf.len());
                let piece = conn.buf.split_to(take).freeze();
                self.framing = Framing::Chunked(match left - take {
                    0 => Chunked::DataEnd,
                    left => Chunked::Data(left),
                });
                Ok(Some(piece))
            }
            Chunked::DataEnd => {
                if !take_line(conn).await?.is_empty() {
                    return Err(invalid("chunk longer than its size"));
                }
                self.framing = Framing::Chunked(Chunked::Size);
                Ok(None)
            }
            Chunked::Trailers => {
                if take_line(conn).await?.is_empty() {
                    self.framing = Framing::Done;
                }
                Ok(None)
            }
        }
    }

    /// The whole body, refused past `limit` bytes.
    pub(super) async fn collect(mut self, limit: usize) -> io::Result<Bytes> {
        let too_large = || invalid("answer larger than the message size limit");
        if let (Framing::Length(length), Some(conn)) = (self.framing, self.conn.as_mut()) {
            // Read in place, so that it is handed out in one piece with no copy.
            if length > limit {
                return Err(too_large());
            }
            conn.buf.reserve(length.saturating_sub(conn.buf.len()));
            while conn.buf.len() < length {
                fill(conn).await?;
            }
        }
        let Some(first) = self.chunk().await? else {
            return Ok(Bytes::new());
        };
        if first.len() > limit {
            return Err(too_large());
        }
        let Some(mut piece) = self.chunk().await? else {
            return Ok(first);
        };
        let mut whole = BytesMut::from(&first[..]);
        loop {
            if whole.len() + piece.len() > limit {
                return Err(too_large());
            }
            whole.extend_from_slice(&piece);
            match self.chunk().await? {
                Some(next) => piece = next,
                None => return Ok(whole.freeze()),
            }
        }
    }

    /// At the end of the body, the connection goes back to the pool if it may carry another.
    fn release_if_done(&mut self) {
        if !matches!(self.framing, Framing::Done) {
            return;
        }
        if let Some(conn) = self.conn.take() {
            if let (true, true, Some((pool, address))) =
                (self.keep_alive, conn.buf.is_empty(), self.home)
            {
                pool.put_back(address, conn);
            }
        }
    }
}

/// The next CRLF- (or LF-) ended line, without its ending.
async fn take_line(conn: &mut Conn) -> io::Result<Bytes> {
    loop {
        if let Some(end) = conn.buf.iter().position(|&b| b == b'\n') {
            let mut line = conn.buf.split_to(end + 1).freeze();
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            return Ok(line);
        }
        if conn.buf.len() > MAX_LINE_BYTES {
            return Err(invalid("chunk line too long"));
        }
        fill(conn).await?;
    }
}

fn parse_hex(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &d| {
        let v = (d as char).to_digit(16)?;
        Some(n * 16 + v as usize)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A loopback server that answers the n-th request (across connections) with `answers[n]`,
    /// written in the pieces given, and closes a connection after an answer when told to.
    /// Returns the endpoint, the count of accepted connections and the requests as received.
    async fn server(
        answers: Vec<(Vec<&'static [u8]>, bool)>,
    ) -> (Endpoint, Arc<AtomicUsize>, Arc<Mutex<Vec<Vec<u8>>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp?x=1", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(answers.into_iter()));
        let (counted, seen) = (accepted.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let (answers, seen) = (answers.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(request) = read_request(&mut stream, &mut buf).await else {
                            return;
                        };
                        lock(&seen).push(request);
                        let Some((pieces, close)) = lock(&answers).next() else {
                            return;
                        };
                        for piece in pieces {
                            stream.write_all(piece).await.unwrap();
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        }
                        if close {
                            return;
                        }
                    }
                });
            }
        });
        (Endpoint::parse(&url).unwrap(), accepted, requests)
    }

    async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.parse().unwrap());
                if buf.len() >= end + 4 + length {
                    return Some(buf.drain(..end + 4 + length).collect());
                }
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn post<'a>(
        pool: &'a HttpPool,
        endpoint: &'a Endpoint,
        body: &[u8],
    ) -> io::Result<Response<'a>> {
        let mut request = Request::new("POST", endpoint);
        request
            .header("content-type", b"application/json")
            .read_session_id();
        pool.send(request, body).await
    }

    #[tokio::test]
    async fn an_emptied_idle_list_serves_the_next_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let conn = || async {
            Conn {
                stream: TcpStream::connect(at).await.unwrap(),
                buf: BytesMut::new(),
            }
        };
        let pool = HttpPool::default();
        let lists = |pool: &HttpPool| lock(&pool.slot(None).0).len();
        for n in 0..20 {
            let address: Arc<str> = format!("backend-{n}:80").into();
            pool.put_back(&address, conn().await);
            assert!(pool.checkout(&address).is_some(), "{address}");
            assert_eq!(lists(&pool), 1, "{address}");
        }
        // A list that still holds a connection is not taken.
        let (a, b): (Arc<str>, Arc<str>) = ("a:80".into(), "b:80".into());
        pool.put_back(&a, conn().await);
        pool.put_back(&b, conn().await);
        assert_eq!(lists(&pool), 2);
        assert!(pool.checkout(&a).is_some() && pool.checkout(&b).is_some());
        drop(listener);
    }

    const OK_LENGTH: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\nMcp-Session-Id: s-1\r\n\r\nhello";

    #[tokio::test]
    async fn writes_the_request_and_reuses_a_kept_alive_connection() {
        let (endpoint, accepted, requests) =
            server(vec![(vec![OK_LENGTH], false), (vec![OK_LENGTH], false)]).await;
        let pool = HttpPool::default();
        for _ in 0..2 {
            let resp = post(&pool, &endpoint, b"{\"a\":1}").await.unwrap();
            assert_eq!(resp.status, StatusCode::OK);
            assert!(!resp.event_stream);
            assert_eq!(resp.session_id.as_ref().unwrap(), "s-1");
            assert_eq!(&resp.body.collect(1024).await.unwrap()[..], b"hello");
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection served both"
        );
        let first = String::from_utf8(lock(&requests)[0].clone()).unwrap();
        let addr = endpoint.authority.to_string();
        assert_eq!(
            first,
            format!(
                "POST /mcp?x=1 HTTP/1.1\r\ncontent-type: application/json\r\nhost: {addr}\r\ncontent-length: 7\r\n\r\n{{\"a\":1}}"
            )
        );
    }

    #[tokio::test]
    async fn a_connection_thread_reuses_only_the_connections_it_opened() {
        let (endpoint, accepted, _) = server(vec![(vec![OK_LENGTH], false); 3]).await;
        let pool = HttpPool::default();
        // Two connection threads, each with its runtime, posting when told to.
        let threads: Vec<_> = (0..2)
            .map(|index| {
                let (pool, endpoint) = (pool.clone(), endpoint.clone());
                let (go, calls) = std::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>();
                std::thread::spawn(move || {
                    set_connection_thread(index);
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    for done in calls {
                        runtime.block_on(async {
                            let resp = post(&pool, &endpoint, b"{}").await.unwrap();
                            resp.body.collect(1024).await.unwrap();
                        });
                        done.send(()).unwrap();
                    }
                });
                go
            })
            .collect();
        for index in [0, 1, 0] {
            let (done, finished) = tokio::sync::oneshot::channel();
            threads[index].send(done).unwrap();
            // A socket of the other thread's runtime, idle between calls, would never be read.
            tokio::time::timeout(std::time::Duration::from_secs(5), finished)
                .await
                .expect("the call finished")
                .unwrap();
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "thread 1 opened its own connection; thread 0 reused its first"
        );
    }

    #[tokio::test]
    async fn configured_headers_keep_their_host_but_not_the_framing() {
        let (endpoint, _, requests) = server(vec![(vec![OK_LENGTH], false)]).await;
        let mut configured = HeaderMap::new();
        for (name, value) in [
            ("host", "virtual.example"),
            ("content-length", "999"),
            ("transfer-encoding", "chunked"),
            ("connection", "close"),
            ("x-api-key", "k"),
        ] {
            configured.insert(http::HeaderName::from_static(name), value.parse().unwrap());
        }
        let mut request = Request::new("POST", &endpoint);
        request.headers(&configured);
        let pool = HttpPool::default();
        let resp = pool.send(request, b"{}").await.unwrap();
        assert_eq!(&resp.body.collect(64).await.unwrap()[..], b"hello");
        let sent = String::from_utf8(lock(&requests)[0].clone()).unwrap();
        assert_eq!(
            sent,
            "POST /mcp?x=1 HTTP/1.1\r\nhost: virtual.example\r\nx-api-key: k\r\ncontent-length: 2\r\n\r\n{}"
        );
    }

    #[tokio::test]
    async fn decodes_chunked_bodies_split_anywhere() {
        let answer: Vec<&'static [u8]> = vec![
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhe",
            b"llo\r",
            b"\n1",
            b"0\r\n, world and more\r\n0\r\ntrailer: x\r\n",
            b"\r\n",
        ];
        let (endpoint, accepted, _) = server(vec![(answer, false), (vec![OK_LENGTH], false)]).await;
        let pool = HttpPool::default();
        let resp = post(&pool, &endpoint, b"{}").await.unwrap();
        assert!(resp.event_stream);
        let mut body = resp.body;
        let mut whole = Vec::new();
        while let Some(piece) = body.chunk().await.unwrap() {
            whole.extend_from_slice(&piece);
        }
        assert_eq!(whole, b"hello, world and more");
        let resp = post(&pool, &endpoint, b"{}").await.unwrap();
        assert_eq!(&resp.body.collect(1024).await.unwrap()[..], b"hello");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "reused after the last chunk"
        );
    }

    #[tokio::test]
    async fn a_body_read_on_a_task_of_its_own_closes_its_connection_at_its_end() {
        let (endpoint, accepted, _) =
            server(vec![(vec![OK_LENGTH], false), (vec![OK_LENGTH], false)]).await;
        let pool = HttpPool::default();
        let resp = post(&pool, &endpoint, b"{}").await.unwrap();
        let body = resp.body.unpooled();
        let read = tokio::spawn(async move { body.collect(1024).await.unwrap() });
        assert_eq!(&read.await.unwrap()[..], b"hello");
        let resp = post(&pool, &endpoint, b"{}").await.unwrap();
        assert_eq!(&resp.body.collect(1024).await.unwrap()[..], b"hello");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "not pooled, so not reused"
        );
    }

    #[tokio::test]
    async fn connection_close_and_read_to_close_bodies_are_not_reused() {
        let close: &[u8] = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";
        let until_close: &[u8] = b"HTTP/1.1 200 OK\r\n\r\nuntil the end";
        let (endpoint, accepted, _) = server(vec![
            (vec![close], true),
            (vec![until_close], true),
            (vec![OK_LENGTH], false),
        ])
        .await;
        let pool = HttpPool::default();
        let resp = post(&pool, &endpoint, b"{}").await.unwrap();
        assert_eq!(&resp.body.collect(1024).await.unwrap()[..], b"ok");
        let resp = post(&pool, &endpoint, b"{}").await.unwrap();
        assert_eq!(
            &resp.body.collect(1024).await.unwrap()[..],
            b"until the end"
        );
        let resp = post(&pool, &endpoint, b"{}").await.unwrap();
        assert_eq!(&resp.body.collect(1024).await.unwrap()[..], b"hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_pooled_connection_the_backend_closed_is_not_used() {
        // The server closes after its answer without saying so.
        let (endpoint, accepted, _) =
            server(vec![(vec![OK_LENGTH], true), (vec![OK_LENGTH], false)]).await;
        let pool = HttpPool::default();
        let resp = post(&pool, &endpoint, b"{}").await.unwrap();
        assert_eq!(&resp.body.collect(1024).await.unwrap()[..], b"hello");
        // Let the reactor see the close.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let resp = post(&pool, &endpoint, b"{}").await.unwrap();
        assert_eq!(&resp.body.collect(1024).await.unwrap()[..], b"hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn interim_answers_are_skipped_and_empty_bodies_end_at_once() {
        let answer: &[u8] =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n";
        let no_content: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";
        let (endpoint, accepted, _) =
            server(vec![(vec![answer], false), (vec![no_content], false)]).await;
        let pool = HttpPool::default();
        let resp = post(&pool, &endpoint, b"{}").await.unwrap();
        assert_eq!(resp.status, StatusCode::ACCEPTED);
        assert!(resp.body.collect(1024).await.unwrap().is_empty());
        let resp = post(&pool, &endpoint, b"{}").await.unwrap();
        assert_eq!(resp.status, StatusCode::NO_CONTENT);
        // Nothing to read: the connection was back in the pool before the body was asked for.
        drop(resp);
        let mut request = Request::new("DELETE", &endpoint);
        request.header("mcp-session-id", b"s-1");
        // No answer is scripted: the server closes, which this request sees as an early end.
        let err = pool.send(request, &[]).await.err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn bad_answers_are_invalid_data() {
        let cases: [(&'static [u8], &str); 4] = [
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
                "chunk size",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
                "chunk longer",
            ),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 2048\r\n\r\n", "limit"),
            (b"garbage, not HTTP\r\n\r\n", "invalid HTTP"),
        ];
        for (answer, what) in cases {
            let (endpoint, _, _) = server(vec![(vec![answer], false)]).await;
            let pool = HttpPool::default();
            let result = match post(&pool, &endpoint, b"{}").await {
                Ok(resp) => resp.body.collect(1024).await.map(|_| ()),
                Err(e) => Err(e),
            };
            let err = result.expect_err(what);
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}: {err}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_classified_as_never_sent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        drop(listener);
        let endpoint = Endpoint::parse(&url).unwrap();
        let err = post(&HttpPool::default(), &endpoint, b"{}")
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        let class = mcp_gateway_layers::classify::classify_error(&err);
        assert!(class.retryable);
    }

    #[test]
    fn endpoints_parse_host_port_and_target() {
        let e = Endpoint::parse("http://[::1]:9000/a/b?c=d").unwrap();
        assert_eq!(
            (&*e.address, &*e.authority, &*e.target),
            ("[::1]:9000", "[::1]:9000", "/a/b?c=d")
        );
        let e = Endpoint::parse("http://example.test").unwrap();
        assert_eq!(
            (&*e.address, &*e.authority, &*e.target),
            ("example.test:80", "example.test", "/")
        );
        assert!(Endpoint::parse("https://example.test/").is_err());
    }
}
