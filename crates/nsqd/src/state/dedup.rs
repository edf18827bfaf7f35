//! The dedup window (topic policy `dedup_window`, nsq-rs extension): which published
//! messages were already seen, as a Bloom filter in rotating generations.
//!
//! **Keys.** A message's key is the 128-bit xxh3 hash of its body, or of HTTP `/pub`'s
//! `dedup_id` (hashed under a different seed, so an id never matches a body that happens to
//! spell it). The seed is random per topic (see [`Keyer`]), so nobody outside the process can
//! craft bodies that collide with someone else's. xxh3 (crate `xxhash-rust`, pure Rust, no
//! dependencies, widely used) hashes short messages in a few nanoseconds and long ones at
//! memory speed, and its 128-bit output gives the two independent 64-bit halves that double
//! hashing needs: probe `i` of `k` is `h1 + i·h2` (Kirsch–Mitzenmacher), reduced to
//! `[0, m)` by a multiply-shift instead of a division.
//!
//! **Sizing.** Each generation is a classic Bloom filter sized for `n` = `dedup_capacity`
//! keys at false-positive rate `p` = `dedup_false_positive_rate`:
//! `m = ⌈−n·ln p / (ln 2)²⌉` bits (rounded up to whole 64-bit words) and
//! `k = round((m/n)·ln 2)` probes. `n` is **per generation**, and a generation spans one
//! whole window, so `n` is "distinct messages per window". Defaults `n = 1,000,000`,
//! `p = 0.0001`: m = 19,170,117 bits (2.4 MB), k = 13, so 4.8 MB for the two generations.
//!
//! **Generations and the guarantee.** Two generations, each spanning `window`, on a grid
//! that starts when the filter is built: a key is checked against both and inserted into the
//! current one; when the current one is `window` old it becomes the previous one and the
//! previous one is dropped (after more than two idle windows both are dropped). A key
//! inserted at `t` is therefore remembered for **at least `window` and less than
//! `2 × window`**: a repeat within `window` of the publish that was enqueued is always
//! dropped (Bloom filters have no false negatives); a repeat `2 × window` or more later is
//! always delivered (unless it is a false positive); in between it may go either way. A
//! dropped repeat does not extend the time its key is remembered.
//!
//! **False positives** (a new message taken for a repeat and dropped) are the one cost. With
//! at most `n` keys per generation each generation's rate is at most `p`, so the filter's is
//! at most about `2p` (a fresh key can hit either generation), and about `p` when the
//! previous generation is sparse. [`DedupFilter::estimated_false_positive_rate`] gives the
//! rate in force now from the generations' fill: `1 − Π (1 − (set bits / m)^k)`.
//!
//! Why our own filter rather than a Bloom crate: we need generations that rotate on an
//! explicit clock, the exact textbook sizing above, a running count of set bits for the
//! estimate, and keys hashed once outside the topic's lock; the filter itself is a
//! `Vec<u64>` bitset of a few dozen lines.
//!
//! **Cost** (BENCHMARKS.md, "Dedup window"): one xxh3 hash (~17 ns for 200 bytes) and k bit
//! probes per message, ~70 ns per message alone with the default sizing, more in nsqd where
//! message bodies share the caches; a filter far larger than the caches costs a memory miss
//! per probe. The topic's lock is held for the probes only.
//!
//! Sans-I/O: time is a parameter (`now`, nanoseconds on the caller's monotonic clock), so
//! tests rotate windows without sleeping. The filter is memory-only: after a restart (or a
//! change of the dedup settings) the window starts empty.

use std::f64::consts::LN_2;
use std::time::Duration;

use xxhash_rust::xxh3::xxh3_128_with_seed;

/// Default `dedup_capacity`.
pub const DEFAULT_CAPACITY: u64 = 1_000_000;
/// Default `dedup_false_positive_rate`.
pub const DEFAULT_FALSE_POSITIVE_RATE: f64 = 0.0001;
/// Most bits a generation may have (512 MiB): a configuration needing more is refused.
pub const MAX_BITS_PER_GENERATION: u64 = 1 << 32;
/// Generations kept (the current one and the previous one).
pub const GENERATIONS: usize = 2;

/// A topic's dedup settings (validated by [`crate::state::policy`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DedupConfig {
    /// How long a key is remembered, at least (see the module doc for the upper bound).
    pub window: Duration,
    /// Distinct keys per window the filter is sized for (`n`).
    pub capacity: u64,
    /// False-positive rate at `capacity` keys per generation (`p`, in (0, 0.5)).
    pub false_positive_rate: f64,
}

// The rate is validated to lie in (0, 0.5), so it is never NaN.
impl Eq for DedupConfig {}

impl DedupConfig {
    /// The settings with the default capacity and rate.
    pub fn with_window(window: Duration) -> DedupConfig {
        DedupConfig {
            window,
            capacity: DEFAULT_CAPACITY,
            false_positive_rate: DEFAULT_FALSE_POSITIVE_RATE,
        }
    }

    /// Bits per generation (the formula's `m`, rounded up to whole words).
    pub fn bits_per_generation(&self) -> u64 {
        optimal_bits(self.capacity, self.false_positive_rate).div_ceil(64) * 64
    }

    /// Probes per key (`k`).
    pub fn hashes(&self) -> u32 {
        optimal_hashes(self.bits_per_generation(), self.capacity)
    }
}

/// The textbook Bloom filter size for `n` keys at false-positive rate `p`:
/// `⌈−n·ln p / (ln 2)²⌉` bits.
pub fn optimal_bits(n: u64, p: f64) -> u64 {
    (-(n as f64) * p.ln() / (LN_2 * LN_2)).ceil().max(64.0) as u64
}

/// The textbook number of probes for `m` bits and `n` keys: `round((m/n)·ln 2)`, at least 1.
pub fn optimal_hashes(m: u64, n: u64) -> u32 {
    ((m as f64 / n.max(1) as f64) * LN_2).round().max(1.0) as u32
}

/// A message's dedup key.
pub type Key = u128;

/// Hashes bodies and ids into keys (outside any lock), under a per-topic seed.
#[derive(Debug, Clone, Copy)]
pub struct Keyer {
    seed: u64,
}

/// Mixed into the seed for `dedup_id` keys, so ids and bodies are separate key spaces.
const ID_SEED_MIX: u64 = 0x9e37_79b9_7f4a_7c15;

impl Keyer {
    /// A keyer with this seed (the topic picks a random one).
    pub fn new(seed: u64) -> Keyer {
        Keyer { seed }
    }

    /// The key of a message body.
    #[inline]
    pub fn body(&self, body: &[u8]) -> Key {
        xxh3_128_with_seed(body, self.seed)
    }

    /// The key of an HTTP `/pub` `dedup_id`.
    #[inline]
    pub fn id(&self, id: &[u8]) -> Key {
        xxh3_128_with_seed(id, self.seed ^ ID_SEED_MIX)
    }
}

/// One generation: a bitset with a count of its set bits.
struct Bloom {
    words: Vec<u64>,
    set: u64,
}

impl Bloom {
    fn new(words: usize) -> Bloom {
        // Zeroed allocation: the pages of a large filter are only backed as they are touched.
        Bloom {
            words: vec![0; words],
            set: 0,
        }
    }

    /// In place: its pages stay mapped (reallocating cost a page fault per 4 KiB at every
    /// rotation, 7 % of nsqd's publish CPU at a 300 ms window in a profile).
    fn clear(&mut self) {
        if self.set != 0 {
            self.words.fill(0);
            self.set = 0;
        }
    }
}

/// The probe positions of a key: `h1 + i·h2` for `i` in `0..k`, each reduced to `[0, m)`.
#[inline]
fn probes(key: Key, m: u64, k: u32) -> impl Iterator<Item = u64> {
    let h1 = key as u64;
    // Odd, so no two probes coincide before the reduction.
    let h2 = ((key >> 64) as u64) | 1;
    (0..u64::from(k)).map(move |i| {
        let g = h1.wrapping_add(i.wrapping_mul(h2));
        ((u128::from(g) * u128::from(m)) >> 64) as u64
    })
}

impl Bloom {
    #[inline]
    fn contains(&self, key: Key, m: u64, k: u32) -> bool {
        if self.set == 0 {
            return false;
        }
        probes(key, m, k).all(|b| self.words[(b / 64) as usize] & (1 << (b % 64)) != 0)
    }

    /// Sets the key's bits; returns whether they all were set already. One pass, no early
    /// exit: the k probes are independent loads the CPU overlaps.
    #[inline]
    fn insert(&mut self, key: Key, m: u64, k: u32) -> bool {
        let mut all = true;
        for b in probes(key, m, k) {
            let w = &mut self.words[(b / 64) as usize];
            let bit = 1u64 << (b % 64);
            let was = *w & bit != 0;
            all &= was;
            self.set += u64::from(!was);
            *w |= bit;
        }
        all
    }
}

/// The dedup filter of one topic.
pub struct DedupFilter {
    config: DedupConfig,
    /// Bits per generation (`m`).
    bits: u64,
    /// Probes per key (`k`).
    k: u32,
    /// The window in nanoseconds (a generation's span), at least 1.
    span: u64,
    gens: [Bloom; GENERATIONS],
    /// Index of the current generation in `gens`.
    current: usize,
    /// When the current generation started.
    current_start: u64,
}

impl DedupFilter {
    /// An empty filter for `config`, its first generation starting at `now`.
    pub fn new(config: DedupConfig, now: u64) -> DedupFilter {
        let bits = config.bits_per_generation();
        let words = (bits / 64) as usize;
        DedupFilter {
            config,
            bits,
            k: config.hashes(),
            span: (config.window.as_nanos().min(u128::from(u64::MAX)) as u64).max(1),
            gens: std::array::from_fn(|_| Bloom::new(words)),
            current: 0,
            current_start: now,
        }
    }

    /// Its settings.
    pub fn config(&self) -> &DedupConfig {
        &self.config
    }

    /// Bits per generation (`m`).
    pub fn bits_per_generation(&self) -> u64 {
        self.bits
    }

    /// Bits of all generations (its memory, in bits).
    pub fn bits(&self) -> u64 {
        self.bits * GENERATIONS as u64
    }

    /// Probes per key (`k`).
    pub fn hashes(&self) -> u32 {
        self.k
    }

    /// Starts new generations as far as `now` requires.
    fn rotate(&mut self, now: u64) {
        if now < self.current_start.saturating_add(self.span) {
            return;
        }
        let spans = (now - self.current_start) / self.span;
        if spans >= GENERATIONS as u64 {
            for g in &mut self.gens {
                g.clear();
            }
        } else {
            for _ in 0..spans {
                self.current = (self.current + 1) % GENERATIONS;
                self.gens[self.current].clear();
            }
        }
        self.current_start += spans * self.span;
    }

    /// Whether `key` is remembered (no insert).
    pub fn contains(&mut self, key: Key, now: u64) -> bool {
        self.rotate(now);
        let (m, k) = (self.bits, self.k);
        self.gens.iter().any(|g| g.contains(key, m, k))
    }

    /// Whether `key` is a repeat; if not, remembers it from now on. A key found in an older
    /// generation is not inserted again (a dropped repeat does not extend its memory), so
    /// those are probed first (a new key fails there after a probe or two); then the
    /// current one is probed and set in one pass.
    pub fn check_and_insert(&mut self, key: Key, now: u64) -> bool {
        self.rotate(now);
        self.check_and_insert_rotated(key)
    }

    fn check_and_insert_rotated(&mut self, key: Key) -> bool {
        let (m, k) = (self.bits, self.k);
        let cur = self.current;
        if (1..GENERATIONS).any(|i| self.gens[(cur + i) % GENERATIONS].contains(key, m, k)) {
            return true;
        }
        self.gens[cur].insert(key, m, k)
    }

    /// [`DedupFilter::check_and_insert`] of each key of one publish in turn (a key repeated
    /// within `keys` is a repeat from its second time on): `true` for each repeat. (Loading
    /// a batch's probe words first, to overlap their cache misses, did not pay in nsqd.)
    pub fn check_and_insert_all(&mut self, keys: &[Key], now: u64) -> Vec<bool> {
        self.rotate(now);
        keys.iter()
            .map(|key| self.check_and_insert_rotated(*key))
            .collect()
    }

    /// How many of `keys` (one publish) [`DedupFilter::check_and_insert`] would take as new,
    /// counting a key repeated within `keys` once; remembers nothing. (A bound: a key
    /// inserted earlier in the batch can make a later one a false positive.)
    pub fn count_new(&mut self, keys: &[Key], now: u64) -> usize {
        let mut fresh: Vec<Key> = keys
            .iter()
            .copied()
            .filter(|k| !self.contains(*k, now))
            .collect();
        fresh.sort_unstable();
        fresh.dedup();
        fresh.len()
    }

    /// Forgets every key (a publish whose keys were remembered failed: its retry must not be
    /// taken for a repeat). The generation grid is kept.
    pub fn clear(&mut self) {
        for g in &mut self.gens {
            g.clear();
        }
    }

    /// Fraction of set bits of each generation, current first.
    pub fn fill(&self) -> [f64; GENERATIONS] {
        std::array::from_fn(|i| {
            self.gens[(self.current + i) % GENERATIONS].set as f64 / self.bits as f64
        })
    }

    /// The probability that a key never published is taken for a repeat now:
    /// `1 − Π (1 − fillᵏ)` over the generations.
    pub fn estimated_false_positive_rate(&mut self, now: u64) -> f64 {
        self.rotate(now);
        let k = self.k as i32;
        // As −expm1(Σ ln(1 − fillᵏ)): exact for tiny rates too (1 − (1 − 1e-70) is 0).
        -self
            .fill()
            .iter()
            .map(|f| (-f.powi(k)).ln_1p())
            .sum::<f64>()
            .exp_m1()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn cfg(window_s: u64, n: u64, p: f64) -> DedupConfig {
        DedupConfig {
            window: Duration::from_secs(window_s),
            capacity: n,
            false_positive_rate: p,
        }
    }

    #[test]
    fn sizing_follows_the_formula() {
        // −1e6·ln(1e-4)/ln(2)² = 19,170,116.7…
        assert_eq!(optimal_bits(1_000_000, 1e-4), 19_170_117);
        let c = DedupConfig::with_window(Duration::from_secs(600));
        assert_eq!(c.bits_per_generation(), 19_170_176); // whole words
        assert_eq!(c.hashes(), 13);
        let f = DedupFilter::new(c, 0);
        assert_eq!(f.bits(), 2 * 19_170_176);
        assert_eq!(f.hashes(), 13);
        // p = 1%: 9.585 bits per key, k = 7.
        assert_eq!(optimal_bits(1000, 0.01), 9586);
        assert_eq!(optimal_hashes(9586, 1000), 7);
        // Tiny filters still get a word and a probe.
        assert_eq!(cfg(1, 1, 0.4).bits_per_generation(), 64);
        assert!(cfg(1, 1, 0.4).hashes() >= 1);
    }

    #[test]
    fn no_false_negatives_within_the_window() {
        let keyer = Keyer::new(7);
        let mut f = DedupFilter::new(cfg(10, 10_000, 1e-3), 0);
        let keys: Vec<Key> = (0..5000u32).map(|i| keyer.body(&i.to_le_bytes())).collect();
        // Inserted just before the first rotation, at 9.9 s.
        for k in &keys {
            assert!(!f.check_and_insert(*k, 9_900_000_000));
        }
        // Every repeat up to 10 s later is caught (the key moved to the previous generation
        // at 10 s; dropped at 20 s).
        for t in [9_900_000_000, 10 * SEC, 15 * SEC, 19_899_999_999] {
            for k in &keys {
                assert!(f.check_and_insert(*k, t), "at {t}");
            }
        }
        // A key inserted at the very start of a generation is remembered almost 2 windows.
        let early = keyer.body(b"early");
        assert!(!f.check_and_insert(early, 20 * SEC));
        assert!(f.contains(early, 39 * SEC));
        assert!(!f.contains(early, 40 * SEC));
    }

    #[test]
    fn rotation_forgets_after_the_window() {
        let keyer = Keyer::new(1);
        let mut f = DedupFilter::new(cfg(1, 1000, 1e-4), 0);
        let a = keyer.body(b"a");
        let b = keyer.body(b"b");
        assert!(!f.check_and_insert(a, 500_000_000));
        assert!(f.check_and_insert(a, 1_400_000_000));
        // At 2 s a's generation (started at 0) is dropped: a is new again.
        assert!(!f.check_and_insert(a, 2 * SEC));
        // A dropped repeat does not extend the memory: b seen at 2.1 s and repeated at 3.5 s
        // is forgotten at 4 s.
        assert!(!f.check_and_insert(b, 2_100_000_000));
        assert!(f.check_and_insert(b, 3_500_000_000));
        assert!(!f.contains(b, 4 * SEC));
        // A long idle time drops both generations at once.
        assert!(!f.check_and_insert(a, 100 * SEC));
        assert!(f.contains(a, 100 * SEC + 1));
        assert!(!f.contains(a, 102 * SEC));
        assert_eq!(f.estimated_false_positive_rate(102 * SEC), 0.0);
    }

    #[test]
    fn ids_and_bodies_are_separate_key_spaces() {
        let keyer = Keyer::new(3);
        assert_ne!(keyer.body(b"x"), keyer.id(b"x"));
        assert_eq!(keyer.id(b"x"), Keyer::new(3).id(b"x"));
        assert_ne!(keyer.body(b"x"), Keyer::new(4).body(b"x"));
    }

    #[test]
    fn count_new_counts_repeats_in_the_batch_once_and_remembers_nothing() {
        let keyer = Keyer::new(9);
        let mut f = DedupFilter::new(cfg(10, 1000, 1e-4), 0);
        let [a, b, c] = [b"a", b"b", b"c"].map(|x| keyer.body(x));
        assert!(!f.check_and_insert(a, 0));
        assert_eq!(f.count_new(&[a, b, b, c, a], 1), 2);
        assert_eq!(f.count_new(&[b], 1), 1);
        assert!(!f.contains(b, 1));
        // The batch form judges each key in turn, as one call per key does.
        let d = keyer.body(b"d");
        assert_eq!(
            f.check_and_insert_all(&[a, b, b, c, a, d, c], 1),
            [true, false, true, false, true, false, true]
        );
        assert_eq!(f.check_and_insert_all(&[d], 2), [true]);
        f.clear();
        assert!(!f.contains(a, 1));
    }

    /// The acceptance figures: 1,000,000 distinct keys then 100,000 repeats of them, with the
    /// default sizing (n = 1e6, p = 1e-4). Printed for BENCHMARKS.md (`--nocapture`).
    #[test]
    fn false_positives_on_a_million_keys() {
        let c = DedupConfig::with_window(Duration::from_secs(600));
        let keyer = Keyer::new(0x5eed);
        let mut f = DedupFilter::new(c, 0);
        let start = std::time::Instant::now();
        let mut false_positives = 0u64;
        for i in 0..1_000_000u64 {
            let body = format!("message body {i:016x}");
            if f.check_and_insert(keyer.body(body.as_bytes()), 1) {
                false_positives += 1;
            }
        }
        let insert_ns = start.elapsed().as_nanos() as f64 / 1e6;
        let mut missed = 0u64;
        for i in (0..1_000_000u64).step_by(10) {
            let body = format!("message body {i:016x}");
            if !f.check_and_insert(keyer.body(body.as_bytes()), 2) {
                missed += 1;
            }
        }
        let observed = false_positives as f64 / 1e6;
        let estimated = f.estimated_false_positive_rate(2);
        // The rate at capacity: 1,000,000 other keys against the full filter.
        let at_capacity = (0..1_000_000u64)
            .filter(|i| {
                let body = format!("another body {i:016x}");
                f.contains(keyer.body(body.as_bytes()), 2)
            })
            .count() as f64
            / 1e6;
        let formula = optimal_bits(c.capacity, c.false_positive_rate);
        let memory_bits = f.bits_per_generation();
        println!(
            "dedup filter n=1e6 p=1e-4: m={memory_bits} bits/generation (formula {formula}, \
             {:.2} MB per generation, {} generations), k={}, fill {:.4}, \
             false positives while filling {false_positives} ({observed:.2e}), \
             at capacity {at_capacity:.2e} (1e6 other keys), estimated rate now \
             {estimated:.2e}, repeats missed {missed}/100000, {insert_ns:.0} ns per new key \
             incl. formatting its body (debug or release as built)",
            memory_bits as f64 / 8e6,
            GENERATIONS,
            f.hashes(),
            f.fill()[0],
        );
        assert_eq!(missed, 0, "every repeat is detected");
        assert!(observed <= 2.0 * c.false_positive_rate, "{observed}");
        assert!(at_capacity <= 2.0 * c.false_positive_rate, "{at_capacity}");
        let over = memory_bits as f64 / formula as f64;
        assert!((1.0..1.1).contains(&over), "{over}");
        // At capacity the fill is about 1/2 and the estimate about p.
        assert!((0.45..0.55).contains(&f.fill()[0]), "{:?}", f.fill());
        assert!(estimated > 0.5e-4 && estimated < 2e-4, "{estimated}");
    }
}

/// The dedup window's own CPU per message as nsqd pays it: MPUB-sized batches (200 bodies of
/// 200 bytes) hashed and checked against the default filter (n = 1e6, p = 1e-4) with a
/// window that holds about `n` keys per generation. Best of 5 rounds of 2,000,000 messages;
/// run in release for BENCHMARKS.md:
/// `cargo test --release -p nsqd --lib dedup_cost -- --ignored --nocapture`.
#[cfg(test)]
#[test]
#[ignore = "a benchmark: run in release"]
fn dedup_cost_per_message() {
    let keyer = Keyer::new(0xc0ffee);
    for (label, cfg) in [
        (
            "n=1e6 p=1e-4",
            DedupConfig::with_window(Duration::from_secs(1)),
        ),
        (
            "n=1e6 p=1e-2",
            DedupConfig {
                false_positive_rate: 0.01,
                ..DedupConfig::with_window(Duration::from_secs(1))
            },
        ),
        (
            "n=2e7 p=1e-4",
            DedupConfig {
                capacity: 20_000_000,
                ..DedupConfig::with_window(Duration::from_secs(20))
            },
        ),
    ] {
        let mut f = DedupFilter::new(cfg, 0);
        let mut body = vec![b'a'; 200];
        let mut seq = 0u64;
        let mut best = (f64::MAX, f64::MAX);
        // 1e6 messages per simulated second: each generation ends up with about n keys.
        let per_ns = 1_000_000.0 / 1e9 * (cfg.capacity as f64 / 1e6);
        for _round in 0..5 {
            let t = std::time::Instant::now();
            let mut hash_ns = 0u128;
            let mut repeats = 0usize;
            for _ in 0..10_000 {
                let h = std::time::Instant::now();
                let keys: Vec<Key> = (0..200)
                    .map(|_| {
                        body[..8].copy_from_slice(&seq.to_le_bytes());
                        seq += 1;
                        keyer.body(&body)
                    })
                    .collect();
                hash_ns += h.elapsed().as_nanos();
                let now = (seq as f64 / per_ns) as u64;
                repeats += f
                    .check_and_insert_all(&keys, now)
                    .iter()
                    .filter(|r| **r)
                    .count();
            }
            std::hint::black_box(repeats);
            let total = t.elapsed().as_nanos() as f64 / 2e6;
            if total < best.0 {
                best = (total, hash_ns as f64 / 2e6);
            }
        }
        println!(
            "dedup cost {label}: {:.1} ns per message (hash {:.1} ns, filter {:.1} ns), \
             {} bits, k={}",
            best.0,
            best.1,
            best.0 - best.1,
            f.bits(),
            f.hashes()
        );
    }
}
