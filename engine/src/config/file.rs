//! The config file as written by users (YAML). Every section is optional with a sane default;
//! unknown fields are errors. These types are compiled into a [`super::Snapshot`] at load time, so
//! the request path never looks at them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;

use serde::Deserialize;

use super::units::{ByteSize, Dur, EnvString};
use crate::rt::{DriverRequest, RuntimeRequest, UringFlags};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Listener, shards, runtime driver, limits, TLS, egress and reload.
    #[serde(default)]
    pub server: ServerSection,
    /// Provider accounts: where and how to reach each provider, keyed by a name of your choice.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderSection>,
    /// Model names clients may ask for, each mapped to `provider/upstream-model`.
    #[serde(default)]
    pub models: BTreeMap<String, ModelSection>,
    /// The embedded store: where it lives, how often spend is written.
    #[serde(default)]
    pub store: StoreSection,
    /// How callers authenticate: the key pepper, anonymous access.
    #[serde(default)]
    pub auth: AuthSection,
    /// Admission knobs: gossip between shards, token estimates.
    #[serde(default)]
    pub governance: GovernanceSection,
    /// Model prices (USD per million tokens), over the shipped table.
    #[serde(default)]
    pub pricing: PricingSection,
    /// Environments keys belong to (default `dev`, `staging`, `prod`).
    #[serde(default)]
    pub environments: Vec<String>,
    /// Teams: environments, allowed models, team-wide limits and budget.
    #[serde(default)]
    pub teams: BTreeMap<String, policy::spec::TeamSpec>,
    /// Users: teams, role, allowed models, limits and budget.
    #[serde(default)]
    pub users: BTreeMap<String, policy::spec::UserSpec>,
    /// Applications (service identities): team, allowed models, limits and budget.
    #[serde(default)]
    pub applications: BTreeMap<String, policy::spec::ApplicationSpec>,
    /// Virtual keys, by hash (`hmac-sha256:...`) or by secret (`${ENV_VAR}`).
    #[serde(default)]
    pub keys: Vec<policy::spec::KeySpec>,
    /// Rate-limit rules.
    #[serde(default)]
    pub rate_limits: Vec<policy::spec::RateLimitSpec>,
    /// Budgets in USD.
    #[serde(default)]
    pub budgets: Vec<policy::spec::BudgetSpec>,
    /// Guardrails: PII, secrets, prompt injection, deny lists and structure checks on prompts
    /// and answers.
    #[serde(default)]
    pub guardrails: Vec<policy::guardrails::GuardrailSpec>,
    /// The MCP gateway: upstream MCP servers and the virtual servers served at `/mcp/{name}`.
    #[serde(default)]
    pub mcp: crate::mcp::spec::McpSection,
    /// What is logged of each request, where, and for how long.
    #[serde(default)]
    pub logging: LoggingSection,
    /// A directory of per-team files (relative to this file's directory): each `<team>.yaml`
    /// may only define users, applications, keys, rate limits and budgets of team `<team>`.
    #[serde(default)]
    pub team_files: Option<PathBuf>,
}

/// `store:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// The SQLite database (created if missing); relative paths are relative to the config
    /// file's directory. `none` runs without a store: no admin-made objects, no ledger, spend
    /// forgotten at exit. Default `shardgate.db` for a config file or the embedded defaults;
    /// config given as text (tests, embedding) has no store unless it names one.
    pub path: Option<String>,
    /// How often shards hand their spend to the store thread: at most this much spend is lost
    /// if the process is killed. Default 1s.
    pub flush_interval: Dur,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection { path: None, flush_interval: Dur(std::time::Duration::from_secs(1)) }
    }
}

/// `logging:`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSection {
    pub requests: RequestLogSection,
}

/// `logging.requests:`: one record per LLM request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestLogSection {
    /// Keep records in the embedded store (when there is one). Default true.
    pub store: bool,
    /// How long records are kept in the store. Default 30d.
    pub retention: Dur,
    /// At most this many records in the store (the oldest go first). Default: no bound.
    pub max_rows: Option<u64>,
    /// Records a shard holds while the writers are behind; beyond it they are dropped and
    /// counted. Default 65536.
    pub buffer: usize,
    /// Also write each record as a JSON line to this file (`-`: stdout). Read at start.
    pub jsonl: Option<String>,
}

impl Default for RequestLogSection {
    fn default() -> Self {
        RequestLogSection {
            store: true,
            retention: Dur(std::time::Duration::from_secs(30 * 86_400)),
            max_rows: None,
            buffer: 65_536,
            jsonl: None,
        }
    }
}

/// `providers.<name>.aws:`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSection {
    pub region: Option<String>,
    pub access_key_id: Option<EnvString>,
    pub secret_access_key: Option<EnvString>,
    pub session_token: Option<EnvString>,
}

/// `providers.<name>.azure:`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AzureSection {
    /// `api-version` of the deployments surface. Default 2024-10-21 (the latest GA).
    pub api_version: Option<String>,
    /// `deployments` (default: `/openai/deployments/{deployment}/...?api-version=`) or `v1`
    /// (`/openai/v1/...`, the deployment named in the body's `model`).
    pub surface: Option<AzureSurfaceName>,
    /// An Entra ID access token, sent as `Authorization: Bearer` instead of `api-key`. Use
    /// `${ENV_VAR}`. Such tokens expire within hours: prefer `entra`.
    pub bearer_token: Option<EnvString>,
    /// An Entra ID application the gateway mints (and refreshes) access tokens for, by the
    /// client credentials grant.
    pub entra: Option<EntraSection>,
    /// The host's managed identity (an Azure VM, AKS node, App Service, Functions or Container
    /// Apps): tokens asked of the platform, no secret in the config.
    pub managed_identity: Option<ManagedIdentitySection>,
}

/// `providers.<name>.azure.managed_identity:` (`{}` for the system-assigned identity).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedIdentitySection {
    /// A user-assigned identity's client id (`${AZURE_CLIENT_ID}`); absent: system-assigned.
    #[serde(default)]
    pub client_id: Option<EnvString>,
    /// Default `https://cognitiveservices.azure.com`.
    #[serde(default)]
    pub resource: Option<String>,
    /// The token endpoint. Default: `IDENTITY_ENDPOINT` from the environment (App Service,
    /// Functions, Container Apps), else the Instance Metadata Service
    /// (`http://169.254.169.254/metadata/identity/oauth2/token`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// App Service's `X-IDENTITY-HEADER` secret. Default: `IDENTITY_HEADER` from the
    /// environment when the endpoint came from there too; absent, the endpoint is spoken to
    /// as the Instance Metadata Service.
    #[serde(default)]
    pub identity_header: Option<EnvString>,
}

/// `providers.<name>.azure.entra:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntraSection {
    pub tenant_id: EnvString,
    pub client_id: EnvString,
    /// Use `${ENV_VAR}`. Either this or `federated_token_file`.
    #[serde(default)]
    pub client_secret: Option<EnvString>,
    /// Workload identity federation: the platform's token file (on AKS,
    /// `${AZURE_FEDERATED_TOKEN_FILE}`), read again for every token.
    #[serde(default)]
    pub federated_token_file: Option<EnvString>,
    /// Default `https://login.microsoftonline.com` (another cloud's authority otherwise).
    pub authority: Option<String>,
    /// Default `https://cognitiveservices.azure.com/.default`.
    pub scope: Option<String>,
}

/// `providers.<name>.vertex:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VertexSection {
    /// Path of the service-account key file (JSON), e.g. `${GOOGLE_APPLICATION_CREDENTIALS}`.
    pub credentials_file: EnvString,
    /// Google Cloud project. Default: the key file's `project_id`.
    pub project: Option<String>,
    /// Region (`us-central1`, `europe-west4`, ...) or `global`. Default `global`.
    pub location: Option<String>,
}

/// `providers.<name>.thinking:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThinkingSection {
    /// Budget for `reasoning_effort: low` (and `minimal`).
    pub low: i64,
    pub medium: i64,
    pub high: i64,
    /// Gemini: also return thought summaries (as `reasoning_content`). Default false.
    #[serde(default)]
    pub include_thoughts: bool,
}

/// `providers.<name>.azure.surface`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AzureSurfaceName {
    Deployments,
    V1,
}

/// `auth:`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Server-side secret mixed into every key hash (HMAC-SHA256). Required when keys are
    /// declared by `hash`; otherwise a random one is made per process. Use `${ENV_VAR}`.
    pub pepper: Option<EnvString>,
    /// Serve callers without credentials on a non-loopback address when no key exists. Off by
    /// default: a gateway with no keys only serves anonymously on loopback.
    pub allow_anonymous: bool,
    /// OIDC issuers whose bearer JWTs are accepted (SSO): issuer, audience, where the signing
    /// keys are, which claims carry user, team, role and environment.
    pub issuers: Vec<policy::jwt::IssuerSpec>,
}

/// `governance:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GovernanceSection {
    /// How often each shard sends its counter changes to the others. Default 5ms. A limit can
    /// be overshot by about (shards - 1) x this x the admission rate.
    pub gossip_interval: Dur,
    /// Slots in each shard's gossip inbox (rounds waiting to be merged). Default 1024.
    pub gossip_queue: NonZeroUsize,
    /// Output tokens reserved for a request without `max_tokens`. Default 1024.
    pub default_max_tokens: u64,
    /// Request body bytes counted as one prompt token when estimating. Default 4.
    pub bytes_per_token: NonZeroU32,
    /// Sub-buckets of every rate-limit window (2 to 60; default 6: a minute slides in 10 s
    /// steps). More slide more smoothly and cost memory per counter. Applies at the next start.
    pub window_buckets: usize,
}

impl Default for GovernanceSection {
    fn default() -> Self {
        GovernanceSection {
            gossip_interval: Dur(std::time::Duration::from_millis(5)),
            gossip_queue: NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
            default_max_tokens: 1024,
            bytes_per_token: NonZeroU32::new(4).unwrap_or(NonZeroU32::MIN),
            window_buckets: policy::counters::DEFAULT_BUCKETS,
        }
    }
}

/// `pricing:`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PricingSection {
    /// Prices by model name (the upstream model; a trailing `*` makes a prefix), over the
    /// shipped table: `{input_per_mtok, output_per_mtok, cached_input_per_mtok, per_request}`.
    pub models: BTreeMap<String, policy::pricing::Price>,
}

impl ConfigFile {
    /// The file without its governance sections (kept elsewhere, once: see
    /// [`crate::config::Snapshot::declared`]); they can be large (10k keys).
    pub fn without_governance(&self) -> ConfigFile {
        // The governance sections are cleared and everything else kept, so that a section added
        // later is kept too (listing what to keep once lost `guardrails` and `mcp` on every
        // admin change).
        ConfigFile {
            environments: Vec::new(),
            teams: BTreeMap::new(),
            users: BTreeMap::new(),
            applications: BTreeMap::new(),
            keys: Vec::new(),
            rate_limits: Vec::new(),
            budgets: Vec::new(),
            ..self.clone()
        }
    }

    /// Puts governance sections back (the inverse of [`ConfigFile::without_governance`]).
    pub fn with_governance(mut self, spec: &policy::spec::GovernanceSpec) -> ConfigFile {
        self.environments = spec.environments.clone();
        self.teams = spec.teams.clone();
        self.users = spec.users.clone();
        self.applications = spec.applications.clone();
        self.keys = spec.keys.clone();
        self.rate_limits = spec.rate_limits.clone();
        self.budgets = spec.budgets.clone();
        self
    }

    /// The governance sections as one spec.
    pub fn governance_spec(&self) -> policy::spec::GovernanceSpec {
        policy::spec::GovernanceSpec {
            environments: self.environments.clone(),
            teams: self.teams.clone(),
            users: self.users.clone(),
            applications: self.applications.clone(),
            keys: self.keys.clone(),
            rate_limits: self.rate_limits.clone(),
            budgets: self.budgets.clone(),
        }
    }
}

/// How many shards (one thread and runtime each) to run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ShardCount {
    /// One per CPU this process may run on.
    #[default]
    Auto,
    Fixed(NonZeroUsize),
}

impl<'de> Deserialize<'de> for ShardCount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(usize),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => NonZeroUsize::new(n)
                .map(ShardCount::Fixed)
                .ok_or_else(|| serde::de::Error::custom("shards must be at least 1, or `auto`")),
            Raw::S(s) if s == "auto" => Ok(ShardCount::Auto),
            Raw::S(s) => s.parse::<NonZeroUsize>().map(ShardCount::Fixed).map_err(|_| {
                serde::de::Error::custom(format!("shards must be a positive number or `auto`, not {s:?}"))
            }),
        }
    }
}

/// `server:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// `auto` (one per core) or a number.
    pub shards: ShardCount,
    /// `monoio` (default) or `glommio` (needs the `runtime-glommio` build feature).
    pub runtime: RuntimeRequest,
    /// monoio's I/O driver: `auto` (io_uring, else epoll), `uring` or `epoll`.
    pub driver: DriverRequest,
    /// io_uring setup flags: `defer-taskrun` (default), `coop-taskrun` or `none`.
    pub uring_flags: UringFlags,
    /// io_uring submission queue entries per shard.
    pub uring_entries: NonZeroU32,
    /// Pin each shard's thread to one core.
    pub pin_cores: bool,
    /// Downstream and upstream limits.
    pub limits: LimitsSection,
    /// How long a drain (SIGTERM/SIGINT) lets in-flight requests and streams finish.
    pub drain_grace: Dur,
    /// Serve HTTPS on `listen` with these PEM files.
    pub tls: Option<TlsSection>,
    /// How the gateway reaches providers: proxy, extra CA bundle, DNS refresh.
    pub egress: EgressSection,
    /// Reload on file change.
    pub reload: ReloadSection,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shards: ShardCount::Auto,
            runtime: RuntimeRequest::Monoio,
            driver: DriverRequest::Auto,
            uring_flags: UringFlags::DeferTaskrun,
            uring_entries: NonZeroU32::new(1024).unwrap_or(NonZeroU32::MIN),
            pin_cores: true,
            limits: LimitsSection::default(),
            drain_grace: Dur(std::time::Duration::from_secs(30)),
            tls: None,
            egress: EgressSection::default(),
            reload: ReloadSection::default(),
        }
    }
}

/// `server.limits:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Largest request body accepted (413 beyond). Default 10MiB.
    pub max_body: ByteSize,
    /// Largest request header section (431 beyond). Default 64KiB.
    pub max_header: ByteSize,
    /// Most header fields in a request (431 beyond). Default 100, at most 128.
    pub max_headers: u16,
    /// Time allowed from a request's first byte to the end of its head (408 beyond). Default 10s.
    pub header_timeout: Dur,
    /// Time allowed to receive a request body (408 beyond). Default 30s.
    pub body_timeout: Dur,
    /// How long an idle keep-alive connection is kept. Default 60s.
    pub idle_timeout: Dur,
    /// Largest upstream response body buffered for a non-streaming answer (502 beyond). Default 64MiB.
    pub max_upstream_body: ByteSize,
    /// Longest a write to a client may block (a client that stops reading a stream); the
    /// connection and its upstream are closed beyond it. Default 60s.
    pub send_timeout: Dur,
}

impl Default for LimitsSection {
    fn default() -> Self {
        use std::time::Duration;
        LimitsSection {
            max_body: ByteSize(10 * 1024 * 1024),
            max_header: ByteSize(64 * 1024),
            max_headers: 100,
            header_timeout: Dur(Duration::from_secs(10)),
            body_timeout: Dur(Duration::from_secs(30)),
            idle_timeout: Dur(Duration::from_secs(60)),
            max_upstream_body: ByteSize(64 * 1024 * 1024),
            send_timeout: Dur(Duration::from_secs(60)),
        }
    }
}

/// `server.tls:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `server.egress:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressSection {
    /// HTTP CONNECT forward proxy for all upstream traffic, e.g. `http://user:pass@proxy:3128`.
    pub proxy: Option<EnvString>,
    /// Extra CA certificates (PEM) trusted for upstream TLS, besides Mozilla's roots.
    pub ca_bundle: Option<PathBuf>,
    /// How often upstream host names are resolved again. Default 30s.
    pub dns_refresh: Dur,
}

impl Default for EgressSection {
    fn default() -> Self {
        EgressSection { proxy: None, ca_bundle: None, dns_refresh: Dur(std::time::Duration::from_secs(30)) }
    }
}

/// `server.reload:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadSection {
    /// Watch the config file and reload when it changes. Default true.
    pub watch: bool,
    /// How often the file is checked. Default 1s.
    pub poll_interval: Dur,
}

impl Default for ReloadSection {
    fn default() -> Self {
        ReloadSection { watch: true, poll_interval: Dur(std::time::Duration::from_secs(1)) }
    }
}

/// The dialect a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// api.openai.com (the default `base_url`); needs `api_key`.
    Openai,
    /// Any OpenAI-compatible host (vLLM, Ollama, Groq, Together, ...); needs `base_url`.
    OpenaiCompatible,
    /// Anthropic's Messages API (api.anthropic.com/v1 by default); needs `api_key`. Requests
    /// and answers, streams included, are translated to and from OpenAI's chat completions.
    Anthropic,
    /// AWS Bedrock's Converse API (bedrock-runtime.{region}.amazonaws.com by default); requests
    /// are signed with SigV4 (`aws`, or the AWS_* environment variables). Translated like
    /// `anthropic`.
    Bedrock,
    /// Google's Gemini API (AI Studio, generativelanguage.googleapis.com/v1beta by default);
    /// needs `api_key` (sent as `x-goog-api-key`). Translated like `anthropic`.
    Gemini,
    /// Azure OpenAI: `base_url` is the resource (`https://{resource}.openai.azure.com`), the
    /// upstream model is the deployment name; `api_key` goes in `api-key`, or an Entra ID token
    /// (`azure.bearer_token`) in `Authorization`. OpenAI's wire format otherwise.
    Azure,
    /// Answered inside the gateway: canned completions, streams and embeddings. No network.
    Mock,
}

impl ProviderKind {
    /// The name the config uses for it.
    pub fn label(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::OpenaiCompatible => "openai-compatible",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Bedrock => "bedrock",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Azure => "azure",
            ProviderKind::Mock => "mock",
        }
    }
}

/// `providers.<name>:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    pub kind: ProviderKind,
    /// Base URL including the version path, e.g. `https://api.openai.com/v1`.
    pub base_url: Option<EnvString>,
    /// Sent as `Authorization: Bearer <api_key>`. Use `${ENV_VAR}`.
    pub api_key: Option<EnvString>,
    /// Extra headers sent upstream on every request (e.g. `OpenAI-Organization`).
    #[serde(default)]
    pub headers: BTreeMap<String, EnvString>,
    /// Output tokens asked for when the client gives no `max_tokens` and the provider requires
    /// one (Anthropic). Default 4096.
    #[serde(default)]
    pub default_max_tokens: Option<u64>,
    /// AWS (kind `bedrock`): the region and credentials requests are signed with. Each field
    /// defaults to its environment variable (AWS_REGION, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN).
    #[serde(default)]
    pub aws: AwsSection,
    /// Kinds `anthropic` and `gemini`: the thinking budget (tokens) each `reasoning_effort`
    /// asks for. Without it, `reasoning_effort` is dropped and thinking stays off.
    #[serde(default)]
    pub thinking: Option<ThinkingSection>,
    /// Kind `azure`: API version, surface and Entra ID token.
    #[serde(default)]
    pub azure: AzureSection,
    /// Kind `gemini` through Vertex AI instead of AI Studio: project, location and the
    /// service-account key whose access tokens the gateway mints and refreshes.
    #[serde(default)]
    pub vertex: Option<VertexSection>,
    /// OpenAI-dialect kinds: request fields removed before the request goes upstream (a
    /// host that rejects them), as top-level names or dotted paths (`stream_options`,
    /// `messages[].name`). Added to the built-in list for well-known hosts.
    #[serde(default)]
    pub drop_params: Vec<String>,
    /// OpenAI-dialect kinds: request fields renamed on the way upstream
    /// (`{max_completion_tokens: max_tokens}`). Added to (and overriding) the built-in list.
    #[serde(default)]
    pub rename_params: BTreeMap<String, String>,
    /// Other `/v1/*` paths forwarded as-is to this provider (globs with a trailing `*`),
    /// e.g. `[/v1/responses*, /v1/files*]`.
    #[serde(default)]
    pub passthrough: Vec<String>,
    /// Connection pool, per shard.
    #[serde(default)]
    pub pool: PoolSection,
    /// The target's actor on each shard: concurrency, mailbox, restarts.
    #[serde(default)]
    pub actor: ActorSection,
    /// Kind `mock` only: honour the `x-mock-fault` and `x-mock-latency-ms` request headers
    /// (fault drills: `panic`, `panic-mid-stream`). Default false.
    #[serde(default)]
    pub mock_faults: bool,
    /// Upstream timeouts.
    #[serde(default)]
    pub timeouts: UpstreamTimeoutsSection,
    /// Upstream TLS settings.
    #[serde(default)]
    pub tls: UpstreamTlsSection,
}

/// `providers.<name>.pool:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSection {
    /// Most connections each shard opens to this provider. Default 512.
    pub max_connections: NonZeroU32,
    /// Idle connections are closed after this long. Default 90s.
    pub idle_timeout: Dur,
}

impl Default for PoolSection {
    fn default() -> Self {
        PoolSection {
            max_connections: NonZeroU32::new(512).unwrap_or(NonZeroU32::MIN),
            idle_timeout: Dur(std::time::Duration::from_secs(90)),
        }
    }
}

/// `providers.<name>.actor:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActorSection {
    /// Requests served at once on each shard. Default: `pool.max_connections` (4096 for a mock).
    pub max_in_flight: Option<NonZeroU32>,
    /// Requests that may wait for a turn on each shard; beyond that the gateway answers 503
    /// at once. Default 1024.
    pub mailbox: u32,
    /// Longest a request waits in the mailbox for a turn before a 503. Default 10s.
    pub max_wait: Dur,
    /// Wait after a panic before the actor takes requests again. Default 100ms; it doubles
    /// while panics keep coming (within a minute), up to `restart_backoff_max` (default 10s).
    pub restart_backoff: Dur,
    pub restart_backoff_max: Dur,
}

impl Default for ActorSection {
    fn default() -> Self {
        ActorSection {
            max_in_flight: None,
            mailbox: 1024,
            max_wait: Dur(std::time::Duration::from_secs(10)),
            restart_backoff: Dur(std::time::Duration::from_millis(100)),
            restart_backoff_max: Dur(std::time::Duration::from_secs(10)),
        }
    }
}

/// `providers.<name>.timeouts:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTimeoutsSection {
    /// TCP connect (+ proxy CONNECT + TLS handshake). Default 10s.
    pub connect: Dur,
    /// From the request sent to the first byte of the response head. Default 600s (a long
    /// non-streamed completion only answers when it is done).
    pub first_byte: Dur,
    /// Longest silence between two pieces of a response body. Default 300s.
    pub idle: Dur,
}

impl Default for UpstreamTimeoutsSection {
    fn default() -> Self {
        use std::time::Duration;
        UpstreamTimeoutsSection {
            connect: Dur(Duration::from_secs(10)),
            first_byte: Dur(Duration::from_secs(600)),
            idle: Dur(Duration::from_secs(300)),
        }
    }
}

/// `providers.<name>.tls:`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTlsSection {
    /// Extra CA certificates (PEM) for this provider only.
    pub ca_bundle: Option<PathBuf>,
    /// Server name to send (SNI) and verify, when it differs from the URL's host.
    pub server_name: Option<String>,
}

/// `models.<name>:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// `provider/upstream-model`. In a wildcard entry (`gpt-*`), a `*` in the upstream model
    /// stands for what the wildcard matched. Exactly one of `target` and `route`.
    pub target: Option<String>,
    /// A routing tree of targets: strategies, retries, fallbacks, breakers (see the router).
    pub route: Option<crate::router::RouteSpec>,
    /// Other names clients may use for this model.
    #[serde(default)]
    pub aliases: Vec<String>,
}
