//! Value types of the config file: durations (`250ms`, `10s`), byte sizes (`64KiB`, `10MiB`) and
//! strings with `${ENV}` interpolation for secrets.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

/// A duration written the human way: `250ms`, `10s`, `2m`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim())
            .map(Dur)
            .map_err(|e| de::Error::custom(format!("invalid duration {s:?} ({e}); write e.g. 500ms, 10s, 2m")))
    }
}

/// A size in bytes: a plain integer, or a number with a unit (`B`, `KB`, `KiB`, `MB`, `MiB`, `GB`, `GiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}; write e.g. 65536, 64KiB, 10MiB"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1000,
            "KiB" => 1024,
            "MB" => 1000 * 1000,
            "MiB" => 1024 * 1024,
            "GB" => 1000 * 1000 * 1000,
            "GiB" => 1024 * 1024 * 1024,
            other => return Err(format!("unknown size unit {other:?} in {s:?}; use B, KB, KiB, MB, MiB, GB or GiB")),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(|| format!("size {s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 65536, 64KiB or 10MiB")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A string in which `${NAME}` is replaced by the environment variable `NAME` when the config is
/// loaded (`${NAME:-fallback}` gives a fallback, `$$` is a literal `$`). An unset variable without
/// a fallback is an error naming it. The expanded value is a secret: `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvString(pub String);

impl fmt::Debug for EnvString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnvString(<redacted>)")
    }
}

impl EnvString {
    pub fn expand(raw: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(stripped) = after.strip_prefix('$') {
                out.push('$');
                rest = stripped;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    return Err(format!("unterminated ${{...}} in {raw:?}"));
                };
                let expr = &body[..end];
                let (name, fallback) = match expr.split_once(":-") {
                    Some((n, f)) => (n, Some(f)),
                    None => (expr, None),
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("invalid environment variable name {name:?}"));
                }
                match (lookup(name), fallback) {
                    (Some(v), _) if !v.is_empty() || fallback.is_none() => out.push_str(&v),
                    (_, Some(f)) => out.push_str(f),
                    (None, None) => {
                        return Err(format!("environment variable {name} is not set (referenced as ${{{name}}})"));
                    }
                    (Some(v), None) => out.push_str(&v),
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}

impl<'de> Deserialize<'de> for EnvString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        EnvString::expand(&raw, |k| std::env::var(k).ok()).map(EnvString).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("10MiB").unwrap().0, 10 * 1024 * 1024);
        assert_eq!(ByteSize::parse("64 KiB").unwrap().0, 65536);
        assert_eq!(ByteSize::parse("123").unwrap().0, 123);
        assert!(ByteSize::parse("12XB").is_err());
        assert!(ByteSize::parse("-1").is_err());
        assert!(ByteSize::parse("99999999999999GiB").is_err());
    }

    #[test]
    fn env_expansion() {
        let env = |k: &str| match k {
            "KEY" => Some("sk-123".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(EnvString::expand("Bearer ${KEY}", env).unwrap(), "Bearer sk-123");
        assert_eq!(EnvString::expand("${NOPE:-dflt}", env).unwrap(), "dflt");
        assert_eq!(EnvString::expand("${EMPTY:-dflt}", env).unwrap(), "dflt");
        assert_eq!(EnvString::expand("$$5 and $x", env).unwrap(), "$5 and $x");
        assert!(EnvString::expand("${NOPE}", env).unwrap_err().contains("NOPE is not set"));
        assert!(EnvString::expand("${KEY", env).is_err());
        assert!(EnvString::expand("${BAD-NAME}", env).is_err());
    }
}
