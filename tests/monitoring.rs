//! monitoring/ is true: promtool checks and tests the rules (every alert firing and not firing,
//! each with a runbook entry); every metric, label and matched value the queries name is found in
//! a live scrape of the real gateway under known traffic; and a real Prometheus, scraping that
//! gateway with the recording rules loaded, computes the availability of the traffic driven.

#[allow(dead_code)]
#[path = "../examples/prometheus_rule.rs"]
mod prometheus_rule;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use support::clients::{WsClient, text};
use support::processes::{gateway, gateway_exe};
use support::{Conn, peer, run_peer, sample};

fn monitoring(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("monitoring")
        .join(file)
}

fn yaml(file: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(monitoring(file)).unwrap()).unwrap()
}

/// Every rule of a rules file: (record or alert name, expr).
fn rules(file: &str) -> Vec<(String, String, bool)> {
    let doc = yaml(file);
    let mut out = Vec::new();
    for group in doc["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let (name, alert) = match (rule["record"].as_str(), rule["alert"].as_str()) {
                (Some(r), _) => (r, false),
                (_, Some(a)) => (a, true),
                _ => panic!("a rule without record or alert in {file}"),
            };
            out.push((
                name.to_owned(),
                rule["expr"].as_str().unwrap().to_owned(),
                alert,
            ));
        }
    }
    out
}

#[test]
fn promtool_checks_and_tests_every_rule_and_alert() {
    let Some(promtool) = peer("promtool") else {
        return;
    };
    for file in ["prometheus-slo-rules.yaml", "prometheus-slo-alerts.yaml"] {
        run_peer(
            &promtool,
            &["check", "rules", monitoring(file).to_str().unwrap()],
            b"",
        );
    }
    run_peer(
        &promtool,
        &[
            "test",
            "rules",
            monitoring("tests/alerts.test.yaml").to_str().unwrap(),
        ],
        b"",
    );

    let tests = yaml("tests/alerts.test.yaml");
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for test in tests["tests"].as_sequence().unwrap() {
        for case in test["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = case["alertname"].as_str().unwrap().to_owned();
            let fires = case["exp_alerts"]
                .as_sequence()
                .is_some_and(|a| !a.is_empty());
            if fires {
                firing.insert(name)
            } else {
                quiet.insert(name)
            };
        }
    }
    let runbook = std::fs::read_to_string(monitoring("RUNBOOK.md")).unwrap();
    let alerts = yaml("prometheus-slo-alerts.yaml");
    for group in alerts["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            assert!(
                firing.contains(name) && quiet.contains(name),
                "{name} needs a firing and a not-firing test"
            );
            for key in ["summary", "description", "runbook_url"] {
                assert!(rule["annotations"][key].is_string(), "{name} has no {key}");
            }
            assert!(
                rule["labels"]["severity"].is_string(),
                "{name} has no severity"
            );
            let anchor = rule["annotations"]["runbook_url"]
                .as_str()
                .unwrap()
                .strip_prefix("RUNBOOK.md#")
                .unwrap();
            assert_eq!(anchor, name.to_lowercase(), "{name}'s runbook link");
            assert!(
                runbook.contains(&format!("\n## {name}\n")),
                "{name} has no runbook entry"
            );
        }
    }
}

/// What a PromQL expression selects: metric names with their matchers, and grouping labels.
/// A label matcher: label, operator, value.
type Matcher = (String, String, String);

#[derive(Debug, Default)]
struct Names {
    selectors: Vec<(String, Vec<Matcher>)>,
    grouping: BTreeSet<String>,
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Punct(String),
}

fn tokens(expr: &str) -> Vec<Token> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' || c == '`' {
            let mut s = String::new();
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' && c != '`' {
                    i += 1;
                }
                s.push(chars[i]);
                i += 1;
            }
            i += 1;
            out.push(Token::Str(s));
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let op = if ["=~", "!~", "!=", "==", ">=", "<="].contains(&two.as_str()) {
                two
            } else {
                c.to_string()
            };
            i += op.chars().count();
            out.push(Token::Punct(op));
        }
    }
    out
}

/// The `label op "value"` matchers of the braces opening at `open`; returns them and the index
/// of the closing brace.
fn label_matchers(t: &[Token], open: usize) -> (Vec<Matcher>, usize) {
    let mut matchers = Vec::new();
    let mut i = open + 1;
    while i < t.len() && t[i] != Token::Punct("}".to_owned()) {
        if let (Some(Token::Ident(label)), Some(Token::Punct(op)), Some(Token::Str(value))) =
            (t.get(i), t.get(i + 1), t.get(i + 2))
        {
            matchers.push((label.clone(), op.clone(), value.clone()));
            i += 3;
        } else {
            i += 1;
        }
    }
    (matchers, i)
}

const KEYWORDS: [&str; 12] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "vector",
];

fn names(expr: &str) -> Names {
    let t = tokens(expr);
    let mut names = Names::default();
    let punct = |i: usize, p: &str| matches!(t.get(i), Some(Token::Punct(x)) if x == p);
    let mut i = 0;
    while i < t.len() {
        if let Token::Ident(id) = &t[i] {
            if [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ]
            .contains(&id.as_str())
                && punct(i + 1, "(")
            {
                i += 2;
                while i < t.len() && !punct(i, ")") {
                    if let Token::Ident(label) = &t[i] {
                        names.grouping.insert(label.clone());
                    }
                    i += 1;
                }
            } else if punct(i + 1, "(")
                || KEYWORDS.contains(&id.as_str())
                || matches!(t.get(i + 1), Some(Token::Ident(next)) if next == "by" || next == "without")
            {
                // A function or an aggregation, or a keyword.
            } else {
                let mut matchers = Vec::new();
                if punct(i + 1, "{") {
                    (matchers, i) = label_matchers(&t, i + 1);
                }
                names.selectors.push((id.clone(), matchers));
            }
        }
        i += 1;
    }
    names
}

/// A scrape: metric name → label → values seen.
type Exported = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// Checks every metric, label and `=`-matched value `expr` names against the scrape (recording
/// rule names against the recorded ones); returns how many selectors it has.
fn check_names(
    context: &str,
    expr: &str,
    exported: &Exported,
    recorded: &BTreeSet<String>,
) -> usize {
    let all_labels: BTreeSet<&String> = exported.values().flat_map(|l| l.keys()).collect();
    let found = names(expr);
    for label in &found.grouping {
        assert!(
            all_labels.contains(label),
            "{context}: label {label} is not exported"
        );
    }
    for (metric, matchers) in &found.selectors {
        if metric.contains(':') {
            assert!(
                recorded.contains(metric),
                "{context}: {metric} is not recorded by any rule"
            );
            continue;
        }
        let labels = exported
            .get(metric)
            .unwrap_or_else(|| panic!("{context}: {metric} is not exported"));
        for (label, op, value) in matchers {
            let values = labels
                .get(label)
                .unwrap_or_else(|| panic!("{context}: {metric} has no label {label}"));
            if op == "=" {
                assert!(
                    values.contains(value),
                    "{context}: {metric}{{{label}=\"{value}\"}} never occurs"
                );
            }
        }
    }
    found.selectors.len()
}

/// A scrape in the Prometheus text format: metric name → label → values seen.
fn parse_scrape(text: &str) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, rest) = line.split_at(line.find(['{', ' ']).unwrap());
        let labels = out.entry(name.to_owned()).or_default();
        if let Some(inner) = rest
            .strip_prefix('{')
            .and_then(|r| r.split_once('}'))
            .map(|(l, _)| l)
        {
            for pair in inner.split("\",").map(|p| p.trim_end_matches('"')) {
                if let Some((k, v)) = pair.split_once("=\"") {
                    labels.entry(k.to_owned()).or_default().insert(v.to_owned());
                }
            }
        }
    }
    out
}

#[test]
fn the_extractor_finds_names_and_matchers() {
    let n = names(
        r#"sum by (method, namespace) (rate(gateway_requests_total{status=~"a|b", x="y"}[5m])) / on() group_left foo:bar"#,
    );
    assert_eq!(n.selectors[0].0, "gateway_requests_total");
    assert_eq!(
        n.selectors[0].1,
        vec![
            ("status".into(), "=~".into(), "a|b".into()),
            ("x".into(), "=".into(), "y".into())
        ]
    );
    assert_eq!(n.selectors[1].0, "foo:bar");
    assert_eq!(
        n.grouping,
        ["method", "namespace"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    String::from_utf8_lossy(&Conn::open(addr, None).await.get("/metrics", &[]).await.body)
        .into_owned()
}

fn known_traffic_config() -> String {
    format!(
        "limits: {{max_in_flight: 1, max_connections_per_ip: 2}}\nbackends:\n  - {{namespace: a, transport: stdio, command: {exe}, args: [demo-server, stdio], timeout_secs: 1, restart: {{backoff_initial_ms: 10}}}}\n  - {{namespace: bad, transport: stdio, command: /bin/sh, args: [-c, 'echo failing >&2; exit 1'], restart: {{max_restarts: 1, backoff_initial_ms: 10}}}}\n",
        exe = gateway_exe()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_names_what_the_running_gateway_exports() {
    let gw = gateway(&known_traffic_config()).await;
    let mut ws = WsClient::connect(gw.addr).await;
    // A known mix: 3 successes, 2 tool errors, a backend killed and restarted, a crash-looping
    // backend marked down, one call to it, and one request shed by the in-flight limit.
    for i in 0..3 {
        assert_eq!(
            text(&ws.call(10 + i, "a__echo", json!({"message": "ok"})).await),
            "ok"
        );
    }
    for i in 0..2 {
        assert_eq!(
            ws.call(20 + i, "a__fail", json!({})).await["result"]["isError"],
            true
        );
    }
    let crashed = ws.call(30, "a__crash", json!({})).await;
    assert_eq!(crashed["error"]["code"], -32010);
    let deadline = Instant::now() + Duration::from_secs(15);
    while ws
        .call(31, "a__whoami", json!({}))
        .await
        .get("result")
        .is_none()
    {
        assert!(Instant::now() < deadline, "a never came back");
    }
    while !gw
        .process
        .log_lines()
        .iter()
        .any(|l| l.contains("backend marked down"))
    {
        assert!(Instant::now() < deadline, "bad was never marked down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        ws.call(40, "bad__echo", json!({})).await["error"]["code"],
        -32010
    );
    assert_eq!(
        text(&ws.call(41, "a__garbage", json!({})).await),
        "garbage written"
    );
    let refused = Conn::open(gw.addr, None)
        .await
        .get("/mcp", &[("origin", "https://elsewhere.example")])
        .await;
    assert_eq!(refused.status, 403);
    // A timeout: the backend takes longer than its timeout_secs.
    assert_eq!(
        ws.call(42, "a__sleep", json!({"ms": 3000})).await["error"]["code"],
        -32008
    );
    // A refused connection: two from this address are open (the WebSocket and this one).
    let mut second = Conn::open(gw.addr, None).await;
    assert_eq!(second.get("/nowhere", &[]).await.status, 404);
    let third = Conn::open(gw.addr, None).await.get("/mcp", &[]).await;
    assert_eq!(third.status, 503, "over max_connections_per_ip");
    drop(second);
    ws.send(json!({"jsonrpc": "2.0", "id": 50, "method": "tools/call", "params": {"name": "a__sleep", "arguments": {"ms": 800}}})).await;
    while sample(&scrape(gw.metrics).await, "gateway_requests_in_flight") != Some(1.0) {
        assert!(Instant::now() < deadline, "the sleep never got in flight");
    }
    assert_eq!(
        ws.call(51, "a__echo", json!({"message": "x"})).await["error"]["code"],
        -32010
    );
    assert_eq!(text(&ws.next().await.unwrap()), "slept 800 ms");

    let text = scrape(gw.metrics).await;
    let exact = [
        (
            r#"gateway_requests_total{method="tools/call",namespace="a",status="ok"}"#,
            6.0,
        ),
        (
            r#"gateway_requests_total{method="tools/call",namespace="a",status="tool_error"}"#,
            2.0,
        ),
        (
            r#"gateway_requests_total{method="tools/call",namespace="a",status="unavailable"}"#,
            2.0,
        ),
        (
            r#"gateway_requests_total{method="tools/call",namespace="bad",status="unavailable"}"#,
            1.0,
        ),
        (
            r#"gateway_backend_restarts_total{backend="a",backend_type="stdio"}"#,
            1.0,
        ),
        (
            r#"gateway_backend_marked_down_total{backend="bad",backend_type="stdio"}"#,
            1.0,
        ),
        (
            r#"gateway_connection_limit_reached_total{scope="in_flight"}"#,
            1.0,
        ),
        (
            r#"gateway_connection_limit_reached_total{scope="per_ip"}"#,
            1.0,
        ),
        (
            r#"gateway_requests_total{method="tools/call",namespace="a",status="timeout"}"#,
            1.0,
        ),
        (
            r#"gateway_error_recovery_total{error_type="unavailable",mechanism="restart"}"#,
            1.0,
        ),
        (
            r#"gateway_errors_total{error_type="tool_error",component="backend",severity="low",http_status="200",retryable="false"}"#,
            2.0,
        ),
        (r#"gateway_sessions{transport="websocket"}"#, 1.0),
        ("gateway_websocket_connections", 1.0),
        ("gateway_requests_in_flight", 0.0),
    ];
    for (series, value) in exact {
        assert_eq!(sample(&text, series), Some(value), "{series}\n{text}");
    }
    let whoami_calls = text
        .lines()
        .filter(|l| {
            l.starts_with(
                r#"gateway_requests_total{method="tools/call",namespace="a",status="unavailable"}"#,
            )
        })
        .count();
    assert_eq!(whoami_calls, 1);
    if let Some(promtool) = peer("promtool") {
        run_peer(&promtool, &["check", "metrics"], text.as_bytes());
    }

    let exported = parse_scrape(&text);
    let recorded: BTreeSet<String> = rules("prometheus-slo-rules.yaml")
        .into_iter()
        .map(|(n, _, _)| n)
        .collect();
    let mut checked = 0;
    for file in ["prometheus-slo-rules.yaml", "prometheus-slo-alerts.yaml"] {
        for (rule, expr, _) in rules(file) {
            checked += check_names(&format!("{file} {rule}"), &expr, &exported, &recorded);
        }
    }
    let mut dashboard_rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    for (panel, expr) in dashboard_queries("prometheus") {
        let expr = expr.replace("$backend", ".*");
        dashboard_rules.push_str(&format!(
            "      - record: dashboard:check\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
        checked += check_names(&panel, &expr, &exported, &recorded);
    }
    if let Some(promtool) = peer("promtool") {
        // promtool parses every dashboard expression as a rule's.
        let file = std::env::temp_dir().join(format!(
            "mcp-gateway-dashboard-queries-{}.yaml",
            std::process::id()
        ));
        std::fs::write(&file, dashboard_rules).unwrap();
        run_peer(&promtool, &["check", "rules", file.to_str().unwrap()], b"");
        let _ = std::fs::remove_file(file);
    }
    assert!(
        checked > 40,
        "only {checked} selectors found: the extractor is broken"
    );

    check_logql(&gw.process.log_lines());
}

/// The ```logql blocks of monitoring/logging/queries.md.
fn logql_queries() -> Vec<String> {
    let text = std::fs::read_to_string(monitoring("logging/queries.md")).unwrap();
    text.split("```logql\n")
        .skip(1)
        .map(|rest| rest.split("\n```").next().unwrap().trim().to_owned())
        .collect()
}

/// Every LogQL query parses with Grafana's grammar, selects on stream labels Promtail sets, and
/// filters, groups or unwraps only fields that the gateway's log lines carry.
fn check_logql(log_lines: &[String]) {
    let mut queries = logql_queries();
    queries.extend(dashboard_queries("loki").into_iter().map(|(_, expr)| expr));
    assert!(queries.len() >= 15, "{} queries", queries.len());
    let peers = std::env::var_os("MCP_GATEWAY_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers"));
    let grammar = peers.join("npm/node_modules/@grafana/lezer-logql");
    match (
        peer("node"),
        grammar.exists() || std::env::var_os("MCP_GATEWAY_REQUIRE_PEERS").is_some(),
    ) {
        (Some(node), true) => {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/logql_check.cjs");
            let mut child = std::process::Command::new(node)
                .arg(script)
                .env("MCP_GATEWAY_PEERS", &peers)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(serde_json::to_string(&queries).unwrap().as_bytes())
                    .unwrap();
            }
            let out = child.wait_with_output().unwrap();
            let errors: Vec<usize> = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|_| panic!("the LogQL check failed: {out:?}"));
            for (query, errors) in queries.iter().zip(errors) {
                assert_eq!(errors, 0, "LogQL syntax errors in: {query}");
            }
        }
        _ => eprintln!(
            "NOTICE: @grafana/lezer-logql not installed; LogQL syntax not checked (scripts/test installs it)"
        ),
    }

    let lines: Vec<serde_json::Map<String, serde_json::Value>> = log_lines
        .iter()
        .filter_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()?
                .as_object()
                .cloned()
        })
        .collect();
    let has_field = |field: &str| lines.iter().any(|l| l.contains_key(field));
    let has_value = |field: &str, value: &str| {
        lines
            .iter()
            .any(|l| l.get(field).and_then(|v| v.as_str()) == Some(value))
    };
    let promtail: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(monitoring("logging/promtail.yaml")).unwrap(),
    )
    .unwrap();
    let scrape = &promtail["scrape_configs"][0];
    let static_labels = &scrape["static_configs"][0]["labels"];
    let from_lines: Vec<String> = scrape["pipeline_stages"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|stage| stage["labels"].as_mapping())
        .flat_map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_owned)))
        .collect();

    for query in &queries {
        let t = tokens(query);
        let punct = |i: usize, p: &str| matches!(t.get(i), Some(Token::Punct(x)) if x == p);
        let mut i = 0;
        while i < t.len() {
            match &t[i] {
                Token::Punct(p) if p == "{" => {
                    // The stream selector: labels Promtail sets.
                    let (matchers, end) = label_matchers(&t, i);
                    for (label, op, value) in matchers {
                        let exact = op == "=";
                        if let Some(fixed) = static_labels[label.as_str()].as_str() {
                            assert!(!exact || fixed == value, "{query}: {label} is {fixed}");
                        } else {
                            assert!(
                                from_lines.contains(&label),
                                "{query}: Promtail sets no stream label {label}"
                            );
                            assert!(
                                !exact || has_value(&label, &value),
                                "{query}: no log line has {label}={value}"
                            );
                        }
                    }
                    i = end;
                }
                Token::Punct(p) if p == "|" => {
                    if let (Some(Token::Ident(field)), Some(Token::Punct(op))) =
                        (t.get(i + 1), t.get(i + 2))
                    {
                        if ["=", "!=", "=~", "!~", ">", "<", ">=", "<="].contains(&op.as_str()) {
                            assert!(
                                has_field(field),
                                "{query}: no log line has the field {field}"
                            );
                            if let (true, Some(Token::Str(value))) = (op == "=", t.get(i + 3)) {
                                if !value.starts_with('$') {
                                    assert!(
                                        has_value(field, value),
                                        "{query}: no log line has {field}=\"{value}\""
                                    );
                                }
                            }
                        }
                    }
                    i += 1;
                }
                Token::Ident(id) if (id == "by" || id == "without") && punct(i + 1, "(") => {
                    i += 2;
                    while i < t.len() && !punct(i, ")") {
                        if let Token::Ident(field) = &t[i] {
                            assert!(
                                has_field(field),
                                "{query}: no log line has the field {field} it groups by"
                            );
                        }
                        i += 1;
                    }
                }
                Token::Ident(id) if id == "unwrap" => {
                    if let Some(Token::Ident(field)) = t.get(i + 1) {
                        assert!(
                            lines
                                .iter()
                                .any(|l| l.get(field).is_some_and(|v| v.is_number())),
                            "{query}: no numeric {field} to unwrap"
                        );
                    }
                    i += 1;
                }
                Token::Ident(id) if id == "line_format" => {
                    if let Some(Token::Str(template)) = t.get(i + 1) {
                        for field in template
                            .split("{{.")
                            .skip(1)
                            .map(|rest| rest.split("}}").next().unwrap())
                        {
                            assert!(
                                has_field(field),
                                "{query}: line_format names {field}, which no log line has"
                            );
                        }
                    }
                    i += 1;
                }
                _ => i += 1,
            }
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn query(prometheus: std::net::SocketAddr, promql: &str) -> Option<f64> {
    // Not listening yet while it starts.
    tokio::net::TcpStream::connect(prometheus).await.ok()?;
    let mut conn = Conn::open(prometheus, None).await;
    let encoded: String = promql
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let path = format!("/api/v1/query?query={encoded}");
    let body: serde_json::Value = serde_json::from_slice(&conn.get(&path, &[]).await.body).ok()?;
    body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_computes_the_availability_of_the_traffic_driven() {
    let Some(prometheus) = peer("prometheus") else {
        return;
    };
    let yaml_text = format!(
        "backends:\n  - {{namespace: a, transport: stdio, command: {}, args: [demo-server, stdio]}}\n  - {{namespace: down, transport: stdio, command: /nonexistent/server}}\n",
        gateway_exe()
    );
    let gw = gateway(&yaml_text).await;
    let mut ws = WsClient::connect(gw.addr).await;
    let mut id = 0;
    let mut drive = async |ok: usize, failed: usize| {
        for _ in 0..ok {
            id += 1;
            assert_eq!(
                text(&ws.call(id, "a__echo", json!({"message": "x"})).await),
                "x"
            );
        }
        for _ in 0..failed {
            id += 1;
            assert_eq!(
                ws.call(id, "down__echo", json!({})).await["error"]["data"]["error_type"],
                "unavailable"
            );
        }
    };
    // Before Prometheus starts, both series exist with counts large next to what is measured, so
    // rate() extrapolates them alike and the ratio of rates is the ratio of the traffic.
    drive(50, 50).await;

    let dir = std::env::temp_dir().join(format!("mcp-gateway-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = std::fs::read_to_string(monitoring("prometheus-slo-rules.yaml"))
        .unwrap()
        .replace("interval: 30s", "interval: 1s");
    std::fs::write(dir.join("rules.yaml"), rules).unwrap();
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [{}]\nscrape_configs:\n  - job_name: gateway\n    static_configs: [{{targets: ['{}']}}]\n",
        dir.join("rules.yaml").display(),
        gw.metrics
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let web = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _prometheus = tokio::process::Command::new(prometheus)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .arg("--log.level=warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start prometheus");
    let deadline = Instant::now() + Duration::from_secs(60);
    // Two scrapes of the starting counts.
    while query(
        web,
        "count_over_time(gateway_requests_total{namespace=\"down\"}[5m])",
    )
    .await
    .unwrap_or(0.0)
        < 2.0
    {
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the gateway"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drive(45, 5).await;
    let expected = 45.0 / 50.0;
    let mut last = None;
    loop {
        last = query(web, "gateway:sli_availability:ratio_rate5m")
            .await
            .or(last);
        if last.is_some_and(|v| (v - expected).abs() < 1e-9) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus's availability SLI {last:?} never reached {expected}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_prometheus_rule_resources_are_generated_from_the_rule_files() {
    let generated = prometheus_rule::prometheus_rules(&monitoring("")).unwrap();
    let committed =
        std::fs::read_to_string(monitoring("kubernetes/prometheus-rules.yaml")).unwrap();
    assert_eq!(
        generated, committed,
        "monitoring/kubernetes/prometheus-rules.yaml is stale: run scripts/gen-prometheus-rules"
    );
    let Some(promtool) = peer("promtool") else {
        return;
    };
    for (i, doc) in committed.split("\n---\n").skip(1).enumerate() {
        let resource: serde_yaml::Value = serde_yaml::from_str(doc).unwrap();
        assert_eq!(resource["kind"], "PrometheusRule");
        let file = std::env::temp_dir().join(format!(
            "mcp-gateway-prometheusrule-{}-{i}.yaml",
            std::process::id()
        ));
        std::fs::write(&file, serde_yaml::to_string(&resource["spec"]).unwrap()).unwrap();
        run_peer(&promtool, &["check", "rules", file.to_str().unwrap()], b"");
        let _ = std::fs::remove_file(file);
    }
}

/// The three dashboards, parsed.
fn dashboards() -> Vec<(String, serde_json::Value)> {
    [
        "error-analysis.json",
        "request-tracing.json",
        "backend-errors.json",
    ]
    .into_iter()
    .map(|f| {
        (
            f.to_owned(),
            serde_json::from_str(
                &std::fs::read_to_string(monitoring(&format!("dashboards/{f}"))).unwrap(),
            )
            .unwrap(),
        )
    })
    .collect()
}

/// Every target expression of the dashboards with a datasource of `kind`.
fn dashboard_queries(kind: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (file, dashboard) in dashboards() {
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                if target["datasource"]["type"] == kind {
                    if let Some(expr) = target["expr"].as_str() {
                        out.push((format!("{file}: {}", panel["title"]), expr.to_owned()));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn the_dashboards_have_the_seeds_panels_and_no_hard_coded_datasources() {
    let want: [(&str, &[&str]); 3] = [
        (
            "error-analysis.json",
            &[
                "Total error rate",
                "Success rate (availability SLI)",
                "Errors by type",
                "Errors by severity",
                "Errors by component",
                "HTTP status codes",
                "Retryable vs non-retryable",
                "Top error patterns",
            ],
        ),
        (
            "request-tracing.json",
            &[
                "Trace timeline",
                "Request latency percentiles",
                "Failed requests",
                "Request rate by method and namespace",
                "Distributed trace",
            ],
        ),
        (
            "backend-errors.json",
            &[
                "Backend error rate",
                "Backend health by transport",
                "Connection errors",
                "Backend error logs",
                "Error handling latency",
            ],
        ),
    ];
    for ((file, dashboard), (want_file, titles)) in dashboards().into_iter().zip(want) {
        assert_eq!(file, want_file);
        let have: Vec<&str> = dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["title"].as_str().unwrap())
            .collect();
        for title in titles {
            assert!(have.contains(title), "{file} lacks the panel {title:?}");
        }
        // Datasources are template variables chosen at import, never names of someone's setup.
        let mut datasources = Vec::new();
        collect_datasources(&dashboard, &mut datasources);
        assert!(!datasources.is_empty());
        for uid in datasources {
            assert!(
                uid.starts_with("${ds_"),
                "{file}: a hard-coded datasource {uid}"
            );
        }
        let variables: Vec<&str> = dashboard["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert!(
            variables.contains(&"ds_prometheus") && variables.contains(&"ds_loki"),
            "{file}: {variables:?}"
        );
        if file == "request-tracing.json" {
            assert!(
                variables.contains(&"trace_id") && variables.contains(&"ds_jaeger"),
                "{variables:?}"
            );
        }
    }
    let peers = std::env::var_os("MCP_GATEWAY_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers"));
    let python = peers.join("venv/bin/python");
    let sdk = std::process::Command::new(&python)
        .args(["-c", "import grafana_foundation_sdk"])
        .status()
        .is_ok_and(|s| s.success());
    if !sdk {
        if std::env::var_os("MCP_GATEWAY_REQUIRE_PEERS").is_some() {
            panic!("grafana-foundation-sdk is required; run scripts/test");
        }
        eprintln!(
            "NOTICE: grafana-foundation-sdk not installed; dashboards not loaded into Grafana's model"
        );
        return;
    }
    let files: Vec<String> = [
        "error-analysis.json",
        "request-tracing.json",
        "backend-errors.json",
    ]
    .iter()
    .map(|f| monitoring(&format!("dashboards/{f}")).display().to_string())
    .collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/dashboard_check.py");
    let out = std::process::Command::new(&python)
        .arg(script)
        .args(&files)
        .output()
        .unwrap();
    let unknown: BTreeMap<String, Vec<String>> =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"));
    assert_eq!(unknown.len(), 3);
    for (file, keys) in unknown {
        assert!(
            keys.is_empty(),
            "{file}: keys Grafana's dashboard model does not know: {keys:?}"
        );
    }
}

/// The `uid` of every `datasource` object in a dashboard.
fn collect_datasources(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                if key == "datasource" {
                    if let Some(uid) = v["uid"].as_str() {
                        out.push(uid.to_owned());
                    }
                }
                collect_datasources(v, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_datasources(v, out)),
        _ => {}
    }
}
