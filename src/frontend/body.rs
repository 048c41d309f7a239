//! Response bodies: whole, or streamed from a channel (SSE).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use mcp_gateway_layers::BoxError;
use tokio::sync::mpsc;

/// Every response body the frontends send.
pub(crate) type ResponseBody = BoxBody<Bytes, BoxError>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body fed by a channel, each item framed by `frame`; `guard` is dropped when the body is
/// (the client went away).
pub(crate) struct ChannelBody<G> {
    rx: mpsc::Receiver<Bytes>,
    frame: fn(Bytes) -> Bytes,
    _guard: G,
}

impl<G: Send + Sync + Unpin + 'static> ChannelBody<G> {
    pub(crate) fn boxed(
        rx: mpsc::Receiver<Bytes>,
        frame: fn(Bytes) -> Bytes,
        guard: G,
    ) -> ResponseBody {
        ChannelBody {
            rx,
            frame,
            _guard: guard,
        }
        .boxed()
    }
}

impl<G: Unpin> Body for ChannelBody<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = self.frame;
        self.rx
            .poll_recv(cx)
            .map(|next| next.map(|bytes| Ok(Frame::data(frame(bytes)))))
    }
}

/// Items that are already framed.
pub(crate) fn as_is(bytes: Bytes) -> Bytes {
    bytes
}

/// A raw JSON-RPC message framed as an SSE `message` event.
pub(crate) fn as_event(bytes: Bytes) -> Bytes {
    sse_event(None, &bytes)
}

/// One SSE event carrying a JSON-RPC message.
pub(crate) fn sse_event(id: Option<u64>, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 32);
    if let Some(id) = id {
        out.extend_from_slice(format!("id: {id}\n").as_bytes());
    }
    out.extend_from_slice(b"event: message\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// A response that streams SSE events.
pub(crate) fn sse_response(body: ResponseBody) -> http::Response<ResponseBody> {
    let mut resp = http::Response::new(body);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    resp
}
