//! The load harness: `mcp-echo` (a backend fast enough that the gateway, not the backend, is
//! measured), `mcp-load` (real MCP sessions, verified answers, HDR latency percentiles) and
//! `mcp-bench` (each scenario direct and through the gateway, interleaved, with the ratio).

use bytes::Bytes;
use mcp_gateway_layers::jsonrpc::{Kind, McpMethod, Message};
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct Call<'a> {
    #[serde(borrow)]
    params: Params<'a>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow)]
    arguments: Arguments<'a>,
}

#[derive(Deserialize)]
struct Arguments<'a> {
    #[serde(borrow)]
    message: &'a RawValue,
}

/// The echo server's answer to one message; `None` for notifications and responses.
pub fn echo_answer(raw: Bytes) -> Option<Bytes> {
    let msg = Message::parse(raw).ok()?;
    if msg.kind() != Kind::Request {
        return None;
    }
    let id = msg.id_raw().unwrap_or("null");
    let result = match msg.method() {
        McpMethod::Initialize => format!(
            r#"{{"protocolVersion":"2025-06-18","capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"mcp-echo","version":"{}"}}}}"#,
            env!("CARGO_PKG_VERSION")
        ),
        McpMethod::ToolsList => r#"{"tools":[{"name":"echo","inputSchema":{"type":"object","properties":{"message":{"type":"string"}}}}]}"#.to_owned(),
        McpMethod::ToolsCall => match serde_json::from_slice::<Call<'_>>(msg.raw()) {
            Ok(call) => format!(r#"{{"content":[{{"type":"text","text":{}}}]}}"#, call.params.arguments.message.get()),
            Err(_) => return Some(Bytes::from(format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32602,"message":"echo takes a message"}}}}"#))),
        },
        _ => "{}".to_owned(),
    };
    Some(Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_the_message_raw() {
        let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"message":"a\"b"}}}"#;
        let answer = echo_answer(Bytes::from(call)).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(value["id"], 3);
        assert_eq!(value["result"]["content"][0]["text"], "a\"b");
        assert!(
            echo_answer(Bytes::from(
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#
            ))
            .is_none()
        );
    }
}

/// A harness binary's command line: `--name value` flags and `--name` switches, checked against
/// what the binary takes, so that a typo or `--help` never starts a long run with defaults.
#[derive(Debug)]
pub struct Args {
    values: Vec<(String, String)>,
    switches: Vec<String>,
    /// Printed with every refusal.
    usage: &'static str,
}

/// Why a command line was not accepted; `Help` when the usage was asked for.
#[derive(Debug, PartialEq)]
pub enum ArgsError {
    Help,
    Invalid(String),
}

impl Args {
    /// Parses `args` (without the program name); `flags` take a value, `switches` do not.
    ///
    /// ```
    /// use mcp_gateway_bench::{Args, ArgsError};
    ///
    /// let args = |a: &[&str]| {
    ///     Args::parse("usage", a.iter().map(|s| s.to_string()), &["--seconds"], &["--quick"])
    /// };
    /// let ok = args(&["--quick", "--seconds", "2"]).unwrap();
    /// assert!(ok.has("--quick"));
    /// assert_eq!(ok.try_number("--seconds"), Ok(Some(2.0)));
    /// assert_eq!(ok.try_number::<u32>("--rounds"), Ok(None));
    /// assert_eq!(args(&["--help"]).unwrap_err(), ArgsError::Help);
    /// assert!(args(&["--secnds", "2"]).is_err());
    /// assert!(args(&["--seconds"]).is_err());
    /// assert!(args(&["--seconds", "two"]).unwrap().try_number::<f64>("--seconds").is_err());
    /// ```
    pub fn parse(
        usage: &'static str,
        args: impl IntoIterator<Item = String>,
        flags: &[&str],
        switches: &[&str],
    ) -> Result<Args, ArgsError> {
        let mut parsed = Args {
            values: Vec::new(),
            switches: Vec::new(),
            usage,
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--help" || arg == "-h" {
                return Err(ArgsError::Help);
            } else if flags.contains(&arg.as_str()) {
                let value = args
                    .next()
                    .ok_or_else(|| ArgsError::Invalid(format!("{arg} needs a value")))?;
                parsed.values.push((arg, value));
            } else if switches.contains(&arg.as_str()) {
                parsed.switches.push(arg);
            } else {
                return Err(ArgsError::Invalid(format!("unknown argument {arg:?}")));
            }
        }
        Ok(parsed)
    }

    /// [`Args::parse`] of the process's arguments; prints `usage` and exits (0 for `--help`,
    /// 2 with the reason otherwise) when they are not accepted.
    pub fn from_env_or_exit(usage: &'static str, flags: &[&str], switches: &[&str]) -> Args {
        match Args::parse(usage, std::env::args().skip(1), flags, switches) {
            Ok(args) => args,
            Err(ArgsError::Help) => {
                println!("{usage}");
                std::process::exit(0);
            }
            Err(ArgsError::Invalid(why)) => exit_with_usage(usage, &why),
        }
    }

    /// The value of flag `name` (the last one given).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether switch `name` was given.
    pub fn has(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    /// Flag `name` as a number; the error names a value that is not one.
    pub fn try_number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        self.get(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("{name} {v:?} is not a number"))
            })
            .transpose()
    }

    /// [`Args::try_number`], refusing the command line when the value is not a number.
    pub fn number<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        self.try_number(name)
            .unwrap_or_else(|why| self.refuse(&why))
    }

    /// Prints `why` and the usage to stderr and exits with status 2.
    pub fn refuse(&self, why: &str) -> ! {
        exit_with_usage(self.usage, why)
    }
}

fn exit_with_usage(usage: &str, why: &str) -> ! {
    eprintln!("{why}\n{usage}");
    std::process::exit(2);
}
