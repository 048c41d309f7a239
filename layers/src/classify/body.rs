//! The body wrapper that classifies JSON and SSE bodies when they end.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::BoxError;

use super::{Classification, Component, ErrorClass, ErrorType, Verdict, classify_error};
use crate::jsonrpc::Message;
use crate::sse::SseParser;

/// How a body is inspected.
#[derive(Debug)]
pub(crate) enum Inspect {
    /// Already decided; pass frames through.
    Decided,
    /// One JSON-RPC message; chunks are kept (up to a limit) and peeked at the end.
    Json {
        chunks: Vec<Bytes>,
        len: usize,
        limit: usize,
    },
    /// An SSE stream of JSON-RPC messages; each event is peeked as it completes.
    Sse(SseParser),
}

pin_project! {
    /// A response body that decides its [`Classification`] when it ends.
    #[derive(Debug)]
    pub struct ClassifyBody<B> {
        #[pin]
        inner: B,
        inspect: Inspect,
        classification: Classification,
        component: Component,
    }
}

impl<B> ClassifyBody<B> {
    pub(crate) fn new(
        inner: B,
        inspect: Inspect,
        classification: Classification,
        component: Component,
    ) -> Self {
        ClassifyBody {
            inner,
            inspect,
            classification,
            component,
        }
    }
}

fn verdict_of(msg: &Message, component: Component) -> Verdict {
    match msg.failure_class(component) {
        Some(class) => Verdict::Failure(class),
        None => Verdict::Success,
    }
}

fn protocol_error(component: Component) -> Verdict {
    Verdict::Failure(ErrorClass::new(ErrorType::BackendProtocol, component))
}

/// The verdict once the whole body has been seen.
fn decide_at_end(inspect: Inspect, component: Component) -> Verdict {
    match inspect {
        Inspect::Decided => Verdict::Success,
        Inspect::Json { chunks, len, limit } if len <= limit => {
            let body = match chunks.len() {
                1 => chunks.into_iter().next().unwrap_or_default(),
                _ => chunks
                    .iter()
                    .fold(BytesMut::with_capacity(len), |mut b, c| {
                        b.extend_from_slice(c);
                        b
                    })
                    .freeze(),
            };
            match Message::parse(body) {
                Ok(msg) => verdict_of(&msg, component),
                Err(_) => protocol_error(component),
            }
        }
        // Too large to keep: only the status could be judged.
        Inspect::Json { .. } => Verdict::Success,
        Inspect::Sse(parser) if parser.is_mid_event() => protocol_error(component),
        Inspect::Sse(_) => Verdict::Success,
    }
}

/// Looks at one data chunk; returns a verdict as soon as one is certain.
fn inspect_chunk(inspect: &mut Inspect, data: &Bytes, component: Component) -> Option<Verdict> {
    match inspect {
        Inspect::Decided => None,
        Inspect::Json { chunks, len, limit } => {
            *len += data.len();
            if *len <= *limit {
                chunks.push(data.clone());
            } else {
                chunks.clear();
            }
            None
        }
        Inspect::Sse(parser) => {
            let mut found = None;
            let fed = parser.feed(data, &mut |event| {
                if found.is_some() || event.data.is_empty() {
                    return;
                }
                match Message::parse(Bytes::from(event.data)) {
                    Ok(msg) => {
                        if let Verdict::Failure(class) = verdict_of(&msg, component) {
                            found = Some(Verdict::Failure(class));
                        }
                    }
                    Err(_) => found = Some(protocol_error(component)),
                }
            });
            if fed.is_err() {
                found = Some(protocol_error(component));
            }
            found
        }
    }
}

impl<B> Body for ClassifyBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let component = *this.component;
        let frame = match ready!(this.inner.as_mut().poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                let e: BoxError = e.into();
                this.classification
                    .set(Verdict::Failure(classify_error(&*e)));
                return Poll::Ready(Some(Err(e)));
            }
            None => {
                let inspect = std::mem::replace(this.inspect, Inspect::Decided);
                this.classification.set(decide_at_end(inspect, component));
                return Poll::Ready(None);
            }
        };
        if let Some(data) = frame.data_ref() {
            if let Some(verdict) = inspect_chunk(this.inspect, data, component) {
                this.classification.set(verdict);
                *this.inspect = Inspect::Decided;
            }
        }
        // Senders such as hyper stop polling once the body says it has ended.
        if this.inner.is_end_stream() {
            let inspect = std::mem::replace(this.inspect, Inspect::Decided);
            this.classification.set(decide_at_end(inspect, component));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body that can be made from bytes: the error edge writes JSON-RPC errors with it.
pub trait ErrorBody: Sized {
    /// A body holding `bytes`.
    fn from_bytes(bytes: Bytes) -> Self;
}

impl ErrorBody for http_body_util::Full<Bytes> {
    fn from_bytes(bytes: Bytes) -> Self {
        http_body_util::Full::new(bytes)
    }
}

impl ErrorBody for String {
    fn from_bytes(bytes: Bytes) -> Self {
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl<E> ErrorBody for http_body_util::combinators::UnsyncBoxBody<Bytes, E>
where
    E: 'static,
{
    fn from_bytes(bytes: Bytes) -> Self {
        http_body_util::combinators::UnsyncBoxBody::new(http_body_util::BodyExt::map_err(
            http_body_util::Full::new(bytes),
            |never| match never {},
        ))
    }
}

impl<B: ErrorBody> ErrorBody for ClassifyBody<B> {
    fn from_bytes(bytes: Bytes) -> Self {
        // The edge already put its own decided classification in the response.
        ClassifyBody::new(
            B::from_bytes(bytes),
            Inspect::Decided,
            Classification::pending(),
            Component::Gateway,
        )
    }
}
