//! Runs each scenario direct to the echo backend and through the gateway, interleaved, and
//! prints one JSON line per run and a table with the ratio, each process's CPU time per 1,000
//! requests (from /proc), the gateway's CPU over the backend's in all and in system time alone,
//! and the gateway's peak RSS.
//!
//! Its flags are in [`USAGE`] (`mcp-bench --help`).
//!
//! Streamable HTTP → HTTP runs twice more each round, through `mcp-forward` on the gateway's
//! stack: bare (its CPU next to the echo's is the least any proxy built this way costs), and with
//! `--mcp` (the least an MCP gateway built this way costs: the bare forwarder plus the parses,
//! rewrites, trace context and request line no MCP gateway can skip).
//!
//! `--quick` is the CI smoke run: a second per run, one concurrency, one payload.
//! `--gateway-workers N` gives the gateway N connection threads (`TOKIO_WORKER_THREADS`);
//! without it, the gateway's default (one per core).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mcp_gateway_bench::Args;
use serde_json::Value;

type Error = Box<dyn std::error::Error>;

/// CPU seconds a process has used, user and system apart: a proxy makes two HTTP exchanges in
/// the kernel where the echo makes one, so the system half shows what no user-space work decides.
#[derive(Clone, Copy, Default)]
struct Cpu {
    user: f64,
    system: f64,
}

impl Cpu {
    fn total(self) -> f64 {
        self.user + self.system
    }

    fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
        }
    }

    fn scaled(self, by: f64) -> Cpu {
        Cpu {
            user: self.user * by,
            system: self.system * by,
        }
    }
}

impl std::ops::Add for Cpu {
    type Output = Cpu;

    fn add(self, other: Cpu) -> Cpu {
        Cpu {
            user: self.user + other.user,
            system: self.system + other.system,
        }
    }
}

/// One run through a proxy: its JSON result, the proxy's and the backend's CPU per 1,000 requests.
type ProxyRun = (serde_json::Value, Cpu, Cpu);

/// A proxy's CPU over the backend's in one run, of the part `of` picks (total or system);
/// `None` when the backend used fewer than ten of the 10 ms ticks CPU time comes in (stdio
/// echoes, mostly): too coarse to divide by.
fn cpu_ratio((result, proxy_per_1k, backend_per_1k): &ProxyRun, of: fn(Cpu) -> f64) -> Option<f64> {
    let backend_seconds = of(*backend_per_1k) * result["requests"].as_f64().unwrap_or(0.0) / 1000.0;
    (backend_seconds >= 0.1).then(|| of(*proxy_per_1k) / of(*backend_per_1k))
}

/// The fields of `/proc/{pid}/stat` after the command name (which may contain spaces).
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The CPU in the two `stat` fields from `first` (utime and stime, or cutime and cstime).
fn cpu_at(fields: &[String], first: usize) -> Cpu {
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Cpu {
        user: ticks(first) / 100.0,
        system: ticks(first + 1) / 100.0,
    }
}

fn cpu_of(pid: u32) -> Cpu {
    cpu_at(&stat_fields(pid), 11)
}

/// CPU used by all of `parent`'s child processes (the stdio backends of its sessions): the live
/// ones, plus those already reaped (accounted in the parent's cutime and cstime).
fn children_cpu(parent: u32) -> Cpu {
    let reaped = cpu_at(&stat_fields(parent), 13);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return reaped;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat_fields(pid).get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent))
        .map(cpu_of)
        .fold(reaped, std::ops::Add::add)
}

/// The machine's CPU ticks from the first line of `/proc/stat`: (stolen, all). Stolen ticks are
/// those the hypervisor gave to another guest while this one's CPUs had work: a run with many
/// of them measured the host as much as the processes (docs/PERFORMANCE.md).
fn steal_and_all_ticks(proc_stat: &str) -> Option<(u64, u64)> {
    let fields: Vec<u64> = proc_stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let counted = fields.get(..8)?;
    Some((counted[7], counted.iter().sum()))
}

fn machine_ticks() -> (u64, u64) {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .as_deref()
        .and_then(steal_and_all_ticks)
        .unwrap_or_default()
}

/// A memory size from `/proc/{pid}/status` in MiB: `VmHWM` (peak resident) or `VmRSS` (now).
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// Starts a process with its stderr written straight to the file `log` and waits for the line of
/// it that `ready` accepts. No pipe and no thread copying its lines: a copier writing each line of
/// a gateway's request log would compete for the cores whose use is being measured.
fn start(
    cmd: &mut Command,
    log: &Path,
    ready: impl Fn(&str) -> Option<String>,
) -> Result<(Child, String), Error> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()?;
    // Never wait forever for a process that will not say it is ready.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = BufReader::new(std::fs::File::open(log)?);
    let mut line = String::new();
    loop {
        let read = lines.read_line(&mut line)?;
        if line.ends_with('\n') {
            if let Some(found) = ready(line.trim_end()) {
                return Ok((child, found));
            }
            line.clear();
        } else if read == 0 {
            // At the end of what it wrote so far (a line may be half written).
            if child.try_wait()?.is_some() {
                return Err(
                    format!("exited before it was ready; its log: {}", log.display()).into(),
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("not ready within 30 s; its log: {}", log.display()).into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// How many of a gateway's log lines are per-request lines (`request completed` or `failed`).
/// Read line by line: a whole table's log, observability on, has a line for every request of
/// every run, millions. The gateway writes `msg` exactly so; a substring test spares parsing each.
fn request_log_lines(log: &Path) -> usize {
    let Ok(file) = std::fs::File::open(log) else {
        return 0;
    };
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|l| {
            l.contains(r#""msg":"request completed""#) || l.contains(r#""msg":"request failed""#)
        })
        .count()
}

/// A local OTLP/HTTP receiver: answers every export with 200 and counts the requests, so the
/// "observability on" runs pay for span export as they would in production.
fn otlp_receiver() -> Result<(String, std::sync::Arc<std::sync::atomic::AtomicU64>), Error> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let exports = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = exports.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let counted = counted.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16 * 1024];
                loop {
                    // One request: headers, then content-length bytes of body.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + length {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + length);
                    counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if stream.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((format!("http://{addr}"), exports))
}

/// Opens `count` idle sessions over `transport` and reads the gateway's resident memory.
fn idle_rss(
    load: &Path,
    url: &str,
    transport: &str,
    count: usize,
    gateway: u32,
) -> Result<f64, Error> {
    let mut child = Command::new(load)
        .args([
            "--url",
            url,
            "--transport",
            transport,
            "--idle",
            &count.to_string(),
        ])
        .args(["--seconds", "600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let opened = lines
        .next()
        .ok_or("mcp-load ended before its sessions were open")??;
    std::thread::sleep(Duration::from_secs(1));
    let rss = status_mib(gateway, "VmRSS");
    eprintln!("{opened}");
    let _ = child.kill();
    let _ = child.wait();
    Ok(rss)
}

struct Run<'a> {
    load: &'a Path,
    url: String,
    transport: &'a str,
    tool: &'a str,
    concurrency: usize,
    payload: usize,
    seconds: f64,
    /// Direct-to-stdio runs: the backend command line.
    command: Option<&'a str>,
}

fn steal_percent(result: &Value) -> f64 {
    result["host_steal_percent"].as_f64().unwrap_or(0.0)
}

/// One `mcp-load` run: its JSON line, with the share of the machine's CPU time the host stole
/// during it (`host_steal_percent`).
fn load(run: &Run<'_>) -> Result<Value, Error> {
    let (steal_before, all_before) = machine_ticks();
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
        .args(run.command.iter().flat_map(|c| ["--command", c]))
        .output()?;
    if !out.status.success() {
        return Err(format!("mcp-load failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let (steal_after, all_after) = machine_ticks();
    let mut result: Value = serde_json::from_slice(&out.stdout)?;
    let all = all_after.saturating_sub(all_before).max(1);
    result["host_steal_percent"] =
        (steal_after.saturating_sub(steal_before) as f64 * 100.0 / all as f64).into();
    Ok(result)
}

const USAGE: &str =
    "mcp-bench [--quick] [--gateway PATH] [--seconds S] [--rounds R] [--observability on|off]
          [--idle N] [--only http-http|http-stdio|sse-stdio|ws-stdio|idle] [--gateway-workers N]";

fn main() -> Result<(), Error> {
    let args = Args::from_env_or_exit(
        USAGE,
        &[
            "--gateway",
            "--seconds",
            "--rounds",
            "--observability",
            "--idle",
            "--only",
            "--gateway-workers",
        ],
        &["--quick"],
    );
    let get = |name: &str| args.get(name).map(str::to_owned);
    let quick = args.has("--quick");
    let dir = std::env::current_exe()?
        .parent()
        .ok_or("no directory")?
        .to_path_buf();
    let gateway_exe = get("--gateway")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("mcp-gateway"));
    let (echo, load_exe) = (dir.join("mcp-echo"), dir.join("mcp-load"));
    let forward_exe = dir.join("mcp-forward");
    let seconds: f64 = args
        .number("--seconds")
        .unwrap_or(if quick { 1.0 } else { 5.0 });
    let rounds: usize = args.number("--rounds").unwrap_or(if quick { 1 } else { 3 });
    let idle: usize = args
        .number("--idle")
        .unwrap_or(if quick { 100 } else { 10_000 });
    let observability = get("--observability").unwrap_or_else(|| "on".to_owned());
    if !["on", "off"].contains(&observability.as_str()) {
        args.refuse(&format!(
            "--observability {observability:?} is neither on nor off"
        ));
    }
    let gateway_workers: Option<usize> = args.number("--gateway-workers");
    // `--only KEY` runs one scenario: http-http, http-stdio, sse-stdio, ws-stdio or idle.
    let keys = ["http-http", "http-stdio", "sse-stdio", "ws-stdio"];
    let only = get("--only");
    if let Some(key) = &only {
        if !keys.contains(&key.as_str()) && key != "idle" {
            args.refuse(&format!("--only {key:?} is not a scenario"));
        }
    }
    let logs = std::env::temp_dir().join(format!("mcp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&logs)?;

    let (mut echo_http, echo_url) = start(
        Command::new(&echo).args(["http", "127.0.0.1:0"]),
        &logs.join("echo.log"),
        |l| l.strip_prefix("mcp-echo listening on ").map(str::to_owned),
    )?;
    // Observability on: a JSON log line per request (info) to a file, spans sampled at 1% and
    // exported to a local OTLP receiver. Off: no request lines, nothing sampled. Metrics are
    // always on.
    let otlp = (observability != "off").then(otlp_receiver).transpose()?;
    let tracing = match &otlp {
        None => "tracing: {sampling_ratio: 0.0}\n".to_owned(),
        Some((endpoint, _)) => {
            format!("tracing: {{sampling_ratio: 0.01, otlp: {{endpoint: '{endpoint}'}}}}\n")
        }
    };
    let http_backend = format!(
        "{tracing}limits: {{max_connections: 30000, max_connections_per_ip: 30000}}\nbackends:\n  - {{namespace: http, transport: streamable_http, url: '{echo_url}'}}\n"
    );
    // The idle runs measure sessions on the HTTP backend alone: with the stdio one too, every
    // idle session would also start (and the gateway hold) an echo process of its own.
    std::fs::write(logs.join("gateway-idle.yaml"), &http_backend)?;
    let config = format!(
        "{http_backend}  - {{namespace: stdio, transport: stdio, command: '{}', args: [stdio]}}\n",
        echo.display()
    );
    std::fs::write(logs.join("gateway.yaml"), config)?;
    let start_gateway = |log: &str, config: &str| {
        let mut gateway_cmd = Command::new(&gateway_exe);
        if let Some(workers) = gateway_workers {
            gateway_cmd.env("TOKIO_WORKER_THREADS", workers.to_string());
        }
        gateway_cmd.env(
            "MCP_GATEWAY_LOG",
            // "off" keeps the gateway's own startup and session lines (target mcp_gateway), not
            // the per-request ones (target mcp_gateway_layers): a directive's target matches as a
            // prefix, so `mcp_gateway=info` alone would let them through.
            if observability == "off" {
                "warn,mcp_gateway=info,mcp_gateway_layers=warn"
            } else {
                "info"
            },
        );
        gateway_cmd.args(["--config"]).arg(logs.join(config)).args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ]);
        start(&mut gateway_cmd, &logs.join(log), |l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["msg"] == "mcp-gateway serving /mcp, /sse and /ws")
                .then(|| v["listen"].as_str().map(str::to_owned))
                .flatten()
        })
    };
    let stop = |mut child: Child| {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    };
    // The yardstick for the gateway's CPU on HTTP → HTTP: a bare forwarder on the same stack.
    let upstream = echo_url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned();
    let start_forwarder = |flags: &[&str], log: &str| {
        start(
            Command::new(&forward_exe)
                .args(flags)
                .args(["127.0.0.1:0", &upstream]),
            &logs.join(log),
            |l| {
                l.strip_prefix("mcp-forward listening on ")
                    .map(str::to_owned)
            },
        )
    };
    let (forwarder, forward_url) = start_forwarder(&[], "forward.log")?;
    // Its request lines go to its log, as the gateway's go to the gateway's; with observability
    // off it writes none, as the gateway writes none.
    let mcp_flags: &[&str] = if observability == "off" {
        &["--mcp", "--no-request-lines"]
    } else {
        &["--mcp"]
    };
    let (mcp_forwarder, mcp_forward_url) = start_forwarder(mcp_flags, "forward-mcp.log")?;
    let (gateway, listen) = start_gateway("gateway.log", "gateway.yaml")?;
    let echo_stdio = format!("{} stdio", echo.display());

    let payloads: &[usize] = if quick { &[64] } else { &[64, 4096] };
    let concurrencies: &[usize] = if quick { &[4] } else { &[1, 16, 64] };
    // (scenario, transport, url, tool, how the backend is reached directly)
    let scenarios = [
        (
            "Streamable HTTP → HTTP backend",
            "http",
            format!("http://{listen}/mcp"),
            "http__echo",
            "http",
        ),
        (
            "Streamable HTTP → stdio backend",
            "http",
            format!("http://{listen}/mcp"),
            "stdio__echo",
            "stdio",
        ),
        (
            "Legacy SSE → stdio backend",
            "sse",
            format!("http://{listen}/sse"),
            "stdio__echo",
            "stdio",
        ),
        (
            "WebSocket → stdio backend",
            "ws",
            format!("ws://{listen}/ws"),
            "stdio__echo",
            "stdio",
        ),
    ];
    println!(
        "| scenario | payload | concurrency | direct req/s | gateway req/s | ratio | gateway p50 / p99 µs | gateway CPU s per 1k | backend CPU s per 1k | CPU gateway / backend | system CPU gateway / backend | CPU bare forwarder / backend | CPU MCP forwarder / backend | host steal %, most in a run: direct / gateway |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let chosen = scenarios
        .iter()
        .zip(keys)
        .filter(|(_, key)| only.as_deref().is_none_or(|o| o == *key))
        .map(|(scenario, _)| scenario);
    for (name, transport, url, tool, direct) in chosen {
        for &payload in payloads {
            for &concurrency in concurrencies {
                let mut direct_rps = Vec::new();
                let mut direct_steal = Vec::new();
                let mut gateway_runs = Vec::new();
                let mut floor_ratios = Vec::new();
                let mut mcp_floor_ratios = Vec::new();
                for _ in 0..rounds {
                    let run = Run {
                        load: &load_exe,
                        url: echo_url.clone(),
                        transport: direct,
                        tool: "echo",
                        concurrency,
                        payload,
                        seconds,
                        command: (*direct == "stdio").then_some(echo_stdio.as_str()),
                    };
                    let result = load(&run)?;
                    eprintln!(
                        "{}",
                        serde_json::json!({"scenario": name, "via": "direct", "result": result})
                    );
                    direct_rps.push(result["rps"].as_f64().unwrap_or(0.0));
                    direct_steal.push(steal_percent(&result));
                    let echo_pid = echo_http.id();
                    let backend_cpu = || {
                        if *direct == "http" {
                            cpu_of(echo_pid)
                        } else {
                            children_cpu(gateway.id())
                        }
                    };
                    // One run through a proxy (`via`, process `proxy`): its JSON line, and the
                    // proxy's and the backend's CPU seconds per 1,000 requests.
                    let through = |via: &str, proxy: u32, url: &str, tool: &str| {
                        let (proxy_cpu, be_cpu) = (cpu_of(proxy), backend_cpu());
                        let result = load(&Run {
                            load: &load_exe,
                            url: url.to_owned(),
                            transport,
                            tool,
                            concurrency,
                            payload,
                            seconds,
                            command: None,
                        })?;
                        let per_1k = 1000.0 / result["requests"].as_f64().unwrap_or(0.0).max(1.0);
                        let proxy_per_1k = cpu_of(proxy).since(proxy_cpu).scaled(per_1k);
                        let be_per_1k = backend_cpu().since(be_cpu).scaled(per_1k);
                        let mut line = serde_json::json!({"scenario": name, "via": via, "result": result, "backend_cpu_per_1k": be_per_1k.total(), "backend_system_cpu_per_1k": be_per_1k.system});
                        line[format!("{via}_cpu_per_1k")] = proxy_per_1k.total().into();
                        line[format!("{via}_system_cpu_per_1k")] = proxy_per_1k.system.into();
                        eprintln!("{line}");
                        if result["errors"].as_u64() != Some(0) {
                            return Err::<_, Error>(
                                format!("{name} via {via}: {} errors", result["errors"]).into(),
                            );
                        }
                        Ok((result, proxy_per_1k, be_per_1k))
                    };
                    gateway_runs.push(through("gateway", gateway.id(), url, tool)?);
                    if *direct == "http" {
                        let run = through("forwarder", forwarder.id(), &forward_url, "echo")?;
                        floor_ratios.extend(cpu_ratio(&run, Cpu::total));
                        let run =
                            through("mcp_forwarder", mcp_forwarder.id(), &mcp_forward_url, tool)?;
                        mcp_floor_ratios.extend(cpu_ratio(&run, Cpu::total));
                    }
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
                let direct_cell = format!("{:.0} ({direct})", median(direct_rps.clone()));
                let ratio = format!("{:.0}%", gateway_rps / median(direct_rps).max(1.0) * 100.0);
                let ratio_cell = |of: fn(Cpu) -> f64| {
                    cpu_ratio(middle, of).map_or("—".to_owned(), |r| format!("{r:.1}×"))
                };
                let (cpu_cell, system_cell) = (ratio_cell(Cpu::total), ratio_cell(|c| c.system));
                let floor_cell = |ratios: Vec<f64>| {
                    if ratios.is_empty() {
                        "—".to_owned()
                    } else {
                        format!("{:.1}×", median(ratios))
                    }
                };
                let (floor_cell, mcp_floor_cell) =
                    (floor_cell(floor_ratios), floor_cell(mcp_floor_ratios));
                let gateway_steal = gateway_runs.iter().map(|(r, _, _)| steal_percent(r));
                let steal_cell = format!(
                    "{:.0} / {:.0}",
                    direct_steal.into_iter().fold(0.0, f64::max),
                    gateway_steal.fold(0.0, f64::max)
                );
                println!(
                    "| {name} | {payload} B | {concurrency} | {direct_cell} | {gateway_rps:.0} | {ratio} | {} / {} | {:.3} | {:.3} | {cpu_cell} | {system_cell} | {floor_cell} | {mcp_floor_cell} | {steal_cell} |",
                    middle.0["p50_us"],
                    middle.0["p99_us"],
                    middle.1.total(),
                    middle.2.total()
                );
            }
        }
    }
    println!(
        "\ngateway peak RSS: {:.1} MiB",
        status_mib(gateway.id(), "VmHWM")
    );
    if let Some((_, exports)) = &otlp {
        println!(
            "OTLP export requests received: {}",
            exports.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    stop(gateway);
    println!(
        "gateway request log lines: {}",
        request_log_lines(&logs.join("gateway.log"))
    );
    for mut forwarder in [forwarder, mcp_forwarder] {
        let _ = forwarder.kill();
        let _ = forwarder.wait();
    }
    // Killed, it loses the lines of its last 10 ms: the count shows the work was done.
    println!(
        "MCP forwarder request log lines: {}",
        request_log_lines(&logs.join("forward-mcp.log"))
    );
    // Idle sessions, each run on a fresh gateway with the HTTP echo as its one backend.
    let idle_runs = if only.as_deref().is_none_or(|o| o == "idle") {
        &[("http", "mcp"), ("ws", "ws")][..]
    } else {
        &[]
    };
    for &(transport, path) in idle_runs {
        let (gateway, listen) = start_gateway("gateway-idle.log", "gateway-idle.yaml")?;
        let scheme = if transport == "ws" { "ws" } else { "http" };
        let url = format!("{scheme}://{listen}/{path}");
        let rss = idle_rss(&load_exe, &url, transport, idle, gateway.id())?;
        println!("gateway RSS with {idle} idle {transport} sessions: {rss:.1} MiB");
        stop(gateway);
    }
    let _ = echo_http.kill();
    let _ = echo_http.wait();
    let _ = std::fs::remove_dir_all(&logs);
    std::thread::sleep(Duration::from_millis(10));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::steal_and_all_ticks;

    #[test]
    fn steal_is_the_eighth_count_of_the_machine_line() {
        let stat =
            "cpu  1711359 0 504697 1676945 11984 0 121768 137247 5 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        let all = 1711359 + 504697 + 1676945 + 11984 + 121768 + 137247;
        assert_eq!(steal_and_all_ticks(stat), Some((137247, all)));
        assert_eq!(steal_and_all_ticks("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(steal_and_all_ticks("cpu  1 2 3\n"), None);
    }
}
