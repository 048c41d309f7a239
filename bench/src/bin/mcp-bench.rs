//! Runs each scenario direct to the echo backend and through the gateway, interleaved, and
//! prints one JSON line per run and a table with the ratio, each process's CPU time per 1,000
//! requests (from /proc) and the gateway's peak RSS.
//!
//! mcp-bench [--quick] [--gateway PATH] [--seconds S] [--rounds R] [--observability on|off]
//!
//! `--quick` is the CI smoke run: a second per run, one concurrency, one payload.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

type Error = Box<dyn std::error::Error>;

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// CPU seconds used by all of `parent`'s child processes (the stdio backends of its sessions):
/// the live ones, plus those already reaped (accounted in the parent's cutime and cstime).
fn children_cpu_seconds(parent: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{parent}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let reaped = (field(13) + field(14)) / 100.0;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return reaped;
    };
    let live: f64 = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            ppid == Some(parent)
        })
        .map(cpu_seconds)
        .sum();
    live + reaped
}

/// Peak resident set size in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// Starts a process and waits for the stderr line `ready` accepts; the rest of stderr goes to `log`.
fn start(
    cmd: &mut Command,
    log: &Path,
    ready: impl Fn(&str) -> Option<String>,
) -> Result<(Child, String), Error> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // Never wait forever for a process that will not say it is ready.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let pid = child.id();
    std::thread::spawn(move || {
        if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    let mut lines = BufReader::new(child.stderr.take().ok_or("no stderr")?).lines();
    let found = loop {
        let line = lines.next().ok_or("exited before it was ready")??;
        if let Some(found) = ready(&line) {
            break found;
        }
    };
    let _ = ready_tx.send(());
    let mut file = std::fs::File::create(log)?;
    std::thread::spawn(move || {
        use std::io::Write;
        for line in lines.map_while(Result::ok) {
            let _ = writeln!(file, "{line}");
        }
    });
    Ok((child, found))
}

struct Run<'a> {
    load: &'a Path,
    url: String,
    transport: &'a str,
    tool: &'a str,
    concurrency: usize,
    payload: usize,
    seconds: f64,
}

fn load(run: &Run<'_>) -> Result<Value, Error> {
    let out = Command::new(run.load)
        .args([
            "--url",
            &run.url,
            "--transport",
            run.transport,
            "--tool",
            run.tool,
        ])
        .args([
            "--concurrency",
            &run.concurrency.to_string(),
            "--sessions",
            &run.concurrency.clamp(1, 4).to_string(),
        ])
        .args([
            "--payload",
            &run.payload.to_string(),
            "--seconds",
            &run.seconds.to_string(),
        ])
        .output()?;
    if !out.status.success() {
        return Err(format!("mcp-load failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let quick = args.iter().any(|a| a == "--quick");
    let dir = std::env::current_exe()?
        .parent()
        .ok_or("no directory")?
        .to_path_buf();
    let gateway_exe = get("--gateway")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("mcp-gateway"));
    let (echo, load_exe) = (dir.join("mcp-echo"), dir.join("mcp-load"));
    let seconds: f64 =
        get("--seconds").map_or(if quick { 1.0 } else { 5.0 }, |s| s.parse().unwrap_or(5.0));
    let rounds: usize =
        get("--rounds").map_or(if quick { 1 } else { 3 }, |s| s.parse().unwrap_or(3));
    let logs = std::env::temp_dir().join(format!("mcp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&logs)?;

    let (mut echo_http, echo_url) = start(
        Command::new(&echo).args(["http", "127.0.0.1:0"]),
        &logs.join("echo.log"),
        |l| l.strip_prefix("mcp-echo listening on ").map(str::to_owned),
    )?;
    let config = format!(
        "backends:\n  - {{namespace: http, transport: streamable_http, url: '{echo_url}'}}\n  - {{namespace: stdio, transport: stdio, command: '{}', args: [stdio]}}\n",
        echo.display()
    );
    std::fs::write(logs.join("gateway.yaml"), config)?;
    let mut gateway_cmd = Command::new(&gateway_exe);
    // Observability on: a JSON log line per request (info). Off: warnings only. Metrics are always on.
    let observability = get("--observability").unwrap_or_else(|| "on".to_owned());
    gateway_cmd.env(
        "MCP_GATEWAY_LOG",
        // "off" keeps the gateway's own startup and session lines (target mcp_gateway), not
        // the per-request events (target mcp_gateway_layers).
        if observability == "off" {
            "warn,mcp_gateway=info"
        } else {
            "info"
        },
    );
    gateway_cmd.args([
        "--config",
        logs.join("gateway.yaml").to_str().ok_or("path")?,
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let (mut gateway, listen) = start(&mut gateway_cmd, &logs.join("gateway.log"), |l| {
        let v: Value = serde_json::from_str(l).ok()?;
        (v["msg"] == "mcp-gateway serving /mcp, /sse and /ws")
            .then(|| v["listen"].as_str().map(str::to_owned))
            .flatten()
    })?;

    let payloads: &[usize] = if quick { &[64] } else { &[64, 4096] };
    let concurrencies: &[usize] = if quick { &[4] } else { &[1, 16, 64] };
    // (scenario, transport, url, tool, measured direct too)
    let scenarios = [
        (
            "Streamable HTTP → HTTP backend",
            "http",
            format!("http://{listen}/mcp"),
            "http__echo",
            true,
        ),
        (
            "Streamable HTTP → stdio backend",
            "http",
            format!("http://{listen}/mcp"),
            "stdio__echo",
            false,
        ),
        (
            "WebSocket → stdio backend",
            "ws",
            format!("ws://{listen}/ws"),
            "stdio__echo",
            false,
        ),
    ];
    println!(
        "| scenario | payload | concurrency | direct req/s | gateway req/s | ratio | gateway p50 / p99 µs | gateway CPU s per 1k | backend CPU s per 1k |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, transport, url, tool, direct) in &scenarios {
        for &payload in payloads {
            for &concurrency in concurrencies {
                let mut direct_rps = Vec::new();
                let mut gateway_runs = Vec::new();
                for _ in 0..rounds {
                    if *direct {
                        let run = Run {
                            load: &load_exe,
                            url: echo_url.clone(),
                            transport,
                            tool: "echo",
                            concurrency,
                            payload,
                            seconds,
                        };
                        let result = load(&run)?;
                        eprintln!(
                            "{}",
                            serde_json::json!({"scenario": name, "via": "direct", "result": result})
                        );
                        direct_rps.push(result["rps"].as_f64().unwrap_or(0.0));
                    }
                    let echo_pid = echo_http.id();
                    let backend_cpu = || {
                        if *direct {
                            cpu_seconds(echo_pid)
                        } else {
                            children_cpu_seconds(gateway.id())
                        }
                    };
                    let (gw_cpu, be_cpu) = (cpu_seconds(gateway.id()), backend_cpu());
                    let run = Run {
                        load: &load_exe,
                        url: url.clone(),
                        transport,
                        tool,
                        concurrency,
                        payload,
                        seconds,
                    };
                    let result = load(&run)?;
                    let requests = result["requests"].as_f64().unwrap_or(0.0).max(1.0);
                    let gw_per_1k = (cpu_seconds(gateway.id()) - gw_cpu) / requests * 1000.0;
                    let be_per_1k = (backend_cpu() - be_cpu) / requests * 1000.0;
                    eprintln!(
                        "{}",
                        serde_json::json!({"scenario": name, "via": "gateway", "result": result, "gateway_cpu_per_1k": gw_per_1k})
                    );
                    if result["errors"].as_u64() != Some(0) {
                        return Err(format!("{name}: {} errors", result["errors"]).into());
                    }
                    gateway_runs.push((result, gw_per_1k, be_per_1k));
                }
                let median = |mut v: Vec<f64>| -> f64 {
                    v.sort_by(f64::total_cmp);
                    v.get(v.len() / 2).copied().unwrap_or(0.0)
                };
                let gateway_rps = median(
                    gateway_runs
                        .iter()
                        .map(|(r, _, _)| r["rps"].as_f64().unwrap_or(0.0))
                        .collect(),
                );
                let middle = gateway_runs
                    .iter()
                    .min_by(|a, b| {
                        (a.0["rps"].as_f64().unwrap_or(0.0) - gateway_rps)
                            .abs()
                            .total_cmp(&(b.0["rps"].as_f64().unwrap_or(0.0) - gateway_rps).abs())
                    })
                    .ok_or("no run")?;
                let direct_cell = if *direct {
                    format!("{:.0}", median(direct_rps.clone()))
                } else {
                    "—".to_owned()
                };
                let ratio = if *direct {
                    format!("{:.0}%", gateway_rps / median(direct_rps).max(1.0) * 100.0)
                } else {
                    "—".to_owned()
                };
                println!(
                    "| {name} | {payload} B | {concurrency} | {direct_cell} | {gateway_rps:.0} | {ratio} | {} / {} | {:.3} | {:.3} |",
                    middle.0["p50_us"], middle.0["p99_us"], middle.1, middle.2
                );
            }
        }
    }
    println!("\ngateway peak RSS: {:.1} MiB", peak_rss_mib(gateway.id()));
    let _ = Command::new("kill")
        .args(["-TERM", &gateway.id().to_string()])
        .status();
    let _ = gateway.wait();
    let _ = echo_http.kill();
    let _ = echo_http.wait();
    let _ = std::fs::remove_dir_all(&logs);
    std::thread::sleep(Duration::from_millis(10));
    Ok(())
}
