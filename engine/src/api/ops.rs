//! Ops and discovery endpoints: `/health`, `/ready`, `/metrics`, `/v1/models[/{id}]`.

use std::rc::Rc;

use super::RequestCtx;
use policy::Identity;

use crate::config::Snapshot;
use crate::error::{ErrorKind, GatewayError};
use crate::http::{Responder, send_error};
use crate::rt::Conn;
use crate::shard::Shard;

const JSON: &str = "application/json";

/// Liveness: the process answers.
pub async fn health<C: Conn>(resp: &mut Responder<'_, C>) {
    let _ = resp.start(200).header("content-type", JSON).body(br#"{"status":"ok"}"#).await;
}

/// Readiness: config loaded, every shard up, not draining.
pub async fn ready<C: Conn>(shard: &Rc<Shard>, resp: &mut Responder<'_, C>) {
    let p = &shard.process;
    let generation = shard.config().generation;
    if p.ready() {
        let body = format!(r#"{{"status":"ready","config_generation":{generation},"shards":{}}}"#, p.shards_total);
        let _ = resp.start(200).header("content-type", JSON).body(body.as_bytes()).await;
    } else {
        let why = if p.draining.load(std::sync::atomic::Ordering::SeqCst) { "draining" } else { "starting" };
        let err = GatewayError::new(ErrorKind::Unavailable, format!("not ready: {why}"));
        let _ = send_error(resp, &err).await;
    }
}

/// Prometheus metrics, summed across shards at scrape time.
pub async fn metrics<C: Conn>(shard: &Rc<Shard>, resp: &mut Responder<'_, C>) {
    let p = &shard.process;
    let text = p.registry.render(&p.gauges());
    let _ =
        resp.start(200).header("content-type", "text/plain; version=0.0.4; charset=utf-8").body(text.as_bytes()).await;
}

/// `GET /v1/models`: the models the caller may use (pre-rendered when that is all of them).
pub async fn list_models<C: Conn>(cfg: &Snapshot, caller: &Identity, resp: &mut Responder<'_, C>) {
    let head = resp.start(200).header("content-type", JSON);
    if caller.access.is_empty() {
        let _ = head.body_bytes(cfg.models_json.clone()).await;
    } else {
        let body = cfg.models_json_filtered(|id| cfg.policy.model_visible(caller, id).is_ok());
        let _ = head.body(&body).await;
    }
}

/// `GET /v1/models/{id}` (the id may contain `/` and percent-escapes); a model the caller may
/// not use does not exist for them.
pub async fn get_model<C: Conn>(
    cfg: &Snapshot,
    caller: &Identity,
    raw_id: &str,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) {
    let id = percent_decode(raw_id);
    match cfg.model_json(&id).filter(|_| cfg.policy.model_visible(caller, &id).is_ok()) {
        Some(body) => {
            let _ = resp.start(200).header("content-type", JSON).body_bytes(body.clone()).await;
        }
        None => {
            let err = GatewayError::new(
                ErrorKind::UnknownModel,
                format!("The model `{id}` does not exist or you do not have access to it."),
            );
            ctx.error = Some(err.kind);
            let _ = send_error(resp, &err).await;
        }
    }
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (b.get(i + 1).and_then(|c| hex(*c)), b.get(i + 2).and_then(|c| hex(*c)))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding() {
        assert_eq!(super::percent_decode("openai%2Fgpt-4o"), "openai/gpt-4o");
        assert_eq!(super::percent_decode("a%zz%4"), "a%zz%4");
    }
}
