//! Replicated topics (issue 14), with real nsqd processes on loopback: three members with
//! `--raft-address` / `--raft-peers`, a topic created with `replicas=3`, publishes through a
//! follower and the leader, a consumer on the leader (found through nsqlookupd, which lists only
//! the leader), the leader SIGKILLed, and a verdict: every acknowledged message delivered, none
//! lost.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use nsq_protocol::FrameType;

use super::harness::{self, TestNsqd};
use super::lookup::Lookupd;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Member {
    id: u64,
    nsqd: TestNsqd,
}

fn start_cluster(lookupd: &Lookupd, n: u64) -> BTreeMap<u64, Member> {
    let raft: Vec<String> = (0..n)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut out = BTreeMap::new();
    for i in 0..n {
        let id = i + 1;
        let peers: Vec<String> = (0..n)
            .filter(|&j| j != i)
            .map(|j| format!("{}@{}", j + 1, raft[j as usize]))
            .collect();
        let args = [
            format!("--node-id={id}"),
            format!("--raft-address={}", raft[i as usize]),
            format!("--raft-peers={}", peers.join(",")),
            lookupd.tcp_flag(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        out.insert(
            id,
            Member {
                id,
                nsqd: TestNsqd::start(&args),
            },
        );
    }
    out
}

fn replication(n: &TestNsqd, topic: &str) -> Option<serde_json::Value> {
    let r = n.http_get(&format!("/topic/replication?topic={topic}"));
    (r.status == 200).then(|| r.json())
}

/// The member that delivers (`active`), once one does.
fn active_leader(members: &BTreeMap<u64, Member>, topic: &str, timeout: Duration) -> u64 {
    harness::wait_for(timeout, "an active leader", || {
        members.values().find_map(|m| {
            let st = replication(&m.nsqd, topic)?;
            (st["active"] == true).then_some(m.id)
        })
    })
}

/// Creates `topic` with `replicas=3` through member 1 and returns the member that delivers it.
fn create_replicated(members: &BTreeMap<u64, Member>, topic: &str) -> u64 {
    let r = members[&1]
        .nsqd
        .http_post(&format!("/topic/create?topic={topic}&replicas=3"), b"");
    assert_eq!(r.status, 200, "{}", r.text());
    active_leader(members, topic, Duration::from_secs(10))
}

/// Waits until every member has applied `channel`'s creation (so messages count for it).
fn wait_channel_everywhere(members: &BTreeMap<u64, Member>, topic: &str, channel: &str) {
    harness::wait_until(Duration::from_secs(5), "channel replicated", || {
        members
            .values()
            .all(|m| replication(&m.nsqd, topic).is_some_and(|s| s["owed"][channel].is_u64()))
    });
}

fn body(i: usize) -> Vec<u8> {
    format!("msg-{i:05}").into_bytes()
}

/// Reads messages until `want` distinct bodies were seen (FINing each), or panics.
fn consume(
    c: &mut harness::RawClient,
    want: &BTreeSet<Vec<u8>>,
    seen: &mut BTreeMap<Vec<u8>, u32>,
    fin: bool,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    while !want.iter().all(|b| seen.contains_key(b)) {
        assert!(
            Instant::now() < deadline,
            "missing {} of {} messages after {timeout:?}",
            want.iter().filter(|b| !seen.contains_key(*b)).count(),
            want.len()
        );
        let Some(f) = c
            .try_read_frame(Duration::from_millis(200))
            .expect("consumer connection")
        else {
            continue;
        };
        if f.frame_type != FrameType::Message {
            continue;
        }
        let m = nsq_protocol::Message::decode(f.data).unwrap();
        *seen.entry(m.body.to_vec()).or_default() += 1;
        if fin {
            c.fin(&m.id);
        }
    }
}

#[test]
fn a_replicated_topic_loses_nothing_acknowledged_when_its_leader_is_killed() {
    let lookupd = Lookupd::start();
    let mut members = start_cluster(&lookupd, 3);
    let topic = "orders";

    // Refusals first: replicas beyond the cluster size, and on a plain topic name clash.
    let r = members[&1]
        .nsqd
        .http_post(&format!("/topic/create?topic={topic}&replicas=4"), b"");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains("replicas=4 but the cluster has 3 nodes"),
        "{}",
        r.text()
    );
    let leader = create_replicated(&members, topic);
    let st = replication(&members[&leader].nsqd, topic).unwrap();
    assert_eq!(st["role"], "leader");
    assert_eq!(st["members"], serde_json::json!([1, 2, 3]));
    // /stats: the leader's topic carries its replication state; every member lists it.
    let t = members[&leader]
        .nsqd
        .topic_stats(topic)
        .expect("the leader serves the topic");
    assert_eq!(t["replication"]["role"], "leader");
    for m in members.values() {
        let s = m.nsqd.stats("");
        let rt = &s["replicated_topics"][0];
        assert_eq!(rt["topic_name"], topic, "node {}: {s}", m.id);
        assert_eq!(rt["leader"].as_u64(), Some(leader));
    }

    // Only the leader is listed by lookupd.
    let producers = lookupd.wait_producers(topic, 1, Duration::from_secs(10));
    assert_eq!(
        producers[0]["tcp_port"].as_u64(),
        Some(members[&leader].nsqd.tcp_addr().port() as u64)
    );

    // A follower refuses SUB, naming the leader.
    let follower = *members.keys().find(|&&id| id != leader).unwrap();
    let mut c = members[&follower].nsqd.client();
    c.sub(topic, "ch");
    let f = c.read_frame(Duration::from_secs(5));
    assert_eq!(f.frame_type, FrameType::Error);
    let text = String::from_utf8_lossy(&f.data).to_string();
    assert!(
        text.contains("E_SUB_FAILED") && text.contains(&format!("leader: node {leader}")),
        "{text}"
    );

    let mut consumer = members[&leader].nsqd.client();
    consumer.sub_ok(topic, "ch", 1000);
    // The channel's creation is committed before messages count for it.
    wait_channel_everywhere(&members, topic, "ch");

    // 200 messages: PUBs through a follower (forwarded) and an MPUB to the leader.
    let mut p1 = members[&follower].nsqd.client();
    for i in 0..100 {
        p1.pub_ok(topic, &body(i));
    }
    let mut p2 = members[&leader].nsqd.client();
    let bodies: Vec<Vec<u8>> = (100..200).map(body).collect();
    p2.mpub(topic, &bodies);
    p2.expect_ok();
    let acked: BTreeSet<Vec<u8>> = (0..200).map(body).collect();

    // FIN the first 100 (read in order), keep the other 100 in flight.
    let mut seen = BTreeMap::new();
    let first: BTreeSet<Vec<u8>> = (0..100).map(body).collect();
    consume(
        &mut consumer,
        &first,
        &mut seen,
        true,
        Duration::from_secs(10),
    );
    let rest: BTreeSet<Vec<u8>> = (100..200).map(body).collect();
    consume(
        &mut consumer,
        &rest,
        &mut seen,
        false,
        Duration::from_secs(10),
    );
    // The FINs are committed (a follower's replicated state keeps only the unFINed).
    harness::wait_until(Duration::from_secs(5), "FINs replicated", || {
        replication(&members[&follower].nsqd, topic).is_some_and(|s| s["messages"] == 100)
    });

    // SIGKILL the leader.
    let killed_at = Instant::now();
    let mut dead = members.remove(&leader).unwrap();
    dead.nsqd.kill();
    let new_leader = active_leader(&members, topic, Duration::from_secs(15));
    println!(
        "failover: node {new_leader} delivers {:?} after the kill",
        killed_at.elapsed()
    );
    assert_ne!(new_leader, leader);
    let producers = harness::wait_for(
        Duration::from_secs(10),
        "lookupd lists the new leader",
        || {
            let p = lookupd.lookup(topic).1;
            let port = members[&new_leader].nsqd.tcp_addr().port() as u64;
            (p.len() == 1 && p[0]["tcp_port"].as_u64() == Some(port)).then_some(p)
        },
    );
    assert_eq!(producers.len(), 1);

    // The new leader owes exactly the 100 unFINed; 50 more arrive through both survivors.
    let mut consumer = members[&new_leader].nsqd.client();
    consumer.sub_ok(topic, "ch", 1000);
    let mut after = BTreeMap::new();
    consume(
        &mut consumer,
        &rest,
        &mut after,
        true,
        Duration::from_secs(10),
    );
    let other = *members.keys().find(|&&id| id != new_leader).unwrap();
    let mut acked_after = BTreeSet::new();
    for (k, id) in [(0, other), (1, new_leader)] {
        let mut p = members[&id].nsqd.client();
        for i in 0..25 {
            let b = body(1000 + k * 100 + i);
            p.pub_ok(topic, &b);
            acked_after.insert(b);
        }
    }
    consume(
        &mut consumer,
        &acked_after,
        &mut after,
        true,
        Duration::from_secs(10),
    );

    let all_acked: BTreeSet<Vec<u8>> = acked.union(&acked_after).cloned().collect();
    let delivered: BTreeSet<Vec<u8>> = seen.keys().chain(after.keys()).cloned().collect();
    let lost = all_acked.difference(&delivered).count();
    let redelivered_fined = first.iter().filter(|b| after.contains_key(*b)).count();
    println!(
        "verdict: acknowledged {}, delivered {} unique, lost {lost}, FINed-before-kill redelivered {redelivered_fined}",
        all_acked.len(),
        delivered.len()
    );
    assert_eq!(lost, 0);
    assert_eq!(
        redelivered_fined, 0,
        "FINs committed before the kill stay FINed"
    );
}

/// pynsq's `Reader`, knowing only nsqlookupd, consumes a replicated topic while its leader is
/// SIGKILLed mid-stream (`interop/python/test_pynsq_replicated.py`): nothing acknowledged to
/// the HTTP publisher is lost. Fails (never skips) when pynsq is not installed.
#[test]
fn pynsq_reader_keeps_consuming_through_a_leader_kill() {
    let script = harness::workspace_root().join("interop/python/test_pynsq_replicated.py");
    let py = super::interop_cluster::python();
    match std::process::Command::new(&py)
        .args(["-c", "import nsq"])
        .output()
    {
        Ok(o) if o.status.success() => {}
        _ => super::interop_cluster::missing(&format!("`{} -c 'import nsq'` failed", py.display())),
    }
    let lookupd = Lookupd::start();
    let members = start_cluster(&lookupd, 3);
    let topic = "py_replicated";
    create_replicated(&members, topic);
    lookupd.wait_producers(topic, 1, Duration::from_secs(10));
    let mut cmd = std::process::Command::new(&py);
    cmd.arg(&script)
        .arg(format!("--lookupd-http={}", lookupd.http_addr()))
        .arg(format!("--topic={topic}"))
        .arg("--timeout=60")
        .env("PYTHONUNBUFFERED", "1");
    for m in members.values() {
        cmd.arg(format!(
            "--member={},{},{}",
            m.id,
            m.nsqd.http_addr(),
            m.nsqd.pid()
        ));
    }
    let out = harness::run_program(cmd, Duration::from_secs(90));
    eprintln!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        out.stdout, out.stderr
    );
    assert!(
        !out.timed_out && out.status.is_some_and(|s| s.success()),
        "test_pynsq_replicated.py failed: {}",
        out.stdout
    );
    assert!(out.stdout.contains("lost 0"), "{}", out.stdout);
}

/// A member killed and restarted on its data directory catches up from the log it kept plus
/// what the leader sends, and can then lead: after the old leader is killed too, it delivers
/// every acknowledged message (published before, during and after its own outage).
#[test]
fn a_restarted_member_catches_up_and_can_take_over() {
    let lookupd = Lookupd::start();
    let mut members = start_cluster(&lookupd, 3);
    let topic = "restarts";
    let leader = create_replicated(&members, topic);
    let mut c = members[&leader].nsqd.client();
    c.sub_ok(topic, "ch", 0);
    wait_channel_everywhere(&members, topic, "ch");
    let mut p = members[&leader].nsqd.client();
    let mut acked = BTreeSet::new();
    let mut publish = |p: &mut harness::RawClient, range: std::ops::Range<usize>| {
        for i in range {
            p.pub_ok(topic, &body(i));
            acked.insert(body(i));
        }
    };
    publish(&mut p, 0..50);
    let follower = *members.keys().find(|&&id| id != leader).unwrap();
    members.get_mut(&follower).unwrap().nsqd.kill();
    publish(&mut p, 50..100);
    members.get_mut(&follower).unwrap().nsqd.restart(None);
    publish(&mut p, 100..150);
    let want = replication(&members[&leader].nsqd, topic).unwrap()["log_index"].clone();
    harness::wait_until(
        Duration::from_secs(10),
        "the restarted member caught up",
        || replication(&members[&follower].nsqd, topic).is_some_and(|s| s["applied_index"] == want),
    );
    assert_eq!(
        replication(&members[&follower].nsqd, topic).unwrap()["messages"],
        150
    );

    // Kill the leader; the two left (the restarted one among them) elect one that owes all 150.
    drop(c);
    members.remove(&leader).unwrap().nsqd.kill();
    let new_leader = active_leader(&members, topic, Duration::from_secs(15));
    let mut consumer = members[&new_leader].nsqd.client();
    consumer.sub_ok(topic, "ch", 1000);
    let mut seen = BTreeMap::new();
    consume(
        &mut consumer,
        &acked,
        &mut seen,
        true,
        Duration::from_secs(10),
    );
    assert_eq!(seen.len(), 150, "exactly the acknowledged messages");
}

/// `POST /topic/replication?members=` grows a topic from 2 to 3 members through the HTTP API;
/// the node that was outside first sends publishes to the members, then holds a copy.
#[test]
fn members_change_through_the_http_api() {
    let lookupd = Lookupd::start();
    let members = start_cluster(&lookupd, 3);
    let topic = "grow";
    let r = members[&1]
        .nsqd
        .http_post(&format!("/topic/create?topic={topic}&replicas=2"), b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let outsider = *members
        .keys()
        .find(|id| replication(&members[id].nsqd, topic).is_none())
        .expect("one node is outside the group");
    // A publish taken by the outsider is committed by the members.
    members[&outsider]
        .nsqd
        .client()
        .pub_ok(topic, b"from outside");
    assert!(
        members[&outsider].nsqd.topic_stats(topic).is_none(),
        "no plain local topic"
    );
    let r = members[&1]
        .nsqd
        .http_post(&format!("/topic/replication?topic={topic}&members=x"), b"");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = members[&1].nsqd.http_post(
        &format!("/topic/replication?topic={topic}&members=1,2,3"),
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    harness::wait_until(
        Duration::from_secs(10),
        "all three members caught up",
        || {
            members.values().all(|m| {
                replication(&m.nsqd, topic).is_some_and(|s| {
                    s["members"] == serde_json::json!([1, 2, 3]) && s["messages"] == 1
                })
            })
        },
    );
}

/// The leader SIGKILLed five times in a row (each time restarted on its data directory before
/// the next round), then a rolling clean restart (SIGTERM) of all three members, with
/// publishing and FINing between every step: every acknowledged message is delivered, and a
/// message FINed with its FIN committed is not delivered again.
#[test]
fn five_leader_kills_and_a_rolling_restart_lose_nothing() {
    let lookupd = Lookupd::start();
    let mut members = start_cluster(&lookupd, 3);
    let topic = "churn";
    let leader = create_replicated(&members, topic);
    members[&leader].nsqd.client().sub_ok(topic, "ch", 0);
    wait_channel_everywhere(&members, topic, "ch");
    let mut acked = BTreeSet::new();
    let mut fined = BTreeSet::new();
    let mut seq = 0usize;
    let mut kills = Vec::new();
    // One round: 30 publishes through a member that is not the leader, then FIN 10 of what the
    // leader delivers, waiting until those FINs are committed on every member.
    let mut round = |members: &BTreeMap<u64, Member>,
                     acked: &mut BTreeSet<Vec<u8>>,
                     fined: &mut BTreeSet<Vec<u8>>| {
        let leader = active_leader(members, topic, Duration::from_secs(15));
        let via = *members.keys().find(|id| **id != leader).unwrap();
        let mut p = members[&via].nsqd.client();
        for _ in 0..30 {
            p.pub_ok(topic, &body(seq));
            acked.insert(body(seq));
            seq += 1;
        }
        let mut c = members[&leader].nsqd.client();
        // RDY 1, and RDY 0 before the last FIN: nothing is left in flight when this consumer
        // goes (nsqd, like Go, holds a gone consumer's in-flight messages until
        // --msg-timeout, which would only delay them).
        c.sub_ok(topic, "ch", 1);
        let mut got = 0;
        while got < 10 {
            let f = c.read_frame(Duration::from_secs(10));
            if f.frame_type != FrameType::Message {
                continue;
            }
            let m = nsq_protocol::Message::decode(f.data).unwrap();
            got += 1;
            if got == 10 {
                c.rdy(0);
            }
            c.fin(&m.id);
            fined.insert(m.body.to_vec());
        }
        let owed = acked.len() - fined.len();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !members.values().all(|m| {
            replication(&m.nsqd, topic)
                .is_some_and(|s| s["owed"]["ch"].as_u64() == Some(owed as u64))
        }) {
            if Instant::now() > deadline {
                let states: Vec<_> = members
                    .values()
                    .map(|m| (m.id, replication(&m.nsqd, topic)))
                    .collect();
                panic!("FINs not committed everywhere (owed {owed}): {states:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        leader
    };
    for _ in 0..5 {
        let leader = round(&members, &mut acked, &mut fined);
        let t = Instant::now();
        members.get_mut(&leader).unwrap().nsqd.kill();
        // A new leader among the two others.
        harness::wait_for(Duration::from_secs(15), "a new leader", || {
            members
                .iter()
                .filter(|(id, _)| **id != leader)
                .find_map(|(id, m)| {
                    let st = replication(&m.nsqd, topic)?;
                    (st["active"] == true).then_some(*id)
                })
        });
        kills.push(t.elapsed());
        members.get_mut(&leader).unwrap().nsqd.restart(None);
    }
    println!("failover after each of 5 leader kills: {kills:?}");
    // Rolling clean restart, one member at a time, a round after each.
    for id in [1u64, 2, 3] {
        round(&members, &mut acked, &mut fined);
        let m = members.get_mut(&id).unwrap();
        m.nsqd.terminate();
        m.nsqd.restart(None);
    }
    // Everything acknowledged and not FINed is still owed.
    let leader = active_leader(&members, topic, Duration::from_secs(15));
    let mut c = members[&leader].nsqd.client();
    c.sub_ok(topic, "ch", 1000);
    let want: BTreeSet<Vec<u8>> = acked.difference(&fined).cloned().collect();
    let mut seen = BTreeMap::new();
    consume(&mut c, &want, &mut seen, true, Duration::from_secs(15));
    let lost = want.iter().filter(|b| !seen.contains_key(*b)).count();
    let fined_again = seen.keys().filter(|b| fined.contains(*b)).count();
    let again: Vec<String> = seen
        .keys()
        .filter(|b| fined.contains(*b))
        .map(|b| String::from_utf8_lossy(b).to_string())
        .collect();

    println!(
        "verdict: acknowledged {}, FINed {}, delivered at the end {} unique, lost {lost}, FINed redelivered {fined_again}",
        acked.len(),
        fined.len(),
        seen.len()
    );
    assert_eq!(lost, 0);
    assert_eq!(fined_again, 0, "FINed and delivered again: {again:?}");
}

/// A DPUB to a replicated topic keeps its deferral across a failover: the new leader holds the
/// message until it is due, then delivers it.
#[test]
fn a_deferred_publish_stays_deferred_across_a_failover() {
    let lookupd = Lookupd::start();
    let mut members = start_cluster(&lookupd, 3);
    let topic = "later";
    let leader = create_replicated(&members, topic);
    let mut c = members[&leader].nsqd.client();
    c.sub_ok(topic, "ch", 10);
    wait_channel_everywhere(&members, topic, "ch");
    let follower = *members.keys().find(|id| **id != leader).unwrap();
    let mut p = members[&follower].nsqd.client();
    p.dpub(topic, 3000, b"deferred");
    p.expect_ok();
    let published = Instant::now();
    p.pub_ok(topic, b"now");
    // Only the undeferred one comes now.
    let m = c.read_message(Duration::from_secs(5));
    assert_eq!(m.body.as_ref(), b"now");
    c.fin(&m.id);
    harness::wait_until(Duration::from_secs(5), "the FIN committed", || {
        members
            .values()
            .all(|m| replication(&m.nsqd, topic).is_some_and(|s| s["owed"]["ch"] == 1))
    });
    drop(c);
    members.remove(&leader).unwrap().nsqd.kill();
    let new_leader = active_leader(&members, topic, Duration::from_secs(15));
    let mut c = members[&new_leader].nsqd.client();
    c.sub_ok(topic, "ch", 10);
    let m = c.read_message(Duration::from_secs(10));
    let at = published.elapsed();
    assert_eq!(m.body.as_ref(), b"deferred");
    assert!(
        at >= Duration::from_millis(2900),
        "delivered {at:?} after a 3 s DPUB"
    );
    c.fin(&m.id);
    println!("deferred message delivered by the new leader {at:?} after its DPUB (3 s)");
}
