//! `GET /metrics`: nsqlookupd's registrations for Prometheus (an nsq-rs extension). The
//! exposition, build info and `process_*` metrics are shared in [`nsq_http::metrics`]; the
//! figures here are read from the registration database at scrape time ([`Snapshot`], taken
//! under the database lock, which is released before anything is written):
//! - `nsq_lookupd_producers`: distinct nsqd nodes that are identified and active (pinged
//!   within `--inactive-producer-timeout`), as `/nodes` lists them;
//! - `nsq_lookupd_topics`, `nsq_lookupd_channels`: topic and channel registrations (with or
//!   without producers, as `/topics` and `/channels` list them);
//! - `nsq_lookupd_topic_producers{topic}`: the producers `/lookup?topic=` answers with
//!   (active and not tombstoned);
//! - `nsq_build_info{daemon="nsqlookupd",...}`, `nsq_start_time_seconds`, `process_*`.
//!
//! nsqlookupd has no `--http-api-token`, so `/metrics` is as open as the rest of its API.

use std::fmt;
use std::sync::Arc;

use nsq_http::metrics::{gauge, gauge_family, Collector, DescriptorEncoder, Registry};

use crate::registration_db::{Category, RegistrationDb};
use crate::Nsqlookupd;

/// The registry `/metrics` serves.
pub fn registry(lookupd: &Arc<Nsqlookupd>) -> Registry {
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut r = nsq_http::metrics::daemon_registry("nsqlookupd", nsq_protocol::NSQ_VERSION, start);
    r.register_collector(Box::new(LookupdCollector(lookupd.clone())));
    r
}

/// The registration figures, read at each scrape.
pub struct LookupdCollector(pub Arc<Nsqlookupd>);

impl fmt::Debug for LookupdCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LookupdCollector")
    }
}

/// What `/metrics` reports, copied out of the database.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Active identified nodes.
    pub producers: usize,
    /// Topic registrations.
    pub topics: usize,
    /// Channel registrations.
    pub channels: usize,
    /// Per topic (sorted by name): producers `/lookup` would return.
    pub topic_producers: Vec<(String, usize)>,
}

impl Snapshot {
    /// Reads `db` at monotonic time `now` with the daemon's timeout and tombstone lifetime
    /// (nanoseconds).
    pub fn read(db: &RegistrationDb, now: u64, inactive_timeout: u64, lifetime: u64) -> Snapshot {
        let mut s = Snapshot::default();
        for (r, producers) in db.dump() {
            let live = || {
                producers
                    .iter()
                    .filter(|p| p.is_active(now, inactive_timeout))
            };
            match r.category {
                Category::Client => s.producers += live().count(),
                Category::Topic => {
                    s.topics += 1;
                    let n = live().filter(|p| !p.is_tombstoned(now, lifetime)).count();
                    s.topic_producers.push((r.key.clone(), n));
                }
                Category::Channel => s.channels += 1,
            }
        }
        s
    }
}

impl Collector for LookupdCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let l = &self.0;
        let s = Snapshot::read(
            &l.db(),
            l.clock.now(),
            l.inactive_producer_timeout(),
            l.tombstone_lifetime(),
        );
        let e = &mut enc;
        gauge(
            e,
            "nsq_lookupd_producers",
            "Active nsqd nodes registered with this nsqlookupd.",
            None,
            s.producers,
        )?;
        gauge(
            e,
            "nsq_lookupd_topics",
            "Registered topics.",
            None,
            s.topics,
        )?;
        gauge(
            e,
            "nsq_lookupd_channels",
            "Registered channels, over all topics.",
            None,
            s.channels,
        )?;
        gauge_family(
            e,
            "nsq_lookupd_topic_producers",
            "Producers of the topic that /lookup returns (active, not tombstoned).",
            None,
            s.topic_producers
                .iter()
                .map(|(t, n)| ([("topic", t.as_str())], *n)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registration_db::{PeerInfo, Registration};

    fn peer(id: &str, last_update: u64) -> PeerInfo {
        PeerInfo {
            id: id.into(),
            remote_address: id.into(),
            broadcast_address: "h".into(),
            http_port: i64::from(id.len() as u8),
            last_update,
            ..PeerInfo::default()
        }
    }

    #[test]
    fn counts_active_nodes_and_lookup_producers() {
        let mut db = RegistrationDb::new();
        db.add_peer(peer("a:1", 100));
        db.add_peer(peer("bb:2", 100));
        db.add_peer(peer("stale:3", 0));
        for p in ["a:1", "bb:2", "stale:3"] {
            db.add_producer(Registration::topic("orders"), p);
        }
        db.add_producer(Registration::channel("orders", "billing"), "a:1");
        db.add_registration(Registration::topic("empty"));
        // bb:2's broadcast address and HTTP port are "h:4".
        assert_eq!(db.tombstone("orders", "h:4", 100), 1);
        let s = Snapshot::read(&db, 100, 50, 1_000);
        assert_eq!(
            s,
            Snapshot {
                producers: 2,
                topics: 2,
                channels: 1,
                topic_producers: vec![("empty".into(), 0), ("orders".into(), 1)],
            }
        );
        // Once the tombstone expires, bb:2 is a producer of orders again.
        assert_eq!(
            Snapshot::read(&db, 1_200, 2_000, 1_000).topic_producers[1],
            ("orders".into(), 3)
        );
    }
}
