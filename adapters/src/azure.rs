//! Azure OpenAI: the request path, the credential header and the error body, as pure helpers.
//!
//! Azure OpenAI speaks the OpenAI dialect, so bodies are forwarded as they are; what differs is
//! where they go and how errors come back (Microsoft Learn, "Azure OpenAI in Azure AI Foundry
//! Models REST API reference", <https://learn.microsoft.com/en-us/azure/ai-foundry/openai/reference>,
//! and "Azure OpenAI API version lifecycle",
//! <https://learn.microsoft.com/en-us/azure/ai-foundry/openai/api-version-lifecycle>):
//! - the deployment surface: `POST {endpoint}/openai/deployments/{deployment}/chat/completions
//!   ?api-version=2024-10-21` (also `/completions`, `/embeddings`); the deployment picks the
//!   model, the body's `model` is ignored;
//! - the v1 surface (since August 2025): `POST {endpoint}/openai/v1/chat/completions`, no
//!   `api-version`, the deployment name goes in the body's `model` (the engine rewrites it with
//!   `openai::request::rewrite_model`);
//! - credentials: `api-key: <key>`, or `Authorization: Bearer <Microsoft Entra ID token>`;
//! - errors: `{"error": {"code", "message", "param", "type", "innererror"}}`; a prompt refused
//!   by content filtering is a 400 with `code: "content_filter"` and
//!   `innererror.content_filter_result` (concepts/content-filter).

use std::fmt;

use serde_json::Value;

use crate::bedrock::sigv4::uri_encode;
use crate::canonical::ApiError;
use crate::gemini::vertex_auth::AccessToken;

/// The GA `api-version` of the deployment surface this gateway is written against.
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

/// The OpenAI operation being called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AzureOperation {
    ChatCompletions,
    Completions,
    Embeddings,
}

impl AzureOperation {
    /// The path suffix: `chat/completions`, `completions`, `embeddings`.
    pub fn as_path(self) -> &'static str {
        match self {
            AzureOperation::ChatCompletions => "chat/completions",
            AzureOperation::Completions => "completions",
            AzureOperation::Embeddings => "embeddings",
        }
    }
}

/// Which Azure OpenAI API surface a target uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AzureSurface {
    /// `/openai/deployments/{deployment}/...?api-version=...`.
    Deployments {
        /// For example [`DEFAULT_API_VERSION`].
        api_version: String,
    },
    /// `/openai/v1/...`, the deployment name in the body's `model`.
    V1,
}

impl AzureSurface {
    /// Whether the deployment name must be put in the body's `model` (the v1 surface).
    pub fn model_in_body(&self) -> bool {
        matches!(self, AzureSurface::V1)
    }
}

/// The prefix up to and including `/openai`: `base_path` is the path of the configured
/// endpoint (usually empty); a trailing `/`, `/openai` or `/openai/v1` (as Microsoft's samples
/// write base URLs) is not repeated.
fn openai_prefix(base_path: &str) -> String {
    let mut base = base_path.trim_end_matches('/');
    base = base.strip_suffix("/openai/v1").unwrap_or(base);
    base = base.strip_suffix("/openai").unwrap_or(base);
    if base.is_empty() || base.starts_with('/') { format!("{base}/openai") } else { format!("/{base}/openai") }
}

/// `{base_path}/openai/deployments/{deployment}/{operation}?api-version={api_version}`, the
/// deployment name and version percent-encoded.
pub fn deployment_path(base_path: &str, deployment: &str, operation: AzureOperation, api_version: &str) -> String {
    format!(
        "{}/deployments/{}/{}?api-version={}",
        openai_prefix(base_path),
        uri_encode(deployment),
        operation.as_path(),
        uri_encode(api_version)
    )
}

/// `{base_path}/openai/v1/{operation}`.
pub fn v1_path(base_path: &str, operation: AzureOperation) -> String {
    format!("{}/v1/{}", openai_prefix(base_path), operation.as_path())
}

/// The request path for `operation` on `deployment` through `surface`.
pub fn request_path(base_path: &str, surface: &AzureSurface, deployment: &str, operation: AzureOperation) -> String {
    match surface {
        AzureSurface::Deployments { api_version } => deployment_path(base_path, deployment, operation, api_version),
        AzureSurface::V1 => v1_path(base_path, operation),
    }
}

/// An Azure OpenAI credential. `Debug` does not print the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum AzureAuth {
    /// A resource key, sent as `api-key`.
    ApiKey(String),
    /// A Microsoft Entra ID access token (scope `https://cognitiveservices.azure.com/.default`).
    Bearer(String),
}

impl fmt::Debug for AzureAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AzureAuth::ApiKey(_) => f.write_str("ApiKey(<redacted>)"),
            AzureAuth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// The header carrying `auth`, name in lowercase: `("api-key", key)` or
/// `("authorization", "Bearer <token>")`.
pub fn auth_header(auth: &AzureAuth) -> (&'static str, String) {
    match auth {
        AzureAuth::ApiKey(key) => ("api-key", key.clone()),
        AzureAuth::Bearer(token) => ("authorization", format!("Bearer {token}")),
    }
}

/// The scope of an Entra ID token for Azure OpenAI (Azure AI services).
pub const ENTRA_SCOPE: &str = "https://cognitiveservices.azure.com/.default";
/// Microsoft Entra ID's public-cloud authority.
pub const ENTRA_AUTHORITY: &str = "https://login.microsoftonline.com";

/// An application registered in Entra ID that may call the resource (the OAuth 2.0 client
/// credentials grant). `Debug` does not print the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct EntraApp {
    pub authority: String,
    pub tenant_id: String,
    pub client_id: String,
    pub credential: EntraCredential,
    pub scope: String,
}

/// How the application proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum EntraCredential {
    /// A client secret.
    Secret(String),
    /// Workload identity federation (AKS workload identity, GitHub OIDC, ...): a token file
    /// written by the platform and rotated under the gateway, sent as the client assertion.
    /// The file is read again for every token.
    FederatedTokenFile(String),
}

impl fmt::Debug for EntraApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraApp")
            .field("authority", &self.authority)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field(
                "credential",
                &match &self.credential {
                    EntraCredential::Secret(_) => "secret <redacted>".to_string(),
                    EntraCredential::FederatedTokenFile(path) => format!("federated token file {path}"),
                },
            )
            .field("scope", &self.scope)
            .finish()
    }
}

impl EntraApp {
    /// `{authority}/{tenant}/oauth2/v2.0/token`.
    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.authority.trim_end_matches('/'), uri_encode(&self.tenant_id))
    }

    /// The form body of the client credentials grant
    /// (<https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow>).
    /// The answer is a standard OAuth 2.0 token response: read it with
    /// [`crate::gemini::vertex_auth::parse_token_response`].
    ///
    /// `assertion` is the federated token's current contents (the caller reads the file; this
    /// module does no I/O); it is ignored for a client secret.
    pub fn token_request_body(&self, assertion: Option<&str>) -> Result<String, String> {
        let proof = match &self.credential {
            EntraCredential::Secret(secret) => format!("client_secret={}", uri_encode(secret)),
            EntraCredential::FederatedTokenFile(path) => {
                let token = assertion.map(str::trim).filter(|t| !t.is_empty());
                let token = token.ok_or_else(|| format!("the federated token file {path} is empty"))?;
                format!(
                    "client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={}",
                    uri_encode(token)
                )
            }
        };
        Ok(format!(
            "grant_type=client_credentials&client_id={}&{proof}&scope={}",
            uri_encode(&self.client_id),
            uri_encode(&self.scope)
        ))
    }
}

fn kind_for_status(status: u16) -> &'static str {
    match status {
        400 | 404 | 409 | 413 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "api_error",
    }
}

fn as_code(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn inner_error(error: &Value) -> Option<&Value> {
    // Real answers spell it `innererror`; the REST reference's schema says `inner_error`.
    error.get("innererror").or_else(|| error.get("inner_error"))
}

/// An Azure OpenAI error response (any non-2xx) as an OpenAI-shaped [`ApiError`].
///
/// - A content-filter refusal (`code: "content_filter"`, or an inner error
///   `ResponsibleAIPolicyViolation`) is a 400 `invalid_request_error` with code
///   `content_filter`, whatever the status said; the filter's verdict is available from
///   [`content_filter_result`].
/// - Otherwise the status is kept (a status outside 4xx/5xx becomes 502); `type` is Azure's
///   when it sends one, else the OpenAI type for the status; `code` is Azure's code unless it
///   merely repeats a status number (`"429"`); `param` is kept.
/// - Bodies in other shapes (`{"statusCode": 401, "message": ...}` from the API gateway in
///   front of Azure OpenAI, or plain text) keep their message.
pub fn error_from_azure(status: u16, body: &[u8]) -> ApiError {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let error = json.as_ref().and_then(|v| v.get("error")).filter(|e| e.is_object());
    let source = error.or(json.as_ref().filter(|v| v.is_object()));
    let message =
        source.and_then(|e| e.get("message")).and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                format!("Azure OpenAI returned HTTP {status}")
            } else {
                text.chars().take(512).collect()
            }
        });
    let code = error.and_then(|e| e.get("code")).and_then(as_code);
    let param = error.and_then(|e| e.get("param")).and_then(Value::as_str).map(str::to_owned);
    let inner_code = error.and_then(inner_error).and_then(|i| i.get("code")).and_then(Value::as_str);
    if code.as_deref() == Some("content_filter") || inner_code == Some("ResponsibleAIPolicyViolation") {
        return ApiError {
            status: 400,
            message,
            kind: "invalid_request_error".into(),
            param,
            code: Some("content_filter".into()),
        };
    }
    let status = if (400..600).contains(&status) { status } else { 502 };
    let kind = error
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| kind_for_status(status))
        .to_owned();
    let code = code.filter(|c| !c.bytes().all(|b| b.is_ascii_digit()));
    ApiError { status, message, kind, param, code }
}

/// The content filter's verdict in an Azure error body (`innererror.content_filter_result`,
/// or the schema's `inner_error.content_filter_results`), for a gateway that wants to pass it
/// on next to the OpenAI error.
pub fn content_filter_result(body: &[u8]) -> Option<Value> {
    let json: Value = serde_json::from_slice(body).ok()?;
    let inner = inner_error(json.get("error")?)?;
    inner.get("content_filter_result").or_else(|| inner.get("content_filter_results")).cloned()
}

/// Azure's managed identity endpoint on VMs, AKS nodes and other hosts with the Instance
/// Metadata Service (link-local: never through a proxy).
pub const IMDS_TOKEN_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
/// The resource (not a scope: managed identity takes the resource URI) of Azure OpenAI.
pub const ENTRA_RESOURCE: &str = "https://cognitiveservices.azure.com";

/// A managed identity of the host the gateway runs on: tokens are asked of the platform, with
/// no secret in the config. Two protocols, chosen by whether the platform gave a secret header:
/// - the Instance Metadata Service (VMs, scale sets, AKS nodes): `GET {endpoint}?api-version=2018-02-01&resource=...`
///   with `Metadata: true`
///   (<https://learn.microsoft.com/en-us/entra/identity/managed-identities-azure-resources/how-to-use-vm-token>);
/// - App Service, Functions and Container Apps (`IDENTITY_ENDPOINT` and `IDENTITY_HEADER` in the
///   environment): `GET {endpoint}?api-version=2019-08-01&resource=...` with
///   `X-IDENTITY-HEADER`
///   (<https://learn.microsoft.com/en-us/azure/app-service/overview-managed-identity#rest-endpoint-reference>).
///
/// A user-assigned identity is named by its `client_id`. `Debug` does not print the header.
#[derive(Clone, PartialEq, Eq)]
pub struct ManagedIdentity {
    pub endpoint: String,
    /// App Service's `X-IDENTITY-HEADER` secret; `None`: the Instance Metadata Service.
    pub identity_header: Option<String>,
    pub client_id: Option<String>,
    pub resource: String,
}

impl fmt::Debug for ManagedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedIdentity")
            .field("endpoint", &self.endpoint)
            .field("identity_header", &self.identity_header.as_ref().map(|_| "<redacted>"))
            .field("client_id", &self.client_id)
            .field("resource", &self.resource)
            .finish()
    }
}

impl ManagedIdentity {
    /// The token request: a GET of this URL with these headers.
    pub fn token_request(&self) -> (String, Vec<(&'static str, String)>) {
        let (version, header) = match &self.identity_header {
            Some(secret) => ("2019-08-01", ("x-identity-header", secret.clone())),
            None => ("2018-02-01", ("metadata", "true".to_owned())),
        };
        let mut url = format!("{}?api-version={version}&resource={}", self.endpoint, uri_encode(&self.resource));
        if let Some(id) = &self.client_id {
            url.push_str("&client_id=");
            url.push_str(&uri_encode(id));
        }
        (url, vec![header])
    }

    /// A token answer. Both protocols send `access_token` and `expires_on` (unix seconds, as
    /// a string); the Instance Metadata Service adds `expires_in` (seconds, a string too),
    /// read only when `expires_on` is missing.
    /// An error answer's `error_description` or `message` is kept.
    pub fn read_token(&self, status: u16, body: &[u8], now_unix: u64) -> Result<AccessToken, String> {
        let json: Option<Value> = serde_json::from_slice(body).ok();
        let field = |name: &str| json.as_ref().and_then(|v| v.get(name));
        if !(200..300).contains(&status) {
            let why = ["error_description", "message", "error"]
                .iter()
                .find_map(|f| field(f).and_then(Value::as_str))
                .map_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect(), str::to_owned);
            return Err(format!("the managed identity endpoint answered {status}: {why}"));
        }
        let token = field("access_token").and_then(Value::as_str).filter(|t| !t.is_empty());
        let token = token.ok_or("the managed identity answer has no `access_token`")?;
        // Numbers come as strings, but accept numbers too.
        let number = |name: &str| {
            field(name).and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())))
        };
        // `expires_on` is absolute and wins: the platform hands out cached tokens, for which
        // `expires_in` counts from when the token was issued, not from now (as azure-identity
        // reads it).
        let expires_at = match (number("expires_on"), number("expires_in")) {
            (Some(at), _) => at,
            (None, Some(within)) => now_unix.saturating_add(within),
            (None, None) => return Err("the managed identity answer has neither `expires_on` nor `expires_in`".into()),
        };
        Ok(AccessToken { token: token.to_owned(), expires_at_unix: expires_at })
    }
}

#[cfg(test)]
mod entra_tests {
    use super::*;

    fn app() -> EntraApp {
        EntraApp {
            authority: format!("{ENTRA_AUTHORITY}/"),
            tenant_id: "contoso.onmicrosoft.com".into(),
            client_id: "535fb089-9ff3-47b6-9bfb-4f1264799865".into(),
            credential: EntraCredential::Secret("sec+ret/=&x".into()),
            scope: ENTRA_SCOPE.into(),
        }
    }

    #[test]
    fn token_request_is_the_client_credentials_grant() {
        let a = app();
        assert_eq!(a.token_url(), "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token");
        assert_eq!(
            a.token_request_body(None).unwrap(),
            "grant_type=client_credentials&client_id=535fb089-9ff3-47b6-9bfb-4f1264799865&client_secret=sec%2Bret%2F%3D%26x&scope=https%3A%2F%2Fcognitiveservices.azure.com%2F.default"
        );
        assert!(!format!("{a:?}").contains("sec+ret"), "the secret is never printed");
        // Workload identity: the federated token as a JWT-bearer client assertion.
        let f = EntraApp { credential: EntraCredential::FederatedTokenFile("/var/run/t".into()), ..app() };
        assert_eq!(
            f.token_request_body(Some("eyJh.eyJz.sig\n")).unwrap(),
            "grant_type=client_credentials&client_id=535fb089-9ff3-47b6-9bfb-4f1264799865&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=eyJh.eyJz.sig&scope=https%3A%2F%2Fcognitiveservices.azure.com%2F.default"
        );
        assert!(f.token_request_body(Some("  ")).unwrap_err().contains("/var/run/t"));
    }

    #[test]
    fn entra_answers_read_as_oauth_token_responses() {
        use crate::gemini::vertex_auth::parse_token_response;
        // Microsoft's documented success and error answers.
        let ok =
            br#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0eXAiOiJKV1Qi"}"#;
        let t = parse_token_response(200, ok, 1_000).unwrap();
        assert_eq!((t.token.as_str(), t.expires_at_unix), ("eyJ0eXAiOiJKV1Qi", 4_599));
        let err = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215],"timestamp":"2026-11-28 04:00:00Z","trace_id":"x","correlation_id":"y"}"#;
        let e = parse_token_response(401, err, 1_000).unwrap_err().to_string();
        assert!(e.contains("invalid_client") && e.contains("AADSTS7000215"), "{e}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    fn golden(name: &str) -> Value {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/azure").join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn operation(name: &str) -> AzureOperation {
        match name {
            "chat_completions" => AzureOperation::ChatCompletions,
            "completions" => AzureOperation::Completions,
            "embeddings" => AzureOperation::Embeddings,
            other => panic!("unknown operation {other}"),
        }
    }

    #[test]
    fn golden_paths() {
        for case in golden("paths.json")["cases"].as_array().unwrap() {
            let surface = match case["api_version"].as_str() {
                Some(v) => AzureSurface::Deployments { api_version: v.to_owned() },
                None => AzureSurface::V1,
            };
            let path = request_path(
                case["base_path"].as_str().unwrap(),
                &surface,
                case["deployment"].as_str().unwrap_or(""),
                operation(case["operation"].as_str().unwrap()),
            );
            assert_eq!(path, case["path"].as_str().unwrap(), "{case}");
            assert_eq!(surface.model_in_body(), case["api_version"].is_null());
        }
    }

    #[test]
    fn golden_errors() {
        for case in golden("errors.json")["cases"].as_array().unwrap() {
            let body = match &case["body"] {
                Value::String(text) => text.clone().into_bytes(),
                other => serde_json::to_vec(other).unwrap(),
            };
            let err = error_from_azure(case["status"].as_u64().unwrap() as u16, &body);
            assert_eq!(u64::from(err.status), case["want_status"].as_u64().unwrap(), "{}", case["name"]);
            assert_eq!(err.to_json(), case["openai_error"], "{}", case["name"]);
            assert_eq!(content_filter_result(&body), case.get("content_filter_result").cloned(), "{}", case["name"]);
        }
    }

    #[test]
    fn deployment_names_and_versions_are_encoded() {
        assert_eq!(
            deployment_path("", "my deploy/1", AzureOperation::Embeddings, "2025-04-01-preview"),
            "/openai/deployments/my%20deploy%2F1/embeddings?api-version=2025-04-01-preview"
        );
        assert_eq!(
            deployment_path("/", "gpt-4o", AzureOperation::Completions, "a&b=c"),
            "/openai/deployments/gpt-4o/completions?api-version=a%26b%3Dc"
        );
    }

    #[test]
    fn base_paths_are_not_doubled() {
        for base in ["", "/", "/openai", "/openai/", "/openai/v1", "/openai/v1/"] {
            assert_eq!(v1_path(base, AzureOperation::ChatCompletions), "/openai/v1/chat/completions", "{base:?}");
        }
        assert_eq!(v1_path("apim/tenant-a/", AzureOperation::Embeddings), "/apim/tenant-a/openai/v1/embeddings");
        assert_eq!(
            deployment_path("/apim/openai", "d", AzureOperation::ChatCompletions, DEFAULT_API_VERSION),
            "/apim/openai/deployments/d/chat/completions?api-version=2024-10-21"
        );
    }

    #[test]
    fn auth_headers_and_redaction() {
        let key = AzureAuth::ApiKey("k3y".into());
        let token = AzureAuth::Bearer("eyJ0".into());
        assert_eq!(auth_header(&key), ("api-key", "k3y".to_owned()));
        assert_eq!(auth_header(&token), ("authorization", "Bearer eyJ0".to_owned()));
        let printed = format!("{key:?} {token:?}");
        assert!(!printed.contains("k3y") && !printed.contains("eyJ0"), "{printed}");
    }

    #[test]
    fn odd_bodies() {
        let err = error_from_azure(503, b"");
        assert_eq!((err.status, err.kind.as_str()), (503, "api_error"));
        assert_eq!(err.message, "Azure OpenAI returned HTTP 503");
        let err = error_from_azure(200, br#"{"error":{"message":"odd","code":"Weird"}}"#);
        assert_eq!((err.status, err.code.as_deref()), (502, Some("Weird")));
        let err = error_from_azure(429, br#"{"error":{"code":429,"message":"slow down"}}"#);
        assert_eq!((err.kind.as_str(), err.code), ("rate_limit_error", None));
        let long = "x".repeat(2000);
        assert_eq!(error_from_azure(500, long.as_bytes()).message.len(), 512);
        assert_eq!(content_filter_result(b"not json"), None);
        assert_eq!(content_filter_result(br#"{"error":{"code":"x"}}"#), None);
        let inner_only = json!({"error": {"message": "m", "innererror": {"code": "ResponsibleAIPolicyViolation"}}});
        let err = error_from_azure(400, &serde_json::to_vec(&inner_only).unwrap());
        assert_eq!(err.code.as_deref(), Some("content_filter"));
    }
}

#[cfg(test)]
mod managed_identity_tests {
    use super::*;

    fn imds(client_id: Option<&str>) -> ManagedIdentity {
        ManagedIdentity {
            endpoint: IMDS_TOKEN_ENDPOINT.into(),
            identity_header: None,
            client_id: client_id.map(str::to_owned),
            resource: ENTRA_RESOURCE.into(),
        }
    }

    #[test]
    fn requests_follow_each_protocol() {
        let (url, headers) = imds(None).token_request();
        assert_eq!(
            url,
            "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fcognitiveservices.azure.com"
        );
        assert_eq!(headers, [("metadata", "true".to_owned())]);
        let (url, _) = imds(Some("11111111-2222-3333-4444-555555555555")).token_request();
        assert!(url.ends_with("&client_id=11111111-2222-3333-4444-555555555555"), "{url}");
        let app_service = ManagedIdentity {
            endpoint: "http://localhost:42356/msi/token".into(),
            identity_header: Some("853b9a84-5bfa-4b22-a3f3-0b9a43d9ad8a".into()),
            ..imds(None)
        };
        let (url, headers) = app_service.token_request();
        assert!(url.starts_with("http://localhost:42356/msi/token?api-version=2019-08-01&resource="), "{url}");
        assert_eq!(headers, [("x-identity-header", "853b9a84-5bfa-4b22-a3f3-0b9a43d9ad8a".to_owned())]);
        assert!(!format!("{app_service:?}").contains("853b9a84"));
    }

    #[test]
    fn answers_of_both_protocols_are_read() {
        // The Instance Metadata Service's documented answer (numbers as strings).
        let body = br#"{"access_token":"eyJ0eXAi...","refresh_token":"","expires_in":"3599","expires_on":"1506484173","not_before":"1506480273","resource":"https://cognitiveservices.azure.com","token_type":"Bearer"}"#;
        let t = imds(None).read_token(200, body, 1_000).unwrap();
        assert_eq!((t.token.as_str(), t.expires_at_unix), ("eyJ0eXAi...", 1_506_484_173));
        // Without `expires_on`, from now.
        let body = br#"{"access_token":"t","expires_in":"3599"}"#;
        assert_eq!(imds(None).read_token(200, body, 1_000).unwrap().expires_at_unix, 4_599);
        // App Service's: `expires_on` only.
        let body = br#"{"access_token":"eyJ0eXAi...","expires_on":"1586984735","resource":"https://cognitiveservices.azure.com","token_type":"Bearer","client_id":"5E29463D-71DA-4FE0-8E69-999B57DB23B0"}"#;
        assert_eq!(imds(None).read_token(200, body, 1_000).unwrap().expires_at_unix, 1_586_984_735);
        // Errors keep the platform's reason.
        let body = br#"{"error":"invalid_request","error_description":"Identity not found"}"#;
        let e = imds(None).read_token(400, body, 0).unwrap_err();
        assert!(e.contains("400") && e.contains("Identity not found"), "{e}");
        assert!(imds(None).read_token(200, br#"{"access_token":""}"#, 0).is_err());
        assert!(imds(None).read_token(200, br#"{"access_token":"t"}"#, 0).unwrap_err().contains("expires"));
    }
}
