//! Three members in one process, each with its own raft listener on a free loopback port and
//! its own data directory: a replicated topic is created, written through a follower and the
//! leader, the leader is stopped, and the survivors elect a new one that activates delivery
//! with exactly what was committed and not FINed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nsq_raft::{Cluster, ClusterOptions, Deliver, Msg, NodeId, Op, TopicData};
use parking_lot::Mutex;

#[derive(Default)]
struct Recorder {
    active: Mutex<bool>,
    /// What activation handed over, per channel, plus what was published while active.
    owed: Mutex<BTreeMap<String, Vec<Bytes>>>,
}

impl Deliver for Recorder {
    fn activate(&self, data: &TopicData) {
        *self.active.lock() = true;
        let mut o = self.owed.lock();
        o.clear();
        for c in data.channel_names() {
            o.insert(
                c.to_string(),
                data.owed(c).map(|m| m.body.clone()).collect(),
            );
        }
    }
    fn deactivate(&self) {
        *self.active.lock() = false;
        self.owed.lock().clear();
    }
    fn published(&self, msgs: &[Msg]) {
        for v in self.owed.lock().values_mut() {
            v.extend(msgs.iter().map(|m| m.body.clone()));
        }
    }
    fn channel_created(&self, name: &str) {
        self.owed.lock().entry(name.to_string()).or_default();
    }
    fn channel_deleted(&self, name: &str) {
        self.owed.lock().remove(name);
    }
}

fn msg(i: u32) -> Msg {
    let mut id = [b'0'; 16];
    id[8..].copy_from_slice(format!("{i:08x}").as_bytes());
    Msg {
        id,
        timestamp: i as i64,
        defer_until: 0,
        body: Bytes::from(format!("m{i}")),
    }
}

struct Member {
    cluster: Arc<Cluster>,
    rec: Arc<Recorder>,
    server: tokio::task::JoinHandle<()>,
}

async fn wait_until(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start_members(dirs: &[tempfile::TempDir]) -> BTreeMap<NodeId, Member> {
    let n = dirs.len();
    let listeners: Vec<tokio::net::TcpListener> = {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        v
    };
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    let mut members: BTreeMap<NodeId, Member> = BTreeMap::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let me = i as NodeId + 1;
        let peers = (0..n)
            .filter(|&j| j != i)
            .map(|j| (j as NodeId + 1, addrs[j].clone()))
            .collect();
        let rec = Arc::new(Recorder::default());
        let r2 = rec.clone();
        let opts = ClusterOptions::new(me, addrs[i].clone(), peers, dirs[i].path().join("raft"));
        let cluster = Cluster::start(
            opts,
            Arc::new(move |_t: &str| r2.clone() as Arc<dyn Deliver>),
        )
        .await
        .unwrap();
        let router = cluster.router();
        let server = tokio::spawn(async move {
            axum::serve(l, router).await.unwrap();
        });
        members.insert(
            me,
            Member {
                cluster,
                rec,
                server,
            },
        );
    }
    members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_topic_survives_its_leader() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut members = start_members(&dirs).await;
    members[&1].cluster.create("orders", 3).await.unwrap();
    // Creation is idempotent.
    members[&1].cluster.create("orders", 3).await.unwrap();
    let leader = || {
        members
            .iter()
            .find(|(_, m)| *m.rec.active.lock())
            .map(|(id, _)| *id)
    };
    wait_until("an active leader", Duration::from_secs(10), || {
        leader().is_some()
    })
    .await;
    let l1 = leader().unwrap();
    // An idle leader keeps its term: heartbeats keep its majority contact fresh, so the
    // leadership watcher never steps it down (watched for three election timeouts' worth).
    let term = members[&l1].cluster.status("orders").unwrap().term;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = members[&l1].cluster.status("orders").unwrap();
    assert_eq!(
        (st.term, st.active),
        (term, true),
        "an idle leader stays leader"
    );
    let follower = *members.keys().find(|&&id| id != l1).unwrap();
    let deadline = Duration::from_secs(5);
    let c = &members[&follower].cluster;
    c.write("orders", Op::CreateChannel("ch".into()), deadline)
        .await
        .unwrap();
    // Through a follower (forwarded) and through the leader.
    c.write("orders", Op::Publish((0..10).map(msg).collect()), deadline)
        .await
        .unwrap();
    members[&l1]
        .cluster
        .write("orders", Op::Publish((10..20).map(msg).collect()), deadline)
        .await
        .unwrap();
    members[&l1]
        .cluster
        .write(
            "orders",
            Op::Finish {
                channel: "ch".into(),
                ids: (0..5).map(|i| msg(i).id).collect(),
            },
            deadline,
        )
        .await
        .unwrap();
    assert_eq!(
        members[&l1].rec.owed.lock()["ch"].len(),
        20,
        "the leader delivers what it applies"
    );
    let st = members[&l1].cluster.status("orders").unwrap();
    assert_eq!(st.role, "leader");
    assert_eq!(st.members, vec![1, 2, 3]);
    assert_eq!(st.messages, 15);

    // Stop the leader: its listener and its Raft.
    let dead = members.remove(&l1).unwrap();
    dead.server.abort();
    dead.cluster.shutdown().await;
    let start = Instant::now();
    let leader = || {
        members
            .iter()
            .find(|(_, m)| *m.rec.active.lock())
            .map(|(id, _)| *id)
    };
    wait_until("a new leader", Duration::from_secs(10), || {
        leader().is_some()
    })
    .await;
    let l2 = leader().unwrap();
    println!(
        "failover: new leader {l2} active after {:?}",
        start.elapsed()
    );
    let owed: Vec<Bytes> = members[&l2].rec.owed.lock()["ch"].clone();
    let want: Vec<Bytes> = (5..20).map(|i| msg(i).body).collect();
    assert_eq!(owed, want, "the new leader owes exactly what was not FINed");
    // Writes still commit with one member down (2 of 3), through either survivor.
    for id in members.keys() {
        members[id]
            .cluster
            .write("orders", Op::Publish(vec![msg(100 + *id as u32)]), deadline)
            .await
            .unwrap();
    }
    assert_eq!(members[&l2].cluster.status("orders").unwrap().messages, 17);
}

/// `replicas=2` on a three-node cluster: the third node is told the topic is replicated and
/// where, so a write it takes is committed by the members (never a topic of its own); it
/// keeps knowing after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_member_sends_writes_to_the_members() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let members = start_members(&dirs).await;
    members[&1].cluster.create("two", 2).await.unwrap();
    let outsider = *members
        .keys()
        .find(|id| members[id].cluster.group("two").is_none())
        .expect("one node is not a member");
    let c = &members[&outsider].cluster;
    assert!(c.is_replicated("two"));
    assert_eq!(c.remote_members("two").unwrap().len(), 2);
    assert!(c.status("two").is_none());
    let deadline = Duration::from_secs(5);
    c.write("two", Op::CreateChannel("ch".into()), deadline)
        .await
        .unwrap();
    c.write("two", Op::Publish((0..3).map(msg).collect()), deadline)
        .await
        .unwrap();
    let leader = members
        .values()
        .find(|m| *m.rec.active.lock())
        .expect("an active leader");
    assert_eq!(leader.rec.owed.lock()["ch"].len(), 3);
    // The outsider still knows after a restart (from its data directory).
    let me = members.keys().position(|id| *id == outsider).unwrap();
    let again = Cluster::start(
        ClusterOptions::new(
            outsider,
            "127.0.0.1:1".into(),
            BTreeMap::new(),
            dirs[me].path().join("raft"),
        ),
        Arc::new(|_t: &str| Arc::new(Recorder::default()) as Arc<dyn Deliver>),
    )
    .await
    .unwrap();
    assert!(again.is_replicated("two") && again.group("two").is_none());
}

/// Membership changes through the cluster API: a topic on 2 of 3 nodes grows to all 3 (the
/// new node joins as a learner, catches up, then votes) and shrinks back to 2 without its
/// leader; the node that left becomes a non-member that still sends writes to the members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_can_be_added_and_removed() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let members = start_members(&dirs).await;
    let deadline = Duration::from_secs(5);
    members[&1].cluster.create("grow", 2).await.unwrap();
    let c1 = &members[&1].cluster;
    c1.write("grow", Op::CreateChannel("ch".into()), deadline)
        .await
        .unwrap();
    c1.write("grow", Op::Publish((0..5).map(msg).collect()), deadline)
        .await
        .unwrap();
    let outsider = *members
        .keys()
        .find(|id| members[id].cluster.group("grow").is_none())
        .unwrap();
    // Asked of a member (forwarded to the leader if needed).
    c1.change_members("grow", [1, 2, 3].into()).await.unwrap();
    let newcomer = &members[&outsider].cluster;
    assert!(
        newcomer.group("grow").is_some(),
        "the outsider is a member now"
    );
    wait_until("the newcomer to catch up", Duration::from_secs(10), || {
        newcomer
            .status("grow")
            .is_some_and(|s| s.messages == 5 && s.members == vec![1, 2, 3])
    })
    .await;
    // Remove a member that is not the leader.
    let leader = c1.status("grow").unwrap().leader.unwrap();
    let gone = *[1u64, 2, 3]
        .iter()
        .find(|id| **id != leader && **id != outsider)
        .unwrap();
    let keep: std::collections::BTreeSet<u64> =
        [1u64, 2, 3].into_iter().filter(|id| *id != gone).collect();
    members[&outsider]
        .cluster
        .change_members("grow", keep.clone())
        .await
        .unwrap();
    let g = &members[&gone].cluster;
    wait_until("the removed node to leave", Duration::from_secs(5), || {
        g.group("grow").is_none()
    })
    .await;
    assert_eq!(
        g.remote_members("grow").unwrap(),
        keep.iter().copied().collect::<Vec<_>>()
    );
    g.write("grow", Op::Publish(vec![msg(9)]), deadline)
        .await
        .unwrap();
    assert_eq!(members[&leader].cluster.status("grow").unwrap().messages, 6);
    assert_eq!(
        members[&leader].cluster.status("grow").unwrap().members,
        keep.into_iter().collect::<Vec<_>>()
    );
}
