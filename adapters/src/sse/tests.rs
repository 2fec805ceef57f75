use super::*;
use proptest::prelude::*;

type Owned = (Option<String>, Vec<u8>);

fn collect(scanner: &mut SseScanner, chunks: &[&[u8]]) -> Vec<Owned> {
    let mut events = Vec::new();
    for chunk in chunks {
        scanner.feed(chunk, |e| {
            events.push((e.event.map(str::to_owned), e.data.to_vec()));
        });
    }
    events
}

/// What `feed_items` reports: an event, or `None` for an event dropped for its size.
fn collect_items(scanner: &mut SseScanner, chunks: &[&[u8]]) -> Vec<Option<Owned>> {
    let mut items = Vec::new();
    for chunk in chunks {
        scanner.feed_items(chunk, |item| {
            items.push(match item {
                SseItem::Event(e) => Some((e.event.map(str::to_owned), e.data.to_vec())),
                SseItem::Overflow => None,
            });
        });
    }
    items
}

fn whole(input: &[u8]) -> Vec<Owned> {
    collect(&mut SseScanner::new(1 << 16), &[input])
}

fn data(events: &[Owned]) -> Vec<&[u8]> {
    events.iter().map(|(_, d)| d.as_slice()).collect()
}

/// An OpenAI chat stream as documented (chat/create, streaming), with usage enabled.
const OPENAI_STREAM: &[u8] = b"data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n\
: keep-alive\n\n\
data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,\"total_tokens\":21}}\n\n\
data: [DONE]\n\n";

/// An Anthropic-style stream: named events, CRLF endings, an id, a retry and multi-line data.
const MIXED_STREAM: &[u8] = b"\xef\xbb\xbfevent: message_start\r\ndata: {\"type\":\"message_start\"}\r\n\r\n\
id: 7\rretry: 1000\revent:ping\rdata:{\"type\": \"ping\"}\r\r\
: comment\ndata: line one\ndata:  line two, two spaces\ndata\ndata:\nunknown: field\n\n\
event: orphan\n\n\
data: last\n\n";

#[test]
fn openai_stream() {
    let events = whole(OPENAI_STREAM);
    assert_eq!(events.len(), 4);
    assert!(events.iter().all(|(name, _)| name.is_none()));
    assert!(events[2].1.ends_with(b"\"total_tokens\":21}}"));
    assert_eq!(events[3].1, b"[DONE]");
}

#[test]
fn line_endings_comments_and_multi_line_data() {
    let events = whole(MIXED_STREAM);
    assert_eq!(
        events,
        vec![
            (Some("message_start".to_owned()), b"{\"type\":\"message_start\"}".to_vec()),
            (Some("ping".to_owned()), b"{\"type\": \"ping\"}".to_vec()),
            (None, b"line one\n line two, two spaces\n\n".to_vec()),
            (None, b"last".to_vec()),
        ]
    );
}

#[test]
fn every_split_point_gives_the_same_events() {
    for input in [OPENAI_STREAM, MIXED_STREAM] {
        let expected = whole(input);
        for split in 0..=input.len() {
            let (a, b) = input.split_at(split);
            let got = collect(&mut SseScanner::new(1 << 16), &[a, b]);
            assert_eq!(got, expected, "split at {split}");
        }
    }
}

#[test]
fn every_pair_of_split_points_gives_the_same_events() {
    let input = MIXED_STREAM;
    let expected = whole(input);
    for i in 0..=input.len() {
        for j in i..=input.len() {
            let got = collect(&mut SseScanner::new(1 << 16), &[&input[..i], &input[i..j], &input[j..]]);
            assert_eq!(got, expected, "splits at {i}, {j}");
        }
    }
}

#[test]
fn byte_at_a_time_and_empty_feeds() {
    let chunks: Vec<&[u8]> = OPENAI_STREAM.iter().flat_map(|b| [std::slice::from_ref(b), &[][..]]).collect();
    let got = collect(&mut SseScanner::new(1 << 16), &chunks);
    assert_eq!(got, whole(OPENAI_STREAM));
}

#[test]
fn crlf_split_between_cr_and_lf_is_one_line_ending() {
    let got = collect(&mut SseScanner::new(1024), &[b"data: a\r", b"\ndata: b\r", b"", b"\n\r", b"\n"]);
    assert_eq!(data(&got), [b"a\nb".as_slice()]);
}

#[test]
fn lone_cr_line_endings() {
    assert_eq!(data(&whole(b"data: a\r\rdata: b\r\r")), [&b"a"[..], b"b"]);
}

#[test]
fn event_without_data_is_not_dispatched_and_name_does_not_leak() {
    let got = whole(b"event: x\n\ndata: y\n\n");
    assert_eq!(got, vec![(None, b"y".to_vec())]);
}

#[test]
fn empty_data_line_dispatches_empty_data() {
    assert_eq!(data(&whole(b"data:\n\n")), [&b""[..]]);
    assert_eq!(data(&whole(b"data\n\n")), [&b""[..]]);
}

#[test]
fn incomplete_event_waits_for_its_blank_line() {
    let mut scanner = SseScanner::new(1024);
    let got = collect(&mut scanner, &[b"data: a\n", b"data: b\n"]);
    assert!(got.is_empty());
    let got = collect(&mut scanner, &[b"\n"]);
    assert_eq!(data(&got), [&b"a\nb"[..]]);
}

#[test]
fn finish_flushes_an_unterminated_event_and_resets() {
    let mut scanner = SseScanner::new(1024);
    let mut got = collect(&mut scanner, &[b"data: [DONE]"]);
    scanner.finish(|e| got.push((None, e.data.to_vec())));
    assert_eq!(data(&got), [&b"[DONE]"[..]]);

    let mut got = collect(&mut scanner, &[b"\xef\xbb\xbfdata: next\n\n"]);
    scanner.finish(|e| got.push((None, e.data.to_vec())));
    assert_eq!(data(&got), [&b"next"[..]]);
}

#[test]
fn overflow_skips_the_event_and_resyncs_at_the_blank_line() {
    let big = format!("data: {}\n", "x".repeat(100));
    let input = format!("data: small\n\n{big}{big}data: tail of the big one\n\ndata: after\n\n");
    for split in 0..=input.len() {
        let (a, b) = input.as_bytes().split_at(split);
        let mut scanner = SseScanner::new(64);
        let got = collect(&mut scanner, &[a, b]);
        assert_eq!(data(&got), [&b"small"[..], b"after"], "split at {split}");
        assert!(scanner.overflowed());
    }
}

#[test]
fn overflow_is_reported_in_its_place_once_per_event_whatever_the_reads() {
    let big = format!("data: {}\n", "x".repeat(100));
    let input = format!("data: a\n\n{big}{big}\ndata: b\n\n: {big}\ndata: 0123456789\ndata: 0123456789\n\ndata: c\n\n");
    let a = Some((None, b"a".to_vec()));
    let b = Some((None, b"b".to_vec()));
    let c = Some((None, b"c".to_vec()));
    let expected = vec![a, None, b, None, None, c];
    for split in 0..=input.len() {
        let (x, y) = input.as_bytes().split_at(split);
        let mut scanner = SseScanner::new(20);
        assert_eq!(collect_items(&mut scanner, &[x, y]), expected, "split at {split}");
        scanner.finish(|e| panic!("nothing left to dispatch: {e:?}"));
    }
    let bytewise: Vec<&[u8]> = input.as_bytes().chunks(1).collect();
    assert_eq!(collect_items(&mut SseScanner::new(20), &bytewise), expected);
}

#[test]
fn overflow_by_accumulated_data_lines() {
    let mut scanner = SseScanner::new(20);
    let got = collect(&mut scanner, &[b"data: 0123456789\ndata: 0123456789\n\ndata: ok\n\n"]);
    assert_eq!(data(&got), [&b"ok"[..]]);
    assert!(scanner.overflowed());
}

#[test]
fn overflow_of_a_line_that_never_ends_is_bounded() {
    let mut scanner = SseScanner::new(64);
    let chunk = [b'x'; 1000];
    for _ in 0..100 {
        scanner.feed(&chunk, |_| panic!("nothing to dispatch"));
    }
    assert!(scanner.overflowed());
    assert!(scanner.line.capacity() <= 64);
    let got = collect(&mut scanner, &[b"\n\ndata: back\n\n"]);
    assert_eq!(data(&got), [&b"back"[..]]);
}

#[test]
fn event_within_the_limit_is_kept() {
    let mut scanner = SseScanner::new(16);
    // "data: 0123456789" is exactly 16 bytes.
    let got = collect(&mut scanner, &[b"data: 0123456789\n\n"]);
    assert_eq!(data(&got), [&b"0123456789"[..]]);
    assert!(!scanner.overflowed());
}

fn sse_like() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"data: ".to_vec()),
        Just(b"data:".to_vec()),
        Just(b"data".to_vec()),
        Just(b"event: ".to_vec()),
        Just(b"id: 1".to_vec()),
        Just(b":".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n\n".to_vec()),
        Just(BOM.to_vec()),
        Just(b"{\"a\":1}".to_vec()),
        Just(b"hello".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

proptest! {
    #[test]
    fn chunking_does_not_change_events(
        input in sse_like(),
        cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
        max in prop_oneof![Just(8usize), Just(24), Just(1 << 16)],
    ) {
        let mut reference = SseScanner::new(max);
        let expected = collect_items(&mut reference, &[&input]);

        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for point in points {
            chunks.push(&input[start..point]);
            start = point;
        }
        chunks.push(&input[start..]);

        let mut scanner = SseScanner::new(max);
        let got = collect_items(&mut scanner, &chunks);
        // Events and the places of the dropped ones alike.
        prop_assert_eq!(&got, &expected);
        prop_assert_eq!(scanner.overflowed(), reference.overflowed());
        prop_assert_eq!(scanner.overflowed(), got.contains(&None));
        prop_assert!(scanner.data.len() <= max && scanner.line.len() <= max);
        // `finish` never overflows: every overflow was reported by a `feed`.
        let overflowed = scanner.overflowed();
        scanner.finish(|_| {});
        prop_assert_eq!(scanner.overflowed(), overflowed);
    }
}
