//! A small MCP server inside the mock (streamable HTTP at `/mcp/{server}`), for the gateway's
//! tests and benchmarks: sessions, paginated `tools/list`, tools that echo, add, leak PII,
//! stream progress, fail, report the credential they were sent, and forget their session.
//!
//! Servers `alpha` and `beta` list different tools; any other name lists alpha's. Server
//! `secured` also wants a bearer token from the mock's OAuth token endpoint
//! (`POST /mcp-oauth/token`, client credentials), and answers 401 without a valid one.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use adapters::mcp::jsonrpc::{self, Message, RpcError};
use engine::http::{Request, Responder};
use engine::rt::{self, Conn};
use serde_json::{Value, json};

/// Sessions of every mock in the process (ids are unique, so mocks never clash).
static SESSIONS: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(|| Mutex::new(HashSet::new()));
static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);
/// Tokens the mock's OAuth endpoint issued, with when each expires.
static TOKENS: LazyLock<Mutex<std::collections::HashMap<String, std::time::Instant>>> =
    LazyLock::new(|| Mutex::new(std::collections::HashMap::new()));
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);
/// Request ids named by `notifications/cancelled`, as JSON text, per session.
static CANCELLED: LazyLock<Mutex<Vec<(String, String)>>> = LazyLock::new(|| Mutex::new(Vec::new()));

/// Codes the authorize endpoint gave out: code → (PKCE challenge, redirect_uri as sent).
static CODES: LazyLock<Mutex<std::collections::HashMap<String, (String, String)>>> =
    LazyLock::new(|| Mutex::new(std::collections::HashMap::new()));
/// Refresh tokens given out.
static REFRESH: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

/// The authorization endpoint, consenting at once: a redirect back to `redirect_uri` with a code
/// bound to the PKCE challenge (S256 only).
pub fn authorize(req: &Request) -> (u16, Option<String>, String) {
    let query = req.head.target().split_once('?').map_or("", |(_, q)| q);
    let field = |name: &str| query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='));
    let (Some(redirect), Some(challenge), Some(state)) =
        (field("redirect_uri"), field("code_challenge"), field("state"))
    else {
        return (400, None, "redirect_uri, code_challenge and state are required".into());
    };
    if field("response_type") != Some("code") || field("code_challenge_method") != Some("S256") {
        return (400, None, "response_type=code with S256 PKCE only".into());
    }
    let code = format!("code-{}", NEXT_TOKEN.fetch_add(1, Relaxed));
    if let Ok(mut c) = CODES.lock() {
        c.insert(code.clone(), (challenge.to_owned(), redirect.to_owned()));
    }
    let target = decode(redirect);
    let sep = if target.contains('?') { '&' } else { '?' };
    (302, Some(format!("{target}{sep}code={code}&state={state}")), String::new())
}

/// `%XX` decoding, enough for the mock's own URLs.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = b.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (c, hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn issue(life: u64, refresh: Option<&str>) -> (u16, String) {
    let token = format!("mcp-token-{}", NEXT_TOKEN.fetch_add(1, Relaxed));
    if let Ok(mut t) = TOKENS.lock() {
        t.insert(token.clone(), std::time::Instant::now() + Duration::from_secs(life));
    }
    let refresh = refresh.map_or(String::new(), |r| format!(r#","refresh_token":"{r}""#));
    (200, format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{life}{refresh}}}"#))
}

/// The token endpoint: the client credentials grant (the secret `wrong` gets `invalid_client`),
/// the authorization code grant with PKCE, and refresh. A client id containing `short` gets
/// tokens that live 2 s.
pub fn token(req: &Request) -> (u16, String) {
    use base64::Engine as _;
    let form = String::from_utf8_lossy(&req.body);
    let field = |name: &str| form.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='));
    let life = if field("client_id").is_some_and(|c| c.contains("short")) { 2 } else { 3600 };
    let invalid_grant =
        || (400, r#"{"error":"invalid_grant","error_description":"bad code, verifier or refresh token"}"#.to_owned());
    match field("grant_type") {
        Some("authorization_code") => {
            let found = field("code").and_then(|c| CODES.lock().ok()?.remove(c));
            let Some((challenge, redirect)) = found else { return invalid_grant() };
            let verifier = field("code_verifier").unwrap_or_default();
            let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
            if computed != challenge || field("redirect_uri") != Some(redirect.as_str()) {
                return invalid_grant();
            }
            let refresh = format!("refresh-{}", NEXT_TOKEN.fetch_add(1, Relaxed));
            if let Ok(mut r) = REFRESH.lock() {
                r.insert(refresh.clone());
            }
            issue(life, Some(&refresh))
        }
        Some("refresh_token") => {
            let known = field("refresh_token").is_some_and(|r| REFRESH.lock().is_ok_and(|set| set.contains(r)));
            if known { issue(life, None) } else { invalid_grant() }
        }
        Some("client_credentials") if field("client_id").is_some_and(|c| !c.is_empty()) => {
            if field("client_secret").is_none_or(|s| s.is_empty() || s == "wrong") {
                return (401, r#"{"error":"invalid_client","error_description":"bad client secret"}"#.into());
            }
            issue(life, None)
        }
        _ => (400, r#"{"error":"invalid_request","error_description":"a grant_type this mock knows"}"#.into()),
    }
}

/// Whether any session cancelled request `id` (its JSON text: `7`, `"a"`).
pub fn was_cancelled(id: &str) -> bool {
    CANCELLED.lock().is_ok_and(|c| c.iter().any(|(_, r)| r == id))
}

fn token_is_valid(req: &Request) -> bool {
    let Some(token) = header(req, "authorization").and_then(|h| h.strip_prefix("Bearer ")) else { return false };
    TOKENS.lock().is_ok_and(|t| t.get(token).is_some_and(|exp| *exp > std::time::Instant::now()))
}

/// Tools listed per page, so that a client must follow `nextCursor`.
const PAGE: usize = 2;

fn tools(server: &str) -> Vec<Value> {
    let tool = |name: &str, description: &str, props: Value| json!({"name": name, "description": description, "inputSchema": {"type": "object", "properties": props}});
    match server {
        "beta" => vec![
            tool("echo", "Echoes `text` (beta's own echo).", json!({"text": {"type": "string"}})),
            tool("time", "Says what time it is (always the same).", json!({})),
        ],
        _ => vec![
            tool("echo", "Echoes `text`.", json!({"text": {"type": "string"}})),
            tool("add", "Adds `a` and `b`.", json!({"a": {"type": "number"}, "b": {"type": "number"}})),
            tool("leak", "Answers with an e-mail address and a phone number.", json!({})),
            tool("slow", "Sends `steps` progress notifications, then answers.", json!({"steps": {"type": "integer"}})),
            tool("whoami", "Answers with the Authorization header it was sent.", json!({})),
            tool("fail", "Always fails with a JSON-RPC error.", json!({})),
            tool("fail_leaky", "Fails with an e-mail address in its error.", json!({})),
            tool("forget_session", "Forgets the session it was called in (the next call gets 404).", json!({})),
            tool("cancelled", "The request ids this session cancelled, comma-separated.", json!({})),
        ],
    }
}

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.head.header(name).and_then(|v| std::str::from_utf8(v).ok())
}

async fn json_reply<C: Conn>(resp: &mut Responder<'_, C>, status: u16, body: &[u8], session: Option<&str>) {
    let mut head = resp.start(status).header("content-type", "application/json");
    if let Some(s) = session {
        head = head.header("mcp-session-id", s);
    }
    let _ = head.body(body).await;
}

fn text(s: &str) -> Value {
    json!({"content": [{"type": "text", "text": s}], "isError": false})
}

/// Serves one request to mock MCP server `server`.
pub async fn serve<C: Conn>(server: &str, req: &Request, resp: &mut Responder<'_, C>) {
    if server == "secured" && !token_is_valid(req) {
        let e = jsonrpc::error(None, &RpcError::new(-32001, "a valid bearer token is required"));
        let _ = resp
            .start(401)
            .header("content-type", "application/json")
            .header("www-authenticate", "Bearer error=\"invalid_token\"")
            .body(&e)
            .await;
        return;
    }
    let session = header(req, "mcp-session-id").map(str::to_owned);
    let known = |s: &str| SESSIONS.lock().is_ok_and(|set| set.contains(s));
    if req.head.method() == "DELETE" {
        let removed = session.as_deref().is_some_and(|s| SESSIONS.lock().is_ok_and(|mut set| set.remove(s)));
        let _ = resp.start(if removed { 204 } else { 404 }).body(b"").await;
        return;
    }
    if req.head.method() != "POST" {
        let _ = resp.start(405).header("allow", "POST, DELETE").body(b"").await;
        return;
    }
    let message = match jsonrpc::parse(&req.body) {
        Ok(m) => m,
        Err(e) => return json_reply(resp, 400, &jsonrpc::error(None, &e), None).await,
    };
    if let Message::Request { id, method, params } = &message
        && method == "initialize"
    {
        let asked = params.as_ref().and_then(|p| p.get("protocolVersion")).and_then(Value::as_str);
        let id_value = format!("mock-{server}-{}", NEXT_SESSION.fetch_add(1, Relaxed));
        if let Ok(mut set) = SESSIONS.lock() {
            set.insert(id_value.clone());
        }
        let result = json!({
            "protocolVersion": adapters::mcp::negotiate(asked),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": format!("mock-{server}"), "version": "1"},
        });
        return json_reply(resp, 200, &jsonrpc::result(id, result), Some(&id_value)).await;
    }
    match session.as_deref() {
        None => return json_reply(resp, 400, &jsonrpc::error(None, &RpcError::new(-32000, "no session")), None).await,
        Some(s) if !known(s) => {
            return json_reply(resp, 404, &jsonrpc::error(None, &RpcError::new(-32001, "gone")), None).await;
        }
        Some(_) => {}
    }
    let (id, method, params) = match message {
        Message::Request { id, method, params } => (id, method, params.unwrap_or(Value::Null)),
        Message::Notification { method, params } if method == "notifications/cancelled" => {
            let request = params.as_ref().and_then(|p| p.get("requestId")).map(Value::to_string).unwrap_or_default();
            if let (Some(s), Ok(mut c)) = (session.as_deref(), CANCELLED.lock()) {
                c.push((s.to_owned(), request));
            }
            let _ = resp.start(202).body(b"").await;
            return;
        }
        _ => {
            let _ = resp.start(202).body(b"").await;
            return;
        }
    };
    match method.as_str() {
        "ping" => json_reply(resp, 200, &jsonrpc::result(&id, json!({})), None).await,
        "tools/list" => {
            let all = tools(server);
            let from = params.get("cursor").and_then(Value::as_str).and_then(|c| c.parse().ok()).unwrap_or(0usize);
            let page: Vec<Value> = all.iter().skip(from).take(PAGE).cloned().collect();
            let mut result = json!({"tools": page});
            if from + PAGE < all.len() {
                result["nextCursor"] = json!((from + PAGE).to_string());
            }
            json_reply(resp, 200, &jsonrpc::result(&id, result), None).await;
        }
        "tools/call" => call(server, req, &id, &params, session.as_deref(), resp).await,
        "prompts/list" => {
            let prompts = json!([{"name": "greet", "description": "Greets someone.", "arguments": [{"name": "who", "required": true}]}]);
            json_reply(resp, 200, &jsonrpc::result(&id, json!({"prompts": prompts})), None).await;
        }
        "prompts/get" => {
            let who = params.get("arguments").and_then(|a| a.get("who")).and_then(Value::as_str).unwrap_or("you");
            let answer = if params.get("name").and_then(Value::as_str) == Some("greet") {
                jsonrpc::result(
                    &id,
                    json!({"messages": [{"role": "user", "content": {"type": "text", "text": format!("Hello, {who}, from {server}")}}]}),
                )
            } else {
                jsonrpc::error(Some(&id), &RpcError::new(jsonrpc::INVALID_PARAMS, "unknown prompt"))
            };
            json_reply(resp, 200, &answer, None).await;
        }
        "resources/list" => {
            let uri = format!("mock://{server}/readme");
            let list = json!([{"uri": uri, "name": "readme", "mimeType": "text/plain"}]);
            json_reply(resp, 200, &jsonrpc::result(&id, json!({"resources": list})), None).await;
        }
        "resources/templates/list" => {
            let list = json!([{"uriTemplate": format!("mock://{server}/{{path}}"), "name": "files"}]);
            json_reply(resp, 200, &jsonrpc::result(&id, json!({"resourceTemplates": list})), None).await;
        }
        "resources/read" => {
            let uri = params.get("uri").and_then(Value::as_str).unwrap_or_default();
            let answer = if uri == format!("mock://{server}/readme") {
                jsonrpc::result(
                    &id,
                    json!({"contents": [{"uri": uri, "mimeType": "text/plain", "text": format!("the readme of {server}")}]}),
                )
            } else {
                jsonrpc::error(Some(&id), &RpcError::new(-32002, "Resource not found").with_data(json!({"uri": uri})))
            };
            json_reply(resp, 200, &answer, None).await;
        }
        _ => {
            json_reply(resp, 200, &jsonrpc::error(Some(&id), &RpcError::new(jsonrpc::METHOD_NOT_FOUND, method)), None)
                .await
        }
    }
}

async fn call<C: Conn>(
    server: &str,
    req: &Request,
    id: &Value,
    params: &Value,
    session: Option<&str>,
    resp: &mut Responder<'_, C>,
) {
    let name = params.get("name").and_then(Value::as_str).unwrap_or_default();
    let args = params.get("arguments").cloned().unwrap_or(Value::Null);
    let result = match name {
        "echo" => text(&format!(
            "{}{}",
            if server == "beta" { "beta: " } else { "" },
            args.get("text").and_then(Value::as_str).unwrap_or("")
        )),
        "time" => text("12:00"),
        "add" => {
            let n = |k: &str| args.get(k).and_then(Value::as_f64).unwrap_or(0.0);
            let sum = n("a") + n("b");
            json!({"content": [{"type": "text", "text": sum.to_string()}], "structuredContent": {"sum": sum}})
        }
        "leak" => text("Write to jane.doe@example.com or call +1 (415) 555-0134."),
        "whoami" => text(header(req, "authorization").unwrap_or("(no authorization header)")),
        "fail" => {
            let e = RpcError::new(-32000, "the mock tool failed on purpose");
            return json_reply(resp, 200, &jsonrpc::error(Some(id), &e), None).await;
        }
        "fail_leaky" => {
            let e = RpcError::new(-32000, "no mailbox for jane.doe@example.com");
            return json_reply(resp, 200, &jsonrpc::error(Some(id), &e), None).await;
        }
        "cancelled" => {
            let ids: Vec<String> = CANCELLED
                .lock()
                .map(|c| c.iter().filter(|(s, _)| Some(s.as_str()) == session).map(|(_, id)| id.clone()).collect())
                .unwrap_or_default();
            text(&ids.join(","))
        }
        "forget_session" => {
            if let (Some(s), Ok(mut set)) = (session, SESSIONS.lock()) {
                set.remove(s);
            }
            text("forgotten")
        }
        "slow" => return slow(id, params, &args, resp).await,
        _ => json!({"content": [{"type": "text", "text": format!("Unknown tool: {name}")}], "isError": true}),
    };
    json_reply(resp, 200, &jsonrpc::result(id, result), None).await;
}

/// Progress notifications as SSE, 5 ms apart, then the result.
async fn slow<C: Conn>(id: &Value, params: &Value, args: &Value, resp: &mut Responder<'_, C>) {
    let steps = args.get("steps").and_then(Value::as_u64).unwrap_or(2).min(100);
    let token = params.get("_meta").and_then(|m| m.get("progressToken")).cloned();
    let Ok(mut stream) = resp.start_event_stream(200).stream().await else { return };
    for i in 1..=steps {
        if let Some(t) = &token {
            let note = jsonrpc::notification(
                "notifications/progress",
                Some(
                    &json!({"progressToken": t, "progress": i, "total": steps, "message": format!("step {i} for jane.doe@example.com")}),
                ),
            );
            let event = [b"event: message\ndata: ".as_slice(), &note, b"\n\n"].concat();
            if stream.send(&event).await.is_err() {
                return;
            }
        }
        rt::sleep(Duration::from_millis(5)).await;
    }
    let answer = jsonrpc::result(id, text(&format!("done after {steps} steps")));
    let event = [b"event: message\ndata: ".as_slice(), &answer, b"\n\n"].concat();
    if stream.send(&event).await.is_ok() {
        let _ = stream.finish().await;
    }
}
