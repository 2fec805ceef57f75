//! Guardrail checks that ask a service (OpenAI moderations, Azure AI Content Safety, a
//! webhook): the call goes to a provider of the config through its actor (mailbox, supervision,
//! pooled connections) and is bounded by the rule's timeout. What to send and how to read the
//! answer is the policy crate's ([`policy::guardrails::external`]).

use std::rc::Rc;

use bytes::Bytes;
use policy::Metadata;
use policy::guardrails::external::Answer;
use policy::guardrails::{Guardrail, Phase};

use super::supervised;
use crate::actor::Served;
use crate::config::Snapshot;
use crate::rt;
use crate::shard::Shard;
use crate::upstream::{RequestBytes, Shared, send};

/// Largest answer read from a checking service.
const MAX_ANSWER: u64 = 1 << 20;

/// Asks the rule's service about `texts`; `Err` says why there is no answer.
pub(super) async fn ask(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    rule: &Guardrail,
    model: &str,
    metadata: &Metadata,
    texts: &[String],
) -> Result<Answer, String> {
    let (external, limit) = rule.external().ok_or("not an external check")?;
    let provider = cfg
        .providers
        .iter()
        .find(|p| &*p.name == external.provider())
        .ok_or_else(|| format!("no provider `{}`", external.provider()))?;
    let up = provider.upstream.as_ref().ok_or("the provider is in-process, not a service")?;
    let (path, body) = external.request(&rule.id, Phase::Input, model, metadata, texts);
    let request = RequestBytes {
        head: super::side_request::head(shard, provider, up, "POST", &path, Some(body.len())),
        body: Bytes::from(body),
        is_head: false,
    };
    let shared = Shared { pool: &shard.pool, dns: &shard.process.dns, metrics: &shard.metrics };
    let work = async {
        let call = async {
            let mut answer = send(&shared, up, &request, cfg.upstream_limits).await.map_err(|e| e.to_string())?;
            let status = answer.head.status;
            let body = answer.read_to_end(MAX_ANSWER).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((status, body))
        };
        rt::timeout(limit, call).await.map_err(|_| format!("no answer within {} ms", limit.as_millis()))?
    };
    let actor = supervised::actor(shard, provider);
    match actor.serve(&shard.pool, Box::pin(work)).await {
        Served::Done(Ok((status, body))) => external.read(status, &body, texts.len()),
        Served::Done(Err(why)) => Err(format!("provider {}: {why}", provider.name)),
        Served::Refused(r) => Err(format!("provider {}: {r:?}", provider.name)),
        Served::Panicked(m) => Err(format!("provider {}: the call failed ({m})", provider.name)),
    }
}
