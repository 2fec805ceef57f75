//! The embedded defaults: what `shardgate serve` runs with no config file. Listens on
//! 127.0.0.1:8080, exposes every provider whose API key is in the environment, and always the
//! in-process `mock` model, so a first `curl` works with no account anywhere.

use std::collections::BTreeMap;

use super::file::{
    ConfigFile, ModelSection, PoolSection, ProviderKind, ProviderSection, UpstreamTimeoutsSection, UpstreamTlsSection,
};
use super::units::EnvString;

/// OpenAI-compatible hosts picked up from the environment: (provider name, key variable, base URL).
const COMPATIBLE_HOSTS: &[(&str, &str, &str)] = &[
    ("groq", "GROQ_API_KEY", "https://api.groq.com/openai/v1"),
    ("mistral", "MISTRAL_API_KEY", "https://api.mistral.ai/v1"),
    ("deepseek", "DEEPSEEK_API_KEY", "https://api.deepseek.com/v1"),
    ("together", "TOGETHER_API_KEY", "https://api.together.xyz/v1"),
    ("fireworks", "FIREWORKS_API_KEY", "https://api.fireworks.ai/inference/v1"),
    ("openrouter", "OPENROUTER_API_KEY", "https://openrouter.ai/api/v1"),
    ("xai", "XAI_API_KEY", "https://api.x.ai/v1"),
];

/// OpenAI paths beyond the three translated endpoints, forwarded as-is.
const OPENAI_PASSTHROUGH: &[&str] = &[
    "/v1/responses*",
    "/v1/files*",
    "/v1/uploads*",
    "/v1/batches*",
    "/v1/audio/*",
    "/v1/images/*",
    "/v1/moderations",
    "/v1/fine_tuning/*",
    "/v1/vector_stores*",
];

fn provider(kind: ProviderKind, base_url: Option<&str>, key: Option<String>, passthrough: &[&str]) -> ProviderSection {
    ProviderSection {
        kind,
        base_url: base_url.map(|u| EnvString(u.to_string())),
        api_key: key.map(EnvString),
        headers: BTreeMap::new(),
        default_max_tokens: None,
        aws: Default::default(),
        passthrough: passthrough.iter().map(|s| s.to_string()).collect(),
        pool: PoolSection::default(),
        actor: Default::default(),
        mock_faults: false,
        azure: Default::default(),
        vertex: None,
        thinking: None,
        drop_params: Vec::new(),
        rename_params: BTreeMap::new(),
        timeouts: UpstreamTimeoutsSection::default(),
        tls: UpstreamTlsSection::default(),
    }
}

fn model(target: &str) -> ModelSection {
    ModelSection { target: Some(target.to_string()), route: None, aliases: Vec::new() }
}

/// Builds the default config from an environment lookup.
pub fn embedded(env: impl Fn(&str) -> Option<String>) -> ConfigFile {
    let mut cfg = ConfigFile::default();
    let key = |name: &str| env(name).filter(|v| !v.trim().is_empty());

    cfg.providers.insert("mock".into(), provider(ProviderKind::Mock, None, None, &[]));
    cfg.models.insert("mock".into(), model("mock/mock-1"));
    cfg.models.insert("mock/*".into(), model("mock/*"));

    if let Some(k) = key("OPENAI_API_KEY") {
        let base = env("OPENAI_BASE_URL");
        cfg.providers
            .insert("openai".into(), provider(ProviderKind::Openai, base.as_deref(), Some(k), OPENAI_PASSTHROUGH));
        for (name, target) in [
            ("openai/*", "openai/*"),
            ("gpt-*", "openai/gpt-*"),
            ("chatgpt-*", "openai/chatgpt-*"),
            ("o1*", "openai/o1*"),
            ("o3*", "openai/o3*"),
            ("o4*", "openai/o4*"),
            ("text-embedding-*", "openai/text-embedding-*"),
        ] {
            cfg.models.insert(name.into(), model(target));
        }
    }
    if let Some(k) = key("ANTHROPIC_API_KEY") {
        let base = env("ANTHROPIC_BASE_URL");
        cfg.providers.insert("anthropic".into(), provider(ProviderKind::Anthropic, base.as_deref(), Some(k), &[]));
        for (name, target) in [("anthropic/*", "anthropic/*"), ("claude-*", "anthropic/claude-*")] {
            cfg.models.insert(name.into(), model(target));
        }
    }
    if let Some(k) = key("GEMINI_API_KEY") {
        cfg.providers.insert("gemini".into(), provider(ProviderKind::Gemini, None, Some(k), &[]));
        for (name, target) in [("gemini/*", "gemini/*"), ("gemini-*", "gemini/gemini-*")] {
            cfg.models.insert(name.into(), model(target));
        }
    }
    // Azure OpenAI needs both: the resource's endpoint and its key. Models are deployments.
    if let (Some(k), Some(endpoint)) = (key("AZURE_OPENAI_API_KEY"), key("AZURE_OPENAI_ENDPOINT")) {
        cfg.providers
            .insert("azure".into(), provider(ProviderKind::Azure, Some(endpoint.trim_end_matches('/')), Some(k), &[]));
        cfg.models.insert("azure/*".into(), model("azure/*"));
    }
    for (name, var, url) in COMPATIBLE_HOSTS {
        if let Some(k) = key(var) {
            cfg.providers.insert((*name).into(), provider(ProviderKind::OpenaiCompatible, Some(url), Some(k), &[]));
            cfg.models.insert(format!("{name}/*"), model(&format!("{name}/*")));
        }
    }
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::compile;

    #[test]
    fn mock_only_without_keys() {
        let snap = compile(&embedded(|_| None), "embedded", 1).unwrap();
        assert_eq!(snap.providers.len(), 1);
        assert_eq!(snap.resolve_model("mock").unwrap().upstream_model, "mock-1");
        assert_eq!(snap.limits, crate::http::Limits::default());
    }

    #[test]
    fn providers_from_environment() {
        let env = |k: &str| match k {
            "OPENAI_API_KEY" => Some("sk-test".to_string()),
            "GROQ_API_KEY" => Some("gsk".to_string()),
            _ => None,
        };
        let snap = compile(&embedded(env), "embedded", 1).unwrap();
        let r = snap.resolve_model("gpt-4o-mini").unwrap();
        assert_eq!((&*r.provider.name, &*r.upstream_model), ("openai", "gpt-4o-mini"));
        let r = snap.resolve_model("groq/llama-3.1-8b-instant").unwrap();
        assert_eq!((&*r.provider.name, &*r.upstream_model), ("groq", "llama-3.1-8b-instant"));
        assert_eq!(&*snap.passthrough("/v1/responses").unwrap().name, "openai");
        let up = r.provider.upstream.as_ref().unwrap();
        assert_eq!((up.host.as_str(), up.port, up.base_path.as_str()), ("api.groq.com", 443, "/openai/v1"));
    }

    #[test]
    fn azure_from_environment_needs_endpoint_and_key() {
        let only_key = |k: &str| (k == "AZURE_OPENAI_API_KEY").then(|| "az-key".to_string());
        assert!(compile(&embedded(only_key), "embedded", 1).unwrap().resolve_model("azure/gpt").is_none());
        let env = |k: &str| match k {
            "AZURE_OPENAI_API_KEY" => Some("az-key".to_string()),
            "AZURE_OPENAI_ENDPOINT" => Some("https://my-res.openai.azure.com/".to_string()),
            _ => None,
        };
        let snap = compile(&embedded(env), "embedded", 1).unwrap();
        let r = snap.resolve_model("azure/my-deployment").unwrap();
        assert_eq!(&*r.upstream_model, "my-deployment");
        let up = r.provider.upstream.as_ref().unwrap();
        assert_eq!(up.host, "my-res.openai.azure.com");
        assert!(up.headers.iter().any(|(n, v)| n == "api-key" && v == "az-key"));
        assert!(r.provider.azure.is_some());
    }

    #[test]
    fn anthropic_from_environment_authenticates_its_way() {
        let env = |k: &str| (k == "ANTHROPIC_API_KEY").then(|| "sk-ant-test".to_string());
        let snap = compile(&embedded(env), "embedded", 1).unwrap();
        let r = snap.resolve_model("claude-sonnet-4-5").unwrap();
        assert_eq!((&*r.provider.name, &*r.upstream_model), ("anthropic", "claude-sonnet-4-5"));
        let up = r.provider.upstream.as_ref().unwrap();
        assert_eq!((up.host.as_str(), up.base_path.as_str()), ("api.anthropic.com", "/v1"));
        let names: Vec<&str> = up.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-api-key", "anthropic-version"], "no bearer token for Anthropic");
    }

    #[test]
    fn gemini_from_environment() {
        let env = |k: &str| (k == "GEMINI_API_KEY").then(|| "g-test".to_string());
        let snap = compile(&embedded(env), "embedded", 1).unwrap();
        let r = snap.resolve_model("gemini-2.5-flash").unwrap();
        assert_eq!((&*r.provider.name, &*r.upstream_model), ("gemini", "gemini-2.5-flash"));
        let up = r.provider.upstream.as_ref().unwrap();
        assert_eq!((up.host.as_str(), up.base_path.as_str()), ("generativelanguage.googleapis.com", "/v1beta"));
        assert_eq!(up.headers.first().map(|(n, _)| n.as_str()), Some("x-goog-api-key"));
    }
}
