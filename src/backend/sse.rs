//! Legacy HTTP+SSE backends: a GET stream whose first event names the URL to POST messages to.

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use mcp_gateway_layers::sse::SseParser;
use tokio::sync::mpsc;

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
        let client = self.0.client.clone();
        let headers = self.0.headers.clone();
        let url = self.0.config.url.clone().unwrap_or_default();
        let max = self.0.max_message_bytes;
        let namespace = self.0.config.namespace.clone();
        Box::pin(async move {
            let base: http::Uri = url.parse().map_err(|e| format!("invalid url: {e}"))?;
            let mut req = Request::builder()
                .method(Method::GET)
                .uri(base.clone())
                .header(http::header::ACCEPT, "text/event-stream");
            if let Some(h) = req.headers_mut() {
                h.extend(headers.clone());
            }
            let req = req.body(Full::default()).map_err(|e| e.to_string())?;
            let resp = client
                .request(req)
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("GET {url}: HTTP {}", resp.status()));
            }
            let mut body = resp.into_body();
            let mut parser = SseParser::new(max);
            let mut pending_events = Vec::new();
            let endpoint = loop {
                let frame = body
                    .frame()
                    .await
                    .ok_or("the stream ended before its endpoint event")?
                    .map_err(|e| e.to_string())?;
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                parser
                    .feed(data, &mut |e| pending_events.push(e))
                    .map_err(|e| e.to_string())?;
                if let Some(pos) = pending_events.iter().position(|e| e.event == "endpoint") {
                    let endpoint = pending_events.remove(pos).data;
                    break resolve(&base, endpoint.trim())
                        .ok_or(format!("invalid endpoint {endpoint:?}"))?;
                }
            };
            let (tx, mut outgoing) = mpsc::channel::<mcp_gateway_layers::jsonrpc::Message>(256);
            let reader_incoming = incoming.clone();
            let reader = tokio::spawn(async move {
                for event in pending_events {
                    let _ = reader_incoming.send(inbound(Bytes::from(event.data))).await;
                }
                while let Some(Ok(frame)) = body.frame().await {
                    let Some(data) = frame.data_ref() else {
                        continue;
                    };
                    let mut events = Vec::new();
                    if let Err(e) = parser.feed(data, &mut |e| events.push(e)) {
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
                    let mut req = Request::builder()
                        .method(Method::POST)
                        .uri(endpoint.clone())
                        .header(http::header::CONTENT_TYPE, "application/json");
                    if let Some(h) = req.headers_mut() {
                        h.extend(headers.clone());
                        trace_headers(&msg, h);
                    }
                    let Ok(req) = req.body(Full::new(msg.into_raw())) else {
                        continue;
                    };
                    match client.request(req).await {
                        Ok(resp) if resp.status().is_success() => {}
                        Ok(resp) => {
                            tracing::warn!(backend = %namespace, status = %resp.status(), "backend refused a message")
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
