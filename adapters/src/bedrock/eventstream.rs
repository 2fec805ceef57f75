//! An incremental decoder for `application/vnd.amazon.eventstream`.
//!
//! Each message (AWS docs, "Event stream encoding"):
//!
//! ```text
//! total length  u32 BE   the whole message, these 4 bytes and the trailing CRC included
//! headers len   u32 BE   bytes of the headers section
//! prelude CRC   u32 BE   CRC-32 (IEEE, as gzip) of the 8 bytes above
//! headers       name len u8, name (UTF-8), value type u8, value
//! payload       total - headers - 16 bytes
//! message CRC   u32 BE   CRC-32 of everything before it
//! ```
//!
//! Header value types: 0 bool true, 1 bool false (no value bytes), 2 byte, 3 short (i16),
//! 4 int (i32), 5 long (i64), 6 byte array (u16 BE length), 7 string (u16 BE length, UTF-8),
//! 8 timestamp (i64 milliseconds since the epoch), 9 UUID (16 bytes).
//!
//! The decoder takes bytes as they are read, in any split, and yields whole messages. The
//! prelude CRC is checked as soon as 12 bytes are in, before the length is trusted; a bad CRC,
//! a malformed header or a message over the size limit is a [`DecodeError`] after which the
//! stream is dead (every later `feed` returns the same error).

use std::fmt;

/// The fixed bytes of a message: prelude (8), prelude CRC (4) and message CRC (4).
const OVERHEAD: usize = 16;
const PRELUDE: usize = 12;

/// A header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    Bool(bool),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Bytes(Vec<u8>),
    String(String),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
    Uuid([u8; 16]),
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub headers: Vec<(String, HeaderValue)>,
    pub payload: Vec<u8>,
}

impl Message {
    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The value of header `name` when it is a string.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        match self.header(name) {
            Some(HeaderValue::String(s)) => Some(s),
            _ => None,
        }
    }

    /// `:message-type`: `event`, `exception` or `error`.
    pub fn message_type(&self) -> Option<&str> {
        self.header_str(":message-type")
    }

    /// `:event-type` (on events): `messageStart`, `contentBlockDelta`, ...
    pub fn event_type(&self) -> Option<&str> {
        self.header_str(":event-type")
    }

    /// `:exception-type` (on exceptions): `throttlingException`, ...
    pub fn exception_type(&self) -> Option<&str> {
        self.header_str(":exception-type")
    }
}

/// Why a stream could not be decoded. Every one is fatal to the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The prelude's CRC does not match: the lengths cannot be trusted.
    PreludeCrc { expected: u32, actual: u32 },
    /// The message CRC does not match.
    MessageCrc { expected: u32, actual: u32 },
    /// A total length larger than the limit the decoder was made with.
    TooLarge { length: usize, max: usize },
    /// Lengths that cannot describe a message (total under 16, headers past the end).
    BadLength { total: usize, headers: usize },
    /// A header that does not parse.
    BadHeader(&'static str),
    /// Bytes left over when the stream ended.
    Truncated { buffered: usize },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::PreludeCrc { expected, actual } => {
                write!(f, "eventstream prelude CRC mismatch (expected {expected:#010x}, computed {actual:#010x})")
            }
            DecodeError::MessageCrc { expected, actual } => {
                write!(f, "eventstream message CRC mismatch (expected {expected:#010x}, computed {actual:#010x})")
            }
            DecodeError::TooLarge { length, max } => {
                write!(f, "eventstream message of {length} bytes exceeds the {max}-byte limit")
            }
            DecodeError::BadLength { total, headers } => {
                write!(f, "eventstream lengths are inconsistent (total {total}, headers {headers})")
            }
            DecodeError::BadHeader(why) => write!(f, "eventstream header malformed: {why}"),
            DecodeError::Truncated { buffered } => {
                write!(f, "eventstream ended inside a message ({buffered} bytes buffered)")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// The incremental decoder.
#[derive(Debug)]
pub struct EventStreamDecoder {
    buf: Vec<u8>,
    /// Start of the undecoded bytes in `buf`.
    pos: usize,
    max_message_bytes: usize,
    failed: Option<DecodeError>,
}

impl EventStreamDecoder {
    /// A decoder that refuses any message whose total length exceeds `max_message_bytes`
    /// (never less than the 16-byte minimum).
    pub fn new(max_message_bytes: usize) -> EventStreamDecoder {
        EventStreamDecoder { buf: Vec::new(), pos: 0, max_message_bytes: max_message_bytes.max(OVERHEAD), failed: None }
    }

    /// Takes the next bytes read and pushes every message they complete to `out`. Messages
    /// completed before an error are still pushed.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Message>) -> Result<(), DecodeError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        self.buf.extend_from_slice(bytes);
        let result = self.drain(out);
        // Compact: drop what has been decoded.
        if self.pos > 0 {
            self.buf.drain(..self.pos.min(self.buf.len()));
            self.pos = 0;
        }
        if let Err(err) = &result {
            self.failed = Some(err.clone());
            self.buf = Vec::new();
        }
        result
    }

    /// Call when the transport ends: an error when the stream stopped inside a message.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let buffered = self.buf.len().saturating_sub(self.pos);
        if buffered == 0 { Ok(()) } else { Err(DecodeError::Truncated { buffered }) }
    }

    /// Bytes held that do not yet make a whole message.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn drain(&mut self, out: &mut Vec<Message>) -> Result<(), DecodeError> {
        loop {
            let rest = self.buf.get(self.pos..).unwrap_or_default();
            let Some(prelude) = rest.get(..PRELUDE) else {
                return Ok(());
            };
            let total = be_u32(prelude, 0) as usize;
            let headers_len = be_u32(prelude, 4) as usize;
            let expected = be_u32(prelude, 8);
            let actual = crc32(prelude.get(..8).unwrap_or_default());
            if expected != actual {
                return Err(DecodeError::PreludeCrc { expected, actual });
            }
            if total > self.max_message_bytes {
                return Err(DecodeError::TooLarge { length: total, max: self.max_message_bytes });
            }
            if total < OVERHEAD || headers_len > total - OVERHEAD {
                return Err(DecodeError::BadLength { total, headers: headers_len });
            }
            let Some(frame) = rest.get(..total) else {
                return Ok(());
            };
            let (body, crc) = frame.split_at(total - 4);
            let expected = be_u32(crc, 0);
            let actual = crc32(body);
            if expected != actual {
                return Err(DecodeError::MessageCrc { expected, actual });
            }
            let headers_bytes = body.get(PRELUDE..PRELUDE + headers_len).unwrap_or_default();
            let payload = body.get(PRELUDE + headers_len..).unwrap_or_default();
            let headers = parse_headers(headers_bytes)?;
            out.push(Message { headers, payload: payload.to_vec() });
            self.pos += total;
        }
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// A big-endian u32 at `at` (0 when out of range: callers check lengths first).
fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = bytes.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_be_bytes(b)
}

/// Reads headers from a byte cursor.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, why: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.bytes.len() {
            return Err(DecodeError::BadHeader(why));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, why: &'static str) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, why)?);
        Ok(a)
    }
}

fn parse_headers(bytes: &[u8]) -> Result<Vec<(String, HeaderValue)>, DecodeError> {
    let mut c = Cursor { bytes };
    let mut headers = Vec::new();
    while !c.bytes.is_empty() {
        let [name_len] = c.array::<1>("truncated name length")?;
        if name_len == 0 {
            return Err(DecodeError::BadHeader("empty header name"));
        }
        let name = c.take(usize::from(name_len), "truncated name")?;
        let name = std::str::from_utf8(name).map_err(|_| DecodeError::BadHeader("name is not UTF-8"))?.to_string();
        let [kind] = c.array::<1>("truncated value type")?;
        let value = match kind {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(i8::from_be_bytes(c.array("truncated byte")?)),
            3 => HeaderValue::Short(i16::from_be_bytes(c.array("truncated short")?)),
            4 => HeaderValue::Int(i32::from_be_bytes(c.array("truncated int")?)),
            5 => HeaderValue::Long(i64::from_be_bytes(c.array("truncated long")?)),
            6 => {
                let len = u16::from_be_bytes(c.array("truncated byte array length")?);
                HeaderValue::Bytes(c.take(usize::from(len), "truncated byte array")?.to_vec())
            }
            7 => {
                let len = u16::from_be_bytes(c.array("truncated string length")?);
                let s = c.take(usize::from(len), "truncated string")?;
                HeaderValue::String(
                    std::str::from_utf8(s)
                        .map_err(|_| DecodeError::BadHeader("string value is not UTF-8"))?
                        .to_string(),
                )
            }
            8 => HeaderValue::Timestamp(i64::from_be_bytes(c.array("truncated timestamp")?)),
            9 => HeaderValue::Uuid(c.array("truncated uuid")?),
            _ => return Err(DecodeError::BadHeader("unknown value type")),
        };
        headers.push((name, value));
    }
    Ok(headers)
}

/// Test-only encoder (see [`try_encode`]).
#[cfg(test)]
pub(crate) fn encode(message: &Message) -> Vec<u8> {
    try_encode(message).unwrap_or_default()
}

/// Encodes a message: the inverse of the decoder (mock providers and tests build frames with
/// it). `None` when a header name passes 255 bytes, a value 65,535, or the frame 4 GiB.
pub fn try_encode(message: &Message) -> Option<Vec<u8>> {
    let mut headers = Vec::new();
    for (name, value) in &message.headers {
        headers.push(u8::try_from(name.len()).ok()?);
        headers.extend_from_slice(name.as_bytes());
        match value {
            HeaderValue::Bool(true) => headers.push(0),
            HeaderValue::Bool(false) => headers.push(1),
            HeaderValue::Byte(b) => {
                headers.push(2);
                headers.extend_from_slice(&b.to_be_bytes());
            }
            HeaderValue::Short(v) => {
                headers.push(3);
                headers.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Int(v) => {
                headers.push(4);
                headers.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Long(v) => {
                headers.push(5);
                headers.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Bytes(v) => {
                headers.push(6);
                headers.extend_from_slice(&u16::try_from(v.len()).ok()?.to_be_bytes());
                headers.extend_from_slice(v);
            }
            HeaderValue::String(v) => {
                headers.push(7);
                headers.extend_from_slice(&u16::try_from(v.len()).ok()?.to_be_bytes());
                headers.extend_from_slice(v.as_bytes());
            }
            HeaderValue::Timestamp(v) => {
                headers.push(8);
                headers.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Uuid(v) => {
                headers.push(9);
                headers.extend_from_slice(v);
            }
        }
    }
    let total = OVERHEAD + headers.len() + message.payload.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&u32::try_from(total).ok()?.to_be_bytes());
    out.extend_from_slice(&u32::try_from(headers.len()).ok()?.to_be_bytes());
    let prelude_crc = crc32(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&headers);
    out.extend_from_slice(&message.payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    Some(out)
}

/// Test-only: an event message as Bedrock sends one.
#[cfg(test)]
pub(crate) fn event(event_type: &str, payload: &str) -> Vec<u8> {
    encode(&Message {
        headers: vec![
            (":event-type".into(), HeaderValue::String(event_type.into())),
            (":content-type".into(), HeaderValue::String("application/json".into())),
            (":message-type".into(), HeaderValue::String("event".into())),
        ],
        payload: payload.as_bytes().to_vec(),
    })
}

/// Test-only: an exception message as Bedrock sends one.
#[cfg(test)]
pub(crate) fn exception(exception_type: &str, payload: &str) -> Vec<u8> {
    encode(&Message {
        headers: vec![
            (":exception-type".into(), HeaderValue::String(exception_type.into())),
            (":content-type".into(), HeaderValue::String("application/json".into())),
            (":message-type".into(), HeaderValue::String("exception".into())),
        ],
        payload: payload.as_bytes().to_vec(),
    })
}
