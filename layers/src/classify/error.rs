//! Typed errors that carry a class, and the classifier for errors that do not.

use std::borrow::Cow;
use std::error::Error;
use std::fmt;
use std::io;

use tower::BoxError;

use super::{Component, ErrorClass, ErrorType};
use crate::jsonrpc::PeekError;

/// An error made by the gateway: its class and a message safe to show a client.
#[derive(Debug, Clone)]
pub struct GatewayError {
    class: ErrorClass,
    message: Cow<'static, str>,
}

impl GatewayError {
    /// An error of `class` whose client-facing message is `message`.
    pub fn new(class: ErrorClass, message: impl Into<Cow<'static, str>>) -> Self {
        GatewayError {
            class,
            message: message.into(),
        }
    }

    /// The class.
    pub fn class(&self) -> &ErrorClass {
        &self.class
    }

    /// The message safe to show a client.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class.error_type, self.message)
    }
}

impl Error for GatewayError {}

/// An error already classified by the classify layer: the class is read, never recomputed.
#[derive(Debug)]
pub struct ClassifiedError {
    class: ErrorClass,
    source: BoxError,
}

impl ClassifiedError {
    /// Wraps `source` with its class.
    pub fn new(class: ErrorClass, source: BoxError) -> Self {
        ClassifiedError { class, source }
    }

    /// The class.
    pub fn class(&self) -> &ErrorClass {
        &self.class
    }

    /// The message safe to show a client: a gateway error's own, else a fixed text per type,
    /// never the internal error's text.
    pub fn public_message(&self) -> Cow<'static, str> {
        public_message(&*self.source, &self.class)
    }
}

impl fmt::Display for ClassifiedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.class.error_type,
            self.class.component.as_str(),
            self.source
        )
    }
}

impl Error for ClassifiedError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// The message a client sees for an error: a gateway error's own, else a fixed text per type.
pub(crate) fn public_message(
    error: &(dyn Error + 'static),
    class: &ErrorClass,
) -> Cow<'static, str> {
    let mut cur: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(e) = cur {
        if let Some(g) = e.downcast_ref::<GatewayError>() {
            return g.message.clone();
        }
        if let Some(p) = e.downcast_ref::<PeekError>() {
            return Cow::Owned(p.to_string());
        }
        cur = e.source();
    }
    Cow::Borrowed(match class.error_type {
        ErrorType::Validation => "invalid request",
        ErrorType::Parse => "parse error",
        ErrorType::NotFound => "not found",
        ErrorType::Unauthorized => "unauthorized",
        ErrorType::Forbidden => "forbidden",
        ErrorType::RateLimited => "rate limited",
        ErrorType::Timeout => "request timed out",
        ErrorType::Canceled => "request cancelled",
        ErrorType::Unavailable => "service unavailable",
        ErrorType::BackendProtocol => "invalid response from backend",
        ErrorType::ToolError => "tool error",
        ErrorType::Internal => "internal error",
    })
}

/// Classifies any error: a classified or gateway error keeps its class; otherwise the source
/// chain is searched for a timeout, a shed request or an I/O error; anything else is `internal`.
pub fn classify_error(error: &(dyn Error + 'static)) -> ErrorClass {
    let mut cur: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(e) = cur {
        if let Some(c) = e.downcast_ref::<ClassifiedError>() {
            return c.class;
        }
        if let Some(g) = e.downcast_ref::<GatewayError>() {
            return g.class;
        }
        if let Some(p) = e.downcast_ref::<PeekError>() {
            return p.class();
        }
        if e.is::<tower::timeout::error::Elapsed>() || e.is::<tokio::time::error::Elapsed>() {
            return ErrorClass::new(ErrorType::Timeout, Component::Transport);
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return classify_io(io);
        }
        cur = e.source();
    }
    ErrorClass::new(ErrorType::Internal, Component::Gateway)
}

fn classify_io(error: &io::Error) -> ErrorClass {
    use io::ErrorKind::*;
    match error.kind() {
        // Nothing was sent: a retry cannot repeat a side effect.
        ConnectionRefused | NotConnected | AddrNotAvailable | HostUnreachable
        | NetworkUnreachable => {
            ErrorClass::new(ErrorType::Unavailable, Component::Transport).not_sent()
        }
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => {
            ErrorClass::new(ErrorType::Unavailable, Component::Transport)
        }
        TimedOut | WouldBlock => ErrorClass::new(ErrorType::Timeout, Component::Transport),
        InvalidData => ErrorClass::new(ErrorType::BackendProtocol, Component::Transport),
        _ => ErrorClass::new(ErrorType::Internal, Component::Transport),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapped(io::Error);
    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("client error")
        }
    }
    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn transport_errors_classify_through_source_chains() {
        let cases = [
            (
                io::ErrorKind::ConnectionRefused,
                ErrorType::Unavailable,
                false,
            ),
            (io::ErrorKind::ConnectionReset, ErrorType::Unavailable, true),
            (io::ErrorKind::BrokenPipe, ErrorType::Unavailable, true),
            (io::ErrorKind::TimedOut, ErrorType::Timeout, true),
        ];
        for (kind, error_type, reached) in cases {
            let e = Wrapped(io::Error::new(kind, "x"));
            let class = classify_error(&e);
            assert_eq!(
                (class.error_type, class.reached_backend),
                (error_type, reached),
                "{kind:?}"
            );
            assert!(class.retryable);
        }
        let elapsed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert_eq!(classify_error(&*elapsed).error_type, ErrorType::Timeout);
        assert_eq!(
            classify_error(&io::Error::other("?")).error_type,
            ErrorType::Internal
        );
    }

    #[test]
    fn public_messages_never_leak_internal_text() {
        let secret = io::Error::other("password=hunter2 at /srv/secret");
        let class = classify_error(&secret);
        let wrapped = ClassifiedError::new(class, Box::new(secret));
        assert_eq!(wrapped.public_message(), "internal error");
        let gw = GatewayError::new(
            ErrorClass::new(ErrorType::NotFound, Component::Router),
            "unknown tool: x",
        );
        let wrapped = ClassifiedError::new(gw.class, Box::new(gw));
        assert_eq!(wrapped.public_message(), "unknown tool: x");
    }
}
