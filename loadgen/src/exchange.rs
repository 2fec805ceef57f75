//! One request on one connection: write it, read the head and the body, and for event streams
//! time every token event.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use adapters::openai::usage::UsageReader;
use adapters::sse::SseScanner;
use bytes::BytesMut;
use engine::http::upstream::{BodyReader, ResponseFraming, UpstreamFault, read_head};
use engine::rt::Conn;

use crate::mix::Template;
use crate::recorder::{ErrorKind, Recorder, record};

/// What a finished exchange tells the caller.
pub struct Done {
    pub status: u16,
    /// The connection can carry another request.
    pub reusable: bool,
}

/// Whether an SSE `data:` payload carries generated output (a token event). A byte scan, not a
/// parse: the load generator must stay cheaper than what it measures. It recognises OpenAI chat
/// chunks (`delta.content`, `delta.tool_calls`, `delta.reasoning_content`) and legacy completions
/// (`text`), with a non-empty value.
pub fn is_token_event(data: &[u8]) -> bool {
    const KEYS: [&[u8]; 4] = [b"\"content\":\"", b"\"text\":\"", b"\"reasoning_content\":\"", b"\"arguments\":\""];
    KEYS.iter().any(|k| memchr::memmem::find_iter(data, k).any(|at| data.get(at + k.len()).is_some_and(|b| *b != b'"')))
}

fn fault_kind(f: &UpstreamFault) -> ErrorKind {
    match f {
        UpstreamFault::Io(_) | UpstreamFault::Closed => ErrorKind::Io,
        UpstreamFault::IdleTimeout(_) => ErrorKind::Timeout,
        UpstreamFault::Protocol(_) | UpstreamFault::HeadTooLarge(_) | UpstreamFault::BodyTooLarge(_) => {
            ErrorKind::Protocol
        }
    }
}

/// Runs one exchange. `rec` is `Some` when the request counts (not warm-up); it is borrowed only
/// between awaits, so concurrent exchanges on the worker share it. Returns the kind of failure
/// on error; the caller then drops the connection.
pub async fn exchange<C: Conn>(
    conn: &mut C,
    buf: &mut BytesMut,
    template: &Template,
    usage: &mut UsageReader,
    rec: Option<&RefCell<Recorder>>,
    timeout: Duration,
) -> Result<Done, ErrorKind> {
    let sent_at = Instant::now();
    let deadline = sent_at + timeout;
    let remaining = || deadline.saturating_duration_since(Instant::now());
    if conn.write_bytes(template.request.clone()).await.is_err() {
        return Err(ErrorKind::Io);
    }
    let head = match engine::rt::timeout(remaining(), read_head(conn, buf, false, 64 * 1024)).await {
        Err(_) => return Err(ErrorKind::Timeout),
        Ok(Err(f)) => return Err(fault_kind(&f)),
        Ok(Ok(h)) => h,
    };
    let head_at = Instant::now();
    if let Some(r) = rec {
        record(&mut r.borrow_mut().ttfb, head_at - sent_at);
    }
    let sse = head.is_event_stream();
    let mut reader = BodyReader::new(head.framing);
    let mut events = sse.then(|| SseScanner::new(1 << 20));
    let mut body = BytesMut::new();
    let mut last_token: Option<Instant> = None;
    let mut first_token: Option<Instant> = None;
    let mut token_events = 0u64;
    let mut found_usage = None;
    let mut bytes = 0u64;
    loop {
        let piece = match engine::rt::timeout(remaining(), reader.next(conn, buf, remaining())).await {
            Err(_) => return Err(ErrorKind::Timeout),
            Ok(Err(f)) => return Err(fault_kind(&f)),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(p))) => p,
        };
        bytes += piece.len() as u64;
        match events.as_mut() {
            Some(scanner) => {
                let now = Instant::now();
                scanner.feed(&piece, |ev| {
                    if is_token_event(ev.data) {
                        token_events += 1;
                        if let Some(r) = rec {
                            let mut r = r.borrow_mut();
                            match last_token {
                                None => record(&mut r.ttft, now - sent_at),
                                Some(prev) => record(&mut r.itl, now - prev),
                            }
                        }
                        first_token.get_or_insert(now);
                        last_token = Some(now);
                    } else if let Some(u) = usage.stream_data(ev.data) {
                        found_usage = Some(u);
                    }
                });
            }
            None => body.extend_from_slice(&piece),
        }
    }
    let end = Instant::now();
    if !sse && (200..300).contains(&head.status) {
        found_usage = usage.response_body(&body);
    }
    if let Some(r) = rec {
        let mut r = r.borrow_mut();
        r.status(head.status);
        r.bytes_received += bytes;
        record(&mut r.service, end - sent_at);
        let completion = found_usage.map_or(token_events, |u| u.completion_tokens);
        if let Some(u) = found_usage {
            r.prompt_tokens += u.prompt_tokens;
        }
        r.completion_tokens += completion;
        if let (Some(first), true) = (first_token, sse) {
            let span = end.saturating_duration_since(first).as_secs_f64();
            if span > 0.0 && completion > 1 {
                let _ = r.stream_tokens_per_sec.record(((completion - 1) as f64 / span).round().max(1.0) as u64);
            }
        }
    }
    let reusable = head.keep_alive && reader.is_done() && buf.is_empty() && head.framing != ResponseFraming::UntilClose;
    Ok(Done { status: head.status, reusable })
}

#[cfg(test)]
mod tests {
    use super::is_token_event;

    #[test]
    fn token_events() {
        assert!(is_token_event(br#"{"choices":[{"delta":{"content":"Hi"}}]}"#));
        assert!(is_token_event(br#"{"choices":[{"text":" a","index":0}]}"#));
        assert!(!is_token_event(br#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#));
        assert!(!is_token_event(br#"{"choices":[],"usage":{"prompt_tokens":1}}"#));
        assert!(!is_token_event(b"[DONE]"));
    }
}
