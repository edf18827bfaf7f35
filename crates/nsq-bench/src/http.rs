//! nsqd's HTTP API for the benchmarks, over the workspace's one HTTP client
//! (`nsq-http-client`: hyper-util's pooled client).
//!
//! The benchmarks talk to nsqd on loopback and need keep-alive (creating 10,000 topics over
//! fresh connections would measure the kernel's connection setup, not nsqd): [`Api`] keeps up
//! to `connections` idle connections, so `connections` concurrent tasks each keep one.
//! Synchronous tools use [`BlockingApi`], the same on its own current-thread runtime.

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use nsq_http::api::nsqd::Stats;
pub use nsq_http_client::Method;

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body bytes.
    pub body: Bytes,
}

impl Response {
    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// nsqd's HTTP API at one address (`host:port` or a URL), with pooled keep-alive connections.
/// Cheap to clone: clones share the pool.
#[derive(Clone, Debug)]
pub struct Api {
    client: nsq_http_client::Client,
    base: String,
}

impl Api {
    /// A client for `addr` keeping up to `connections` idle connections; connects lazily.
    pub fn new(addr: &str, connections: usize) -> anyhow::Result<Api> {
        let client = nsq_http_client::Client::new(nsq_http_client::Options {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            // `/stats` of 10,000 topics is a few MB.
            max_response_bytes: 256 << 20,
            user_agent: Some("nsq-bench".into()),
            pool_max_idle_per_host: connections.max(1),
            ..nsq_http_client::Options::default()
        })?;
        Ok(Api {
            client,
            base: nsq_http_client::endpoint(addr, ""),
        })
    }

    /// `method path_and_query` with `body`, any status.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<Response> {
        let r = self
            .client
            .request(method, &format!("{}{path}", self.base), &[], body)
            .await?;
        Ok(Response {
            status: r.status,
            body: r.body,
        })
    }

    /// A bodiless request that must answer 2xx.
    pub async fn expect_ok(&self, method: Method, path: &str) -> anyhow::Result<Response> {
        let r = self.request(method.clone(), path, Bytes::new()).await?;
        if !(200..300).contains(&r.status) {
            bail!("{method} {path}: HTTP {} {}", r.status, r.text().trim());
        }
        Ok(r)
    }

    /// Creates a topic (`POST /topic/create`).
    pub async fn create_topic(&self, topic: &str) -> anyhow::Result<()> {
        let path = format!("/topic/create?topic={}", query_escape(topic));
        self.expect_ok(Method::POST, &path).await?;
        Ok(())
    }

    /// Creates a channel (`POST /channel/create`).
    pub async fn create_channel(&self, topic: &str, channel: &str) -> anyhow::Result<()> {
        let path = format!(
            "/channel/create?topic={}&channel={}",
            query_escape(topic),
            query_escape(channel)
        );
        self.expect_ok(Method::POST, &path).await?;
        Ok(())
    }

    /// Fetches `/stats?format=json` (optionally filtered to one topic), in NSQ 1.x's plain
    /// form or the older `{"status_code":..,"data":{..}}` envelope.
    pub async fn stats(&self, topic: Option<&str>) -> anyhow::Result<Stats> {
        let path = match topic {
            Some(t) => format!("/stats?format=json&topic={}", query_escape(t)),
            None => "/stats?format=json".to_string(),
        };
        let r = self.expect_ok(Method::GET, &path).await?;
        nsq_http::api::from_body(&r.body).context("parsing /stats JSON")
    }
}

/// [`Api`] for synchronous code: one keep-alive connection driven by its own current-thread
/// runtime.
#[derive(Debug)]
pub struct BlockingApi {
    rt: tokio::runtime::Runtime,
    api: Api,
}

impl BlockingApi {
    /// A client for `addr`; connects lazily.
    pub fn new(addr: &str) -> anyhow::Result<BlockingApi> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(BlockingApi {
            rt,
            api: Api::new(addr, 1)?,
        })
    }

    /// [`Api::expect_ok`].
    pub fn expect_ok(&self, method: Method, path: &str) -> anyhow::Result<Response> {
        self.rt.block_on(self.api.expect_ok(method, path))
    }

    /// [`Api::create_topic`].
    pub fn create_topic(&self, topic: &str) -> anyhow::Result<()> {
        self.rt.block_on(self.api.create_topic(topic))
    }

    /// [`Api::create_channel`].
    pub fn create_channel(&self, topic: &str, channel: &str) -> anyhow::Result<()> {
        self.rt.block_on(self.api.create_channel(topic, channel))
    }

    /// [`Api::stats`].
    pub fn stats(&self, topic: Option<&str>) -> anyhow::Result<Stats> {
        self.rt.block_on(self.api.stats(topic))
    }
}

/// Percent-encodes a query parameter value (topic and channel names are `[.a-zA-Z0-9_-]`
/// plus `#ephemeral`, so only `#` and oddities need escaping).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The depth of every channel of `topic` in a `/stats` document, in order. `None` if the
/// topic is absent.
pub fn channel_depths(stats: &Stats, topic: &str) -> Option<Vec<(String, u64)>> {
    let t = stats
        .topics
        .as_deref()?
        .iter()
        .find(|t| t.topic_name == topic)?;
    Some(
        t.channels
            .iter()
            .map(|c| (c.channel_name.clone(), c.depth))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use nsq_http_client::testing::{Mode, TestServer};

    #[test]
    fn escapes_query_values() {
        assert_eq!(query_escape("sub_bench"), "sub_bench");
        assert_eq!(query_escape("t#ephemeral"), "t%23ephemeral");
        assert_eq!(query_escape("a b&c"), "a%20b%26c");
    }

    #[test]
    fn finds_channel_depths() {
        let plain = br#"{
            "version": "1.3.0", "health": "OK",
            "topics": [
                {"topic_name": "other", "channels": []},
                {"topic_name": "mem_bench", "depth": 5, "channels": [
                    {"channel_name": "ch0", "depth": 5},
                    {"channel_name": "ch1", "depth": 3}
                ]}
            ]
        }"#;
        let wrapped = [br#"{"status_code": 200, "data": "#, &plain[..], b"}"].concat();
        let plain: Stats = nsq_http::api::from_body(plain).unwrap();
        assert_eq!(
            channel_depths(&plain, "mem_bench").unwrap(),
            vec![("ch0".to_string(), 5), ("ch1".to_string(), 3)]
        );
        assert!(channel_depths(&plain, "missing").is_none());
        let wrapped: Stats = nsq_http::api::from_body(&wrapped).unwrap();
        assert_eq!(channel_depths(&wrapped, "other").unwrap(), vec![]);
    }

    #[test]
    fn keep_alive_round_trips_and_refusals() {
        let srv = TestServer::start(Mode::Http, |r, _| {
            if r.path.starts_with("/topic/create?topic=t%23ephemeral") {
                (200, Vec::new())
            } else if r.path.starts_with("/stats") {
                (200, br#"{"topics":[]}"#.to_vec())
            } else {
                (400, br#"{"message":"MISSING_ARG_CHANNEL"}"#.to_vec())
            }
        });
        let api = BlockingApi::new(&srv.addr.to_string()).unwrap();
        api.create_topic("t#ephemeral").unwrap();
        assert_eq!(api.stats(Some("t")).unwrap().topics.unwrap().len(), 0);
        let e = api.create_channel("t", "").unwrap_err().to_string();
        assert!(
            e.contains("HTTP 400 {\"message\":\"MISSING_ARG_CHANNEL\"}"),
            "{e}"
        );
        let reqs = srv.requests();
        assert_eq!(reqs[0].method, "POST");
        assert_eq!(reqs[1].path, "/stats?format=json&topic=t");
        assert_eq!(reqs[2].path, "/channel/create?topic=t&channel=");
        assert_eq!(reqs[0].header("user-agent"), Some("nsq-bench"));
        assert_eq!(srv.connections(), 1, "one kept-alive connection");
    }
}
