//! One attempt at a target, as the router's retry loop sees it. Either the answer was committed
//! (its head went to the client, and whatever happens next is told in that answer), or nothing
//! was written and the attempt is a [`Miss`]: why it failed, for the router to decide whether to
//! retry or fall back, and the answer the client gets if no other attempt is made.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use adapters::canonical::ApiError;
use bytes::Bytes;

use super::supervised::Unserved;
use super::translate::MAX_ERROR_BODY;
use super::{OVERHEAD_HEADER, RequestCtx};
use crate::error::{ErrorKind, GatewayError};
use crate::http::Responder;
use crate::router::{FailureClass, classify, parse_retry_after};
use crate::rt::Conn;
use crate::upstream::UpstreamResponse;
use crate::upstream::exchange::{fault_kind, is_hop_by_hop};

/// An attempt's result: `Ok` once the answer is committed.
pub(super) type Attempted = Result<(), Box<Miss>>;

/// An attempt that wrote nothing to the client.
#[derive(Debug)]
pub(super) struct Miss {
    /// The provider's status; `None` when there was no answer (connect failure, timeout, a
    /// connection closed before the first byte of the body).
    pub status: Option<u16>,
    /// How long the provider asked to wait (`retry-after`, `retry-after-ms`).
    pub retry_after: Option<Duration>,
    pub class: FailureClass,
    pub answer: Final,
}

/// A header of a provider's answer (name, value), kept to relay it.
pub(super) type Header = (Box<[u8]>, Box<[u8]>);

/// What the client gets when a miss is the last word.
#[derive(Debug)]
pub(super) enum Final {
    /// The gateway's own error.
    Gateway(GatewayError),
    /// A provider error translated to OpenAI's shape (or the adapter's refusal).
    Api(ApiError),
    /// An OpenAI-dialect provider's error answer, relayed as it came.
    Upstream { status: u16, headers: Vec<Header>, body: Bytes },
    /// The target's actor did not take the request.
    Unserved(Unserved),
}

impl Miss {
    /// The gateway's own error: the provider unreachable, or the request refused before it was
    /// sent.
    pub fn gateway(err: GatewayError) -> Box<Miss> {
        let (status, class) = match err.kind {
            // No answer came: worth another try, here or elsewhere.
            ErrorKind::UpstreamDns
            | ErrorKind::UpstreamConnect
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamProtocol
            | ErrorKind::UpstreamPoolExhausted => (None, FailureClass::Transient),
            // No token for the target (Vertex AI, Entra ID), or the gateway is draining.
            ErrorKind::Unavailable | ErrorKind::TargetOverloaded | ErrorKind::TargetRestarting => {
                (Some(503), FailureClass::Transient)
            }
            _ => (Some(err.status()), FailureClass::Client),
        };
        Box::new(Miss { status, retry_after: None, class, answer: Final::Gateway(err) })
    }

    /// A guardrail refused the request after the provider answered (a service check asked
    /// alongside the call): the client's answer, and no fault of the target's, so neither
    /// retried nor counted against it.
    pub fn guardrail(err: GatewayError) -> Box<Miss> {
        Box::new(Miss {
            status: Some(err.status()),
            retry_after: None,
            class: FailureClass::Client,
            answer: Final::Gateway(err),
        })
    }

    /// A provider's error translated by its adapter; `retry_after` as the provider sent it.
    pub fn api(e: ApiError, retry_after: Option<Duration>) -> Box<Miss> {
        let class = classify(Some(e.status), e.message.as_bytes());
        Box::new(Miss { status: Some(e.status), retry_after, class, answer: Final::Api(e) })
    }

    /// An adapter's refusal of the request itself (nothing was sent): never retried.
    pub fn refused(e: ApiError) -> Box<Miss> {
        let class = if e.status >= 500 { FailureClass::Transient } else { FailureClass::Client };
        Box::new(Miss { status: Some(e.status), retry_after: None, class, answer: Final::Api(e) })
    }

    /// The actor of the target did not take the request.
    pub fn unserved(u: Unserved) -> Box<Miss> {
        // A request the actor never sent may go elsewhere; one that was in the hands of a
        // handler that panicked may have reached the provider: it is not sent twice.
        let class = if u.not_sent { FailureClass::Transient } else { FailureClass::Client };
        Box::new(Miss { status: Some(u.error.status()), retry_after: u.retry_after, class, answer: Final::Unserved(u) })
    }

    /// An OpenAI-dialect provider's error answer: its body is read (bounded) so the connection
    /// can be reused and the answer relayed as it came if it is the last word.
    pub async fn upstream(answer: &mut UpstreamResponse<'_>) -> Box<Miss> {
        let status = answer.head.status;
        let retry_after = retry_after_of(answer);
        let headers = answer
            .head
            .headers()
            .filter(|(n, _)| !is_hop_by_hop(n) && !n.eq_ignore_ascii_case(b"content-length"))
            .map(|(n, v)| (Box::from(n), Box::from(v)))
            .collect();
        let body = match answer.read_to_end(MAX_ERROR_BODY).await {
            Ok(b) => b,
            // Unreadable or too large to relay: the status stands, with a body that says so.
            Err(fault) => Bytes::from(
                GatewayError::new(
                    crate::error::ErrorKind::UpstreamProtocol,
                    format!("the provider answered {status} with an error body the gateway could not read: {fault}"),
                )
                .to_json(),
            ),
        };
        let class = classify(Some(status), &body);
        Box::new(Miss { status: Some(status), retry_after, class, answer: Final::Upstream { status, headers, body } })
    }

    /// An Azure OpenAI error answer: relayed with its headers, its body in OpenAI's error
    /// shape. Azure's own bodies vary (its API gateway answers `{"statusCode", "message"}` or
    /// plain text; a content-filter refusal may come with another status), and SDKs expect
    /// OpenAI's. A content filter's verdict is kept as `error.content_filter_result`. The
    /// router judges the provider's own status and body, before the rewrite.
    pub async fn upstream_azure(answer: &mut UpstreamResponse<'_>) -> Box<Miss> {
        let mut miss = Miss::upstream(answer).await;
        if let Final::Upstream { status, headers, body } = &mut miss.answer {
            let err = adapters::azure::error_from_azure(*status, body);
            let mut json = err.to_json();
            if let (Some(verdict), Some(error)) =
                (adapters::azure::content_filter_result(body), json.get_mut("error").and_then(|e| e.as_object_mut()))
            {
                error.insert("content_filter_result".into(), verdict);
            }
            *status = err.status;
            *body = Bytes::from(json.to_string());
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(b"content-type"));
            headers.push((Box::from(&b"content-type"[..]), Box::from(&b"application/json"[..])));
        }
        miss
    }

    /// Whether the client may see this answer's error as its own fault (for metrics).
    fn kind(&self) -> ErrorKind {
        match &self.answer {
            Final::Gateway(e) => e.kind,
            Final::Unserved(u) => u.error.kind,
            Final::Api(e) => api_kind(e.status),
            Final::Upstream { status, .. } => api_kind(*status),
        }
    }

    /// Answers the client with this miss (the last attempt's), with the gateway's headers.
    pub async fn send<C: Conn>(self, resp: &mut Responder<'_, C>, ctx: &mut RequestCtx) {
        let kind = self.kind();
        let overhead = ctx.head_overhead();
        let mut us = itoa::Buffer::new();
        let mut secs = itoa::Buffer::new();
        let overhead_us = us.format(u64::try_from(overhead.as_micros()).unwrap_or(u64::MAX));
        match self.answer {
            Final::Upstream { status, headers, body } => {
                // The provider's own answer is relayed: not the gateway's error.
                ctx.upstream_status = Some(status);
                let mut head = resp.start(status).header(OVERHEAD_HEADER, overhead_us);
                for (n, v) in &headers {
                    if !ctx.headers.iter().any(|(o, _)| o.as_bytes().eq_ignore_ascii_case(n)) {
                        head = head.header(n, v);
                    }
                }
                for (n, v) in &ctx.headers {
                    head = head.header(n, v);
                }
                if head.body_bytes(body).await.is_err() {
                    ctx.error = Some(ErrorKind::DownstreamClosed);
                }
            }
            Final::Gateway(err) => {
                ctx.error = Some(kind);
                let mut head = resp
                    .start(err.status())
                    .header("content-type", "application/json")
                    .header(OVERHEAD_HEADER, overhead_us);
                for (n, v) in &ctx.headers {
                    head = head.header(n, v);
                }
                let _ = head.body(&err.to_json()).await;
            }
            Final::Api(e) => {
                ctx.error = Some(kind);
                let body = serde_json::to_vec(&e.to_json()).unwrap_or_default();
                let mut head = resp
                    .start(e.status)
                    .header("content-type", "application/json")
                    .header(OVERHEAD_HEADER, overhead_us);
                if let Some(r) = self.retry_after {
                    head = head.header("retry-after", secs.format(r.as_millis().div_ceil(1000).max(1)));
                }
                for (n, v) in &ctx.headers {
                    head = head.header(n, v);
                }
                let _ = head.body(&body).await;
            }
            Final::Unserved(u) => {
                ctx.error = Some(kind);
                let mut head = resp
                    .start(u.error.status())
                    .header("content-type", "application/json")
                    .header(OVERHEAD_HEADER, overhead_us);
                if let Some(r) = u.retry_after {
                    // Whole seconds, rounded up: `retry-after: 0` would invite a retry storm.
                    head = head.header("retry-after", secs.format(r.as_millis().div_ceil(1000).max(1)));
                }
                for (n, v) in &ctx.headers {
                    head = head.header(n, v);
                }
                let _ = head.body(&u.error.to_json()).await;
            }
        }
    }
}

/// The error kind counted for a provider's error status.
pub(super) fn api_kind(status: u16) -> ErrorKind {
    match status {
        400 => ErrorKind::InvalidField,
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::Forbidden,
        404 => ErrorKind::NotFound,
        413 => ErrorKind::BodyTooLarge,
        429 => ErrorKind::RateLimited,
        503 => ErrorKind::Unavailable,
        504 => ErrorKind::UpstreamTimeout,
        _ => ErrorKind::UpstreamProtocol,
    }
}

/// `retry-after-ms` or `retry-after` of an answer.
pub(super) fn retry_after_of(answer: &UpstreamResponse<'_>) -> Option<Duration> {
    let text = |name: &str| answer.head.header(name).and_then(|v| std::str::from_utf8(v).ok());
    parse_retry_after(text("retry-after"), text("retry-after-ms"), SystemTime::now())
}

/// Runs the pre-commit part of an attempt within `deadline` (the route's attempt and
/// first-token timeouts): past it, the attempt is a miss the router may retry elsewhere.
/// A combinator rather than an `async fn`, so the (large) work is not copied once more.
pub(super) fn within<'p, T, W>(
    deadline: Option<Instant>,
    provider: &'p str,
    work: W,
) -> impl Future<Output = Result<T, Box<Miss>>> + 'p
where
    W: Future<Output = Result<T, Box<Miss>>> + 'p,
{
    use futures_util::FutureExt as _;
    let limit = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    crate::rt::timeout_opt(limit, work).map(move |r| match r {
        Ok(done) => done,
        Err(crate::rt::Elapsed) => Err(Miss::gateway(GatewayError::new(
            ErrorKind::UpstreamTimeout,
            format!(
                "provider {provider} gave no answer within the route's timeout ({} ms)",
                limit.unwrap_or_default().as_millis()
            ),
        ))),
    })
}

/// The first piece of a stream's body, within the attempt's deadline: the head is held until
/// it comes, so a stream that breaks before it is a miss the router can retry elsewhere.
pub(super) async fn first_piece(
    answer: &mut UpstreamResponse<'_>,
    provider: &str,
    ctx: &mut RequestCtx,
) -> Result<Option<Bytes>, Box<Miss>> {
    let waited = Instant::now();
    let first = within(ctx.attempt_deadline, provider, async {
        answer.next_chunk().await.map_err(|fault| {
            let message = format!("provider {provider}: the stream broke off before its first event: {fault}");
            Miss::gateway(GatewayError::new(fault_kind(&fault), message))
        })
    })
    .await;
    ctx.upstream_time += waited.elapsed();
    first
}
