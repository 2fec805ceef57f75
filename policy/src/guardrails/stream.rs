//! Checking a completion while it streams: text is held back only as long as it could still
//! become (part of) a match, so a redaction is never split across chunks and the first token
//! is delayed by no more than the window.

use super::finding::Finding;

/// The text of one streamed choice not yet sent.
#[derive(Debug, Default)]
pub struct StreamWindow {
    pending: String,
}

/// How much a stream may hold back.
#[derive(Debug, Clone, Copy)]
pub struct Hold {
    /// The longest match expected of a bounded pattern (cards, phones, IBANs, placeholders):
    /// the last `window` bytes are always held.
    pub window: usize,
    /// A trailing run without whitespace (an e-mail or a key being streamed) is held whole, up to
    /// this many bytes; a longer one is let go.
    pub max_token: usize,
}

impl Default for Hold {
    fn default() -> Hold {
        Hold { window: 64, max_token: 512 }
    }
}

impl StreamWindow {
    pub fn push(&mut self, piece: &str) {
        self.pending.push_str(piece);
    }

    /// The text held: scan it, then [`StreamWindow::release`] what may go.
    pub fn pending(&self) -> &str {
        &self.pending
    }

    /// Where the held text can be cut, given the findings in it: before the last `window`
    /// bytes, before a trailing token still growing, and never inside a finding.
    pub fn cut(&self, findings: &[Finding], hold: Hold) -> usize {
        let text = self.pending.as_str();
        let mut cut = text.len().saturating_sub(hold.window);
        // A token that reaches the end may still be growing.
        let token_start = text.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        if token_start < cut && text.len() - token_start <= hold.max_token {
            cut = token_start;
        }
        // Never inside a finding: what it matched is rewritten whole.
        for f in findings {
            if f.start < cut && f.end > cut {
                cut = f.start;
            }
        }
        while cut > 0 && !text.is_char_boundary(cut) {
            cut -= 1;
        }
        cut
    }

    /// Takes the text before `cut` out of the window.
    pub fn release(&mut self, cut: usize) -> String {
        let cut = cut.min(self.pending.len());
        if !self.pending.is_char_boundary(cut) {
            return String::new();
        }
        let rest = self.pending.split_off(cut);
        std::mem::replace(&mut self.pending, rest)
    }

    /// Everything left (the stream ended).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn holds_the_window_and_a_growing_token() {
        use super::super::finding::Category;
        let hold = Hold { window: 8, max_token: 32 };
        let mut w = StreamWindow::default();
        w.push("hello there, write to bob@exa");
        // The last 8 bytes, then back to the start of the token that may still grow.
        let cut = w.cut(&[], hold);
        assert_eq!(w.release(cut), "hello there, write to");
        w.push("mple.com please");
        assert_eq!(w.pending(), " bob@example.com please");
        // The scan found the e-mail: the cut does not go inside it.
        let email = Finding { start: 1, end: 16, category: Category::Email, score: 1.0 };
        let cut = w.cut(&[email], hold);
        assert_eq!(w.release(cut), " ");
        // A token longer than `max_token` is let go rather than held forever.
        let mut w = StreamWindow::default();
        w.push(&"x".repeat(100));
        assert_eq!(w.cut(&[], hold), 92);
        assert_eq!(w.finish().len(), 100);
    }

    #[test]
    fn never_cuts_inside_a_finding_or_a_char() {
        let hold = Hold { window: 4, max_token: 4 };
        let mut w = StreamWindow::default();
        w.push("card 4242 4242 4242 4242 ok");
        let f = Finding { start: 5, end: 24, category: super::super::finding::Category::CreditCard, score: 1.0 };
        assert_eq!(w.cut(&[f], hold), 5);
        let mut w = StreamWindow::default();
        w.push("ééééé");
        let cut = w.cut(&[], Hold { window: 3, max_token: 0 });
        assert!(w.pending().is_char_boundary(cut));
    }
}
