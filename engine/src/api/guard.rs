//! Guardrails on the request path: the input phase before a request is sent anywhere, the
//! output phase on the answer (whole, or as it streams). The checks are the policy crate's
//! ([`policy::guardrails`]); this module finds the texts in each API's JSON, writes rewritten
//! ones back, and turns verdicts into errors, headers, logs and metrics.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use adapters::openai::request::{PromptTexts, TextRef, TextWalk};
use bytes::Bytes;
use policy::guardrails::external::Answer;
use policy::guardrails::{
    Enforcement, Facts, Guardrail, Guardrails, Mode, Outcome, Phase, Selected, StreamStep, StreamWindow, Vault, Verdict,
};
use policy::{Identity, Metadata};
use serde_json::Value;
use smol_str::SmolStr;

use super::RequestCtx;
use super::guard_texts::RequestTexts;
use crate::config::Snapshot;
use crate::error::{ErrorKind, GatewayError};
use crate::metrics::Endpoint;
use crate::shard::Shard;

/// Which rules one request is subject to, and what its input phase took out.
#[derive(Debug)]
pub struct GuardState {
    selected: Selected,
    vault: Vault,
    metadata: Metadata,
    asked_json: bool,
    /// `response_format.json_schema.schema`, for structure rules on the answer.
    schema: Option<Value>,
    /// Rules that already gave a verdict on this request (each is counted once per phase).
    noted: Vec<(Arc<str>, Phase)>,
    /// One window per streamed choice.
    windows: Vec<StreamWindow>,
    /// One window per streamed tool call's arguments: (choice, call, window).
    tool_windows: Vec<(usize, usize, StreamWindow)>,
    /// Anthropic stream blocks that are tool calls (`input_json_delta`), by block index.
    json_blocks: Vec<usize>,
    /// The last stream chunk's envelope, for text flushed at its end.
    template: Option<Value>,
}

/// Verdict counters per rule, phase and outcome, shared with the metrics renderer.
#[derive(Debug)]
pub struct GuardStats {
    pub rule: Arc<str>,
    counts: [[AtomicU64; 5]; 4],
}

const PHASES: [Phase; 4] = [Phase::Input, Phase::Output, Phase::ToolArgs, Phase::ToolResult];
const OUTCOMES: [Outcome; 5] =
    [Outcome::Blocked, Outcome::Flagged, Outcome::Redacted, Outcome::Audited, Outcome::Errored];

impl GuardStats {
    fn new(rule: Arc<str>) -> GuardStats {
        GuardStats { rule, counts: Default::default() }
    }

    fn count(&self, phase: Phase, outcome: Outcome) {
        let p = PHASES.iter().position(|x| *x == phase).unwrap_or(0);
        let o = OUTCOMES.iter().position(|x| *x == outcome).unwrap_or(0);
        if let Some(c) = self.counts.get(p).and_then(|row| row.get(o)) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// (phase, outcome, count) for every non-zero counter.
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        PHASES.iter().enumerate().flat_map(move |(p, phase)| {
            OUTCOMES.iter().enumerate().filter_map(move |(o, outcome)| {
                let n = self.counts.get(p)?.get(o)?.load(Relaxed);
                (n > 0).then_some((phase.as_str(), outcome.as_str(), n))
            })
        })
    }
}

/// The shard's counters for the current config's rules (kept across reloads by rule id).
#[derive(Default)]
pub struct GuardCounters {
    generation: u64,
    stats: Vec<Arc<GuardStats>>,
}

impl GuardCounters {
    fn of(&mut self, shard: &Shard, cfg: &Snapshot, rule: &Arc<str>) -> Option<Arc<GuardStats>> {
        if self.generation != cfg.generation || self.stats.is_empty() {
            let old = std::mem::take(&mut self.stats);
            self.stats = cfg
                .guardrails
                .ids()
                .map(|id| {
                    old.iter().find(|s| &s.rule == id).cloned().unwrap_or_else(|| Arc::new(GuardStats::new(id.clone())))
                })
                .collect();
            self.generation = cfg.generation;
            shard.metrics.guardrails.store(Arc::new(self.stats.clone()));
        }
        self.stats.iter().find(|s| &s.rule == rule).cloned()
    }
}

/// The texts a model reads in a request of `endpoint`, in a fixed order (the same walk writes
/// rewritten ones back).
fn request_texts(endpoint: Endpoint, body: &mut Value, f: &mut dyn FnMut(&mut String)) {
    let Value::Object(o) = body else { return };
    match endpoint {
        Endpoint::ChatCompletions => {
            for m in o.get_mut("messages").and_then(Value::as_array_mut).into_iter().flatten() {
                content(m.get_mut("content"), "text", f);
                tool_arguments(m, f);
            }
        }
        Endpoint::Completions => strings(o.get_mut("prompt"), f),
        Endpoint::Embeddings => strings(o.get_mut("input"), f),
        Endpoint::Messages => {
            content(o.get_mut("system"), "text", f);
            for m in o.get_mut("messages").and_then(Value::as_array_mut).into_iter().flatten() {
                content(m.get_mut("content"), "text", f);
                tool_arguments(m, f);
            }
        }
        _ => {}
    }
}

/// A message's tool calls: each one's `function.arguments` (a JSON text, read as text).
fn tool_arguments(message: &mut Value, f: &mut dyn FnMut(&mut String)) {
    for call in message.get_mut("tool_calls").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(Value::String(s)) = call.pointer_mut("/function/arguments") {
            f(s);
        }
    }
}

/// A string, or a list of strings.
fn strings(v: Option<&mut Value>, f: &mut dyn FnMut(&mut String)) {
    match v {
        Some(Value::String(s)) => f(s),
        Some(Value::Array(items)) => {
            for item in items {
                if let Value::String(s) = item {
                    f(s);
                }
            }
        }
        _ => {}
    }
}

/// A message's content: a string, or parts whose `text` (and tool results' content) is read.
fn content(v: Option<&mut Value>, field: &str, f: &mut dyn FnMut(&mut String)) {
    match v {
        Some(Value::String(s)) => f(s),
        Some(Value::Array(parts)) => {
            for part in parts {
                let Value::Object(p) = part else { continue };
                if let Some(Value::String(s)) = p.get_mut(field) {
                    f(s);
                }
                // Anthropic's tool results carry text too.
                if p.get("type").and_then(Value::as_str) == Some("tool_result") {
                    content(p.get_mut("content"), "text", f);
                }
                // A tool call's input is an object: read as its JSON text, and put back parsed
                // (an input a rewrite left unreadable is emptied, never sent as it was).
                if p.get("type").and_then(Value::as_str) == Some("tool_use")
                    && let Some(input) = p.get_mut("input")
                {
                    let mut text = input.to_string();
                    let before = text.clone();
                    f(&mut text);
                    if text != before {
                        *input = serde_json::from_str(&text).unwrap_or_else(|_| Value::Object(serde_json::Map::new()));
                    }
                }
            }
        }
        _ => {}
    }
}

/// The texts of an answer: OpenAI chat completions and completions, or Anthropic messages.
fn answer_texts(body: &mut Value, f: &mut dyn FnMut(&mut String)) {
    let Value::Object(o) = body else { return };
    for choice in o.get_mut("choices").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(Value::String(s)) = choice.pointer_mut("/message/content") {
            f(s);
        }
        if let Some(message) = choice.get_mut("message") {
            tool_arguments(message, f);
        }
        if let Some(Value::String(s)) = choice.get_mut("text") {
            f(s);
        }
    }
    if o.get("type").and_then(Value::as_str) == Some("message") {
        content(o.get_mut("content"), "text", f);
    }
}

/// A walk over the texts of a JSON body, calling back with each one (mutably).
type Walk<'a> = &'a dyn Fn(&mut Value, &mut dyn FnMut(&mut String));

fn collect(body: &mut Value, walk: Walk<'_>) -> Vec<Cow<'static, str>> {
    let mut texts = Vec::new();
    walk(body, &mut |s: &mut String| texts.push(Cow::Owned(s.clone())));
    texts
}

fn write_back(body: &mut Value, texts: Vec<Cow<'_, str>>, walk: Walk<'_>) {
    let mut it = texts.into_iter();
    walk(body, &mut |s: &mut String| {
        if let Some(t) = it.next() {
            *s = t.into_owned();
        }
    });
}

/// The texts the request scan found on its own parse, when it read them all: no
/// `response_format` (which it does not read) and nothing nested past its walk.
fn pre_found<'b>(found: Option<&PromptTexts>, body: &'b [u8]) -> Option<Vec<Cow<'b, str>>> {
    found.filter(|f| !f.response_format).and_then(|f| f.resolve(body))
}

/// The scan's text walk for `endpoint`, when guardrails may read it (`/v1/messages` has its
/// own parse).
pub fn text_walk(cfg: &Snapshot, endpoint: Endpoint) -> Option<TextWalk> {
    if cfg.guardrails.is_empty() {
        return None;
    }
    match endpoint {
        Endpoint::ChatCompletions => Some(TextWalk::Chat),
        Endpoint::Completions => Some(TextWalk::Completions),
        Endpoint::Embeddings => Some(TextWalk::Embeddings),
        _ => None,
    }
}

fn invalid_json(e: serde_json::Error) -> GatewayError {
    GatewayError::new(ErrorKind::InvalidJson, format!("invalid JSON body: {e}"))
}

/// The request as a `Value`, to write a service's rewrite into: only when its texts are the
/// ones the service was shown (a body that repeats a key is ambiguous, and refused).
fn value_with_texts(endpoint: Endpoint, body: &[u8], shown: &[Cow<'_, str>]) -> Result<Value, GatewayError> {
    let mut v: Value = serde_json::from_slice(body).map_err(invalid_json)?;
    let walk = |v: &mut Value, f: &mut dyn FnMut(&mut String)| request_texts(endpoint, v, f);
    if collect(&mut v, &walk) != shown {
        return Err(GatewayError::new(
            ErrorKind::InvalidJson,
            "the request repeats a key, so a guardrail's rewrite cannot be placed: send each key once",
        ));
    }
    Ok(v)
}

/// The 400 a blocked request or answer gets: rule and categories named, the text never quoted.
pub fn violation(v: &Verdict) -> GatewayError {
    let what = if v.phase == Phase::Input { "The request was blocked" } else { "The answer was blocked" };
    GatewayError::new(ErrorKind::GuardrailViolation, format!("{what} by {}.", v.describe()))
}

/// Logs, counts and notes in the answer's headers each verdict (each rule once per phase).
fn record(
    shard: &Shard,
    cfg: &Snapshot,
    noted: &mut Vec<(Arc<str>, Phase)>,
    verdicts: &[Verdict],
    ctx: &mut RequestCtx,
) {
    for v in verdicts {
        if noted.iter().any(|(r, p)| *r == v.rule && *p == v.phase) {
            continue;
        }
        noted.push((v.rule.clone(), v.phase));
        count_and_log(shard, cfg, v);
        let entry = format!("{}={}", v.rule, v.outcome.as_str());
        match ctx.headers.iter_mut().find(|(n, _)| *n == GUARDRAILS_HEADER) {
            Some((_, value)) => *value = SmolStr::from(format!("{value}, {entry}")),
            None => ctx.headers.push((GUARDRAILS_HEADER, SmolStr::from(entry))),
        }
    }
}

/// A verdict in the metrics and the log.
pub(crate) fn count_and_log(shard: &Shard, cfg: &Snapshot, v: &Verdict) {
    if let Some(stats) = shard.guard_counters.borrow_mut().of(shard, cfg, &v.rule) {
        stats.count(v.phase, v.outcome);
    }
    let found = v.found.join(",");
    match v.outcome {
        Outcome::Blocked | Outcome::Audited | Outcome::Errored => tracing::warn!(
            rule = %v.rule, check = v.check.as_str(), phase = v.phase.as_str(), outcome = v.outcome.as_str(),
            found, score = v.score, detail = v.detail.as_deref(), "guardrail verdict"
        ),
        Outcome::Flagged | Outcome::Redacted => tracing::info!(
            rule = %v.rule, check = v.check.as_str(), phase = v.phase.as_str(), outcome = v.outcome.as_str(),
            found, score = v.score, "guardrail verdict"
        ),
    }
}

/// At the end of a request whose answer never reached the gate (the provider failed, the
/// client left): the service checks asked alongside the call still get their verdicts logged
/// and counted, once they are in, on a task of their own.
pub fn record_unawaited(shard: &std::rc::Rc<Shard>, ctx: &mut RequestCtx) {
    let Some(pending) = ctx.pending_checks.take() else { return };
    let shard = shard.clone();
    crate::rt::spawn(async move {
        let cfg = pending.cfg.clone();
        let answers = pending.verdicts().await;
        for (i, asked) in &answers {
            let Some(rule) = cfg.guardrails.get(*i) else { continue };
            let answer = asked.as_ref().map_err(String::as_str);
            if let Some(v) = Guardrails::external_verdict(rule, Phase::Input, answer, false) {
                count_and_log(&shard, &cfg, &v);
            }
        }
    });
}

/// The error of a service check that blocked: the rule's violation, or, when the service did
/// not answer and the rule is enforced, a 503 (the request cannot be judged, so it is not
/// answered; try again).
fn service_refusal(v: &Verdict, asked: &Result<Answer, String>) -> GatewayError {
    match asked {
        Err(why) => {
            GatewayError::new(ErrorKind::Unavailable, format!("guardrail `{}` could not be checked: {why}", v.rule))
                .with_code("guardrail_unavailable")
        }
        Ok(_) => violation(v),
    }
}

/// Waits for the service checks asked alongside the provider call, before its answer goes
/// out. `Err`: one of them blocked the request; the answer is dropped and this error sent.
pub async fn gate(shard: &Shard, cfg: &Snapshot, ctx: &mut RequestCtx) -> Result<(), GatewayError> {
    let Some(pending) = ctx.pending_checks.take() else { return Ok(()) };
    let answers = pending.verdicts().await;
    let mut noted = ctx.guard.as_mut().map(|g| std::mem::take(&mut g.noted)).unwrap_or_default();
    let mut refusal = None;
    for (i, asked) in &answers {
        let Some(rule) = cfg.guardrails.get(*i) else { continue };
        let answer = asked.as_ref().map_err(String::as_str);
        let Some(v) = Guardrails::external_verdict(rule, Phase::Input, answer, false) else { continue };
        record(shard, cfg, &mut noted, std::slice::from_ref(&v), ctx);
        if v.outcome == Outcome::Blocked && refusal.is_none() {
            refusal = Some(service_refusal(&v, asked));
        }
    }
    if let Some(g) = ctx.guard.as_mut() {
        g.noted = noted;
    }
    refusal.map_or(Ok(()), Err)
}

/// Answers a blocked request or answer with its error and the gateway's headers (the
/// guardrails header included).
pub(super) async fn refuse<C: crate::rt::Conn>(
    resp: &mut crate::http::Responder<'_, C>,
    ctx: &mut RequestCtx,
    err: GatewayError,
) {
    super::attempt::Miss::gateway(err).send(resp, ctx).await;
}

/// `x-shardgate-guardrails: pii-in=redacted, tone=flagged`.
pub const GUARDRAILS_HEADER: &str = "x-shardgate-guardrails";

/// The input phase. `Ok(Some(body))`: the request as rewritten; `Ok(None)`: as it came;
/// `Err`: blocked (nothing is sent to any provider).
#[allow(clippy::too_many_arguments)]
pub async fn check_input(
    shard: &std::rc::Rc<Shard>,
    cfg: &Snapshot,
    caller: &Identity,
    model: &str,
    metadata: &Metadata,
    endpoint: Endpoint,
    body: &Bytes,
    found: Option<&PromptTexts>,
    ctx: &mut RequestCtx,
) -> Result<Option<Bytes>, GatewayError> {
    if cfg.guardrails.is_empty() {
        return Ok(None);
    }
    let selected = cfg.guardrails.select(caller, model, metadata);
    if selected.is_empty() {
        return Ok(None);
    }
    let mut state = Box::new(GuardState {
        selected,
        vault: Vault::default(),
        metadata: metadata.clone(),
        asked_json: false,
        schema: None,
        noted: Vec::new(),
        windows: Vec::new(),
        tool_windows: Vec::new(),
        json_blocks: Vec::new(),
        template: None,
    });
    let mut rewritten = None;
    if cfg.guardrails.applies(&state.selected, Phase::Input) {
        let found = match pre_found(found, body) {
            Some(texts) => RequestTexts { texts, asked_json: false, schema: None },
            None => super::guard_texts::request(endpoint, body).map_err(invalid_json)?,
        };
        state.asked_json = found.asked_json;
        state.schema = found.schema;
        let mut texts = found.texts;
        let facts = Facts { metadata: &state.metadata, asked_json: state.asked_json, schema: state.schema.as_ref() };
        let mut checked = cfg.guardrails.check(&state.selected, Phase::Input, &mut texts, facts, &mut state.vault);
        // The body as a `Value`, made only when texts must be written back into it.
        let walk = |v: &mut Value, f: &mut dyn FnMut(&mut String)| request_texts(endpoint, v, f);
        let mut json: Option<Value> = None;
        if checked.changed {
            // Redone on the `Value`'s own texts, so that what is sent is exactly what was
            // checked (they differ only in a body that repeats a key, which the `Value` drops).
            let mut v: Value = serde_json::from_slice(body).map_err(invalid_json)?;
            texts = collect(&mut v, &walk);
            state.vault = Vault::default();
            let facts =
                Facts { metadata: &state.metadata, asked_json: state.asked_json, schema: state.schema.as_ref() };
            checked = cfg.guardrails.check(&state.selected, Phase::Input, &mut texts, facts, &mut state.vault);
            json = Some(v);
        }
        record(shard, cfg, &mut state.noted, &checked.verdicts, ctx);
        if let Some(v) = checked.blocked() {
            return Err(violation(v));
        }
        let mut changed = checked.changed;
        // Checks that ask a service, in config order, each on the texts as the rules before it
        // left them; validating ones with `overlap` are asked after, alongside the provider.
        // Boxed: their state is large. Most requests have none, and skip all of this.
        if cfg.guardrails.externals(&state.selected, Phase::Input).next().is_some() {
            let selected = state.selected.clone();
            let same_config = shard.config();
            let can_overlap = std::ptr::eq::<Snapshot>(&**same_config, cfg);
            let overlaps = |r: &Guardrail| can_overlap && r.overlap && r.mode == Mode::Validate;
            let externals: Vec<&Guardrail> = cfg.guardrails.externals(&selected, Phase::Input).collect();
            for rule in externals.iter().copied().filter(|r| !overlaps(r)) {
                let asking = super::guard_external::ask(shard, cfg, rule, Phase::Input, model, &state.metadata, &texts);
                let asked = Box::pin(asking).await;
                let rewrite = match (&asked, rule.mode, rule.enforcement) {
                    (Ok(a), Mode::Mutate, Enforcement::Enforce | Enforcement::EnforceButIgnoreOnError) => {
                        a.texts.clone()
                    }
                    _ => None,
                };
                let rewritten = rewrite.as_ref().is_some_and(|t| !t.iter().eq(texts.iter()));
                let verdict =
                    Guardrails::external_verdict(rule, Phase::Input, asked.as_ref().map_err(String::as_str), rewritten);
                if let Some(v) = verdict {
                    record(shard, cfg, &mut state.noted, std::slice::from_ref(&v), ctx);
                    if v.outcome == Outcome::Blocked {
                        return Err(service_refusal(&v, &asked));
                    }
                }
                if let (Some(t), true) = (rewrite, rewritten) {
                    if json.is_none() {
                        json = Some(value_with_texts(endpoint, body, &texts)?);
                    }
                    texts = t.into_iter().map(Cow::Owned).collect();
                    changed = true;
                }
            }
            let later: Vec<usize> =
                externals.iter().filter(|r| overlaps(r)).filter_map(|r| cfg.guardrails.index_of(r)).collect();
            if !later.is_empty() {
                let texts = texts.iter().map(|t| Cow::Owned(t.to_string())).collect();
                let asked =
                    super::guard_external::Asked { model: model.to_owned(), metadata: state.metadata.clone(), texts };
                ctx.pending_checks = Some(super::guard_external::start(shard, same_config, later, asked));
            }
        }
        if changed && let Some(mut json) = json {
            write_back(&mut json, texts, &walk);
            let bytes = serde_json::to_vec(&json)
                .map_err(|e| GatewayError::new(ErrorKind::Internal, format!("re-encoding a redacted request: {e}")))?;
            rewritten = Some(Bytes::from(bytes));
        }
    } else if cfg.guardrails.applies(&state.selected, Phase::Output)
        && pre_found(found, body).is_none()
        && let Ok(found) = super::guard_texts::request(endpoint, body)
    {
        state.asked_json = found.asked_json;
        state.schema = found.schema;
    }
    // Only what the request carried is put back into answers; what an answer's own redaction
    // takes out stays out.
    state.vault.seal();
    // Services cannot judge a streamed answer before it goes out (that would mean holding all
    // of it): say so rather than let `stream: true` pass them silently.
    if ctx.stream {
        let unasked: Vec<Verdict> = cfg
            .guardrails
            .externals(&state.selected, Phase::Output)
            .map(|r| Guardrails::unasked(r, Phase::Output, "streamed answers are not sent to services"))
            .collect();
        record(shard, cfg, &mut state.noted, &unasked, ctx);
    }
    // The answer is read only when a rule looks at it, or something redacted may come back in it.
    let restoring = cfg.guardrails.restores(&state.selected) && !state.vault.is_empty();
    if cfg.guardrails.applies(&state.selected, Phase::Output) || restoring {
        ctx.guard = Some(state);
    }
    Ok(rewritten)
}

/// Whether an answer to this request must be checked or restored.
pub fn watches_output(ctx: &RequestCtx) -> bool {
    ctx.guard.is_some()
}

/// The output phase of a whole answer (OpenAI or Anthropic JSON). `Ok(Some(body))`: the
/// answer as rewritten or restored; `Err`: blocked.
pub async fn check_answer(
    shard: &Shard,
    cfg: &Snapshot,
    body: &[u8],
    ctx: &mut RequestCtx,
) -> Result<Option<Bytes>, GatewayError> {
    check_found_answer(shard, cfg, body, None, ctx).await
}

/// [`check_answer`], with the answer's texts as the usage reader found them on its own parse
/// (`None`: found here).
pub async fn check_found_answer(
    shard: &Shard,
    cfg: &Snapshot,
    body: &[u8],
    found: Option<&[TextRef]>,
    ctx: &mut RequestCtx,
) -> Result<Option<Bytes>, GatewayError> {
    let Some(mut state) = ctx.guard.take() else { return Ok(None) };
    let asks = cfg.guardrails.externals(&state.selected, Phase::Output).next().is_some();
    let mut judged = asks.then(Vec::new);
    let mut result = answer_inner(shard, cfg, &mut state, body, found, &mut judged, ctx);
    if let (Ok(_), Some(texts)) = (&result, judged) {
        // Boxed: a service call's state is large, and most answers ask none.
        if let Err(e) = Box::pin(ask_about_answer(shard, cfg, &mut state, texts, ctx)).await {
            result = Err(e);
        }
    }
    ctx.guard = Some(state);
    result
}

/// The output phase's service checks, on the answer as the built-in rules left it (their
/// redactions in, the request's own values not restored), all at once. `Err`: one blocked it.
async fn ask_about_answer(
    shard: &Shard,
    cfg: &Snapshot,
    state: &mut GuardState,
    texts: Vec<String>,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    let texts: Vec<Cow<'_, str>> = texts.into_iter().map(Cow::Owned).collect();
    let model = ctx.model.clone().unwrap_or_default();
    let rules: Vec<&Guardrail> = cfg.guardrails.externals(&state.selected, Phase::Output).collect();
    let asks = rules
        .iter()
        .map(|rule| super::guard_external::ask(shard, cfg, rule, Phase::Output, &model, &state.metadata, &texts));
    let answers = futures_util::future::join_all(asks).await;
    let mut refusal = None;
    for (rule, asked) in rules.iter().zip(&answers) {
        let answer = asked.as_ref().map_err(String::as_str);
        let Some(v) = Guardrails::external_verdict(rule, Phase::Output, answer, false) else { continue };
        record(shard, cfg, &mut state.noted, std::slice::from_ref(&v), ctx);
        if v.outcome == Outcome::Blocked && refusal.is_none() {
            refusal = Some(service_refusal(&v, asked));
        }
    }
    refusal.map_or(Ok(()), Err)
}

fn answer_inner(
    shard: &Shard,
    cfg: &Snapshot,
    state: &mut GuardState,
    body: &[u8],
    found: Option<&[TextRef]>,
    judged: &mut Option<Vec<String>>,
    ctx: &mut RequestCtx,
) -> Result<Option<Bytes>, GatewayError> {
    let found = found.and_then(|f| adapters::openai::request::resolve(f, body));
    // An answer the rules cannot read does not go out unread.
    let Some(mut texts) = found.or_else(|| super::guard_texts::answer(body)) else { return Err(unreadable()) };
    let facts = Facts { metadata: &state.metadata, asked_json: state.asked_json, schema: state.schema.as_ref() };
    let checked = cfg.guardrails.check(&state.selected, Phase::Output, &mut texts, facts, &mut state.vault);
    // What services judge: the answer as the rules left it, before the request's own values
    // are put back (services never see those).
    if let Some(judged) = judged.as_mut() {
        *judged = texts.iter().map(|t| t.to_string()).collect();
    }
    let restores = cfg.guardrails.restores(&state.selected) && !state.vault.is_empty();
    let rewrites = checked.changed || (restores && cfg.guardrails.restore(&mut texts, &state.vault));
    if checked.blocked().is_some() || !rewrites {
        record(shard, cfg, &mut state.noted, &checked.verdicts, ctx);
        return match checked.blocked() {
            Some(v) => Err(violation(v)),
            None => Ok(None),
        };
    }
    // Something is rewritten: redone on the answer as a `Value`, to write the texts back.
    // (The vault gives a value the placeholder it had, so the redoing changes nothing there.)
    let Ok(mut json) = serde_json::from_slice::<Value>(body) else { return Err(unreadable()) };
    let walk = |v: &mut Value, f: &mut dyn FnMut(&mut String)| answer_texts(v, f);
    let mut texts = collect(&mut json, &walk);
    let facts = Facts { metadata: &state.metadata, asked_json: state.asked_json, schema: state.schema.as_ref() };
    let checked = cfg.guardrails.check(&state.selected, Phase::Output, &mut texts, facts, &mut state.vault);
    record(shard, cfg, &mut state.noted, &checked.verdicts, ctx);
    if let Some(v) = checked.blocked() {
        return Err(violation(v));
    }
    if let Some(judged) = judged.as_mut() {
        *judged = texts.iter().map(|t| t.to_string()).collect();
    }
    let restored = cfg.guardrails.restores(&state.selected) && cfg.guardrails.restore(&mut texts, &state.vault);
    if !checked.changed && !restored {
        return Ok(None);
    }
    write_back(&mut json, texts, &walk);
    Ok(serde_json::to_vec(&json).ok().map(Bytes::from))
}

/// A 2xx answer that is not the JSON its API promised: the output rules cannot judge it, so it
/// is not delivered.
fn unreadable() -> GatewayError {
    GatewayError::new(
        ErrorKind::UpstreamProtocol,
        "the provider's answer could not be read as JSON, so the output guardrails could not check it",
    )
}

/// Most choices a request may ask for (OpenAI's `n` is at most 128).
const MAX_CHOICES: usize = 128;

fn choice_in_range(index: usize) -> bool {
    index < MAX_CHOICES
}

/// One streamed piece of choice `index`'s text (`end`: its last): the text to send now, or the
/// error that ends the stream.
pub fn check_piece(
    shard: &Shard,
    cfg: &Snapshot,
    index: usize,
    piece: &str,
    end: bool,
    ctx: &mut RequestCtx,
) -> Result<String, GatewayError> {
    if !choice_in_range(index) {
        // A window per choice is kept: an index no client could have asked for (OpenAI's `n`
        // is at most 128) must not make the gateway allocate at a provider's word.
        return Err(GatewayError::new(
            ErrorKind::UpstreamProtocol,
            format!("the provider's stream names choice {index}, beyond the {MAX_CHOICES} a request may ask for"),
        ));
    }
    let Some(mut state) = ctx.guard.take() else { return Ok(piece.to_owned()) };
    while state.windows.len() <= index {
        state.windows.push(StreamWindow::default());
    }
    let result = through_window(shard, cfg, &mut state, Window::Text(index), piece, end, ctx);
    ctx.guard = Some(state);
    result
}

/// Which of a request's stream windows.
#[derive(Clone, Copy)]
enum Window {
    /// A choice's text.
    Text(usize),
    /// A tool call's arguments (its place in `tool_windows`).
    Tool(usize),
}

/// One piece through one window: the text to send now, or the error that ends the stream.
fn through_window(
    shard: &Shard,
    cfg: &Snapshot,
    state: &mut GuardState,
    which: Window,
    piece: &str,
    end: bool,
    ctx: &mut RequestCtx,
) -> Result<String, GatewayError> {
    // Structure rules do not judge streams: no schema here.
    let GuardState { selected, vault, windows, tool_windows, metadata, asked_json, .. } = &mut *state;
    let facts = Facts { metadata, asked_json: *asked_json, schema: None };
    let window = match which {
        Window::Text(i) => windows.get_mut(i),
        Window::Tool(i) => tool_windows.get_mut(i).map(|(_, _, w)| w),
    };
    let step = match window {
        Some(w) => cfg.guardrails.stream(selected, Phase::Output, w, piece, end, facts, vault),
        None => StreamStep::Send(piece.to_owned(), Vec::new()),
    };
    match step {
        StreamStep::Send(text, verdicts) => {
            record(shard, cfg, &mut state.noted, &verdicts, ctx);
            Ok(text)
        }
        StreamStep::Stop(v) => {
            record(shard, cfg, &mut state.noted, std::slice::from_ref(&v), ctx);
            Err(violation(&v))
        }
    }
}

/// Most tool calls whose streamed arguments are held at once, over all choices: a window per
/// call is kept, and a provider must not make the gateway allocate without bound.
const MAX_TOOL_STREAMS: usize = 128;

/// One streamed piece of the arguments of tool call `call` of choice `choice` (`end`: its
/// last): what to send now, or the error that ends the stream.
pub fn check_tool_piece(
    shard: &Shard,
    cfg: &Snapshot,
    (choice, call): (usize, usize),
    piece: &str,
    end: bool,
    ctx: &mut RequestCtx,
) -> Result<String, GatewayError> {
    let Some(mut state) = ctx.guard.take() else { return Ok(piece.to_owned()) };
    let at = match state.tool_windows.iter().position(|(c, t, _)| (*c, *t) == (choice, call)) {
        Some(at) => Some(at),
        None if state.tool_windows.len() < MAX_TOOL_STREAMS => {
            state.tool_windows.push((choice, call, StreamWindow::default()));
            Some(state.tool_windows.len() - 1)
        }
        None => None,
    };
    let result = match at {
        Some(at) => through_window(shard, cfg, &mut state, Window::Tool(at), piece, end, ctx),
        None => Err(GatewayError::new(
            ErrorKind::UpstreamProtocol,
            format!("the provider's stream has more than {MAX_TOOL_STREAMS} tool calls"),
        )),
    };
    ctx.guard = Some(state);
    result
}

/// The arguments still held for `choice`'s tool calls (all of them when `None`), released:
/// (choice, call, text), in order.
fn release_tools(
    shard: &Shard,
    cfg: &Snapshot,
    choice: Option<usize>,
    ctx: &mut RequestCtx,
) -> Result<Vec<(usize, usize, String)>, GatewayError> {
    let held: Vec<(usize, usize)> = ctx
        .guard
        .as_ref()
        .map(|s| {
            s.tool_windows
                .iter()
                .filter(|(c, _, w)| choice.is_none_or(|x| x == *c) && !w.pending().is_empty())
                .map(|(c, t, _)| (*c, *t))
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for (c, t) in held {
        let text = check_tool_piece(shard, cfg, (c, t), "", true, ctx)?;
        if !text.is_empty() {
            out.push((c, t, text));
        }
    }
    Ok(out)
}

/// Adds released tool-call arguments to an OpenAI chunk choice's `delta.tool_calls`.
fn add_tool_arguments(choice: &mut Value, released: Vec<(usize, usize, String)>) {
    if released.is_empty() {
        return;
    }
    let Some(fields) = choice.as_object_mut() else { return };
    let Value::Object(delta) = fields.entry("delta").or_insert_with(|| Value::Object(serde_json::Map::new())) else {
        return;
    };
    let calls = delta.entry("tool_calls").or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(calls) = calls {
        for (_, t, text) in released {
            calls.push(serde_json::json!({"index": t, "function": {"arguments": text}}));
        }
    }
}

/// What to relay for one event of a guarded stream.
#[derive(Debug, PartialEq)]
pub enum StreamData {
    /// The event as it came.
    AsIs,
    /// This data instead.
    Replace(Vec<u8>),
    /// An event with this data first (text still held at `[DONE]`), then the event as it came.
    Before(Vec<u8>),
}

/// One `data:` of an OpenAI chat or completions stream, its choices' text run through the
/// output guardrails. `Err`: blocked, end the stream with the error.
pub fn check_stream_data(
    shard: &Shard,
    cfg: &Snapshot,
    data: &[u8],
    ctx: &mut RequestCtx,
) -> Result<StreamData, GatewayError> {
    if data == b"[DONE]" {
        return Ok(flush_all(shard, cfg, ctx)?.map_or(StreamData::AsIs, StreamData::Before));
    }
    let Ok(mut chunk) = serde_json::from_slice::<Value>(data) else { return Ok(StreamData::AsIs) };
    let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) else { return Ok(StreamData::AsIs) };
    if choices.is_empty() {
        return Ok(StreamData::AsIs);
    }
    for (position, choice) in choices.iter_mut().enumerate() {
        let index = choice.get("index").and_then(Value::as_u64).map_or(position, |i| i as usize);
        let end = choice.get("finish_reason").is_some_and(|f| !f.is_null());
        let (slot, own) = stream_text(choice);
        let released = check_piece(shard, cfg, index, &own, end, ctx)?;
        if (!released.is_empty() || !own.is_empty())
            && let Some(slot) = slot
        {
            *slot = Value::String(released);
        }
        // Tool calls' arguments, each its own window.
        if let Some(calls) = choice.pointer_mut("/delta/tool_calls").and_then(Value::as_array_mut) {
            for (position, call) in calls.iter_mut().enumerate() {
                let at = call.get("index").and_then(Value::as_u64).map_or(position, |i| i as usize);
                if let Some(Value::String(args)) = call.pointer_mut("/function/arguments") {
                    *args = check_tool_piece(shard, cfg, (index, at), args, false, ctx)?;
                }
            }
        }
        if end {
            let released = release_tools(shard, cfg, Some(index), ctx)?;
            add_tool_arguments(choice, released);
        }
    }
    // A stream's chunks share one envelope: it is kept from the first.
    if let Some(state) = ctx.guard.as_mut()
        && state.template.is_none()
    {
        state.template = Some(template_of(&chunk));
    }
    Ok(StreamData::Replace(chunk.to_string().into_bytes()))
}

/// The text of a streamed choice (`delta.content`, or `text` for completions), and where to
/// put the released text back.
fn stream_text(choice: &mut Value) -> (Option<&mut Value>, String) {
    let completions = choice.get("text").is_some();
    let slot = if completions {
        choice.get_mut("text")
    } else {
        match choice.get_mut("delta") {
            Some(Value::Object(delta)) => Some(delta.entry("content").or_insert(Value::Null)),
            _ => None,
        }
    };
    let own = slot.as_deref().and_then(Value::as_str).unwrap_or("").to_owned();
    (slot, own)
}

/// A chunk's envelope (id, object, created, model) to carry text still held at `[DONE]`.
fn template_of(chunk: &Value) -> Value {
    let mut t = serde_json::Map::new();
    for k in ["id", "object", "created", "model", "system_fingerprint"] {
        if let Some(v) = chunk.get(k) {
            t.insert(k.into(), v.clone());
        }
    }
    Value::Object(t)
}

/// At `[DONE]`: whatever the windows still hold, as one chunk before it.
fn flush_all(shard: &Shard, cfg: &Snapshot, ctx: &mut RequestCtx) -> Result<Option<Vec<u8>>, GatewayError> {
    let held: Vec<usize> = ctx
        .guard
        .as_ref()
        .map(|s| s.windows.iter().enumerate().filter(|(_, w)| !w.pending().is_empty()).map(|(i, _)| i).collect())
        .unwrap_or_default();
    let tools = release_tools(shard, cfg, None, ctx)?;
    if held.is_empty() && tools.is_empty() {
        return Ok(None);
    }
    let mut choices = Vec::new();
    for index in held {
        let text = check_piece(shard, cfg, index, "", true, ctx)?;
        choices.push(serde_json::json!({"index": index, "delta": {"content": text}, "finish_reason": null}));
    }
    for (index, t, text) in tools {
        choices.push(serde_json::json!({"index": index, "delta": {"tool_calls": [
            {"index": t, "function": {"arguments": text}}]}, "finish_reason": null}));
    }
    let mut chunk = ctx.guard.as_ref().and_then(|s| s.template.clone()).unwrap_or_else(|| serde_json::json!({}));
    if let Value::Object(o) = &mut chunk {
        o.insert("choices".into(), Value::Array(choices));
    }
    Ok(Some(chunk.to_string().into_bytes()))
}

/// Canonical stream chunks (a translated stream's) through the output guardrails, in place;
/// `done`: the stream is over, and text still held goes out in one more chunk.
pub fn check_chunks(
    shard: &Shard,
    cfg: &Snapshot,
    chunks: &mut Vec<adapters::canonical::ChatChunk>,
    done: bool,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    for chunk in chunks.iter_mut() {
        for choice in &mut chunk.choices {
            let own = choice.delta.content.take();
            let end = choice.finish_reason.is_some();
            let index = choice.index as usize;
            let released = check_piece(shard, cfg, index, own.as_deref().unwrap_or(""), end, ctx)?;
            choice.delta.content = (own.is_some() || !released.is_empty()).then_some(released);
            for call in &mut choice.delta.tool_calls {
                if let Some(args) = call.function.arguments.as_mut() {
                    *args = check_tool_piece(shard, cfg, (index, call.index as usize), args, false, ctx)?;
                }
            }
            if end {
                for (_, t, text) in release_tools(shard, cfg, Some(index), ctx)? {
                    choice.delta.tool_calls.push(tool_arguments_delta(t, text));
                }
            }
        }
    }
    // A stream's chunks share one envelope: it is kept from the first that has one.
    if let Some(state) = ctx.guard.as_mut()
        && state.template.is_none()
        && let Some(c) = chunks.first()
    {
        state.template = Some(serde_json::json!({"id": c.id, "model": c.model, "created": c.created}));
    }
    if done {
        let held: Vec<usize> = ctx
            .guard
            .as_ref()
            .map(|s| s.windows.iter().enumerate().filter(|(_, w)| !w.pending().is_empty()).map(|(i, _)| i).collect())
            .unwrap_or_default();
        let t = ctx.guard.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
        for index in held {
            let text = check_piece(shard, cfg, index, "", true, ctx)?;
            let chunk = adapters::canonical::ChatChunk {
                id: t.get("id").and_then(Value::as_str).unwrap_or("").to_owned(),
                object: "chat.completion.chunk".into(),
                created: t.get("created").and_then(Value::as_u64).unwrap_or(0),
                model: t.get("model").and_then(Value::as_str).unwrap_or("").to_owned(),
                choices: vec![adapters::canonical::ChunkChoice {
                    index: u32::try_from(index).unwrap_or(0),
                    delta: adapters::canonical::Delta { content: Some(text), ..Default::default() },
                    finish_reason: None,
                    logprobs: None,
                }],
                usage: None,
            };
            // Before the usage-only chunk, if there is one.
            let at = chunks.iter().position(|c| c.choices.is_empty()).unwrap_or(chunks.len());
            chunks.insert(at, chunk);
        }
        for (index, t, text) in release_tools(shard, cfg, None, ctx)? {
            let chunk = adapters::canonical::ChatChunk {
                id: envelope_field(&envelope(ctx), "id"),
                object: "chat.completion.chunk".into(),
                created: envelope(ctx).get("created").and_then(Value::as_u64).unwrap_or(0),
                model: envelope_field(&envelope(ctx), "model"),
                choices: vec![adapters::canonical::ChunkChoice {
                    index: u32::try_from(index).unwrap_or(0),
                    delta: adapters::canonical::Delta {
                        tool_calls: vec![tool_arguments_delta(t, text)],
                        ..Default::default()
                    },
                    finish_reason: None,
                    logprobs: None,
                }],
                usage: None,
            };
            let at = chunks.iter().position(|c| c.choices.is_empty()).unwrap_or(chunks.len());
            chunks.insert(at, chunk);
        }
    }
    Ok(())
}

/// The envelope kept from a stream's first chunk.
fn envelope(ctx: &RequestCtx) -> Value {
    ctx.guard.as_ref().and_then(|s| s.template.clone()).unwrap_or_default()
}

fn envelope_field(t: &Value, name: &str) -> String {
    t.get(name).and_then(Value::as_str).unwrap_or("").to_owned()
}

/// A canonical delta carrying released arguments of tool call `index`.
fn tool_arguments_delta(index: usize, text: String) -> adapters::canonical::ToolCallDelta {
    adapters::canonical::ToolCallDelta {
        index: u32::try_from(index).unwrap_or(0),
        id: None,
        kind: None,
        function: adapters::canonical::FunctionCallDelta { name: None, arguments: Some(text) },
    }
}

/// One event of a native Anthropic stream through the output guardrails: text deltas
/// rewritten, and a block's held text sent before its `content_block_stop`.
pub fn check_anthropic_event(
    shard: &Shard,
    cfg: &Snapshot,
    event: Option<&str>,
    data: &[u8],
    ctx: &mut RequestCtx,
) -> Result<StreamData, GatewayError> {
    let kind = event.unwrap_or("");
    if kind != "content_block_delta" && kind != "content_block_stop" {
        return Ok(StreamData::AsIs);
    }
    let Ok(mut ev) = serde_json::from_slice::<Value>(data) else { return Ok(StreamData::AsIs) };
    let index = ev.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
    // A block is text or a tool call's input (`input_json_delta`): one window either way.
    let json_block = |ctx: &RequestCtx| ctx.guard.as_ref().is_some_and(|s| s.json_blocks.contains(&index));
    if kind == "content_block_stop" {
        let text = check_piece(shard, cfg, index, "", true, ctx)?;
        if text.is_empty() {
            return Ok(StreamData::AsIs);
        }
        let delta = if json_block(ctx) {
            serde_json::json!({"type": "content_block_delta", "index": index,
                               "delta": {"type": "input_json_delta", "partial_json": text}})
        } else {
            serde_json::json!({"type": "content_block_delta", "index": index,
                               "delta": {"type": "text_delta", "text": text}})
        };
        return Ok(StreamData::Before(delta.to_string().into_bytes()));
    }
    if ev.pointer("/delta/type").and_then(Value::as_str) == Some("input_json_delta") {
        if let Some(state) = ctx.guard.as_mut()
            && !state.json_blocks.contains(&index)
            && state.json_blocks.len() < MAX_TOOL_STREAMS
        {
            state.json_blocks.push(index);
        }
        let Some(Value::String(json)) = ev.pointer_mut("/delta/partial_json") else { return Ok(StreamData::AsIs) };
        *json = check_piece(shard, cfg, index, json, false, ctx)?;
        return Ok(StreamData::Replace(ev.to_string().into_bytes()));
    }
    let Some(Value::String(text)) = ev.pointer_mut("/delta/text") else { return Ok(StreamData::AsIs) };
    *text = check_piece(shard, cfg, index, text, false, ctx)?;
    Ok(StreamData::Replace(ev.to_string().into_bytes()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn texts(endpoint: Endpoint, mut v: Value) -> Vec<String> {
        collect(&mut v, &|v: &mut Value, f: &mut dyn FnMut(&mut String)| request_texts(endpoint, v, f))
            .into_iter()
            .map(Cow::into_owned)
            .collect()
    }

    fn answer_walk(mut v: Value) -> Vec<String> {
        collect(&mut v, &|v: &mut Value, f: &mut dyn FnMut(&mut String)| answer_texts(v, f))
            .into_iter()
            .map(Cow::into_owned)
            .collect()
    }

    const ENDPOINTS: [Endpoint; 4] =
        [Endpoint::ChatCompletions, Endpoint::Completions, Endpoint::Embeddings, Endpoint::Messages];

    /// Request- and answer-shaped JSON with every field at times of a shape the walks do not
    /// expect, fields in any order, and the odd unrelated key.
    fn shaped_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        fn obj(fields: Vec<(&'static str, Option<Value>)>) -> Value {
            Value::Object(fields.into_iter().filter_map(|(k, v)| Some((k.to_string(), v?))).collect())
        }
        let leaf = prop_oneof![
            4 => prop::sample::select(vec!["a", "tool_result", "message", "text", "q\"uote\n", "é"]).prop_map(Value::from),
            1 => any::<i64>().prop_map(Value::from),
            1 => Just(Value::Null),
            1 => Just(Value::Bool(true)),
            1 => Just(json!({"x": ["y"]})),
        ];
        let kind =
            prop::sample::select(vec!["text", "tool_result", "tool_use", "image_url", "message"]).prop_map(Value::from);
        let content = leaf.clone().prop_recursive(3, 24, 4, move |inner| {
            let input =
                prop_oneof![inner.clone(), Just(json!({"to": "a@b.io", "n": 2, "tags": ["x", {"k": "é\"q"}]})),];
            let part = (
                proptest::option::of(kind.clone()),
                proptest::option::of(inner.clone()),
                proptest::option::of(inner),
                proptest::option::of(input),
            )
                .prop_map(|(t, text, content, input)| {
                    obj(vec![("type", t), ("text", text), ("content", content), ("input", input)])
                });
            prop_oneof![prop::collection::vec(part, 0..4).prop_map(Value::Array)]
        });
        let content = prop_oneof![2 => content, 1 => leaf.clone()];
        let function = (proptest::option::of(leaf.clone()), proptest::option::of(leaf.clone()))
            .prop_map(|(a, n)| obj(vec![("name", n), ("arguments", a)]));
        let call = prop_oneof![
            4 => proptest::option::of(function).prop_map(|f| obj(vec![("id", Some(Value::from("c1"))), ("function", f)])),
            1 => leaf.clone(),
        ];
        let calls = prop_oneof![3 => prop::collection::vec(call, 0..3).prop_map(Value::Array), 1 => leaf.clone()];
        let message = (
            proptest::option::of(content.clone()),
            proptest::option::of(leaf.clone()),
            proptest::option::of(calls.clone()),
        )
            .prop_map(|(c, r, t)| obj(vec![("role", r), ("content", c), ("tool_calls", t)]));
        let messages = prop_oneof![4 => prop::collection::vec(message, 0..4).prop_map(Value::Array), 1 => leaf.clone()];
        let strings = prop_oneof![leaf.clone(), prop::collection::vec(leaf.clone(), 0..4).prop_map(Value::Array)];
        let choice =
            (proptest::option::of(content.clone()), proptest::option::of(leaf.clone()), proptest::option::of(calls))
                .prop_map(|(c, t, calls)| {
                    let message =
                        obj(vec![("role", Some(Value::from("assistant"))), ("content", c), ("tool_calls", calls)]);
                    obj(vec![("message", Some(message)), ("text", t)])
                });
        let choices = prop_oneof![4 => prop::collection::vec(choice, 0..3).prop_map(Value::Array), 1 => leaf.clone()];
        let fields = (
            proptest::option::of(messages),
            proptest::option::of(content.clone()),
            proptest::option::of(strings.clone()),
            proptest::option::of(strings),
            proptest::option::of(choices),
            proptest::option::of(prop::sample::select(vec!["message", "x"]).prop_map(Value::from)),
            proptest::option::of(content),
            any::<bool>(),
        );
        fields.prop_map(|(messages, system, prompt, input, choices, kind, content, reversed)| {
            let mut f = vec![
                ("messages", messages),
                ("system", system),
                ("prompt", prompt),
                ("input", input),
                ("choices", choices),
                ("type", kind),
                ("content", content),
                ("model", Some(Value::from("m"))),
            ];
            if reversed {
                f.reverse();
            }
            obj(f)
        })
    }

    proptest::proptest! {
        /// The borrowing walk finds the texts the `Value` walk finds, in the same order, in
        /// any JSON: rewrites land where the checked texts were.
        #[test]
        fn the_borrowing_walk_agrees_with_the_value_walk(v in shaped_json()) {
            let body = serde_json::to_vec(&v).unwrap();
            for endpoint in ENDPOINTS {
                let fast = super::super::guard_texts::request(endpoint, &body).unwrap();
                let fast: Vec<String> = fast.texts.into_iter().map(Cow::into_owned).collect();
                // The request scan's walk, on its simd-json tape, agrees too.
                let walk = match endpoint {
                    Endpoint::ChatCompletions => Some(TextWalk::Chat),
                    Endpoint::Completions => Some(TextWalk::Completions),
                    Endpoint::Embeddings => Some(TextWalk::Embeddings),
                    _ => None,
                };
                if let Some(walk) = walk {
                    let scanned = adapters::openai::request::Scanner::new().scan_with(&body, Some(walk));
                    // `None`: the tape walk declined (a tool call's input), and the borrowing walk reads the body.
                    if let Some(scanned) = scanned.ok().and_then(|f| f.texts) {
                        let tape: Vec<String> = scanned.resolve(&body).unwrap().into_iter().map(Cow::into_owned).collect();
                        proptest::prop_assert_eq!(&tape, &fast);
                    }
                }
                proptest::prop_assert_eq!(fast, texts(endpoint, v.clone()));
            }
            let fast: Vec<String> = super::super::guard_texts::answer(&body).unwrap().into_iter().map(Cow::into_owned).collect();
            // And the usage reader's walk, on its tape.
            let (_, tape) = adapters::openai::usage::UsageReader::new().response_body_and_texts(&body);
            if let Some(tape) = tape {
                let tape = adapters::openai::request::resolve(&tape, &body).unwrap();
                proptest::prop_assert_eq!(tape.into_iter().map(Cow::into_owned).collect::<Vec<_>>(), fast.clone());
            }
            proptest::prop_assert_eq!(fast, answer_walk(v.clone()));
        }
    }

    #[test]
    fn the_borrowing_walk_borrows_plain_texts_and_reads_repeated_keys() {
        let body = br#"{"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}},
            "messages": [{"role": "user", "content": "plain", "content": "esc\"aped"}]}"#;
        let found = super::super::guard_texts::request(Endpoint::ChatCompletions, body).unwrap();
        assert!(matches!(found.texts[0], Cow::Borrowed("plain")));
        assert!(matches!(&found.texts[1], Cow::Owned(s) if s == "esc\"aped"));
        assert!(found.asked_json);
        assert_eq!(found.schema, Some(json!({"type": "object"})));
        assert!(super::super::guard_texts::request(Endpoint::ChatCompletions, b"{\"messages\": [").is_err());
        assert!(super::super::guard_texts::request(Endpoint::ChatCompletions, b"{} x").is_err());
        assert!(super::super::guard_texts::answer(b"not json").is_none());
    }

    #[test]
    fn a_stream_choice_index_is_bounded() {
        assert!(choice_in_range(0) && choice_in_range(127));
        assert!(!choice_in_range(128) && !choice_in_range(usize::MAX));
    }

    #[test]
    fn request_texts_of_every_api() {
        let chat = json!({"messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}]},
            {"role": "tool", "content": "result"}]});
        assert_eq!(texts(Endpoint::ChatCompletions, chat), ["sys", "a", "result"]);
        assert_eq!(texts(Endpoint::Completions, json!({"prompt": ["p1", "p2"]})), ["p1", "p2"]);
        assert_eq!(texts(Endpoint::Embeddings, json!({"input": "e"})), ["e"]);
        let messages = json!({"system": [{"type": "text", "text": "s"}], "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "r"}]}]},
            {"role": "user", "content": "u"}]});
        assert_eq!(texts(Endpoint::Messages, messages), ["s", "r", "u"]);
    }

    #[test]
    fn tool_call_arguments_are_read_in_requests_and_answers() {
        let chat = json!({"messages": [
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"to\":\"a@b.io\"}"}}], "content": "calling"},
            {"role": "tool", "tool_call_id": "c", "content": "sent"}]});
        assert_eq!(texts(Endpoint::ChatCompletions, chat), ["calling", "{\"to\":\"a@b.io\"}", "sent"]);
        let answer = json!({"choices": [{"message": {"content": null, "tool_calls": [
            {"function": {"arguments": "{}"}}, {"function": {"arguments": "{\"x\":1}"}}]}}]});
        assert_eq!(answer_walk(answer), ["{}", "{\"x\":1}"]);
    }

    #[test]
    fn rewritten_texts_go_back_where_they_came_from() {
        let mut v = json!({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "b"}]}]});
        let walk = |v: &mut Value, f: &mut dyn FnMut(&mut String)| request_texts(Endpoint::ChatCompletions, v, f);
        write_back(&mut v, vec!["A".into(), "B".into()], &walk);
        assert_eq!(v["messages"][0]["content"], "A");
        assert_eq!(v["messages"][1]["content"][0]["text"], "B");
        let mut answer = json!({"choices": [{"message": {"content": "x"}}, {"text": "y"}]});
        assert_eq!(
            collect(&mut answer, &|v: &mut Value, f: &mut dyn FnMut(&mut String)| answer_texts(v, f)),
            ["x", "y"]
        );
        let mut anthropic =
            json!({"type": "message", "content": [{"type": "text", "text": "z"}, {"type": "tool_use"}]});
        assert_eq!(collect(&mut anthropic, &|v: &mut Value, f: &mut dyn FnMut(&mut String)| answer_texts(v, f)), ["z"]);
    }
}
