//! End-to-end processing latency (`--e2e-processing-latency-percentile`): for each channel,
//! the time from a message's publish timestamp to its FIN, as percentiles over a sliding
//! window (`--e2e-processing-latency-window-time`), the way Go nsqd 1.3 reports them in
//! `/stats` and statsd.
//!
//! Go keeps two quantile streams (perks' CKMS "targeted" sketch), each covering half the
//! window: the current one takes every FIN, and when half a window has passed the older one
//! is cleared and becomes current. A query merges both, so it covers between half a window
//! and a whole one. A topic's figure merges its channels'. We keep that windowing exactly.
//!
//! The sketch is a DDSketch (`sketches-ddsketch`, the one `metrics-util` builds its summaries
//! on) rather than CKMS, because:
//! - its error is *relative in value* (every reported percentile is within ±1 % of a sample
//!   value of that rank), which suits latencies spanning microseconds to minutes; CKMS's
//!   error is in rank, so a p99 over few samples can be off by a lot of milliseconds;
//! - an insert is one logarithm and an array increment — no allocation, no compaction pass —
//!   and it happens under the channel lock the FIN already holds;
//! - memory is bounded: at most [`MAX_BINS`] `u64` bins per half-window (16 KiB for both),
//!   allocated only as the observed range widens (≈ 3–4 KiB for latencies between 1 ms and
//!   10 s). Beyond the bound the *lowest* bins collapse, so the high percentiles operators
//!   watch stay exact to the stated error;
//! - sketches merge losslessly, which a topic's aggregate and the two half-windows need.
//!
//! Time here is explicit: callers pass wall-clock nanoseconds (the same clock as the message
//! timestamps), so tests drive windows without sleeping.

use sketches_ddsketch::{Config, DDSketch};

/// Relative error of a reported percentile.
pub const RELATIVE_ERROR: f64 = 0.01;
/// Bins per half-window sketch: with 1 % error they span a factor of e^(1024·0.02) ≈ 8·10⁸
/// (e.g. 10 µs to 2 h) before the lowest ones collapse.
pub const MAX_BINS: u32 = 1024;
/// Latencies at or below this (ns) count as zero; nothing real is faster than 1 µs.
const MIN_VALUE_NS: f64 = 1_000.0;

fn sketch() -> DDSketch {
    DDSketch::new(Config::new(RELATIVE_ERROR, MAX_BINS, MIN_VALUE_NS))
}

/// What the daemon was asked to track.
#[derive(Debug, Clone, PartialEq)]
pub struct E2eConfig {
    /// Half of `--e2e-processing-latency-window-time`, in ns (at least 1).
    pub half_window_ns: i64,
    /// The quantiles to report, in flag order.
    pub percentiles: Vec<f64>,
}

impl E2eConfig {
    /// `None` when no percentile was asked for (Go then keeps no stream at all).
    pub fn new(window: std::time::Duration, percentiles: &[f64]) -> Option<E2eConfig> {
        if percentiles.is_empty() {
            return None;
        }
        let half = i64::try_from(window.as_nanos() / 2).unwrap_or(i64::MAX);
        Some(E2eConfig {
            half_window_ns: half.max(1),
            percentiles: percentiles.to_vec(),
        })
    }
}

/// One channel's latency window: two half-window sketches.
#[derive(Clone)]
pub struct E2eWindow {
    sketches: [DDSketch; 2],
    current: usize,
    /// When the current half-window began (wall-clock ns).
    last_move: i64,
    half: i64,
}

impl std::fmt::Debug for E2eWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2eWindow")
            .field("count", &self.count())
            .field("last_move", &self.last_move)
            .field("half", &self.half)
            .finish()
    }
}

impl E2eWindow {
    /// An empty window whose first half starts at `now` (wall-clock ns).
    pub fn new(cfg: &E2eConfig, now: i64) -> E2eWindow {
        E2eWindow {
            sketches: [sketch(), sketch()],
            current: 0,
            last_move: now,
            half: cfg.half_window_ns,
        }
    }

    /// Go's `moveWindow` loop: for every half-window that has passed since the current one
    /// began, clear the older sketch and make it current. After two moves both are empty, so
    /// a long idle gap skips ahead in one step.
    fn advance(&mut self, now: i64) {
        let mut moves = 0;
        while now > self.last_move.saturating_add(self.half) {
            if moves == 2 {
                let skipped = (now - self.last_move - 1) / self.half;
                self.last_move = self.last_move.saturating_add(skipped * self.half);
                break;
            }
            self.current ^= 1;
            self.sketches[self.current] = sketch();
            self.last_move = self.last_move.saturating_add(self.half);
            moves += 1;
        }
    }

    /// A message published at `timestamp` (ns since the epoch) was finished at `now`.
    #[inline]
    pub fn record(&mut self, now: i64, timestamp: i64) {
        self.record_n(now, timestamp, 1);
    }

    /// `n` messages published at `timestamp` were finished at `now` (one sketch update: the
    /// messages of one MPUB share a timestamp, and a batch of FINs shares `now`).
    #[inline]
    pub fn record_n(&mut self, now: i64, timestamp: i64, n: u64) {
        self.advance(now);
        // A timestamp from the future (clock stepped back, or set by another machine) counts
        // as zero rather than being dropped: the count stays the number of FINs.
        let latency = now.saturating_sub(timestamp).max(0);
        self.sketches[self.current].add_with_count(latency as f64, n);
    }

    /// Samples in the window.
    pub fn count(&self) -> usize {
        self.sketches[0].count() + self.sketches[1].count()
    }

    /// Both half-windows merged, as of `now` (stale halves are dropped first).
    pub fn merged(&mut self, now: i64) -> DDSketch {
        self.advance(now);
        let mut m = self.sketches[0].clone();
        // Same configuration on both sides: merging cannot fail.
        let _ = m.merge(&self.sketches[1]);
        m
    }

    /// Bins allocated (memory is 8 bytes per bin).
    pub fn bins(&self) -> usize {
        self.sketches.iter().map(DDSketch::length).sum()
    }
}

/// Adds `other` into `into` (a topic aggregating its channels).
pub fn merge_into(into: &mut Option<DDSketch>, other: &DDSketch) {
    match into {
        Some(s) => {
            let _ = s.merge(other);
        }
        None => *into = Some(other.clone()),
    }
}

/// The percentiles `cfg` asks for, from a merged sketch: `(quantile, value in ns)`. An empty
/// sketch answers 0 for each, as Go's empty stream does.
pub fn percentiles(s: Option<&DDSketch>, cfg: &E2eConfig) -> Vec<(f64, f64)> {
    cfg.percentiles
        .iter()
        .map(|&q| {
            let v = s.and_then(|s| s.quantile(q).ok().flatten()).unwrap_or(0.0);
            (q, v.round())
        })
        .collect()
}

/// Samples in a merged sketch.
pub fn count(s: Option<&DDSketch>) -> u64 {
    s.map_or(0, |s| s.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MS: i64 = 1_000_000;

    fn cfg(window_ms: u64, p: &[f64]) -> E2eConfig {
        E2eConfig::new(Duration::from_millis(window_ms), p).unwrap()
    }

    /// The exact value at a quantile's rank, as the sketch defines rank (⌊q·(n−1)⌋).
    fn exact(sorted: &[i64], q: f64) -> f64 {
        if q >= 1.0 {
            return *sorted.last().unwrap() as f64;
        }
        sorted[(q * (sorted.len() as f64 - 1.0)) as usize] as f64
    }

    #[test]
    fn no_percentiles_no_config() {
        assert!(E2eConfig::new(Duration::from_secs(600), &[]).is_none());
        assert_eq!(cfg(600_000, &[0.99]).half_window_ns, 300_000 * MS);
    }

    #[test]
    fn percentiles_are_within_the_relative_error_of_the_exact_ones() {
        let c = cfg(60_000, &[1.0, 0.99, 0.95, 0.5]);
        let now = 1_700_000_000_000 * MS;
        let mut w = E2eWindow::new(&c, now);
        // A skewed spread from 50 µs to ~5 s (deterministic LCG).
        let mut x: u64 = 42;
        let mut lat = Vec::new();
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            let l = (50_000.0 * (1e5f64).powf(u * u)) as i64;
            lat.push(l);
            w.record(now, now - l);
        }
        lat.sort_unstable();
        let m = w.merged(now);
        assert_eq!(count(Some(&m)), 20_000);
        for (q, v) in percentiles(Some(&m), &c) {
            let e = exact(&lat, q);
            assert!(
                (v - e).abs() <= RELATIVE_ERROR * e + 1.0,
                "q={q}: sketch {v} exact {e}"
            );
        }
        // Bounded memory: this spread needs far fewer than the bound.
        assert!(w.bins() <= 2 * MAX_BINS as usize, "{}", w.bins());
    }

    #[test]
    fn the_window_slides_by_halves_as_go_does() {
        let c = cfg(1_000, &[0.5]);
        let t0 = 10_000 * MS;
        let mut w = E2eWindow::new(&c, t0);
        w.record(t0 + 100 * MS, t0); // first half
        w.record(t0 + 600 * MS, t0); // second half (current moved once)
        assert_eq!(w.count(), 2);
        // 1.1 s after start: the first half is cleared, the second remains.
        assert_eq!(count(Some(&w.merged(t0 + 1_100 * MS))), 1);
        // 1.6 s: both gone.
        assert_eq!(count(Some(&w.merged(t0 + 1_600 * MS))), 0);
        // A long idle gap skips ahead; new samples land in a fresh, current half.
        w.record(t0 + 3_600_000 * MS, t0 + 3_600_000 * MS - 5 * MS);
        assert_eq!(w.count(), 1);
        assert_eq!(count(Some(&w.merged(t0 + 3_600_000 * MS + 400 * MS))), 1);
    }

    #[test]
    fn empty_answers_zero_and_future_timestamps_count_as_zero() {
        let c = cfg(1_000, &[0.99, 0.5]);
        assert_eq!(percentiles(None, &c), vec![(0.99, 0.0), (0.5, 0.0)]);
        let mut w = E2eWindow::new(&c, 0);
        w.record(10 * MS, 20 * MS);
        let m = w.merged(10 * MS);
        assert_eq!(count(Some(&m)), 1);
        assert_eq!(percentiles(Some(&m), &c), vec![(0.99, 0.0), (0.5, 0.0)]);
    }

    #[test]
    fn record_n_counts_n_at_one_latency() {
        let c = cfg(60_000, &[0.5]);
        let mut w = E2eWindow::new(&c, 0);
        w.record_n(10 * MS, 0, 200);
        w.record(20 * MS, 0);
        let m = w.merged(20 * MS);
        assert_eq!(count(Some(&m)), 201);
        let (_, p50) = percentiles(Some(&m), &c)[0];
        assert!((p50 - 10e6).abs() <= 10e6 * RELATIVE_ERROR, "{p50}");
    }

    #[test]
    fn a_topic_merges_its_channels() {
        let c = cfg(60_000, &[1.0]);
        let mut a = E2eWindow::new(&c, 0);
        let mut b = E2eWindow::new(&c, 0);
        a.record(10 * MS, 0);
        b.record(500 * MS, 0);
        let mut agg = None;
        merge_into(&mut agg, &a.merged(500 * MS));
        merge_into(&mut agg, &b.merged(500 * MS));
        assert_eq!(count(agg.as_ref()), 2);
        let (_, max) = percentiles(agg.as_ref(), &c)[0];
        assert!((max - 500e6).abs() <= 500e6 * RELATIVE_ERROR, "{max}");
    }
}
