//! Configuration: one YAML file, validated strictly at start. Unknown keys and invalid values are
//! rejected with a message that names the key. Secrets come from `${ENV}` references in `env`
//! and `headers` values, never from the file itself. `docs/CONFIG.md` documents every key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where clients connect: `/mcp`, `/sse`, `/ws`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where Prometheus scrapes `/metrics`.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Origins allowed besides loopback ones (`http://localhost:*`, `http://127.0.0.1:*`, `http://[::1]:*`).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Pass the client's `Authorization` header on to HTTP backends. Off: credentials stay at the gateway.
    #[serde(default)]
    pub forward_credentials: bool,
    /// Connection, in-flight and body limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Client session settings.
    #[serde(default)]
    pub sessions: SessionsConfig,
    /// WebSocket settings.
    #[serde(default)]
    pub websocket: WebSocketConfig,
    /// Joins a namespace and a tool name: `{namespace}{separator}{tool}`.
    #[serde(default = "default_separator")]
    pub tool_name_separator: String,
    /// The backends, each under its own namespace.
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// An `mcpServers` JSON file (as MCP clients use) whose servers are added as stdio backends.
    #[serde(default)]
    pub import_mcp_servers: Option<PathBuf>,
    /// Tracing: sampling and OTLP export.
    #[serde(default)]
    pub tracing: TracingConfig,
}

/// Tracing settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The share of new traces (requests without a sampled caller context) that are sampled.
    #[serde(default = "default_sampling_ratio")]
    pub sampling_ratio: f64,
    /// Where sampled spans are exported; none: spans only feed the logs.
    #[serde(default)]
    pub otlp: Option<OtlpConfig>,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            sampling_ratio: default_sampling_ratio(),
            otlp: None,
        }
    }
}

/// An OTLP collector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// `http://host:4318` for HTTP/protobuf (spans go to `/v1/traces`), `http://host:4317` for gRPC.
    pub endpoint: String,
    /// `http_protobuf` or `grpc`.
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Headers sent with every export (for example an API key); values may be `${VAR}` references.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The OTLP wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtlpProtocol {
    /// Protobuf over HTTP/1.1 POST.
    #[default]
    HttpProtobuf,
    /// gRPC over HTTP/2 without TLS.
    Grpc,
}

fn default_sampling_ratio() -> f64 {
    1.0
}

/// Metrics listener settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the metrics listener.
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: default_metrics_listen(),
        }
    }
}

/// Limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open client connections in all.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Open client connections from one IP.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Client requests handled at once; more are refused with 503 / -32010.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Largest accepted message, in bytes (HTTP bodies, WebSocket messages, stdio lines).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// A connection waiting for a request (new, or idle after an answer) must deliver it whole
    /// within this many seconds, else it is closed (408 first when part of it arrived).
    #[serde(default = "default_request_read_timeout_secs")]
    pub request_read_timeout_secs: u64,
}

impl LimitsConfig {
    /// [`request_read_timeout_secs`](Self::request_read_timeout_secs) as a duration.
    pub fn request_read_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.request_read_timeout_secs)
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_connections_per_ip(),
            max_in_flight: default_max_in_flight(),
            max_message_bytes: default_max_message_bytes(),
            request_read_timeout_secs: default_request_read_timeout_secs(),
        }
    }
}

/// Client sessions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// A Streamable HTTP session unused this long expires (404 afterwards).
    #[serde(default = "default_session_idle_secs")]
    pub idle_timeout_secs: u64,
    /// Events kept per session for `Last-Event-ID` resumption.
    #[serde(default = "default_replay_events")]
    pub replay_events: usize,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            idle_timeout_secs: default_session_idle_secs(),
            replay_events: default_replay_events(),
        }
    }
}

/// WebSocket frontend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Seconds between pings.
    #[serde(default = "default_ws_ping_secs")]
    pub ping_interval_secs: u64,
    /// A connection with no frame from the client this long is closed.
    #[serde(default = "default_ws_idle_secs")]
    pub idle_timeout_secs: u64,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            ping_interval_secs: default_ws_ping_secs(),
            idle_timeout_secs: default_ws_idle_secs(),
        }
    }
}

/// How the gateway reaches a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendTransport {
    /// A child process speaking newline-delimited JSON-RPC.
    Stdio,
    /// MCP Streamable HTTP.
    StreamableHttp,
    /// The legacy HTTP+SSE transport.
    Sse,
    /// WebSocket, subprotocol `mcp`.
    Websocket,
}

impl BackendTransport {
    /// The `backend_type` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendTransport::Stdio => "stdio",
            BackendTransport::StreamableHttp => "streamable_http",
            BackendTransport::Sse => "sse",
            BackendTransport::Websocket => "websocket",
        }
    }
}

/// One backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// The namespace its tools, prompts and resources appear under.
    pub namespace: String,
    /// The transport.
    pub transport: BackendTransport,
    /// stdio: the program.
    #[serde(default)]
    pub command: Option<String>,
    /// stdio: its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// stdio: environment variables added for it; values may be `${VAR}` references.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// stdio: its working directory.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// stdio: one process shared by all sessions instead of one per session.
    #[serde(default)]
    pub shared: bool,
    /// Network transports: the URL (`http://…/mcp`, `http://…/sse`, `ws://…`).
    #[serde(default)]
    pub url: Option<String>,
    /// Network transports: headers sent on every request; values may be `${VAR}` references.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Seconds a request may wait for its answer.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Restart and reconnect policy.
    #[serde(default)]
    pub restart: RestartConfig,
}

impl BackendConfig {
    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// Supervision of a stdio process, reconnection of a network backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartConfig {
    /// The first delay before a restart; doubles each time, with jitter.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// The longest delay.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// More restarts than this within `window_secs` mark the backend down (crash loop).
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// The crash-loop window.
    #[serde(default = "default_restart_window_secs")]
    pub window_secs: u64,
    /// On stop: seconds between closing stdin and SIGTERM, and between SIGTERM and SIGKILL.
    #[serde(default = "default_grace_secs")]
    pub grace_secs: u64,
}

impl Default for RestartConfig {
    fn default() -> Self {
        RestartConfig {
            backoff_initial_ms: default_backoff_initial_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            max_restarts: default_max_restarts(),
            window_secs: default_restart_window_secs(),
            grace_secs: default_grace_secs(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}
fn default_separator() -> String {
    "__".to_owned()
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_connections_per_ip() -> usize {
    1_000
}
fn default_max_in_flight() -> usize {
    4_096
}
fn default_max_message_bytes() -> usize {
    4 << 20
}
/// A deadline this far ahead still fits the clock's arithmetic.
const MAX_REQUEST_READ_TIMEOUT_SECS: u64 = 86_400;
fn default_request_read_timeout_secs() -> u64 {
    30
}
fn default_session_idle_secs() -> u64 {
    1_800
}
fn default_replay_events() -> usize {
    256
}
fn default_ws_ping_secs() -> u64 {
    30
}
fn default_ws_idle_secs() -> u64 {
    300
}
fn default_timeout_secs() -> u64 {
    60
}
fn default_backoff_initial_ms() -> u64 {
    200
}
fn default_backoff_max_ms() -> u64 {
    30_000
}
fn default_max_restarts() -> u32 {
    5
}
fn default_restart_window_secs() -> u64 {
    60
}
fn default_grace_secs() -> u64 {
    2
}

/// Why a configuration was refused.
#[derive(Debug)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// The `mcpServers` JSON that MCP clients use.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct McpServersFile {
    mcp_servers: BTreeMap<String, McpServerEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct McpServerEntry {
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

impl Config {
    /// The built-in default: loopback listeners and the demo server (this binary, `demo-server
    /// stdio`) as a stdio backend under the namespace `demo`.
    pub fn builtin(self_exe: &Path) -> Config {
        let mut config = Config::from_yaml("{}").expect("the empty config is valid");
        config.backends.push(BackendConfig {
            namespace: "demo".to_owned(),
            transport: BackendTransport::Stdio,
            command: Some(self_exe.display().to_string()),
            args: vec!["demo-server".to_owned(), "stdio".to_owned()],
            env: BTreeMap::new(),
            cwd: None,
            shared: false,
            url: None,
            headers: BTreeMap::new(),
            timeout_secs: default_timeout_secs(),
            restart: RestartConfig::default(),
        });
        config
    }

    /// Parses and validates YAML text.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = serde_yaml::from_str(text)
            .map_err(|e| invalid(format!("invalid configuration: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, imports `mcpServers` if asked, resolves `${ENV}` references and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        let mut config =
            Config::from_yaml(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        if let Some(import) = config.import_mcp_servers.clone() {
            let import = path
                .parent()
                .map_or(import.clone(), |dir| dir.join(&import));
            config.backends.extend(import_mcp_servers(&import)?);
        }
        config.resolve_env(&|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Replaces `${VAR}` in `env` and `headers` values; a missing variable is an error naming it.
    pub fn resolve_env(
        &mut self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(otlp) = &mut self.tracing.otlp {
            for (key, value) in otlp.headers.iter_mut() {
                *value = expand(value, lookup).map_err(|var| {
                    invalid(format!(
                        "tracing.otlp.headers.{key}: environment variable {var} is not set"
                    ))
                })?;
            }
        }
        for (i, backend) in self.backends.iter_mut().enumerate() {
            for (section, map) in [("env", &mut backend.env), ("headers", &mut backend.headers)] {
                for (key, value) in map.iter_mut() {
                    *value = expand(value, lookup).map_err(|var| {
                        invalid(format!(
                            "backends[{i}].{section}.{key}: environment variable {var} is not set"
                        ))
                    })?;
                }
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.tracing.sampling_ratio) {
            return Err(invalid("tracing.sampling_ratio: must be between 0 and 1"));
        }
        if let Some(otlp) = &self.tracing.otlp {
            if !otlp.endpoint.starts_with("http://") || otlp.endpoint.parse::<http::Uri>().is_err()
            {
                return Err(invalid(format!(
                    "tracing.otlp.endpoint: {:?} is not an http:// URL (put TLS in front of the collector)",
                    otlp.endpoint
                )));
            }
        }
        if self.tool_name_separator.is_empty() {
            return Err(invalid("tool_name_separator: must not be empty"));
        }
        if self.limits.max_connections == 0
            || self.limits.max_connections_per_ip == 0
            || self.limits.max_in_flight == 0
            || self.limits.request_read_timeout_secs == 0
        {
            return Err(invalid("limits: every limit must be at least 1"));
        }
        if self.limits.request_read_timeout_secs > MAX_REQUEST_READ_TIMEOUT_SECS {
            return Err(invalid(format!(
                "limits.request_read_timeout_secs: at most {MAX_REQUEST_READ_TIMEOUT_SECS} (a day)"
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, b) in self.backends.iter().enumerate() {
            let at = format!("backends[{i}]");
            let valid_ns = !b.namespace.is_empty()
                && b.namespace.len() <= 32
                && b.namespace
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid_ns {
                return Err(invalid(format!(
                    "{at}.namespace: {:?} must be 1-32 characters of A-Z, a-z, 0-9, '-', '_'",
                    b.namespace
                )));
            }
            if b.namespace.contains(&self.tool_name_separator) {
                return Err(invalid(format!(
                    "{at}.namespace: must not contain the separator {:?}",
                    self.tool_name_separator
                )));
            }
            if !seen.insert(b.namespace.as_str()) {
                return Err(invalid(format!(
                    "{at}.namespace: {:?} is used twice",
                    b.namespace
                )));
            }
            if b.timeout_secs == 0 {
                return Err(invalid(format!("{at}.timeout_secs: must be at least 1")));
            }
            match b.transport {
                BackendTransport::Stdio => {
                    if b.command.as_deref().is_none_or(str::is_empty) {
                        return Err(invalid(format!(
                            "{at}.command: required for transport stdio"
                        )));
                    }
                    if b.url.is_some() || !b.headers.is_empty() {
                        return Err(invalid(format!(
                            "{at}: url and headers are for network transports, not stdio"
                        )));
                    }
                }
                transport => {
                    let Some(url) = b.url.as_deref() else {
                        return Err(invalid(format!(
                            "{at}.url: required for transport {}",
                            transport.as_str()
                        )));
                    };
                    let scheme_ok = match transport {
                        BackendTransport::Websocket => url.starts_with("ws://"),
                        _ => url.starts_with("http://"),
                    };
                    if !scheme_ok || url.parse::<http::Uri>().is_err() {
                        return Err(invalid(format!(
                            "{at}.url: {url:?} is not a valid {} URL (https and wss are not supported: put TLS in front)",
                            if transport == BackendTransport::Websocket {
                                "ws://"
                            } else {
                                "http://"
                            }
                        )));
                    }
                    if b.command.is_some()
                        || !b.args.is_empty()
                        || !b.env.is_empty()
                        || b.cwd.is_some()
                        || b.shared
                    {
                        return Err(invalid(format!(
                            "{at}: command, args, env, cwd and shared are for stdio only"
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Expands `${VAR}` references; returns the missing variable's name on failure.
fn expand(value: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        out.push_str(&lookup(name).ok_or_else(|| name.to_owned())?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Reads an `mcpServers` file: each entry becomes a backend whose namespace is its key.
pub fn import_mcp_servers(path: &Path) -> Result<Vec<BackendConfig>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("import_mcp_servers: {}: {e}", path.display())))?;
    let file: McpServersFile = serde_json::from_str(&text)
        .map_err(|e| invalid(format!("import_mcp_servers: {}: {e}", path.display())))?;
    file.mcp_servers
        .into_iter()
        .map(|(name, entry)| {
            let transport = match (entry.kind.as_deref(), &entry.command, &entry.url) {
                (None | Some("stdio"), Some(_), None) => BackendTransport::Stdio,
                (Some("sse"), None, Some(_)) => BackendTransport::Sse,
                (None | Some("http") | Some("streamable-http") | Some("streamableHttp"), None, Some(_)) => {
                    BackendTransport::StreamableHttp
                }
                (Some("ws") | Some("websocket"), None, Some(_)) => BackendTransport::Websocket,
                _ => {
                    return Err(invalid(format!(
                        "import_mcp_servers: mcpServers.{name}: needs either command (stdio) or url (with type http, sse or ws)"
                    )));
                }
            };
            Ok(BackendConfig {
                namespace: name,
                transport,
                command: entry.command,
                args: entry.args,
                env: entry.env,
                cwd: None,
                shared: false,
                url: entry.url,
                headers: entry.headers,
                timeout_secs: default_timeout_secs(),
                restart: RestartConfig::default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = Config::from_yaml("listen: 127.0.0.1:1\nlisten_port: 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `listen_port`"), "{err}");
        let err =
            Config::from_yaml("backends:\n  - namespace: a\n    transport: stdio\n    comand: x\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("comand"), "{err}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let cases = [
            (
                "backends:\n  - namespace: a\n    transport: stdio\n",
                "backends[0].command",
            ),
            (
                "backends:\n  - namespace: 'a b'\n    transport: stdio\n    command: x\n",
                "backends[0].namespace",
            ),
            (
                "backends:\n  - namespace: a\n    transport: sse\n",
                "backends[0].url",
            ),
            (
                "backends:\n  - namespace: a\n    transport: websocket\n    url: http://x/\n",
                "backends[0].url",
            ),
            (
                "backends:\n  - {namespace: a, transport: stdio, command: x}\n  - {namespace: a, transport: stdio, command: y}\n",
                "backends[1].namespace",
            ),
            (
                "backends:\n  - namespace: a\n    transport: carrier_pigeon\n",
                "transport",
            ),
            ("limits:\n  max_in_flight: 0\n", "limits"),
            ("limits:\n  request_read_timeout_secs: 0\n", "limits"),
            (
                "limits:\n  request_read_timeout_secs: 86401\n",
                "limits.request_read_timeout_secs",
            ),
            ("listen: nowhere\n", "listen"),
        ];
        for (yaml, key) in cases {
            let err = Config::from_yaml(yaml).unwrap_err().to_string();
            assert!(err.contains(key), "{yaml:?} → {err}");
        }
    }

    #[test]
    fn env_references_resolve_or_name_the_missing_variable() {
        let mut config = Config::from_yaml(
            "backends:\n  - namespace: a\n    transport: streamable_http\n    url: http://127.0.0.1:1/mcp\n    headers:\n      Authorization: Bearer ${TOKEN}\n",
        )
        .unwrap();
        let mut missing = config.clone();
        config
            .resolve_env(&|name| (name == "TOKEN").then(|| "s3cret".to_owned()))
            .unwrap();
        assert_eq!(config.backends[0].headers["Authorization"], "Bearer s3cret");
        let err = missing.resolve_env(&|_| None).unwrap_err().to_string();
        assert!(
            err.contains("backends[0].headers.Authorization") && err.contains("TOKEN"),
            "{err}"
        );
    }

    #[test]
    fn mcp_servers_json_imports_as_backends() {
        let dir = std::env::temp_dir().join(format!("mcp-gateway-import-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("clients.json"),
            r#"{"mcpServers": {
                "files": {"command": "npx", "args": ["-y", "server-files", "/tmp"], "env": {"TOKEN": "${FILES_TOKEN}"}},
                "remote": {"type": "http", "url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": "Bearer x"}},
                "old": {"type": "sse", "url": "http://127.0.0.1:9/sse"}
            }}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("gateway.yaml"),
            "import_mcp_servers: clients.json\n",
        )
        .unwrap();
        // SAFETY: this test is the only one that reads FILES_TOKEN.
        unsafe { std::env::set_var("FILES_TOKEN", "t0k") };
        let config = Config::load(&dir.join("gateway.yaml")).unwrap();
        let by_name: BTreeMap<_, _> = config
            .backends
            .iter()
            .map(|b| (b.namespace.as_str(), b))
            .collect();
        assert_eq!(by_name["files"].transport, BackendTransport::Stdio);
        assert_eq!(by_name["files"].args, ["-y", "server-files", "/tmp"]);
        assert_eq!(by_name["files"].env["TOKEN"], "t0k");
        assert_eq!(
            by_name["remote"].transport,
            BackendTransport::StreamableHttp
        );
        assert_eq!(by_name["old"].transport, BackendTransport::Sse);
        std::fs::write(
            dir.join("bad.json"),
            r#"{"mcpServers": {"x": {"url": "ftp://nope", "type": "gopher"}}}"#,
        )
        .unwrap();
        std::fs::write(dir.join("bad.yaml"), "import_mcp_servers: bad.json\n").unwrap();
        let err = Config::load(&dir.join("bad.yaml")).unwrap_err().to_string();
        assert!(err.contains("mcpServers.x"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn defaults_bind_loopback() {
        let config = Config::from_yaml("{}").unwrap();
        assert!(config.listen.ip().is_loopback() && config.metrics.listen.ip().is_loopback());
        assert!(!config.forward_credentials);
    }
}
