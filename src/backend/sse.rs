//! Legacy HTTP+SSE backends: a GET stream whose first event names the URL to POST messages to.

use bytes::Bytes;
use mcp_gateway_layers::sse::SseParser;
use tokio::sync::mpsc;

use super::http1::{Endpoint, Request};
use super::streamable_http::{HttpTarget, trace_headers};
use super::{Connector, Inbound, Inbox, PipeTx, inbound};
use crate::mcp::BoxFuture;

pub(super) struct SseConnector(pub(super) HttpTarget);

/// Resolves the `endpoint` event's data against the stream's URL.
fn resolve(base: &http::Uri, endpoint: &str) -> Option<http::Uri> {
    if endpoint.starts_with("http://") {
        return endpoint.parse().ok();
    }
    let authority = base.authority()?;
    let path = if endpoint.starts_with('/') {
        endpoint.to_owned()
    } else {
        let dir = base.path().rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{endpoint}")
    };
    format!("http://{authority}{path}").parse().ok()
}

impl Connector for SseConnector {
    fn connect(&self, incoming: Inbox) -> BoxFuture<Result<PipeTx, String>> {
        let pool = self.0.pool.clone();
        let headers = self.0.headers.clone();
        let stream_endpoint = self.0.endpoint.clone();
        let url = self.0.config.url.clone().unwrap_or_default();
        let max = self.0.max_message_bytes;
        let namespace = self.0.config.namespace.clone();
        Box::pin(async move {
            let stream_endpoint = stream_endpoint?;
            let base: http::Uri = url.parse().map_err(|e| format!("invalid url: {e}"))?;
            let mut req = Request::new("GET", &stream_endpoint);
            req.header("accept", b"text/event-stream").headers(&headers);
            let resp = pool
                .send(req, &[])
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            if !resp.status.is_success() {
                return Err(format!("GET {url}: HTTP {}", resp.status));
            }
            let mut body = resp.body.unpooled();
            let mut parser = SseParser::new(max);
            let mut pending_events = Vec::new();
            let endpoint = loop {
                let data = body
                    .chunk()
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("the stream ended before its endpoint event")?;
                parser
                    .feed(&data, &mut |e| pending_events.push(e))
                    .map_err(|e| e.to_string())?;
                if let Some(pos) = pending_events.iter().position(|e| e.event == "endpoint") {
                    let endpoint = pending_events.remove(pos).data;
                    let resolved = resolve(&base, endpoint.trim())
                        .ok_or(format!("invalid endpoint {endpoint:?}"))?;
                    break Endpoint::parse(&resolved.to_string())?;
                }
            };
            let (tx, mut outgoing) = mpsc::channel::<mcp_gateway_layers::jsonrpc::Message>(256);
            let reader_incoming = incoming.clone();
            let reader = tokio::spawn(async move {
                for event in pending_events {
                    let _ = reader_incoming.send(inbound(Bytes::from(event.data))).await;
                }
                while let Ok(Some(data)) = body.chunk().await {
                    let mut events = Vec::new();
                    if let Err(e) = parser.feed(&data, &mut |e| events.push(e)) {
                        let _ = reader_incoming
                            .send(Inbound::Garbage(e.to_string().into()))
                            .await;
                        break;
                    }
                    for event in events
                        .into_iter()
                        .filter(|e| e.event == "message" && !e.data.is_empty())
                    {
                        if reader_incoming
                            .send(inbound(Bytes::from(event.data)))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
            tokio::spawn(async move {
                while let Some(msg) = outgoing.recv().await {
                    let mut req = Request::new("POST", &endpoint);
                    req.header("content-type", b"application/json")
                        .headers(&headers);
                    trace_headers(&msg, &mut req);
                    match pool.send(req, msg.raw()).await {
                        Ok(resp) if resp.status.is_success() => {
                            // Read to its end, so that the connection can serve again.
                            let _ = resp.body.collect(max).await;
                        }
                        Ok(resp) => {
                            tracing::warn!(backend = %namespace, status = %resp.status, "backend refused a message")
                        }
                        Err(e) => {
                            tracing::warn!(backend = %namespace, error = %e, "posting to the backend failed");
                            break;
                        }
                    }
                }
                // Closing the pipe ends the stream too.
                reader.abort();
                drop(incoming);
            });
            Ok(PipeTx::Queue(tx))
        })
    }
}
