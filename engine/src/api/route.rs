//! Where an admitted request goes: the provider chosen for it, reached from this shard with the
//! config in force. Handlers that call a provider take one [`Route`] instead of its parts.

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use super::RequestCtx;
use crate::config::{Provider, Snapshot, Upstream, UpstreamLimits};
use crate::error::GatewayError;
use crate::http::Request;
use crate::shard::Shard;
use crate::upstream::{RequestBytes, Shared, UpstreamResponse, send};

#[derive(Clone, Copy)]
pub(super) struct Route<'a> {
    pub shard: &'a Rc<Shard>,
    pub cfg: &'a Snapshot,
    pub provider: &'a Provider,
    pub up: &'a Upstream,
    /// The model as the provider names it.
    pub upstream_model: &'a str,
    /// The client's request (its headers go upstream; its body is what is translated).
    pub req: &'a Request,
    /// Headers the route adds for this target (they win over the client's).
    pub headers: &'a [(String, String)],
}

impl<'a> Route<'a> {
    /// POSTs `body` to `path` of the provider, with `extra` headers (a signature) and the access
    /// token the gateway minted for it, if any; waits for the answer's head, counting the wait
    /// as upstream time.
    pub(super) async fn post(
        &self,
        path: &str,
        body: Bytes,
        mut extra: Vec<(String, String)>,
        ctx: &mut RequestCtx,
    ) -> Result<UpstreamResponse<'a>, GatewayError> {
        let Route { shard, cfg, provider, up, req, headers, .. } = *self;
        extra.extend(super::translate::minted_authorization(shard, provider)?);
        extra.extend(headers.iter().cloned());
        let head = super::forward::request_head_with("POST", path, up, &req.head, Some(body.len()), &extra);
        let request = RequestBytes { head, body, is_head: false };
        let shared = Shared { pool: &shard.pool, dns: &shard.process.dns, metrics: &shard.metrics };
        let waited = Instant::now();
        let limits = UpstreamLimits { connect: ctx.connect_limit, ..cfg.upstream_limits };
        let sent = send(&shared, up, &request, limits).await;
        ctx.upstream_time += waited.elapsed();
        let mut answer = sent.map_err(|e| e.to_gateway_error(&provider.name))?;
        answer.limit_idle(ctx.idle_limit);
        ctx.upstream_status = Some(answer.head.status);
        Ok(answer)
    }
}
