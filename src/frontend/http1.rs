//! The frontends' own HTTP/1.1 connection loop. A request whose body has a `Content-Length` (or
//! no body) is read, routed and answered here; the first request it does not take is handed,
//! with every byte already read, to hyper, which serves the connection from then on: an upgrade,
//! a chunked or `Expect` body, HTTP/1.0, `HEAD` and `CONNECT`, a head it cannot parse or over
//! 16 KiB, a body over the message limit. Those answers and refusals stay hyper's.
//!
//! Why: hyper's connection machinery (dispatcher, buffered I/O, its body channel) was 11.9k of
//! the 47.8k instructions a proxied call cost; this loop's part is 8.0k of 42.4k (callgrind,
//! `docs/PERFORMANCE.md`).
//!
//! A request must arrive whole within the request read timeout of the loop starting to wait for
//! it (on a new connection, or after the last answer); while an answer is made, nothing is timed.

use std::cell::Cell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use mcp_gateway_layers::headers::ClientHeaders;

use super::ResponseBody;

/// A request body: hyper's on the connections it serves, already read on this loop's.
pub(crate) enum RequestBody {
    Hyper(hyper::body::Incoming),
    Read(Bytes),
}

/// A client's request as the frontends read it, from this loop or from hyper.
pub(crate) struct ClientRequest {
    pub(crate) head: ClientHead,
    pub(crate) body: RequestBody,
}

/// Everything of a request but its body. This loop's headers stay in the head it read, looked
/// up in place: a `HeaderMap` cost 2.0k of a call's 35.0k instructions to build and read.
pub(crate) struct ClientHead {
    pub(crate) method: Method,
    target: Target,
    pub(crate) headers: ClientHeaders,
    /// hyper's (an upgrade's handle among them); empty on this loop's requests.
    pub(crate) extensions: http::Extensions,
}

/// The request target: hyper's `Uri`, or where this loop's origin-form target (`/path?query`)
/// is in the head the headers keep (a `Uri` of it cost a reference to the head, two atomic
/// operations, and a validation no route needs).
enum Target {
    Uri(Uri),
    InHead { at: u16, len: u16 },
}

impl ClientHead {
    /// The target's path, without its query.
    pub(crate) fn path(&self) -> &str {
        match &self.target {
            Target::Uri(uri) => uri.path(),
            Target::InHead { .. } => {
                let target = self.target_in_head();
                target.split_once('?').map_or(target, |(path, _)| path)
            }
        }
    }

    /// The target's query, without its `?`.
    pub(crate) fn query(&self) -> Option<&str> {
        match &self.target {
            Target::Uri(uri) => uri.query(),
            Target::InHead { .. } => Some(self.target_in_head().split_once('?')?.1),
        }
    }

    fn target_in_head(&self) -> &str {
        let (Target::InHead { at, len }, Some(head)) = (&self.target, self.headers.head()) else {
            return "";
        };
        let range = usize::from(*at)..usize::from(*at) + usize::from(*len);
        head.get(range)
            .and_then(|t| std::str::from_utf8(t).ok())
            .unwrap_or("")
    }
}

impl From<Request<hyper::body::Incoming>> for ClientRequest {
    fn from(req: Request<hyper::body::Incoming>) -> Self {
        let (parts, body) = req.into_parts();
        ClientRequest {
            head: ClientHead {
                method: parts.method,
                target: Target::Uri(parts.uri),
                headers: ClientHeaders::from(parts.headers),
                extensions: parts.extensions,
            },
            body: RequestBody::Hyper(body),
        }
    }
}

/// `/path?query` in RFC 3986's characters alone (a percent sign as such: the routes are plain).
fn plain_origin_form(target: &[u8]) -> bool {
    target.first() == Some(&b'/')
        && target
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b))
}

/// Larger heads go to hyper, whose limit is higher.
const MAX_HEAD_BYTES: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
const READ_CHUNK: usize = 8 * 1024;
/// The least room a read is given: most heads fit, and a buffer serves many requests.
const MIN_READ_ROOM: usize = 1024;
/// Read ahead of the request being answered: a pipelined request, or the client going away.
const MAX_READ_AHEAD: usize = 64 * 1024;
/// Bodies up to this size go out in the head's write.
const COPY_BODY_BYTES: usize = 16 * 1024;
/// The write buffer a connection keeps between answers.
const HEAD_BUFFER_KEPT: usize = 1024;

/// Why no request came from the connection's own loop.
pub(super) enum NoRequest {
    /// A request this loop does not take: hyper serves the connection from here.
    HandOff,
    /// The client closed, or the socket failed, between requests.
    Closed,
    /// The request waited for since then did not arrive whole within the read timeout.
    TimedOut(std::time::Instant),
}

/// One client connection, with what was read and not yet used.
pub(super) struct ServerConn {
    stream: TcpStream,
    buf: BytesMut,
    head: Vec<u8>,
    deadline: ReadDeadline,
}

/// When a request being waited for is late. One timer for the connection's life, re-armed at
/// most once a timeout: a wait reads the clock and one atomic, and does not touch the timer
/// wheel (the hot path stays off its lock).
struct ReadDeadline {
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    /// The timer holds the connection task's waker: it was polled since it was last armed. The
    /// task is the same for the connection's life, so that waker stays the one to wake.
    watching: bool,
}

impl ReadDeadline {
    fn new(timeout: Duration) -> Self {
        ReadDeadline {
            timeout,
            timer: Box::pin(tokio::time::sleep(timeout)),
            watching: false,
        }
    }

    /// Ready once `timeout` has passed since `since`.
    fn poll_passed(&mut self, since: Instant, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.watching && !self.timer.is_elapsed() {
                return Poll::Pending;
            }
            // Outside the task's budget: a poll the budget refused would not hand the timer the
            // waker, and the timer would then never be polled again.
            let timer = &mut self.timer;
            let poll_timer = std::future::poll_fn(|cx| timer.as_mut().poll(cx));
            if std::pin::pin!(tokio::task::unconstrained(poll_timer))
                .poll(cx)
                .is_pending()
            {
                self.watching = true;
                return Poll::Pending;
            }
            // It went off for an earlier wait: on to this wait's own deadline.
            let deadline = since + self.timeout;
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(deadline);
            self.watching = false;
        }
    }
}

/// A head this loop takes: where its parts are in the buffer (a head is under 16 KiB, so
/// offsets fit in 16 bits and the whole stays on the stack).
struct Head {
    len: usize,
    method: Method,
    path: (u16, u16),
    headers: [(u16, u16, u16, u16); MAX_HEADERS],
    count: usize,
    content_length: usize,
    close: bool,
}

/// Why a head was not taken (yet).
enum NotTaken {
    Partial,
    Other,
}

fn offset(buf: &[u8], part: &[u8]) -> u16 {
    (part.as_ptr() as usize - buf.as_ptr() as usize) as u16
}

/// Whether a comma-separated header value names `token` (case-insensitively).
pub(super) fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Parses the head at the start of `buf`, deciding whether this loop takes the request.
fn parse(buf: &[u8], max_body: usize) -> Result<Head, NotTaken> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
        Ok(httparse::Status::Complete(_)) => return Err(NotTaken::Other),
        Ok(httparse::Status::Partial) => return Err(NotTaken::Partial),
        Err(_) => return Err(NotTaken::Other),
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return Err(NotTaken::Other);
    };
    let method = match method {
        "POST" => Method::POST,
        "GET" => Method::GET,
        "DELETE" => Method::DELETE,
        "HEAD" | "CONNECT" => return Err(NotTaken::Other),
        other => match Method::from_bytes(other.as_bytes()) {
            Ok(method) => method,
            Err(_) => return Err(NotTaken::Other),
        },
    };
    let mut head = Head {
        len,
        method,
        path: (offset(buf, path.as_bytes()), path.len() as u16),
        headers: [(0, 0, 0, 0); MAX_HEADERS],
        count: req.headers.len(),
        content_length: 0,
        close: false,
    };
    let mut length_seen = false;
    for (slot, header) in head.headers.iter_mut().zip(req.headers.iter()) {
        let name = header.name.as_bytes();
        let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
        match name.len() {
            14 if is("content-length") => {
                let digits = header.value;
                if length_seen
                    || digits.is_empty()
                    || digits.len() > 12
                    || !digits.iter().all(u8::is_ascii_digit)
                {
                    return Err(NotTaken::Other);
                }
                length_seen = true;
                head.content_length = digits.iter().fold(0, |n, d| n * 10 + usize::from(d - b'0'));
            }
            17 if is("transfer-encoding") => return Err(NotTaken::Other),
            6 if is("expect") => return Err(NotTaken::Other),
            7 if is("upgrade") => return Err(NotTaken::Other),
            10 if is("connection") => head.close |= has_token(header.value, "close"),
            _ => {}
        }
        *slot = (
            offset(buf, name),
            name.len() as u16,
            offset(buf, header.value),
            header.value.len() as u16,
        );
    }
    if head.content_length > max_body {
        return Err(NotTaken::Other);
    }
    Ok(head)
}

impl ServerConn {
    /// A connection whose requests must each arrive within `read_timeout`.
    pub(super) fn new(stream: TcpStream, read_timeout: Duration) -> Self {
        ServerConn {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            head: Vec::with_capacity(HEAD_BUFFER_KEPT),
            deadline: ReadDeadline::new(read_timeout),
        }
    }

    /// Nothing of a next request has arrived.
    pub(super) fn is_idle(&self) -> bool {
        self.buf.is_empty()
    }

    /// Reads into the buffer's spare room, made at least `room` (a new `READ_CHUNK` only when
    /// less is left: requests already handed on still hold the buffer's earlier part).
    async fn read_more(&mut self, room: usize) -> io::Result<usize> {
        self.make_room(room);
        self.stream.read_buf(&mut self.buf).await
    }

    fn make_room(&mut self, room: usize) {
        if self.buf.capacity() - self.buf.len() < room {
            self.buf.reserve(room.max(READ_CHUNK));
        }
    }

    /// [`read_more`](Self::read_more) for a request the loop has waited for since `since`:
    /// `TimedOut` once the read timeout has passed, `Closed` at the end of the stream.
    async fn read_request(&mut self, room: usize, since: Instant) -> Result<(), NoRequest> {
        self.make_room(room);
        let mut read = std::pin::pin!(self.stream.read_buf(&mut self.buf));
        let deadline = &mut self.deadline;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(read) = read.as_mut().poll(cx) {
                return Poll::Ready(match read {
                    Ok(n) if n > 0 => Ok(()),
                    _ => Err(NoRequest::Closed),
                });
            }
            deadline
                .poll_passed(since, cx)
                .map(|()| Err(NoRequest::TimedOut(since.into_std())))
        })
        .await
    }

    /// Reads the next request, with its whole body (at most `max_body` bytes), and whether the
    /// client asked to close after it.
    pub(super) async fn next_request(
        &mut self,
        max_body: usize,
    ) -> Result<(ClientRequest, bool), NoRequest> {
        let since = Instant::now();
        let head = loop {
            if !self.buf.is_empty() {
                match parse(&self.buf, max_body) {
                    Ok(head) => break head,
                    Err(NotTaken::Other) => return Err(NoRequest::HandOff),
                    Err(NotTaken::Partial) if self.buf.len() >= MAX_HEAD_BYTES => {
                        return Err(NoRequest::HandOff);
                    }
                    Err(NotTaken::Partial) => {}
                }
            }
            self.read_request(MIN_READ_ROOM, since).await?;
        };
        let total = head.len + head.content_length;
        while self.buf.len() < total {
            let missing = total - self.buf.len();
            self.read_request(missing, since).await?;
        }
        let bytes = self.buf.split_to(head.len).freeze();
        let body = self.buf.split_to(head.content_length).freeze();
        let (at, len) = head.path;
        let target = bytes.get(usize::from(at)..usize::from(at) + usize::from(len));
        if !target.is_some_and(plain_origin_form) {
            // Absolute-form, `*`, characters RFC 3986 does not allow: hyper's to read.
            self.give_back(&bytes, &body);
            return Err(NoRequest::HandOff);
        }
        let spans = head.headers[..head.count].to_vec();
        let req = ClientRequest {
            head: ClientHead {
                method: head.method,
                target: Target::InHead { at, len },
                headers: ClientHeaders::from_head(bytes, spans),
                extensions: http::Extensions::new(),
            },
            body: RequestBody::Read(body),
        };
        Ok((req, head.close))
    }

    /// Puts a request this loop will not take back in front of what follows it, for hyper.
    fn give_back(&mut self, head: &[u8], body: &[u8]) {
        let mut all = BytesMut::with_capacity(head.len() + body.len() + self.buf.len());
        all.extend_from_slice(head);
        all.extend_from_slice(body);
        all.extend_from_slice(&self.buf);
        self.buf = all;
    }

    /// Reads what the client sends while its request is answered; false once it has gone.
    async fn read_ahead(&mut self) -> bool {
        if self.buf.len() >= MAX_READ_AHEAD {
            return std::future::pending().await;
        }
        matches!(self.read_more(MIN_READ_ROOM).await, Ok(n) if n > 0)
    }

    /// Runs `answer` while watching the connection: `None` when the client went away first
    /// (then `answer` is dropped, which cancels the call).
    pub(super) async fn while_open<F: Future>(
        &mut self,
        mut answer: Pin<&mut F>,
    ) -> Option<F::Output> {
        loop {
            tokio::select! {
                biased;
                out = &mut answer => return Some(out),
                open = self.read_ahead() => if !open {
                    return None;
                },
            }
        }
    }

    /// Writes `resp`: a body of known size with `Content-Length` (in the head's write when
    /// small), any other chunked, each frame as it comes. `close` adds `Connection: close`.
    pub(super) async fn write_response(
        &mut self,
        resp: Response<ResponseBody>,
        close: bool,
    ) -> io::Result<()> {
        let written = self.write(resp, close).await;
        if self.head.capacity() > HEAD_BUFFER_KEPT {
            // A large answer's buffer is not kept by a connection that may now idle for long.
            self.head = Vec::with_capacity(HEAD_BUFFER_KEPT);
        }
        written
    }

    async fn write(&mut self, resp: Response<ResponseBody>, close: bool) -> io::Result<()> {
        let (parts, mut body) = resp.into_parts();
        let status = parts.status;
        let head = &mut self.head;
        head.clear();
        head.extend_from_slice(b"HTTP/1.1 ");
        head.extend_from_slice(status.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        head.extend_from_slice(b"\r\n");
        for (name, value) in &parts.headers {
            if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
                continue;
            }
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"date: ");
        head.extend_from_slice(&date_now());
        head.extend_from_slice(b"\r\n");
        if close && !parts.headers.contains_key(http::header::CONNECTION) {
            head.extend_from_slice(b"connection: close\r\n");
        }
        let bodiless = status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        if bodiless {
            head.extend_from_slice(b"\r\n");
            return self.stream.write_all(&self.head).await;
        }
        if let Some(size) = body.size_hint().exact() {
            // A whole body is one frame; more are gathered.
            let mut first = Bytes::new();
            let mut more = Vec::new();
            while let Some(frame) = body.frame().await {
                if let Ok(chunk) = frame.map_err(io::Error::other)?.into_data() {
                    if first.is_empty() {
                        first = chunk;
                    } else {
                        more.push(chunk);
                    }
                }
            }
            let len = first.len() + more.iter().map(Bytes::len).sum::<usize>();
            if len as u64 != size {
                return Err(io::Error::other("a response body did not match its size"));
            }
            head.extend_from_slice(b"content-length: ");
            head.extend_from_slice(itoa::Buffer::new().format(size).as_bytes());
            head.extend_from_slice(b"\r\n\r\n");
            if len <= COPY_BODY_BYTES {
                head.extend_from_slice(&first);
                for chunk in &more {
                    head.extend_from_slice(chunk);
                }
                return self.stream.write_all(&self.head).await;
            }
            let mut slices = vec![IoSlice::new(&self.head), IoSlice::new(&first)];
            slices.extend(more.iter().map(|d| IoSlice::new(d)));
            return write_all_vectored(&mut self.stream, &mut slices).await;
        }
        head.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
        self.stream.write_all(&self.head).await?;
        loop {
            let frame = tokio::select! {
                biased;
                frame = body.frame() => frame,
                open = self.read_ahead() => {
                    if !open {
                        return Err(io::ErrorKind::ConnectionAborted.into());
                    }
                    continue;
                }
            };
            let Some(frame) = frame else { break };
            let Ok(data) = frame.map_err(io::Error::other)?.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            let mut size = [0u8; 18];
            let size = chunk_size_line(data.len(), &mut size);
            let mut slices = [
                IoSlice::new(size),
                IoSlice::new(&data),
                IoSlice::new(b"\r\n"),
            ];
            write_all_vectored(&mut self.stream, &mut slices).await?;
        }
        self.stream.write_all(b"0\r\n\r\n").await
    }

    /// The connection for hyper: what was read and not used comes first.
    pub(super) fn into_rewind(self) -> Rewind {
        Rewind {
            read: self.buf.freeze(),
            stream: self.stream,
        }
    }
}

/// `{len:x}\r\n` without formatting machinery.
fn chunk_size_line(len: usize, out: &mut [u8; 18]) -> &[u8] {
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in 0..digits {
        out[digits - 1 - i] = b"0123456789abcdef"[(len >> (4 * i)) & 0xf];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    &out[..digits + 2]
}

async fn write_all_vectored(
    stream: &mut TcpStream,
    mut slices: &mut [IoSlice<'_>],
) -> io::Result<()> {
    while !slices.is_empty() {
        let n = stream.write_vectored(slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// The HTTP date of `secs` since the epoch: `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(secs: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86_400;
    let time = secs % 86_400;
    let (year, month, day) = crate::logs::civil_from_days(days as i64);
    let (year, month, day) = (year.max(0) as u64, u64::from(month), u64::from(day));
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    let two = |out: &mut [u8; 29], at: usize, n: u64| {
        out[at] = b'0' + (n / 10 % 10) as u8;
        out[at + 1] = b'0' + (n % 10) as u8;
    };
    two(&mut out, 5, day);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    two(&mut out, 12, year / 100);
    two(&mut out, 14, year);
    two(&mut out, 17, time / 3600);
    two(&mut out, 20, time / 60 % 60);
    two(&mut out, 23, time % 60);
    out
}

thread_local! {
    /// The last second formatted on this thread: a date is formatted once a second, not a request.
    static DATE: Cell<(u64, [u8; 29])> = const { Cell::new((0, *b"Thu, 01 Jan 1970 00:00:00 GMT")) };
}

fn date_now() -> [u8; 29] {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|date| {
        let (at, text) = date.get();
        if at == secs {
            return text;
        }
        let text = http_date(secs);
        date.set((secs, text));
        text
    })
}

/// A connection handed to hyper: the bytes already read, then the socket.
pub(super) struct Rewind {
    read: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            if self.read.is_empty() {
                // Frees the loop's read buffer, which an upgraded WebSocket would keep for its life.
                self.read = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_formatted_as_rfc_9110_says() {
        assert_eq!(&http_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&http_date(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&http_date(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(&http_date(4_102_444_799), b"Thu, 31 Dec 2099 23:59:59 GMT");
        // 2100 is not a leap year.
        assert_eq!(&http_date(4_107_542_399), b"Sun, 28 Feb 2100 23:59:59 GMT");
        assert_eq!(&http_date(4_107_542_400), b"Mon, 01 Mar 2100 00:00:00 GMT");
    }

    /// A client socket and the server's end of it.
    async fn loopback_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        (client, listener.accept().await.unwrap().0)
    }

    #[tokio::test]
    async fn each_wait_for_a_request_has_the_whole_timeout_from_its_start() {
        let timeout = Duration::from_millis(300);
        let (mut client, server) = loopback_pair().await;
        let mut conn = ServerConn::new(server, timeout);
        client
            .write_all(b"GET /mcp HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(conn.next_request(100).await.is_ok());
        // An answer that takes most of the timeout: the timer armed at the connection's start
        // goes off early in the next wait, which still gets its whole timeout.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let waiting = Instant::now();
        client.write_all(b"GET /mcp HTTP/1.1\r\n").await.unwrap();
        assert!(matches!(
            conn.next_request(100).await,
            Err(NoRequest::TimedOut(_))
        ));
        let waited = waiting.elapsed();
        assert!(
            waited >= timeout && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        assert!(!conn.is_idle(), "the partial head is kept, for the 408");
    }

    #[tokio::test]
    async fn a_handed_off_connection_reads_what_was_read_first_then_lets_it_go() {
        let (mut client, server) = loopback_pair().await;
        let read_first = Bytes::from(b"GET /ws HTTP/1.1\r\n".to_vec());
        let mut rewind = Rewind {
            read: read_first.clone(),
            stream: server,
        };
        client.write_all(b"then the socket").await.unwrap();
        let mut got = vec![0u8; 4];
        rewind.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"GET ");
        let mut rest = vec![0u8; 14];
        rewind.read_exact(&mut rest).await.unwrap();
        assert_eq!(rest, b"/ws HTTP/1.1\r\n");
        // Used up, the buffer is no longer held: a WebSocket would keep it for its life.
        assert!(read_first.is_unique());
        let mut after = vec![0u8; 15];
        rewind.read_exact(&mut after).await.unwrap();
        assert_eq!(after, b"then the socket");
    }

    #[tokio::test]
    async fn whole_bodies_go_out_with_their_length_and_large_ones_leave_no_buffer_behind() {
        let (mut client, server) = loopback_pair().await;
        let mut conn = ServerConn::new(server, Duration::from_secs(30));
        // One copied into the head's write, one written beside it.
        for size in [10_000usize, 40_000] {
            let body = Bytes::from(vec![b'x'; size]);
            let resp = Response::new(crate::frontend::body::full(body.clone()));
            conn.write_response(resp, false).await.unwrap();
            assert!(conn.head.capacity() <= HEAD_BUFFER_KEPT);
            let mut wire = vec![0u8; 0];
            while !wire.ends_with(&body) {
                let mut chunk = vec![0u8; 65_536];
                let n = client.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed early");
                wire.extend_from_slice(&chunk[..n]);
            }
            let text = String::from_utf8(wire).unwrap();
            let (head, rest) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
            assert!(
                head.contains(&format!("\r\ncontent-length: {size}")),
                "{head}"
            );
            assert!(head.contains("\r\ndate: "), "{head}");
            assert_eq!(rest.len(), size);
        }
    }

    #[tokio::test]
    async fn a_head_the_http_types_refuse_goes_back_whole_for_hyper() {
        let (mut client, server) = loopback_pair().await;
        let mut conn = ServerConn::new(server, Duration::from_secs(30));
        let sent = b"POST /a<b> HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}GET / HTTP/1.1\r\n\r\n";
        client.write_all(sent).await.unwrap();
        while conn.buf.len() < sent.len() {
            conn.read_more(MIN_READ_ROOM).await.unwrap();
        }
        assert!(matches!(
            conn.next_request(100).await,
            Err(NoRequest::HandOff)
        ));
        assert_eq!(&conn.buf[..], sent);
    }

    #[tokio::test]
    async fn a_plain_target_is_read_in_place_and_any_other_goes_to_hyper() {
        let (mut client, server) = loopback_pair().await;
        let mut conn = ServerConn::new(server, Duration::from_secs(30));
        let sent = b"POST /messages?sessionId=a-1&x=%20 HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}\
            GET /sse HTTP/1.1\r\n\r\nGET http://h/mcp HTTP/1.1\r\n\r\n";
        client.write_all(sent).await.unwrap();
        while conn.buf.len() < sent.len() {
            conn.read_more(MIN_READ_ROOM).await.unwrap();
        }
        let (req, _) = conn.next_request(100).await.ok().unwrap();
        assert_eq!(req.head.path(), "/messages");
        assert_eq!(req.head.query(), Some("sessionId=a-1&x=%20"));
        let (req, _) = conn.next_request(100).await.ok().unwrap();
        assert_eq!((req.head.path(), req.head.query()), ("/sse", None));
        assert!(matches!(
            conn.next_request(100).await,
            Err(NoRequest::HandOff)
        ));
        assert_eq!(&conn.buf[..], b"GET http://h/mcp HTTP/1.1\r\n\r\n");
        for other in ["/a<b>", "/a b", "/{x}", "/a#b", "*", "/\u{e9}"] {
            assert!(!plain_origin_form(other.as_bytes()), "{other}");
        }
    }

    #[tokio::test]
    async fn an_answer_without_content_goes_out_without_framing() {
        let (mut client, server) = loopback_pair().await;
        let mut conn = ServerConn::new(server, Duration::from_secs(30));
        let mut resp = Response::new(crate::frontend::body::full(Bytes::new()));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        conn.write_response(resp, false).await.unwrap();
        let mut wire = Vec::new();
        while !wire.ends_with(b"\r\n\r\n") {
            let mut chunk = [0u8; 1024];
            let n = client.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early");
            wire.extend_from_slice(&chunk[..n]);
        }
        let head = String::from_utf8(wire).unwrap();
        assert!(head.starts_with("HTTP/1.1 204 No Content\r\n"), "{head}");
        assert!(!head.contains("content-length"), "{head}");
        assert!(!head.contains("transfer-encoding"), "{head}");
    }

    #[test]
    fn header_names_are_read_whatever_their_case() {
        let raw = "POST /mcp HTTP/1.1\r\nMcp-Session-Id: s1\r\nCONTENT-TYPE: application/json\r\n\
                   X-Custom: a\r\nContent-Length: 2\r\n\r\n{}";
        let Ok(head) = parse(raw.as_bytes(), 100) else {
            panic!("not taken")
        };
        let spans = head.headers[..head.count].to_vec();
        let headers = ClientHeaders::from_head(Bytes::from(raw), spans);
        let session = super::super::streamable_http::MCP_SESSION_ID;
        assert_eq!(headers.get_str(&session), Some("s1"));
        assert_eq!(
            headers.get_str(&http::header::CONTENT_TYPE),
            Some("application/json")
        );
        assert_eq!(headers.map()["x-custom"], "a");
        assert_eq!(headers.len(), 4);
    }

    #[test]
    fn chunk_sizes_are_hex_lines() {
        for len in [0usize, 1, 15, 16, 255, 4096, 0xabcdef, usize::MAX] {
            let mut out = [0u8; 18];
            assert_eq!(
                chunk_size_line(len, &mut out),
                format!("{len:x}\r\n").as_bytes()
            );
        }
    }

    #[test]
    fn only_plain_heads_are_taken() {
        let take = |head: &str| parse(head.as_bytes(), 100).is_ok();
        assert!(take("POST /mcp HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}"));
        assert!(take("GET /mcp HTTP/1.1\r\nConnection: keep-alive\r\n\r\n"));
        // hyper's: other framings and versions, upgrades, HEAD, bad or too long lengths.
        for other in [
            "POST /mcp HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            "POST /mcp HTTP/1.1\r\nExpect: 100-continue\r\ncontent-length: 2\r\n\r\n",
            "GET /ws HTTP/1.1\r\nupgrade: websocket\r\n\r\n",
            "POST /mcp HTTP/1.0\r\ncontent-length: 2\r\n\r\n",
            "HEAD /mcp HTTP/1.1\r\n\r\n",
            "CONNECT example.com:443 HTTP/1.1\r\n\r\n",
            "POST /mcp HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\n",
            "POST /mcp HTTP/1.1\r\ncontent-length: +1\r\n\r\n",
            "POST /mcp HTTP/1.1\r\ncontent-length: 101\r\n\r\n",
            "POST /mcp HTTP/1.1\r\nbad header\r\n\r\n",
        ] {
            assert!(
                matches!(parse(other.as_bytes(), 100), Err(NotTaken::Other)),
                "{other}"
            );
        }
        assert!(matches!(
            parse(b"POST /mcp HTTP/1.1\r\n", 100),
            Err(NotTaken::Partial)
        ));
        let Ok(head) = parse(b"GET / HTTP/1.1\r\nconnection: foo, Close\r\n\r\n", 0) else {
            panic!("a plain GET");
        };
        assert!(head.close);
    }
}
