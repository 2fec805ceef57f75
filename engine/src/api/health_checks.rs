//! Active health checks of route targets (`health_check:` on a route): shard 0 probes each
//! target of such a route every `interval` with a `GET` under its provider's base path (with
//! the provider's credentials), bounded by `timeout`. A 2xx counts as a success in the
//! target's breaker (and, while it is half-open, closes it like any probe); a 401/403 as an
//! auth failure; anything else, or no answer, as a failure. A breaker a probe opens is
//! announced to the other shards like one opened by traffic, so a dead target is cooled before
//! any request meets it.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::routing::announce;
use crate::config::{Provider, Snapshot, Upstream};
use crate::router::{self, Admission, Outcome};
use crate::rt;
use crate::shard::Shard;
use crate::upstream::{RequestBytes, Shared, send};

/// How often the loop looks for probes that are due; and, while no route asks for probes, how
/// often it looks again (a reload may add some).
const TICK: Duration = Duration::from_millis(50);
const IDLE_TICK: Duration = Duration::from_secs(1);
/// Largest probe answer read (the rest is dropped with the connection).
const MAX_PROBE_BODY: u64 = 64 * 1024;

/// The probe loop (shard 0 only).
pub async fn run(shard: Rc<Shard>) {
    // When each target (by key) was last probed.
    let mut last: HashMap<String, Instant> = HashMap::new();
    let mut tick = IDLE_TICK;
    loop {
        if shard.process.draining.load(SeqCst) {
            return;
        }
        rt::sleep(tick).await;
        let cfg = shard.config();
        tick = if cfg.routes().iter().any(|r| r.health_check.is_some()) { TICK } else { IDLE_TICK };
        for route in cfg.routes() {
            let Some(check) = &route.health_check else { continue };
            for &id in route.targets() {
                let Some((provider, spec)) = cfg.route_target(id) else { continue };
                let Some(up) = &provider.upstream else { continue };
                let key = crate::route_health::target_key(spec);
                let now = Instant::now();
                if last.get(&key).is_some_and(|t| now.duration_since(*t) < check.interval) {
                    continue;
                }
                last.insert(key, now);
                probe(&shard, &cfg, route, (id, provider, up), check).await;
            }
        }
    }
}

/// One probe of one target, recorded in its health.
async fn probe(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    route: &router::Route,
    (id, provider, up): (router::TargetId, &Provider, &Upstream),
    check: &router::HealthCheck,
) {
    // An open breaker is left to cool; a half-open one takes this probe as one of its own.
    if matches!(shard.route_health.begin(cfg, id, &route.breaker, Instant::now()), Admission::Denied) {
        return;
    }
    let request = RequestBytes {
        head: super::side_request::head(shard, provider, up, "GET", &check.path, None),
        body: Bytes::new(),
        is_head: false,
    };
    let shared = Shared { pool: &shard.pool, dns: &shard.process.dns, metrics: &shard.metrics };
    let answered = rt::timeout(check.timeout, async {
        let mut answer = send(&shared, up, &request, cfg.upstream_limits).await.ok()?;
        let status = answer.head.status;
        answer.read_to_end(MAX_PROBE_BODY).await.ok()?;
        Some(status)
    })
    .await;
    let outcome = match answered {
        Ok(Some(status)) if (200..300).contains(&status) => Outcome::Success { ttft: None, per_token: None },
        Ok(Some(401 | 403)) => Outcome::AuthFailure,
        _ => Outcome::Failure,
    };
    if !matches!(outcome, Outcome::Success { .. }) {
        tracing::warn!(provider = %provider.name, status = ?answered.ok().flatten(), "health check failed");
    }
    announce(shard, route, id, Instant::now(), (outcome, None), 0);
}
