//! The spend ledger as shards feed it: each shard tallies what its requests cost per caller,
//! model, metadata and minute, and hands the tally to the store thread every
//! `store.flush_interval`. One row per (caller, model, metadata, minute, shard) keeps the ledger
//! small at any request rate, and rows never straddle a minute, so a day, week or month
//! boundary never splits one.

use std::collections::HashMap;
use std::rc::Rc;

use policy::pricing::Tokens;
use policy::{Identity, Metadata};

const MINUTE_MS: u64 = 60_000;

/// One ledger row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpendRow {
    /// Start of the minute the requests settled in (ms since the epoch, UTC).
    pub minute_ms: u64,
    pub caller: Caller,
    /// The model as the client named it.
    pub model: String,
    /// The request metadata, as a JSON object (`{}` when none).
    pub metadata: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cost_micros: u64,
}

/// Who spent: the names the ledger keeps (any may be absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub key: Option<String>,
    pub user: Option<String>,
    pub team: Option<String>,
    pub application: Option<String>,
    pub environment: Option<String>,
}

impl Caller {
    fn of(id: &Identity) -> Caller {
        let s = |v: &Option<std::sync::Arc<str>>| v.as_deref().map(str::to_owned);
        Caller {
            key: s(&id.key),
            user: s(&id.user),
            team: s(&id.team),
            application: s(&id.application),
            environment: s(&id.environment),
        }
    }

    fn is(&self, id: &Identity) -> bool {
        self.key.as_deref() == id.key.as_deref()
            && self.user.as_deref() == id.user.as_deref()
            && self.team.as_deref() == id.team.as_deref()
            && self.application.as_deref() == id.application.as_deref()
            && self.environment.as_deref() == id.environment.as_deref()
    }

    pub fn as_recorded(&self) -> policy::RecordedCaller<'_> {
        policy::RecordedCaller {
            key: self.key.as_deref(),
            user: self.user.as_deref(),
            team: self.team.as_deref(),
            application: self.application.as_deref(),
            environment: self.environment.as_deref(),
        }
    }
}

/// A caller as a tally knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallerId(u64);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TallyKey {
    caller: u64,
    minute_ms: u64,
    model: Box<str>,
    metadata: Metadata,
}

#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    requests: u64,
    input: u64,
    output: u64,
    cached: u64,
    cost_micros: u64,
}

/// One shard's spend since its last flush.
///
/// Callers are remembered by the address of their [`Identity`] (which lives as long as the
/// policy that holds it), checked against the names on every hit: an address reused by another
/// identity after a reload is noticed and gets a fresh entry.
#[derive(Debug, Default)]
pub struct SpendTally {
    callers: HashMap<usize, (u64, Rc<Caller>)>,
    names: HashMap<u64, Rc<Caller>>,
    next_caller: u64,
    sums: HashMap<TallyKey, Sums>,
}

/// Most callers a tally remembers between flushes before it starts afresh (the sums stay).
const MAX_CALLERS: usize = 65_536;

impl SpendTally {
    /// Counts one settled request by `caller` (from [`SpendTally::caller`] at admission).
    pub fn record(
        &mut self,
        caller: CallerId,
        model: Box<str>,
        metadata: Metadata,
        usage: Tokens,
        cost: u64,
        now_ms: u64,
    ) {
        let key = TallyKey { caller: caller.0, minute_ms: now_ms - now_ms % MINUTE_MS, model, metadata };
        let s = self.sums.entry(key).or_default();
        s.requests += 1;
        s.input = s.input.saturating_add(usage.input);
        s.output = s.output.saturating_add(usage.output);
        s.cached = s.cached.saturating_add(usage.cached_input);
        s.cost_micros = s.cost_micros.saturating_add(cost);
    }

    /// The tally's name for a caller (cheap: the identity's address, checked).
    pub fn caller(&mut self, id: &Identity) -> CallerId {
        let addr = std::ptr::from_ref(id) as usize;
        if let Some((n, c)) = self.callers.get(&addr)
            && c.is(id)
        {
            return CallerId(*n);
        }
        if self.callers.len() >= MAX_CALLERS {
            self.callers.clear();
        }
        self.next_caller += 1;
        let n = self.next_caller;
        let c = Rc::new(Caller::of(id));
        self.callers.insert(addr, (n, c.clone()));
        self.names.insert(n, c);
        CallerId(n)
    }

    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }

    /// Everything tallied since the last call, as ledger rows.
    pub fn take_rows(&mut self) -> Vec<SpendRow> {
        let rows = self
            .sums
            .drain()
            .map(|(k, s)| SpendRow {
                minute_ms: k.minute_ms,
                caller: self.names.get(&k.caller).map(|c| (**c).clone()).unwrap_or_default(),
                model: k.model.into(),
                metadata: metadata_json(&k.metadata),
                requests: s.requests,
                input_tokens: s.input,
                output_tokens: s.output,
                cached_tokens: s.cached,
                cost_micros: s.cost_micros,
            })
            .collect();
        // Names of callers the table no longer points at are not needed any more (a request
        // admitted before the table was emptied may still settle: keep them a while).
        if self.names.len() > 4 * MAX_CALLERS {
            let live: std::collections::HashSet<u64> = self.callers.values().map(|(n, _)| *n).collect();
            self.names.retain(|n, _| live.contains(n));
        }
        rows
    }

    /// Rows that could not be handed over go back, to be tried again next flush.
    pub fn put_back(&mut self, rows: Vec<SpendRow>) {
        for r in rows {
            self.next_caller += 1;
            let n = self.next_caller;
            self.names.insert(n, Rc::new(r.caller));
            let key = TallyKey {
                caller: n,
                minute_ms: r.minute_ms,
                model: r.model.into(),
                metadata: metadata_from_json(&r.metadata),
            };
            let s = self.sums.entry(key).or_default();
            s.requests += r.requests;
            s.input = s.input.saturating_add(r.input_tokens);
            s.output = s.output.saturating_add(r.output_tokens);
            s.cached = s.cached.saturating_add(r.cached_tokens);
            s.cost_micros = s.cost_micros.saturating_add(r.cost_micros);
        }
    }
}

/// Metadata as a JSON object with its fields in a stable order.
pub fn metadata_json(m: &Metadata) -> String {
    let map: std::collections::BTreeMap<&str, &str> = m.iter().collect();
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".into())
}

/// The inverse of [`metadata_json`]; anything unreadable is no metadata.
pub fn metadata_from_json(s: &str) -> Metadata {
    let mut m = Metadata::new();
    if let Ok(map) = serde_json::from_str::<std::collections::BTreeMap<String, String>>(s) {
        for (k, v) in &map {
            m.set(k, v);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn id(key: &str, user: &str) -> Identity {
        Identity { key: Some(Arc::from(key)), user: Some(Arc::from(user)), ..Identity::anonymous() }
    }

    #[test]
    fn sums_per_caller_model_and_minute() {
        let mut t = SpendTally::default();
        let a = id("a", "alice");
        let b = id("b", "bob");
        let none = Metadata::new();
        let u = Tokens { input: 10, output: 5, cached_input: 2 };
        let (a, b) = (t.caller(&a), t.caller(&b));
        t.record(a, "m".into(), none.clone(), u, 100, 60_000);
        t.record(a, "m".into(), none.clone(), u, 100, 119_999);
        t.record(a, "m".into(), none.clone(), u, 100, 120_000);
        t.record(b, "m".into(), none.clone(), u, 7, 60_000);
        let mut rows = t.take_rows();
        rows.sort_by_key(|r| (r.caller.key.clone(), r.minute_ms));
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[0].requests, rows[0].cost_micros, rows[0].input_tokens), (2, 200, 20));
        assert_eq!((rows[1].minute_ms, rows[1].requests), (120_000, 1));
        assert_eq!((rows[2].caller.user.as_deref(), rows[2].cost_micros), (Some("bob"), 7));
        assert_eq!(rows[0].metadata, "{}");
        assert!(t.is_empty());
    }

    #[test]
    fn put_back_keeps_everything_for_the_next_flush() {
        let mut t = SpendTally::default();
        let mut meta = Metadata::new();
        meta.set("tier", "free");
        let alice = id("a", "alice");
        let c = t.caller(&alice);
        t.record(c, "m".into(), meta.clone(), Tokens::default(), 5, 0);
        let rows = t.take_rows();
        assert_eq!(rows[0].metadata, r#"{"tier":"free"}"#);
        t.put_back(rows.clone());
        t.record(c, "m".into(), meta.clone(), Tokens::default(), 5, 0);
        let again = t.take_rows();
        assert_eq!(again.iter().map(|r| r.cost_micros).sum::<u64>(), 10);
        assert!(again.iter().all(|r| r.caller == rows[0].caller && r.metadata == rows[0].metadata));
    }

    #[test]
    fn a_reused_address_with_other_names_is_another_caller() {
        let mut t = SpendTally::default();
        let mut a = id("a", "alice");
        let first = t.caller(&a);
        t.record(first, "m".into(), Metadata::new(), Tokens::default(), 1, 0);
        a.user = Some(Arc::from("mallory"));
        let second = t.caller(&a);
        assert_ne!(first, second);
        t.record(second, "m".into(), Metadata::new(), Tokens::default(), 1, 0);
        let mut users: Vec<_> = t.take_rows().into_iter().map(|r| r.caller.user).collect();
        users.sort();
        assert_eq!(users, [Some("alice".to_string()), Some("mallory".to_string())]);
    }
}
