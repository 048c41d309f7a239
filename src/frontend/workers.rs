//! Connection threads: every accepted connection is served, start to end, by one of N threads,
//! each running a current-thread runtime of its own (thread per core, as nginx and Envoy do).
//! A connection's requests, and the tasks they spawn, stay on its thread: no work stealing and
//! no waking of another thread to share a burst, which on a machine shared with the backends
//! cost a seventh of a call's CPU (docs/PERFORMANCE.md).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// N connection threads; dropping them stops each runtime, dropping the tasks left on it.
pub struct Workers {
    threads: Vec<Worker>,
    next: AtomicUsize,
}

struct Worker {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Workers {
    /// The name of each connection thread, as `/proc/PID/task/*/comm` shows it.
    pub const THREAD_NAME: &str = "gateway-worker";

    /// Starts `count` threads (at least one).
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let count = count.max(1);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(Self::THREAD_NAME.to_owned())
                .spawn(move || {
                    crate::backend::set_connection_thread(index);
                    let _ = runtime.block_on(stopped);
                    // Tasks still there (backends' supervisors) are dropped: their children are
                    // killed on drop. A task that blocks in its drop cannot hold the exit up.
                    runtime.shutdown_timeout(Duration::from_secs(1));
                })?;
            threads.push(Worker {
                handle,
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Workers {
            threads,
            next: AtomicUsize::new(0),
        })
    }

    /// The number of threads, from `TOKIO_WORKER_THREADS` when set (as tokio reads it), else one
    /// per core the process may use.
    pub fn default_count() -> usize {
        std::env::var("TOKIO_WORKER_THREADS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .filter(|&n: &usize| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// The runtime of the next connection, in turn.
    pub(crate) fn next(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len();
        &self.threads[i].handle
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.threads {
            if let Some(stop) = worker.stop.take() {
                let _ = stop.send(());
            }
        }
        for worker in &mut self.threads {
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}
