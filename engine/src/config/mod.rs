//! Configuration: the YAML file (`file`), its value types (`units`, `url`), the compiled runtime
//! snapshot (`snapshot`), the embedded defaults, and loading with precise errors.

mod defaults;
pub mod file;
pub mod snapshot;
pub mod team_files;
pub mod units;
pub mod url;

use std::path::{Path, PathBuf};

pub use file::{ConfigFile, ProviderKind, ShardCount};
pub use snapshot::{
    Managed, ModelRoute, Provider, Resolved, Snapshot, Thinking, Upstream, UpstreamLimits, ValidationErrors,
    VertexTarget, compile, compile_with,
};

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A YAML file; reloaded on SIGHUP and (when `server.reload.watch`) on change.
    File(PathBuf),
    /// YAML text (tests, embedding).
    Text { name: String, yaml: String },
    /// No file: the embedded defaults (providers whose keys are in the environment, plus `mock`).
    Embedded,
}

impl ConfigSource {
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::Text { name, .. } => name.clone(),
            ConfigSource::Embedded => "embedded defaults".to_string(),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigSource::File(p) => Some(p),
            _ => None,
        }
    }
}

/// Why a configuration was refused. The running configuration (if any) stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// Syntax, unknown field, wrong type: the message names the line, column and field.
    #[error("invalid config in {source_name}: {message}")]
    Parse { source_name: String, message: String },
    /// Semantically wrong: each entry names the field.
    #[error("invalid config in {source_name}:\n{errors}")]
    Invalid { source_name: String, errors: ValidationErrors },
}

/// Parses YAML text into the file form.
pub fn parse(source_name: &str, yaml: &str) -> Result<ConfigFile, ConfigError> {
    if yaml.trim().is_empty() {
        return Ok(ConfigFile::default());
    }
    // serde-saphyr's message names the line and column and quotes the offending lines.
    serde_saphyr::from_str::<ConfigFile>(yaml)
        .map_err(|e| ConfigError::Parse { source_name: source_name.to_string(), message: e.to_string() })
}

/// Reads and parses the configuration (not yet compiled), with the team files it names
/// (`team_files:`) checked and merged into its governance sections.
pub fn read(source: &ConfigSource) -> Result<ConfigFile, ConfigError> {
    let file = match source {
        ConfigSource::File(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::Read { path: path.display().to_string(), source: e })?;
            parse(&path.display().to_string(), &text)?
        }
        ConfigSource::Text { name, yaml } => parse(name, yaml)?,
        ConfigSource::Embedded => return Ok(defaults::embedded(|k| std::env::var(k).ok())),
    };
    team_files::apply(source, file)
}

/// Reads, parses and compiles.
pub fn load(source: &ConfigSource, generation: u64) -> Result<(ConfigFile, Snapshot), ConfigError> {
    load_with(source, generation, &Managed::default())
}

/// [`load`], with what the admin API made.
pub fn load_with(
    source: &ConfigSource,
    generation: u64,
    managed: &Managed,
) -> Result<(ConfigFile, Snapshot), ConfigError> {
    let file = read(source)?;
    let snapshot = compile_with(&file, &source.describe(), generation, managed)
        .map_err(|errors| ConfigError::Invalid { source_name: source.describe(), errors })?;
    Ok((file, snapshot))
}

/// Where the store lives for this source, if it has one: `store.path` (relative to the config
/// file's directory), else `shardgate.db` beside the config file (or in the working directory
/// for the embedded defaults); config given as text has none unless it names one.
pub fn store_path(source: &ConfigSource, file: &ConfigFile) -> Option<PathBuf> {
    let base = match source {
        ConfigSource::File(p) => p.parent().map(Path::to_path_buf).unwrap_or_default(),
        _ => PathBuf::new(),
    };
    match file.store.path.as_deref() {
        Some("none") => None,
        Some(p) => Some(base.join(p)),
        None => match source {
            ConfigSource::Text { .. } => None,
            _ => Some(base.join("shardgate.db")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(yaml: &str) -> Result<Snapshot, ConfigError> {
        load(&ConfigSource::Text { name: "test.yaml".into(), yaml: yaml.into() }, 1).map(|(_, s)| s)
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let err = load_text("server:\n  listen: 127.0.0.1:1\n  lisen: 1\n").unwrap_err().to_string();
        assert!(err.contains("test.yaml"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn wrong_type_names_line() {
        let err = load_text("server:\n  limits:\n    max_body: lots\n").unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("invalid size"), "{err}");
    }

    #[test]
    fn semantic_errors_are_all_reported() {
        let err = load_text(
            "providers:\n  m: {kind: mock}\nmodels:\n  a: {target: nope/x}\n  b: {target: m}\n  c: {target: m/x, aliases: [e]}\n  e: {target: m/y}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown provider \"nope\""), "{err}");
        assert!(err.contains("models.b.target"), "{err}");
        assert!(err.contains("defined twice"), "{err}");
    }

    #[test]
    fn a_model_takes_a_target_or_a_route() {
        let err = load_text(
            "providers:\n  m: {kind: mock}\nmodels:\n  both: {target: m/x, route: {targets: [{target: m/x}]}}\n  neither: {aliases: [n]}\n  'w-*': {route: {targets: [{target: m/x}]}}\n  bad: {route: {targets: [{target: nope/x}]}}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("models.both: give exactly one of `target` and `route`"), "{err}");
        assert!(err.contains("models.neither: give exactly one"), "{err}");
        assert!(err.contains("models.w-*: a wildcard name takes a `target`"), "{err}");
        assert!(err.contains("nope"), "{err}");
        let s = load_text(
            "providers:\n  m: {kind: mock}\n  n: {kind: mock}\nmodels:\n  r: {route: {strategy: weighted, targets: [{target: m/x}, {target: n/y}]}}\n  d: {target: m/z}\n",
        )
        .unwrap();
        assert!(matches!(s.model_route("r"), Some(ModelRoute::Routed(_))));
        assert!(matches!(s.model_route("d"), Some(ModelRoute::Direct(_))));
        // Endpoints without routing get the first target.
        assert_eq!(s.resolve_model("r").unwrap().upstream_model, "x");
        assert_eq!(s.route_targets.len(), 2);
    }

    #[test]
    fn routes_exact_alias_and_wildcard() {
        let s = load_text(
            "providers:\n  local: {kind: openai-compatible, base_url: 'http://127.0.0.1:9/v1'}\n  m: {kind: mock}\nmodels:\n  fast: {target: local/llama-3, aliases: [quick]}\n  'local/*': {target: 'local/*'}\n  'gpt-*': {target: 'local/gpt-*'}\n  mock: {target: m/mock-1}\n",
        )
        .unwrap();
        assert_eq!(s.resolve_model("quick").unwrap().upstream_model, "llama-3");
        assert_eq!(s.resolve_model("local/qwen").unwrap().upstream_model, "qwen");
        assert_eq!(s.resolve_model("gpt-4o").unwrap().upstream_model, "gpt-4o");
        assert!(s.resolve_model("nothing").is_none());
        let list: serde_json::Value = serde_json::from_slice(&s.models_json).unwrap();
        let ids: Vec<_> = list["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["fast", "quick", "mock"]);
        assert!(s.model_json("quick").is_some());
    }

    #[test]
    fn provider_kinds_check_their_own_fields() {
        let err = load_text(
            "providers:\n  az: {kind: azure, base_url: 'https://r.openai.azure.com'}\n  az2: {kind: azure, api_key: k}\n  an: {kind: anthropic, api_key: k, drop_params: [user]}\n  o: {kind: openai, api_key: k, azure: {api_version: '2024-10-21'}}\n  c: {kind: openai-compatible, base_url: 'http://127.0.0.1:9/v1', drop_params: ['']}\n  d: {kind: mock, actor: {mailbox: 2}, mock_faults: true}\n  e: {kind: openai, api_key: k, mock_faults: true}\n  f: {kind: azure, base_url: 'https://r.openai.azure.com', api_key: k, azure: {entra: {tenant_id: t, client_id: c, client_secret: s}}}\n  g: {kind: azure, base_url: 'https://r.openai.azure.com', azure: {entra: {tenant_id: t, client_id: c, client_secret: ''}}}\n  h: {kind: anthropic, api_key: k, thinking: {low: 100, medium: 2000, high: 4000}}\n  i: {kind: openai, api_key: k, thinking: {low: 1, medium: 2, high: 3}}\n  j: {kind: azure, base_url: 'https://r.openai.azure.com', azure: {managed_identity: {}, entra: {tenant_id: t, client_id: c, client_secret: s}}}\n  k: {kind: openai, api_key: k, azure: {managed_identity: {}}}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("providers.az: kind azure needs api_key"), "{err}");
        assert!(err.contains("providers.az2.base_url is required for kind azure"), "{err}");
        assert!(err.contains("providers.an: drop_params and rename_params apply to OpenAI-dialect kinds"), "{err}");
        assert!(err.contains("providers.o.azure applies to kind azure only"), "{err}");
        assert!(err.contains("providers.c: "), "an empty parameter path is refused: {err}");
        assert!(err.contains("providers.e.mock_faults applies to kind mock only"), "{err}");
        assert!(
            err.contains(
                "providers.f: give one of api_key, azure.bearer_token, azure.entra and azure.managed_identity"
            ),
            "{err}"
        );
        assert!(err.contains("providers.j: give azure.entra (an application) or azure.managed_identity"), "{err}");
        assert!(err.contains("providers.k.azure applies to kind azure only"), "{err}");
        assert!(err.contains("providers.g.azure.entra.client_secret is empty"), "{err}");
        assert!(err.contains("providers.h.thinking: Anthropic budgets are at least 1024 tokens"), "{err}");
        assert!(err.contains("providers.i.thinking applies to kinds anthropic and gemini"), "{err}");
        assert!(!err.contains("providers.d"), "{err}");
    }

    #[test]
    fn host_quirks_and_azure_surfaces_compile() {
        let s = load_text(
            "providers:\n  groq: {kind: openai-compatible, base_url: 'https://api.groq.com/openai/v1', api_key: k, rename_params: {max_completion_tokens: max_tokens}}\n  plain: {kind: openai-compatible, base_url: 'http://127.0.0.1:9/v1'}\n  az: {kind: azure, base_url: 'https://r.openai.azure.com', azure: {surface: v1, bearer_token: t}}\nmodels:\n  g: {target: groq/llama}\n  p: {target: plain/x}\n  a: {target: az/dep}\n",
        )
        .unwrap();
        let groq = s.resolve_model("g").unwrap().provider;
        let q = groq.quirks.as_ref().expect("groq has built-in quirks");
        assert!(q.drop_params.iter().any(|p| p == "logit_bias"), "{q:?}");
        assert!(q.rename_params.iter().any(|(a, b)| a == "max_completion_tokens" && b == "max_tokens"));
        assert!(s.resolve_model("p").unwrap().provider.quirks.is_none(), "no quirks: the body is never parsed");
        let az = s.resolve_model("a").unwrap().provider;
        assert_eq!(az.azure, Some(adapters::azure::AzureSurface::V1));
        let up = az.upstream.as_ref().unwrap();
        assert!(up.headers.iter().any(|(n, v)| n == "authorization" && v == "Bearer t"));
    }

    #[test]
    fn passthrough_most_specific_first() {
        let s = load_text(
            "providers:\n  a: {kind: openai-compatible, base_url: 'http://127.0.0.1:9/v1', passthrough: ['/v1/*']}\n  b: {kind: openai-compatible, base_url: 'http://127.0.0.1:8/v1', passthrough: ['/v1/files*']}\n",
        )
        .unwrap();
        assert_eq!(&*s.passthrough("/v1/files/abc").unwrap().name, "b");
        assert_eq!(&*s.passthrough("/v1/responses").unwrap().name, "a");
    }

    #[test]
    fn openai_requires_key() {
        let err = load_text("providers:\n  o: {kind: openai}\n").unwrap_err().to_string();
        assert!(err.contains("api_key is required"), "{err}");
    }

    #[test]
    fn policy_errors_name_the_entry() {
        let err =
            load_text("keys:\n  - {name: ci, secret: sk-sg-0123456789abcdef, user: ghost}\n").unwrap_err().to_string();
        assert!(err.contains("keys[0].user (key `ci`): user `ghost` is not declared"), "{err}");
    }

    #[test]
    fn empty_file_is_defaults() {
        let s = load_text("").unwrap();
        assert!(s.providers.is_empty());
    }
}
