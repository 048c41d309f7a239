use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use tower::{BoxError, Service};

use crate::jsonrpc::{Message, PeekError};

/// The service made by [`PeekJsonRpcLayer`](super::PeekJsonRpcLayer).
#[derive(Debug, Clone)]
pub struct PeekJsonRpc<S> {
    pub(super) inner: S,
    pub(super) max_body: usize,
}

/// The future of [`PeekJsonRpc`]: reads the body, then calls the inner service.
pub type ResponseFuture<R> = Pin<Box<dyn Future<Output = Result<R, BoxError>> + Send>>;

impl<S, B> Service<http::Request<B>> for PeekJsonRpc<S>
where
    S: Service<http::Request<Full<Bytes>>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The clone waits for the next call; the ready one serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let max_body = self.max_body;
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let bytes = match Limited::new(body, max_body).collect().await {
                Ok(collected) => Some(collected.to_bytes()),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    parts
                        .extensions
                        .insert(PeekError::TooLarge { limit: max_body });
                    None
                }
                Err(e) => return Err(e),
            };
            let bytes = bytes.unwrap_or_default();
            if parts.extensions.get::<PeekError>().is_none() {
                match Message::parse(bytes.clone()) {
                    Ok(msg) => {
                        parts.extensions.insert(msg);
                    }
                    Err(e) => {
                        parts.extensions.insert(e);
                    }
                }
            }
            inner
                .call(http::Request::from_parts(parts, Full::new(bytes)))
                .await
                .map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::ErrorResponseLayer;
    use crate::test_support::*;
    use tower::{Layer, ServiceExt};

    #[tokio::test]
    async fn invalid_bodies_are_answered_by_the_edge_without_reaching_the_service() {
        let app = tower::service_fn(|_req: http::Request<Full<Bytes>>| async {
            Ok::<_, BoxError>(http_response(200, "application/json", "{}"))
        });
        let svc =
            super::super::PeekJsonRpcLayer::new(64).layer(ErrorResponseLayer::new().layer(app));
        let cases = [
            ("{nope", 400, -32700),
            ("[1,2]", 400, -32600),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","padding":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#,
                413,
                -32600,
            ),
        ];
        for (body, status, code) in cases {
            let req = http::Request::new(Full::new(Bytes::from(body)));
            let resp = svc.clone().oneshot(req).await.unwrap();
            assert_eq!(resp.status(), status, "{body}");
            let json: serde_json::Value =
                serde_json::from_slice(&drain(resp.into_body()).await).unwrap();
            assert_eq!(json["error"]["code"], code, "{body}");
            assert_eq!(json["id"], serde_json::Value::Null);
        }
    }
}
