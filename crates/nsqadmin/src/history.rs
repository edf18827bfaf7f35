//! Rates and depth trends without graphite: a background sampler reads the cluster's `/stats`
//! every `--stats-sample-interval` and keeps, per topic and per channel, a bounded ring of
//! `(time, message_count, depth, in_flight)` samples, from which the API derives messages/s.
//!
//! Why in nsqadmin: Go nsqadmin draws rates only from graphite (fed by nsqd's statsd), which
//! most small deployments do not run. Sampling here needs nothing but the daemons.
//!
//! Cost, per tick: one `/nodes` per lookupd and one `/stats?include_clients=false` per nsqd
//! (the pages' own reads are unchanged), parsed once and folded into a map. Memory: a sample
//! is [`SAMPLE_BYTES`] (32) bytes, so a series holds `--stats-sample-count` (60) × 32 B ≈ 1.9 KiB
//! plus its name and map entry; 1,000 topics with one channel each are 2,000 series ≈ 4 MiB.
//!
//! A node that fails during a tick contributes nothing to that tick's sums, so counters may
//! dip; a negative delta is reported as no rate (`null`) rather than as a negative rate.
//! Series of topics and channels that are gone are dropped, but only after a tick in which
//! every node answered (a dead node must not wipe the history of what it holds).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::model::NsqdStats;

/// One sample of one topic or channel, summed over the nodes that answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Unix time of the tick, in milliseconds.
    pub ts_ms: i64,
    /// Messages received so far (nsqd's `message_count`).
    pub message_count: i64,
    /// Memory + backend depth.
    pub depth: i64,
    /// Messages in flight (channels; 0 for topics).
    pub in_flight: i64,
}

/// Bytes per stored sample (documented memory bound).
pub const SAMPLE_BYTES: usize = std::mem::size_of::<Sample>();

/// A sample as the API shows it, with the rate since the previous one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// Unix time, milliseconds.
    pub ts: i64,
    /// `message_count` at that time.
    pub message_count: i64,
    /// Depth at that time.
    pub depth: i64,
    /// In flight at that time (channels).
    pub in_flight_count: i64,
    /// Messages/s since the previous sample (`null` for the first one, or after a counter
    /// went backwards: a node restarted or did not answer).
    pub rate: Option<f64>,
}

/// Latest figures of one topic, for the topics list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latest {
    /// Messages/s over the last interval.
    pub rate: Option<f64>,
    /// Depth at the last sample.
    pub depth: i64,
    /// `message_count` at the last sample.
    pub message_count: i64,
}

#[derive(Debug, Default)]
struct TopicSeries {
    samples: VecDeque<Sample>,
    channels: HashMap<String, VecDeque<Sample>>,
}

/// What one tick measured: per topic its sample and its channels' samples.
pub type Tick = HashMap<String, (Sample, HashMap<String, Sample>)>;

/// The rings, shared between the sampler task and the HTTP handlers.
#[derive(Debug)]
pub struct History {
    /// Time between samples.
    pub interval: Duration,
    /// Samples kept per series.
    pub capacity: usize,
    series: Mutex<HashMap<String, TopicSeries>>,
}

fn push(ring: &mut VecDeque<Sample>, s: Sample, capacity: usize) {
    while ring.len() >= capacity {
        ring.pop_front();
    }
    ring.push_back(s);
}

/// Points (with rates) of samples in time order.
pub fn points<'a>(ring: impl IntoIterator<Item = &'a Sample>) -> Vec<Point> {
    let ring = ring.into_iter();
    let mut out = Vec::with_capacity(ring.size_hint().0);
    let mut prev: Option<&Sample> = None;
    for s in ring {
        out.push(Point {
            ts: s.ts_ms,
            message_count: s.message_count,
            depth: s.depth,
            in_flight_count: s.in_flight,
            rate: prev.and_then(|p| rate(p, s)),
        });
        prev = Some(s);
    }
    out
}

/// Messages/s from `a` to `b`, if the counter did not go backwards.
pub fn rate(a: &Sample, b: &Sample) -> Option<f64> {
    let dt = b.ts_ms - a.ts_ms;
    let dm = b.message_count - a.message_count;
    // Sample times and counts are far below 2^52: the casts are exact.
    #[allow(clippy::cast_precision_loss)]
    (dt > 0 && dm >= 0).then(|| (dm as f64) * 1000.0 / (dt as f64))
}

impl History {
    /// Empty rings; `capacity` is at least 2 (a rate needs two samples).
    pub fn new(interval: Duration, capacity: usize) -> History {
        History {
            interval,
            capacity: capacity.max(2),
            series: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TopicSeries>> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one tick. `complete` (every node answered) allows dropping the series of
    /// topics and channels that no longer exist.
    pub fn record(&self, tick: Tick, complete: bool) {
        let cap = self.capacity;
        let mut series = self.lock();
        if complete {
            series.retain(|t, _| tick.contains_key(t));
        }
        for (topic, (sample, channels)) in tick {
            let ts = series.entry(topic).or_default();
            push(&mut ts.samples, sample, cap);
            if complete {
                ts.channels.retain(|c, _| channels.contains_key(c));
            }
            for (name, s) in channels {
                push(ts.channels.entry(name).or_default(), s, cap);
            }
        }
    }

    /// A topic's points and its channels' points (empty if never sampled).
    pub fn topic(&self, topic: &str) -> (Vec<Point>, Vec<(String, Vec<Point>)>) {
        let series = self.lock();
        let Some(ts) = series.get(topic) else {
            return (Vec::new(), Vec::new());
        };
        let mut channels: Vec<(String, Vec<Point>)> = ts
            .channels
            .iter()
            .map(|(c, r)| (c.clone(), points(r)))
            .collect();
        channels.sort_by(|a, b| a.0.cmp(&b.0));
        (points(&ts.samples), channels)
    }

    /// A channel's points (empty if never sampled).
    pub fn channel(&self, topic: &str, channel: &str) -> Vec<Point> {
        self.lock()
            .get(topic)
            .and_then(|t| t.channels.get(channel))
            .map(points)
            .unwrap_or_default()
    }

    /// Every topic's latest rate and depth.
    pub fn latest(&self) -> Vec<(String, Latest)> {
        let series = self.lock();
        let mut out: Vec<(String, Latest)> = series
            .iter()
            .filter_map(|(t, s)| {
                let last = s.samples.back()?;
                let prev = s.samples.len().checked_sub(2).map(|i| &s.samples[i]);
                Some((
                    t.clone(),
                    Latest {
                        rate: prev.and_then(|p| rate(p, last)),
                        depth: last.depth,
                        message_count: last.message_count,
                    },
                ))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Number of series (topics + channels) and samples held, for tests and logs.
    pub fn size(&self) -> (usize, usize) {
        let series = self.lock();
        let mut n = 0;
        let mut samples = 0;
        for t in series.values() {
            n += 1 + t.channels.len();
            samples += t.samples.len() + t.channels.values().map(VecDeque::len).sum::<usize>();
        }
        (n, samples)
    }
}

fn count(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Sums every node's `/stats` into one tick at `ts_ms`.
pub fn fold(stats: &[NsqdStats], ts_ms: i64) -> Tick {
    let mut tick: Tick = HashMap::new();
    for s in stats {
        for t in s.topics.iter().flatten() {
            let (ts, chans) = tick.entry(t.topic_name.clone()).or_insert_with(|| {
                (
                    Sample {
                        ts_ms,
                        message_count: 0,
                        depth: 0,
                        in_flight: 0,
                    },
                    HashMap::new(),
                )
            });
            ts.message_count += count(t.message_count);
            ts.depth += count(t.depth);
            for c in &t.channels {
                let cs = chans.entry(c.channel_name.clone()).or_insert(Sample {
                    ts_ms,
                    message_count: 0,
                    depth: 0,
                    in_flight: 0,
                });
                cs.message_count += count(c.message_count);
                cs.depth += count(c.depth);
                cs.in_flight += count(c.in_flight_count);
            }
        }
    }
    tick
}

/// Runs the sampler until `stop` is cancelled: one tick at once, then every interval.
pub async fn run(
    admin: Arc<crate::Admin>,
    history: Arc<History>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut ticker = tokio::time::interval(history.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let started = std::time::Instant::now();
        let (stats, complete) = admin.cluster().all_stats().await;
        let ts_ms = crate::now_ms();
        history.record(fold(&stats, ts_ms), complete);
        tracing::debug!(
            "sampler: {} nodes in {:?}, {:?} series/samples held",
            stats.len(),
            started.elapsed(),
            history.size()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(json: &str) -> NsqdStats {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn rings_are_bounded_and_rates_derived() {
        let h = History::new(Duration::from_secs(1), 3);
        for i in 0..5i64 {
            let a = stats(&format!(
                r#"{{"topics":[{{"topic_name":"t","message_count":{},"depth":{i},
                "channels":[{{"channel_name":"c","message_count":{},"depth":1,"in_flight_count":2}}]}}]}}"#,
                i * 10,
                i * 10
            ));
            let b = stats(r#"{"topics":[{"topic_name":"t","message_count":5,"depth":1}]}"#);
            h.record(fold(&[a, b], 1000 * i), true);
        }
        let (pts, chans) = h.topic("t");
        assert_eq!(pts.len(), 3);
        assert_eq!(pts[0].rate, None);
        assert_eq!(pts[2].rate, Some(10.0));
        assert_eq!(pts[2].message_count, 45);
        assert_eq!(pts[2].depth, 5);
        assert_eq!(chans.len(), 1);
        assert_eq!(chans[0].1[2].in_flight_count, 2);
        assert_eq!(h.channel("t", "c").len(), 3);
        assert_eq!(h.latest()[0].1.rate, Some(10.0));
        assert_eq!(h.size(), (2, 6));
        // A counter that goes backwards has no rate.
        let back = stats(r#"{"topics":[{"topic_name":"t","message_count":1}]}"#);
        h.record(fold(&[back], 9000), false);
        assert_eq!(h.latest()[0].1.rate, None);
        // An incomplete tick keeps series it did not see; a complete one drops them.
        h.record(fold(&[], 10_000), false);
        assert_eq!(h.size().0, 2);
        h.record(fold(&[], 11_000), true);
        assert_eq!(h.size(), (0, 0));
        assert!(h.topic("t").0.is_empty());
        assert_eq!(SAMPLE_BYTES, 32);
    }
}
