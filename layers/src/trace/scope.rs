//! A request's log scope: what log lines written while an unsampled request is being polled
//! carry (trace and span ids, method, request id, session), in place of a `tracing` span.
//!
//! An unsampled span is never exported; through a `tracing-subscriber` registry it still costs
//! its creation, an enter and an exit on every poll, and its close. A log layer that reads
//! [`LogScope::with_current`] gets the same fields for the price of a thread-local swap per poll.
//! [`TraceLayer::scope_unsampled_requests`](super::TraceLayer::scope_unsampled_requests) opts in;
//! other log layers do not see these fields, so it is for a process whose log layer reads them.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::Arc;

use super::{SpanId, TraceId};
use crate::jsonrpc::{McpMethod, Message, RawId};

/// What an unsampled request's log lines carry.
#[derive(Debug, Clone)]
pub struct LogScope {
    /// The request's trace.
    pub trace_id: TraceId,
    /// The request's own span id (the one its request line names).
    pub span_id: SpanId,
    /// The MCP session, when the request is in one.
    pub session_id: Option<Arc<str>>,
    /// Held apart from the message, whose copy would be an allocation and a reference to its
    /// bytes (two atomic operations) for each request.
    method: Option<MethodName>,
    request_id: Option<RawId>,
}

/// A method's name as sent: a known method's own, or a copy of another.
#[derive(Debug, Clone)]
enum MethodName {
    Known(&'static str),
    Other(Box<str>),
}

thread_local! {
    static CURRENT: Cell<Option<Arc<LogScope>>> = const { Cell::new(None) };
}

impl LogScope {
    /// A scope for a request with these ids, in `session_id`, carrying `message`'s method and id.
    pub fn new(
        trace_id: TraceId,
        span_id: SpanId,
        session_id: Option<Arc<str>>,
        message: Option<&Message>,
    ) -> Self {
        let method = message.and_then(|m| {
            let name = m.method_name()?;
            Some(match m.method() {
                McpMethod::Other => MethodName::Other(name.into()),
                known => MethodName::Known(known.as_str()),
            })
        });
        LogScope {
            trace_id,
            span_id,
            session_id,
            method,
            request_id: message.and_then(Message::id_bytes),
        }
    }

    /// The request's method name, as sent.
    pub fn method_name(&self) -> Option<&str> {
        match self.method.as_ref()? {
            MethodName::Known(name) => Some(name),
            MethodName::Other(name) => Some(name),
        }
    }

    /// The request's id as raw JSON (`7`, `"abc"`).
    pub fn request_id(&self) -> Option<&str> {
        std::str::from_utf8(self.request_id.as_ref()?).ok()
    }

    /// Makes the scope in `slot` the current one on this thread until the guard drops, which
    /// puts it back in `slot` and the previous one back as current (so scopes nest); with none in
    /// `slot`, changes nothing. Moved, not cloned: a clone and its drop are two atomic operations,
    /// on each poll of a request.
    pub fn enter(slot: &mut Option<Arc<LogScope>>) -> Entered<'_> {
        let previous = slot
            .take()
            .map(|scope| CURRENT.with(|current| current.replace(Some(scope))));
        Entered {
            slot,
            previous,
            _this_thread: PhantomData,
        }
    }

    /// Calls `f` with the scope current on this thread, if any.
    pub fn with_current<R>(f: impl FnOnce(Option<&LogScope>) -> R) -> R {
        // Taken out for the call and put back: a log line written inside `f` sees none.
        let scope = CURRENT.with(Cell::take);
        let result = f(scope.as_deref());
        CURRENT.with(|current| current.set(scope));
        result
    }
}

/// The guard of [`LogScope::enter`]. Not `Send`: it puts back the scope of the thread it was
/// made on, so it must not be held across an `await`.
#[derive(Debug)]
pub struct Entered<'a> {
    slot: &'a mut Option<Arc<LogScope>>,
    /// The scope current before, when one was entered.
    previous: Option<Option<Arc<LogScope>>>,
    _this_thread: PhantomData<*const ()>,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take() {
            *self.slot = CURRENT.with(|current| current.replace(previous));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(n: u8) -> Arc<LogScope> {
        let msg =
            Message::parse(format!(r#"{{"jsonrpc":"2.0","id":{n},"method":"tools/call"}}"#).into())
                .unwrap();
        Arc::new(LogScope::new(
            TraceId::from_hex(&n.to_string().repeat(32)).unwrap(),
            SpanId::from_hex(&n.to_string().repeat(16)).unwrap(),
            Some(Arc::from("s")),
            Some(&msg),
        ))
    }

    fn current_request_id() -> Option<String> {
        LogScope::with_current(|s| s.and_then(LogScope::request_id).map(str::to_owned))
    }

    #[test]
    fn a_scope_keeps_any_method_name_and_id_as_sent() {
        let long_id = format!("\"{}\"", "i".repeat(60));
        for (method, id) in [("tools/call", "7"), ("x/custom", long_id.as_str())] {
            let raw = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}"}}"#);
            let msg = Message::parse(raw.into()).unwrap();
            let scope = LogScope::new(
                TraceId::from_hex(&"1".repeat(32)).unwrap(),
                SpanId::from_hex(&"1".repeat(16)).unwrap(),
                None,
                Some(&msg),
            );
            drop(msg);
            assert_eq!(scope.method_name(), Some(method));
            assert_eq!(scope.request_id(), Some(id));
        }
        let none = LogScope::new(
            TraceId::from_hex(&"1".repeat(32)).unwrap(),
            SpanId::from_hex(&"1".repeat(16)).unwrap(),
            None,
            None,
        );
        assert_eq!((none.method_name(), none.request_id()), (None, None));
    }

    #[test]
    fn scopes_nest_and_end_with_their_guards() {
        assert_eq!(current_request_id(), None);
        let (mut one, mut two) = (Some(scope(1)), Some(scope(2)));
        let outer = LogScope::enter(&mut one);
        assert_eq!(current_request_id().as_deref(), Some("1"));
        {
            let _inner = LogScope::enter(&mut two);
            assert_eq!(current_request_id().as_deref(), Some("2"));
            LogScope::with_current(|s| {
                let s = s.unwrap();
                assert_eq!(s.method_name(), Some("tools/call"));
                assert_eq!(s.trace_id.to_string(), "2".repeat(32));
                assert_eq!(s.session_id.as_deref(), Some("s"));
            });
        }
        assert_eq!(current_request_id().as_deref(), Some("1"));
        drop(outer);
        assert_eq!(current_request_id(), None);
        // Each scope is back where it was entered from, moved rather than cloned.
        for (slot, n) in [(&one, "1"), (&two, "2")] {
            let scope = slot.as_ref().unwrap();
            assert_eq!(scope.request_id(), Some(n));
            assert_eq!(Arc::strong_count(scope), 1);
        }
        // Entering none leaves the current scope current.
        let _outer = LogScope::enter(&mut one);
        let mut none = None;
        drop(LogScope::enter(&mut none));
        assert_eq!(current_request_id().as_deref(), Some("1"));
    }
}
