//! A reusable simd-json tape over a padded copy of the input.
//!
//! simd-json validates the whole document (syntax and UTF-8) and unescapes strings in place, so
//! it needs a mutable, padded input. Copying the body into a buffer we keep, and keeping the
//! parser's `Buffers` and tape allocation across calls, makes a scan allocation-free once warm.
//! Because strings are unescaped in place at their original offset, a string's pointer tells us
//! where it sits in the caller's bytes ([`Origin::offset_of`]); that is what lets a rewrite
//! splice one value and leave every other byte untouched.

use simd_json::prelude::*;
use simd_json::tape::Value;
use simd_json::{Buffers, Tape};

/// Inputs larger than this do not keep their scratch allocations after the call: one 20 MiB
/// upload should not pin 20 MiB per shard forever.
const RETAIN_LIMIT: usize = 1 << 20;

/// Where the parsed copy lives, to map a borrowed `&str` back to an offset in the input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    base: usize,
    len: usize,
}

impl Origin {
    /// Offset of `s`'s first byte within the parsed input, if `s` points into it.
    pub(crate) fn offset_of(self, s: &str) -> Option<usize> {
        let offset = s.as_ptr().addr().checked_sub(self.base)?;
        (offset.checked_add(s.len())? <= self.len).then_some(offset)
    }
}

/// Scratch space for parsing one document at a time.
pub(crate) struct TapeScratch {
    input: Vec<u8>,
    buffers: Buffers,
    /// Empty between calls; `Tape::reset` re-lifetimes it to each call's input.
    tape: Option<Tape<'static>>,
}

impl TapeScratch {
    pub(crate) fn new() -> Self {
        Self { input: Vec::new(), buffers: Buffers::default(), tape: None }
    }

    /// Parses `json` and hands its root value to `read`.
    ///
    /// # Errors
    /// The simd-json error when `json` is not one valid JSON document.
    pub(crate) fn parse<R>(
        &mut self,
        json: &[u8],
        read: impl FnOnce(Value<'_, '_>, Origin) -> R,
    ) -> Result<R, simd_json::Error> {
        self.input.clear();
        self.input.extend_from_slice(json);
        self.input.resize(json.len() + simd_json::INPUT_PADDING, b' ');
        let origin = Origin { base: self.input.as_ptr().addr(), len: json.len() };
        let mut tape = self.tape.take().unwrap_or_else(Tape::null).reset();
        let outcome = simd_json::fill_tape_padded(&mut self.input, json.len(), &mut self.buffers, &mut tape)
            .map(|()| read(tape.as_value(), origin));
        if json.len() > RETAIN_LIMIT {
            *self = Self::new();
        } else {
            self.tape = Some(tape.reset());
        }
        outcome
    }
}

/// The value of the last occurrence of each wanted key, in the order of `keys`.
///
/// RFC 8259 leaves duplicate keys undefined; we take the last one, as most JSON parsers
/// (serde_json, Python's `json`, JavaScript's `JSON.parse`) do, so we see what the provider sees.
pub(crate) fn last_values<'t, 'i, const N: usize>(
    object: Value<'t, 'i>,
    keys: [&str; N],
) -> Option<[Option<Value<'t, 'i>>; N]> {
    let object = object.as_object()?;
    let mut found = [None; N];
    for (key, value) in &object {
        if let Some(slot) = keys.iter().position(|k| *k == key)
            && let Some(entry) = found.get_mut(slot)
        {
            *entry = Some(value);
        }
    }
    Some(found)
}

/// Absent and `null` are the same thing for every optional field we read.
pub(crate) fn present<'t, 'i>(value: Option<Value<'t, 'i>>) -> Option<Value<'t, 'i>> {
    value.filter(|v| !v.is_null())
}

/// A JSON number that is a non-negative integer representable as `u64`.
///
/// Integral floats (`100.0`, `1e3`) count: they denote integers, and clients written in
/// languages without an integer type send them.
pub(crate) fn non_negative_integer(value: Value<'_, '_>) -> Option<u64> {
    if let Some(n) = value.as_u64() {
        return Some(n);
    }
    let f = value.as_f64()?;
    // 2^64: the first float past u64::MAX.
    let in_range = (0.0..18_446_744_073_709_551_616.0).contains(&f);
    // The cast is exact: `f` is integral and in range.
    (in_range && f.fract() == 0.0).then_some(f as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_point_into_the_original_bytes() {
        let body = br#"{"a": "xyz", "b": "q\"r"}"#;
        let mut scratch = TapeScratch::new();
        let offsets = scratch
            .parse(body, |root, origin| {
                let [a, b] = last_values(root, ["a", "b"]).unwrap();
                let (a, b) = (a.unwrap(), b.unwrap());
                let (a, b) = (a.as_str().unwrap(), b.as_str().unwrap());
                (origin.offset_of(a), origin.offset_of(b), b.to_owned())
            })
            .unwrap();
        assert_eq!(offsets.0, Some(7));
        // Unescaped in place: starts where the raw string starts.
        assert_eq!(offsets.1, Some(19));
        assert_eq!(offsets.2, "q\"r");
    }

    #[test]
    fn scratch_is_reusable_across_documents() {
        let mut scratch = TapeScratch::new();
        for i in 0..5u64 {
            let body = format!(r#"{{"n": {i}, "pad": "{}"}}"#, "x".repeat(i as usize * 100));
            let n = scratch
                .parse(body.as_bytes(), |root, _| {
                    let [n] = last_values(root, ["n"]).unwrap();
                    n.and_then(non_negative_integer)
                })
                .unwrap();
            assert_eq!(n, Some(i));
        }
        assert!(scratch.parse(b"{", |_, _| ()).is_err());
        assert!(scratch.parse(b"[1]", |root, _| root.is_array()).unwrap());
    }

    #[test]
    fn integers_and_integral_floats() {
        let mut scratch = TapeScratch::new();
        let read = |scratch: &mut TapeScratch, text: &str| {
            scratch.parse(text.as_bytes(), |root, _| non_negative_integer(root)).unwrap()
        };
        assert_eq!(read(&mut scratch, "0"), Some(0));
        assert_eq!(read(&mut scratch, "18446744073709551615"), Some(u64::MAX));
        assert_eq!(read(&mut scratch, "100.0"), Some(100));
        assert_eq!(read(&mut scratch, "1e3"), Some(1000));
        assert_eq!(read(&mut scratch, "-1"), None);
        assert_eq!(read(&mut scratch, "1.5"), None);
        assert_eq!(read(&mut scratch, "1e30"), None);
        assert_eq!(read(&mut scratch, "\"1\""), None);
    }
}
