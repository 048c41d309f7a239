//! Helpers shared by the layers' unit tests.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use prometheus_client::registry::Registry;

use crate::jsonrpc::Message;
use crate::parts::{JsonRpcRequest, JsonRpcResponse};

pub(crate) fn http_request(body: &str) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    if let Ok(msg) = Message::parse(Bytes::copy_from_slice(body.as_bytes())) {
        req.extensions_mut().insert(msg);
    }
    req
}

pub(crate) fn http_response(
    status: u16,
    content_type: &str,
    body: &str,
) -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .unwrap()
}

pub(crate) fn message_request(raw: &str) -> JsonRpcRequest {
    JsonRpcRequest::new(Message::parse(Bytes::copy_from_slice(raw.as_bytes())).unwrap())
}

pub(crate) fn message_response(raw: &str) -> JsonRpcResponse {
    JsonRpcResponse::new(Message::parse(Bytes::copy_from_slice(raw.as_bytes())).unwrap())
}

pub(crate) async fn drain<B>(body: B) -> Bytes
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    body.collect().await.unwrap().to_bytes()
}

pub(crate) fn scrape(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

/// The value of the sample line that starts with `series` (name and labels), if present.
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}
