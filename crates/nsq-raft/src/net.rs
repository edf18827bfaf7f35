//! The peer transport: openraft's RPCs (and our forwarded writes) as HTTP/1.1 `POST`s of
//! bincode bodies to the member's `--raft-address`, over the workspace's one HTTP client
//! (`nsq-http-client`: pooled keep-alive connections, timeouts, bounded bodies).
//!
//! Paths: `/raft/<topic>/append`, `/vote`, `/snapshot` (openraft), `/write` (a publish or
//! FIN batch forwarded to the leader), `/join` (become a member of a new group). Topic names
//! are NSQ names (`[.a-zA-Z0-9_-]`, `#ephemeral`), so they need no escaping beyond `#`.

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{NodeId, TypeConfig};

/// A path segment for a topic name.
pub(crate) fn seg(topic: &str) -> String {
    topic.replace('#', "%23")
}

/// `POST http://<addr>/raft/<topic>/<what>` with a bincode body; the reply is bincode. `ttl`
/// bounds it below the client's request timeout (a request on a kept-alive connection to a
/// host that was cut off would otherwise wait for all of it).
pub(crate) async fn post<Req: Serialize, Resp: DeserializeOwned>(
    client: &nsq_http_client::Client,
    addr: &str,
    topic: &str,
    what: &str,
    req: &Req,
    ttl: Option<std::time::Duration>,
) -> Result<Resp, TransportError> {
    match ttl {
        None => post_once(client, addr, topic, what, req).await,
        Some(t) => tokio::time::timeout(t, post_once(client, addr, topic, what, req))
            .await
            .map_err(|_| TransportError::Failed(format!("{addr}: no answer within {t:?}")))?,
    }
}

async fn post_once<Req: Serialize, Resp: DeserializeOwned>(
    client: &nsq_http_client::Client,
    addr: &str,
    topic: &str,
    what: &str,
    req: &Req,
) -> Result<Resp, TransportError> {
    let body = bincode::serialize(req).map_err(|e| TransportError::Encode(e.to_string()))?;
    let url = format!("http://{addr}/raft/{}/{what}", seg(topic));
    let r = client
        .request(
            nsq_http_client::Method::POST,
            &url,
            &[("content-type", "application/octet-stream")],
            body.into(),
        )
        .await
        .map_err(|e| match e {
            nsq_http_client::Error::Connect { .. } => TransportError::Unreachable(e.to_string()),
            e => TransportError::Failed(e.to_string()),
        })?;
    if r.status != 200 {
        return Err(TransportError::Failed(format!(
            "{url}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
        )));
    }
    bincode::deserialize(&r.body).map_err(|e| TransportError::Failed(format!("{url}: {e}")))
}

/// Why a peer request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer could not be connected to.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The request failed after connecting, or the answer was not understood.
    #[error("{0}")]
    Failed(String),
    /// The request could not be encoded.
    #[error("encoding: {0}")]
    Encode(String),
}

fn rpc_err<E: std::error::Error>(e: TransportError) -> RPCError<NodeId, BasicNode, E> {
    match e {
        TransportError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

/// Makes one connection object per peer for one group.
#[derive(Clone)]
pub struct Network {
    pub(crate) client: nsq_http_client::Client,
    pub(crate) topic: String,
    /// Peers whose last request failed, so each outage is logged once (openraft's own
    /// per-RPC lines are filtered out below `debug`).
    pub(crate) down: Arc<Mutex<HashSet<NodeId>>>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            client: self.client.clone(),
            topic: self.topic.clone(),
            target,
            addr: node.addr.clone(),
            down: self.down.clone(),
        }
    }
}

/// One peer of one group.
pub struct Peer {
    client: nsq_http_client::Client,
    topic: String,
    target: NodeId,
    addr: String,
    down: Arc<Mutex<HashSet<NodeId>>>,
}

impl Peer {
    async fn call<Req: Serialize, Resp: DeserializeOwned, E>(
        &self,
        what: &str,
        req: &Req,
        ttl: std::time::Duration,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        E: std::error::Error + DeserializeOwned,
    {
        let r: Result<Resp, RaftError<NodeId, E>> =
            match post(&self.client, &self.addr, &self.topic, what, req, Some(ttl)).await {
                Ok(r) => {
                    if self.down.lock().remove(&self.target) {
                        tracing::info!(
                            "RAFT: topic {}: node {} ({}) reachable again",
                            self.topic,
                            self.target,
                            self.addr
                        );
                    }
                    r
                }
                Err(e) => {
                    if self.down.lock().insert(self.target) {
                        tracing::warn!(
                            "RAFT: topic {}: node {} ({}) {e}",
                            self.topic,
                            self.target,
                            self.addr
                        );
                    }
                    return Err(rpc_err(e));
                }
            };
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("append", &req, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("snapshot", &req, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        req: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("vote", &req, option.hard_ttl()).await
    }
}
