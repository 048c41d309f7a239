//! Helpers for the integration tests: an HTTP/1.1 client over real loopback sockets, metric
//! sample lookup, and the external peers (promtool, …) that CI must have.

#![allow(dead_code)]

pub mod clients;
pub mod processes;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;

/// An HTTP/1.1 connection to the server under test.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

/// A response, read whole.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

impl Conn {
    /// Connects to `addr`, from the loopback address `from` when given.
    pub async fn open(addr: SocketAddr, from: Option<IpAddr>) -> Conn {
        let socket = TcpSocket::new_v4().expect("socket");
        if let Some(ip) = from {
            socket
                .bind(SocketAddr::new(ip, 0))
                .expect("bind a loopback source address");
        }
        let stream = socket.connect(addr).await.expect("connect");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Conn { sender }
    }

    /// Sends a request and returns the response with its body unread (an SSE stream).
    pub async fn send_streaming(
        &mut self,
        req: http::Request<Full<Bytes>>,
    ) -> http::Response<hyper::body::Incoming> {
        self.sender.ready().await.expect("connection ready");
        self.sender.send_request(req).await.expect("response")
    }

    pub async fn send(&mut self, req: http::Request<Full<Bytes>>) -> Reply {
        self.sender.ready().await.expect("connection ready");
        let resp = tokio::time::timeout(Duration::from_secs(20), self.sender.send_request(req))
            .await
            .expect("answered within 20 s")
            .expect("response");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }

    pub async fn post(
        &mut self,
        path: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = http::Request::post(path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(Full::new(body.into())).expect("request"))
            .await
    }

    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = http::Request::get(path).header("host", "127.0.0.1");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(Full::default()).expect("request")).await
    }
}

/// The value of the sample `series` (name with labels, as exposed) in a scrape.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// An external program the tests use as a judge. Missing: a plain `cargo test` skips with a
/// notice; with `MCP_GATEWAY_REQUIRE_PEERS=1` (the README's test command sets it) it fails.
pub fn peer(program: &str) -> Option<PathBuf> {
    let extra = std::env::var_os("MCP_GATEWAY_PEER_PATH").map(PathBuf::from);
    let search = extra.into_iter().chain(
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default(),
    );
    if let Some(found) = search.map(|dir| dir.join(program)).find(|p| p.is_file()) {
        return Some(found);
    }
    if std::env::var_os("MCP_GATEWAY_REQUIRE_PEERS").is_some() {
        panic!(
            "{program} is required (MCP_GATEWAY_REQUIRE_PEERS is set) but not found; run scripts/test"
        );
    }
    eprintln!(
        "NOTICE: {program} not found; skipping the checks that need it (scripts/test installs it)"
    );
    None
}

/// Runs `program args` with `stdin`; panics with its output unless it succeeds.
pub fn run_peer(program: &std::path::Path, args: &[&str], stdin: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} {args:?} failed: {text}",
        program.display()
    );
    text
}
