//! Registration with nsqlookupd (Go: `nsqd/lookup.go`, `nsqd/lookup_peer.go`).
//!
//! One task per `--lookupd-tcp-address` ([`peer_loop`]) keeps a V1 connection to that
//! lookupd: magic `"  V1"`, IDENTIFY (the broadcast address and ports), then one REGISTER per
//! channel (`REGISTER topic` for a topic without channels), a PING every 15 s, and
//! REGISTER/UNREGISTER as topics and channels come and go. When the connection breaks
//! (lookupd restarted, network, an error response) the task reconnects with backoff and
//! registers everything again; lookupd itself forgets a peer's registrations when its
//! connection closes. A manager task ([`run`]) starts and stops peer tasks when the address
//! list changes (`PUT /config/nsqlookupd_tcp_addresses`).
//!
//! Topic and channel creation and deletion only *announce* that a name may have changed
//! ([`Notifier::notify`], a broadcast channel; free when no lookupd is configured). Each peer
//! task then compares what the daemon has now with what it has registered on its connection
//! and sends the difference, as Go's lookup loop checks `Exiting()` rather than trusting the
//! event. So a burst of changes, events seen out of order or a lagging receiver (which falls
//! back to comparing everything) still end with lookupd holding exactly the daemon's names.
//!
//! Differences from Go: a broken connection is noticed at once (the task keeps reading)
//! and retried with backoff (250 ms doubling to 15 s) rather than at the next 15 s ping;
//! commands are pipelined (up to 256 per write), so registering 10,000 topics does not cost
//! 10,000 round trips.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nsq_protocol::lookup::{self as proto, IdentifyResponse, PeerIdentity};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::Nsqd;

/// How often a connected peer is pinged (Go: 15 s).
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Dial, write and per-response read deadline (Go: 1 s each).
pub const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// First reconnection delay; doubled after each failed attempt.
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest reconnection delay (Go retries at its next 15 s ping).
pub const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// Changes buffered per peer before it falls back to comparing everything.
const EVENT_CAPACITY: usize = 4096;
/// Commands written before their responses are read.
const PIPELINE: usize = 256;

/// A topic (`channel: None`) or channel whose registration may have changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Topic name.
    pub topic: String,
    /// Channel name, for a channel change.
    pub channel: Option<String>,
}

/// Announces topic and channel changes to the peer tasks. Cheap to clone; a no-op while no
/// peer task listens.
#[derive(Clone)]
pub struct Notifier(broadcast::Sender<Change>);

impl Notifier {
    fn new() -> Notifier {
        Notifier(broadcast::channel(EVENT_CAPACITY).0)
    }

    /// Announces that `topic` (or its `channel`) was created or deleted.
    pub fn notify(&self, topic: &str, channel: Option<&str>) {
        if self.0.receiver_count() > 0 {
            let _ = self.0.send(Change {
                topic: topic.to_owned(),
                channel: channel.map(str::to_owned),
            });
        }
    }
}

impl Default for Notifier {
    fn default() -> Notifier {
        Notifier::new()
    }
}

/// The daemon's view of its lookupd peers: the address list (changeable at runtime), the
/// change notifier, and what each connected lookupd said about itself.
pub struct LookupHandle {
    notifier: Notifier,
    addrs: watch::Sender<Vec<String>>,
    connected: Mutex<BTreeMap<String, IdentifyResponse>>,
    /// The HTTP client for lookupds' `/channels` queries, made at the first one and kept for
    /// the daemon's life (keep-alive, as Go keeps one client).
    http: std::sync::OnceLock<nsq_http_client::Client>,
}

impl LookupHandle {
    /// A handle for the given `--lookupd-tcp-address` list (nothing runs until [`run`]).
    pub fn new(addrs: &[String]) -> LookupHandle {
        LookupHandle {
            notifier: Notifier::new(),
            addrs: watch::channel(addrs.to_vec()).0,
            connected: Mutex::new(BTreeMap::new()),
            http: std::sync::OnceLock::new(),
        }
    }

    /// The client for lookupd HTTP queries (`timeout` bounds the connect and each exchange;
    /// the first call's wins, and nsqd always passes `--http-client-request-timeout`).
    pub fn http_client(&self, timeout: std::time::Duration) -> nsq_http_client::Client {
        self.http
            .get_or_init(|| {
                nsq_http_client::Client::with_tls_config(
                    nsq_http_client::Options {
                        connect_timeout: timeout,
                        request_timeout: timeout,
                        max_response_bytes: 4 << 20,
                        user_agent: Some(format!("nsqd/{}", nsq_protocol::NSQ_VERSION)),
                        ..nsq_http_client::Options::default()
                    },
                    crate::auth::system_roots(),
                )
            })
            .clone()
    }

    /// A notifier for topics to announce channel changes with.
    pub fn notifier(&self) -> Notifier {
        self.notifier.clone()
    }

    /// Announces that `topic` (or its `channel`) was created or deleted.
    pub fn notify(&self, topic: &str, channel: Option<&str>) {
        self.notifier.notify(topic, channel);
    }

    /// The lookupd TCP addresses in force.
    pub fn addresses(&self) -> Vec<String> {
        self.addrs.borrow().clone()
    }

    /// Replaces the lookupd TCP addresses: peers no longer listed are disconnected (lookupd
    /// then drops this node's registrations), new ones are connected.
    pub fn set_addresses(&self, addrs: Vec<String>) {
        self.addrs.send_replace(addrs);
    }

    /// The HTTP addresses (`broadcast_address:http_port`) of the lookupds currently
    /// connected, as they announced them in their IDENTIFY response.
    pub fn http_addresses(&self) -> Vec<String> {
        self.connected
            .lock()
            .values()
            .map(|i| join_host_port(&i.broadcast_address, i.http_port))
            .collect()
    }

    /// The TCP addresses of the lookupds currently connected and identified.
    pub fn connected_addresses(&self) -> Vec<String> {
        self.connected.lock().keys().cloned().collect()
    }

    /// `GET /config/<name>` for the options this module owns at runtime (JSON text), `None`
    /// for the others.
    pub fn http_config_value(&self, name: &str) -> Option<String> {
        (name == "nsqlookupd_tcp_addresses")
            .then(|| serde_json::Value::from(self.addresses()).to_string())
    }
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The manager: keeps one [`peer_loop`] per configured address until shutdown.
pub async fn run(nsqd: Arc<Nsqd>) {
    let mut addrs = nsqd.lookup.addrs.subscribe();
    let mut peers: BTreeMap<String, CancellationToken> = BTreeMap::new();
    loop {
        let want: BTreeSet<String> = addrs
            .borrow_and_update()
            .iter()
            .filter(|a| !a.is_empty())
            .cloned()
            .collect();
        peers.retain(|addr, stop| {
            if want.contains(addr) {
                return true;
            }
            tracing::info!("LOOKUP({addr}): removing peer");
            stop.cancel();
            nsqd.lookup.connected.lock().remove(addr);
            false
        });
        for addr in want {
            if peers.contains_key(&addr) {
                continue;
            }
            tracing::info!("LOOKUP({addr}): adding peer");
            let stop = nsqd.shutdown.child_token();
            // Subscribe here, before the task's first snapshot, so no change is missed.
            let events = nsqd.lookup.notifier.0.subscribe();
            nsqd.tracker
                .spawn(peer_loop(nsqd.clone(), addr.clone(), events, stop.clone()));
            peers.insert(addr, stop);
        }
        tokio::select! {
            _ = nsqd.shutdown.cancelled() => break,
            r = addrs.changed() => if r.is_err() { break },
        }
    }
    tracing::info!("LOOKUP: closing");
}

/// One lookupd: connect, register, follow changes, ping; reconnect with backoff.
async fn peer_loop(
    nsqd: Arc<Nsqd>,
    addr: String,
    mut events: broadcast::Receiver<Change>,
    stop: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let mut identified = false;
        let res = tokio::select! {
            _ = stop.cancelled() => break,
            r = session(&nsqd, &addr, &mut events, &mut identified) => r,
        };
        nsqd.lookup.connected.lock().remove(&addr);
        if let Err(e) = res {
            tracing::error!("LOOKUPD({addr}): {e}");
        }
        if identified {
            backoff = BACKOFF_MIN;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        if !identified {
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
    nsqd.lookup.connected.lock().remove(&addr);
}

/// A failed lookupd session.
#[derive(Debug)]
struct SessionError(String);

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(what: impl fmt::Display) -> SessionError {
    SessionError(what.to_string())
}

/// A command to a lookupd.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cmd {
    Identify(PeerIdentity),
    Register(String, Option<String>),
    Unregister(String, Option<String>),
    Ping,
}

impl Cmd {
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            Cmd::Identify(p) => proto::encode_identify(buf, p),
            Cmd::Register(t, c) => proto::encode_register(buf, t, c.as_deref()),
            Cmd::Unregister(t, c) => proto::encode_unregister(buf, t, c.as_deref()),
            Cmd::Ping => proto::encode_ping(buf),
        }
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, t, c) = match self {
            Cmd::Identify(_) => return f.write_str("IDENTIFY"),
            Cmd::Ping => return f.write_str("PING"),
            Cmd::Register(t, c) => ("REGISTER", t, c),
            Cmd::Unregister(t, c) => ("UNREGISTER", t, c),
        };
        write!(f, "{name} {t}")?;
        if let Some(c) = c {
            write!(f, " {c}")?;
        }
        Ok(())
    }
}

/// One connection to a lookupd.
struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    max_response: usize,
}

impl Conn {
    async fn connect(addr: &str, max_response: usize) -> Result<Conn, SessionError> {
        let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| err("dial timed out"))?
            .map_err(|e| err(format!("dial failed: {e}")))?;
        let _ = stream.set_nodelay(true);
        let mut wbuf = BytesMut::with_capacity(4096);
        wbuf.extend_from_slice(proto::MAGIC_V1);
        Ok(Conn {
            stream,
            rbuf: BytesMut::with_capacity(4096),
            wbuf,
            max_response,
        })
    }

    /// Sends `cmds` (pipelined) and returns their responses in order.
    async fn send(&mut self, addr: &str, cmds: &[Cmd]) -> Result<Vec<Bytes>, SessionError> {
        let mut out = Vec::with_capacity(cmds.len());
        for chunk in cmds.chunks(PIPELINE) {
            for c in chunk {
                match c {
                    Cmd::Ping => tracing::debug!("LOOKUPD({addr}): sending heartbeat"),
                    Cmd::Identify(_) => {}
                    _ => tracing::info!("LOOKUPD({addr}): {c}"),
                }
                c.encode(&mut self.wbuf);
            }
            tokio::time::timeout(IO_TIMEOUT, self.stream.write_all(&self.wbuf))
                .await
                .map_err(|_| err("write timed out"))?
                .map_err(|e| err(format!("write failed: {e}")))?;
            self.wbuf.clear();
            for c in chunk {
                let resp = self.read_response().await?;
                if proto::is_error_response(&resp) {
                    // lookupd closes the connection after any error; the next read fails.
                    tracing::error!("LOOKUPD({addr}): {c} - {}", String::from_utf8_lossy(&resp));
                }
                out.push(resp);
            }
        }
        Ok(out)
    }

    async fn read_response(&mut self) -> Result<Bytes, SessionError> {
        loop {
            if let Some(r) = proto::decode_response(&mut self.rbuf, self.max_response)
                .map_err(|e| err(format!("invalid response: {}", e.desc)))?
            {
                return Ok(r);
            }
            let n = tokio::time::timeout(IO_TIMEOUT, self.stream.read_buf(&mut self.rbuf))
                .await
                .map_err(|_| err("read timed out"))?
                .map_err(|e| err(format!("read failed: {e}")))?;
            if n == 0 {
                return Err(err("connection closed by lookupd"));
            }
        }
    }
}

/// What this node announces in IDENTIFY: broadcast ports, or the bound ones when 0.
pub fn identity(nsqd: &Nsqd) -> PeerIdentity {
    let o = &nsqd.opts;
    let port = |broadcast: i64, bound: Option<std::net::SocketAddr>| {
        if broadcast != 0 {
            broadcast
        } else {
            bound.map_or(0, |a| i64::from(a.port()))
        }
    };
    PeerIdentity {
        broadcast_address: o.broadcast_address.clone(),
        hostname: crate::config::hostname(),
        http_port: port(o.broadcast_http_port, *nsqd.http_addr.lock()),
        tcp_port: port(o.broadcast_tcp_port, *nsqd.tcp_addr.lock()),
        topology_region: o.topology_region.clone(),
        topology_zone: o.topology_zone.clone(),
        version: nsq_protocol::NSQ_VERSION.to_owned(),
    }
}

/// Connects, identifies, registers everything, then follows changes until the connection
/// fails. Sets `identified` once lookupd accepted IDENTIFY.
async fn session(
    nsqd: &Nsqd,
    addr: &str,
    events: &mut broadcast::Receiver<Change>,
    identified: &mut bool,
) -> Result<(), SessionError> {
    let max = usize::try_from(nsqd.opts.max_body_size).unwrap_or(usize::MAX);
    let mut conn = Conn::connect(addr, max).await?;
    let ident = identity(nsqd);
    let resp = conn
        .send(addr, &[Cmd::Identify(ident)])
        .await?
        .pop()
        .unwrap_or_default();
    if proto::is_error_response(&resp) {
        // Go closes the peer on exactly `E_INVALID`; lookupd closes on any error anyway.
        return Err(err(format!(
            "lookupd returned {}",
            String::from_utf8_lossy(&resp)
        )));
    }
    match serde_json::from_slice::<IdentifyResponse>(&resp) {
        Ok(info) => {
            tracing::info!("LOOKUPD({addr}): peer info {info:?}");
            if info.broadcast_address.is_empty() {
                tracing::error!("LOOKUPD({addr}): no broadcast address");
            }
            nsqd.lookup.connected.lock().insert(addr.to_owned(), info);
        }
        Err(e) => tracing::error!(
            "LOOKUPD({addr}): error parsing response - {}: {e}",
            String::from_utf8_lossy(&resp)
        ),
    }
    *identified = true;

    // Changes announced so far are covered by the full comparison below.
    drain(events);
    let mut reg = Registered::default();
    let cmds = reg.sync_all(nsqd);
    conn.send(addr, &cmds).await?;

    let start = tokio::time::Instant::now() + PING_INTERVAL;
    let mut ping = tokio::time::interval_at(start, PING_INTERVAL);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let cmds = tokio::select! {
            _ = ping.tick() => vec![Cmd::Ping],
            ev = events.recv() => {
                let mut changes = Vec::new();
                let mut lagged = false;
                match ev {
                    Ok(c) => changes.push(c),
                    Err(broadcast::error::RecvError::Lagged(_)) => lagged = true,
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
                loop {
                    match events.try_recv() {
                        Ok(c) => changes.push(c),
                        Err(broadcast::error::TryRecvError::Lagged(_)) => lagged = true,
                        Err(_) => break,
                    }
                }
                if lagged {
                    reg.sync_all(nsqd)
                } else {
                    let mut out = Vec::new();
                    let topics: BTreeSet<String> = changes.into_iter().map(|c| c.topic).collect();
                    for t in topics {
                        reg.sync_topic(nsqd, &t, &mut out);
                    }
                    out
                }
            }
            r = conn.stream.read_buf(&mut conn.rbuf) => {
                match r {
                    Ok(0) => return Err(err("connection closed by lookupd")),
                    Ok(_) => return Err(err(format!(
                        "unexpected data from lookupd: {:?}",
                        String::from_utf8_lossy(&conn.rbuf)
                    ))),
                    Err(e) => return Err(err(format!("read failed: {e}"))),
                }
            }
        };
        if !cmds.is_empty() {
            conn.send(addr, &cmds).await?;
        }
    }
}

fn drain(events: &mut broadcast::Receiver<Change>) {
    loop {
        match events.try_recv() {
            Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => return,
        }
    }
}

/// What one connection has registered: topic → its registered channels. A topic is present
/// once lookupd knows it (REGISTER of the topic or of one of its channels).
#[derive(Debug, Default)]
struct Registered(BTreeMap<String, BTreeSet<String>>);

impl Registered {
    /// Commands that bring lookupd to the daemon's current topics and channels.
    fn sync_all(&mut self, nsqd: &Nsqd) -> Vec<Cmd> {
        let mut out = Vec::new();
        let gone: Vec<String> = self
            .0
            .keys()
            .filter(|t| nsqd.topic(t).is_none())
            .cloned()
            .collect();
        for t in gone {
            self.sync_topic(nsqd, &t, &mut out);
        }
        for t in nsqd.topics() {
            self.sync_topic(nsqd, &t.name, &mut out);
        }
        out
    }

    /// Appends the commands that bring lookupd to the current state of one topic and its
    /// channels, and records them as done.
    fn sync_topic(&mut self, nsqd: &Nsqd, name: &str, out: &mut Vec<Cmd>) {
        let topic = nsqd.topic(name).filter(|t| !t.is_deleted());
        let Some(topic) = topic else {
            // As Go (each deleted channel announces itself): channels first, so lookupd drops
            // `#ephemeral` channel registrations, which UNREGISTER of a topic leaves behind.
            if let Some(channels) = self.0.remove(name) {
                for c in channels {
                    out.push(Cmd::Unregister(name.to_owned(), Some(c)));
                }
                out.push(Cmd::Unregister(name.to_owned(), None));
            }
            return;
        };
        let have: BTreeSet<String> = topic
            .channels()
            .into_iter()
            .filter(|c| !c.is_exiting())
            .map(|c| c.name.clone())
            .collect();
        let known = self.0.contains_key(name);
        let reg = self.0.entry(name.to_owned()).or_default();
        if !known && have.is_empty() {
            // As Go: `REGISTER topic` only for a topic without channels; registering a
            // channel registers its topic.
            out.push(Cmd::Register(name.to_owned(), None));
        }
        let stale: Vec<String> = reg.difference(&have).cloned().collect();
        for c in stale {
            reg.remove(&c);
            out.push(Cmd::Unregister(name.to_owned(), Some(c)));
        }
        for c in have {
            if reg.insert(c.clone()) {
                out.push(Cmd::Register(name.to_owned(), Some(c)));
            }
        }
    }
}

/// Asks a lookupd's HTTP API which channels a topic has (`GET /channels?topic=`, Go's
/// `GetLookupdTopicChannels`), accepting both the 1.0 body `{"channels":[...]}` and the older
/// `{"status_code":200,"data":{"channels":[...]}}` ([`nsq_http::api::from_body`]); a 404
/// (topic unknown there) is no channels.
///
/// Through the daemon's one lookupd HTTP client ([`LookupHandle::http_client`], kept alive
/// across queries as Go keeps one client).
pub async fn query_channels(
    client: &nsq_http_client::Client,
    http_addr: &str,
    topic: &str,
) -> Result<Vec<String>, String> {
    let q: String = form_urlencoded::byte_serialize(topic.as_bytes()).collect();
    let url = nsq_http_client::endpoint(http_addr, &format!("/channels?topic={q}"));
    let resp = client.get_nsq(&url).await.map_err(|e| e.to_string())?;
    if resp.status == 404 {
        return Ok(Vec::new());
    }
    let resp = resp.ok().map_err(|e| e.to_string())?;
    let c: nsq_http::api::lookupd::Channels =
        nsq_http::api::from_body(&resp.body).map_err(|e| e.to_string())?;
    Ok(c.channels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Options;

    fn nsqd() -> Arc<Nsqd> {
        Nsqd::new(Options::default())
    }

    fn names(cmds: &[Cmd]) -> Vec<String> {
        cmds.iter().map(|c| c.to_string()).collect()
    }

    #[tokio::test]
    async fn full_sync_registers_like_go() {
        let n = nsqd();
        n.get_or_create_topic("lonely");
        let t = n.get_or_create_topic("t");
        t.get_or_create_channel("a").unwrap();
        t.get_or_create_channel("b#ephemeral").unwrap();
        let mut reg = Registered::default();
        assert_eq!(
            names(&reg.sync_all(&n)),
            ["REGISTER lonely", "REGISTER t a", "REGISTER t b#ephemeral"]
        );
        // Nothing changed: nothing to send.
        assert!(reg.sync_all(&n).is_empty());
    }

    #[tokio::test]
    async fn changes_become_register_and_unregister() {
        let n = nsqd();
        let mut reg = Registered::default();
        let mut out = Vec::new();
        let t = n.get_or_create_topic("t");
        reg.sync_topic(&n, "t", &mut out);
        t.get_or_create_channel("c").unwrap();
        reg.sync_topic(&n, "t", &mut out);
        n.delete_channel("t", "c").unwrap();
        reg.sync_topic(&n, "t", &mut out);
        t.get_or_create_channel("d").unwrap();
        reg.sync_topic(&n, "t", &mut out);
        n.delete_topic("t").unwrap();
        reg.sync_topic(&n, "t", &mut out);
        reg.sync_topic(&n, "t", &mut out);
        assert_eq!(
            names(&out),
            [
                "REGISTER t",
                "REGISTER t c",
                "UNREGISTER t c",
                "REGISTER t d",
                "UNREGISTER t d",
                "UNREGISTER t",
            ]
        );
        assert!(reg.0.is_empty());
    }

    #[tokio::test]
    async fn recreated_topic_drops_stale_channels() {
        let n = nsqd();
        let mut reg = Registered::default();
        n.get_or_create_topic("t")
            .get_or_create_channel("old")
            .unwrap();
        let _ = reg.sync_all(&n);
        // Deleted and created again before the peer task looked.
        n.delete_topic("t").unwrap();
        n.get_or_create_topic("t");
        let mut out = Vec::new();
        reg.sync_topic(&n, "t", &mut out);
        assert_eq!(names(&out), ["UNREGISTER t old"]);
    }

    #[tokio::test]
    async fn notifier_is_silent_without_listeners() {
        let h = LookupHandle::new(&["a:4160".to_owned()]);
        h.notify("t", None);
        let mut rx = h.notifier.0.subscribe();
        h.notifier().notify("t", Some("c"));
        assert_eq!(
            rx.try_recv().unwrap(),
            Change {
                topic: "t".into(),
                channel: Some("c".into())
            }
        );
        assert!(rx.try_recv().is_err());
        assert_eq!(
            h.http_config_value("nsqlookupd_tcp_addresses").as_deref(),
            Some(r#"["a:4160"]"#)
        );
        h.set_addresses(vec![]);
        assert_eq!(
            h.http_config_value("nsqlookupd_tcp_addresses").as_deref(),
            Some("[]")
        );
        assert_eq!(h.http_config_value("log_level"), None);
    }

    #[test]
    fn identity_uses_broadcast_ports_or_bound_ones() {
        let n = Nsqd::new(Options {
            broadcast_address: "b.example".into(),
            broadcast_tcp_port: 9000,
            ..Options::default()
        });
        *n.tcp_addr.lock() = Some("127.0.0.1:4150".parse().unwrap());
        *n.http_addr.lock() = Some("127.0.0.1:4151".parse().unwrap());
        let p = identity(&n);
        assert_eq!(p.broadcast_address, "b.example");
        assert_eq!(p.tcp_port, 9000);
        assert_eq!(p.http_port, 4151);
        assert_eq!(p.version, nsq_protocol::NSQ_VERSION);
        assert!(p.has_required_fields());
        assert_eq!(join_host_port("::1", 4161), "[::1]:4161");
    }
}
