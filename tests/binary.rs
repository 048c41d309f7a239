//! The binary's command line and environment, as `docs/CONFIG.md` describes them: `check-config`,
//! the addresses and the file set by environment variables (and flags winning over them), and
//! the text log format.

mod support;

use serde_json::json;
use support::clients::{HttpClient, text};
use support::processes::tempfile_path::TempPath;
use support::processes::{gateway_exe, loopback_args, start};

fn demo_backend() -> String {
    format!(
        "backends:\n  - {{namespace: demo, transport: stdio, command: {}, args: [demo-server, stdio]}}\n",
        gateway_exe()
    )
}

#[test]
fn check_config_accepts_a_valid_file_and_names_what_is_wrong_in_another() {
    let valid = TempPath::write(&demo_backend());
    let out = std::process::Command::new(gateway_exe())
        .args(["check-config", valid.path()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("valid (1 backends)"), "{stdout}");

    let invalid = TempPath::write("backends:\n  - {namespace: old, transport: sse}\n");
    let out = std::process::Command::new(gateway_exe())
        .args(["check-config", invalid.path()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr.contains("backends[0].url: required for transport sse"),
        "{stderr}"
    );
}

/// `MCP_GATEWAY_CONFIG`, `MCP_GATEWAY_LISTEN` and `MCP_GATEWAY_METRICS_LISTEN` stand for
/// `--config`, `--listen` and `--metrics-listen`; a flag wins over its variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_sets_the_file_and_addresses_and_flags_win() {
    let config = TempPath::write(&demo_backend());
    let ready = |line: &str| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        (v["msg"] == "mcp-gateway serving /mcp, /sse and /ws").then(|| {
            (
                v["listen"]
                    .as_str()
                    .unwrap()
                    .parse::<std::net::SocketAddr>()
                    .unwrap(),
                v["metrics"].as_str().unwrap().to_owned(),
            )
        })
    };
    let env = [
        ("MCP_GATEWAY_CONFIG", config.path()),
        ("MCP_GATEWAY_LISTEN", "127.0.0.1:0"),
        ("MCP_GATEWAY_METRICS_LISTEN", "127.0.0.1:0"),
    ];
    let (_gateway, (addr, metrics)) = start(&[], &env, ready).await;
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    assert!(
        metrics.starts_with("127.0.0.1:") && !metrics.ends_with(":0"),
        "{metrics}"
    );
    // The file named by the variable is the one served: its backend answers.
    let mut http = HttpClient::connect(addr).await;
    let echoed = http
        .call(1, "demo__echo", json!({"message": "from env"}))
        .await;
    assert_eq!(text(&echoed), "from env");

    // A flag wins: the variable names a port that is taken, the flag a free one.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let env = [
        ("MCP_GATEWAY_CONFIG", config.path()),
        ("MCP_GATEWAY_LISTEN", taken_addr.as_str()),
        ("MCP_GATEWAY_METRICS_LISTEN", "127.0.0.1:0"),
    ];
    let (_gateway, (addr, _)) = start(&["--listen", "127.0.0.1:0"], &env, ready).await;
    assert_ne!(addr.to_string(), taken_addr);
}

/// `MCP_GATEWAY_LOG_FORMAT=text`: plain lines, not JSON, still with each request's line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_are_plain_lines_with_each_request() {
    let config = TempPath::write(&demo_backend());
    let env = [
        ("MCP_GATEWAY_LOG_FORMAT", "text"),
        ("MCP_GATEWAY_LOG", "info"),
    ];
    let args = loopback_args(config.path());
    // The ready line, in text: `… mcp-gateway serving /mcp, /sse and /ws listen=127.0.0.1:PORT …`.
    let (gateway, addr) = start(&args, &env, |line: &str| {
        if !line.contains("mcp-gateway serving /mcp, /sse and /ws") {
            return None;
        }
        let rest = line.split("listen=").nth(1)?;
        rest.split_whitespace()
            .next()?
            .trim_matches('"')
            .parse::<std::net::SocketAddr>()
            .ok()
    })
    .await;
    let mut http = HttpClient::connect(addr).await;
    let echoed = http
        .call(1, "demo__echo", json!({"message": "plain"}))
        .await;
    assert_eq!(text(&echoed), "plain");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let lines = gateway.log_lines();
        if let Some(line) = lines
            .iter()
            .find(|l| l.contains("request completed") && l.contains("tools/call"))
        {
            assert!(
                serde_json::from_str::<serde_json::Value>(line).is_err(),
                "{line}"
            );
            assert!(line.contains("INFO"), "{line}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{lines:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        gateway
            .log_lines()
            .iter()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_err()),
        "{:?}",
        gateway.log_lines()
    );
}
