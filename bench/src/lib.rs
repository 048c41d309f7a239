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
