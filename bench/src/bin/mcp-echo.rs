//! A minimal, fast MCP echo server: `mcp-echo stdio` or `mcp-echo http ADDR` (Streamable HTTP at
//! `/mcp`, JSON answers). Its one tool, `echo`, returns its `message`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use mcp_gateway_bench::echo_answer;

/// Plain blocking reads and writes: tokio's stdin and stdout hand every read and write to a
/// blocking thread, which would cost this process more than the gateway it measures.
fn stdio() -> std::io::Result<()> {
    use std::io::{BufRead, Write};
    let mut input = std::io::BufReader::with_capacity(1 << 16, std::io::stdin().lock());
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return out.flush();
        }
        if let Some(answer) = echo_answer(Bytes::copy_from_slice(line.trim_ascii())) {
            out.write_all(&answer)?;
            out.write_all(b"\n")?;
        }
        // Flush when no more input is waiting: one write for a burst of answers.
        if input.buffer().is_empty() {
            out.flush()?;
        }
    }
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

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match (args.first().map(String::as_str), args.get(1)) {
        (Some("stdio"), None) => stdio(),
        (Some("http"), Some(addr)) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(http(addr)),
        _ => {
            eprintln!("usage: mcp-echo stdio | mcp-echo http ADDR");
            std::process::exit(2);
        }
    }
}
