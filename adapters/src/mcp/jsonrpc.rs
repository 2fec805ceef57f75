//! JSON-RPC 2.0 messages as MCP uses them: requests, notifications and responses, one per
//! message (JSON-RPC batches were dropped from MCP in revision 2025-06-18, and the gateway
//! refuses them with a clear error). Ids are kept as the JSON the sender wrote (a number or a
//! string) and echoed unchanged.

use serde_json::{Map, Value, json};

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON, but not a JSON-RPC message.
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// The gateway's own refusals (the implementation-defined server-error range): the caller may
/// not use this tool or server (the 403 of JSON-RPC).
pub const FORBIDDEN: i64 = -32003;
/// A guardrail blocked the tool's arguments or its result.
pub const GUARDRAIL_VIOLATION: i64 = -32004;
/// The upstream MCP server did not answer, or answered with something that is not MCP.
pub const UPSTREAM_ERROR: i64 = -32005;
/// Too many tool calls: a rate limit refused this one.
pub const RATE_LIMITED: i64 = -32029;

/// An error object: what a refusal sends back.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError { code, message: message.into(), data: None }
    }

    pub fn with_data(mut self, data: Value) -> RpcError {
        self.data = Some(data);
        self
    }

    fn to_value(&self) -> Value {
        let mut e = Map::new();
        e.insert("code".into(), self.code.into());
        e.insert("message".into(), self.message.clone().into());
        if let Some(d) = &self.data {
            e.insert("data".into(), d.clone());
        }
        Value::Object(e)
    }
}

/// One message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request { id: Value, method: String, params: Option<Value> },
    Notification { method: String, params: Option<Value> },
    Response { id: Value, outcome: Result<Value, Value> },
}

impl Message {
    /// The method of a request or notification.
    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request { method, .. } | Message::Notification { method, .. } => Some(method),
            Message::Response { .. } => None,
        }
    }
}

/// Reads one message from a body. A batch (an array) is refused.
pub fn parse(body: &[u8]) -> Result<Message, RpcError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| RpcError::new(PARSE_ERROR, format!("the body is not valid JSON: {e}")))?;
    from_value(v)
}

/// Reads one message from parsed JSON.
pub fn from_value(v: Value) -> Result<Message, RpcError> {
    let Value::Object(mut o) = v else {
        let why = if v.is_array() {
            "JSON-RPC batches are not part of MCP since revision 2025-06-18; send one message per request"
        } else {
            "a JSON-RPC message is a JSON object"
        };
        return Err(RpcError::new(INVALID_REQUEST, why));
    };
    if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(RpcError::new(INVALID_REQUEST, "`jsonrpc` must be \"2.0\""));
    }
    let id = o.remove("id");
    if let Some(id) = &id
        && !(id.is_string() || id.is_i64() || id.is_u64())
    {
        return Err(RpcError::new(INVALID_REQUEST, "`id` must be a string or an integer"));
    }
    match (o.remove("method"), id) {
        (Some(Value::String(method)), Some(id)) => Ok(Message::Request { id, method, params: o.remove("params") }),
        (Some(Value::String(method)), None) => Ok(Message::Notification { method, params: o.remove("params") }),
        (Some(_), _) => Err(RpcError::new(INVALID_REQUEST, "`method` must be a string")),
        (None, Some(id)) => match (o.remove("result"), o.remove("error")) {
            (Some(r), None) => Ok(Message::Response { id, outcome: Ok(r) }),
            (None, Some(e)) => Ok(Message::Response { id, outcome: Err(e) }),
            _ => Err(RpcError::new(INVALID_REQUEST, "a response holds exactly one of `result` and `error`")),
        },
        (None, None) => Err(RpcError::new(INVALID_REQUEST, "neither a request (no `method`) nor a response (no `id`)")),
    }
}

/// A response carrying `result`.
pub fn result(id: &Value, result: Value) -> Vec<u8> {
    to_bytes(&json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

/// A response carrying `err`; `id` is null when the request's id could not be read.
pub fn error(id: Option<&Value>, err: &RpcError) -> Vec<u8> {
    to_bytes(&json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": err.to_value()}))
}

/// A response carrying an upstream's error object as it came.
pub fn error_value(id: &Value, err: Value) -> Vec<u8> {
    to_bytes(&json!({"jsonrpc": "2.0", "id": id, "error": err}))
}

/// A request or notification, serialised from borrowed parts (no copy of `params`).
#[derive(serde::Serialize)]
struct Outgoing<'a> {
    jsonrpc: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<&'a Value>,
}

/// A request.
pub fn request(id: &Value, method: &str, params: Option<&Value>) -> Vec<u8> {
    serde_json::to_vec(&Outgoing { jsonrpc: "2.0", id: Some(id), method, params }).unwrap_or_default()
}

/// A notification.
pub fn notification(method: &str, params: Option<&Value>) -> Vec<u8> {
    serde_json::to_vec(&Outgoing { jsonrpc: "2.0", id: None, method, params }).unwrap_or_default()
}

fn to_bytes(v: &Value) -> Vec<u8> {
    // Serialising a `Value` cannot fail (its keys are strings).
    serde_json::to_vec(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_each_kind_of_message() {
        let m = parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"cursor":"a"}}"#).unwrap();
        assert_eq!(
            m,
            Message::Request { id: json!(7), method: "tools/list".into(), params: Some(json!({"cursor":"a"})) }
        );
        let m = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(m.method(), Some("notifications/initialized"));
        let m = parse(br#"{"jsonrpc":"2.0","id":"x","result":{}}"#).unwrap();
        assert_eq!(m, Message::Response { id: json!("x"), outcome: Ok(json!({})) });
        let m = parse(br#"{"jsonrpc":"2.0","id":"x","error":{"code":1,"message":"m"}}"#).unwrap();
        assert!(matches!(m, Message::Response { outcome: Err(_), .. }));
    }

    #[test]
    fn refuses_what_is_not_one_message() {
        for (body, code) in [
            (&b"{"[..], PARSE_ERROR),
            (br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, INVALID_REQUEST),
            (br#"{"id":1,"method":"ping"}"#, INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#, INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":1,"method":3}"#, INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":1}"#, INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0"}"#, INVALID_REQUEST),
            (b"42", INVALID_REQUEST),
        ] {
            assert_eq!(parse(body).unwrap_err().code, code, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn writes_responses_that_read_back() {
        let r = result(&json!("a"), json!({"ok": true}));
        assert_eq!(parse(&r).unwrap(), Message::Response { id: json!("a"), outcome: Ok(json!({"ok": true})) });
        let e = error(None, &RpcError::new(FORBIDDEN, "no").with_data(json!({"rule": "r"})));
        let v: Value = serde_json::from_slice(&e).unwrap();
        assert_eq!(v["id"], Value::Null);
        assert_eq!(v["error"]["code"], FORBIDDEN);
        assert_eq!(v["error"]["data"]["rule"], "r");
        let q = request(&json!(1), "tools/call", Some(&json!({"name": "t"})));
        assert_eq!(parse(&q).unwrap().method(), Some("tools/call"));
        assert_eq!(
            parse(&notification("notifications/initialized", None)).unwrap().method(),
            Some("notifications/initialized")
        );
    }
}
