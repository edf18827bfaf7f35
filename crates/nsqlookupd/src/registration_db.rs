//! The registration database: which nsqd produces which topic and channel.
//!
//! This is Go's `nsqlookupd/registration_db.go` as a plain data structure: no locks, no
//! clock, no I/O. Time is a `u64` of monotonic nanoseconds passed in by the caller, so the
//! inactivity and tombstone rules are tested with explicit times. The daemon keeps one
//! `RegistrationDb` behind a mutex that is never held across an `.await`.
//!
//! # Model (as in Go)
//! - A [`Registration`] is `(category, key, subkey)`: `(client, "", "")` for every identified
//!   nsqd, `(topic, <topic>, "")` and `(channel, <topic>, <channel>)`. Each maps to the set of
//!   peers producing it, keyed by peer id (the connection's remote address). A registration
//!   may exist with no producers: HTTP `/topic/create` makes one, and unregistering leaves
//!   one behind (except for `#ephemeral` names, see below).
//! - A peer's [`PeerInfo`] (identity plus last PING time) is shared by all its registrations,
//!   like Go's `*PeerInfo`; the tombstone flag belongs to one (registration, peer) pair, like
//!   Go's per-registration `*Producer`.
//! - Queries take `"*"` as a wildcard for key or subkey (Go's `IsMatch`); valid topic and
//!   channel names cannot contain `*`.
//!
//! # Differences from Go
//! - Results are sorted (registrations by category/key/subkey, producers by peer id) where Go
//!   returns map order, so answers are deterministic.
//! - When a peer disconnects, `#ephemeral` registrations it was the last producer of are
//!   removed, as they are when it UNREGISTERs them. Go only does the latter and lists such
//!   names forever after a disconnect, which makes new nsqds pre-create channels nobody uses.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use nsq_protocol::names::is_ephemeral;

/// Registration category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// An identified nsqd (key and subkey empty).
    Client,
    /// A topic (key = topic, subkey empty).
    Topic,
    /// A channel (key = topic, subkey = channel).
    Channel,
}

impl Category {
    /// Go's category string.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Client => "client",
            Category::Topic => "topic",
            Category::Channel => "channel",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A registration key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Registration {
    /// What is registered.
    pub category: Category,
    /// Topic name (empty for `Client`).
    pub key: String,
    /// Channel name (empty unless `Channel`).
    pub subkey: String,
}

impl Registration {
    /// The registration every identified nsqd gets.
    pub fn client() -> Registration {
        Registration {
            category: Category::Client,
            key: String::new(),
            subkey: String::new(),
        }
    }

    /// A topic registration.
    pub fn topic(topic: &str) -> Registration {
        Registration {
            category: Category::Topic,
            key: topic.to_owned(),
            subkey: String::new(),
        }
    }

    /// A channel registration.
    pub fn channel(topic: &str, channel: &str) -> Registration {
        Registration {
            category: Category::Channel,
            key: topic.to_owned(),
            subkey: channel.to_owned(),
        }
    }

    /// Go's `IsMatch`: same category, and key/subkey equal or `"*"`.
    pub fn is_match(&self, category: Category, key: &str, subkey: &str) -> bool {
        self.category == category
            && (key == "*" || self.key == key)
            && (subkey == "*" || self.subkey == subkey)
    }

    /// Whether dropping its last producer should drop the registration itself.
    fn is_ephemeral(&self) -> bool {
        match self.category {
            Category::Client => false,
            Category::Topic => is_ephemeral(&self.key),
            Category::Channel => is_ephemeral(&self.subkey),
        }
    }
}

impl fmt::Display for Registration {
    /// `category:<c> key:<k> subkey:<s>`, as Go's log lines write it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "category:{} key:{} subkey:{}",
            self.category, self.key, self.subkey
        )
    }
}

/// What lookupd knows about a connected nsqd (Go: `PeerInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer id: the connection's remote address.
    pub id: String,
    /// The connection's remote address (same as `id`; reported as `remote_address`).
    pub remote_address: String,
    /// nsqd's host name.
    pub hostname: String,
    /// Address clients should connect to.
    pub broadcast_address: String,
    /// nsqd's TCP port.
    pub tcp_port: i64,
    /// nsqd's HTTP port.
    pub http_port: i64,
    /// nsqd's version.
    pub version: String,
    /// Topology experiment: zone.
    pub topology_zone: String,
    /// Topology experiment: region.
    pub topology_region: String,
    /// Monotonic time of IDENTIFY or the last PING.
    pub last_update: u64,
}

/// One producer of a registration, as returned by queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Producer<'a> {
    /// The peer.
    pub peer: &'a PeerInfo,
    /// When this producer was tombstoned for this registration, if it was.
    pub tombstoned_at: Option<u64>,
}

impl Producer<'_> {
    /// Go's `IsTombstoned`: tombstoned less than `lifetime` ago.
    pub fn is_tombstoned(&self, now: u64, lifetime: u64) -> bool {
        self.tombstoned_at
            .is_some_and(|at| now.saturating_sub(at) < lifetime)
    }

    /// Whether the peer pinged within `inactivity_timeout` (Go: the first half of
    /// `FilterByActive`).
    pub fn is_active(&self, now: u64, inactivity_timeout: u64) -> bool {
        now.saturating_sub(self.peer.last_update) <= inactivity_timeout
    }
}

/// Per-(registration, peer) state: Go's `Producer` minus the shared `PeerInfo`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ProducerState {
    tombstoned_at: Option<u64>,
}

/// The database.
#[derive(Debug, Default)]
pub struct RegistrationDb {
    registrations: BTreeMap<Registration, BTreeMap<String, ProducerState>>,
    peers: HashMap<String, PeerInfo>,
    /// Bumped by every change of registrations, producers, peers or tombstones (not by
    /// PING's `touch`), so watchers (`/lookup/watch`) know when to look again.
    changes: u64,
}

impl RegistrationDb {
    /// An empty database.
    pub fn new() -> RegistrationDb {
        RegistrationDb::default()
    }

    /// Records an identified peer and adds it to the `client` registration (Go: IDENTIFY's
    /// `AddProducer(Registration{"client", "", ""}, ..)`). Returns whether it was new there.
    pub fn add_peer(&mut self, peer: PeerInfo) -> bool {
        let id = peer.id.clone();
        self.changes += 1;
        self.peers.insert(id.clone(), peer);
        self.add_producer(Registration::client(), &id)
    }

    /// How many changes the database has seen (see the field).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The peer with this id, if connected.
    pub fn peer(&self, id: &str) -> Option<&PeerInfo> {
        self.peers.get(id)
    }

    /// Go's PING: records activity. Returns the previous update time.
    pub fn touch(&mut self, id: &str, now: u64) -> Option<u64> {
        let p = self.peers.get_mut(id)?;
        Some(std::mem::replace(&mut p.last_update, now))
    }

    /// Creates a registration with no producers if it does not exist (HTTP create).
    pub fn add_registration(&mut self, r: Registration) {
        self.changes += 1;
        self.registrations.entry(r).or_default();
    }

    /// Adds a peer as producer of `r` (creating `r`). Returns false if it already was one
    /// (an existing producer keeps its tombstone, as in Go).
    pub fn add_producer(&mut self, r: Registration, peer_id: &str) -> bool {
        let producers = self.registrations.entry(r).or_default();
        if producers.contains_key(peer_id) {
            return false;
        }
        producers.insert(peer_id.to_owned(), ProducerState::default());
        self.changes += 1;
        true
    }

    /// Removes a peer from `r`. Returns whether it was there and how many producers are
    /// left (Go's `RemoveProducer`); the registration itself stays.
    pub fn remove_producer(&mut self, r: &Registration, peer_id: &str) -> (bool, usize) {
        match self.registrations.get_mut(r) {
            None => (false, 0),
            Some(producers) => {
                let removed = producers.remove(peer_id).is_some();
                self.changes += u64::from(removed);
                (removed, producers.len())
            }
        }
    }

    /// Removes `r` and all its producers.
    pub fn remove_registration(&mut self, r: &Registration) -> bool {
        self.changes += 1;
        self.registrations.remove(r).is_some()
    }

    /// Go's UNREGISTER, for a peer: with a channel, drops the peer from that channel (and
    /// the channel registration if `#ephemeral` and now empty); without, drops it from every
    /// channel of the topic and from the topic (and the topic registration if `#ephemeral`
    /// and now empty). Returns the registrations the peer was removed from.
    pub fn unregister(
        &mut self,
        peer_id: &str,
        topic: &str,
        channel: Option<&str>,
    ) -> Vec<Registration> {
        let mut removed = Vec::new();
        let last = match channel {
            Some(ch) => Registration::channel(topic, ch),
            None => {
                // Go removes the peer from the topic's channels without dropping ephemeral
                // channel registrations here (nsqd unregisters channels one by one first).
                for r in self.find_registrations(Category::Channel, topic, "*") {
                    if self.remove_producer(&r, peer_id).0 {
                        removed.push(r);
                    }
                }
                Registration::topic(topic)
            }
        };
        let (was, left) = self.remove_producer(&last, peer_id);
        if left == 0 && last.is_ephemeral() {
            self.remove_registration(&last);
        }
        if was {
            removed.push(last);
        }
        removed
    }

    /// A peer disconnected: removes it from every registration (dropping `#ephemeral` ones
    /// left without producers) and forgets it. Returns the registrations it was removed from.
    pub fn remove_peer(&mut self, peer_id: &str) -> Vec<Registration> {
        let regs = self.lookup_registrations(peer_id);
        for r in &regs {
            let (_, left) = self.remove_producer(r, peer_id);
            if left == 0 && r.is_ephemeral() {
                self.remove_registration(r);
            }
        }
        self.peers.remove(peer_id);
        self.changes += 1;
        regs
    }

    /// Go's `FindRegistrations` (with `"*"` wildcards), sorted.
    pub fn find_registrations(
        &self,
        category: Category,
        key: &str,
        subkey: &str,
    ) -> Vec<Registration> {
        if key != "*" && subkey != "*" {
            let r = Registration {
                category,
                key: key.to_owned(),
                subkey: subkey.to_owned(),
            };
            return if self.registrations.contains_key(&r) {
                vec![r]
            } else {
                Vec::new()
            };
        }
        self.registrations
            .keys()
            .filter(|r| r.is_match(category, key, subkey))
            .cloned()
            .collect()
    }

    /// Go's `FindProducers`: the producers of every matching registration, de-duplicated by
    /// peer id (the first match's tombstone wins), sorted by peer id.
    pub fn find_producers(&self, category: Category, key: &str, subkey: &str) -> Vec<Producer<'_>> {
        let mut seen: BTreeMap<&str, Producer<'_>> = BTreeMap::new();
        for (r, producers) in &self.registrations {
            if !r.is_match(category, key, subkey) {
                continue;
            }
            for (id, state) in producers {
                let Some(peer) = self.peers.get(id) else {
                    continue;
                };
                seen.entry(id.as_str()).or_insert(Producer {
                    peer,
                    tombstoned_at: state.tombstoned_at,
                });
            }
        }
        seen.into_values().collect()
    }

    /// Go's `FindProducers(..).FilterByActive(timeout, lifetime)`: producers that pinged
    /// within `inactivity_timeout` and are not tombstoned (within `tombstone_lifetime`).
    pub fn find_active_producers(
        &self,
        category: Category,
        key: &str,
        subkey: &str,
        now: u64,
        inactivity_timeout: u64,
        tombstone_lifetime: u64,
    ) -> Vec<Producer<'_>> {
        let mut v = self.find_producers(category, key, subkey);
        v.retain(|p| {
            p.is_active(now, inactivity_timeout) && !p.is_tombstoned(now, tombstone_lifetime)
        });
        v
    }

    /// Go's `LookupRegistrations`: every registration the peer produces, sorted.
    pub fn lookup_registrations(&self, peer_id: &str) -> Vec<Registration> {
        self.registrations
            .iter()
            .filter(|(_, producers)| producers.contains_key(peer_id))
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// Go's `/topic/tombstone`: tombstones (at `now`) the producers of `topic` whose
    /// `broadcast_address:http_port` equals `node`. Returns how many were tombstoned.
    pub fn tombstone(&mut self, topic: &str, node: &str, now: u64) -> usize {
        let Some(producers) = self.registrations.get_mut(&Registration::topic(topic)) else {
            return 0;
        };
        let mut n = 0;
        for (id, state) in producers.iter_mut() {
            let Some(peer) = self.peers.get(id) else {
                continue;
            };
            if format!("{}:{}", peer.broadcast_address, peer.http_port) == node {
                state.tombstoned_at = Some(now);
                n += 1;
            }
        }
        self.changes += n as u64;
        n
    }

    /// Every registration with its producers (for `/debug`), sorted.
    pub fn dump(&self) -> impl Iterator<Item = (&Registration, Vec<Producer<'_>>)> {
        self.registrations.iter().map(|(r, producers)| {
            let list = producers
                .iter()
                .filter_map(|(id, state)| {
                    Some(Producer {
                        peer: self.peers.get(id)?,
                        tombstoned_at: state.tombstoned_at,
                    })
                })
                .collect();
            (r, list)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn peer(id: &str, http_port: i64, now: u64) -> PeerInfo {
        PeerInfo {
            id: id.into(),
            remote_address: id.into(),
            hostname: "host".into(),
            broadcast_address: "bcast".into(),
            tcp_port: 4150,
            http_port,
            version: "1.3.0".into(),
            last_update: now,
            ..Default::default()
        }
    }

    fn ids(ps: &[Producer<'_>]) -> Vec<String> {
        ps.iter().map(|p| p.peer.id.clone()).collect()
    }

    fn keys(rs: &[Registration]) -> Vec<String> {
        rs.iter()
            .map(|r| format!("{}:{}:{}", r.category, r.key, r.subkey))
            .collect()
    }

    #[test]
    fn register_find_and_dedupe() {
        let mut db = RegistrationDb::new();
        assert!(db.add_peer(peer("a:1", 4151, 0)));
        assert!(db.add_peer(peer("b:1", 4152, 0)));
        assert!(db.add_producer(Registration::topic("t"), "a:1"));
        assert!(!db.add_producer(Registration::topic("t"), "a:1"));
        db.add_producer(Registration::channel("t", "c1"), "a:1");
        db.add_producer(Registration::channel("t", "c2"), "b:1");
        db.add_producer(Registration::topic("t"), "b:1");
        db.add_registration(Registration::topic("empty"));

        assert_eq!(
            keys(&db.find_registrations(Category::Topic, "*", "")),
            ["topic:empty:", "topic:t:"]
        );
        assert_eq!(
            keys(&db.find_registrations(Category::Channel, "t", "*")),
            ["channel:t:c1", "channel:t:c2"]
        );
        assert!(db
            .find_registrations(Category::Topic, "nope", "")
            .is_empty());
        assert_eq!(
            ids(&db.find_producers(Category::Topic, "t", "")),
            ["a:1", "b:1"]
        );
        assert_eq!(
            ids(&db.find_producers(Category::Channel, "t", "*")),
            ["a:1", "b:1"]
        );
        assert!(db.find_producers(Category::Topic, "empty", "").is_empty());
        assert_eq!(
            keys(&db.lookup_registrations("a:1")),
            ["client::", "topic:t:", "channel:t:c1"]
        );
    }

    #[test]
    fn unregister_leaves_registrations_except_ephemeral() {
        let mut db = RegistrationDb::new();
        db.add_peer(peer("a:1", 4151, 0));
        db.add_peer(peer("b:1", 4152, 0));
        for p in ["a:1", "b:1"] {
            db.add_producer(Registration::topic("t"), p);
            db.add_producer(Registration::channel("t", "c"), p);
            db.add_producer(Registration::channel("t", "e#ephemeral"), p);
        }
        // Channel form: one producer left, the ephemeral channel stays.
        assert_eq!(
            keys(&db.unregister("a:1", "t", Some("e#ephemeral"))),
            ["channel:t:e#ephemeral"]
        );
        assert_eq!(db.find_registrations(Category::Channel, "t", "*").len(), 2);
        // The last producer goes: the ephemeral channel goes too, a normal one stays.
        db.unregister("b:1", "t", Some("e#ephemeral"));
        db.unregister("b:1", "t", Some("c"));
        db.unregister("a:1", "t", Some("c"));
        assert_eq!(
            keys(&db.find_registrations(Category::Channel, "t", "*")),
            ["channel:t:c"]
        );
        // Unregistering something not registered is a no-op.
        assert!(db.unregister("a:1", "t", Some("c")).is_empty());

        // Topic form removes the peer from the topic and all its channels.
        db.add_producer(Registration::channel("t", "c"), "a:1");
        assert_eq!(
            keys(&db.unregister("a:1", "t", None)),
            ["channel:t:c", "topic:t:"]
        );
        assert_eq!(ids(&db.find_producers(Category::Topic, "t", "")), ["b:1"]);
        db.unregister("b:1", "t", None);
        assert_eq!(
            keys(&db.find_registrations(Category::Topic, "*", "")),
            ["topic:t:"]
        );

        // Ephemeral topic registrations go with their last producer.
        db.add_producer(Registration::topic("x#ephemeral"), "a:1");
        db.unregister("a:1", "x#ephemeral", None);
        assert!(db
            .find_registrations(Category::Topic, "x#ephemeral", "")
            .is_empty());
    }

    #[test]
    fn disconnect_removes_everything_of_the_peer() {
        let mut db = RegistrationDb::new();
        db.add_peer(peer("a:1", 4151, 0));
        db.add_peer(peer("b:1", 4152, 0));
        db.add_producer(Registration::topic("t"), "a:1");
        db.add_producer(Registration::channel("t", "c"), "a:1");
        db.add_producer(Registration::topic("t#ephemeral"), "a:1");
        db.add_producer(Registration::channel("t", "e#ephemeral"), "a:1");
        db.add_producer(Registration::topic("t"), "b:1");
        let removed = db.remove_peer("a:1");
        assert_eq!(removed.len(), 5);
        assert!(db.peer("a:1").is_none());
        assert_eq!(ids(&db.find_producers(Category::Client, "", "")), ["b:1"]);
        assert_eq!(ids(&db.find_producers(Category::Topic, "t", "")), ["b:1"]);
        // Plain registrations stay (Go), ephemeral ones go.
        assert_eq!(
            keys(&db.find_registrations(Category::Topic, "*", "")),
            ["topic:t:"]
        );
        assert_eq!(
            keys(&db.find_registrations(Category::Channel, "*", "*")),
            ["channel:t:c"]
        );
        assert!(db.find_producers(Category::Channel, "t", "c").is_empty());
    }

    #[test]
    fn inactivity_and_ping() {
        let mut db = RegistrationDb::new();
        db.add_peer(peer("a:1", 4151, 0));
        db.add_producer(Registration::topic("t"), "a:1");
        let active = |db: &RegistrationDb, now| {
            ids(&db.find_active_producers(Category::Topic, "t", "", now, 10 * SEC, 45 * SEC))
        };
        assert_eq!(active(&db, 10 * SEC), ["a:1"]);
        assert!(active(&db, 10 * SEC + 1).is_empty());
        assert_eq!(db.touch("a:1", 10 * SEC), Some(0));
        assert_eq!(active(&db, 20 * SEC), ["a:1"]);
        assert_eq!(db.touch("nobody", 0), None);
    }

    #[test]
    fn tombstones_expire_and_are_per_topic() {
        let mut db = RegistrationDb::new();
        db.add_peer(peer("a:1", 4151, 0));
        db.add_peer(peer("b:1", 4152, 0));
        for p in ["a:1", "b:1"] {
            db.add_producer(Registration::topic("t"), p);
            db.add_producer(Registration::topic("u"), p);
        }
        assert_eq!(db.tombstone("t", "bcast:4151", 5 * SEC), 1);
        assert_eq!(db.tombstone("t", "bcast:9999", 5 * SEC), 0);
        assert_eq!(db.tombstone("missing", "bcast:4151", 5 * SEC), 0);
        let active = |db: &RegistrationDb, topic, now| {
            ids(&db.find_active_producers(Category::Topic, topic, "", now, 100 * SEC, 45 * SEC))
        };
        assert_eq!(active(&db, "t", 5 * SEC), ["b:1"]);
        assert_eq!(active(&db, "u", 5 * SEC), ["a:1", "b:1"]);
        assert_eq!(active(&db, "t", 50 * SEC - 1), ["b:1"]);
        assert_eq!(active(&db, "t", 50 * SEC), ["a:1", "b:1"]);
        // Re-registering keeps the tombstone; unregister + register clears it.
        db.add_producer(Registration::topic("t"), "a:1");
        assert_eq!(active(&db, "t", 6 * SEC), ["b:1"]);
        db.unregister("a:1", "t", None);
        db.add_producer(Registration::topic("t"), "a:1");
        assert_eq!(active(&db, "t", 6 * SEC), ["a:1", "b:1"]);
        // The tombstone flag is visible to /nodes-style queries.
        db.tombstone("u", "bcast:4152", 7 * SEC);
        let u = db.find_producers(Category::Topic, "u", "");
        assert_eq!(u[1].tombstoned_at, Some(7 * SEC));
        assert!(u[1].is_tombstoned(8 * SEC, 45 * SEC));
        assert!(!u[0].is_tombstoned(8 * SEC, 45 * SEC));
    }

    #[test]
    fn dump_lists_producers_per_registration() {
        let mut db = RegistrationDb::new();
        db.add_peer(peer("a:1", 4151, 3));
        db.add_producer(Registration::topic("t"), "a:1");
        db.add_registration(Registration::topic("empty"));
        let d: Vec<(String, Vec<String>)> =
            db.dump().map(|(r, ps)| (r.to_string(), ids(&ps))).collect();
        assert_eq!(
            d,
            [
                (
                    "category:client key: subkey:".to_string(),
                    vec!["a:1".to_string()]
                ),
                ("category:topic key:empty subkey:".to_string(), vec![]),
                (
                    "category:topic key:t subkey:".to_string(),
                    vec!["a:1".to_string()]
                ),
            ]
        );
    }
}
