//! A stdio backend shared by every session (`shared: true`): one process, initialized once, its
//! own requests sent to the session with the most recent call in flight, its notifications to
//! every session.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use mcp_gateway_layers::jsonrpc::Message;
use tokio::sync::{OnceCell, mpsc};

use crate::backend::{BackendClient, BackendEvent, Connector};
use crate::config::BackendConfig;
use crate::lock;
use crate::telemetry::Telemetry;

/// One backend process shared by all sessions.
pub(crate) struct SharedBackend {
    pub(crate) client: BackendClient,
    subscribers: Mutex<Vec<(u64, mpsc::Sender<BackendEvent>)>>,
    /// Calls in flight: gateway id → session, oldest first.
    calls: Mutex<Vec<(u64, u64)>>,
    /// The backend's answer to the one `initialize` it gets.
    pub(crate) initialized: OnceCell<Message>,
    initialized_sent: AtomicBool,
    next_token: AtomicU64,
}

impl SharedBackend {
    pub(crate) fn start(
        index: usize,
        config: &BackendConfig,
        connector: Arc<dyn Connector>,
        telemetry: &Telemetry,
    ) -> Arc<SharedBackend> {
        let (events, rx) = mpsc::channel(256);
        let client = BackendClient::start(
            index,
            config,
            connector,
            Arc::new(move || Some(events.clone())),
            telemetry.backends.clone(),
        );
        let shared = Arc::new(SharedBackend {
            client,
            subscribers: Mutex::default(),
            calls: Mutex::default(),
            initialized: OnceCell::new(),
            initialized_sent: AtomicBool::new(false),
            next_token: AtomicU64::new(1),
        });
        tokio::spawn(dispatch(Arc::downgrade(&shared), rx));
        shared
    }

    pub(crate) fn subscribe(&self, session: u64, events: mpsc::Sender<BackendEvent>) {
        lock(&self.subscribers).push((session, events));
    }

    pub(crate) fn unsubscribe(&self, session: u64) {
        lock(&self.subscribers).retain(|(s, _)| *s != session);
        lock(&self.calls).retain(|(_, s)| *s != session);
    }

    pub(crate) fn call_started(&self, id: u64, session: u64) {
        lock(&self.calls).push((id, session));
    }

    pub(crate) fn call_ended(&self, id: u64) {
        lock(&self.calls).retain(|(i, _)| *i != id);
    }

    /// Whether this is the first `notifications/initialized` (the only one the process gets).
    pub(crate) fn first_initialized(&self) -> bool {
        !self.initialized_sent.swap(true, Ordering::SeqCst)
    }

    /// A progress token unique across sessions, as raw JSON.
    pub(crate) fn unique_token(&self) -> String {
        format!("gw-p-{}", self.next_token.fetch_add(1, Ordering::Relaxed))
    }
}

async fn dispatch(shared: Weak<SharedBackend>, mut events: mpsc::Receiver<BackendEvent>) {
    while let Some(event) = events.recv().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match event {
            BackendEvent::Request(index, msg) => {
                let target = {
                    let subscribers = lock(&shared.subscribers);
                    let newest_caller = lock(&shared.calls).last().map(|(_, s)| *s);
                    newest_caller
                        .and_then(|s| subscribers.iter().find(|(k, _)| *k == s))
                        .or(subscribers.first())
                        .map(|(_, tx)| tx.clone())
                };
                match target {
                    Some(tx) => {
                        let _ = tx.send(BackendEvent::Request(index, msg)).await;
                    }
                    None => tracing::warn!(
                        backend = shared.client.namespace().as_str(),
                        "request from a shared backend with no session to ask; dropped"
                    ),
                }
            }
            BackendEvent::Barrier(passed) => {
                let subscribers: Vec<_> = lock(&shared.subscribers)
                    .iter()
                    .map(|(_, tx)| tx.clone())
                    .collect();
                for tx in subscribers {
                    let (sub_passed, sub_acked) = tokio::sync::oneshot::channel();
                    if tx.send(BackendEvent::Barrier(sub_passed)).await.is_ok() {
                        let _ = sub_acked.await;
                    }
                }
                let _ = passed.send(());
            }
            BackendEvent::Notification(index, msg) => {
                let subscribers: Vec<_> = lock(&shared.subscribers)
                    .iter()
                    .map(|(_, tx)| tx.clone())
                    .collect();
                for tx in subscribers {
                    let _ = tx
                        .send(BackendEvent::Notification(index, msg.clone()))
                        .await;
                }
            }
        }
    }
}
