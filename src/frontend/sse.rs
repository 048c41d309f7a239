//! The legacy HTTP+SSE transport: `GET /sse` opens a session whose first event, `endpoint`,
//! names the URL the client POSTs its messages to; every answer comes back on the stream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::{Response, StatusCode};
use mcp_gateway_layers::classify::ErrorType;
use tokio::sync::mpsc;

use super::body::{ChannelBody, ResponseBody, full, sse_event, sse_response};
use super::{ClientRequest, Frontend, client_error};
use crate::lock;
use crate::mcp::{ClientTransport, Outbox, Session};

type SessionMap = Arc<Mutex<HashMap<String, (Arc<dyn Session>, Outbox)>>>;

/// The open SSE sessions, by id.
#[derive(Default)]
pub(crate) struct Sessions {
    map: SessionMap,
}

impl Sessions {
    pub(crate) fn close_all(&self) {
        let all: Vec<_> = lock(&self.map).drain().collect();
        for (_, (session, _)) in all {
            session.close();
        }
    }
}

/// Closes the session when its stream's body is dropped (the client went away).
struct CloseOnDrop {
    id: String,
    map: SessionMap,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some((session, _)) = lock(&self.map).remove(&self.id) {
            session.close();
            tracing::info!(session_id = %self.id, transport = "sse", "session closed");
        }
    }
}

fn frame(raw: Bytes) -> Bytes {
    // The first item is the already-framed endpoint event; the rest are messages.
    if raw.starts_with(b"event: endpoint") {
        raw
    } else {
        sse_event(None, &raw)
    }
}

impl Frontend {
    pub(super) fn sse_open(self: Arc<Self>) -> Response<ResponseBody> {
        let id = super::streamable_http::new_session_id();
        let (outbox, rx) = Outbox::new(256);
        let session = self.handler.open(ClientTransport::Sse, outbox.clone());
        lock(&self.sse.map).insert(id.clone(), (session, outbox.clone()));
        tracing::info!(session_id = %id, transport = "sse", "session opened");
        let endpoint = Bytes::from(format!(
            "event: endpoint\ndata: /messages?sessionId={id}\n\n"
        ));
        let (first_tx, first_rx) = mpsc::channel::<Bytes>(1);
        let _ = first_tx.try_send(endpoint);
        drop(first_tx);
        let merged = merge(first_rx, rx);
        sse_response(ChannelBody::boxed(
            merged,
            frame,
            CloseOnDrop {
                id,
                map: self.sse.map.clone(),
            },
        ))
    }

    pub(super) async fn sse_post(
        self: Arc<Self>,
        req: ClientRequest,
        peer: SocketAddr,
        started: Instant,
    ) -> Response<ResponseBody> {
        let id = req
            .head
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("sessionId="))
            .unwrap_or("")
            .to_owned();
        let found = lock(&self.sse.map).get(&id).cloned();
        let Some((session, outbox)) = found else {
            let class = client_error(ErrorType::NotFound, StatusCode::NOT_FOUND);
            return self.refused(&class, "unknown session", started);
        };
        let (head, msg) = match self.read_message(req, started).await {
            Ok(read) => read,
            Err(resp) => return *resp,
        };
        let frontend = self.clone();
        tokio::spawn(async move {
            let ctx = super::context(head, peer, None, Some(Arc::from(id)));
            if let Some(resp) = frontend.dispatch(session, msg, ctx).await {
                let _ = outbox.send(resp.into_raw()).await;
            }
        });
        let mut resp = Response::new(full(Bytes::from_static(b"Accepted")));
        *resp.status_mut() = StatusCode::ACCEPTED;
        resp
    }
}

/// The endpoint event first, then the session's messages.
fn merge(
    mut first: mpsc::Receiver<Bytes>,
    mut rest: mpsc::Receiver<Bytes>,
) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(item) = first.recv().await {
            if tx.send(item).await.is_err() {
                return;
            }
        }
        loop {
            tokio::select! {
                item = rest.recv() => match item {
                    Some(item) => if tx.send(item).await.is_err() { return },
                    None => return,
                },
                () = tx.closed() => return,
            }
        }
    });
    rx
}
