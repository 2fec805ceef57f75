//! Glob patterns for model and subject names: `*` matches any run of characters, `?` one
//! character, everything else itself. Compiled once at config load; matching does not allocate.

/// A compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Box<str>,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// No wildcard: plain equality.
    Exact,
    /// `*` alone.
    Any,
    /// `prefix*` (the common case for model families).
    Prefix(Box<str>),
    /// Anything else: backtracking matcher.
    General,
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        let kind = if pattern == "*" {
            Kind::Any
        } else if !pattern.contains(['*', '?']) {
            Kind::Exact
        } else if let Some(prefix) = pattern.strip_suffix('*')
            && !prefix.contains(['*', '?'])
        {
            Kind::Prefix(prefix.into())
        } else {
            Kind::General
        };
        Glob { pattern: pattern.into(), kind }
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    pub fn matches(&self, s: &str) -> bool {
        match &self.kind {
            Kind::Exact => &*self.pattern == s,
            Kind::Any => true,
            Kind::Prefix(p) => s.starts_with(&**p),
            Kind::General => wildcard_match(self.pattern.as_bytes(), s.as_bytes()),
        }
    }
}

/// Iterative glob match with single backtrack point (linear in practice, no recursion).
fn wildcard_match(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A list of globs: matches when any matches. An empty list matches nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlobSet(Vec<Glob>);

impl GlobSet {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> GlobSet {
        GlobSet(patterns.iter().map(|p| Glob::new(p.as_ref())).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first pattern that matches, if any (to name it in a refusal).
    pub fn first_match(&self, s: &str) -> Option<&Glob> {
        self.0.iter().find(|g| g.matches(s))
    }

    pub fn matches(&self, s: &str) -> bool {
        self.first_match(s).is_some()
    }

    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(Glob::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_matches() {
        assert!(Glob::new("gpt-4o").matches("gpt-4o"));
        assert!(!Glob::new("gpt-4o").matches("gpt-4o-mini"));
        assert!(Glob::new("gpt-4o*").matches("gpt-4o-mini"));
        assert!(Glob::new("*").matches(""));
        assert!(Glob::new("claude-*-sonnet*").matches("claude-3-5-sonnet-20241022"));
        assert!(!Glob::new("claude-*-sonnet").matches("claude-3-5-haiku"));
        assert!(Glob::new("o?-mini").matches("o3-mini"));
        assert!(Glob::new("*mini").matches("gpt-4o-mini"));
        assert!(Glob::new("a*b*c").matches("aXXbYYc"));
        assert!(!Glob::new("a*b*c").matches("aXXbYY"));
    }

    #[test]
    fn sets() {
        let s = GlobSet::new(&["gpt-4o*", "claude-*"]);
        assert_eq!(s.first_match("claude-3").map(Glob::as_str), Some("claude-*"));
        assert!(!s.matches("gemini"));
        assert!(!GlobSet::default().matches("x"));
    }

    proptest::proptest! {
        /// A pattern without wildcards only matches itself; `*` + s + `*` matches anything containing s.
        #[test]
        fn literal_and_contains(s in "[a-z0-9-]{0,12}", hay in "[a-z0-9-]{0,20}") {
            proptest::prop_assert_eq!(Glob::new(&s).matches(&hay), s == hay);
            proptest::prop_assert_eq!(Glob::new(&format!("*{s}*")).matches(&hay), hay.contains(&s));
        }
    }
}
