//! The CI smoke run of the harness: every scenario, direct and through the gateway, for a second
//! each, with no threshold — so that the harness never rots.

use std::path::PathBuf;

/// The harness and the gateway beside it; `None` (with a notice) when the gateway is not built,
/// which `scripts/test` (`MCP_GATEWAY_REQUIRE_PEERS`) does not allow.
fn harness_and_gateway(run: &str) -> Option<(PathBuf, PathBuf)> {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_mcp-bench"));
    let gateway = bench.parent().unwrap().join("mcp-gateway");
    if gateway.exists() {
        return Some((bench, gateway));
    }
    if std::env::var_os("MCP_GATEWAY_REQUIRE_PEERS").is_some() {
        panic!(
            "{} is not built; scripts/test builds the workspace",
            gateway.display()
        );
    }
    eprintln!("NOTICE: {} is not built; skipping {run}", gateway.display());
    None
}

#[test]
fn the_harness_runs_every_scenario_both_ways() {
    let Some((bench, gateway)) = harness_and_gateway("the harness smoke run") else {
        return;
    };
    let out = std::process::Command::new(bench)
        .args(["--quick", "--gateway", gateway.to_str().unwrap()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let runs = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{table}\n{runs}");
    for scenario in [
        "Streamable HTTP → HTTP backend",
        "Streamable HTTP → stdio backend",
        "Legacy SSE → stdio backend",
        "WebSocket → stdio backend",
    ] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(&format!("| {scenario} |"))),
            "{scenario} missing:\n{table}"
        );
    }
    let results: Vec<serde_json::Value> = runs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r.get("via").is_some())
        .collect();
    for via in ["direct", "gateway", "forwarder", "mcp_forwarder"] {
        assert!(
            results.iter().any(|r| r["via"] == via),
            "no {via} run:\n{runs}"
        );
    }
    for r in &results {
        assert_eq!(r["result"]["errors"], 0, "{r}");
        assert!(r["result"]["requests"].as_u64().unwrap() > 0, "{r}");
        let steal = r["result"]["host_steal_percent"].as_f64();
        assert!(steal.is_some_and(|s| (0.0..=100.0).contains(&s)), "{r}");
        if r["via"] != "direct" {
            assert!(r["backend_cpu_per_1k"].as_f64().is_some(), "{r}");
            assert!(r["backend_system_cpu_per_1k"].as_f64().is_some(), "{r}");
            let via = r["via"].as_str().unwrap();
            for cpu in ["cpu", "system_cpu"] {
                assert!(r[format!("{via}_{cpu}_per_1k")].as_f64().is_some(), "{r}");
            }
        }
        if r["via"] == "forwarder" || r["via"] == "mcp_forwarder" {
            assert_eq!(r["scenario"], "Streamable HTTP → HTTP backend", "{r}");
        }
    }
    // The HTTP echo is a process of its own: its CPU is measured, and the ratios to it printed:
    // the gateway's (the fifth column from the end), the bare forwarder's and the MCP
    // forwarder's (the two before the last). The last is the host's steal in the row's runs.
    let http_row = table
        .lines()
        .find(|l| l.starts_with("| Streamable HTTP → HTTP backend |"))
        .unwrap();
    // The header, its rule and every row have the same number of cells.
    let cells = |line: &str| line.matches('|').count();
    let header = table
        .lines()
        .find(|l| l.starts_with("| scenario |"))
        .unwrap();
    for line in table.lines().filter(|l| l.starts_with('|')) {
        assert_eq!(cells(line), cells(header), "{line}\n{table}");
    }
    let ratio = |cell: &str| {
        cell.trim()
            .strip_suffix('×')
            .is_some_and(|r| r.parse::<f64>().is_ok_and(|r| r > 0.0))
    };
    let mut from_the_end = http_row.trim_end_matches(" |").rsplit(" | ");
    let steal_cell = from_the_end.next().unwrap();
    let steals: Vec<&str> = steal_cell.split(" / ").collect();
    assert!(
        steals.len() == 2
            && steals
                .iter()
                .all(|s| s.parse::<u32>().is_ok_and(|s| s <= 100)),
        "{http_row}"
    );
    let last_four: Vec<&str> = from_the_end.take(4).collect();
    assert!(
        ratio(last_four[0]) && ratio(last_four[1]) && ratio(last_four[3]),
        "{http_row}"
    );
    // The system-time ratio between them is printed when the echo's system time came to ten
    // 10 ms ticks or more (a quick run of a debug build may not get there), else a dash.
    let gateway_run = results
        .iter()
        .find(|r| r["via"] == "gateway" && r["scenario"] == "Streamable HTTP → HTTP backend")
        .unwrap();
    let echo_system_seconds = gateway_run["backend_system_cpu_per_1k"].as_f64().unwrap()
        * gateway_run["result"]["requests"].as_f64().unwrap()
        / 1000.0;
    if echo_system_seconds >= 0.1 {
        assert!(ratio(last_four[2]), "{http_row}");
    } else {
        assert_eq!(last_four[2], "—", "{http_row}");
    }
    // The forwarders run only where the backend is the HTTP echo.
    let stdio_row = table
        .lines()
        .find(|l| l.starts_with("| Streamable HTTP → stdio backend |"))
        .unwrap();
    assert!(stdio_row.contains("| — | — | "), "{stdio_row}");
    assert!(table.contains("gateway peak RSS:"), "{table}");
    // Observability on: sampled spans reached the local OTLP receiver, every request wrote its
    // log line, and so did the MCP forwarder's calls.
    for label in [
        "OTLP export requests received: ",
        "gateway request log lines: ",
        "MCP forwarder request log lines: ",
    ] {
        assert!(printed(&table, label) > 0, "{label}\n{table}");
    }
    for transport in ["http", "ws"] {
        assert!(
            table.contains(&format!("idle {transport} sessions:")),
            "{table}"
        );
    }
}

/// The number the harness printed after `label`.
fn printed(table: &str, label: &str) -> u64 {
    table
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} printed:\n{table}"))
}

/// Observability off is what the tables say: no request log lines and no spans exported, with
/// the same answers.
#[test]
fn observability_off_writes_no_request_lines() {
    let Some((bench, gateway)) = harness_and_gateway("the harness's observability-off run") else {
        return;
    };
    let out = std::process::Command::new(bench)
        .args(["--quick", "--only", "http-http", "--observability", "off"])
        .args(["--gateway", gateway.to_str().unwrap()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("| Streamable HTTP → HTTP backend |")),
        "{table}"
    );
    for label in [
        "gateway request log lines: ",
        "MCP forwarder request log lines: ",
    ] {
        assert_eq!(printed(&table, label), 0, "{label}\n{table}");
    }
    assert!(!table.contains("OTLP export"), "{table}");
}

/// `--help` prints the usage and a typo or a bad value is refused at once: neither may start
/// a benchmark run on the defaults (which takes minutes).
#[test]
fn the_harness_refuses_arguments_it_does_not_take() {
    let run = |exe: &str, args: &[&str]| {
        let started = std::time::Instant::now();
        let out = std::process::Command::new(exe).args(args).output().unwrap();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{exe} {args:?} started a run"
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (bench, load) = (
        env!("CARGO_BIN_EXE_mcp-bench"),
        env!("CARGO_BIN_EXE_mcp-load"),
    );
    let (code, stdout, _) = run(bench, &["--help"]);
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with("mcp-bench [--quick]"), "{stdout}");
    for (exe, args, why) in [
        (
            bench,
            &["--secnds", "1"][..],
            "unknown argument \"--secnds\"",
        ),
        (
            bench,
            &["--rounds", "three"][..],
            "--rounds \"three\" is not a number",
        ),
        (
            bench,
            &["--only", "http"][..],
            "--only \"http\" is not a scenario",
        ),
        (
            bench,
            &["--observability", "yes"][..],
            "--observability \"yes\" is neither on nor off",
        ),
        (load, &["--concurrency"][..], "--concurrency needs a value"),
        (
            load,
            &["--payload", "-1"][..],
            "--payload \"-1\" is not a number",
        ),
    ] {
        let (code, _, stderr) = run(exe, args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with(why), "{args:?}: {stderr}");
    }
}

/// A target that goes away mid-run is counted as errors until the run's end: the load
/// generator neither panics nor spins, and still prints its line.
#[test]
fn the_load_generator_counts_a_target_that_goes_away_as_errors() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut echo = Command::new(env!("CARGO_BIN_EXE_mcp-echo"))
        .args(["http", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(echo.stderr.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    let url = banner
        .trim()
        .strip_prefix("mcp-echo listening on ")
        .unwrap_or_else(|| panic!("{banner}"))
        .to_owned();
    let load = Command::new(env!("CARGO_BIN_EXE_mcp-load"))
        .args(["--url", &url, "--transport", "http", "--tool", "echo"])
        .args(["--concurrency", "4", "--sessions", "1", "--seconds", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    echo.kill().unwrap();
    echo.wait().unwrap();
    let started = std::time::Instant::now();
    let out = load.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{stderr}"
    );
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(line["requests"].as_u64().unwrap() > 0, "{line}");
    // Refused connections are retried every 10 ms by each of the 4 workers: errors, but not
    // the hundreds of thousands a worker spinning on them would count in over a second.
    let errors = line["errors"].as_u64().unwrap();
    assert!((1..5_000).contains(&errors), "{line}");
}
