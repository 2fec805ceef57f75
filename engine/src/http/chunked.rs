//! The chunked transfer coding (RFC 9112 §7.1), both directions.
//!
//! The decoder is incremental (bytes arrive at arbitrary boundaries) and strict: chunk sizes are
//! bare hex without overflow, every line ends in CRLF (a bare LF is refused: lenient line endings
//! are a classic smuggling vector), extensions and trailers are bounded and dropped.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size line")]
    BadSize,
    #[error("chunk size too large")]
    SizeOverflow,
    #[error("chunk data not followed by CRLF")]
    BadDataEnd,
    #[error("chunk extension or trailer section too long")]
    TooLong,
    #[error("invalid trailer section")]
    BadTrailer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size {
        digits: u8,
    },
    /// Inside a chunk extension, until CR.
    Ext,
    /// Saw CR after the size line; expecting LF.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field line, until CR.
    TrailerLine,
    /// Saw CR ending a trailer field line; expecting LF.
    TrailerLf,
    /// Saw CR of the final empty line; expecting LF.
    FinalLf,
    Done,
}

/// What one step of decoding produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A piece of body data (split off the input without copying).
    Data(Bytes),
    /// The input is used up; read more.
    NeedMore,
    /// The last chunk and trailers were consumed; the body is complete.
    Done,
}

/// Incremental decoder for one chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    /// Bytes of extensions and trailers seen, bounded by `max_meta`.
    meta: usize,
    max_meta: usize,
}

impl ChunkedDecoder {
    /// `max_meta` bounds the total bytes of chunk extensions and trailer fields.
    pub fn new(max_meta: usize) -> Self {
        ChunkedDecoder { state: State::Size { digits: 0 }, size: 0, meta: 0, max_meta }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn count_meta(&mut self) -> Result<(), ChunkError> {
        self.meta += 1;
        if self.meta > self.max_meta { Err(ChunkError::TooLong) } else { Ok(()) }
    }

    /// Consumes framing bytes from the front of `input` and returns the next piece of data, or
    /// says that more input is needed, or that the body is complete. Bytes after the end of the
    /// body are left in `input` (the next pipelined message).
    pub fn decode(&mut self, input: &mut BytesMut) -> Result<Decoded, ChunkError> {
        loop {
            if self.state == State::Done {
                return Ok(Decoded::Done);
            }
            if self.state == State::Data {
                if input.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = (input.len() as u64).min(self.size) as usize;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                return Ok(Decoded::Data(input.split_to(n).freeze()));
            }
            let Some(&b) = input.first() else {
                return Ok(Decoded::NeedMore);
            };
            input.advance(1);
            self.state = match (self.state, b) {
                (State::Size { digits }, b) if b.is_ascii_hexdigit() => {
                    if digits >= 16 {
                        return Err(ChunkError::SizeOverflow);
                    }
                    let d = (b as char).to_digit(16).unwrap_or(0);
                    self.size = (self.size << 4) | u64::from(d);
                    State::Size { digits: digits + 1 }
                }
                (State::Size { digits }, b';') if digits > 0 => State::Ext,
                (State::Size { digits }, b'\r') if digits > 0 => State::SizeLf,
                (State::Size { .. }, _) => return Err(ChunkError::BadSize),
                (State::Ext, b'\r') => State::SizeLf,
                (State::Ext, b'\n') => return Err(ChunkError::BadSize),
                (State::Ext, _) => {
                    self.count_meta()?;
                    State::Ext
                }
                (State::SizeLf, b'\n') => {
                    if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    }
                }
                (State::SizeLf, _) => return Err(ChunkError::BadSize),
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => State::Size { digits: 0 },
                (State::DataCr | State::DataLf, _) => return Err(ChunkError::BadDataEnd),
                (State::TrailerStart, b'\r') => State::FinalLf,
                (State::TrailerLine, b'\r') => State::TrailerLf,
                (State::TrailerStart | State::TrailerLine, b'\n') => return Err(ChunkError::BadTrailer),
                (State::TrailerStart | State::TrailerLine, _) => {
                    self.count_meta()?;
                    State::TrailerLine
                }
                (State::TrailerLf, b'\n') => State::TrailerStart,
                (State::TrailerLf, _) => return Err(ChunkError::BadTrailer),
                (State::FinalLf, b'\n') => State::Done,
                (State::FinalLf, _) => return Err(ChunkError::BadTrailer),
                (State::Data | State::Done, _) => self.state,
            };
        }
    }
}

/// Appends one chunk (size line, data, CRLF) to `out`. Empty data writes nothing: an empty
/// chunk would end the body.
pub fn encode_chunk(out: &mut BytesMut, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let mut hex = [0u8; 16];
    let mut n = data.len();
    let mut i = hex.len();
    while n > 0 {
        i -= 1;
        hex[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
    }
    out.reserve(data.len() + 20);
    out.put_slice(&hex[i..]);
    out.put_slice(b"\r\n");
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// The last chunk and the end of the (empty) trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], split: usize) -> Result<(Vec<u8>, Vec<u8>), ChunkError> {
        let mut dec = ChunkedDecoder::new(1024);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match dec.decode(&mut buf)? {
                Decoded::Data(d) => out.extend_from_slice(&d),
                Decoded::Done => return Ok((out, buf.to_vec())),
                Decoded::NeedMore => {
                    if fed >= input.len() {
                        return Err(ChunkError::BadSize);
                    }
                    let end = (fed + split.max(1)).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn decodes_with_extensions_and_trailers() {
        let body = b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for split in 1..body.len() {
            let (data, rest) = decode_all(body, split).unwrap();
            assert_eq!(data, b"hello world");
            assert!(b"NEXT".starts_with(&rest));
        }
    }

    #[test]
    fn refuses_ambiguities() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"\r\n",
            b"11111111111111111\r\n",
            b"0\r\n\n",
            b"0\r\nX: y\n\r\n",
        ] {
            assert!(decode_all(bad, 1).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn bounded_metadata() {
        let mut body = b"1;".to_vec();
        body.extend(std::iter::repeat_n(b'a', 2000));
        body.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(decode_all(&body, 7), Err(ChunkError::TooLong));
    }

    #[test]
    fn encoder_round_trips() {
        let mut out = BytesMut::new();
        encode_chunk(&mut out, b"hello");
        encode_chunk(&mut out, &[7u8; 300]);
        encode_chunk(&mut out, b"");
        out.extend_from_slice(LAST_CHUNK);
        assert!(out.starts_with(b"5\r\nhello\r\n12c\r\n"));
        let (data, rest) = decode_all(&out, 3).unwrap();
        assert_eq!(data.len(), 305);
        assert!(rest.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..256), split in 1usize..20) {
            let _ = decode_all(&data, split);
        }

        #[test]
        fn round_trip(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..100), 0..10), split in 1usize..50) {
            let mut out = BytesMut::new();
            let mut want = Vec::new();
            for c in &chunks { encode_chunk(&mut out, c); want.extend_from_slice(c); }
            out.extend_from_slice(LAST_CHUNK);
            let (got, rest) = decode_all(&out, split).unwrap();
            proptest::prop_assert_eq!(got, want);
            proptest::prop_assert!(rest.is_empty());
        }
    }
}
