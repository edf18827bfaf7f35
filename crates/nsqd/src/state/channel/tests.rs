//! Channel state tests, driven with explicit times (ns).

use super::*;
use crate::state::batch::Batch;

const SEC: u64 = 1_000_000_000;

fn batch(n: u32, first: u64) -> Arc<Batch> {
    let bodies: Vec<Vec<u8>> = (0..n).map(|i| format!("m{i}").into_bytes()).collect();
    Arc::new(Batch::generated(
        bodies.iter().map(|b| b.as_slice()),
        first,
        1,
        0,
    ))
}

/// A channel with consumers 1 and 2 and `n` fresh messages.
fn setup(n: u32) -> ChannelState {
    let mut ch = ChannelState::new();
    ch.add_consumer(1);
    ch.add_consumer(2);
    ch.put(batch(n, 0), 0, n);
    ch
}

fn pop(ch: &mut ChannelState, client: u64, rdy: u64, now: u64) -> Vec<MsgRef> {
    let mut out = Vec::new();
    ch.pop(client, rdy, usize::MAX, 60 * SEC, now, None, &mut out);
    out
}

fn bodies(msgs: &[MsgRef]) -> Vec<String> {
    msgs.iter()
        .map(|m| String::from_utf8(m.batch.body(m.idx).to_vec()).unwrap())
        .collect()
}

#[test]
fn rdy_is_a_window() {
    let mut ch = setup(5);
    assert!(pop(&mut ch, 1, 0, 0).is_empty(), "RDY 0 delivers nothing");
    let got = pop(&mut ch, 1, 2, 0);
    assert_eq!(bodies(&got), ["m0", "m1"]);
    assert!(pop(&mut ch, 1, 2, 0).is_empty(), "window full");
    ch.fin(1, got[0].key()).unwrap();
    assert_eq!(bodies(&pop(&mut ch, 1, 2, 0)), ["m2"]);
    assert_eq!(bodies(&pop(&mut ch, 2, 10, 0)), ["m3", "m4"]);
    assert_eq!(ch.depth(), 0);
    assert_eq!(ch.in_flight_count(), 4);
    assert_eq!(ch.counters.message_count, 5);
}

#[test]
fn fin_errors() {
    let mut ch = setup(1);
    let m = pop(&mut ch, 1, 1, 0).remove(0);
    assert_eq!(ch.fin(2, m.key()), Err(InFlightError::NotOwner));
    assert_eq!(ch.fin(1, m.key() + 1), Err(InFlightError::NotInFlight));
    ch.fin(1, m.key()).unwrap();
    assert_eq!(ch.fin(1, m.key()), Err(InFlightError::NotInFlight));
    assert_eq!(ch.consumer_in_flight(1), 0);
}

#[test]
fn timeout_redelivers_with_attempts_plus_one() {
    let mut ch = setup(1);
    let m = pop(&mut ch, 1, 1, 0).remove(0);
    assert_eq!(m.attempts, 1);
    assert_eq!(ch.next_deadline(), Some(60 * SEC));
    assert_eq!(ch.process_timeouts(60 * SEC - 1), 0);
    assert_eq!(ch.process_timeouts(60 * SEC), 1);
    assert_eq!(ch.counters.timeout_count, 1);
    assert_eq!(ch.counters.requeue_count, 0);
    assert_eq!(ch.consumer_in_flight(1), 0);
    let again = pop(&mut ch, 2, 1, 61 * SEC).remove(0);
    assert_eq!(again.key(), m.key());
    assert_eq!(again.attempts, 2);
    // The stale FIN from the first consumer now fails: another consumer owns it.
    assert_eq!(ch.fin(1, m.key()), Err(InFlightError::NotOwner));
}

#[test]
fn req_now_and_deferred() {
    let mut ch = setup(2);
    let got = pop(&mut ch, 1, 2, 0);
    ch.req(1, got[0].key(), 0, 0).unwrap();
    ch.req(1, got[1].key(), 5 * SEC, 0).unwrap();
    assert_eq!(ch.counters.requeue_count, 2);
    assert_eq!(ch.depth(), 1);
    assert_eq!(ch.deferred_count(), 1);
    assert_eq!(
        ch.next_deadline(),
        Some(5 * SEC),
        "the stale in-flight entries are skipped"
    );
    let m = pop(&mut ch, 1, 5, 1);
    assert_eq!(bodies(&m), ["m0"]);
    assert_eq!(m[0].attempts, 2);
    assert_eq!(ch.process_timeouts(5 * SEC), 1);
    let m = pop(&mut ch, 1, 5, 5 * SEC);
    assert_eq!(bodies(&m), ["m1"]);
    assert_eq!(m[0].attempts, 2);
}

#[test]
fn touch_extends_up_to_max() {
    let mut ch = setup(1);
    let m = pop(&mut ch, 1, 1, 0).remove(0);
    ch.touch(1, m.key(), 60 * SEC, 90 * SEC, 50 * SEC).unwrap();
    assert_eq!(
        ch.process_timeouts(60 * SEC),
        0,
        "touched: old deadline is stale"
    );
    assert_eq!(ch.process_timeouts(89 * SEC), 0);
    assert_eq!(ch.process_timeouts(90 * SEC), 1, "capped at delivery + max");
    assert_eq!(
        ch.touch(2, m.key(), 1, 1, 0),
        Err(InFlightError::NotInFlight)
    );
}

#[test]
fn pause_and_empty() {
    let mut ch = setup(3);
    let got = pop(&mut ch, 1, 1, 0);
    ch.paused = true;
    assert!(pop(&mut ch, 2, 10, 0).is_empty());
    ch.paused = false;
    ch.empty();
    assert_eq!(
        (ch.depth(), ch.in_flight_count(), ch.deferred_count()),
        (0, 0, 0)
    );
    assert_eq!(ch.consumer_in_flight(1), 0);
    assert_eq!(ch.fin(1, got[0].key()), Err(InFlightError::NotInFlight));
}

#[test]
fn disconnected_consumer_messages_wait_for_timeout() {
    let mut ch = setup(1);
    let m = pop(&mut ch, 1, 1, 0).remove(0);
    ch.remove_consumer(1);
    assert_eq!(ch.in_flight_count(), 1);
    assert!(
        pop(&mut ch, 1, 1, 0).is_empty(),
        "removed consumers receive nothing"
    );
    ch.process_timeouts(60 * SEC);
    assert_eq!(pop(&mut ch, 2, 1, 60 * SEC)[0].key(), m.key());
}

#[test]
fn ephemeral_drop_beyond_limit() {
    let mut ch = ChannelState::new();
    ch.drop_beyond = Some(3);
    assert_eq!(ch.put(batch(2, 0), 0, 2), 0);
    assert_eq!(ch.put(batch(2, 10), 0, 2), 1);
    assert_eq!(ch.depth(), 3);
}

#[test]
fn deadline_heap_stays_bounded() {
    let mut ch = ChannelState::new();
    ch.add_consumer(1);
    for round in 0..100u64 {
        ch.put(batch(100, round * 1000), 0, 100);
        for m in pop(&mut ch, 1, 1000, round) {
            ch.fin(1, m.key()).unwrap();
        }
    }
    assert!(
        ch.timeout_heap_len() <= 1024 + 100,
        "{}",
        ch.timeout_heap_len()
    );
    assert_eq!(ch.in_flight_count(), 0);
}

#[test]
fn sampling_discards() {
    let mut ch = setup(1000);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::new();
    ch.pop(1, 1000, usize::MAX, SEC, 0, Some((50, &mut rng)), &mut out);
    assert!(out.len() > 400 && out.len() < 600, "{}", out.len());
    assert_eq!(
        ch.depth(),
        0,
        "sampled-out messages are gone, not left for others"
    );
}

#[test]
fn drain_all_returns_everything() {
    let mut ch = setup(4);
    let got = pop(&mut ch, 1, 2, 0);
    ch.req(1, got[0].key(), SEC, 0).unwrap();
    let all = ch.drain_all();
    assert_eq!(all.len(), 4);
    assert_eq!(
        (ch.depth(), ch.in_flight_count(), ch.deferred_count()),
        (0, 0, 0)
    );
}

#[test]
fn same_id_twice_is_delivered_once() {
    let mut ch = ChannelState::new();
    ch.add_consumer(1);
    let m = nsq_protocol::Message {
        timestamp: 1,
        attempts: 0,
        id: nsq_protocol::MessageId::from_u64(7),
        body: bytes::Bytes::from_static(b"dup"),
    };
    let b = Arc::new(Batch::explicit(&[m.clone(), m]));
    ch.restore(b, 2);
    let got = pop(&mut ch, 1, 10, 0);
    assert_eq!(got.len(), 1);
    assert_eq!(ch.consumer_in_flight(1), 1);
    ch.fin(1, got[0].key()).unwrap();
    assert_eq!(ch.consumer_in_flight(1), 0);
    assert_eq!(ch.counters.duplicates_dropped, 1);
}

#[test]
fn memory_window_leaves_the_rest_in_the_log() {
    let mut ch = ChannelState::new();
    ch.add_consumer(1);
    ch.mem_window = Some(4);
    let b1 = batch(3, 0);
    b1.set_log_first(0);
    let b2 = batch(3, 10);
    b2.set_log_first(1000);
    let b3 = batch(2, 20);
    b3.set_log_first(2000);
    let b3_end = b3.log_end(1).unwrap();
    assert_eq!(
        b3_end,
        b3.log_pos(1).unwrap() + 47 + b3.body(1).len() as u64
    );
    assert!(ch.put_windowed(b1, 0, 3));
    assert!(ch.put_windowed(b2.clone(), 0, 3), "3 < 4: still room");
    assert!(!ch.put_windowed(b3, 0, 2), "window full: stays in the log");
    assert_eq!(ch.backlog, Some(2000));
    assert_eq!((ch.depth(), ch.backend_depth()), (8, 2));
    assert_eq!(ch.start_refill(), None, "6 ready > 4/2: no read yet");
    let _ = pop(&mut ch, 1, 100, 0);
    // The backlog ends just past b3's last record.
    let end3 = ch.backlog_end;
    assert_eq!(end3, b3_end);
    assert_eq!(ch.start_refill(), Some((2000, end3)));
    assert_eq!(ch.start_refill(), None, "one read at a time");
    // The read brought both messages back and reached the end of the backlog.
    ch.finish_refill(2, end3);
    assert_eq!((ch.backlog, ch.backend_depth()), (None, 0));
    // A read that stops short keeps the backlog open.
    ch.backlog = Some(3000);
    ch.backlog_end = 4000;
    ch.backlog_count = 5;
    assert_eq!(ch.start_refill(), Some((3000, 4000)));
    ch.finish_refill(2, 3100);
    assert_eq!((ch.backlog, ch.backend_depth()), (Some(3100), 3));
    assert!(
        ch.unacked_positions().contains(&3100),
        "retention keeps the backlog"
    );
}

#[test]
fn held_backlog_and_deferred_positions_inside_a_backlog() {
    let mut ch = ChannelState::new();
    ch.mem_window = Some(4);
    // A topic releases 10 messages held on disk in 5000..6000, except a DPUB at 5500 that
    // it delivers from memory.
    ch.add_backlog(5000, 6000, 10, &[5500]);
    assert_eq!(
        (ch.backlog, ch.backlog_end, ch.backend_depth()),
        (Some(5000), 6000, 10)
    );
    assert!(ch.backlog_skip.as_ref().unwrap().contains(5500));
    assert_eq!(ch.counters.message_count, 10);
    // A DPUB logged after the backlog began is skipped by the backlog read too, even past
    // the current backlog end (later batches extend the range).
    ch.skip_in_backlog(7000);
    assert!(ch.backlog_skip.as_ref().unwrap().contains(7000));
    // One before the backlog is not in its range.
    ch.skip_in_backlog(100);
    assert!(!ch.backlog_skip.as_ref().unwrap().contains(100));
}

/// The in-flight map's hash keeps a batch's consecutive ids in consecutive buckets with
/// distinct tags, and two ids from different time units or nodes still differ.
#[test]
fn id_hasher_keeps_consecutive_ids_together() {
    use std::hash::Hasher;
    let h = |id: u64| {
        let mut s = super::IdHasher::default();
        s.write_u64(id);
        s.finish()
    };
    let gen = crate::state::guid::GuidGen::new(7);
    let first = 1u64 << 40;
    let mut seen = std::collections::HashSet::new();
    for i in 0..200u64 {
        let (a, b) = (h(gen.id(first + i)), h(gen.id(first + i + 1)));
        if (first + i + 1) & 0xFFF != 0 {
            assert_eq!(
                (b & 0xFFF),
                (a & 0xFFF) + 1,
                "bucket index follows the sequence"
            );
        }
        assert_ne!(a >> 57, b >> 57, "neighbouring ids have distinct tags");
        assert!(seen.insert(a));
    }
    // Same sequence, another time unit or node: another hash.
    let other_node = crate::state::guid::GuidGen::new(8);
    assert_ne!(h(gen.id(first)), h(other_node.id(first)));
    assert_ne!(h(gen.id(first)), h(gen.id(first + 4096)));
}

/// An empty channel whose consumers 1..=n each found nothing to take with RDY 1.
fn idle_consumers(n: u64) -> ChannelState {
    let mut ch = ChannelState::new();
    for c in 1..=n {
        ch.add_consumer(c);
        assert!(pop(&mut ch, c, 1, 0).is_empty());
    }
    ch
}

fn idle(ch: &mut ChannelState, n: u64) -> Vec<u64> {
    let mut out = Vec::new();
    ch.take_idle(n, &mut out);
    out
}

#[test]
fn new_messages_wake_only_as_many_idle_consumers_as_they_feed() {
    let mut ch = idle_consumers(3);
    // A consumer without credit (RDY reached) is not idle: its own FIN frees it.
    ch.add_consumer(4);
    ch.put(batch(1, 100), 0, 1);
    assert_eq!(pop(&mut ch, 4, 1, 0).len(), 1);
    // 4 took the message and has no credit left; 1..=3 are still idle, oldest first.
    assert_eq!(idle(&mut ch, 1), [1]);
    assert_eq!(idle(&mut ch, 5), [2, 3]);
    assert!(idle(&mut ch, 5).is_empty(), "each is woken once");
    // Finding the queue empty again queues it again.
    assert!(pop(&mut ch, 2, 1, 0).is_empty());
    assert_eq!(idle(&mut ch, 5), [2]);
}

#[test]
fn a_consumer_that_drains_the_queue_with_credit_left_is_idle() {
    let mut ch = setup(3);
    assert_eq!(pop(&mut ch, 1, 10, 0).len(), 3);
    assert_eq!(idle(&mut ch, 5), [1], "took all 3 with 7 credit left");
    let mut ch = setup(3);
    assert_eq!(pop(&mut ch, 1, 3, 0).len(), 3);
    assert!(idle(&mut ch, 5).is_empty(), "no credit left");
    let mut ch = setup(3);
    assert_eq!(pop(&mut ch, 1, 2, 0).len(), 2);
    assert!(idle(&mut ch, 5).is_empty(), "queue not empty");
}

#[test]
fn rdy_zero_pause_and_leaving_consumers_are_not_woken() {
    let mut ch = idle_consumers(3);
    ch.not_idle(1); // RDY 0
    ch.remove_consumer(2); // disconnected
    ch.paused = true;
    assert!(idle(&mut ch, 5).is_empty(), "a paused channel wakes nobody");
    ch.paused = false;
    assert_eq!(idle(&mut ch, 5), [3]);
}

#[test]
fn the_idle_queue_stays_bounded() {
    let mut ch = ChannelState::new();
    ch.add_consumer(1);
    ch.add_consumer(2);
    for _ in 0..10_000 {
        // Idle, then not idle (RDY 0), then idle again: stale entries pile up lazily.
        assert!(pop(&mut ch, 1, 1, 0).is_empty());
        ch.not_idle(1);
        assert!(pop(&mut ch, 2, 1, 0).is_empty());
    }
    assert!(ch.idle.len() <= 2 * 2 + 64 + 1, "{}", ch.idle.len());
    assert_eq!(idle(&mut ch, 5), [2], "only live idle entries, once each");
}

/// Topology-aware consumption: consumer 1 is in this nsqd's zone, 2 in its region, 3 elsewhere.
fn topology(n: u32) -> ChannelState {
    let mut ch = ChannelState::new();
    for c in [1, 2, 3] {
        ch.add_consumer(c);
    }
    ch.set_locality(1, LOCAL_ZONE);
    ch.set_locality(2, LOCAL_REGION);
    ch.set_locality(3, 0);
    ch.put(batch(n, 0), 0, n);
    ch
}

#[test]
fn topology_same_zone_consumer_with_credit_gets_everything() {
    let mut ch = topology(6);
    // The zone-local consumer announces its credit by pulling (it takes up to its RDY).
    assert_eq!(
        bodies(&pop(&mut ch, 1, 10, 0)),
        ["m0", "m1", "m2", "m3", "m4", "m5"]
    );
    ch.put(batch(3, 100), 0, 3);
    // It still has credit: the others take nothing, however often they ask.
    assert!(pop(&mut ch, 3, 10, 0).is_empty());
    assert!(pop(&mut ch, 2, 10, 0).is_empty());
    assert!(!ch.take_topology_wake());
    // A publish wakes the local consumer first, then region, then the others.
    let mut woken = Vec::new();
    ch.take_idle(1, &mut woken);
    assert_eq!(
        woken,
        [1],
        "one message: only the zone-local idle consumer is woken"
    );
    assert_eq!(pop(&mut ch, 1, 10, 0).len(), 3);
    assert_eq!(ch.consumer_in_flight(1), 9);
    assert_eq!(ch.consumer_in_flight(2) + ch.consumer_in_flight(3), 0);
    ch.put(batch(1, 200), 0, 1);
    let mut woken = Vec::new();
    ch.take_idle(3, &mut woken);
    assert_eq!(woken, [1, 2, 3], "by locality, not by age");
}

#[test]
fn topology_falls_back_to_region_then_anyone_when_local_has_no_credit() {
    let mut ch = topology(10);
    assert_eq!(bodies(&pop(&mut ch, 1, 2, 0)), ["m0", "m1"]);
    // Its RDY is full with messages left: whoever was held back must be woken.
    assert!(ch.take_topology_wake());
    assert!(!ch.take_topology_wake(), "cleared by the call");
    // The region-local one is next while it has credit, then anyone.
    assert_eq!(bodies(&pop(&mut ch, 2, 3, 0)), ["m2", "m3", "m4"]);
    assert!(ch.take_topology_wake());
    assert_eq!(bodies(&pop(&mut ch, 3, 2, 0)), ["m5", "m6"]);
    assert!(
        !ch.take_topology_wake(),
        "only local consumers' credit holds others back"
    );
    // A FIN gives the zone-local one credit again: it is preferred again.
    let m = ch
        .in_flight
        .values()
        .find(|f| f.client == 1)
        .unwrap()
        .msg
        .key();
    ch.fin(1, m).unwrap();
    ch.fin(
        3,
        ch.in_flight
            .values()
            .find(|f| f.client == 3)
            .unwrap()
            .msg
            .key(),
    )
    .unwrap();
    assert!(
        pop(&mut ch, 3, 2, 0).is_empty(),
        "held back while 1 has credit"
    );
    assert_eq!(bodies(&pop(&mut ch, 1, 2, 0)), ["m7"]);
    assert!(ch.take_topology_wake());
    // RDY 0 (or CLS) of the region one with messages left also hands over.
    ch.fin(
        2,
        ch.in_flight
            .values()
            .find(|f| f.client == 2)
            .unwrap()
            .msg
            .key(),
    )
    .unwrap();
    assert!(
        pop(&mut ch, 3, 2, 0).is_empty(),
        "held back while 2 has credit"
    );
    ch.not_idle(2);
    assert!(ch.take_topology_wake());
    assert_eq!(bodies(&pop(&mut ch, 3, 2, 0)), ["m8"]);
    // A local consumer leaving hands over too.
    ch.put(batch(2, 300), 0, 2);
    ch.fin(
        1,
        ch.in_flight
            .values()
            .find(|f| f.client == 1)
            .unwrap()
            .msg
            .key(),
    )
    .unwrap();
    assert_eq!(
        pop(&mut ch, 1, 2, 0).len(),
        1,
        "m9: 1 in flight left, RDY 2"
    );
    ch.fin(
        1,
        ch.in_flight
            .values()
            .find(|f| f.client == 1)
            .unwrap()
            .msg
            .key(),
    )
    .unwrap();
    ch.put(batch(1, 400), 0, 1);
    assert!(pop(&mut ch, 3, 5, 0).is_empty());
    ch.remove_consumer(1);
    assert!(ch.take_topology_wake());
    assert_eq!(pop(&mut ch, 3, 5, 0).len(), 3);
}

#[test]
fn topology_off_consumers_share_as_before() {
    let mut ch = setup(6);
    assert_eq!(bodies(&pop(&mut ch, 2, 2, 0)), ["m0", "m1"]);
    assert_eq!(bodies(&pop(&mut ch, 1, 2, 0)), ["m2", "m3"]);
    assert_eq!(bodies(&pop(&mut ch, 2, 5, 0)), ["m4", "m5"]);
    assert!(!ch.take_topology_wake());
    // Idle consumers are woken oldest first, whatever they identified.
    let mut woken = Vec::new();
    ch.take_idle(2, &mut woken);
    assert_eq!(woken, [2], "1 has no credit left; 2 has");
    assert!(!ch.topology);
}

#[test]
fn max_attempts_sets_messages_aside_until_the_dead_letter_topic_confirms() {
    let mut ch = setup(2);
    ch.set_max_attempts(2);
    // First attempt: REQ requeues as usual.
    let got = pop(&mut ch, 1, 2, 0);
    ch.req(1, got[0].key(), 0, 0).unwrap();
    ch.req(1, got[1].key(), 0, 0).unwrap();
    assert!(ch.take_dead_letters().is_empty());
    assert_eq!(ch.counters.requeue_count, 2);
    // Second (last) attempt: one REQ, one timeout; both set aside, neither requeued.
    let got = pop(&mut ch, 1, 2, SEC);
    assert!(got.iter().all(|m| m.attempts == 2));
    ch.req(1, got[0].key(), 5 * SEC, SEC).unwrap();
    assert_eq!(ch.process_timeouts(61 * SEC), 0, "nothing requeued");
    assert_eq!(ch.counters.requeue_count, 2);
    assert_eq!(ch.counters.timeout_count, 1);
    let dead = ch.take_dead_letters();
    assert_eq!(bodies(&dead), ["m0", "m1"]);
    assert_eq!(
        (ch.depth(), ch.in_flight_count(), ch.deferred_count()),
        (0, 0, 0)
    );
    assert!(ch.take_dead_letters().is_empty(), "taken once");
    // The topic refused m1: it comes back ready; m0 confirmed.
    let acked = ch.dead_lettered(&[dead[0].key()]);
    assert!(acked.is_empty(), "no log positions in memory mode");
    ch.dead_letter_failed(&[dead[1].key()]);
    assert_eq!(ch.counters.dead_lettered_count, 1);
    assert_eq!(bodies(&pop(&mut ch, 2, 5, 62 * SEC)), ["m1"]);
    // Confirming twice, or an unknown key, counts nothing.
    assert!(ch.dead_lettered(&[dead[0].key(), 12345]).is_empty());
    assert_eq!(ch.counters.dead_lettered_count, 1);
}

#[test]
fn dead_letters_in_transit_are_drained_at_shutdown() {
    let mut ch = setup(1);
    ch.set_max_attempts(1);
    let got = pop(&mut ch, 1, 1, 0);
    ch.req(1, got[0].key(), 0, 0).unwrap();
    let dead = ch.take_dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(bodies(&ch.drain_all()), ["m0"], "not lost by an export");
}
