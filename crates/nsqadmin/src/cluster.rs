//! Reading and changing the cluster through the daemons' HTTP APIs (Go's
//! `nsqadmin/clusterinfo`). Every fan-out runs concurrently, each request bounded by the
//! client's timeouts, so one dead node costs one timeout, not one per node.

use futures::future::join_all;
use serde::de::DeserializeOwned;

use crate::client::{query_escape, Client, ClientError};
use nsq_http::api::lookupd::{Lookup, Node, Nodes, Topics};
use nsq_http::api::nsqd::Info;

use crate::model::{NodeError, NsqdStats, Producer};

/// Where the cluster is read from.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// `--lookupd-http-address`es.
    Lookupd(Vec<String>),
    /// `--nsqd-http-address`es.
    Nsqd(Vec<String>),
}

/// The cluster as seen through [`Upstream`].
#[derive(Debug, Clone)]
pub struct Cluster {
    /// HTTP client with the configured timeouts.
    pub client: Client,
    /// The configured daemons.
    pub upstream: Upstream,
}

/// Results of a fan-out: the successes and, per failed node, why.
pub type FanOut<T> = (Vec<(String, T)>, Vec<NodeError>);

fn node_error(addr: &str, e: impl std::fmt::Display) -> NodeError {
    NodeError {
        node: addr.to_owned(),
        error: e.to_string(),
    }
}

impl Cluster {
    async fn get_json<T: DeserializeOwned>(&self, addr: &str, path: &str) -> Result<T, String> {
        let body = self
            .client
            .get(addr, path)
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&body)
            .map_err(|e| format!("GET {}: bad JSON: {e}", self.client.url(addr, path)))
    }

    /// `GET path` on every address at once.
    pub async fn fan_get<T: DeserializeOwned>(&self, addrs: &[String], path: &str) -> FanOut<T> {
        let results = join_all(
            addrs
                .iter()
                .map(|a| async move { (a.clone(), self.get_json::<T>(a, path).await) }),
        )
        .await;
        split(results)
    }

    /// `POST path` on every address at once; `ignore_404` treats "not found" as done.
    /// POSTs a JSON body to every address (an nsq-rs policy, `/topic/config`); each node's
    /// refusal is kept with nsqd's own `message` (e.g. `ttl: ...`), and whether it was a 400.
    pub async fn fan_post_json(
        &self,
        addrs: &[String],
        path: &str,
        body: &[u8],
    ) -> (Vec<NodeError>, bool) {
        let results = join_all(addrs.iter().map(|a| async move {
            let r = self.client.post(a, path, Some(body)).await;
            (a.clone(), r)
        }))
        .await;
        let mut errors = Vec::new();
        let mut bad_request = false;
        for (node, r) in results {
            match r {
                Ok(_) => {}
                Err(ClientError::Status { status, body, .. }) => {
                    bad_request |= status == 400;
                    let message = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["message"].as_str().map(str::to_owned))
                        .unwrap_or(body);
                    errors.push(NodeError {
                        node,
                        error: format!("{status} {message}"),
                    });
                }
                Err(e) => errors.push(NodeError {
                    node,
                    error: e.to_string(),
                }),
            }
        }
        (errors, bad_request)
    }

    pub async fn fan_post(&self, addrs: &[String], path: &str, ignore_404: bool) -> FanOut<()> {
        let results = join_all(addrs.iter().map(|a| async move {
            let r = match self.client.post(a, path, None).await {
                Ok(_) => Ok(()),
                Err(ClientError::Status { status: 404, .. }) if ignore_404 => Ok(()),
                Err(e) => Err(e.to_string()),
            };
            (a.clone(), r)
        }))
        .await;
        split(results)
    }

    /// Every topic name, sorted.
    pub async fn topics(&self) -> (Vec<String>, Vec<NodeError>, usize) {
        let mut names = Vec::new();
        let (errors, asked) = match &self.upstream {
            Upstream::Lookupd(addrs) => {
                let (ok, errs) = self.fan_get::<Topics>(addrs, "/topics").await;
                for (_, r) in ok {
                    names.extend(r.topics);
                }
                (errs, addrs.len())
            }
            Upstream::Nsqd(addrs) => {
                let (ok, errs) = self
                    .fan_get::<NsqdStats>(
                        addrs,
                        "/stats?format=json&include_clients=false&include_mem=false",
                    )
                    .await;
                for (_, s) in ok {
                    names.extend(s.topics.into_iter().flatten().map(|t| t.topic_name));
                }
                (errs, addrs.len())
            }
        };
        names.sort();
        names.dedup();
        (names, errors, asked)
    }

    /// The nsqds producing `topic` (every configured nsqd in `--nsqd-http-address` mode).
    /// A lookupd that does not know the topic (404) contributes no producer and no error.
    pub async fn topic_producers(&self, topic: &str) -> (Vec<Producer>, Vec<NodeError>, usize) {
        match &self.upstream {
            Upstream::Nsqd(addrs) => (
                addrs
                    .iter()
                    .map(|a| crate::model::producer_from_http_address(a))
                    .collect(),
                Vec::new(),
                0,
            ),
            Upstream::Lookupd(addrs) => {
                let path = format!("/lookup?topic={}", query_escape(topic));
                let results = join_all(addrs.iter().map(|a| {
                    let path = &path;
                    async move {
                        let r = match self.client.get(a, path).await {
                            Ok(body) => serde_json::from_slice::<Lookup>(&body).map_err(|e| {
                                format!("GET {}: bad JSON: {e}", self.client.url(a, path))
                            }),
                            Err(ClientError::Status { status: 404, .. }) => Ok(Lookup::default()),
                            Err(e) => Err(e.to_string()),
                        };
                        (a.clone(), r)
                    }
                }))
                .await;
                let (ok, errs) = split(results);
                let mut producers: Vec<Producer> = Vec::new();
                for (_, r) in ok {
                    for p in r.producers {
                        if !producers
                            .iter()
                            .any(|q| q.http_address() == p.http_address())
                        {
                            producers.push(p);
                        }
                    }
                }
                (producers, errs, addrs.len())
            }
        }
    }

    /// `/stats` (of `topic`, and `channel`, if given) from each producer at once.
    pub async fn producer_stats(
        &self,
        producers: &[Producer],
        topic: Option<&str>,
        channel: Option<&str>,
        include_clients: bool,
    ) -> (Vec<(Producer, NsqdStats)>, Vec<NodeError>) {
        let mut path =
            format!("/stats?format=json&include_mem=false&include_clients={include_clients}");
        if let Some(t) = topic {
            path.push_str("&topic=");
            path.push_str(&query_escape(t));
        }
        if let Some(c) = channel {
            path.push_str("&channel=");
            path.push_str(&query_escape(c));
        }
        let results = join_all(producers.iter().map(|p| {
            let path = &path;
            async move {
                let addr = p.http_address();
                let r = self.get_json::<NsqdStats>(&addr, path).await;
                (p.clone(), r)
            }
        }))
        .await;
        let mut ok = Vec::new();
        let mut errs = Vec::new();
        for (p, r) in results {
            match r {
                Ok(s) => ok.push((p, s)),
                Err(e) => errs.push(node_error(&p.http_address(), e)),
            }
        }
        (ok, errs)
    }

    /// `/nodes` of every lookupd, or (`--nsqd-http-address`) `/info` and `/stats` of every nsqd
    /// presented as lookupd would. Errors name the unreachable daemons.
    pub async fn nodes(&self) -> (Vec<Vec<Node>>, Vec<NodeError>, usize) {
        match &self.upstream {
            Upstream::Lookupd(addrs) => {
                let (ok, errs) = self.fan_get::<Nodes>(addrs, "/nodes").await;
                (
                    ok.into_iter().map(|(_, n)| n.producers).collect(),
                    errs,
                    addrs.len(),
                )
            }
            Upstream::Nsqd(addrs) => {
                let results = join_all(addrs.iter().map(|a| async move {
                    let info = self.get_json::<Info>(a, "/info").await;
                    let stats = self
                        .get_json::<NsqdStats>(
                            a,
                            "/stats?format=json&include_clients=false&include_mem=false",
                        )
                        .await;
                    let r = info.and_then(|i| {
                        let s = stats?;
                        let topics: Vec<String> = s
                            .topics
                            .into_iter()
                            .flatten()
                            .map(|t| t.topic_name)
                            .collect();
                        Ok(Node {
                            peer: Producer {
                                remote_address: crate::client::host_port(a).to_owned(),
                                hostname: i.hostname,
                                broadcast_address: i.broadcast_address,
                                tcp_port: i.tcp_port,
                                http_port: i.http_port,
                                version: i.version.into_owned(),
                                topology_zone: i.topology_zone,
                                topology_region: i.topology_region,
                            },
                            tombstones: vec![false; topics.len()],
                            topics,
                        })
                    });
                    (a.clone(), r)
                }))
                .await;
                let (ok, errs) = split(results);
                (
                    vec![ok.into_iter().map(|(_, p)| p).collect()],
                    errs,
                    addrs.len(),
                )
            }
        }
    }

    /// `GET /ping` on every node at once; the ones that do not answer.
    pub async fn unreachable(&self, addrs: &[String]) -> Vec<NodeError> {
        let results = join_all(addrs.iter().map(|a| async move {
            let r = self
                .client
                .get(a, "/ping")
                .await
                .map(|_| ())
                .map_err(|e| format!("GET /ping: {e}"));
            (a.clone(), r)
        }))
        .await;
        split(results).1
    }

    /// The configured lookupd addresses (empty in `--nsqd-http-address` mode).
    pub fn lookupds(&self) -> &[String] {
        match &self.upstream {
            Upstream::Lookupd(a) => a,
            Upstream::Nsqd(_) => &[],
        }
    }
}

fn split<T>(results: Vec<(String, Result<T, String>)>) -> FanOut<T> {
    let mut ok = Vec::new();
    let mut errs = Vec::new();
    for (a, r) in results {
        match r {
            Ok(v) => ok.push((a, v)),
            Err(e) => errs.push(node_error(&a, e)),
        }
    }
    (ok, errs)
}

impl Cluster {
    /// Every nsqd's `/stats` (no clients, no memory): the sampler's one read per tick. The
    /// flag is true when every daemon asked (lookupds, then nsqds) answered.
    pub async fn all_stats(&self) -> (Vec<NsqdStats>, bool) {
        const PATH: &str = "/stats?format=json&include_clients=false&include_mem=false";
        let (addrs, mut complete) = match &self.upstream {
            Upstream::Nsqd(addrs) => (addrs.clone(), true),
            Upstream::Lookupd(addrs) => {
                let (ok, errs) = self.fan_get::<Nodes>(addrs, "/nodes").await;
                let mut nodes: Vec<String> = ok
                    .into_iter()
                    .flat_map(|(_, n)| n.producers)
                    .map(|n| n.peer.http_address())
                    .collect();
                nodes.sort();
                nodes.dedup();
                (nodes, errs.is_empty())
            }
        };
        let (ok, errs) = self.fan_get::<NsqdStats>(&addrs, PATH).await;
        complete &= errs.is_empty();
        (ok.into_iter().map(|(_, s)| s).collect(), complete)
    }
}
