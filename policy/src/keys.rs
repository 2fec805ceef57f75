//! Virtual keys: generated with the system's CSPRNG, shown once, stored only as an HMAC-SHA256
//! digest under a server-side pepper (so a leaked table is useless without the pepper), found by
//! that digest, and compared in constant time.

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Length of a key's secret part in bytes (256 bits).
const SECRET_BYTES: usize = 32;
/// Every shardgate key starts with this (so secret scanners can recognise a leaked one).
pub const KEY_PREFIX: &str = "sk-sg-";
/// How much of a key is kept for display (`sk-sg-Ab3x…`).
pub const DISPLAY_CHARS: usize = 10;

/// A key digest: what is stored and looked up. Equality is constant-time (so that the hash map a
/// lookup goes through never compares digests byte by byte with an early exit).
#[derive(Debug, Clone, Copy)]
pub struct KeyDigest(pub [u8; 32]);

impl PartialEq for KeyDigest {
    fn eq(&self, other: &KeyDigest) -> bool {
        self.ct_eq(other)
    }
}

impl Eq for KeyDigest {}

// Consistent with `eq`: equal digests have equal bytes.
impl std::hash::Hash for KeyDigest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl KeyDigest {
    /// `hmac-sha256:` followed by 64 hex digits: the form config files and the store use.
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(12 + 64);
        s.push_str("hmac-sha256:");
        for b in self.0 {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        s
    }

    pub fn parse(text: &str) -> Result<KeyDigest, String> {
        let hex = text
            .strip_prefix("hmac-sha256:")
            .ok_or_else(|| format!("a key hash must start with `hmac-sha256:` ({text:.20}…)"))?;
        if hex.len() != 64 {
            return Err("a key hash has 64 hex digits after `hmac-sha256:`".into());
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let digit = |c: u8| {
                (c as char).to_digit(16).ok_or_else(|| format!("invalid hex digit {:?} in a key hash", c as char))
            };
            out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).map_err(|e| e.to_string())?;
        }
        Ok(KeyDigest(out))
    }

    /// Constant-time equality (what lookups confirm with).
    pub fn ct_eq(&self, other: &KeyDigest) -> bool {
        // `black_box` keeps the optimiser from turning the fold into an early-exit comparison.
        std::hint::black_box(self.0.iter().zip(other.0.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b))) == 0
    }
}

/// Hashes presented keys under the server's pepper.
#[derive(Clone)]
pub struct KeyHasher {
    key: hmac::Key,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(<pepper>)")
    }
}

impl KeyHasher {
    pub fn new(pepper: &[u8]) -> KeyHasher {
        KeyHasher { key: hmac::Key::new(hmac::HMAC_SHA256, pepper) }
    }

    pub fn digest(&self, key: &str) -> KeyDigest {
        let tag = hmac::sign(&self.key, key.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        KeyDigest(out)
    }
}

/// A freshly generated key: the secret (shown once) and what is kept.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub secret: String,
    pub digest: KeyDigest,
    pub display: String,
}

/// Generates a key: `sk-sg-` + 43 base64url characters of CSPRNG output.
pub fn generate(hasher: &KeyHasher) -> Result<NewKey, String> {
    let mut raw = [0u8; SECRET_BYTES];
    SystemRandom::new().fill(&mut raw).map_err(|_| "the system random number generator failed".to_string())?;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut secret = String::with_capacity(KEY_PREFIX.len() + 43);
    secret.push_str(KEY_PREFIX);
    // 256 bits as 43 base64url characters (6 bits each; the last one carries 4).
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in raw {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            secret.push(char::from(ALPHABET[((acc >> bits) & 63) as usize]));
        }
    }
    if bits > 0 {
        secret.push(char::from(ALPHABET[((acc << (6 - bits)) & 63) as usize]));
    }
    Ok(NewKey { digest: hasher.digest(&secret), display: display(&secret), secret })
}

/// 32 random bytes from the system's CSPRNG (a pepper for a process that configures none).
pub fn random_pepper() -> Result<[u8; 32], String> {
    let mut p = [0u8; 32];
    SystemRandom::new().fill(&mut p).map_err(|_| "the system random number generator failed".to_string())?;
    Ok(p)
}

/// The part of a key safe to show: its first characters and an ellipsis.
pub fn display(secret: &str) -> String {
    let head: String = secret.chars().take(DISPLAY_CHARS).collect();
    format!("{head}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trips_as_text() {
        let h = KeyHasher::new(b"pepper");
        let d = h.digest("sk-sg-abc");
        assert_eq!(KeyDigest::parse(&d.to_text()).unwrap(), d);
        assert!(KeyDigest::parse("sha256:00").is_err());
        assert!(KeyDigest::parse(&format!("hmac-sha256:{}", "zz".repeat(32))).is_err());
    }

    #[test]
    fn pepper_matters() {
        assert_ne!(KeyHasher::new(b"a").digest("k"), KeyHasher::new(b"b").digest("k"));
        // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
        let d = KeyHasher::new(b"Jefe").digest("what do ya want for nothing?");
        assert!(d.to_text().ends_with("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"));
    }

    #[test]
    fn generated_keys_are_unique_and_verifiable() {
        let h = KeyHasher::new(b"p");
        let a = generate(&h).unwrap();
        let b = generate(&h).unwrap();
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.secret.len(), KEY_PREFIX.len() + 43);
        assert!(h.digest(&a.secret).ct_eq(&a.digest));
        assert!(!h.digest(&b.secret).ct_eq(&a.digest));
        assert!(a.display.starts_with("sk-sg-") && a.display.ends_with('…'));
    }
}
