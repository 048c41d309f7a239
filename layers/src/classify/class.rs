//! The error class: what went wrong, how bad it is, who is to blame, and whether a retry may help.

use std::fmt;
use std::time::Duration;

use http::StatusCode;

/// What kind of failure a request met. The table in `docs/ERRORS.md` is the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// The request is malformed or its parameters are invalid.
    Validation,
    /// The request is not valid JSON.
    Parse,
    /// The method, tool, resource or session does not exist.
    NotFound,
    /// Credentials are missing or wrong.
    Unauthorized,
    /// Credentials are valid but not allowed to do this.
    Forbidden,
    /// The caller sent too much; it may try again after `Retry-After`.
    RateLimited,
    /// No answer came in time.
    Timeout,
    /// The caller went away or cancelled the request.
    Canceled,
    /// The backend could not be reached or a limit shed the request.
    Unavailable,
    /// The backend answered with something that is not valid MCP.
    BackendProtocol,
    /// The tool ran and reported a failure (`result.isError`).
    ToolError,
    /// A bug or an unexpected state in the gateway.
    Internal,
}

impl ErrorType {
    /// Every error type, in the order of the contract table.
    pub const ALL: [ErrorType; 12] = [
        ErrorType::Validation,
        ErrorType::Parse,
        ErrorType::NotFound,
        ErrorType::Unauthorized,
        ErrorType::Forbidden,
        ErrorType::RateLimited,
        ErrorType::Timeout,
        ErrorType::Canceled,
        ErrorType::Unavailable,
        ErrorType::BackendProtocol,
        ErrorType::ToolError,
        ErrorType::Internal,
    ];

    /// The label value used in metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorType::Validation => "validation",
            ErrorType::Parse => "parse",
            ErrorType::NotFound => "not_found",
            ErrorType::Unauthorized => "unauthorized",
            ErrorType::Forbidden => "forbidden",
            ErrorType::RateLimited => "rate_limited",
            ErrorType::Timeout => "timeout",
            ErrorType::Canceled => "canceled",
            ErrorType::Unavailable => "unavailable",
            ErrorType::BackendProtocol => "backend_protocol",
            ErrorType::ToolError => "tool_error",
            ErrorType::Internal => "internal",
        }
    }

    /// The severity the contract gives this type.
    pub const fn severity(self) -> Severity {
        match self {
            ErrorType::Validation
            | ErrorType::Parse
            | ErrorType::NotFound
            | ErrorType::RateLimited
            | ErrorType::Canceled
            | ErrorType::ToolError => Severity::Low,
            ErrorType::Unauthorized | ErrorType::Forbidden | ErrorType::Timeout => Severity::Medium,
            ErrorType::Unavailable | ErrorType::BackendProtocol => Severity::High,
            ErrorType::Internal => Severity::Critical,
        }
    }

    /// The HTTP status a gateway-made error of this type is answered with.
    pub const fn http_status(self) -> StatusCode {
        match self {
            ErrorType::Validation | ErrorType::Parse => StatusCode::BAD_REQUEST,
            ErrorType::NotFound => StatusCode::NOT_FOUND,
            ErrorType::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorType::Forbidden => StatusCode::FORBIDDEN,
            ErrorType::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorType::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorType::Canceled => CLIENT_CLOSED_REQUEST,
            ErrorType::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::BackendProtocol => StatusCode::BAD_GATEWAY,
            ErrorType::ToolError => StatusCode::OK,
            ErrorType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON-RPC error code a gateway-made error of this type carries; `None` for tool errors,
    /// which are successful JSON-RPC responses with `result.isError`.
    pub const fn jsonrpc_code(self) -> Option<i32> {
        Some(match self {
            ErrorType::Validation => code::INVALID_REQUEST,
            ErrorType::Parse => code::PARSE_ERROR,
            ErrorType::NotFound => code::METHOD_NOT_FOUND,
            ErrorType::Unauthorized => code::UNAUTHORIZED,
            ErrorType::Forbidden => code::FORBIDDEN,
            ErrorType::RateLimited => code::RATE_LIMITED,
            ErrorType::Timeout => code::TIMEOUT,
            ErrorType::Canceled => code::CANCELED,
            ErrorType::Unavailable => code::UNAVAILABLE,
            ErrorType::BackendProtocol => code::BACKEND_PROTOCOL,
            ErrorType::ToolError => return None,
            ErrorType::Internal => code::INTERNAL_ERROR,
        })
    }
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status nginx made common for a client that closed the connection first.
pub const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => unreachable!(),
};

/// JSON-RPC error codes: the standard ones and the gateway's own (fixed; see `docs/ERRORS.md`).
pub mod code {
    /// Invalid JSON.
    pub const PARSE_ERROR: i32 = -32700;
    /// Not a valid JSON-RPC request.
    pub const INVALID_REQUEST: i32 = -32600;
    /// Unknown method.
    pub const METHOD_NOT_FOUND: i32 = -32601;
    /// Invalid parameters, unknown tool included.
    pub const INVALID_PARAMS: i32 = -32602;
    /// Internal error.
    pub const INTERNAL_ERROR: i32 = -32603;
    /// Missing or wrong credentials.
    pub const UNAUTHORIZED: i32 = -32001;
    /// MCP's "resource not found".
    pub const RESOURCE_NOT_FOUND: i32 = -32002;
    /// Credentials not allowed to do this.
    pub const FORBIDDEN: i32 = -32003;
    /// No answer in time.
    pub const TIMEOUT: i32 = -32008;
    /// Backend unreachable or request shed.
    pub const UNAVAILABLE: i32 = -32010;
    /// Backend answered with invalid MCP.
    pub const BACKEND_PROTOCOL: i32 = -32011;
    /// Too many requests.
    pub const RATE_LIMITED: i32 = -32029;
    /// Request cancelled.
    pub const CANCELED: i32 = -32800;
}

/// How much attention a failure deserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// Expected in normal operation (bad input, tool errors).
    Low,
    /// Worth a look when frequent.
    Medium,
    /// Service is degraded.
    High,
    /// Something is broken in the gateway itself.
    Critical,
}

impl Severity {
    /// The label value used in metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// Where a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    /// The client's request itself (bad input, went away).
    Client,
    /// Authentication and authorization.
    Auth,
    /// Connection, in-flight and rate limits.
    Limiter,
    /// Routing a request to a backend (unknown tool, unknown namespace).
    Router,
    /// The gateway's own machinery.
    Gateway,
    /// The connection to a backend (connect, read, write, process).
    Transport,
    /// The backend's own answer.
    Backend,
}

impl Component {
    /// The label value used in metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Component::Client => "client",
            Component::Auth => "auth",
            Component::Limiter => "limiter",
            Component::Router => "router",
            Component::Gateway => "gateway",
            Component::Transport => "transport",
            Component::Backend => "backend",
        }
    }
}

/// The verdict on one failed request: read by metrics, retry, logs and the error edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorClass {
    /// What kind of failure.
    pub error_type: ErrorType,
    /// How bad.
    pub severity: Severity,
    /// Where it happened.
    pub component: Component,
    /// Whether trying again may succeed.
    pub retryable: bool,
    /// The HTTP status the failure maps to.
    pub http_status: StatusCode,
    /// The JSON-RPC error code, `None` for tool errors.
    pub jsonrpc_code: Option<i32>,
    /// How long the caller asked us to wait before trying again.
    pub retry_after: Option<Duration>,
    /// `false` when the request provably never reached the backend, so a retry cannot repeat a side effect.
    pub reached_backend: bool,
}

impl ErrorClass {
    /// The class the contract gives `error_type` when raised by `component`.
    pub const fn new(error_type: ErrorType, component: Component) -> Self {
        ErrorClass {
            error_type,
            severity: error_type.severity(),
            component,
            retryable: matches!(
                error_type,
                ErrorType::RateLimited | ErrorType::Timeout | ErrorType::Unavailable
            ),
            http_status: error_type.http_status(),
            jsonrpc_code: error_type.jsonrpc_code(),
            retry_after: None,
            reached_backend: matches!(component, Component::Transport | Component::Backend),
        }
    }

    /// The same class with another JSON-RPC code (for example -32602 for an unknown tool).
    pub const fn with_jsonrpc_code(mut self, code: i32) -> Self {
        self.jsonrpc_code = Some(code);
        self
    }

    /// The same class, noting that the request never left for the backend.
    pub const fn not_sent(mut self) -> Self {
        self.reached_backend = false;
        self
    }

    /// The same class with a `Retry-After` delay.
    pub const fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// Classifies an HTTP status; `None` for statuses that are not failures.
    pub fn from_http_status(status: StatusCode, component: Component) -> Option<Self> {
        let error_type = match status.as_u16() {
            100..=399 => return None,
            400 | 405 | 406 | 411 | 413 | 414 | 415 | 422 => ErrorType::Validation,
            401 => ErrorType::Unauthorized,
            403 => ErrorType::Forbidden,
            404 | 410 | 501 => ErrorType::NotFound,
            408 | 504 => ErrorType::Timeout,
            429 => ErrorType::RateLimited,
            499 => ErrorType::Canceled,
            502 => ErrorType::BackendProtocol,
            503 => ErrorType::Unavailable,
            400..=499 => ErrorType::Validation,
            _ => ErrorType::Internal,
        };
        let mut class = ErrorClass::new(error_type, component);
        class.http_status = status;
        Some(class)
    }

    /// Classifies the `code` of a JSON-RPC error object.
    pub fn from_jsonrpc_code(jsonrpc_code: i64, component: Component) -> Self {
        let error_type = match jsonrpc_code {
            -32700 => ErrorType::Parse,
            -32600 | -32602 => ErrorType::Validation,
            -32601 | -32002 => ErrorType::NotFound,
            -32001 => ErrorType::Unauthorized,
            -32003 => ErrorType::Forbidden,
            -32008 => ErrorType::Timeout,
            -32010 => ErrorType::Unavailable,
            -32011 => ErrorType::BackendProtocol,
            -32029 => ErrorType::RateLimited,
            -32800 => ErrorType::Canceled,
            _ => ErrorType::Internal,
        };
        let mut class = ErrorClass::new(error_type, component);
        class.jsonrpc_code = i32::try_from(jsonrpc_code).ok();
        class
    }

    /// The class of a tool that ran and reported failure.
    pub const fn tool_error() -> Self {
        ErrorClass::new(ErrorType::ToolError, Component::Backend)
    }
}

/// Whether a finished request succeeded, and if not, how it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The request succeeded.
    Success,
    /// The request failed.
    Failure(ErrorClass),
}

impl Verdict {
    /// The verdict on a request whose client went away before its response ended.
    pub const fn canceled() -> Self {
        Verdict::Failure(ErrorClass::new(ErrorType::Canceled, Component::Client))
    }

    /// The value of the `status` label: `ok`, or the error type.
    pub const fn status_label(&self) -> &'static str {
        match self {
            Verdict::Success => "ok",
            Verdict::Failure(class) => class.error_type.as_str(),
        }
    }

    /// The failure's class, if any.
    pub const fn failure(&self) -> Option<&ErrorClass> {
        match self {
            Verdict::Success => None,
            Verdict::Failure(class) => Some(class),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_table_holds() {
        let table = [
            (ErrorType::Validation, "low", false, 400, Some(-32600)),
            (ErrorType::Parse, "low", false, 400, Some(-32700)),
            (ErrorType::NotFound, "low", false, 404, Some(-32601)),
            (ErrorType::Unauthorized, "medium", false, 401, Some(-32001)),
            (ErrorType::Forbidden, "medium", false, 403, Some(-32003)),
            (ErrorType::RateLimited, "low", true, 429, Some(-32029)),
            (ErrorType::Timeout, "medium", true, 504, Some(-32008)),
            (ErrorType::Canceled, "low", false, 499, Some(-32800)),
            (ErrorType::Unavailable, "high", true, 503, Some(-32010)),
            (ErrorType::BackendProtocol, "high", false, 502, Some(-32011)),
            (ErrorType::ToolError, "low", false, 200, None),
            (ErrorType::Internal, "critical", false, 500, Some(-32603)),
        ];
        for (error_type, severity, retryable, status, code) in table {
            let class = ErrorClass::new(error_type, Component::Gateway);
            assert_eq!(class.severity.as_str(), severity, "{error_type}");
            assert_eq!(class.retryable, retryable, "{error_type}");
            assert_eq!(class.http_status.as_u16(), status, "{error_type}");
            assert_eq!(class.jsonrpc_code, code, "{error_type}");
        }
    }

    #[test]
    fn gateway_codes_round_trip_through_the_jsonrpc_classifier() {
        for error_type in ErrorType::ALL {
            if let Some(code) = error_type.jsonrpc_code() {
                let back = ErrorClass::from_jsonrpc_code(code.into(), Component::Backend);
                assert_eq!(back.error_type, error_type);
            }
        }
    }

    #[test]
    fn http_statuses_classify() {
        let cases = [
            (200, None),
            (302, None),
            (400, Some(ErrorType::Validation)),
            (401, Some(ErrorType::Unauthorized)),
            (403, Some(ErrorType::Forbidden)),
            (404, Some(ErrorType::NotFound)),
            (418, Some(ErrorType::Validation)),
            (429, Some(ErrorType::RateLimited)),
            (500, Some(ErrorType::Internal)),
            (502, Some(ErrorType::BackendProtocol)),
            (503, Some(ErrorType::Unavailable)),
            (504, Some(ErrorType::Timeout)),
        ];
        for (status, expected) in cases {
            let status = StatusCode::from_u16(status).unwrap();
            let got =
                ErrorClass::from_http_status(status, Component::Backend).map(|c| c.error_type);
            assert_eq!(got, expected, "{status}");
        }
    }
}
