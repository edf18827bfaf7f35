//! RDY management for a consumer's connections, without I/O (time is always a parameter).
//!
//! nsqd treats a connection's RDY as a window: it sends while `in_flight < RDY`. This module
//! decides which RDY each connection should have, following the NSQ client contract
//! ("Building Client Libraries") and go-nsq's `consumer.go`:
//!
//! - every new connection starts at RDY 1 and is raised to its share once it has received a
//!   message;
//! - `max_in_flight` is split over the connections (each at least 1, the remainder going to
//!   the first ones), never above the server's `max_rdy_count`;
//! - with more connections than `max_in_flight`, RDY 1 rotates: a connection that received
//!   nothing for `low_rdy_idle_timeout` gives its RDY to the next waiting connection;
//! - RDY is re-sent when the count of messages received since the last RDY leaves less than
//!   25% of it (for servers that treat RDY as a decrementing credit);
//! - backoff (go-nsq `startStopContinueBackoff`): a requeue with backoff raises the backoff
//!   level and sets every connection to RDY 0 for `backoff_multiplier × 2^level` (capped at
//!   `max_backoff_duration`); then one connection gets RDY 1 as a probe; each success lowers
//!   the level (pausing again while it is above 0), and at level 0 the normal RDY returns.
//!   Signals arriving while paused are ignored, as in go-nsq.
//!
//! Raising RDY is budgeted: a connection holds `max(rdy, in_flight)` of `max_in_flight`, and
//! after its RDY was lowered it keeps holding the old value for a grace period
//! (`output_buffer_timeout` + 100 ms), because nsqd may still deliver messages it sent
//! before reading the lower RDY. So moving RDY from one connection to another does not let
//! the number of messages in flight exceed `max_in_flight`.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// Identifies one connection of a consumer.
pub(crate) type ConnId = u64;

/// How the application answered a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `FIN`: a success for backoff purposes.
    Finish,
    /// `REQ`: a failure when `backoff`, neutral otherwise.
    Requeue {
        /// Whether the requeue should trigger backoff.
        backoff: bool,
    },
}

/// The tunables the controller needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) backoff_multiplier: Duration,
    pub(crate) max_backoff_duration: Duration,
    pub(crate) low_rdy_idle_timeout: Duration,
    /// How long a lowered RDY still counts at its old value: messages nsqd sent before it
    /// read the lower RDY may still be in its output buffer (up to `output_buffer_timeout`)
    /// or on the wire.
    pub(crate) lower_grace: Duration,
}

#[derive(Debug, Clone)]
struct ConnRdy {
    rdy: u64,
    in_flight: u64,
    max_rdy: u64,
    since_rdy: u64,
    got_message: bool,
    last_active: Instant,
    /// After lowering: the previous RDY and until when it still counts.
    lowered: Option<(u64, Instant)>,
}

impl ConnRdy {
    /// How much of `max_in_flight` this connection may hold at `now`.
    fn committed(&self, now: Instant) -> u64 {
        let old = match self.lowered {
            Some((old, until)) if now < until => old,
            _ => 0,
        };
        self.rdy.max(self.in_flight).max(old)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Normal,
    /// Every connection is at RDY 0 until `until`.
    Waiting {
        until: Instant,
    },
    /// One connection at a time has RDY 1.
    Probing,
}

/// RDY updates to send: `(connection, count)`.
pub(crate) type Actions = Vec<(ConnId, u64)>;

/// The RDY state of all connections of one consumer.
#[derive(Debug)]
pub(crate) struct RdyController {
    max_in_flight: u64,
    settings: Settings,
    conns: BTreeMap<ConnId, ConnRdy>,
    backoff_level: u32,
    state: State,
    /// Rotation: candidates are considered starting after this id.
    cursor: ConnId,
}

impl RdyController {
    pub(crate) fn new(max_in_flight: u64, settings: Settings) -> RdyController {
        RdyController {
            max_in_flight,
            settings,
            conns: BTreeMap::new(),
            backoff_level: 0,
            state: State::Normal,
            cursor: 0,
        }
    }

    /// A connection finished its handshake and SUB; `max_rdy` is the server's
    /// `max_rdy_count`.
    pub(crate) fn add_conn(&mut self, id: ConnId, max_rdy: u64, now: Instant) -> Actions {
        self.conns.insert(
            id,
            ConnRdy {
                rdy: 0,
                in_flight: 0,
                max_rdy,
                since_rdy: 0,
                got_message: false,
                last_active: now,
                lowered: None,
            },
        );
        self.rebalance(now)
    }

    /// A connection closed (its in-flight messages are nsqd's problem now).
    pub(crate) fn remove_conn(&mut self, id: ConnId, now: Instant) -> Actions {
        if self.conns.remove(&id).is_none() {
            return Vec::new();
        }
        self.rebalance(now)
    }

    /// A message arrived on `id`.
    pub(crate) fn on_message(&mut self, id: ConnId, now: Instant) -> Actions {
        let Some(c) = self.conns.get_mut(&id) else {
            return Vec::new();
        };
        c.in_flight += 1;
        c.since_rdy += 1;
        c.last_active = now;
        if !c.got_message {
            c.got_message = true;
            return self.rebalance(now);
        }
        let mut actions = Vec::new();
        if c.rdy > 0 && c.rdy.saturating_sub(c.since_rdy) <= c.rdy / 4 {
            c.since_rdy = 0;
            actions.push((id, c.rdy));
        }
        actions
    }

    /// The application finished or requeued a message received on `id`.
    pub(crate) fn on_response(&mut self, id: ConnId, outcome: Outcome, now: Instant) -> Actions {
        if let Some(c) = self.conns.get_mut(&id) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
        if !matches!(self.state, State::Waiting { .. }) {
            let mut updated = false;
            match outcome {
                Outcome::Finish => {
                    if self.backoff_level > 0 {
                        self.backoff_level -= 1;
                        updated = true;
                    }
                }
                Outcome::Requeue { backoff: true } => {
                    if self.backoff_duration(self.backoff_level + 1)
                        <= self.settings.max_backoff_duration
                    {
                        self.backoff_level += 1;
                        updated = true;
                    }
                }
                Outcome::Requeue { backoff: false } => {}
            }
            if self.backoff_level == 0 && updated {
                tracing::info!("exiting backoff");
                self.state = State::Normal;
            } else if self.backoff_level > 0 {
                let d = self
                    .backoff_duration(self.backoff_level)
                    .min(self.settings.max_backoff_duration);
                tracing::warn!(
                    level = self.backoff_level,
                    "backing off for {d:?}, setting all connections to RDY 0"
                );
                self.state = State::Waiting { until: now + d };
            }
        }
        self.rebalance(now)
    }

    /// Changes `max_in_flight` (0 pauses consumption).
    pub(crate) fn set_max_in_flight(&mut self, n: u64, now: Instant) -> Actions {
        self.max_in_flight = n;
        self.rebalance(now)
    }

    /// When [`RdyController::on_timeout`] should next be called.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let grace = self
            .conns
            .values()
            .filter_map(|c| c.lowered.map(|(_, t)| t))
            .min();
        let other = if let State::Waiting { until } = self.state {
            Some(until)
        } else {
            let limit = self.limit();
            if limit == 0
                || (self.conns.len() as u64) <= limit
                || !self.conns.values().any(|c| c.rdy == 0)
            {
                None
            } else {
                self.conns
                    .values()
                    .filter(|c| c.rdy > 0)
                    .map(|c| c.last_active + self.settings.low_rdy_idle_timeout)
                    .min()
            }
        };
        match (grace, other) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time passed: ends a backoff pause, rotates RDY away from idle connections.
    pub(crate) fn on_timeout(&mut self, now: Instant) -> Actions {
        for c in self.conns.values_mut() {
            if c.lowered.is_some_and(|(_, until)| now >= until) {
                c.lowered = None;
            }
        }
        if let State::Waiting { until } = self.state {
            if now >= until {
                self.state = State::Probing;
            }
        }
        self.rebalance(now)
    }

    /// Total RDY currently assigned (for tests and stats).
    #[cfg(test)]
    fn total_rdy(&self) -> u64 {
        self.conns.values().map(|c| c.rdy).sum()
    }

    #[cfg(test)]
    fn rdy_of(&self, id: ConnId) -> u64 {
        self.conns[&id].rdy
    }

    fn backoff_duration(&self, level: u32) -> Duration {
        // go-nsq ExponentialStrategy: multiplier × 2^level.
        self.settings
            .backoff_multiplier
            .saturating_mul(2u32.saturating_pow(level.min(31)))
    }

    /// How many connections may hold RDY right now.
    fn limit(&self) -> u64 {
        match self.state {
            State::Normal => self.max_in_flight,
            State::Waiting { .. } => 0,
            State::Probing => self.max_in_flight.min(1),
        }
    }

    fn rebalance(&mut self, now: Instant) -> Actions {
        let mut actions = Vec::new();
        if self.conns.is_empty() {
            return actions;
        }
        let limit = self.limit();
        let n = self.conns.len() as u64;
        let mut desired: BTreeMap<ConnId, u64> = BTreeMap::new();
        let rotating = limit > 0 && n > limit;
        if limit == 0 {
            for &id in self.conns.keys() {
                desired.insert(id, 0);
            }
        } else if n <= limit {
            let (base, rem) = (limit / n, limit % n);
            for (i, (&id, c)) in self.conns.iter().enumerate() {
                let mut t = base + u64::from((i as u64) < rem);
                if !c.got_message {
                    t = t.min(1);
                }
                desired.insert(id, t.min(c.max_rdy));
            }
        } else {
            // Rotation: at most `limit` connections hold RDY 1.
            let waiting = self.conns.values().any(|c| c.rdy == 0);
            let mut holders = 0u64;
            let mut just_dropped = Vec::new();
            for (&id, c) in &self.conns {
                let keep = c.rdy > 0
                    && holders < limit
                    && !(waiting
                        && now.saturating_duration_since(c.last_active)
                            >= self.settings.low_rdy_idle_timeout);
                if keep {
                    holders += 1;
                    desired.insert(id, 1u64.min(c.max_rdy));
                } else {
                    if c.rdy > 0 {
                        just_dropped.push(id);
                    }
                    desired.insert(id, 0);
                }
            }
            // Connections after the last one that lost its RDY go first.
            if let Some(&last) = just_dropped.last() {
                self.cursor = last;
            }
            let mut free = limit - holders;
            let order: Vec<ConnId> = self
                .conns
                .range(self.cursor.saturating_add(1)..)
                .chain(self.conns.range(..=self.cursor))
                .map(|(&id, _)| id)
                .collect();
            for id in order {
                if free == 0 {
                    break;
                }
                if desired[&id] == 0 && !just_dropped.contains(&id) && self.conns[&id].max_rdy > 0 {
                    desired.insert(id, 1);
                    free -= 1;
                }
            }
        }

        // Lower first (always safe), then raise within the budget.
        for (&id, &d) in &desired {
            if d < self.conns[&id].rdy {
                self.set(id, d, now, &mut actions);
            }
        }
        let committed: u64 = self.conns.values().map(|c| c.committed(now)).sum();
        let mut avail = self.max_in_flight.saturating_sub(committed);
        for (&id, &d) in &desired {
            let c = &self.conns[&id];
            if d <= c.rdy {
                continue;
            }
            let cur = c.committed(now);
            let new = d.min(cur + avail);
            if new > c.rdy {
                avail -= new.saturating_sub(cur);
                if rotating && c.rdy == 0 {
                    // The next rotation starts after the connection that got RDY last.
                    self.cursor = id;
                }
                self.set(id, new, now, &mut actions);
            }
        }
        actions
    }

    fn set(&mut self, id: ConnId, n: u64, now: Instant, actions: &mut Actions) {
        let c = self
            .conns
            .get_mut(&id)
            .expect("desired only holds known ids");
        if n < c.rdy {
            let old = c.committed(now).max(c.rdy);
            c.lowered = Some((old, now + self.settings.lower_grace));
        }
        if c.rdy != n {
            c.rdy = n;
            c.since_rdy = 0;
            c.last_active = now;
            actions.push((id, n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_millis(300);

    fn settings() -> Settings {
        Settings {
            backoff_multiplier: Duration::from_secs(1),
            max_backoff_duration: Duration::from_secs(120),
            low_rdy_idle_timeout: Duration::from_secs(10),
            lower_grace: GRACE,
        }
    }

    fn sorted(mut a: Actions) -> Actions {
        a.sort();
        a
    }

    #[test]
    fn single_connection_ramps_from_one() {
        let t0 = Instant::now();
        let mut r = RdyController::new(100, settings());
        assert_eq!(r.add_conn(1, 2500, t0), vec![(1, 1)]);
        assert_eq!(r.on_message(1, t0), vec![(1, 100)]);
        // Capped by the server's max_rdy_count.
        let mut r = RdyController::new(5000, settings());
        r.add_conn(1, 2500, t0);
        assert_eq!(r.on_message(1, t0), vec![(1, 2500)]);
    }

    #[test]
    fn spreads_max_in_flight_over_connections() {
        let t0 = Instant::now();
        let mut r = RdyController::new(10, settings());
        r.add_conn(1, 2500, t0);
        r.add_conn(2, 2500, t0);
        r.add_conn(3, 2500, t0);
        assert_eq!(r.total_rdy(), 3);
        for id in 1..=3 {
            r.on_message(id, t0);
            r.on_response(id, Outcome::Finish, t0);
        }
        assert_eq!((r.rdy_of(1), r.rdy_of(2), r.rdy_of(3)), (4, 3, 3));
        // Removing one gives its share to the others.
        let a = sorted(r.remove_conn(2, t0));
        assert_eq!(a, vec![(1, 5), (3, 5)]);
    }

    #[test]
    fn new_connection_waits_for_budget() {
        let t0 = Instant::now();
        let mut r = RdyController::new(4, settings());
        r.add_conn(1, 2500, t0);
        r.on_message(1, t0);
        assert_eq!(r.rdy_of(1), 4);
        for _ in 0..3 {
            r.on_message(1, t0);
        }
        // 4 in flight on conn 1; conn 2 arrives: conn 1 lowered to 2, conn 2 must wait.
        assert_eq!(r.add_conn(2, 2500, t0), vec![(1, 2)]);
        assert_eq!(r.rdy_of(2), 0);
        // Answers free nothing while nsqd may still be sending at the old RDY 4.
        assert!(r.on_response(1, Outcome::Finish, t0).is_empty());
        assert!(r.on_response(1, Outcome::Finish, t0).is_empty());
        assert_eq!(r.poll_timeout(), Some(t0 + GRACE));
        // Grace over, conn 1 holds max(RDY 2, 2 in flight): 2 left for conn 2's RDY 1.
        assert_eq!(r.on_timeout(t0 + GRACE), vec![(2, 1)]);
    }

    #[test]
    fn rotates_rdy_when_more_connections_than_max_in_flight() {
        let t0 = Instant::now();
        let mut r = RdyController::new(1, settings());
        assert_eq!(r.add_conn(1, 2500, t0), vec![(1, 1)]);
        assert!(r.add_conn(2, 2500, t0).is_empty());
        assert!(r.add_conn(3, 2500, t0).is_empty());
        assert_eq!(r.total_rdy(), 1);
        let t1 = r.poll_timeout().expect("rotation timer");
        assert_eq!(t1, t0 + Duration::from_secs(10));
        let mut now = t1;
        for (from, to) in [(1, 2), (2, 3), (3, 1)] {
            assert_eq!(r.on_timeout(now), vec![(from, 0)]);
            assert_eq!(r.poll_timeout(), Some(now + GRACE));
            assert_eq!(r.on_timeout(now + GRACE), vec![(to, 1)]);
            now = r.poll_timeout().unwrap();
        }
        assert_eq!(r.total_rdy(), 1);
        // A busy connection keeps its RDY.
        let h = now - Duration::from_secs(10);
        r.on_message(1, h + Duration::from_secs(9));
        r.on_response(1, Outcome::Finish, h + Duration::from_secs(9));
        assert!(r.on_timeout(h + Duration::from_secs(10)).is_empty());
        assert_eq!(r.rdy_of(1), 1);
    }

    #[test]
    fn rotation_never_exceeds_budget_with_messages_in_flight() {
        let t0 = Instant::now();
        let mut r = RdyController::new(1, settings());
        r.add_conn(1, 2500, t0);
        r.add_conn(2, 2500, t0);
        r.on_message(1, t0);
        // Idle for a long time while still holding one message: RDY moves, but conn 2 may
        // only get it once the message is answered.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(r.on_timeout(later), vec![(1, 0)]);
        assert!(r.on_timeout(later + GRACE).is_empty());
        assert_eq!(
            r.on_response(1, Outcome::Finish, later + GRACE),
            vec![(2, 1)]
        );
    }

    #[test]
    fn resends_rdy_below_a_quarter() {
        let t0 = Instant::now();
        let mut r = RdyController::new(8, settings());
        r.add_conn(1, 2500, t0);
        r.on_message(1, t0); // ramp to 8, since_rdy reset
        for _ in 0..5 {
            assert!(r.on_message(1, t0).is_empty());
        }
        // 6 received since RDY 8: 2 left = 25% → re-send.
        assert_eq!(r.on_message(1, t0), vec![(1, 8)]);
    }

    #[test]
    fn backoff_pauses_probes_and_recovers() {
        let t0 = Instant::now();
        let mut r = RdyController::new(10, settings());
        r.add_conn(1, 2500, t0);
        r.add_conn(2, 2500, t0);
        r.on_message(1, t0);
        r.on_message(2, t0);
        assert_eq!((r.rdy_of(1), r.rdy_of(2)), (5, 5));
        r.on_message(1, t0);
        // A requeue with backoff: level 1 → RDY 0 everywhere for 2s.
        let a = sorted(r.on_response(1, Outcome::Requeue { backoff: true }, t0));
        assert_eq!(a, vec![(1, 0), (2, 0)]);
        assert!(r.on_timeout(t0 + GRACE).is_empty());
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(2)));
        // Signals during the pause are ignored.
        assert!(r
            .on_response(2, Outcome::Requeue { backoff: true }, t0 + GRACE)
            .is_empty());
        let t1 = t0 + Duration::from_secs(2);
        // The pause ends: one connection probes with RDY 1.
        let a = r.on_timeout(t1);
        assert_eq!(a.len(), 1);
        assert_eq!(r.total_rdy(), 1);
        let probe = a[0].0;
        r.on_message(probe, t1);
        // The probe succeeds: level 0 → normal RDY again.
        let a = sorted(r.on_response(probe, Outcome::Finish, t1));
        assert_eq!(r.total_rdy(), 10, "{a:?}");
        r.on_response(1, Outcome::Finish, t1);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn backoff_levels_grow_and_are_capped() {
        let t0 = Instant::now();
        let mut s = settings();
        s.max_backoff_duration = Duration::from_secs(8);
        let mut r = RdyController::new(1, s);
        r.add_conn(1, 2500, t0);
        let mut now = t0;
        let mut pauses = Vec::new();
        for _ in 0..5 {
            r.on_message(1, now);
            r.on_response(1, Outcome::Requeue { backoff: true }, now);
            r.on_timeout(now + GRACE);
            let until = r.poll_timeout().unwrap();
            pauses.push(until - now);
            now = until;
            r.on_timeout(now);
            assert_eq!(r.rdy_of(1), 1);
        }
        let secs: Vec<u64> = pauses.iter().map(|d| d.as_secs()).collect();
        // Levels 1, 2, 3 (2s, 4s, 8s); level 4 would be 16s > 8s: the level stays at 3 and
        // the pause is repeated.
        assert_eq!(secs, vec![2, 4, 8, 8, 8]);
        // A neutral requeue while probing continues the backoff at the current level.
        r.on_message(1, now);
        r.on_response(1, Outcome::Requeue { backoff: false }, now);
        r.on_timeout(now + GRACE);
        assert_eq!(r.poll_timeout(), Some(now + Duration::from_secs(8)));
    }

    #[test]
    fn max_in_flight_zero_pauses() {
        let t0 = Instant::now();
        let mut r = RdyController::new(3, settings());
        r.add_conn(1, 2500, t0);
        r.on_message(1, t0);
        assert_eq!(r.rdy_of(1), 3);
        assert_eq!(r.set_max_in_flight(0, t0), vec![(1, 0)]);
        // Raising back within what the connection already holds (the old RDY 3 during the
        // grace period) is safe at once.
        assert_eq!(r.set_max_in_flight(2, t0), vec![(1, 2)]);
        assert!(r.on_timeout(t0 + GRACE).is_empty());
        assert_eq!(r.set_max_in_flight(1, t0 + GRACE), vec![(1, 1)]);
        r.on_response(1, Outcome::Finish, t0 + GRACE);
        assert_eq!(r.rdy_of(1), 1);
    }

    /// Simulates nsqd honouring RDY (delivers while in_flight < RDY) with random
    /// connection churn and answers; the total in flight never exceeds max_in_flight.
    #[test]
    fn simulated_in_flight_never_exceeds_max() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for max in [1u64, 2, 3, 7, 50] {
            let t0 = Instant::now();
            let mut r = RdyController::new(max, settings());
            let mut in_flight: BTreeMap<ConnId, u64> = BTreeMap::new();
            let mut next_id = 1;
            let mut now = t0;
            for _ in 0..5000 {
                now += Duration::from_millis(rand(500));
                match rand(10) {
                    0 if in_flight.len() < 6 => {
                        r.add_conn(next_id, 2500, now);
                        in_flight.insert(next_id, 0);
                        next_id += 1;
                    }
                    1 if in_flight.len() > 1 && rand(5) == 0 => {
                        let id = *in_flight
                            .keys()
                            .nth(rand(in_flight.len() as u64) as usize)
                            .unwrap();
                        in_flight.remove(&id);
                        r.remove_conn(id, now);
                    }
                    2..=5 => {
                        // nsqd delivers where allowed.
                        for (&id, n) in in_flight.iter_mut() {
                            if *n < r.conns[&id].rdy {
                                *n += 1;
                                r.on_message(id, now);
                            }
                        }
                    }
                    _ => {
                        let busy: Vec<ConnId> = in_flight
                            .iter()
                            .filter(|(_, n)| **n > 0)
                            .map(|(k, _)| *k)
                            .collect();
                        if !busy.is_empty() {
                            let id = busy[rand(busy.len() as u64) as usize];
                            *in_flight.get_mut(&id).unwrap() -= 1;
                            let outcome = match rand(20) {
                                0 => Outcome::Requeue { backoff: true },
                                1 => Outcome::Requeue { backoff: false },
                                _ => Outcome::Finish,
                            };
                            r.on_response(id, outcome, now);
                        }
                    }
                }
                if let Some(t) = r.poll_timeout() {
                    if t <= now {
                        r.on_timeout(now);
                    }
                }
                let total: u64 = in_flight.values().sum();
                assert!(total <= max, "in flight {total} > max {max}");
                assert!(r.total_rdy() <= max);
            }
        }
    }
}
