//! The checks behind the fuzz targets, one function per target. The stable-Rust replay of the
//! corpus (`adapters/tests/fuzz_corpus.rs`) includes this file as a module, so the fuzzer and the
//! test suite run the same code on the same inputs.
//!
//! An input is a plan byte followed by the body: the plan byte's low 7 bits are the size of the
//! reads the body is fed in (0: one read, the whole body), its high bit is a per-target flag
//! (SSE: a small event limit; Anthropic and Gemini: `include_usage`; eventstream: fix the
//! frames' CRCs before decoding, so mutations reach the header and JSON parsers instead of
//! stopping at a checksum). Each check feeds the body in pieces and as a whole and asserts the
//! results are the same, besides the decoder not panicking.

use adapters::anthropic::AnthropicStream;
use adapters::anthropic::stream::MAX_EVENT_BYTES as ANTHROPIC_MAX_EVENT_BYTES;
use adapters::bedrock::ConverseStream;
use adapters::bedrock::eventstream::{DecodeError, EventStreamDecoder, Message, try_encode};
use adapters::canonical::{ApiError, ChatChunk, FinishReason, Usage};
use adapters::gemini::GeminiStream;
use adapters::sse::{SseEvent, SseScanner};

/// A target's check: panics when the input breaks a property.
pub type Check = fn(&[u8]);

/// Every target by name (the names of `fuzz_targets/*.rs` and of `corpus/*/`).
pub const TARGETS: [(&str, Check); 5] = [
    ("sse", sse),
    ("anthropic_stream", anthropic_stream),
    ("gemini_stream", gemini_stream),
    ("bedrock_eventstream", bedrock_eventstream),
    ("converse_stream", converse_stream),
];

/// A fuzz input, read as the module docs say.
pub struct Input<'a> {
    /// The size of each read; 0 feeds the body in one read.
    pub read: usize,
    /// The target's variant (see the module docs).
    pub flag: bool,
    pub body: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn parse(data: &'a [u8]) -> Input<'a> {
        match data.split_first() {
            Some((&plan, body)) => Input { read: usize::from(plan & 0x7f), flag: plan & 0x80 != 0, body },
            None => Input { read: 0, flag: false, body: &[] },
        }
    }

    /// The body split into reads of the planned size.
    pub fn reads(&self) -> Vec<&'a [u8]> {
        split(self.body, self.read)
    }
}

/// `body` in reads of `read` bytes; 0 is one read.
fn split(body: &[u8], read: usize) -> Vec<&[u8]> {
    if read == 0 { vec![body] } else { body.chunks(read).collect() }
}

/// Serializes chunks as the engine does before writing them downstream.
fn serialize(chunks: &[ChatChunk]) {
    for c in chunks {
        assert!(serde_json::to_vec(c).is_ok(), "a chunk does not serialize");
    }
}

// ---------------------------------------------------------------------------------------------
// SSE

type Events = Vec<(Option<String>, Vec<u8>)>;

fn scan(scanner: &mut SseScanner, reads: &[&[u8]]) -> Events {
    let mut events = Vec::new();
    let mut on = |ev: SseEvent<'_>| events.push((ev.event.map(str::to_owned), ev.data.to_vec()));
    for read in reads {
        scanner.feed(read, &mut on);
    }
    scanner.finish(&mut on);
    events
}

/// [`SseScanner`]: the same events (and the same overflow verdict) whatever the reads; no event
/// over the limit; after `finish` a scanner reads a new stream as a fresh one does.
pub fn sse(data: &[u8]) {
    let input = Input::parse(data);
    let max = if input.flag { 32 } else { 1024 };
    let mut whole = SseScanner::new(max);
    let expected = scan(&mut whole, &[input.body]);
    let mut pieces = SseScanner::new(max);
    assert_eq!(scan(&mut pieces, &input.reads()), expected, "events depend on the reads");
    assert_eq!(pieces.overflowed(), whole.overflowed(), "overflow depends on the reads");
    assert!(expected.iter().all(|(_, data)| data.len() <= max), "an event over the limit was dispatched");
    assert_eq!(scan(&mut pieces, &input.reads()), expected, "a reused scanner reads differently");
}

// ---------------------------------------------------------------------------------------------
// Anthropic and Gemini streams

type AnthropicRun = (Vec<ChatChunk>, Option<Usage>, Option<ApiError>, bool, String);

fn run_anthropic(reads: &[&[u8]], include_usage: bool) -> AnthropicRun {
    let mut s = AnthropicStream::new("claude-fuzz", 1, include_usage);
    let mut out = Vec::new();
    for read in reads {
        s.feed(read, &mut out);
    }
    s.finish(&mut out);
    serialize(&out);
    (out, s.usage(), s.take_error(), s.is_complete(), s.id().to_owned())
}

/// [`AnthropicStream`]: the same chunks, usage, error and completeness whatever the reads.
pub fn anthropic_stream(data: &[u8]) {
    let input = Input::parse(data);
    let whole = run_anthropic(&[input.body], input.flag);
    let pieces = run_anthropic(&input.reads(), input.flag);
    // An event over the stream's limit is reported when a read ends, so whether a `message_stop`
    // in the same read hides it depends on the reads; below the limit that cannot happen.
    if input.body.len() < ANTHROPIC_MAX_EVENT_BYTES {
        assert_eq!(pieces, whole, "the translation depends on the reads");
    }
}

type GeminiRun = (Vec<ChatChunk>, Option<Usage>, Option<ApiError>);

fn run_gemini(reads: &[&[u8]], include_usage: bool) -> GeminiRun {
    let mut s = GeminiStream::new("gemini-fuzz", "chatcmpl-fuzz", 1, include_usage);
    let mut out = Vec::new();
    for read in reads {
        s.feed(read, &mut out);
    }
    s.finish(&mut out);
    let n = out.len();
    // Finished: later feeds and finishes add nothing.
    for read in reads {
        s.feed(read, &mut out);
    }
    s.finish(&mut out);
    assert_eq!(out.len(), n, "chunks after finish");
    serialize(&out);
    (out, s.usage(), s.error().cloned())
}

/// [`GeminiStream`]: the same chunks, usage and error whatever the reads.
pub fn gemini_stream(data: &[u8]) {
    let input = Input::parse(data);
    let whole = run_gemini(&[input.body], input.flag);
    assert_eq!(run_gemini(&input.reads(), input.flag), whole, "the translation depends on the reads");
}

// ---------------------------------------------------------------------------------------------
// Bedrock eventstream

/// The raw decoder's message limit here: small, so `TooLarge` is reachable.
const EVENTSTREAM_MAX: usize = 4096;

/// Rewrites the prelude and message CRCs of the frames the body's lengths describe, as far as
/// they go.
pub fn fix_crcs(body: &mut [u8]) {
    let mut at = 0;
    while let Some(prelude) = body.get(at..at + 8) {
        let total =
            usize::try_from(u32::from_be_bytes([prelude[0], prelude[1], prelude[2], prelude[3]])).unwrap_or(usize::MAX);
        let crc = crc32fast::hash(prelude).to_be_bytes();
        let Some(slot) = body.get_mut(at + 8..at + 12) else { return };
        slot.copy_from_slice(&crc);
        let end = at.saturating_add(total);
        if total < 16 || end > body.len() {
            return;
        }
        let crc = crc32fast::hash(&body[at..end - 4]).to_be_bytes();
        body[end - 4..end].copy_from_slice(&crc);
        at = end;
    }
}

/// The body, with its CRCs fixed when the input asks for it.
fn eventstream_body(input: &Input<'_>) -> Vec<u8> {
    let mut body = input.body.to_vec();
    if input.flag {
        fix_crcs(&mut body);
    }
    body
}

fn decode(reads: &[&[u8]]) -> (Vec<Message>, Result<(), DecodeError>) {
    let mut d = EventStreamDecoder::new(EVENTSTREAM_MAX);
    let mut out = Vec::new();
    for read in reads {
        if let Err(e) = d.feed(read, &mut out) {
            // Fatal: the decoder stays failed and decodes nothing more.
            let n = out.len();
            assert_eq!(d.feed(read, &mut out), Err(e.clone()));
            assert_eq!(d.finish(), Err(e.clone()));
            assert_eq!(out.len(), n);
            return (out, Err(e));
        }
    }
    let end = d.finish();
    if end.is_ok() {
        assert_eq!(d.buffered(), 0);
    }
    (out, end)
}

/// [`EventStreamDecoder`]: the same messages and error whatever the reads, and what it decodes
/// re-encodes to the bytes it read (the framing is canonical, so nothing is decoded loosely).
pub fn bedrock_eventstream(data: &[u8]) {
    let input = Input::parse(data);
    let body = eventstream_body(&input);
    let whole = decode(&[&body]);
    assert_eq!(decode(&split(&body, input.read)), whole, "decoding depends on the reads");
    let (messages, end) = whole;
    let mut encoded = Vec::new();
    for m in &messages {
        match try_encode(m) {
            Some(bytes) => encoded.extend(bytes),
            None => panic!("a decoded message does not encode: {m:?}"),
        }
    }
    if end.is_ok() {
        assert!(encoded == body, "the decoded messages do not re-encode to the stream");
    } else {
        assert!(body.starts_with(&encoded), "the decoded messages do not re-encode to a prefix of the stream");
    }
}

type ConverseRun = (Vec<ChatChunk>, Option<ApiError>, Option<Usage>, Option<FinishReason>);

fn run_converse(reads: &[&[u8]]) -> ConverseRun {
    let mut s = ConverseStream::new("bedrock-fuzz", "chatcmpl-fuzz", 1, true);
    let mut out = Vec::new();
    let mut failed = None;
    for read in reads {
        if let Err(e) = s.feed(read, &mut out) {
            failed = Some(e);
            break;
        }
    }
    let failed = match failed {
        Some(e) => {
            // Dead afterwards: the same error, no more chunks.
            let n = out.len();
            assert_eq!(s.feed(b"", &mut out), Err(e.clone()));
            assert_eq!(s.finish(), Err(e.clone()));
            assert_eq!(out.len(), n);
            Some(e)
        }
        None => s.finish().err(),
    };
    serialize(&out);
    (out, failed, s.usage().cloned(), s.finish_reason())
}

/// [`ConverseStream`]: the same chunks, error, usage and finish reason whatever the reads.
pub fn converse_stream(data: &[u8]) {
    let input = Input::parse(data);
    let body = eventstream_body(&input);
    let whole = run_converse(&[&body]);
    assert_eq!(run_converse(&split(&body, input.read)), whole, "the translation depends on the reads");
}
