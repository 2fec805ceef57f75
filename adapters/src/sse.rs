//! An incremental Server-Sent Events scanner (WHATWG HTML, "Interpreting an event stream"),
//! shared by every streaming dialect.
//!
//! Upstream bytes arrive in arbitrary pieces: a TCP read may end inside a line, inside a
//! `"\r\n"`, inside a UTF-8 sequence. The scanner keeps only the unfinished line and the current
//! event's data between calls, in buffers it reuses, so the common case (one event per read,
//! one `data:` line per event) costs a memchr and a copy, with no allocation per event.
//!
//! A stream that never sends a blank line must not grow memory without bound, so an event whose
//! buffered bytes (its data so far plus the line being read) pass `max_event_bytes` is dropped
//! and the scanner resynchronises at the next blank line. [`SseScanner::overflowed`] says that
//! this happened; [`SseScanner::feed_items`] also says where, between which events. A translator
//! needs the place when a later event changes what the loss means (a dropped event before the
//! end-of-stream marker is a truncated answer, one after it is noise): a flag looked at after
//! `feed` returns cannot tell the two apart when both arrived in the same read.
//!
//! Per the spec: lines end with `"\n"`, `"\r\n"` or a lone `"\r"`; one leading BOM is ignored;
//! lines starting with `:` are comments; one space after a field's colon is stripped; several
//! `data:` lines join with `"\n"`; an event with no `data:` line is not dispatched; `id:`,
//! `retry:` and unknown fields are ignored (the gateway does not reconnect upstream streams).

use memchr::{memchr, memchr2};

const BOM: &[u8] = "\u{feff}".as_bytes();

/// One dispatched event, borrowed from the scanner until the callback returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The value of the event's last `event:` line, if it had one (invalid UTF-8 replaced).
    pub event: Option<&'a str>,
    /// The event's `data:` lines joined with `'\n'`, as raw bytes.
    pub data: &'a [u8],
}

/// What [`SseScanner::feed_items`] reports, in stream order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseItem<'a> {
    /// A complete event.
    Event(SseEvent<'a>),
    /// The event being read passed `max_event_bytes`: it is dropped (never dispatched) and the
    /// scanner skips to the next blank line. Reported once per dropped event, at the point the
    /// limit was passed, so after every event before it and before every event after it,
    /// whatever the reads.
    Overflow,
}

/// Incremental SSE parser; one per upstream stream (or reused via [`SseScanner::finish`]).
pub struct SseScanner {
    max_event_bytes: usize,
    /// The unfinished line carried over from the previous `feed`, if any.
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    event: String,
    has_event: bool,
    /// The previous `feed` ended on `'\r'`: a `'\n'` starting the next one belongs to it.
    pending_cr: bool,
    /// The next line is the stream's first (where a BOM may sit).
    first_line: bool,
    /// Dropping an oversized event until the next blank line.
    skipping: bool,
    /// While skipping: the current line has bytes, so its end is not a blank line.
    skipped_line_has_bytes: bool,
    overflowed: bool,
}

impl SseScanner {
    /// A scanner that drops events whose buffered bytes exceed `max_event_bytes`.
    #[must_use]
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            max_event_bytes,
            line: Vec::new(),
            data: Vec::new(),
            has_data: false,
            event: String::new(),
            has_event: false,
            pending_cr: false,
            first_line: true,
            skipping: false,
            skipped_line_has_bytes: false,
            overflowed: false,
        }
    }

    /// Feed the next bytes of an event stream (arbitrary boundaries: a split may fall inside a line,
    /// inside "\r\n", anywhere). Calls `on_event` once per complete event with the event's data
    /// (multiple `data:` lines joined with '\n', one optional space after the colon stripped per
    /// the SSE spec) and the event name if an `event:` line was present.
    ///
    /// An event over the limit is dropped silently here (see [`SseScanner::overflowed`]); use
    /// [`SseScanner::feed_items`] to learn where it was.
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(SseEvent<'_>)) {
        self.feed_items(bytes, |item| {
            if let SseItem::Event(ev) = item {
                on_event(ev);
            }
        });
    }

    /// [`SseScanner::feed`], reporting dropped events too: `on_item` sees every complete event
    /// and, in its place in the stream, an [`SseItem::Overflow`] for every event over the limit.
    pub fn feed_items(&mut self, mut bytes: &[u8], mut on_item: impl FnMut(SseItem<'_>)) {
        if self.pending_cr && !bytes.is_empty() {
            self.pending_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while let Some(end) = memchr2(b'\n', b'\r', bytes) {
            let (content, terminator) = bytes.split_at(end);
            let mut consumed = 1;
            if terminator.first() == Some(&b'\r') {
                match terminator.get(1) {
                    Some(b'\n') => consumed = 2,
                    Some(_) => {}
                    None => self.pending_cr = true,
                }
            }
            self.complete_line(content, &mut on_item);
            bytes = terminator.get(consumed..).unwrap_or_default();
        }
        self.partial_line(bytes, &mut on_item);
    }

    /// An event grew past `max_event_bytes` at some point in this scanner's life; it was
    /// skipped and the scanner resynchronised at the next blank line. Sticky: stays true.
    #[must_use]
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// The stream ended: dispatch an event left without its closing blank line, then forget
    /// all per-stream state (buffers keep their capacity) so the scanner can read a new stream.
    ///
    /// Lenient on purpose: the spec discards such an event, but upstreams that close right after
    /// their last `data:` line exist, and that last event is usually the one carrying usage.
    ///
    /// Never overflows: the unfinished line it completes was already counted against the limit
    /// when its bytes arrived, so every overflow was reported by the `feed` that read it.
    pub fn finish(&mut self, mut on_event: impl FnMut(SseEvent<'_>)) {
        let mut on_item = |item: SseItem<'_>| {
            if let SseItem::Event(ev) = item {
                on_event(ev);
            }
        };
        if !self.skipping && !self.line.is_empty() {
            self.complete_line(&[], &mut on_item);
        }
        if !self.skipping {
            self.dispatch(&mut on_item);
        }
        self.line.clear();
        self.reset_event();
        self.pending_cr = false;
        self.first_line = true;
        self.skipping = false;
        self.skipped_line_has_bytes = false;
    }

    /// Bytes of a line whose end has not arrived yet.
    fn partial_line(&mut self, bytes: &[u8], on_item: &mut impl FnMut(SseItem<'_>)) {
        if bytes.is_empty() {
            return;
        }
        if self.skipping {
            self.skipped_line_has_bytes = true;
        } else if self.line.len() + bytes.len() + self.data.len() > self.max_event_bytes {
            self.start_skipping(true, on_item);
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    /// The end of a line arrived; `tail` is its part in the current `feed`.
    fn complete_line(&mut self, tail: &[u8], on_item: &mut impl FnMut(SseItem<'_>)) {
        if self.skipping {
            let blank = !self.skipped_line_has_bytes && tail.is_empty();
            self.skipped_line_has_bytes = false;
            self.first_line = false;
            if blank {
                self.skipping = false;
                self.reset_event();
            }
        } else if self.line.is_empty() {
            self.process_line(tail, on_item);
        } else {
            let mut line = std::mem::take(&mut self.line);
            line.extend_from_slice(tail);
            self.process_line(&line, on_item);
            line.clear();
            self.line = line;
        }
    }

    fn process_line(&mut self, line: &[u8], on_item: &mut impl FnMut(SseItem<'_>)) {
        if line.len() + self.data.len() > self.max_event_bytes {
            self.first_line = false;
            self.start_skipping(false, on_item);
            return;
        }
        let mut line = line;
        if self.first_line {
            self.first_line = false;
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch(on_item);
            return;
        }
        if line.first() == Some(&b':') {
            return;
        }
        let (field, value) = match memchr(b':', line) {
            Some(colon) => {
                let (field, rest) = line.split_at(colon);
                let value = rest.get(1..).unwrap_or_default();
                (field, value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.push_str(&String::from_utf8_lossy(value));
                self.has_event = true;
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, on_item: &mut impl FnMut(SseItem<'_>)) {
        if self.has_data {
            on_item(SseItem::Event(SseEvent {
                event: self.has_event.then_some(self.event.as_str()),
                data: &self.data,
            }));
        }
        self.reset_event();
    }

    fn start_skipping(&mut self, mid_line: bool, on_item: &mut impl FnMut(SseItem<'_>)) {
        self.overflowed = true;
        self.skipping = true;
        self.skipped_line_has_bytes = mid_line;
        self.line.clear();
        self.reset_event();
        on_item(SseItem::Overflow);
    }

    fn reset_event(&mut self) {
        self.data.clear();
        self.has_data = false;
        self.event.clear();
        self.has_event = false;
    }
}

#[cfg(test)]
mod tests;
