//! A child process speaking newline-delimited JSON-RPC on stdin/stdout; stderr goes to the logs.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use tokio::sync::{Notify, mpsc};

use super::{Connector, Inbound, Inbox, PipeTx, inbound};
use crate::config::BackendConfig;
use crate::mcp::BoxFuture;

/// A burst of queued messages is written to the child's stdin in one write of up to this size.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// Backend processes not yet reaped, so that shutdown can wait for their graceful stop.
static LIVE_CHILDREN: AtomicUsize = AtomicUsize::new(0);
static CHILD_REAPED: Notify = Notify::const_new();

/// Waits until every backend process has exited and been reaped, or `limit` passes.
pub async fn wait_for_children(limit: Duration) {
    let all_reaped = async {
        loop {
            let notified = CHILD_REAPED.notified();
            if LIVE_CHILDREN.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    };
    let _ = tokio::time::timeout(limit, all_reaped).await;
}

pub(super) struct StdioConnector {
    config: Arc<BackendConfig>,
    max_line: usize,
}

impl StdioConnector {
    pub(super) fn new(config: Arc<BackendConfig>, max_line: usize) -> Self {
        StdioConnector { config, max_line }
    }
}

impl Connector for StdioConnector {
    fn connect(&self, incoming: Inbox) -> BoxFuture<Result<PipeTx, String>> {
        let config = self.config.clone();
        let max_line = self.max_line;
        Box::pin(async move { spawn(&config, max_line, incoming) })
    }
}

fn spawn(config: &BackendConfig, max_line: usize, incoming: Inbox) -> Result<PipeTx, String> {
    let program = config.command.as_deref().unwrap_or_default();
    let mut command = Command::new(program);
    command
        .args(&config.args)
        .envs(&config.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The gateway stops its children itself; a terminal's Ctrl-C must not reach them first.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &config.cwd {
        command.current_dir(dir);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let pid = child.id().unwrap_or(0);
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err("the child's pipes are missing".to_owned());
    };
    let namespace = config.namespace.clone();
    tracing::info!(backend = %namespace, pid, command = program, "backend process started");

    let (to_child, mut outgoing) = mpsc::channel::<mcp_gateway_layers::jsonrpc::Message>(256);

    // stdout has its own task, whatever happens to writes on stdin: a full stdin pipe never
    // stops us reading stdout, so the child can always make progress.
    let ns = namespace.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(64 * 1024, stdout);
        let mut line = Vec::with_capacity(4096);
        loop {
            line.clear();
            match read_line_limited(&mut reader, &mut line, max_line).await {
                Ok(LineRead::Eof) => break,
                Ok(LineRead::TooLong) => {
                    if incoming
                        .send(Inbound::Garbage(
                            format!("a line longer than {max_line} bytes").into(),
                        ))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Ok(LineRead::Line) => {
                    let text = line.trim_ascii();
                    if text.is_empty() {
                        continue;
                    }
                    if incoming
                        .send(inbound(Bytes::copy_from_slice(text)))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(backend = %ns, error = %e, "reading the backend's stdout failed");
                    break;
                }
            }
        }
    });

    let ns = namespace.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(backend = %ns, stream = "stderr", "{line}");
        }
    });

    let grace = Duration::from_secs(config.restart.grace_secs);
    LIVE_CHILDREN.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        let _reaped = Reaped;
        let mut stdin = Some(stdin);
        let mut batch = Vec::with_capacity(8 * 1024);
        loop {
            tokio::select! {
                next = outgoing.recv() => match next {
                    Some(first) => {
                        let Some(pipe) = stdin.as_mut() else { continue };
                        // Everything already queued goes in one write: one syscall and one
                        // wake-up of the child for a burst of calls, not one per message.
                        if batch.capacity() > 4 * MAX_BATCH_BYTES {
                            // One huge message must not pin its buffer for the child's lifetime.
                            batch = Vec::with_capacity(8 * 1024);
                        }
                        batch.clear();
                        batch.extend_from_slice(first.raw());
                        batch.push(b'\n');
                        if outgoing.is_empty() {
                            // Other tasks ready now (clients whose calls have arrived) run first
                            // and queue theirs: one pipe write and one wake-up of the child
                            // for them all. No timer: an idle runtime comes straight back.
                            tokio::task::yield_now().await;
                        }
                        while batch.len() < MAX_BATCH_BYTES {
                            let Ok(next) = outgoing.try_recv() else { break };
                            batch.extend_from_slice(next.raw());
                            batch.push(b'\n');
                        }
                        let written = async {
                            pipe.write_all(&batch).await?;
                            pipe.flush().await
                        };
                        if written.await.is_err() {
                            // The child closed stdin (or died): its exit is reported below.
                            stdin = None;
                        }
                    }
                    None => {
                        stop(&mut child, stdin.take(), grace, &namespace).await;
                        return;
                    }
                },
                status = child.wait() => {
                    match status {
                        Ok(status) => tracing::warn!(backend = %namespace, pid, %status, "backend process exited"),
                        Err(e) => tracing::warn!(backend = %namespace, pid, error = %e, "backend process lost"),
                    }
                    return;
                }
            }
        }
    });

    Ok(PipeTx::Queue(to_child))
}

/// Counts the child as reaped when its lifecycle task ends (it always waits for the child).
struct Reaped;

impl Drop for Reaped {
    fn drop(&mut self) {
        LIVE_CHILDREN.fetch_sub(1, Ordering::SeqCst);
        CHILD_REAPED.notify_waiters();
    }
}

/// Graceful stop: close stdin, then SIGTERM, then SIGKILL, a grace period apart; always reaped.
async fn stop(
    child: &mut Child,
    stdin: Option<tokio::process::ChildStdin>,
    grace: Duration,
    namespace: &str,
) {
    drop(stdin);
    if let Ok(Ok(status)) = tokio::time::timeout(grace, child.wait()).await {
        tracing::info!(backend = %namespace, %status, "backend process stopped");
        return;
    }
    if let Some(pid) = child.id() {
        // SIGTERM via kill(1): the standard library only offers SIGKILL.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
    }
    if let Ok(Ok(status)) = tokio::time::timeout(grace, child.wait()).await {
        tracing::info!(backend = %namespace, %status, "backend process stopped after SIGTERM");
        return;
    }
    let _ = child.kill().await;
    tracing::warn!(backend = %namespace, "backend process killed after ignoring SIGTERM");
}

enum LineRead {
    Line,
    TooLong,
    Eof,
}

/// Reads one line into `line` without ever holding more than `max` bytes of it.
async fn read_line_limited<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineRead> {
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if line.is_empty() && !too_long {
                LineRead::Eof
            } else if too_long {
                LineRead::TooLong
            } else {
                LineRead::Line
            });
        }
        let (chunk, found) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + chunk.len() > max {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = found.unwrap_or(buf.len());
        reader.consume(used);
        if found.is_some() {
            return Ok(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Line
            });
        }
    }
}
