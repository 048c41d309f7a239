//! The gateway and the demo server as real child processes on loopback ports.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// A running process and every line it wrote to stderr.
pub struct Running {
    pub child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Running {
    /// Every stderr line so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

/// Starts `args`, waits (bounded) for a stderr line for which `ready` returns a value.
pub async fn start<T>(
    args: &[&str],
    env: &[(&str, &str)],
    ready: impl Fn(&str) -> Option<T>,
) -> (Running, T) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-gateway"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start mcp-gateway");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (line_tx, mut line_rx) = mpsc::unbounded_channel::<String>();
    let sink = log.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().unwrap().push(line.clone());
            let _ = line_tx.send(line);
        }
    });
    let early_log = log.clone();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = line_rx.recv().await {
            if let Some(found) = ready(&line) {
                return found;
            }
        }
        panic!(
            "{args:?} exited before it was ready; stderr: {:?}",
            early_log.lock().unwrap()
        );
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{args:?} not ready within 30 s; stderr: {:?}",
            log.lock().unwrap()
        )
    });
    (Running { child, log }, found)
}

/// A gateway process.
pub struct Gateway {
    pub process: Running,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    _config: tempfile_path::TempPath,
}

/// The gateway's arguments for `config`, both listeners on free loopback ports.
pub fn loopback_args(config: &str) -> [&str; 6] {
    [
        "--config",
        config,
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ]
}

/// Starts the gateway with `yaml` (its `listen` addresses are set to free loopback ports).
pub async fn gateway(yaml: &str) -> Gateway {
    gateway_with_env(yaml, &[]).await
}

/// [`gateway`], with more environment variables.
pub async fn gateway_with_env(yaml: &str, env: &[(&str, &str)]) -> Gateway {
    let config = tempfile_path::TempPath::write(yaml);
    let args = loopback_args(config.path());
    let env: Vec<_> = [("MCP_GATEWAY_LOG", "debug")]
        .into_iter()
        .chain(env.iter().copied())
        .collect();
    let (process, (addr, metrics)) = start(&args, &env, |line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        if v["msg"] != "mcp-gateway serving /mcp, /sse and /ws" {
            return None;
        }
        Some((
            v["listen"].as_str()?.parse().ok()?,
            v["metrics"].as_str()?.parse().ok()?,
        ))
    })
    .await;
    Gateway {
        process,
        addr,
        metrics,
        _config: config,
    }
}

/// A demo server serving /mcp, /sse and /ws.
pub async fn demo_http() -> (Running, SocketAddr) {
    start(&["demo-server", "http", "127.0.0.1:0"], &[], |line| {
        line.strip_prefix("demo server listening on http://")?
            .trim()
            .parse()
            .ok()
    })
    .await
}

/// The gateway binary's path, for stdio backends in configs.
pub fn gateway_exe() -> &'static str {
    env!("CARGO_BIN_EXE_mcp-gateway")
}

pub mod tempfile_path {
    use std::sync::atomic::{AtomicU64, Ordering};

    static NEXT: AtomicU64 = AtomicU64::new(0);

    /// A file that is removed when dropped.
    pub struct TempPath(String);

    impl TempPath {
        pub fn write(text: &str) -> TempPath {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("mcp-gateway-test-{}-{n}.yaml", std::process::id()));
            std::fs::write(&path, text).expect("write the config");
            TempPath(path.display().to_string())
        }

        pub fn path(&self) -> &str {
            &self.0
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}
