//! JSON string escaping for the few places that write JSON by hand (splicing a rewritten model
//! name into an otherwise untouched body).
//!
//! Only what RFC 8259 requires is escaped: `"`, `\` and the C0 controls. Everything else, UTF-8
//! included, is copied as is, so the common case is a plain byte copy.

/// Appends the escaped contents of `s` (without surrounding quotes) to `out`.
pub(crate) fn escape_contents_into(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut copied = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[copied..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0x0f)]);
        } else {
            out.extend_from_slice(short);
        }
        copied = i + 1;
    }
    out.extend_from_slice(&bytes[copied..]);
}

/// Appends `s` as a complete JSON string literal, quotes included.
pub(crate) fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape_contents_into(out, s);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = Vec::new();
        write_string(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn plain_text_is_copied() {
        assert_eq!(escaped("gpt-4o-mini"), r#""gpt-4o-mini""#);
        assert_eq!(escaped("modèle/日本"), "\"modèle/日本\"");
        assert_eq!(escaped(""), r#""""#);
    }

    #[test]
    fn specials_are_escaped() {
        assert_eq!(escaped("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(escaped("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(escaped("\u{0}\u{1f}x"), r#""\u0000\u001fx""#);
    }

    #[test]
    fn escaped_output_round_trips_through_a_parser() {
        let original = "we\"ird\\name\u{1}\u{7f}é";
        let mut out = Vec::new();
        write_string(&mut out, original);
        let value = simd_json::to_owned_value(&mut out).unwrap();
        assert_eq!(value, simd_json::OwnedValue::from(original));
    }
}
