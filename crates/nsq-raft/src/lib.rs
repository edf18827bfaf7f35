//! Replicated topics (nsq-rs extension, issue 14): a topic created with `replicas=N` lives on N
//! nsqd members that agree on its history through **one Raft group per topic** (openraft), so a
//! publish answered `OK` is on a majority's disk and a member's death loses nothing
//! acknowledged.
//!
//! Why openraft: an async (tokio) Raft with pluggable storage and transport, joint-consensus
//! membership changes and learners, in production at Databend; TiKV's `raft` is a sans-I/O core
//! that would leave the tick/ready loop, log persistence ordering and snapshot streaming to us.
//! Why a group per topic: each topic has its own leader (load spreads over members), its own
//! members (`replicas` ≤ cluster size), and a topic's log is trimmed by its own snapshots.
//!
//! Pieces: [`topic`] (the replicated state, sans-I/O), [`store`] (openraft's log store on
//! nsq-store's entry log, and the state machine that hands the state to the node's delivery),
//! [`net`] (peer RPCs over HTTP), and [`Cluster`] here: the groups of one node, their creation,
//! writes from any member (forwarded to the leader), status, and the peer HTTP routes.
//!
//! Data directory: `<data-path>/raft/<topic>/` holds `members` (the initial member list), the
//! entry log and state file, and `snapshot`.

// openraft's error types (`StorageError`, `RaftError`) are what its traits require us to
// return; they are large by its design (openraft's own examples allow this lint too).
#![allow(clippy::result_large_err)]

pub mod net;
pub mod store;
pub mod topic;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use openraft::error::{ClientWriteError, InstallSnapshotError, RaftError};
use openraft::{BasicNode, ServerState};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

pub use store::Deliver;
pub use topic::{Msg, Op, OpReply, TopicData};

/// How long one forwarded write may wait for the leader's answer before it is tried again
/// (through whoever leads by then): a leader cut off mid-request must not hold a publish for
/// the HTTP client's whole request timeout.
const FORWARD_TTL: Duration = Duration::from_secs(2);

/// A member's id: nsqd's `--node-id`.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// openraft's types for a replicated topic.
    pub TypeConfig:
        D = Op,
        R = OpReply,
);

/// One group's Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;

/// What a node needs to take part.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// This node's id (`--node-id`).
    pub me: NodeId,
    /// The address peers reach this node's raft listener at (`--raft-address`).
    pub addr: String,
    /// Every other member: id → raft address (`--raft-peers`).
    pub peers: BTreeMap<NodeId, String>,
    /// `<data-path>/raft`.
    pub dir: PathBuf,
    /// fdatasync each appended group of entries before it counts (`--sync-every=1`, and
    /// always when unset: a replicated publish is on disk on a majority before `OK`).
    pub sync: bool,
    /// Raft timing: heartbeat, and the election timeout range (ms).
    pub heartbeat_ms: u64,
    /// Lower bound of the randomised election timeout (ms).
    pub election_min_ms: u64,
}

impl ClusterOptions {
    /// Defaults for the timings: 100 ms heartbeats, 500–1000 ms election timeout.
    pub fn new(me: NodeId, addr: String, peers: BTreeMap<NodeId, String>, dir: PathBuf) -> Self {
        ClusterOptions {
            me,
            addr,
            peers,
            dir,
            sync: true,
            heartbeat_ms: 100,
            election_min_ms: 500,
        }
    }
}

/// Errors of cluster operations, worded for the HTTP API and logs.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// More replicas asked for than there are members.
    #[error("replicas={asked} but the cluster has {have} nodes (this one and --raft-peers)")]
    NotEnoughNodes {
        /// `replicas`.
        asked: usize,
        /// Cluster size.
        have: usize,
    },
    /// A chosen member did not join.
    #[error("node {id} ({addr}) did not join: {why}")]
    JoinFailed {
        /// Its id.
        id: NodeId,
        /// Its raft address.
        addr: String,
        /// What went wrong.
        why: String,
    },
    /// No leader within the deadline (no majority reachable).
    #[error("no leader for topic {topic} within {after:?} (a majority of its members must be reachable)")]
    NoLeader {
        /// The topic.
        topic: String,
        /// The deadline.
        after: Duration,
    },
    /// Storage failure opening a group.
    #[error("{0}")]
    Store(#[from] nsq_store::StoreError),
    /// openraft refused.
    #[error("{0}")]
    Raft(String),
}

/// The answer of `/raft/<topic>/write`.
#[derive(Debug, Serialize, Deserialize)]
enum WireWrite {
    Done,
    NotLeader,
    Failed(String),
}

/// One replicated topic on this node.
pub struct Group {
    /// Topic name.
    pub topic: String,
    /// The Raft handle.
    pub raft: Raft,
    sm: store::StateMachine,
}

impl Group {
    /// Whether this member delivers the topic now.
    pub fn is_active(&self) -> bool {
        self.sm.is_active()
    }
}

/// What `/stats` shows of a replicated topic.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    /// `leader`, `follower`, `candidate` or `learner`.
    pub role: &'static str,
    /// Current leader's node id, if known.
    pub leader: Option<NodeId>,
    /// Voter ids.
    pub members: Vec<NodeId>,
    /// Raft term.
    pub term: u64,
    /// Last log index on this member.
    pub log_index: u64,
    /// Last applied index on this member.
    pub applied_index: u64,
    /// On the leader: entries each follower is behind.
    pub lag: BTreeMap<NodeId, u64>,
    /// Messages the replicated state keeps.
    pub messages: usize,
    /// Messages each channel still owes, by channel name.
    pub owed: BTreeMap<String, u64>,
    /// Whether this member delivers.
    pub active: bool,
}

/// Makes a node's delivery for a topic.
pub type DeliverFactory = Arc<dyn Fn(&str) -> Arc<dyn Deliver> + Send + Sync>;

/// This node's replicated topics (see the crate doc).
pub struct Cluster {
    opts: ClusterOptions,
    client: nsq_http_client::Client,
    config: Arc<openraft::Config>,
    groups: RwLock<HashMap<String, Arc<Group>>>,
    /// Replicated topics whose group this node is not in: their members (writes are sent
    /// there; the node serves nothing of them).
    remote: RwLock<HashMap<String, BTreeMap<NodeId, String>>>,
    /// Serialises group creation.
    creating: tokio::sync::Mutex<()>,
    factory: DeliverFactory,
}

impl Cluster {
    /// Starts the node's part: re-opens every group found under `opts.dir`.
    pub async fn start(
        opts: ClusterOptions,
        factory: DeliverFactory,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let config = openraft::Config {
            cluster_name: "nsq-rs".into(),
            heartbeat_interval: opts.heartbeat_ms,
            election_timeout_min: opts.election_min_ms,
            election_timeout_max: opts.election_min_ms * 2,
            // Entries kept past a snapshot (for followers slightly behind): fewer than
            // openraft's 1,000, since a purge rewrites what is kept (an MPUB entry is ~40 KB).
            max_in_snapshot_log_to_keep: 256,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let client = nsq_http_client::Client::new(nsq_http_client::Options {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(10),
            max_response_bytes: 1 << 30,
            user_agent: Some("nsq-rs raft".into()),
            ..Default::default()
        })
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        std::fs::create_dir_all(&opts.dir)
            .map_err(|e| nsq_store::StoreError::io("creating", &opts.dir, e))?;
        let c = Arc::new(Cluster {
            opts,
            client,
            config: Arc::new(config),
            groups: RwLock::new(HashMap::new()),
            remote: RwLock::new(HashMap::new()),
            creating: tokio::sync::Mutex::new(()),
            factory,
        });
        let rd = std::fs::read_dir(&c.opts.dir)
            .map_err(|e| nsq_store::StoreError::io("listing", &c.opts.dir, e))?;
        for ent in rd.flatten() {
            let Some(topic) = ent.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Some(members) = nsq_store::entrylog::read_small(&ent.path().join("members"))?
            else {
                continue;
            };
            let members: BTreeMap<NodeId, String> =
                serde_json::from_slice(&members).map_err(|e| {
                    ClusterError::Raft(format!("{}/members: {e}", ent.path().display()))
                })?;
            if !members.contains_key(&c.opts.me) {
                c.remote.write().insert(topic.clone(), members);
                continue;
            }
            c.open_group(&topic, &members).await?;
            tracing::info!(
                "RAFT: topic {topic}: re-opened (members {:?})",
                members.keys()
            );
        }
        Ok(c)
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.opts.me
    }

    /// The group of `topic`, if it is replicated here.
    pub fn group(&self, topic: &str) -> Option<Arc<Group>> {
        self.groups.read().get(topic).cloned()
    }

    /// Whether `topic` is replicated (this node a member of its group, or told of it as a
    /// non-member).
    pub fn is_replicated(&self, topic: &str) -> bool {
        self.groups.read().contains_key(topic) || self.remote.read().contains_key(topic)
    }

    /// The members of a replicated topic this node is not a member of.
    pub fn remote_members(&self, topic: &str) -> Option<Vec<NodeId>> {
        self.remote
            .read()
            .get(topic)
            .map(|m| m.keys().copied().collect())
    }

    /// Records that `topic` is replicated on `members`, this node not among them.
    fn note_remote(
        &self,
        topic: &str,
        members: &BTreeMap<NodeId, String>,
    ) -> Result<(), ClusterError> {
        let dir = self.opts.dir.join(topic);
        std::fs::create_dir_all(&dir)
            .map_err(|e| nsq_store::StoreError::io("creating", &dir, e))?;
        let b = serde_json::to_vec(members).expect("a map of strings");
        nsq_store::entrylog::write_small(&dir, "members", &b)?;
        self.remote
            .write()
            .insert(topic.to_string(), members.clone());
        Ok(())
    }

    /// Names of the replicated topics here.
    pub fn topics(&self) -> Vec<String> {
        let mut v: Vec<String> = self.groups.read().keys().cloned().collect();
        v.sort();
        v
    }

    async fn open_group(
        self: &Arc<Self>,
        topic: &str,
        members: &BTreeMap<NodeId, String>,
    ) -> Result<Arc<Group>, ClusterError> {
        if let Some(g) = self.group(topic) {
            return Ok(g);
        }
        let dir = self.opts.dir.join(topic);
        std::fs::create_dir_all(&dir)
            .map_err(|e| nsq_store::StoreError::io("creating", &dir, e))?;
        if nsq_store::entrylog::read_small(&dir.join("members"))?.is_none() {
            let b = serde_json::to_vec(members).expect("a map of strings");
            nsq_store::entrylog::write_small(&dir, "members", &b)?;
        }
        let log = store::LogStore::open(&dir, self.opts.sync)?;
        let sm = store::StateMachine::open(&dir, self.opts.me, (self.factory)(topic))?;
        let net = net::Network {
            client: self.client.clone(),
            topic: topic.to_string(),
            down: Default::default(),
        };
        let raft = Raft::new(self.opts.me, self.config.clone(), net, log, sm.clone())
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        sm.set_live(raft.metrics());
        let g = Arc::new(Group {
            topic: topic.to_string(),
            raft,
            sm,
        });
        self.groups.write().insert(topic.to_string(), g.clone());
        tokio::spawn(watch_leadership(
            g.clone(),
            self.config.election_timeout_max,
        ));
        Ok(g)
    }

    /// The members a new topic with `replicas` copies gets: this node and the next
    /// `replicas − 1` peers by id, starting at a place chosen by the topic name (so topics
    /// spread over the cluster).
    fn choose(
        &self,
        topic: &str,
        replicas: usize,
    ) -> Result<BTreeMap<NodeId, String>, ClusterError> {
        let have = self.opts.peers.len() + 1;
        if replicas == 0 || replicas > have {
            return Err(ClusterError::NotEnoughNodes {
                asked: replicas,
                have,
            });
        }
        let peers: Vec<(&NodeId, &String)> = self.opts.peers.iter().collect();
        let start = topic
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        let mut out = BTreeMap::new();
        out.insert(self.opts.me, self.opts.addr.clone());
        for k in 0..replicas - 1 {
            let (id, addr) = peers[(start + k) % peers.len()];
            out.insert(*id, addr.clone());
        }
        Ok(out)
    }

    /// Creates `topic` replicated on `replicas` members (this node among them) and waits for
    /// its first leader. Idempotent for a topic already replicated here.
    pub async fn create(
        self: &Arc<Self>,
        topic: &str,
        replicas: usize,
    ) -> Result<(), ClusterError> {
        let _g = self.creating.lock().await;
        if self.is_replicated(topic) {
            return Ok(());
        }
        let members = self.choose(topic, replicas)?;
        for (id, addr) in &members {
            if *id == self.opts.me {
                continue;
            }
            let r: Result<Result<(), String>, _> =
                net::post(&self.client, addr, topic, "join", &members, None).await;
            let why = match r {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(e) => e.to_string(),
            };
            return Err(ClusterError::JoinFailed {
                id: *id,
                addr: addr.clone(),
                why,
            });
        }
        let g = self.open_group(topic, &members).await?;
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|(id, a)| (*id, BasicNode::new(a)))
            .collect();
        match g.raft.initialize(nodes).await {
            Ok(()) => {}
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {}
            Err(e) => return Err(ClusterError::Raft(e.to_string())),
        }
        let after = Duration::from_secs(10);
        g.raft
            .wait(Some(after))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .map_err(|_| ClusterError::NoLeader {
                topic: topic.to_string(),
                after,
            })?;
        // Every other node learns the topic is replicated (and where), so that a publish it
        // takes goes to the members instead of creating a plain local topic of that name.
        for (id, addr) in &self.opts.peers {
            if members.contains_key(id) {
                continue;
            }
            let r: Result<Result<(), String>, _> =
                net::post(&self.client, addr, topic, "join", &members, None).await;
            let why = match r {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(e) => e.to_string(),
            };
            tracing::error!(
                "RAFT: topic {topic}: node {id} ({addr}) was not told that the topic is replicated \
                 ({why}); until it is, a publish it takes to {topic} creates a plain local topic"
            );
        }
        tracing::info!("RAFT: topic {topic}: created on {:?}", members.keys());
        Ok(())
    }

    /// Commits `op` to `topic`'s log through whichever member leads, retrying through elections
    /// until `deadline` has passed. `Ok` means a majority has it.
    pub async fn write(&self, topic: &str, op: Op, deadline: Duration) -> Result<(), String> {
        let Some(g) = self.group(topic) else {
            let members = self.remote.read().get(topic).cloned();
            return match members {
                Some(m) => self.write_remote(topic, &m, op, deadline).await,
                None => Err(format!("topic {topic} is not replicated here")),
            };
        };
        let start = Instant::now();
        let mut last_err = String::from("no leader");
        loop {
            match g.raft.client_write(op.clone()).await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    if let Some(node) = f.leader_node {
                        match self.forward(&node.addr, topic, &op).await {
                            Ok(WireWrite::Done) => return Ok(()),
                            Ok(WireWrite::NotLeader) => last_err = "leader changed".into(),
                            Ok(WireWrite::Failed(e)) => return Err(e),
                            Err(e) => last_err = format!("forwarding to the leader: {e}"),
                        }
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
            if start.elapsed() >= deadline {
                return Err(format!(
                    "not committed within {deadline:?} ({last_err}; a majority of the topic's members must be reachable)"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Changes `topic`'s voting members to `want` (node ids: this node or `--raft-peers`),
    /// with openraft's safety: new nodes join as learners and catch up first, then one joint
    /// consensus change replaces the voters. Nodes that leave drop their copy and, like every
    /// other non-member, are told where the topic lives now. Called on a member that is not
    /// the leader, it is forwarded to the leader.
    pub async fn change_members(
        self: &Arc<Self>,
        topic: &str,
        want: BTreeSet<NodeId>,
    ) -> Result<(), String> {
        let g = self
            .group(topic)
            .ok_or_else(|| format!("this node is not a member of topic {topic}'s group"))?;
        if want.is_empty() {
            return Err("the member list is empty".into());
        }
        let mut addrs = BTreeMap::new();
        for id in &want {
            let addr = if *id == self.opts.me {
                self.opts.addr.clone()
            } else {
                self.opts
                    .peers
                    .get(id)
                    .cloned()
                    .ok_or_else(|| format!("node {id} is not in --raft-peers"))?
            };
            addrs.insert(*id, addr);
        }
        let (leader, current) = {
            let m = g.raft.metrics().borrow().clone();
            let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
            (m.current_leader, voters)
        };
        if leader != Some(self.opts.me) {
            let Some(l) = leader else {
                return Err(format!("topic {topic} has no leader now"));
            };
            let addr = self
                .opts
                .peers
                .get(&l)
                .ok_or_else(|| format!("leader {l} is not in --raft-peers"))?;
            let r: Result<Result<(), String>, _> =
                net::post(&self.client, addr, topic, "members", &want, None).await;
            return r.map_err(|e| e.to_string())?;
        }
        for (id, addr) in &addrs {
            if current.contains(id) {
                continue;
            }
            let r: Result<Result<(), String>, _> =
                net::post(&self.client, addr, topic, "join", &addrs, None).await;
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("node {id} did not join: {e}")),
                Err(e) => return Err(format!("node {id} did not join: {e}")),
            }
            g.raft
                .add_learner(*id, BasicNode::new(addr), true)
                .await
                .map_err(|e| format!("adding node {id} as a learner: {e}"))?;
        }
        g.raft
            .change_membership(want.clone(), false)
            .await
            .map_err(|e| format!("changing the members: {e}"))?;
        tracing::info!("RAFT: topic {topic}: members now {want:?} (were {current:?})");
        for (id, addr) in &self.opts.peers {
            if want.contains(id) {
                continue;
            }
            let what = if current.contains(id) {
                "leave"
            } else {
                "join"
            };
            let r: Result<Result<(), String>, _> =
                net::post(&self.client, addr, topic, what, &addrs, None).await;
            if !matches!(r, Ok(Ok(()))) {
                tracing::error!(
                    "RAFT: topic {topic}: node {id} ({addr}) was not told its new members: {r:?}"
                );
            }
        }
        if !want.contains(&self.opts.me) {
            self.leave(topic, &addrs).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// This node is no longer a member: stop the group, drop its files, remember the members.
    async fn leave(
        &self,
        topic: &str,
        members: &BTreeMap<NodeId, String>,
    ) -> Result<(), ClusterError> {
        let g = self.groups.write().remove(topic);
        if let Some(g) = g {
            g.sm.step_down();
            let _ = g.raft.shutdown().await;
            let dir = self.opts.dir.join(topic);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!("RAFT: topic {topic}: removing {}: {e}", dir.display());
            }
            tracing::info!("RAFT: topic {topic}: this node left the group");
        }
        self.note_remote(topic, members)
    }

    /// Offers `op` once to the member at `addr` (`/raft/<topic>/write`, within
    /// [`FORWARD_TTL`]).
    async fn forward(
        &self,
        addr: &str,
        topic: &str,
        op: &Op,
    ) -> Result<WireWrite, net::TransportError> {
        net::post(&self.client, addr, topic, "write", op, Some(FORWARD_TTL)).await
    }

    /// A write from a non-member: offered to each member in turn (a member forwards it to
    /// the leader only once, so a member that is not the leader answers `NotLeader`).
    async fn write_remote(
        &self,
        topic: &str,
        members: &BTreeMap<NodeId, String>,
        op: Op,
        deadline: Duration,
    ) -> Result<(), String> {
        let start = Instant::now();
        let mut last_err = String::from("no member answered");
        loop {
            for addr in members.values() {
                match self.forward(addr, topic, &op).await {
                    Ok(WireWrite::Done) => return Ok(()),
                    Ok(WireWrite::NotLeader) => last_err = "no leader among the members".into(),
                    Ok(WireWrite::Failed(e)) => return Err(e),
                    Err(e) => last_err = format!("member {addr}: {e}"),
                }
            }
            if start.elapsed() >= deadline {
                return Err(format!("not committed within {deadline:?} ({last_err})"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `topic`'s status on this member.
    pub fn status(&self, topic: &str) -> Option<GroupStatus> {
        let g = self.group(topic)?;
        let m = g.raft.metrics().borrow().clone();
        let log_index = m.last_log_index.unwrap_or(0);
        let (messages, owed) = g.sm.figures();
        Some(GroupStatus {
            role: match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                _ => "learner",
            },
            leader: m.current_leader,
            members: m
                .membership_config
                .membership()
                .voter_ids()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            term: m.current_term,
            log_index,
            applied_index: m.last_applied.map_or(0, |l| l.index),
            lag: m
                .replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .filter(|(id, _)| **id != self.opts.me)
                        .map(|(id, l)| (*id, log_index.saturating_sub(l.map_or(0, |l| l.index))))
                        .collect()
                })
                .unwrap_or_default(),
            messages,
            owed,
            active: g.sm.is_active(),
        })
    }

    /// Stops every group's Raft.
    pub async fn shutdown(&self) {
        let groups: Vec<Arc<Group>> = self.groups.read().values().cloned().collect();
        for g in groups {
            if let Err(e) = g.raft.shutdown().await {
                tracing::warn!("RAFT: topic {}: shutdown: {e}", g.topic);
            }
        }
    }

    /// The peer routes (serve on `--raft-address`).
    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/raft/{topic}/append", post(append))
            .route("/raft/{topic}/vote", post(vote))
            .route("/raft/{topic}/snapshot", post(snapshot))
            .route("/raft/{topic}/write", post(write))
            .route("/raft/{topic}/join", post(join))
            .route("/raft/{topic}/leave", post(leave))
            .route("/raft/{topic}/members", post(members))
            .with_state(self.clone())
    }
}

/// Steps delivery down when this member stops being leader, or when it has not heard from a
/// majority for two election timeouts (cut off: a new leader is likely elsewhere); in the latter
/// case it asks for an election, so that if it is still the rightful leader it wins a new term
/// and its blank entry re-activates delivery.
async fn watch_leadership(g: Arc<Group>, election_max_ms: u64) {
    let mut rx = g.raft.metrics();
    let mut tick = tokio::time::interval(Duration::from_millis(election_max_ms));
    loop {
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
        }
        let (leader, stale) = {
            let m = rx.borrow();
            (
                m.state == ServerState::Leader,
                m.millis_since_quorum_ack
                    .is_some_and(|ms| ms > 2 * election_max_ms),
            )
        };
        if !stale {
            g.sm.observe_role();
        }
        if (!leader || stale) && g.sm.is_active() {
            let why = if leader {
                "no majority heard from"
            } else {
                "not the leader"
            };
            tracing::warn!("RAFT: topic {}: no longer delivering ({why})", g.topic);
            g.sm.step_down();
            if leader {
                let _ = g.raft.trigger().elect().await;
            }
        }
    }
}

fn bin<T: Serialize>(v: &T) -> axum::response::Response {
    match bincode::serialize(v) {
        Ok(b) => (StatusCode::OK, b).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, axum::response::Response> {
    bincode::deserialize(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("undecodable request: {e}")).into_response())
}

/// A peer route's answer: a refusal (unknown group, undecodable body) is the `Err` side.
type Reply = Result<axum::response::Response, axum::response::Response>;

/// The group a peer request is for and its decoded body.
fn group_request<T: serde::de::DeserializeOwned>(
    c: &Cluster,
    topic: &str,
    body: &[u8],
) -> Result<(Arc<Group>, T), axum::response::Response> {
    let g = c.group(topic).ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            format!("topic {topic} is not replicated here"),
        )
            .into_response()
    })?;
    Ok((g, decode(body)?))
}

async fn append(State(c): State<Arc<Cluster>>, Path(topic): Path<String>, body: Bytes) -> Reply {
    let (g, req) = group_request(&c, &topic, &body)?;
    Ok(bin(&g.raft.append_entries(req).await))
}

async fn vote(State(c): State<Arc<Cluster>>, Path(topic): Path<String>, body: Bytes) -> Reply {
    let (g, req) = group_request(&c, &topic, &body)?;
    Ok(bin(&g.raft.vote(req).await))
}

async fn snapshot(State(c): State<Arc<Cluster>>, Path(topic): Path<String>, body: Bytes) -> Reply {
    let (g, req) = group_request(&c, &topic, &body)?;
    let r: Result<_, RaftError<NodeId, InstallSnapshotError>> = g.raft.install_snapshot(req).await;
    Ok(bin(&r))
}

async fn write(State(c): State<Arc<Cluster>>, Path(topic): Path<String>, body: Bytes) -> Reply {
    let (g, op) = group_request::<Op>(&c, &topic, &body)?;
    Ok(bin(&match g.raft.client_write(op).await {
        Ok(_) => WireWrite::Done,
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => WireWrite::NotLeader,
        Err(e) => WireWrite::Failed(e.to_string()),
    }))
}

async fn leave(
    State(c): State<Arc<Cluster>>,
    Path(topic): Path<String>,
    body: Bytes,
) -> axum::response::Response {
    let members: BTreeMap<NodeId, String> = match decode(&body) {
        Ok(m) => m,
        Err(e) => return e,
    };
    if members.contains_key(&c.opts.me) {
        return bin(&Err::<(), String>(
            "this node is in the new member list".into(),
        ));
    }
    bin(&c.leave(&topic, &members).await.map_err(|e| e.to_string()))
}

async fn members(
    State(c): State<Arc<Cluster>>,
    Path(topic): Path<String>,
    body: Bytes,
) -> axum::response::Response {
    let want: BTreeSet<NodeId> = match decode(&body) {
        Ok(m) => m,
        Err(e) => return e,
    };
    bin(&c.change_members(&topic, want).await)
}

async fn join(
    State(c): State<Arc<Cluster>>,
    Path(topic): Path<String>,
    body: Bytes,
) -> axum::response::Response {
    let members: BTreeMap<NodeId, String> = match decode(&body) {
        Ok(m) => m,
        Err(e) => return e,
    };
    if !nsq_protocol::names::is_valid_topic_name(topic.as_bytes()) {
        return bin(&Err::<(), String>(format!("invalid topic name {topic:?}")));
    }
    if !members.contains_key(&c.opts.me) {
        if c.group(&topic).is_some() {
            return bin(&Err::<(), String>(format!(
                "node {} is a member of topic {topic}'s group",
                c.opts.me
            )));
        }
        return bin(&c.note_remote(&topic, &members).map_err(|e| e.to_string()));
    }
    // A node that knew the topic as a non-member becomes a member (a membership change).
    if c.remote.write().remove(&topic).is_some() {
        let _ = std::fs::remove_file(c.opts.dir.join(&topic).join("members"));
    }
    if nsq_protocol::names::is_valid_topic_name(topic.as_bytes()) {
        bin(&c
            .open_group(&topic, &members)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()))
    } else {
        bin(&Err::<(), String>(format!("invalid topic name {topic:?}")))
    }
}
