//! Interoperability with peers nobody here wrote: the official MCP Python SDK client
//! (`mcp==2.3.0`) over Streamable HTTP and legacy SSE, through the gateway, to
//! `@modelcontextprotocol/server-everything@2026.8.31` over stdio and Streamable HTTP at once;
//! and the MCP Inspector CLI listing and calling tools. `scripts/test` installs the peers under
//! `target/peers`; without them a plain `cargo test` skips with a notice.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::processes::gateway;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn peers_dir() -> PathBuf {
    std::env::var_os("MCP_GATEWAY_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/peers"))
}

/// The peer at `relative` under the peers folder, or a skip (a failure when peers are required).
fn installed(relative: &str) -> Option<PathBuf> {
    let path = peers_dir().join(relative);
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("MCP_GATEWAY_REQUIRE_PEERS").is_some() {
        panic!(
            "{} is required but missing; run scripts/test",
            path.display()
        );
    }
    eprintln!(
        "NOTICE: {} not installed; skipping this interop test (scripts/test installs it)",
        path.display()
    );
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// server-everything over Streamable HTTP on a loopback port.
async fn everything_http(bin: &PathBuf) -> (tokio::process::Child, u16) {
    let port = free_port();
    let preload = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/loopback.cjs");
    let mut child = Command::new(bin)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .env("NODE_OPTIONS", format!("--require {}", preload.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start server-everything");
    let mut lines = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .merge_stderr(child.stderr.take().unwrap());
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next().await {
            if line.contains("listening on port") {
                return;
            }
        }
        panic!("server-everything exited before listening");
    })
    .await
    .expect("server-everything listening within 30 s");
    tokio::spawn(async move { while lines.next().await.is_some() {} });
    (child, port)
}

/// Lines of stdout and stderr, interleaved.
struct Lines {
    rx: tokio::sync::mpsc::UnboundedReceiver<String>,
}

trait MergeStderr {
    fn merge_stderr(self, stderr: tokio::process::ChildStderr) -> Lines;
}

impl MergeStderr for tokio::io::Lines<BufReader<tokio::process::ChildStdout>> {
    fn merge_stderr(mut self, stderr: tokio::process::ChildStderr) -> Lines {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let out = tx.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = self.next_line().await {
                let _ = out.send(line);
            }
        });
        tokio::spawn(async move {
            let mut err = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = err.next_line().await {
                let _ = tx.send(line);
            }
        });
        Lines { rx }
    }
}

impl Lines {
    async fn next(&mut self) -> Option<String> {
        self.rx.recv().await
    }
}

async fn run(program: &PathBuf, args: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(program).args(args).kill_on_drop(true).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{} {args:?} did not finish within 120 s", program.display()))
    .expect("run the peer");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{text}\n{}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_and_the_inspector_work_through_the_gateway_to_server_everything() {
    let (Some(python), Some(everything), Some(inspector)) = (
        installed("venv/bin/python"),
        installed("npm/node_modules/.bin/mcp-server-everything"),
        installed("npm/node_modules/.bin/mcp-inspector"),
    ) else {
        return;
    };
    let (_everything_http, port) = everything_http(&everything).await;
    let yaml = format!(
        "backends:\n  - {{namespace: ev, transport: stdio, command: '{}', args: [stdio]}}\n  - {{namespace: evh, transport: streamable_http, url: 'http://127.0.0.1:{port}/mcp'}}\n",
        everything.display()
    );
    let gw = gateway(&yaml).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/sdk_client.py");
    for (transport, path) in [("streamable_http", "/mcp"), ("sse", "/sse")] {
        let url = format!("http://{}{path}", gw.addr);
        let out = run(&python, &[script.to_str().unwrap(), transport, &url]).await;
        let seen: Value = serde_json::from_str(out.lines().last().unwrap_or(""))
            .unwrap_or_else(|e| panic!("{transport}: {e}: {out}"));
        assert_eq!(seen["server"], "mcp-gateway", "{transport}");
        assert_eq!(
            seen["protocol_version"], "2025-11-25",
            "{transport}: offered 2026-07-28, settled on a version both speak"
        );
        let tools: Vec<&str> = seen["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(tools.len(), 26, "13 tools from each namespace: {tools:?}");
        assert!(
            tools.contains(&"ev__echo") && tools.contains(&"evh__get-sum"),
            "{tools:?}"
        );
        assert_eq!(
            seen["echo"], "Echo: hello from the python sdk",
            "{transport}"
        );
        assert_eq!(seen["sum"], "The sum of 2 and 3 is 5.", "{transport}");
        assert_eq!(seen["long_operation_is_error"], false);
        assert_eq!(
            seen["progress"],
            serde_json::json!([1.0, 2.0, 3.0]),
            "{transport}: progress reached the SDK's callback"
        );
    }

    let url = format!("http://{}/mcp", gw.addr);
    let listed: Value = serde_json::from_str(
        &run(
            &inspector,
            &[
                "--cli",
                &url,
                "--transport",
                "http",
                "--method",
                "tools/list",
            ],
        )
        .await,
    )
    .unwrap();
    assert_eq!(listed["tools"].as_array().unwrap().len(), 26);
    let called: Value = serde_json::from_str(
        &run(
            &inspector,
            &[
                "--cli",
                &url,
                "--transport",
                "http",
                "--method",
                "tools/call",
                "--tool-name",
                "ev__get-sum",
                "--tool-arg",
                "a=2",
                "b=3",
            ],
        )
        .await,
    )
    .unwrap();
    assert_eq!(called["content"][0]["text"], "The sum of 2 and 3 is 5.");
}
