//! Requests served inside their target's actor (see [`crate::actor`]): what the handlers do
//! before and after, and the answer a client gets when the actor did not complete its request.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::RequestCtx;
use super::attempt::{Attempted, Miss};
use crate::actor::{Refusal, Served, TargetActor};
use crate::config::Provider;
use crate::error::{ErrorKind, ErrorSource, GatewayError};
use crate::http::Responder;
use crate::rt::Conn;
use crate::shard::Shard;

/// The actor of `provider` on this shard.
pub(super) fn actor(shard: &Shard, provider: &Provider) -> Rc<TargetActor> {
    let pool_key = provider.upstream.as_ref().map(|u| &u.pool_key);
    shard.targets.actor(shard.id, &provider.name, pool_key, provider.actor, provider.restart)
}

/// Why a request the actor took was not completed, and what to answer if the response has not
/// started.
#[derive(Debug)]
pub(super) struct Unserved {
    pub error: GatewayError,
    pub retry_after: Option<Duration>,
    /// The request was not sent: another attempt cannot do it twice.
    pub not_sent: bool,
}

/// Book-keeping once the actor is done with a request: its health learns how the request went;
/// a refusal or a panic becomes the error to answer. After a panic that happened mid-answer,
/// nothing can be said any more: the connection is closed instead (`None`).
pub(super) fn conclude<C: Conn>(
    actor: &TargetActor,
    served: Served<()>,
    started: Instant,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) -> Option<Unserved> {
    let name = actor.name();
    let unserved = match served {
        Served::Done(()) => {
            let upstream_failed = ctx.error.is_some_and(|k| k.source() == ErrorSource::Upstream)
                || ctx.upstream_status.is_some_and(|s| s >= 500);
            actor.observe(started.elapsed(), ctx.ttft, !upstream_failed);
            return None;
        }
        Served::Refused(r) => refusal(name, r),
        Served::Panicked(_) => {
            ctx.error = Some(ErrorKind::TargetFailed);
            if resp.status() != 0 {
                resp.abandon();
                return None;
            }
            Unserved {
                error: GatewayError::new(
                    ErrorKind::TargetFailed,
                    format!(
                        "the gateway's handler for provider {name} failed on this request (an internal fault, now logged); the request may or may not have reached the provider"
                    ),
                ),
                retry_after: None,
                not_sent: false,
            }
        }
    };
    ctx.error = Some(unserved.error.kind);
    Some(unserved)
}

/// Book-keeping once the actor is done with an attempt: a committed answer is concluded as
/// above; a miss (nothing written) teaches the actor's health and goes back to the caller, as
/// does a refusal or a panic that happened before the answer began.
pub(super) fn settle_attempt<C: Conn>(
    actor: &TargetActor,
    served: Served<Attempted>,
    started: Instant,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) -> Option<Box<Miss>> {
    let served = match served {
        Served::Done(Err(miss)) => {
            // A refusal of the request itself (a client error, a rate limit) says nothing bad of
            // the target; no answer or a 5xx does.
            let ok = miss.status.is_some_and(|s| s < 500);
            actor.observe(started.elapsed(), None, ok);
            return Some(miss);
        }
        Served::Done(Ok(())) => Served::Done(()),
        Served::Refused(r) => Served::Refused(r),
        Served::Panicked(m) => Served::Panicked(m),
    };
    conclude(actor, served, started, resp, ctx).map(Miss::unserved)
}

/// What a client is told when the actor of `name` did not take its request.
pub(super) fn refusal(name: &str, r: Refusal) -> Unserved {
    match r {
        Refusal::MailboxFull { waiting } => Unserved {
            error: GatewayError::new(
                ErrorKind::TargetOverloaded,
                format!(
                    "provider {name} is overloaded on this gateway: {waiting} requests already wait for it; retry later"
                ),
            ),
            retry_after: Some(Duration::from_secs(1)),
            not_sent: true,
        },
        Refusal::WaitedTooLong { waited } => Unserved {
            error: GatewayError::new(
                ErrorKind::TargetOverloaded,
                format!(
                    "provider {name} is busy on this gateway: no turn came within {} ms (all requests it may serve at once are in flight); retry later",
                    waited.as_millis()
                ),
            ),
            retry_after: Some(Duration::from_secs(1)),
            not_sent: true,
        },
        Refusal::Restarting { retry_after } => Unserved {
            error: GatewayError::new(
                ErrorKind::TargetRestarting,
                format!(
                    "provider {name} is restarting after an internal fault; retry in {} ms",
                    retry_after.as_millis().max(1)
                ),
            ),
            retry_after: Some(retry_after),
            not_sent: true,
        },
        Refusal::RestartedWhileWaiting => Unserved {
            error: GatewayError::new(
                ErrorKind::TargetFailed,
                format!("provider {name} failed while this request waited for it; the request was not sent. Retry it."),
            ),
            retry_after: None,
            not_sent: true,
        },
    }
}
