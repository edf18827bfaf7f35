//! Topic state tests: the fan-out mode matrix (no channel / paused / starting, in memory and
//! logged), driven against real [`ChannelState`]s with explicit times.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use proptest::prelude::*;

use super::*;
use crate::state::channel::ChannelState;

const SEC: u64 = 1_000_000_000;

/// A channel for the tests: the real queue state, minus the consumers to wake.
#[derive(Default)]
struct TestChannel {
    st: RefCell<ChannelState>,
    /// Whether it can read a backlog back (a channel of a logged topic has a journal).
    journaled: bool,
}

impl ChannelSink for Rc<TestChannel> {
    fn deliver(&self, held: &Held, now: u64) -> u64 {
        let mut st = self.st.borrow_mut();
        match st.take_from_topic(held, now, &mut Vec::new()) {
            Some(_) => 0,
            None => st.ready_count(),
        }
    }

    fn take_backlog(&self, from: u64, end: u64, count: u64, skip: &[u64]) -> bool {
        if !self.journaled {
            return false;
        }
        self.st.borrow_mut().add_backlog(from, end, count, skip);
        true
    }

    fn queued(&self) -> (bool, u64) {
        let st = self.st.borrow();
        (st.backlog_start().is_some(), st.ready_count())
    }
}

/// Publishes batches with unique bodies, in the log (positions as the topic log gives them)
/// or not, and remembers every logged message's position for reading a backlog back.
#[derive(Default)]
struct Publisher {
    next: u64,
    log_end: u64,
    log: BTreeMap<u64, String>,
}

impl Publisher {
    fn batch(&mut self, n: u32, logged: bool) -> Arc<Batch> {
        let bodies: Vec<String> = (0..n)
            .map(|i| format!("m{}", self.next + i as u64))
            .collect();
        let b = Arc::new(Batch::generated(
            bodies.iter().map(|b| b.as_bytes()),
            self.next,
            1,
            0,
        ));
        self.next += n as u64;
        if logged {
            b.set_log_first(self.log_end);
            for (i, body) in bodies.into_iter().enumerate() {
                self.log.insert(b.log_pos(i as u32).unwrap(), body);
            }
            self.log_end = b.log_end(n - 1).unwrap();
        }
        b
    }

    /// Everything a channel has: in memory (ready, in flight, deferred) and, read back from
    /// the log, its backlog minus the positions it skips.
    fn contents(&self, ch: &TestChannel) -> Vec<String> {
        let mut st = ch.st.borrow_mut();
        let (_, backlog_bytes) = st.extent();
        let mut out: Vec<String> = Vec::new();
        if let Some(from) = st.backlog_start() {
            out.extend(
                self.log
                    .range(from..from + backlog_bytes)
                    .filter(|(p, _)| !st.skips(**p))
                    .map(|(_, b)| b.clone()),
            );
        }
        out.extend(
            st.drain_all()
                .iter()
                .map(|m| String::from_utf8(m.batch.body(m.idx).to_vec()).unwrap()),
        );
        out.sort();
        out
    }
}

fn channel(journaled: bool, window: Option<u64>) -> Rc<TestChannel> {
    Rc::new(TestChannel {
        st: RefCell::new(ChannelState::with_limits(false, None, window)),
        journaled,
    })
}

fn names(range: std::ops::Range<u64>) -> Vec<String> {
    let mut v: Vec<String> = range.map(|i| format!("m{i}")).collect();
    v.sort();
    v
}

#[test]
fn holds_until_the_first_channel_then_later_channels_see_only_new_messages() {
    let mut p = Publisher::default();
    let mut t = TopicState::<Rc<TestChannel>>::new(100, None);
    assert!(t.holding());
    assert_eq!(t.accept(Held::Ready(p.batch(3, false)), 0), Ok(3));
    assert_eq!(t.accept(Held::Ready(p.batch(2, false)), 0), Ok(5));
    assert_eq!(t.depth(), 5);
    let a = channel(false, None);
    t.insert_channel("a", a.clone(), 0);
    assert!(!t.holding());
    assert_eq!(t.depth(), 0);
    assert_eq!(a.st.borrow().ready_count(), 5);
    let b = channel(false, None);
    t.insert_channel("b", b.clone(), 0);
    assert_eq!(t.accept(Held::Ready(p.batch(1, false)), 0), Ok(6));
    assert_eq!(p.contents(&a), names(0..6));
    assert_eq!(p.contents(&b), names(5..6));
}

#[test]
fn paused_and_starting_topics_hold_and_release_to_every_channel() {
    let mut p = Publisher::default();
    let mut t = TopicState::<Rc<TestChannel>>::new(100, None);
    let (a, b) = (channel(false, None), channel(false, None));
    t.set_starting(true, 0);
    t.insert_channel("a", a.clone(), 0);
    t.insert_channel("b", b.clone(), 0);
    t.accept(Held::Ready(p.batch(2, false)), 0).unwrap();
    assert_eq!((t.depth(), a.st.borrow().ready_count()), (2, 0));
    t.set_paused(true, 0);
    t.set_starting(false, 0);
    assert_eq!(t.depth(), 2, "still paused");
    t.accept(Held::Ready(p.batch(1, false)), 0).unwrap();
    t.set_paused(false, 0);
    assert_eq!(t.depth(), 0);
    assert_eq!(p.contents(&a), names(0..3));
    assert_eq!(p.contents(&b), names(0..3));
}

#[test]
fn held_deferred_messages_keep_their_delay_from_release() {
    let mut p = Publisher::default();
    let mut t = TopicState::<Rc<TestChannel>>::new(100, None);
    t.accept(Held::Deferred(p.batch(1, false), 5 * SEC), 0)
        .unwrap();
    let a = channel(false, None);
    t.insert_channel("a", a.clone(), 10 * SEC);
    let st = a.st.borrow();
    assert_eq!((st.ready_count(), st.deferred_count()), (0, 1));
    assert_eq!(st.next_deadline(), Some(15 * SEC));
}

#[test]
fn an_ephemeral_topic_discards_what_it_cannot_hold() {
    let mut p = Publisher::default();
    let mut t = TopicState::<Rc<TestChannel>>::new(3, Some(3));
    for _ in 0..5 {
        t.accept(Held::Ready(p.batch(1, false)), 0).unwrap();
    }
    assert_eq!(t.depth(), 3);
    let a = channel(false, None);
    t.insert_channel("a", a.clone(), 0);
    assert_eq!(p.contents(&a), names(0..3));
}

#[test]
fn logged_messages_beyond_the_window_are_held_in_the_log_and_handed_over_as_backlog() {
    let mut p = Publisher::default();
    let mut t = TopicState::<Rc<TestChannel>>::new(2, None);
    let start = p.log_end;
    for _ in 0..2 {
        assert_eq!(t.channel_start(p.log_end), start);
        t.accept(Held::Ready(p.batch(1, true)), 0).unwrap();
    }
    // A DPUB inside the held backlog's range is delivered from memory, so skipped in the log.
    t.accept(Held::Ready(p.batch(2, true)), 0).unwrap();
    t.accept(Held::Deferred(p.batch(1, true), SEC), 0).unwrap();
    t.accept(Held::Ready(p.batch(1, true)), 0).unwrap();
    assert_eq!((t.depth(), t.backend_depth()), (6, 3));
    let (mem, bytes) = t.held_extent();
    assert_eq!(mem, 3);
    assert!(bytes > 0);
    assert_eq!(
        t.channel_start(p.log_end),
        start,
        "the first channel inherits it all"
    );

    let a = channel(true, Some(2));
    t.insert_channel("a", a.clone(), 0);
    assert_eq!((t.depth(), t.held_start()), (0, None));
    {
        let st = a.st.borrow();
        assert_eq!((st.ready_count(), st.deferred_count()), (2, 1));
        assert_eq!(st.backend_depth(), 3);
    }
    assert_eq!(p.contents(&a), names(0..6));
    assert_eq!(
        t.channel_start(p.log_end),
        p.log_end,
        "a second channel starts at the end"
    );
}

#[test]
fn a_channel_without_a_journal_is_not_given_the_held_backlog() {
    let mut p = Publisher::default();
    let mut t = TopicState::<Rc<TestChannel>>::new(1, None);
    t.set_paused(true, 0);
    let (a, e) = (channel(true, Some(1)), channel(false, None));
    t.insert_channel("a", a.clone(), 0);
    t.insert_channel("e", e.clone(), 0);
    for _ in 0..3 {
        t.accept(Held::Ready(p.batch(1, true)), 0).unwrap();
    }
    t.set_paused(false, 0);
    assert_eq!(p.contents(&a), names(0..3));
    assert_eq!(p.contents(&e), names(0..1), "only what was held in memory");
}

#[test]
fn spilling_decisions_see_the_topic_and_every_channel() {
    let mut p = Publisher::default();
    let mut t = TopicState::<Rc<TestChannel>>::new(4, None);
    t.accept(Held::Ready(p.batch(3, false)), 0).unwrap();
    assert_eq!(t.most_queued(), 3);
    assert!(t.below(4) && !t.below(3));
    let a = channel(true, Some(4));
    t.insert_channel("a", a.clone(), 0);
    assert_eq!(t.accept(Held::Ready(p.batch(1, true)), 0), Ok(4));
    t.accept(Held::Ready(p.batch(1, true)), 0).unwrap();
    assert_eq!(t.most_queued(), u64::MAX, "the channel has a backlog");
    assert!(!t.below(100));
}

#[test]
fn a_deleted_topic_refuses_and_forgets() {
    let mut p = Publisher::default();
    let mut t = TopicState::<Rc<TestChannel>>::new(4, None);
    t.insert_channel("a", channel(false, None), 0);
    t.set_paused(true, 0);
    t.accept(Held::Ready(p.batch(2, false)), 0).unwrap();
    assert_eq!(t.close().len(), 1);
    assert!(t.is_deleted());
    assert_eq!((t.depth(), t.channel_count()), (0, 0));
    assert_eq!(t.accept(Held::Ready(p.batch(1, false)), 0), Err(Deleted));
}

#[derive(Debug, Clone)]
enum Op {
    Publish { n: u32, deferred: bool },
    AddChannel,
    Pause(bool),
    Starting(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u32..4, proptest::bool::weighted(0.2))
            .prop_map(|(n, deferred)| Op::Publish { n, deferred }),
        1 => Just(Op::AddChannel),
        1 => any::<bool>().prop_map(Op::Pause),
        1 => any::<bool>().prop_map(Op::Starting),
    ]
}

proptest! {
    /// Whatever the order of publishes, channel creations, pauses and start-up, every channel
    /// ends up with exactly the messages published while it existed and the topic was not
    /// holding, plus those held when holding ended with it present — once each, whether they
    /// are in memory or left in the log as backlog — and the topic's depth is what it holds.
    #[test]
    fn every_message_reaches_each_channel_once(
        ops in proptest::collection::vec(op(), 1..40),
        logged in any::<bool>(),
        window in 1u64..6,
    ) {
        let mut p = Publisher::default();
        let mut t = TopicState::<Rc<TestChannel>>::new(window, None);
        let mut chans: Vec<(Rc<TestChannel>, Vec<String>)> = Vec::new();
        let (mut paused, mut starting) = (false, false);
        let mut pending: Vec<String> = Vec::new();
        for op in ops {
            let holding_before = chans.is_empty() || paused || starting;
            match op {
                Op::Publish { n, deferred } => {
                    let first = p.next;
                    let b = p.batch(n, logged);
                    let held = if deferred { Held::Deferred(b, SEC) } else { Held::Ready(b) };
                    t.accept(held, 0).unwrap();
                    let bodies = (first..first + n as u64).map(|i| format!("m{i}"));
                    if holding_before {
                        pending.extend(bodies);
                    } else {
                        let bodies: Vec<String> = bodies.collect();
                        for (_, exp) in &mut chans {
                            exp.extend(bodies.iter().cloned());
                        }
                    }
                }
                Op::AddChannel => {
                    let name = format!("c{}", chans.len());
                    let c = if logged { channel(true, Some(window)) } else { channel(false, None) };
                    t.insert_channel(&name, c.clone(), 0);
                    chans.push((c, Vec::new()));
                }
                Op::Pause(v) => {
                    paused = v;
                    t.set_paused(v, 0);
                }
                Op::Starting(v) => {
                    starting = v;
                    t.set_starting(v, 0);
                }
            }
            let holding = chans.is_empty() || paused || starting;
            prop_assert_eq!(t.holding(), holding);
            if holding_before && !holding {
                for (_, exp) in &mut chans {
                    exp.extend(pending.iter().cloned());
                }
                pending.clear();
            }
            prop_assert_eq!(t.depth(), pending.len() as u64);
        }
        for (c, mut exp) in chans {
            exp.sort();
            prop_assert_eq!(p.contents(&c), exp);
        }
    }
}
