//! Process and connection lifecycles: a stdio process shared by all sessions, crash-loop
//! protection, draining on SIGTERM with no process left behind, WebSocket keepalive and idle
//! timeout, the runtime's worker threads.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::clients::{HttpClient, WsClient, text};
use support::processes::{gateway, gateway_exe, gateway_with_env};
use support::{Conn, sample};
use tokio_tungstenite::tungstenite::Message as Frame;

async fn scrape(addr: std::net::SocketAddr) -> String {
    String::from_utf8_lossy(&Conn::open(addr, None).await.get("/metrics", &[]).await.body)
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_process_serves_every_session_and_keeps_them_apart() {
    let exe = gateway_exe();
    let yaml = format!(
        "backends:\n  - {{namespace: s, transport: stdio, command: {exe}, args: [demo-server, stdio], shared: true}}\n  - {{namespace: p, transport: stdio, command: {exe}, args: [demo-server, stdio]}}\n"
    );
    let gw = gateway(&yaml).await;
    let mut one = WsClient::connect(gw.addr).await;
    let mut two = WsClient::connect(gw.addr).await;
    assert_eq!(
        text(&one.call(1, "s__whoami", json!({})).await),
        text(&two.call(1, "s__whoami", json!({})).await),
        "one shared process"
    );
    assert_ne!(
        text(&one.call(2, "p__whoami", json!({})).await),
        text(&two.call(2, "p__whoami", json!({})).await),
        "a process per session"
    );

    // Both sessions use the same progress token at once; each sees only its own progress.
    let http_a = HttpClient::connect(gw.addr).await;
    let http_b = HttpClient::connect(gw.addr).await;
    let call = |steps: u64| json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "s__progress", "arguments": {"steps": steps}, "_meta": {"progressToken": "same"}}});
    let (mut stream_a, mut stream_b) = tokio::join!(
        http_a.request_streaming(call(2)),
        http_b.request_streaming(call(4))
    );
    let id = json!(1);
    let ((done_a, before_a), (done_b, before_b)) = tokio::join!(
        support::clients::response_on(&mut stream_a, &id),
        support::clients::response_on(&mut stream_b, &id)
    );
    assert_eq!(
        (text(&done_a), text(&done_b)),
        ("2 steps done", "4 steps done")
    );
    for (before, steps) in [(&before_a, 2), (&before_b, 4)] {
        let progress: Vec<_> = before
            .iter()
            .map(|m| {
                (
                    m["params"]["progressToken"].clone(),
                    m["params"]["total"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            progress,
            vec![(json!("same"), steps); steps as usize],
            "the client's own token, its own call's progress only"
        );
    }

    // The same request id in two sessions: cancelling one cancels only that one.
    one.send(json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "s__sleep", "arguments": {"ms": 30000}}})).await;
    two.send(json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "s__sleep", "arguments": {"ms": 800}}})).await;
    assert_eq!(
        text(
            &one.call(6, "s__echo", json!({"message": "in flight"}))
                .await
        ),
        "in flight"
    );
    one.send(
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 5}}),
    )
    .await;
    let finished = two.next().await.unwrap();
    assert_eq!(
        (finished["id"].as_u64(), text(&finished)),
        (Some(5), "slept 800 ms"),
        "the other session's call with the same id ran to its end"
    );
    assert_eq!(text(&one.call(7, "s__cancellations", json!({})).await), "1");

    // The backend's request goes to the session whose call is in flight.
    two.send(json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "s__sample", "arguments": {"prompt": "?"}}})).await;
    let asked = two.next().await.unwrap();
    assert_eq!(asked["method"], "sampling/createMessage");
    two.send(json!({"jsonrpc": "2.0", "id": asked["id"], "result": {"role": "assistant", "content": {"type": "text", "text": "two answered"}, "model": "m"}})).await;
    assert_eq!(text(&two.next().await.unwrap()), "two answered");

    // Closing a session leaves the shared process running for the others.
    drop(one);
    assert_eq!(
        text(
            &two.call(9, "s__echo", json!({"message": "still here"}))
                .await
        ),
        "still here"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_backend_is_marked_down_and_drops_out_of_lists() {
    let yaml = format!(
        "backends:\n  - {{namespace: good, transport: stdio, command: {}, args: [demo-server, stdio]}}\n  - {{namespace: bad, transport: stdio, command: /bin/sh, args: [-c, 'echo \"$GREETING from $(pwd)\" >&2; exit 1'], env: {{GREETING: hello}}, cwd: /tmp, restart: {{max_restarts: 2, window_secs: 60, backoff_initial_ms: 10}}}}\n",
        gateway_exe()
    );
    let gw = gateway(&yaml).await;
    let mut ws = WsClient::connect(gw.addr).await;
    let list = ws.request(1, "tools/list", json!({})).await;
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| n.starts_with("good__")),
        "{names:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !gw
        .process
        .log_lines()
        .iter()
        .any(|l| l.contains("backend marked down") && l.contains("\"bad\""))
    {
        assert!(
            Instant::now() < deadline,
            "the crash loop was never stopped: {:?}",
            gw.process.log_lines()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let down = ws.call(2, "bad__echo", json!({"message": "x"})).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a down backend answers at once"
    );
    assert_eq!(down["error"]["code"], -32010, "{down}");
    assert_eq!(
        text(&ws.call(3, "good__echo", json!({"message": "fine"})).await),
        "fine"
    );
    let metrics = scrape(gw.metrics).await;
    assert_eq!(
        sample(
            &metrics,
            r#"gateway_backend_up{backend="bad",backend_type="stdio"}"#
        ),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"gateway_backend_marked_down_total{backend="bad",backend_type="stdio"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    // Its stderr is in the logs under its name; its env and working directory were applied.
    let stderr_line = gw
        .process
        .log_lines()
        .into_iter()
        .find(|l| l.contains(r#""stream":"stderr""#) && l.contains(r#""backend":"bad""#))
        .expect("the backend's stderr in the logs");
    assert!(stderr_line.contains("hello from /tmp"), "{stderr_line}");
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_stops_backends_and_exits() {
    let gw = gateway(&format!("backends:\n  - {{namespace: a, transport: stdio, command: {}, args: [demo-server, stdio]}}\n", gateway_exe())).await;
    let mut ws = WsClient::connect(gw.addr).await;
    let mut http = HttpClient::connect(gw.addr).await;
    // Connections with nothing in flight, closed by the gateway as the drain begins: one on the
    // gateway's own HTTP/1.1 loop, one handed to hyper by a chunked request it answered.
    let mut idle = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut idle_hyper = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let chunked = format!(
        "POST /mcp HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\naccept: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{ping}\r\n0\r\n\r\n",
        ping.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut idle_hyper, chunked.as_bytes())
        .await
        .unwrap();
    let mut answer = [0u8; 1024];
    let n = tokio::io::AsyncReadExt::read(&mut idle_hyper, &mut answer)
        .await
        .unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 400"),
        "no session: {}",
        String::from_utf8_lossy(&answer[..n])
    );
    let pids: Vec<u32> = vec![
        text(&ws.call(1, "a__whoami", json!({})).await)
            .parse()
            .unwrap(),
        text(&http.call(1, "a__whoami", json!({})).await)
            .parse()
            .unwrap(),
    ];
    ws.send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "a__sleep", "arguments": {"ms": 1200}}})).await;
    let slow_http =
        tokio::spawn(async move { http.call(2, "a__sleep", json!({"ms": 1200})).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while sample(&scrape(gw.metrics).await, "gateway_requests_in_flight") != Some(2.0) {
        assert!(Instant::now() < deadline, "the calls never got in flight");
        tokio::task::yield_now().await;
    }
    let mut process = gw.process;
    let pid = process.child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut byte = [0u8; 1];
    let read = tokio::io::AsyncReadExt::read(&mut idle, &mut byte).await;
    assert_eq!(read.unwrap(), 0, "the idle connection is closed");
    // Whatever is left of the answer, then the end.
    while tokio::io::AsyncReadExt::read(&mut idle_hyper, &mut answer)
        .await
        .unwrap()
        > 0
    {}
    assert!(
        !slow_http.is_finished(),
        "the idle connections closed as the drain began, while a call was still in flight"
    );
    // New requests are refused while the calls in flight finish.
    let mut finished_ws = false;
    let mut next_id = 100;
    let refused = loop {
        next_id += 1;
        ws.send(json!({"jsonrpc": "2.0", "id": next_id, "method": "ping"}))
            .await;
        let answer = loop {
            let m = ws
                .next()
                .await
                .expect("the connection stays open while draining");
            if m["id"] == 2 {
                assert_eq!(
                    text(&m),
                    "slept 1200 ms",
                    "the WebSocket call in flight finished"
                );
                finished_ws = true;
            } else if m["id"] == next_id {
                break m;
            }
        };
        if answer.get("error").is_some() {
            break answer;
        }
        assert!(next_id < 10_000, "new requests were never refused");
    };
    assert_eq!(refused["error"]["code"], -32010, "{refused}");
    if !finished_ws {
        assert_eq!(
            text(&ws.next().await.unwrap()),
            "slept 1200 ms",
            "the WebSocket call in flight finished"
        );
    }
    assert_eq!(
        text(&slow_http.await.unwrap()),
        "slept 1200 ms",
        "the HTTP call in flight finished"
    );
    let exit = tokio::time::timeout(Duration::from_secs(15), process.child.wait())
        .await
        .expect("exited within 15 s")
        .unwrap();
    assert!(exit.success(), "{exit}");
    for pid in pids {
        assert!(!alive(pid), "backend process {pid} outlived the gateway");
    }
    let log = process.log.lock().unwrap().join("\n");
    assert!(
        log.contains("backend process stopped"),
        "stopped gracefully (stdin closed), not killed:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_are_pinged_and_idle_ones_closed() {
    let yaml = format!(
        "websocket: {{ping_interval_secs: 1, idle_timeout_secs: 3}}\nbackends:\n  - {{namespace: a, transport: stdio, command: {}, args: [demo-server, stdio]}}\n",
        gateway_exe()
    );
    let gw = gateway(&yaml).await;
    let mut ws = WsClient::connect(gw.addr).await;
    loop {
        match ws.next_frame().await {
            Some(Frame::Ping(_)) => break,
            Some(_) => continue,
            None => panic!("closed before a ping"),
        }
    }
    // Reading nothing, the client answers no pings: after the idle timeout the gateway closes.
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let code = loop {
        match ws.next_frame().await {
            Some(Frame::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Some(_) => continue,
            None => break None,
        }
    };
    assert_eq!(
        code,
        Some(1001),
        "closed as idle after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_ignores_stdin_and_sigterm_is_killed_on_stop() {
    let yaml = format!(
        "backends:\n  - {{namespace: a, transport: stdio, command: {}, args: [demo-server, stdio]}}\n  - {{namespace: stubborn, transport: stdio, command: /bin/sh, args: [-c, 'trap \"\" TERM; while :; do sleep 0.1; done'], timeout_secs: 1, restart: {{grace_secs: 1}}}}\n",
        gateway_exe()
    );
    let gw = gateway(&yaml).await;
    let ws = WsClient::connect(gw.addr).await;
    let started_line = gw
        .process
        .log_lines()
        .into_iter()
        .find(|l| l.contains("backend process started") && l.contains(r#""backend":"stubborn""#))
        .expect("the stubborn backend started");
    let stubborn_pid = serde_json::from_str::<serde_json::Value>(&started_line).unwrap()["pid"]
        .as_u64()
        .unwrap() as u32;
    let mut process = gw.process;
    let pid = process.child.id().unwrap();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let exit = tokio::time::timeout(Duration::from_secs(15), process.child.wait())
        .await
        .expect("exited within 15 s")
        .unwrap();
    assert!(exit.success(), "{exit}");
    assert!(
        !alive(stubborn_pid),
        "the stubborn backend outlived the gateway"
    );
    let log = process.log.lock().unwrap().join("\n");
    assert!(
        log.contains("backend process killed after ignoring SIGTERM"),
        "{log}"
    );
    drop(ws);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_backend_reconnects_after_its_server_restarts() {
    let (mut demo, addr) = support::processes::demo_http().await;
    let yaml = format!(
        "backends:\n  - {{namespace: socket, transport: websocket, url: 'ws://{addr}/ws', restart: {{backoff_initial_ms: 20}}}}\n"
    );
    let gw = gateway(&yaml).await;
    let mut ws = WsClient::connect(gw.addr).await;
    assert_eq!(
        text(
            &ws.call(1, "socket__echo", json!({"message": "before"}))
                .await
        ),
        "before"
    );
    demo.child.kill().await.unwrap();
    // The same server again, on the same address.
    let mut again = tokio::process::Command::new(gateway_exe())
        .args(["demo-server", "http", &addr.to_string()])
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut id = 2;
    loop {
        let m = ws
            .call(id, "socket__echo", json!({"message": "after"}))
            .await;
        if m.get("result").is_some() {
            assert_eq!(text(&m), "after");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the WebSocket backend never came back: {m}"
        );
        id += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = scrape(gw.metrics).await;
    assert_eq!(
        sample(
            &metrics,
            r#"gateway_backend_restarts_total{backend="socket",backend_type="websocket"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"gateway_error_recovery_total{error_type="unavailable",mechanism="reconnect"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    let _ = again.kill().await;
}

/// The connection threads, as docs/CONFIG.md says: `TOKIO_WORKER_THREADS`, else one per core;
/// the calls run on them, not on the main thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_threads_follow_tokio_worker_threads() {
    // (thread name, CPU ticks) of each of the process's threads.
    let threads = |pid: u32| -> Vec<(String, u64)> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|t| {
                let path = t.ok()?.path();
                let name = std::fs::read_to_string(path.join("comm")).ok()?;
                let stat = std::fs::read_to_string(path.join("stat")).ok()?;
                // utime and stime, the 14th and 15th fields, after the parenthesised name.
                let after_name = &stat[stat.rfind(')')? + 2..];
                let fields: Vec<&str> = after_name.split(' ').collect();
                let ticks = fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?;
                Some((name.trim().to_owned(), ticks))
            })
            .collect()
    };
    let is_worker = |name: &str| name == mcp_gateway::frontend::Workers::THREAD_NAME;
    let workers = |pid: u32| threads(pid).iter().filter(|(n, _)| is_worker(n)).count();
    let ticks = |pid: u32, worker: bool| -> u64 {
        threads(pid)
            .iter()
            .filter(|(n, _)| is_worker(n) == worker)
            .map(|(_, t)| t)
            .sum()
    };
    let exe = gateway_exe();
    let yaml = format!(
        "backends:\n  - {{namespace: d, transport: stdio, command: {exe}, args: [demo-server, stdio]}}\n"
    );
    let cores = std::thread::available_parallelism().unwrap().get();
    for (env, expected) in [(None, cores), (Some("1"), 1), (Some("3"), 3)] {
        let env: Vec<_> = env
            .map(|n| ("TOKIO_WORKER_THREADS", n))
            .into_iter()
            .collect();
        let mut gw = gateway_with_env(&yaml, &env).await;
        // Serving a call proves the one worker is enough to run the gateway.
        let mut ws = WsClient::connect(gw.addr).await;
        assert_eq!(
            text(&ws.call(1, "d__echo", json!({"message": "hi"})).await),
            "hi"
        );
        let pid = gw.process.child.id().unwrap();
        assert_eq!(workers(pid), expected, "{env:?}");
        // Calls until the connection threads have run for 50 ms of CPU (bounded): the other
        // threads together (main, log writer, blocking pool) run less in that time.
        let (workers_before, others_before) = (ticks(pid, true), ticks(pid, false));
        for id in 2..5000 {
            ws.call(id, "d__echo", json!({"message": "hi"})).await;
            if ticks(pid, true) >= workers_before + 5 {
                break;
            }
        }
        let workers_ran = ticks(pid, true) - workers_before;
        let others_ran = ticks(pid, false) - others_before;
        assert!(
            workers_ran >= 5 && others_ran < workers_ran,
            "{env:?}: connection threads {workers_ran} ticks, the others {others_ran}"
        );
        gw.process.child.kill().await.unwrap();
    }
}

/// A gateway with one session open, which has started its backends.
async fn gateway_with_a_session(yaml: &str) -> (support::processes::Gateway, WsClient) {
    let gw = gateway(yaml).await;
    let mut ws = WsClient::connect(gw.addr).await;
    ws.request(1, "tools/list", json!({})).await;
    (gw, ws)
}

/// How many times the gateway has started `backend`'s process so far.
fn process_starts(gw: &support::processes::Gateway, backend: &str) -> usize {
    let named = format!("\"backend\":\"{backend}\"");
    gw.process
        .log_lines()
        .iter()
        .filter(|l| l.contains("backend process started") && l.contains(&named))
        .count()
}

/// `restart.backoff_max_ms` caps the doubling delay between restarts: twelve restarts of a
/// backend that exits at once take well under three seconds with a 50 ms cap, where doubling
/// from 10 ms without it would take over 40.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_back_off_no_longer_than_the_configured_cap() {
    let yaml = format!(
        "backends:\n  - {{namespace: good, transport: stdio, command: {}, args: [demo-server, stdio]}}\n  - {{namespace: bad, transport: stdio, command: /bin/sh, args: [-c, 'exit 1'], restart: {{max_restarts: 1000, window_secs: 60, backoff_initial_ms: 10, backoff_max_ms: 50}}}}\n",
        gateway_exe()
    );
    let (gw, _session) = gateway_with_a_session(&yaml).await;
    let starts = || process_starts(&gw, "bad");
    let deadline = Instant::now() + Duration::from_secs(3);
    while starts() < 12 {
        assert!(
            Instant::now() < deadline,
            "{} starts in 3 s: {:?}",
            starts(),
            gw.process.log_lines()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `restart.window_secs`: a process that stayed up a whole window earns a fresh backoff. This one
/// is killed 1.1 s after each start (window 1 s, first delay 800 ms): every restart comes after
/// the first delay, where doubling would make the third wait at least 1.6 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_up_for_a_whole_window_restarts_after_the_first_delay_again() {
    let yaml = format!(
        "backends:\n  - {{namespace: brief, transport: stdio, command: /bin/sh, args: [-c, '(sleep 1.1; kill $$) & exec {} demo-server stdio'], restart: {{window_secs: 1, backoff_initial_ms: 800, backoff_max_ms: 10000}}}}\n",
        gateway_exe()
    );
    let (gw, _session) = gateway_with_a_session(&yaml).await;
    let starts = || process_starts(&gw, "brief");
    // When each start was seen (polled every 10 ms).
    let mut seen: Vec<Instant> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen.len() < 4 {
        assert!(Instant::now() < deadline, "{:?}", gw.process.log_lines());
        while seen.len() < starts() {
            seen.push(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Up 1.1 s, then at most 800 ms: about 1.9 s from start to start, under 2.3 s (doubling: at
    // least 2.7 s by the third).
    for pair in seen.windows(2) {
        let between = pair[1] - pair[0];
        assert!(
            between < Duration::from_millis(2300),
            "{between:?} between starts"
        );
    }
}
