//! Result formatting: Go's summary line, an explicit msg/s line, and latency percentiles.

use std::time::Duration;

use crate::args::format_go_duration;

/// Go's summary line, byte for byte the format of `bench_writer`/`bench_reader`:
/// `duration: 10.001s - 12.345mb/s - 67890.123ops/s - 14.730us/op`.
///
/// As in Go, `mb/s` counts message bodies only (`msgs * size`, MiB), and `us/op` is whole
/// elapsed microseconds divided by the message count.
pub fn go_summary(duration: Duration, msgs: u64, size: usize) -> String {
    let secs = duration.as_secs_f64();
    format!(
        "duration: {} - {:.3}mb/s - {:.3}ops/s - {:.3}us/op",
        format_go_duration(duration),
        (msgs as f64 * size as f64) / secs / 1024.0 / 1024.0,
        msgs as f64 / secs,
        duration.as_micros() as f64 / msgs as f64,
    )
}

/// The plain line: `<verb> N msgs in X.XXXs: R msg/s (M MB/s of bodies)`.
pub fn rate_line(verb: &str, duration: Duration, msgs: u64, size: usize) -> String {
    let secs = duration.as_secs_f64();
    format!(
        "{verb} {msgs} msgs in {secs:.3}s: {:.0} msg/s ({:.2} MB/s of bodies)",
        msgs as f64 / secs,
        msgs as f64 * size as f64 / secs / 1e6,
    )
}

/// The value at percentile `p` (0..=100) of an ascending slice, by nearest rank:
/// the smallest value such that at least `p`% of the samples are less or equal.
/// Returns 0 for an empty slice.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len();
    // The epsilon keeps float noise (0.99 * 100 = 99.00000000000001) from bumping the rank.
    let rank = (p * n as f64 / 100.0 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Summary of a set of latency samples in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latencies {
    /// Number of samples.
    pub count: usize,
    /// Smallest sample.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
    /// Arithmetic mean.
    pub mean: u64,
}

impl Latencies {
    /// Summarises samples (nanoseconds); sorts them in place.
    pub fn from_samples(samples: &mut [u64]) -> Latencies {
        samples.sort_unstable();
        let count = samples.len();
        let sum: u128 = samples.iter().map(|&s| s as u128).sum();
        Latencies {
            count,
            min: samples.first().copied().unwrap_or(0),
            p50: percentile(samples, 50.0),
            p99: percentile(samples, 99.0),
            p999: percentile(samples, 99.9),
            max: samples.last().copied().unwrap_or(0),
            mean: if count == 0 {
                0
            } else {
                (sum / count as u128) as u64
            },
        }
    }
}

impl std::fmt::Display for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = |ns: u64| ns as f64 / 1000.0;
        write!(
            f,
            "n={} min={:.1}us p50={:.1}us p99={:.1}us p999={:.1}us max={:.1}us mean={:.1}us",
            self.count,
            us(self.min),
            us(self.p50),
            us(self.p99),
            us(self.p999),
            us(self.max),
            us(self.mean)
        )
    }
}

/// Formats a byte count with a binary unit, e.g. `12.3 MiB`.
pub fn human_bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut u = 0;
    while v.abs() >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 99.9), 100);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 99.9), 999);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn latency_summary_sorts() {
        let mut s = vec![5_000, 1_000, 3_000, 2_000, 4_000];
        let l = Latencies::from_samples(&mut s);
        assert_eq!(l.count, 5);
        assert_eq!(
            (l.min, l.p50, l.p99, l.max, l.mean),
            (1000, 3000, 5000, 5000, 3000)
        );
        assert!(l.to_string().contains("p50=3.0us"));
        let l = Latencies::from_samples(&mut []);
        assert_eq!(l.count, 0);
    }

    #[test]
    fn summary_lines() {
        let s = go_summary(Duration::from_secs(2), 1_048_576, 200);
        assert_eq!(
            s,
            "duration: 2s - 100.000mb/s - 524288.000ops/s - 1.907us/op"
        );
        let r = rate_line("published", Duration::from_secs(2), 1000, 200);
        assert_eq!(
            r,
            "published 1000 msgs in 2.000s: 500 msg/s (0.10 MB/s of bodies)"
        );
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
    }
}
