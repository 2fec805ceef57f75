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
pub(crate) async fn ask(
    shard: &Shard,
    cfg: &Snapshot,
    rule: &Guardrail,
    phase: Phase,
    model: &str,
    metadata: &Metadata,
    texts: &[std::borrow::Cow<'_, str>],
) -> Result<Answer, String> {
    let (external, limit) = rule.external().ok_or("not an external check")?;
    let provider = cfg
        .providers
        .iter()
        .find(|p| &*p.name == external.provider())
        .ok_or_else(|| format!("no provider `{}`", external.provider()))?;
    let up = provider.upstream.as_ref().ok_or("the provider is in-process, not a service")?;
    let (path, body) = external.request(&rule.id, phase, model, metadata, texts);
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
    // The rule's timeout bounds the wait for the actor's turn too: a check must not queue
    // behind requests that are themselves waiting for checks.
    let served = rt::timeout(limit, actor.serve(&shard.pool, Box::pin(work)))
        .await
        .map_err(|_| format!("provider {}: no turn within {} ms", provider.name, limit.as_millis()))?;
    match served {
        Served::Done(Ok((status, body))) => external.read(status, &body, texts.len()),
        Served::Done(Err(why)) => Err(format!("provider {}: {why}", provider.name)),
        Served::Refused(r) => Err(format!("provider {}: {r:?}", provider.name)),
        Served::Panicked(m) => Err(format!("provider {}: the call failed ({m})", provider.name)),
    }
}

/// What the services are asked about: the request's texts as they go to the provider.
pub(super) struct Asked {
    pub model: String,
    pub metadata: Metadata,
    pub texts: Vec<std::borrow::Cow<'static, str>>,
}

/// A rule (by index) and its service's answer, or why there is none.
pub(super) type RuleAnswer = (usize, Result<Answer, String>);

/// Service checks asked while the provider is being called (validating rules with `overlap`).
/// Their answers come in on their own task; the request's answer waits for them at
/// [`super::guard::gate`].
pub struct PendingChecks {
    done: rt::LocalEvent,
    answers: Rc<std::cell::RefCell<Vec<RuleAnswer>>>,
    rules: Vec<usize>,
    /// The config the rules' indexes refer to.
    pub(super) cfg: crate::shard::LocalSnapshot,
}

impl std::fmt::Debug for PendingChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingChecks").field("rules", &self.rules).finish_non_exhaustive()
    }
}

/// Sets the event when the checking task ends, however it ends (a panic, or the shard
/// stopping), so that nothing waits for it forever.
struct SetOnDrop(rt::LocalEvent);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// Asks the services of `rules` (indexes into `cfg.guardrails`) at once, on a task of the
/// shard's own.
pub(super) fn start(
    shard: &Rc<Shard>,
    cfg: crate::shard::LocalSnapshot,
    rules: Vec<usize>,
    asked: Asked,
) -> PendingChecks {
    let done = rt::LocalEvent::new();
    let answers = Rc::new(std::cell::RefCell::new(Vec::new()));
    let kept = cfg.clone();
    let (set, into, shard, which) = (SetOnDrop(done.clone()), answers.clone(), shard.clone(), rules.clone());
    rt::spawn(async move {
        let _set = set;
        let asks = which.iter().filter_map(|&i| cfg.guardrails.get(i).map(|rule| (i, rule))).map(|(i, rule)| {
            let (shard, cfg, asked) = (&shard, &cfg, &asked);
            let phase = Phase::Input;
            async move { (i, Box::pin(ask(shard, cfg, rule, phase, &asked.model, &asked.metadata, &asked.texts)).await) }
        });
        let got = futures_util::future::join_all(asks).await;
        *into.borrow_mut() = got;
    });
    PendingChecks { done, answers, rules, cfg: kept }
}

impl PendingChecks {
    /// Each rule's answer, once all are in. A rule whose task ended without answering (it
    /// panicked) gets an error, which its enforcement judges.
    pub(super) async fn verdicts(self) -> Vec<RuleAnswer> {
        self.done.wait().await;
        let mut got = std::mem::take(&mut *self.answers.borrow_mut());
        for &i in &self.rules {
            if !got.iter().any(|(j, _)| *j == i) {
                got.push((i, Err("the check ended without an answer".to_owned())));
            }
        }
        got
    }
}
