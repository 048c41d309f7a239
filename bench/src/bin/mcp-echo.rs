//! A minimal, fast MCP echo server: `mcp-echo stdio` or `mcp-echo http ADDR` (Streamable HTTP at
//! `/mcp`, JSON answers). Its one tool, `echo`, returns its `message`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use mcp_gateway_bench::echo_answer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};

async fn stdio() -> std::io::Result<()> {
    let mut lines = BufReader::with_capacity(1 << 16, tokio::io::stdin()).lines();
    let mut out = BufWriter::with_capacity(1 << 16, tokio::io::stdout());
    while let Some(line) = lines.next_line().await? {
        if let Some(answer) = echo_answer(Bytes::from(line)) {
            out.write_all(&answer).await?;
            out.write_all(b"\n").await?;
        }
        // Flush when no more input is waiting: one write for a burst of answers.
        if lines.get_ref().buffer().is_empty() {
            out.flush().await?;
        }
    }
    out.flush().await
}

async fn http(addr: &str) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!(
        "mcp-echo listening on http://{}/mcp",
        listener.local_addr()?
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                |req: http::Request<hyper::body::Incoming>| async move {
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let resp = match echo_answer(body) {
                        Some(answer) => http::Response::builder()
                            .header("content-type", "application/json")
                            .header("mcp-session-id", "echo")
                            .body(Full::new(answer)),
                        None => http::Response::builder()
                            .status(202)
                            .body(Full::new(Bytes::new())),
                    };
                    Ok::<_, Infallible>(resp.unwrap_or_default())
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match (args.first().map(String::as_str), args.get(1)) {
        (Some("stdio"), None) => stdio().await,
        (Some("http"), Some(addr)) => http(addr).await,
        _ => {
            eprintln!("usage: mcp-echo stdio | mcp-echo http ADDR");
            std::process::exit(2);
        }
    }
}
