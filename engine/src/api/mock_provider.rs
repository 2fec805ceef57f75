//! The built-in `mock` provider: answered in-process, instantly, with exact token counts, so the
//! first `curl` against a fresh install works and tests need no network.

use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use adapters::openai::request::RequestFacts;
use adapters::openai::usage::Usage;

use super::governance;
use super::{OVERHEAD_HEADER, RequestCtx};
use crate::config::Provider;
use crate::error::{ErrorKind, GatewayError};
use crate::http::{Request, RequestHead, Responder, send_error};
use crate::metrics::Endpoint;
use crate::mock::{self, Reply};
use crate::rt::Conn;
use crate::shard::Shard;

/// Tokens the mock writes when the request sets no `max_tokens`.
const DEFAULT_TOKENS: u64 = 16;
/// The most tokens the mock writes.
const MAX_TOKENS: u64 = 4096;

#[allow(clippy::too_many_arguments)]
pub async fn answer<C: Conn>(
    shard: &Rc<Shard>,
    provider: &Provider,
    endpoint: Endpoint,
    req: &Request,
    facts: &RequestFacts,
    upstream_model: &str,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) {
    let drill = if provider.mock_faults { Drill::of(&req.head).await } else { Drill::None };
    drill.before_head();
    let seq = shard.next_sequence();
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let prompt_tokens = mock::estimate_prompt_tokens(req.body.len());
    let completion_tokens = facts.max_tokens.unwrap_or(DEFAULT_TOKENS).min(MAX_TOKENS);
    let prefix = if endpoint == Endpoint::Completions { "cmpl" } else { "chatcmpl" };
    let id = format!("{prefix}-mock-{}-{seq}", shard.id);
    let reply = Reply {
        id: &id,
        created,
        model: upstream_model,
        prompt_tokens,
        completion_tokens: usize::try_from(completion_tokens).unwrap_or(0),
        filler: None,
        script: &[],
        tool_args: &[],
    };
    ctx.upstream_status = Some(200);

    if endpoint == Endpoint::Embeddings {
        let shape = match mock::embedding_request_shape(&req.body) {
            Ok(s) => s,
            Err((param, message)) => {
                let err = GatewayError::new(ErrorKind::InvalidField, message).with_param(param);
                ctx.error = Some(err.kind);
                let _ = send_error(resp, &err).await;
                return;
            }
        };
        ctx.usage = Some(Usage { prompt_tokens, total_tokens: prompt_tokens, ..Usage::default() });
        let body = mock::embeddings(upstream_model, shape.inputs, shape.dimensions, prompt_tokens);
        governance::settle_before_head(ctx);
        let mut head = resp.start(200).header("content-type", "application/json");
        for (n, v) in &ctx.headers {
            head = head.header(n, v);
        }
        let _ = head.body(&body).await;
        return;
    }

    ctx.usage = Some(Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
        ..Usage::default()
    });
    let include_usage = facts.include_usage == Some(true);
    if facts.stream {
        let events = match endpoint {
            Endpoint::Completions => mock::completion_stream(&reply, include_usage),
            _ => mock::chat_stream(&reply, include_usage),
        };
        let mut us = itoa::Buffer::new();
        let overhead = micros(ctx.head_overhead());
        let mut head =
            resp.start_event_stream(200).header("x-request-id", &id).header(OVERHEAD_HEADER, us.format(overhead));
        for (n, v) in &ctx.headers {
            head = head.header(n, v);
        }
        let Ok(mut out) = head.stream().await else { return };
        let cfg = shard.config();
        let guarded = super::guard::watches_output(ctx);
        for (i, e) in events.iter().enumerate() {
            if i == 1 {
                drill.mid_stream();
            }
            let mut e = std::borrow::Cow::Borrowed(&e[..]);
            if guarded && let Some(data) = e.strip_prefix(b"data: ").map(|d| d.trim_ascii_end().to_vec()) {
                let mut event = Vec::new();
                match super::guard::check_stream_data(shard, &cfg, &data, ctx) {
                    Ok(super::guard::StreamData::AsIs) => super::forward::reemit(&mut event, None, &data),
                    Ok(super::guard::StreamData::Replace(d)) => super::forward::reemit(&mut event, None, &d),
                    Ok(super::guard::StreamData::Before(d)) => {
                        super::forward::reemit(&mut event, None, &d);
                        super::forward::reemit(&mut event, None, &data);
                    }
                    Err(err) => {
                        ctx.error = Some(err.kind);
                        super::forward::reemit(&mut event, None, &err.to_json());
                        if out.send(&event).await.is_ok() {
                            let _ = out.finish().await;
                        }
                        return;
                    }
                }
                e = std::borrow::Cow::Owned(event);
            }
            if out.send(&e).await.is_err() {
                ctx.error = Some(ErrorKind::DownstreamClosed);
                return;
            }
        }
        if let Some(comment) = governance::settle_stream(ctx)
            && out.send(&comment).await.is_err()
        {
            ctx.error = Some(ErrorKind::DownstreamClosed);
            return;
        }
        let _ = out.finish().await;
    } else {
        let mut body = match endpoint {
            Endpoint::Completions => mock::completion(&reply),
            _ => mock::chat_completion(&reply),
        };
        governance::settle_before_head(ctx);
        if super::guard::watches_output(ctx) {
            match super::guard::check_answer(shard, &shard.config(), &body, ctx).await {
                Ok(Some(checked)) => body = checked.to_vec(),
                Ok(None) => {}
                Err(e) => return super::guard::refuse(resp, ctx, e).await,
            }
        }
        let mut us = itoa::Buffer::new();
        let overhead = micros(ctx.head_overhead());
        let mut head = resp
            .start(200)
            .header("content-type", "application/json")
            .header("x-request-id", &id)
            .header(OVERHEAD_HEADER, us.format(overhead));
        for (n, v) in &ctx.headers {
            head = head.header(n, v);
        }
        let _ = head.body(&body).await;
    }
}

/// Fault drills a mock provider with `mock_faults: true` runs on request, to exercise the
/// supervision of target actors: headers `x-mock-latency-ms: N` (wait before answering) and
/// `x-mock-fault: panic | panic-mid-stream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Drill {
    None,
    Panic,
    PanicMidStream,
}

impl Drill {
    /// Reads the drill headers, waiting out `x-mock-latency-ms` first.
    pub(super) async fn of(head: &RequestHead) -> Drill {
        let text = |name| head.header(name).and_then(|v| std::str::from_utf8(v).ok()).map(str::trim);
        if let Some(ms) = text("x-mock-latency-ms").and_then(|v| v.parse::<u64>().ok()) {
            crate::rt::sleep(std::time::Duration::from_millis(ms.min(60_000))).await;
        }
        match text("x-mock-fault") {
            Some("panic") => Drill::Panic,
            Some("panic-mid-stream") => Drill::PanicMidStream,
            _ => Drill::None,
        }
    }

    // Panicking is the point of the drill: the actor's supervisor must catch it.
    #[allow(clippy::panic)]
    pub(super) fn before_head(self) {
        if self == Drill::Panic {
            panic!("mock fault drill: panic before the answer");
        }
    }

    #[allow(clippy::panic)]
    pub(super) fn mid_stream(self) {
        if self == Drill::PanicMidStream {
            panic!("mock fault drill: panic in the middle of a stream");
        }
    }
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
