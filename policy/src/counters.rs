//! Counters shared by the shards of one process: each shard counts on its own and tells the
//! others by gossip; every shard decides from its own view (its counts plus the last it heard
//! from each other shard).
//!
//! **Windows.** A windowed counter splits its window into sub-buckets (by default
//! [`DEFAULT_BUCKETS`]: a 60 s window is six 10 s buckets; `governance.window_buckets` sets it): adding goes to the current bucket, the sum covers the buckets still
//! inside the window. Memory per counter is constant. A single counter (a gauge such as requests
//! in flight, or the spend of one budget period) is one value.
//!
//! **Merging.** Gossip carries *absolute* values: "origin o's bucket e of counter k is now v, as
//! of its round s". A receiver keeps, per origin and slot, the value with the highest
//! `(bucket, round)`. That rule is commutative and idempotent, so reordered, repeated or late
//! messages never double-count, and a decrease (a reservation settled lower) needs no special
//! case. A message that could not be sent is not lost: its counters stay dirty and go out, with
//! their newer values, next round.

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;

/// Index of a shard within the process.
pub type ShardId = u16;

/// Sub-buckets per window, unless configured.
pub const DEFAULT_BUCKETS: usize = 6;
/// The range `governance.window_buckets` may take: more buckets slide more smoothly and cost
/// memory per counter and time per sum.
pub const BUCKETS_RANGE: std::ops::RangeInclusive<usize> = 2..=60;

/// What a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Measure {
    Requests,
    InputTokens,
    OutputTokens,
    TotalTokens,
    /// Requests in flight (a gauge).
    Concurrent,
    /// Micro-dollars spent in a budget period.
    SpendMicros,
}

/// The identity of a counter. `window_ms == 0` is a single value (gauge or period total).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CounterKey {
    /// The rule or budget it belongs to.
    pub owner: Arc<str>,
    /// The entity it counts for (a key id, a user, a team, ... or `*` for a global rule).
    pub entity: Arc<str>,
    pub measure: Measure,
    pub window_ms: u64,
    /// Budget period index (0 for rate-limit windows and lifetime budgets).
    pub period: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slot {
    /// Bucket number since the Unix epoch (`now_ms / bucket_ms + 1`); 0 for single values and
    /// unused slots.
    bucket: u64,
    value: i64,
    /// The origin's round that set it (remote slots only).
    round: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    key: CounterKey,
    /// The slots of every shard, `buckets` per shard, by origin (this shard's own are its
    /// counts; the others' are what it heard). One allocation per counter.
    slots: Box<[Slot]>,
    /// Changed since the last gossip round.
    dirty: bool,
    /// Last time anything touched it (for eviction).
    touched_ms: u64,
}

impl Entry {
    fn new(key: CounterKey, shards: usize, buckets: usize) -> Entry {
        Entry { key, slots: vec![Slot::default(); shards * buckets].into_boxed_slice(), dirty: false, touched_ms: 0 }
    }

    /// The total over the window ending at bucket `now_bucket`, every shard's slots included.
    fn total(&self, now_bucket: u64, buckets: usize) -> i64 {
        self.slots.iter().filter(|s| live(&self.key, s, now_bucket, buckets)).map(|s| s.value).sum()
    }
}

/// A place in the store, found once per request and used for its reads and writes. A handle
/// outlives the counter it points at only if the counter was evicted; the generation says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handle {
    index: u32,
    generation: u32,
}

#[derive(Debug)]
struct Place {
    generation: u32,
    entry: Option<Entry>,
}

fn bucket_ms(window_ms: u64, buckets: usize) -> u64 {
    (window_ms / buckets as u64).max(1)
}

/// Which slot (within a shard's `buckets`) and bucket `now_ms` falls in for a key. Buckets are
/// numbered from 1 (bucket `b` covers `[(b-1) × bucket_ms, b × bucket_ms)`) so that 0 always
/// means an unused slot.
fn position(key: &CounterKey, now_ms: u64, buckets: usize) -> (usize, u64) {
    if key.window_ms == 0 {
        return (0, 0);
    }
    let b = now_ms / bucket_ms(key.window_ms, buckets) + 1;
    ((b % buckets as u64) as usize, b)
}

/// Whether a slot's bucket still counts at bucket `now_bucket`.
fn live(key: &CounterKey, slot: &Slot, now_bucket: u64, buckets: usize) -> bool {
    key.window_ms == 0 || now_bucket.saturating_sub(slot.bucket) < buckets as u64
}

/// One update in a gossip message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub key: CounterKey,
    pub bucket: u64,
    pub value: i64,
}

/// One gossip round from one shard: every counter it changed since its last round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub origin: ShardId,
    pub round: u64,
    pub updates: Vec<Update>,
}

/// A shard's counters and its view of the others'.
pub struct CounterStore {
    shard: ShardId,
    shards: usize,
    /// Sub-buckets per window.
    buckets: usize,
    index: HashMap<CounterKey, u32, RandomState>,
    places: Vec<Place>,
    free: Vec<u32>,
    round: u64,
    /// Places whose counter turned dirty since the last round: a round visits these, not every
    /// counter (an idle shard with 100k counters does no work every few milliseconds).
    dirty: Vec<u32>,
}

impl CounterStore {
    pub fn new(shard: ShardId, shards: usize) -> CounterStore {
        CounterStore::with_buckets(shard, shards, DEFAULT_BUCKETS)
    }

    /// A store whose windows have `buckets` sub-buckets (clamped to [`BUCKETS_RANGE`]). Every
    /// shard of a process must use the same number.
    pub fn with_buckets(shard: ShardId, shards: usize, buckets: usize) -> CounterStore {
        CounterStore {
            shard,
            shards: shards.max(1),
            buckets: buckets.clamp(*BUCKETS_RANGE.start(), *BUCKETS_RANGE.end()),
            dirty: Vec::new(),
            index: HashMap::default(),
            places: Vec::new(),
            free: Vec::new(),
            round: 0,
        }
    }

    /// The handle of `key`'s counter, created empty if absent (one hash lookup).
    pub fn handle(&mut self, key: &CounterKey) -> Handle {
        if let Some(&i) = self.index.get(key) {
            let generation = self.places.get(i as usize).map_or(0, |p| p.generation);
            return Handle { index: i, generation };
        }
        let entry = Entry::new(key.clone(), self.shards, self.buckets);
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.places.push(Place { generation: 0, entry: None });
                u32::try_from(self.places.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let place = &mut self.places[index as usize];
        place.generation = place.generation.wrapping_add(1);
        place.entry = Some(entry);
        self.index.insert(key.clone(), index);
        Handle { index, generation: place.generation }
    }

    /// Whether `h` still points at the counter it was made for.
    pub fn is_live(&self, h: Handle) -> bool {
        self.at(h).is_some()
    }

    fn at(&self, h: Handle) -> Option<&Entry> {
        self.places.get(h.index as usize).filter(|p| p.generation == h.generation).and_then(|p| p.entry.as_ref())
    }

    fn at_mut(&mut self, h: Handle) -> Option<&mut Entry> {
        self.places.get_mut(h.index as usize).filter(|p| p.generation == h.generation).and_then(|p| p.entry.as_mut())
    }

    /// The total across shards as this shard sees it, over the window ending at `now_ms`.
    pub fn total_at(&self, h: Handle, now_ms: u64) -> i64 {
        self.at(h).map_or(0, |e| e.total(position(&e.key, now_ms, self.buckets).1, self.buckets))
    }

    /// Adds `delta` (may be negative) to this shard's count, in the bucket of `now_ms`; returns
    /// the bucket (for a later [`CounterStore::adjust_at`]).
    pub fn add_at(&mut self, h: Handle, now_ms: u64, delta: i64) -> u64 {
        let (buckets, own) = (self.buckets, self.own_offset());
        let Some(e) = self.at_mut(h) else { return 0 };
        let (i, b) = position(&e.key, now_ms, buckets);
        let Some(slot) = e.slots.get_mut(own + i) else { return 0 };
        if slot.bucket != b {
            *slot = Slot { bucket: b, value: 0, round: 0 };
        }
        slot.value += delta;
        let newly = !std::mem::replace(&mut e.dirty, true);
        e.touched_ms = now_ms;
        if newly {
            self.dirty.push(h.index);
        }
        b
    }

    /// Adds `delta` to bucket `bucket` if it is still this shard's value there (a settlement of
    /// an earlier reservation) and says whether it did; a bucket that rolled over, or a counter
    /// evicted since, is left alone.
    pub fn adjust_at(&mut self, h: Handle, bucket: u64, now_ms: u64, delta: i64) -> bool {
        let (buckets, own) = (self.buckets, self.own_offset());
        let Some(e) = self.at_mut(h) else { return false };
        let i = if e.key.window_ms == 0 { 0 } else { (bucket % buckets as u64) as usize };
        let Some(slot) = e.slots.get_mut(own + i) else { return false };
        if slot.bucket != bucket {
            return false;
        }
        slot.value += delta;
        let newly = !std::mem::replace(&mut e.dirty, true);
        e.touched_ms = now_ms;
        if newly {
            self.dirty.push(h.index);
        }
        true
    }

    /// [`CounterStore::add_at`] by key.
    pub fn add(&mut self, key: &CounterKey, now_ms: u64, delta: i64) -> u64 {
        let h = self.handle(key);
        self.add_at(h, now_ms, delta)
    }

    /// [`CounterStore::adjust_at`] by key.
    pub fn adjust(&mut self, key: &CounterKey, bucket: u64, now_ms: u64, delta: i64) -> bool {
        match self.index.get(key) {
            Some(&index) => {
                let generation = self.places.get(index as usize).map_or(0, |p| p.generation);
                self.adjust_at(Handle { index, generation }, bucket, now_ms, delta)
            }
            None => false,
        }
    }

    /// [`CounterStore::total_at`] by key (0 for a counter never seen).
    pub fn total(&self, key: &CounterKey, now_ms: u64) -> i64 {
        let Some(&index) = self.index.get(key) else { return 0 };
        self.places
            .get(index as usize)
            .and_then(|p| p.entry.as_ref())
            .map_or(0, |e| e.total(position(key, now_ms, self.buckets).1, self.buckets))
    }

    /// How long until the oldest bucket holding anything leaves the window (for `retry-after`):
    /// the time at which the window's total will first drop.
    pub fn next_release_ms(&self, h: Handle, now_ms: u64) -> u64 {
        let Some(e) = self.at(h) else { return 0 };
        if e.key.window_ms == 0 {
            return 0;
        }
        let buckets = self.buckets;
        let bms = bucket_ms(e.key.window_ms, buckets);
        let (_, now_bucket) = position(&e.key, now_ms, buckets);
        let oldest = e
            .slots
            .iter()
            .filter(|s| s.value != 0 && live(&e.key, s, now_bucket, buckets))
            .map(|s| s.bucket)
            .min()
            .unwrap_or(now_bucket);
        // Bucket `b` leaves the window when bucket `b + buckets` starts, at `(b - 1 + buckets) × bucket_ms`.
        ((oldest - 1 + buckets as u64) * bms).saturating_sub(now_ms)
    }

    /// Takes this round's updates (every counter changed since the last round), or `None` when
    /// nothing changed. If the message cannot be delivered, call [`CounterStore::requeue`].
    pub fn take_delta(&mut self) -> Option<Delta> {
        self.round += 1;
        let own = self.own_offset()..self.own_offset() + self.buckets;
        let mut updates = Vec::new();
        let dirty = std::mem::take(&mut self.dirty);
        // An index may be stale (its counter evicted, the place reused): only a counter still
        // flagged dirty is sent, and it is unflagged, so a repeated index sends nothing twice.
        for i in dirty {
            let Some(e) = self.places.get_mut(i as usize).and_then(|p| p.entry.as_mut()) else { continue };
            if !std::mem::replace(&mut e.dirty, false) {
                continue;
            }
            let local = e.slots.get(own.clone()).unwrap_or(&[]);
            for s in local.iter().filter(|s| s.bucket != 0 || e.key.window_ms == 0) {
                updates.push(Update { key: e.key.clone(), bucket: s.bucket, value: s.value });
            }
        }
        (!updates.is_empty()).then_some(Delta { origin: self.shard, round: self.round, updates })
    }

    /// Marks a delta's counters dirty again: it was not delivered everywhere, so its (newer)
    /// values go out next round.
    pub fn requeue(&mut self, delta: &Delta) {
        for u in &delta.updates {
            if let Some(&i) = self.index.get(&u.key)
                && let Some(e) = self.places.get_mut(i as usize).and_then(|p| p.entry.as_mut())
                && !std::mem::replace(&mut e.dirty, true)
            {
                self.dirty.push(i);
            }
        }
    }

    /// Merges another shard's round. Commutative and idempotent per origin and slot.
    pub fn merge(&mut self, delta: &Delta) {
        let origin = usize::from(delta.origin);
        if origin >= self.shards || delta.origin == self.shard {
            return;
        }
        let buckets = self.buckets;
        for u in &delta.updates {
            let i = if u.key.window_ms == 0 { 0 } else { (u.bucket % buckets as u64) as usize };
            let h = self.handle(&u.key);
            let Some(e) = self.at_mut(h) else { continue };
            let Some(slot) = e.slots.get_mut(origin * buckets + i) else { continue };
            if (u.bucket, delta.round) > (slot.bucket, slot.round) {
                *slot = Slot { bucket: u.bucket, value: u.value, round: delta.round };
            }
        }
    }

    /// Forgets counters untouched for `idle_ms` whose windows are over, keeping spend (budget
    /// periods) and requests still in flight (memory stays bounded by the live entities).
    pub fn evict(&mut self, now_ms: u64, idle_ms: u64) {
        let own = self.own_offset();
        for (i, place) in self.places.iter_mut().enumerate() {
            let Some(e) = &place.entry else { continue };
            let idle = now_ms.saturating_sub(e.touched_ms);
            let keep = match e.key.measure {
                Measure::SpendMicros => true,
                Measure::Concurrent => e.slots.get(own).is_some_and(|s| s.value != 0) || idle <= idle_ms,
                _ => idle <= idle_ms.max(e.key.window_ms),
            };
            if !keep {
                self.index.remove(&e.key);
                place.entry = None;
                self.free.push(u32::try_from(i).unwrap_or(u32::MAX));
            }
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Where this shard's own slots start in an entry.
    fn own_offset(&self) -> usize {
        usize::from(self.shard) * self.buckets
    }

    pub fn buckets(&self) -> usize {
        self.buckets
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(window_ms: u64) -> CounterKey {
        CounterKey { owner: "r".into(), entity: "e".into(), measure: Measure::Requests, window_ms, period: 0 }
    }

    #[test]
    fn a_round_sends_only_what_changed_since_the_last() {
        let mut s = CounterStore::new(0, 2);
        let keys: Vec<CounterKey> =
            (0..1000).map(|i| CounterKey { entity: format!("e{i}").into(), ..key(60_000) }).collect();
        for k in &keys {
            s.add(k, 1_000, 1);
        }
        assert_eq!(s.take_delta().unwrap().updates.len(), 1000);
        assert!(s.take_delta().is_none(), "nothing changed");
        s.add(&keys[7], 2_000, 1);
        s.add(&keys[7], 2_000, 1);
        let d = s.take_delta().unwrap();
        assert_eq!(d.updates.len(), 1);
        assert_eq!((d.updates[0].key.entity.as_ref(), d.updates[0].value), ("e7", 3));
        // A dirty counter evicted before the round, its place reused: nothing stale is sent.
        s.add(&keys[8], 3_000, 1);
        s.evict(10_000_000, 1);
        let fresh = CounterKey { entity: "new".into(), ..key(60_000) };
        s.add(&fresh, 10_000_000, 5);
        let d = s.take_delta().unwrap();
        assert_eq!(d.updates.iter().map(|u| u.key.entity.as_ref()).collect::<Vec<_>>(), ["new"]);
        // Requeued counters go out again.
        s.requeue(&d);
        assert_eq!(s.take_delta().unwrap().updates.len(), 1);
    }

    #[test]
    fn more_buckets_slide_in_smaller_steps() {
        for (buckets, step_ms) in [(6u64, 10_000u64), (12, 5_000), (60, 1_000)] {
            let mut s = CounterStore::with_buckets(0, 1, buckets as usize);
            let k = key(60_000);
            s.add(&k, 0, 1);
            // Still counted just before the first bucket leaves the window...
            assert_eq!(s.total(&k, 60_000 - 1), 1, "{buckets} buckets");
            // ...and gone once the window has slid one step past it.
            assert_eq!(s.total(&k, 60_000 + step_ms - 1), 0, "{buckets} buckets");
            let h = s.handle(&k);
            s.add_at(h, 30_000, 1);
            assert_eq!(s.next_release_ms(h, 30_000), 60_000 - 30_000, "{buckets} buckets");
        }
        assert_eq!(CounterStore::with_buckets(0, 1, 1000).buckets(), 60, "clamped");
    }

    #[test]
    fn sliding_window_forgets_old_buckets() {
        let k = key(60_000);
        let mut s = CounterStore::new(0, 1);
        s.add(&k, 1_000, 5);
        s.add(&k, 25_000, 3);
        assert_eq!(s.total(&k, 30_000), 8);
        // At 65 s the 0-10 s bucket is out, the 20-30 s one still in.
        assert_eq!(s.total(&k, 65_000), 3);
        assert_eq!(s.total(&k, 90_000), 0);
    }

    #[test]
    fn retry_after_points_at_the_oldest_bucket() {
        let k = key(60_000);
        let mut s = CounterStore::new(0, 1);
        s.add(&k, 12_000, 1);
        // Bucket 10-20 s leaves the window at 70 s.
        let h = s.handle(&k);
        assert_eq!(s.next_release_ms(h, 30_000), 40_000);
    }

    #[test]
    fn gossip_makes_totals_agree() {
        let k = key(60_000);
        let mut a = CounterStore::new(0, 2);
        let mut b = CounterStore::new(1, 2);
        a.add(&k, 1_000, 4);
        b.add(&k, 1_500, 6);
        let da = a.take_delta().unwrap();
        let db = b.take_delta().unwrap();
        a.merge(&db);
        b.merge(&da);
        assert_eq!((a.total(&k, 2_000), b.total(&k, 2_000)), (10, 10));
        assert!(a.take_delta().is_none(), "nothing changed since");
        // A settlement lowers a value; the lower value wins by round.
        let bucket = 1; // 1 s is in the first 10 s bucket
        a.adjust(&k, bucket, 3_000, -3);
        b.merge(&a.take_delta().unwrap());
        assert_eq!(b.total(&k, 3_000), 7);
    }

    #[test]
    fn gauges_and_periods_are_single_values() {
        let k = CounterKey { measure: Measure::Concurrent, ..key(0) };
        let mut s = CounterStore::new(0, 1);
        s.add(&k, 1, 1);
        s.add(&k, 1_000_000_000, 1);
        assert_eq!(s.total(&k, 5_000_000_000), 2);
        s.adjust(&k, 0, 5, -1);
        assert_eq!(s.total(&k, 5), 1);
    }

    #[test]
    fn undelivered_rounds_are_resent() {
        let k = key(60_000);
        let mut a = CounterStore::new(0, 2);
        let mut b = CounterStore::new(1, 2);
        a.add(&k, 1_000, 2);
        let lost = a.take_delta().unwrap();
        a.requeue(&lost);
        let resent = a.take_delta().unwrap();
        b.merge(&resent);
        assert_eq!(b.total(&k, 1_000), 2);
    }

    fn updates_strategy() -> impl Strategy<Value = Vec<(u16, u8, u64, i64)>> {
        // (origin, counter, time ms, delta)
        proptest::collection::vec((1u16..4, 0u8..3, 0u64..120_000, -5i64..20), 0..60)
    }

    proptest! {
        /// Shards 1..4 each produce a sequence of rounds; delivering them to shard 0 in any
        /// order, with any duplicates, gives the same totals.
        #[test]
        fn merge_order_and_replays_do_not_matter(ops in updates_strategy(), order_seed in any::<u64>(), dup in 0usize..10) {
            let mut origins: Vec<CounterStore> = (0..4).map(|i| CounterStore::new(i, 4)).collect();
            let mut deltas = Vec::new();
            let mut now = 0;
            for (o, c, t, d) in &ops {
                now = now.max(*t);
                let k = key(60_000 * (u64::from(*c) + 1));
                origins[usize::from(*o)].add(&k, now, *d);
                if let Some(delta) = origins[usize::from(*o)].take_delta() {
                    deltas.push(delta);
                }
            }
            let mut in_order = CounterStore::new(0, 4);
            for d in &deltas { in_order.merge(d); }
            let mut shuffled = deltas.clone();
            // Deterministic shuffle from the seed, plus replays.
            let mut x = order_seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            for i in 0..dup.min(shuffled.len()) { let d = shuffled[i].clone(); shuffled.push(d); }
            let mut any_order = CounterStore::new(0, 4);
            for d in &shuffled { any_order.merge(d); }
            for c in 0..3u64 {
                let k = key(60_000 * (c + 1));
                prop_assert_eq!(in_order.total(&k, now), any_order.total(&k, now));
                // And the receiver's view equals the sum of what each origin holds.
                let truth: i64 = origins.iter().map(|o| o.total(&k, now)).sum();
                prop_assert_eq!(in_order.total(&k, now), truth);
            }
        }
    }
}
