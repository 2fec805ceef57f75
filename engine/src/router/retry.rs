//! Retry and fallback policies, backoff with jitter, `retry-after` parsing and failure
//! classification: everything [`crate::router::Plan::failed`] needs to decide what a failed
//! attempt leads to.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The statuses worth another attempt by default: rate limits and server-side trouble.
pub const DEFAULT_STATUSES: [u16; 6] = [429, 500, 502, 503, 504, 529];

/// Retries within one fallback group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt, per group.
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Retries stop when waiting would end later than this after the plan started.
    pub budget: Duration,
    pub on_status: Vec<u16>,
    pub on_connection_error: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 2,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            budget: Duration::from_secs(10),
            on_status: DEFAULT_STATUSES.to_vec(),
            on_connection_error: true,
        }
    }
}

/// When a plan moves on to the next fallback group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackPolicy {
    pub on_status: Vec<u16>,
    /// Group to jump to when the prompt does not fit the context window.
    pub context_window: Option<usize>,
    /// Group to jump to when the provider refuses the content.
    pub content_policy: Option<usize>,
}

impl Default for FallbackPolicy {
    fn default() -> Self {
        FallbackPolicy { on_status: DEFAULT_STATUSES.to_vec(), context_window: None, content_policy: None }
    }
}

/// Per-route timeouts; `None` leaves the engine's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Option<Duration>,
    pub attempt: Option<Duration>,
    pub first_token: Option<Duration>,
    pub idle: Option<Duration>,
    pub total: Option<Duration>,
}

/// What kind of failure an attempt ended in; decides retry and fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Rate limits, server errors, connection errors and timeouts: may pass on retry.
    Transient,
    /// The prompt is too long for this model: only a bigger model helps.
    ContextWindow,
    /// The provider refused the content: only another provider may accept it.
    ContentPolicy,
    /// The target's credentials were refused: another target may work.
    Auth,
    /// Any other 4xx: the request itself is wrong, so it is never retried.
    Client,
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `None`: a connection error or timeout.
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
    pub class: FailureClass,
}

/// `backoff × 2^retries`, capped at `max_backoff`, times a random fraction in [0, 1) ("full
/// jitter": spreads the retries of many clients hit by the same outage).
pub fn backoff(p: &RetryPolicy, retries: u32, random: u64) -> Duration {
    let factor = 1u32.checked_shl(retries).unwrap_or(u32::MAX);
    let ceiling = p.backoff.saturating_mul(factor).min(p.max_backoff);
    // ceiling × (top 53 bits of random) / 2^53, in integers: rounds down, so always < ceiling.
    let nanos = ceiling.as_nanos().min(u128::from(u64::MAX));
    let jittered = (nanos * u128::from(random >> 11)) >> 53;
    Duration::from_nanos(u64::try_from(jittered).unwrap_or(u64::MAX))
}

/// Sorts a failed attempt into a [`FailureClass`] from its status and error body.
pub fn classify(status: Option<u16>, error_body: &[u8]) -> FailureClass {
    let Some(status) = status else { return FailureClass::Transient };
    match status {
        401 | 403 => FailureClass::Auth,
        400 | 413 | 422 if is_context_window(error_body) => FailureClass::ContextWindow,
        400 if is_content_policy(error_body) => FailureClass::ContentPolicy,
        408 | 409 | 425 | 429 | 500..=599 => FailureClass::Transient,
        _ => FailureClass::Client,
    }
}

const CONTEXT_PHRASES: [&str; 5] =
    ["context_length_exceeded", "maximum context length", "prompt is too long", "too many tokens", "input is too long"];

/// Error codes and types with which providers report refused content.
const POLICY_CODES: [&str; 4] = ["content_policy_violation", "content_filter", "responsible_ai_policy", "safety"];

/// Long enough to be unambiguous anywhere in a body (Azure nests its code in `innererror`).
const POLICY_PHRASES: [&str; 3] = ["content_policy_violation", "responsible_ai_policy", "responsibleaipolicyviolation"];

fn is_context_window(body: &[u8]) -> bool {
    CONTEXT_PHRASES.iter().any(|p| contains_ignore_case(body, p.as_bytes()))
}

fn is_content_policy(body: &[u8]) -> bool {
    if POLICY_PHRASES.iter().any(|p| contains_ignore_case(body, p.as_bytes())) {
        return true;
    }
    // Short words such as "safety" count only as an error code or type, not in prose.
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else { return false };
    let error = json.get("error");
    [json.get("code"), json.get("type"), error.and_then(|e| e.get("code")), error.and_then(|e| e.get("type"))]
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .any(|v| POLICY_CODES.iter().any(|c| v.eq_ignore_ascii_case(c)))
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// How long the provider asked to wait. `retry-after-ms` (float milliseconds) wins; else
/// `retry-after` as (float) seconds or an HTTP-date relative to `now`. Negative, past or
/// unreadable values give `None` (the plan then uses its own backoff).
pub fn parse_retry_after(retry_after: Option<&str>, retry_after_ms: Option<&str>, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = retry_after_ms.and_then(non_negative) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    let value = retry_after?.trim();
    if let Some(secs) = non_negative(value) {
        return Duration::try_from_secs_f64(secs).ok();
    }
    parse_http_date(value)?.duration_since(now).ok().filter(|d| !d.is_zero())
}

fn non_negative(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)
}

const WEEKDAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
const MONTHS: [&[u8]; 12] =
    [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];

/// IMF-fixdate (RFC 9110 §5.6.7), the one date format servers must send:
/// `Sun, 06 Nov 1994 08:49:37 GMT`. (The obsolete RFC 850 and asctime forms are not read.)
fn parse_http_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 29 || b.get(3..5)? != b", " || b.get(25..)? != b" GMT" {
        return None;
    }
    let seps = [(7, b' '), (11, b' '), (16, b' '), (19, b':'), (22, b':')];
    if seps.iter().any(|&(i, c)| b.get(i) != Some(&c)) || !WEEKDAYS.contains(&b.get(0..3)?) {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        part.iter().try_fold(0u32, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0')))
    };
    let day = digits(5..7)?;
    let month = MONTHS.iter().position(|m| Some(*m) == b.get(8..11))? as u32 + 1;
    let year = digits(12..16)?;
    let (hour, min, sec) = (digits(17..19)?, digits(20..22)?, digits(23..25)?);
    if day == 0 || day > days_in_month(year, month) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + min * 60 + sec);
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn classify_by_status_and_body() {
        use FailureClass::*;
        assert_eq!(classify(None, b""), Transient);
        assert_eq!(classify(Some(401), b""), Auth);
        assert_eq!(classify(Some(403), b"{}"), Auth);
        let ctx = br#"{"error":{"code":"context_length_exceeded","message":"..."}}"#;
        assert_eq!(classify(Some(400), ctx), ContextWindow);
        assert_eq!(classify(Some(413), b"Prompt is too long: 250000 tokens"), ContextWindow);
        assert_eq!(classify(Some(422), b"This model's Maximum Context Length is 8192"), ContextWindow);
        assert_eq!(classify(Some(400), b"input is too long for requested model"), ContextWindow);
        assert_eq!(classify(Some(400), b"too many tokens"), ContextWindow);
        assert_eq!(classify(Some(400), br#"{"error":{"code":"content_policy_violation"}}"#), ContentPolicy);
        assert_eq!(classify(Some(400), br#"{"error":{"code":"content_filter","message":"x"}}"#), ContentPolicy);
        assert_eq!(
            classify(Some(400), br#"{"error":{"innererror":{"code":"ResponsibleAIPolicyViolation"}}}"#),
            ContentPolicy
        );
        assert_eq!(classify(Some(400), br#"{"type":"error","error":{"type":"safety"}}"#), ContentPolicy);
        // "safety" in prose is not a content-policy code.
        assert_eq!(classify(Some(400), br#"{"error":{"message":"see our safety docs"}}"#), Client);
        // Content policy is a 400 thing; a 422 about policy is a client error.
        assert_eq!(classify(Some(422), br#"{"error":{"code":"content_filter"}}"#), Client);
        for s in [408, 409, 425, 429, 500, 502, 503, 504, 529] {
            assert_eq!(classify(Some(s), b""), Transient, "{s}");
        }
        for s in [400, 404, 405, 413, 422, 451] {
            assert_eq!(classify(Some(s), b"nope"), Client, "{s}");
        }
    }

    #[test]
    fn retry_after_seconds_float_ms_date_and_garbage() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after(Some("3"), None, now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(Some(" 1.5 "), None, now), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after(Some("0"), None, now), Some(Duration::ZERO));
        // The ms header wins, also over a valid seconds header.
        assert_eq!(parse_retry_after(Some("3"), Some("250.5"), now), Some(Duration::from_micros(250_500)));
        // An unreadable ms header falls back to retry-after.
        assert_eq!(parse_retry_after(Some("2"), Some("soon"), now), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(Some("Sun, 06 Nov 1994 08:50:07 GMT"), None, now), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_retry_after(Some("Mon, 07 Nov 1994 08:49:37 GMT"), None, now),
            Some(Duration::from_secs(86_400))
        );
        // Past dates, negative numbers and garbage.
        assert_eq!(parse_retry_after(Some("Sun, 06 Nov 1994 08:49:00 GMT"), None, now), None);
        assert_eq!(parse_retry_after(Some("-1"), None, now), None);
        assert_eq!(parse_retry_after(None, Some("-5"), now), None);
        assert_eq!(parse_retry_after(Some("soon"), None, now), None);
        assert_eq!(parse_retry_after(Some("inf"), None, now), None);
        assert_eq!(parse_retry_after(Some("NaN"), None, now), None);
        assert_eq!(parse_retry_after(Some("1e300"), None, now), None);
        assert_eq!(parse_retry_after(Some("Sun, 32 Nov 1994 08:49:37 GMT"), None, now), None);
        assert_eq!(parse_retry_after(Some("Sun, 06 Foo 1994 08:49:37 GMT"), None, now), None);
        assert_eq!(parse_retry_after(Some("Sun, 06 Nov 1994 24:49:37 GMT"), None, now), None);
        assert_eq!(parse_retry_after(Some("Sunday, 06-Nov-94 08:49:37 GMT"), None, now), None);
        assert_eq!(parse_retry_after(Some("Sun, 06 Nov 1994 08:49:37 UTC"), None, now), None);
        assert_eq!(parse_retry_after(Some("Sun, 06 Nov 1994 08:49:3é GMT"), None, now), None);
        assert_eq!(parse_retry_after(None, None, now), None);
    }

    #[test]
    fn http_date_epochs() {
        let at = |s: &str| parse_http_date(s).unwrap().duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(at("Thu, 01 Jan 1970 00:00:00 GMT"), 0);
        assert_eq!(at("Sun, 06 Nov 1994 08:49:37 GMT"), 784_111_777);
        assert_eq!(at("Tue, 29 Feb 2000 12:00:00 GMT"), 951_825_600);
        assert_eq!(at("Fri, 01 Mar 2024 00:00:00 GMT"), 1_709_251_200);
        assert!(parse_http_date("Thu, 29 Feb 2023 00:00:00 GMT").is_none());
        assert!(parse_http_date("Wed, 31 Dec 1969 23:59:59 GMT").is_none());
    }

    #[test]
    fn backoff_doubles_caps_and_jitters_within_bounds() {
        let p = RetryPolicy {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            ..Default::default()
        };
        // random = u64::MAX is the largest fraction: just under the ceiling.
        let top = |n| backoff(&p, n, u64::MAX);
        assert!(top(0) < Duration::from_millis(100) && top(0) > Duration::from_millis(99));
        assert!(top(1) < Duration::from_millis(200) && top(1) > Duration::from_millis(199));
        assert!(top(4) < Duration::from_millis(1600) && top(4) > Duration::from_millis(1599));
        assert!(top(5) < Duration::from_secs(2) && top(5) > Duration::from_millis(1999));
        assert!(top(40) < Duration::from_secs(2));
        assert_eq!(backoff(&p, 3, 0), Duration::ZERO);
        assert_eq!(backoff(&p, 0, 1 << 63), Duration::from_millis(50));
        let mut x = 0x1234_5678_9abc_def0u64;
        for n in 0..8 {
            let ceiling = Duration::from_millis(100 << n).min(Duration::from_secs(2));
            for _ in 0..200 {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                assert!(backoff(&p, n, x) < ceiling);
            }
        }
    }
}
