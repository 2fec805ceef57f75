//! Small byte-level helpers shared by the detectors. Everything works on `&[u8]` with
//! bounds-checked access so that no input can make a detector panic.

// Work counter for the linearity tests: counts bytes examined by the non-SIMD parts of the
// detectors (verifiers, windows, look-backs). Compiled out of non-test builds.
#[cfg(test)]
thread_local! {
    pub(crate) static WORK: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Adds `n` to the test-only work counter (no-op outside tests).
#[inline(always)]
pub(crate) fn work(n: usize) {
    #[cfg(test)]
    WORK.with(|w| w.set(w.get() + n as u64));
    #[cfg(not(test))]
    let _ = n;
}

/// The byte before `i`, if any.
#[inline]
pub(crate) fn before(bytes: &[u8], i: usize) -> Option<u8> {
    i.checked_sub(1).and_then(|j| bytes.get(j)).copied()
}

/// Length of the run starting at `from` whose bytes satisfy `pred`, capped at `max`.
#[inline]
pub(crate) fn run_len(bytes: &[u8], from: usize, max: usize, pred: impl Fn(u8) -> bool) -> usize {
    let n = bytes.get(from..).map_or(0, |rest| rest.iter().take(max).take_while(|&&b| pred(b)).count());
    work(n + 1);
    n
}

/// Entries of [`C_LOG2_C_STEP`]: counts up to this use the table, larger ones call `log2`.
const STEPS: usize = 1024;

/// `f(c + 1) − f(c)` with `f(c) = c · log2(c)`: what one more occurrence of a byte seen `c`
/// times adds to `Σ c·log2(c)`, so entropy is one pass over the value with no per-distinct-byte
/// `log2` call and no pass over all 256 counts.
static C_LOG2_C_STEP: std::sync::LazyLock<[f32; STEPS]> = std::sync::LazyLock::new(|| {
    let f = |c: usize| if c == 0 { 0.0 } else { c as f64 * (c as f64).log2() };
    let mut t = [0f32; STEPS];
    for (c, v) in t.iter_mut().enumerate() {
        *v = (f(c + 1) - f(c)) as f32;
    }
    t
});

/// Shannon entropy of `s` in bits per byte: `log2(n) − Σ c·log2(c) / n` over the byte counts.
pub(crate) fn shannon_entropy(s: &[u8]) -> f32 {
    if s.is_empty() {
        return 0.0;
    }
    work(s.len());
    let steps = &*C_LOG2_C_STEP;
    let mut counts = [0u32; 256];
    let mut sum = 0f32;
    for &b in s {
        let c = &mut counts[usize::from(b)];
        sum += steps.get(*c as usize).copied().unwrap_or_else(|| {
            let (a, b) = (f64::from(*c), f64::from(*c + 1));
            (b * b.log2() - a * a.log2()) as f32
        });
        *c += 1;
    }
    let n = s.len() as f32;
    (n.log2() - sum / n).max(0.0)
}

/// Moves `i` down to the nearest char boundary of `s` (so a window never cuts a char).
pub(crate) fn floor_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Moves `i` up to the nearest char boundary of `s`.
pub(crate) fn ceil_boundary(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i.min(s.len())
}

/// Keeps the findings of `lower` that overlap none of `kept`, then merges both (each sorted by
/// start and non-overlapping) into one sorted, non-overlapping list. Linear in the total.
pub(crate) fn merge_without_overlap(
    kept: Vec<crate::guardrails::finding::Finding>,
    lower: &[crate::guardrails::finding::Finding],
) -> Vec<crate::guardrails::finding::Finding> {
    let mut out = Vec::with_capacity(kept.len() + lower.len());
    let mut k = kept.into_iter().peekable();
    for f in lower {
        // Kept findings that end before `f` starts come first, in order.
        while let Some(a) = k.next_if(|a| a.end <= f.start) {
            out.push(a);
        }
        // The next kept finding ends after `f.start`: it overlaps `f` iff it starts before `f.end`.
        if k.peek().is_none_or(|a| a.start >= f.end) {
            out.push(*f);
        }
    }
    out.extend(k);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]
    use super::*;
    use crate::guardrails::finding::{Category, Finding, InjectionSignal};

    fn f(start: usize, end: usize) -> Finding {
        Finding { start, end, category: Category::Injection(InjectionSignal::RoleSpoof), score: 1.0 }
    }

    #[test]
    fn entropy_bounds() {
        assert_eq!(shannon_entropy(b"aaaa"), 0.0);
        assert!((shannon_entropy(b"abcd") - 2.0).abs() < 1e-6);
    }

    #[test]
    fn merge_drops_overlaps_of_lower() {
        let kept = vec![f(5, 10), f(20, 25)];
        let lower = [f(0, 3), f(4, 6), f(12, 15), f(24, 30), f(30, 31)];
        let got: Vec<_> = merge_without_overlap(kept, &lower).iter().map(|x| (x.start, x.end)).collect();
        assert_eq!(got, vec![(0, 3), (5, 10), (12, 15), (20, 25), (30, 31)]);
    }
}
