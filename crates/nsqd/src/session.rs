//! Protocol V2 session: the state machine of one client connection, with no socket.
//!
//! Why a separate module: `tcp.rs` used to be one `Conn` that ran the event loop, the
//! stream upgrades, AUTH, reply ordering and every command. Here is everything that decides
//! *what* to send (commands, RDY accounting, IDENTIFY negotiation, AUTH state, the order of
//! replies behind durable publishes, message delivery); `tcp.rs` keeps only what touches the
//! socket and the clock, as quinn splits a connection's state from its I/O driver. Unit tests
//! at the bottom drive a session with bytes and events and read the frames it produced.
//!
//! Inputs: [`Session::handle_input`] (bytes the client sent), [`Session::heartbeat_tick`],
//! [`Session::publish_done`] (the topic log took a durable publish),
//! [`Session::auth_answered`] (the auth server replied), [`Session::upgraded`] (a TLS or
//! compression layer is in place), [`Session::pull`] (deliver what the channel has ready).
//! Outputs: frames in [`Session::out`], an [`Action`] for the loop to perform before more
//! input ([`Session::take_action`]), a [`Close`] when the client must be disconnected, and
//! what to wait for (`channel`, `waiting_publish`, `heartbeat`).
//!
//! The session calls into the topic and channel state directly: those are in-memory
//! operations under short locks, never I/O (durable publishes answer through a oneshot that
//! the loop awaits).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use nsq_net::tls::TlsInfo;
use nsq_protocol::command::{Command, Decoder, Limits};
use nsq_protocol::error::ErrorCode;
use nsq_protocol::frame::{put_frame, put_message_frame, FrameType};
use nsq_protocol::identify::{IdentifyRequest, IdentifyResponse};
use nsq_protocol::{CLOSE_WAIT, HEARTBEAT, NSQ_VERSION, OK};

use crate::auth::{AuthError, AuthRequest, AuthState};
use crate::channel::{Channel, SubscribeError};
use crate::client::{client_state, ClientInfo};
use crate::config::TlsRequired;
use crate::state::batch::id_key;
use crate::state::channel::{InFlightError, MsgRef};
use crate::topic::{PublishError, Published, Topic};
use crate::Nsqd;

/// Stop reading commands while this many bytes wait to be written.
pub(crate) const WRITE_HIGH_WATER: usize = 1 << 20;
/// Most messages taken from a channel per pull.
const MAX_PULL: usize = 512;
/// Upper bound of [`Session::coalesce_for`] (tokio's timers tick in milliseconds).
const COALESCE_MAX: Duration = Duration::from_millis(1);
/// Stop reading commands while this many replies wait for the topic log.
const MAX_PENDING_REPLIES: usize = 4096;

/// The answer to a durable publish, sent by the topic log once it has the messages.
pub(crate) type PublishReceiver = tokio::sync::oneshot::Receiver<Result<(), PublishError>>;

/// An error to send to the client: `E_*` code plus description.
#[derive(Debug)]
struct ClientError {
    code: ErrorCode,
    desc: String,
}

impl ClientError {
    fn new(code: ErrorCode, desc: impl Into<String>) -> ClientError {
        ClientError {
            code,
            desc: desc.into(),
        }
    }
    fn invalid(desc: impl Into<String>) -> ClientError {
        ClientError::new(ErrorCode::Invalid, desc)
    }
}

/// A response frame in command order. Durable publishes are answered only once the topic
/// log has them, so later responses queue behind them (messages and heartbeats do not: clients
/// match only responses to commands).
enum Reply {
    /// Encoded and ready.
    Frame(Vec<u8>),
    /// A publish waiting for the log.
    Pending {
        rx: PublishReceiver,
        code: ErrorCode,
        what: &'static str,
    },
}

/// Stream upgrades negotiated by IDENTIFY, done by the loop once the response is out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Upgrade {
    pub tls: bool,
    pub snappy: bool,
    pub deflate: Option<u32>,
}

/// A layer the loop put in place, reported with [`Session::upgraded`].
#[derive(Debug)]
pub(crate) enum Layer {
    Tls(Option<TlsInfo>),
    Snappy,
    Deflate,
}

/// Work the loop must do before the session takes more input.
#[derive(Debug)]
pub(crate) enum Action {
    /// Write out everything queued on the current layer, then upgrade the stream in this
    /// order (TLS, snappy, deflate), reporting each layer with [`Session::upgraded`].
    Upgrade(Upgrade),
    /// Ask the auth server and report the answer with [`Session::auth_answered`].
    QueryAuth(AuthRequest),
}

/// What waits for the auth server's answer.
enum AuthWait {
    /// `AUTH <secret>`: answer the client with the identity.
    Auth,
    /// A PUB/MPUB/DPUB/SUB whose authorizations expired: run it once they are fresh.
    Recheck(Command),
}

/// The client must be disconnected once the frames in [`Session::out`] are written.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Close(pub String);

impl Close {
    fn fatal() -> Close {
        Close("fatal client error".into())
    }
}

/// Per-connection settings negotiated by IDENTIFY.
struct Settings {
    heartbeat: Option<Duration>,
    output_buffer_size: usize,
    /// Zero when the client disabled it (`-1`): then nothing is held back.
    output_buffer_timeout: Duration,
    msg_timeout: Duration,
    sample_rate: u8,
}

/// One V2 client's protocol state.
pub(crate) struct Session {
    nsqd: Arc<Nsqd>,
    client: Arc<ClientInfo>,
    /// `--tls-required` applies and the connection has not upgraded to TLS yet.
    tls_missing: bool,
    /// Set by IDENTIFY; handed to the loop by `take_action` before any further command.
    upgrade: Option<Upgrade>,
    /// Set by AUTH (or an expired authorization); handed to the loop by `take_action`.
    pending: Option<AuthWait>,
    /// What the loop's auth query (already handed out) will answer.
    awaiting_auth: Option<AuthWait>,
    /// The last answer of the auth server and the secret it was asked about.
    auth_state: Option<AuthState>,
    auth_secret: String,
    wbuf: BytesMut,
    decoder: Decoder,
    settings: Settings,
    identified: bool,
    channel: Option<Arc<Channel>>,
    /// Last topic published to and this client's counter for it, so neither the registry
    /// lock nor the `pub_counts` lock is on the per-publish path.
    topic_cache: Option<(Arc<Topic>, Arc<std::sync::atomic::AtomicU64>)>,
    /// Whether this connection is listed as a producer (after its first publish).
    producer: bool,
    pending_fins: Vec<nsq_protocol::MessageId>,
    scratch: Vec<MsgRef>,
    /// This client's in-flight count on its channel after the last pull.
    held: u32,
    rng: u64,
    heartbeat_changed: bool,
    replies: VecDeque<Reply>,
}

impl Session {
    pub(crate) fn new(nsqd: Arc<Nsqd>, client: Arc<ClientInfo>) -> Session {
        let o = &nsqd.opts;
        let limits = Limits {
            max_msg_size: o.max_msg_size as u64,
            max_body_size: o.max_body_size as u64,
            ..Limits::default()
        };
        let settings = Settings {
            // Go: ClientTimeout (60 s) / 2.
            heartbeat: Some(Duration::from_secs(30)),
            output_buffer_size: 16 * 1024,
            output_buffer_timeout: o.output_buffer_timeout,
            msg_timeout: o.msg_timeout,
            sample_rate: 0,
        };
        let rng = 0x9e37_79b9_7f4a_7c15u64 ^ client.id.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let tls_missing = o.effective_tls_required() != TlsRequired::Off;
        Session {
            nsqd,
            client,
            tls_missing,
            upgrade: None,
            pending: None,
            awaiting_auth: None,
            auth_state: None,
            auth_secret: String::new(),
            wbuf: BytesMut::with_capacity(16 * 1024),
            decoder: Decoder::new(limits),
            settings,
            identified: false,
            channel: None,
            topic_cache: None,
            producer: false,
            pending_fins: Vec::new(),
            scratch: Vec::new(),
            held: 0,
            rng: rng | 1,
            heartbeat_changed: false,
            replies: VecDeque::new(),
        }
    }

    /// The client this session serves.
    pub(crate) fn client(&self) -> &Arc<ClientInfo> {
        &self.client
    }

    /// Frames ready to be written; the loop writes from the front and advances it.
    pub(crate) fn out(&mut self) -> &mut BytesMut {
        &mut self.wbuf
    }

    /// Whether the loop should read (and hand over) more bytes: not while a slow reader
    /// has a megabyte of output waiting or too many publishes wait for the log.
    pub(crate) fn wants_input(&self) -> bool {
        self.wbuf.len() < WRITE_HIGH_WATER
            && self.replies.len() < MAX_PENDING_REPLIES
            && self.upgrade.is_none()
            && self.pending.is_none()
            && self.awaiting_auth.is_none()
    }

    /// The channel this client consumes from, once subscribed.
    pub(crate) fn channel(&self) -> Option<&Arc<Channel>> {
        self.channel.as_ref()
    }

    /// Leaves the channel (the connection is closing).
    pub(crate) fn take_channel(&mut self) -> Option<Arc<Channel>> {
        self.channel.take()
    }

    /// The negotiated heartbeat interval (`None`: disabled).
    pub(crate) fn heartbeat(&self) -> Option<Duration> {
        self.settings.heartbeat
    }

    /// True once after IDENTIFY changed the heartbeat interval.
    pub(crate) fn take_heartbeat_changed(&mut self) -> bool {
        std::mem::take(&mut self.heartbeat_changed)
    }

    /// The heartbeat interval elapsed.
    pub(crate) fn heartbeat_tick(&mut self) {
        put_frame(&mut self.wbuf, FrameType::Response, HEARTBEAT);
    }

    /// Whether new messages on the channel would be delivered now (subscribed, RDY credit,
    /// room in the output buffer).
    pub(crate) fn can_receive(&self) -> bool {
        self.channel.is_some()
            && self.client.state() == client_state::SUBSCRIBED
            && self.client.ready_count.load(Ordering::Relaxed) > 0
            && self.wbuf.len() < self.settings.output_buffer_size
    }

    /// How long the loop may hold back a small write of message frames so that more FINs
    /// (and so more credit) arrive and the next write carries more frames: only while the
    /// client still holds at least half of its RDY unfinished (it is busy, not starving), and
    /// never longer than its `output_buffer_timeout` (Go holds frames up to that long too).
    pub(crate) fn coalesce_for(&self) -> Option<Duration> {
        let rdy = self.client.ready_count.load(Ordering::Relaxed);
        let obt = self.settings.output_buffer_timeout;
        (self.channel.is_some()
            && rdy >= 4
            && (self.held as u64) * 2 >= rdy
            && !self.wbuf.is_empty()
            && self.wbuf.len() < self.settings.output_buffer_size / 2
            && !obt.is_zero()
            && self.replies.is_empty())
        .then(|| obt.min(COALESCE_MAX))
    }

    /// The output buffer and the oldest waiting publish at once, for a loop that waits on
    /// the publish while it writes the buffer.
    pub(crate) fn io_parts(&mut self) -> (&BytesMut, Option<&mut PublishReceiver>) {
        let head = match self.replies.front_mut() {
            Some(Reply::Pending { rx, .. }) => Some(rx),
            _ => None,
        };
        (&self.wbuf, head)
    }

    /// The oldest publish still waiting for the topic log (its answer goes to
    /// [`Session::publish_done`]).
    pub(crate) fn waiting_publish(&mut self) -> Option<&mut PublishReceiver> {
        self.io_parts().1
    }

    /// The topic log answered the oldest waiting publish: its reply and the replies queued
    /// behind it are released. A failed publish closes the connection (Go's E_PUB_FAILED).
    pub(crate) fn publish_done(&mut self, r: Result<(), PublishError>) -> Result<(), Close> {
        if self.resolve_head(r) {
            return Err(Close("publish failed".into()));
        }
        Ok(())
    }

    /// The next thing the loop must do before more input, if any.
    pub(crate) fn take_action(&mut self) -> Option<Action> {
        if let Some(up) = self.upgrade.take() {
            return Some(Action::Upgrade(up));
        }
        let wait = self.pending.take()?;
        let tls = self.client.tls.get();
        let req = AuthRequest {
            remote_ip: self.client.remote_addr.ip().to_string(),
            tls: tls.is_some(),
            secret: self.auth_secret.clone(),
            common_name: tls.map(|t| t.peer_common_name.clone()).unwrap_or_default(),
        };
        self.awaiting_auth = Some(wait);
        Some(Action::QueryAuth(req))
    }

    /// A layer negotiated by IDENTIFY is in place: Go answers `OK` on the new layer.
    pub(crate) fn upgraded(&mut self, layer: Layer) {
        match layer {
            Layer::Tls(info) => {
                if let Some(info) = info {
                    let _ = self.client.tls.set(info);
                }
                self.tls_missing = false;
            }
            Layer::Snappy => self.client.snappy.store(true, Ordering::Relaxed),
            Layer::Deflate => self.client.deflate.store(true, Ordering::Relaxed),
        }
        put_frame(&mut self.wbuf, FrameType::Response, OK);
    }

    /// An upgrade failed: Go answers E_IDENTIFY_FAILED on whatever layer still works.
    pub(crate) fn upgrade_failed(&mut self, e: &str) -> Close {
        self.send_error(&ClientError::new(
            ErrorCode::IdentifyFailed,
            format!("IDENTIFY failed {e}"),
        ));
        Close(format!("upgrade failed: {e}"))
    }

    /// The auth server answered the query handed out by [`Session::take_action`].
    pub(crate) fn auth_answered(&mut self, r: Result<AuthState, AuthError>) -> Result<(), Close> {
        let Some(wait) = self.awaiting_auth.take() else {
            return Ok(());
        };
        let addr = self.client.remote_addr;
        let st = match r {
            Ok(st) => st,
            Err(e) => {
                // The details stay in our log: the client is not trusted with them.
                tracing::warn!("PROTOCOL(V2): [{addr}] AUTH failed {e}");
                self.send_error(&ClientError::new(ErrorCode::AuthFailed, "AUTH failed"));
                return Err(Close::fatal());
            }
        };
        *self.client.auth.lock() = crate::client::AuthSummary {
            authed: !st.authorizations.is_empty(),
            identity: st.identity.clone(),
            identity_url: st.identity_url.clone(),
        };
        self.auth_state = Some(st);
        match wait {
            AuthWait::Auth => {
                let Some(st) = self.auth_state.as_ref() else {
                    return Err(Close::fatal());
                };
                if st.authorizations.is_empty() {
                    self.send_error(&ClientError::new(
                        ErrorCode::Unauthorized,
                        "AUTH no authorizations found",
                    ));
                    return Err(Close::fatal());
                }
                let body = serde_json::json!({
                    "identity": st.identity,
                    "identity_url": st.identity_url,
                    "permission_count": st.authorizations.len(),
                });
                let json = serde_json::to_vec(&body).unwrap_or_default();
                self.respond(FrameType::Response, &json);
                Ok(())
            }
            AuthWait::Recheck(cmd) => match self.exec(cmd) {
                Ok(()) => Ok(()),
                Err(e) => {
                    self.send_error(&e);
                    if e.code.is_fatal() {
                        return Err(Close::fatal());
                    }
                    Ok(())
                }
            },
        }
    }

    /// Go's `CheckAuth` for an auth-enabled daemon: `Ok(false)` when the authorizations
    /// expired and the auth server must be asked again first.
    fn check_auth(&self, cmd: &str, topic: &str, channel: &str) -> Result<bool, ClientError> {
        let Some(st) = self
            .auth_state
            .as_ref()
            .filter(|s| !s.authorizations.is_empty())
        else {
            return Err(ClientError::new(
                ErrorCode::AuthFirst,
                format!("AUTH required before {cmd}"),
            ));
        };
        if st.is_expired(std::time::Instant::now()) {
            return Ok(false);
        }
        if !st.is_allowed(topic, channel) {
            return Err(ClientError::new(
                ErrorCode::Unauthorized,
                format!("AUTH failed for {cmd} on {topic:?} {channel:?}"),
            ));
        }
        Ok(true)
    }

    /// Go's `enforceTLSPolicy`: with `--tls-required`, only IDENTIFY may come before TLS.
    fn check_tls_policy(&self, cmd: &str) -> Result<(), ClientError> {
        if self.tls_missing {
            return Err(ClientError::invalid(format!(
                "cannot {cmd} in current state (TLS required)"
            )));
        }
        Ok(())
    }

    /// Decodes and handles the complete commands in `rbuf` (leaving a partial one there)
    /// until one needs the loop ([`Session::take_action`]) or output must drain first.
    pub(crate) fn handle_input(&mut self, rbuf: &mut BytesMut) -> Result<(), Close> {
        if self.process_commands(rbuf) {
            return Err(Close::fatal());
        }
        Ok(())
    }

    /// Returns true after a fatal error.
    fn process_commands(&mut self, rbuf: &mut BytesMut) -> bool {
        while self.wants_input() {
            match self.decoder.decode(rbuf) {
                Ok(Some(Command::Fin { id })) => {
                    if let Err(e) = self.check_tls_policy("FIN") {
                        self.apply_fins();
                        self.send_error(&e);
                        return true;
                    }
                    if self.check_subscribed("FIN").is_err() {
                        self.apply_fins();
                        self.send_error(&ClientError::invalid("cannot FIN in current state"));
                        return true;
                    }
                    self.pending_fins.push(id);
                }
                Ok(Some(cmd)) => {
                    self.apply_fins();
                    if let Err(e) = self.exec(cmd) {
                        self.send_error(&e);
                        if e.code.is_fatal() {
                            return true;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.apply_fins();
                    self.send_error(&ClientError::new(e.code, e.desc.into_owned()));
                    return true;
                }
            }
        }
        self.apply_fins();
        false
    }

    fn send_error(&mut self, e: &ClientError) {
        tracing::info!("[{}] - {} {}", self.client.remote_addr, e.code, e.desc);
        let text = format!("{} {}", e.code, e.desc);
        self.respond(FrameType::Error, text.as_bytes());
    }

    /// Queues a response or error frame behind any publish still waiting for the log.
    fn respond(&mut self, ft: FrameType, data: &[u8]) {
        if self.replies.is_empty() {
            put_frame(&mut self.wbuf, ft, data);
        } else {
            let mut b = BytesMut::new();
            put_frame(&mut b, ft, data);
            self.replies.push_back(Reply::Frame(b.to_vec()));
        }
    }

    /// Takes the outcome of the oldest waiting publish and releases the responses queued
    /// behind it. Returns true when the publish failed (fatal, as Go's E_PUB_FAILED).
    fn resolve_head(&mut self, r: Result<(), PublishError>) -> bool {
        let Some(Reply::Pending { code, what, .. }) = self.replies.pop_front() else {
            return false;
        };
        let failed = match r {
            Ok(()) => {
                put_frame(&mut self.wbuf, FrameType::Response, OK);
                false
            }
            Err(e) => {
                let text = format!("{code} {what} failed {e}");
                tracing::error!("[{}] - {text}", self.client.remote_addr);
                put_frame(&mut self.wbuf, FrameType::Error, text.as_bytes());
                true
            }
        };
        while let Some(Reply::Frame(_)) = self.replies.front() {
            if let Some(Reply::Frame(f)) = self.replies.pop_front() {
                self.wbuf.extend_from_slice(&f);
            }
        }
        failed
    }

    /// Applies queued FINs under one channel lock.
    fn apply_fins(&mut self) {
        if self.pending_fins.is_empty() {
            return;
        }
        let Some(ch) = self.channel.clone() else {
            self.pending_fins.clear();
            return;
        };
        let mut failed = Vec::new();
        let mut acked = Vec::new();
        let replica = ch.replica.get();
        let mut replicated = Vec::new();
        {
            let mut st = ch.state.lock();
            // One clock reading per batch of FINs, and only when latency is tracked.
            let now = if st.tracks_e2e() {
                crate::clock::unix_nanos()
            } else {
                0
            };
            // Consecutive FINs of one MPUB share its timestamp: one sketch update per run.
            let mut run: (i64, u64) = (0, 0);
            for id in &self.pending_fins {
                match st.fin(self.client.id, id_key(id)) {
                    Ok(m) => {
                        if now != 0 {
                            let ts = m.batch.timestamp(m.idx);
                            if run.1 > 0 && run.0 != ts {
                                st.record_e2e(now, run.0, run.1);
                                run.1 = 0;
                            }
                            run = (ts, run.1 + 1);
                        }
                        acked.extend(m.log_pos());
                        if replica.is_some() {
                            replicated.push(id.0);
                        }
                    }
                    Err(e) => failed.push((*id, e)),
                }
            }
            if run.1 > 0 {
                st.record_e2e(now, run.0, run.1);
            }
        }
        ch.journal_acks(&acked);
        if let Some(q) = replica {
            q.push(replicated.into_iter());
        }
        let ok = self.pending_fins.len() - failed.len();
        self.client
            .finish_count
            .fetch_add(ok as u64, Ordering::Relaxed);
        self.pending_fins.clear();
        for (id, e) in failed {
            self.send_error(&ClientError::new(
                ErrorCode::FinFailed,
                format!("FIN {id} failed {e}"),
            ));
        }
    }

    fn check_subscribed(&self, cmd: &str) -> Result<(), ClientError> {
        let s = self.client.state();
        if s != client_state::SUBSCRIBED && s != client_state::CLOSING {
            return Err(ClientError::invalid(format!(
                "cannot {cmd} in current state"
            )));
        }
        Ok(())
    }

    fn exec(&mut self, cmd: Command) -> Result<(), ClientError> {
        if !matches!(cmd, Command::Identify { .. }) {
            self.check_tls_policy(cmd.name())?;
        }
        if self.nsqd.auth.get().is_some() {
            // Go checks after the command's own state and argument checks.
            let target = match &cmd {
                Command::Sub { topic, channel } => {
                    if self.client.state() != client_state::INIT {
                        return Err(ClientError::invalid("cannot SUB in current state"));
                    }
                    if self.settings.heartbeat.is_none() {
                        return Err(ClientError::invalid("cannot SUB with heartbeats disabled"));
                    }
                    Some(("SUB", topic.as_str(), channel.as_str()))
                }
                Command::Pub { topic, .. } => Some(("PUB", topic.as_str(), "")),
                Command::Mpub { topic, .. } => Some(("MPUB", topic.as_str(), "")),
                Command::Dpub {
                    topic, defer_ms, ..
                } => {
                    let max = self.nsqd.opts.max_req_timeout.as_millis() as u64;
                    if *defer_ms > max {
                        return Err(ClientError::invalid(format!(
                            "DPUB timeout {defer_ms} out of range 0-{max}"
                        )));
                    }
                    Some(("DPUB", topic.as_str(), ""))
                }
                _ => None,
            };
            let fresh = match target {
                Some((name, topic, channel)) => self.check_auth(name, topic, channel)?,
                None => true,
            };
            if !fresh {
                self.pending = Some(AuthWait::Recheck(cmd));
                return Ok(());
            }
        }
        match cmd {
            Command::Nop => Ok(()),
            Command::Identify { body } => self.identify(&body),
            Command::Auth { secret } => {
                if self.client.state() != client_state::INIT {
                    return Err(ClientError::invalid("cannot AUTH in current state"));
                }
                if self
                    .auth_state
                    .as_ref()
                    .is_some_and(|s| !s.authorizations.is_empty())
                {
                    return Err(ClientError::invalid("AUTH already set"));
                }
                if self.nsqd.auth.get().is_none() {
                    return Err(ClientError::new(ErrorCode::AuthDisabled, "AUTH disabled"));
                }
                self.auth_secret = String::from_utf8_lossy(&secret).into_owned();
                self.pending = Some(AuthWait::Auth);
                Ok(())
            }
            Command::Sub { topic, channel } => self.sub(&topic, &channel),
            Command::Rdy { count } => self.rdy(count),
            Command::Fin { .. } => unreachable!("FIN is batched in process_commands"),
            Command::Req { id, timeout_ms } => self.req(id, timeout_ms),
            Command::Touch { id } => self.touch(id),
            Command::Cls => {
                if self.client.state() != client_state::SUBSCRIBED {
                    return Err(ClientError::invalid("cannot CLS in current state"));
                }
                self.client.ready_count.store(0, Ordering::Relaxed);
                self.client
                    .state
                    .store(client_state::CLOSING, Ordering::Relaxed);
                self.stop_receiving();
                self.respond(FrameType::Response, CLOSE_WAIT);
                Ok(())
            }
            Command::Pub { topic, body } => self.publish(
                &topic,
                std::iter::once(&body[..]),
                1,
                None,
                ErrorCode::PubFailed,
                "PUB",
            ),
            Command::Mpub { topic, batch } => {
                let n = batch.count;
                self.publish(&topic, batch.iter(), n, None, ErrorCode::MpubFailed, "MPUB")
            }
            Command::Dpub {
                topic,
                defer_ms,
                body,
            } => {
                let max = self.nsqd.opts.max_req_timeout.as_millis() as u64;
                if defer_ms > max {
                    return Err(ClientError::invalid(format!(
                        "DPUB timeout {defer_ms} out of range 0-{max}"
                    )));
                }
                self.publish(
                    &topic,
                    std::iter::once(&body[..]),
                    1,
                    Some(defer_ms * 1_000_000),
                    ErrorCode::DpubFailed,
                    "DPUB",
                )
            }
        }
    }

    fn publish<'a>(
        &mut self,
        topic: &str,
        bodies: impl Iterator<Item = &'a [u8]> + Clone,
        n: u32,
        defer_ns: Option<u64>,
        code: ErrorCode,
        what: &'static str,
    ) -> Result<(), ClientError> {
        if let Some(r) = self.nsqd.replicas() {
            if r.is_replicated(topic) {
                let rx = r.publish(topic, bodies, n, defer_ns);
                if !self.producer {
                    self.producer = true;
                    self.nsqd.add_producer(&self.client);
                }
                self.client
                    .pub_counter(topic)
                    .fetch_add(n as u64, Ordering::Relaxed);
                self.replies.push_back(Reply::Pending { rx, code, what });
                return Ok(());
            }
        }
        for attempt in 0..2 {
            let (t, counter) = match &self.topic_cache {
                Some((t, c)) if t.name == topic && !(attempt == 0 && t.is_deleted()) => {
                    (t.clone(), c.clone())
                }
                _ => {
                    let t = self.nsqd.get_or_create_topic(topic);
                    let c = self.client.pub_counter(topic);
                    self.topic_cache = Some((t.clone(), c.clone()));
                    (t, c)
                }
            };
            match t.publish(bodies.clone(), n, defer_ns) {
                Ok(p) => {
                    if !self.producer {
                        self.producer = true;
                        self.nsqd.add_producer(&self.client);
                    }
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                    match p {
                        Published::Done => self.respond(FrameType::Response, OK),
                        Published::Pending(rx) => {
                            self.replies.push_back(Reply::Pending { rx, code, what })
                        }
                    }
                    return Ok(());
                }
                Err(PublishError::Exiting) => {
                    // The cached topic was deleted; look it up (re-creating it) once.
                    self.topic_cache = None;
                }
                Err(e) => return Err(ClientError::new(code, format!("{what} failed {e}"))),
            }
        }
        Err(ClientError::new(code, format!("{what} failed exiting")))
    }

    fn identify(&mut self, body: &[u8]) -> Result<(), ClientError> {
        if self.client.state() != client_state::INIT || self.identified {
            return Err(ClientError::invalid("cannot IDENTIFY in current state"));
        }
        let req: IdentifyRequest = serde_json::from_slice(body).map_err(|_| {
            ClientError::new(ErrorCode::BadBody, "IDENTIFY failed to decode JSON body")
        })?;
        let o = &self.nsqd.opts;
        let bad = |s: String| ClientError::new(ErrorCode::BadBody, format!("IDENTIFY {s}"));

        let hb = req.heartbeat_interval.unwrap_or(0);
        let heartbeat = match hb {
            -1 => None,
            0 => Some(Duration::from_secs(30)),
            ms if ms >= 1000 && (ms as u128) <= o.max_heartbeat_interval.as_millis() => {
                Some(Duration::from_millis(ms as u64))
            }
            ms => return Err(bad(format!("heartbeat interval ({ms}) is invalid"))),
        };
        let obs = req.output_buffer_size.unwrap_or(0);
        let output_buffer_size = match obs {
            -1 => 1,
            0 => 16 * 1024,
            n if n >= 64 && n <= o.max_output_buffer_size => n as usize,
            n => return Err(bad(format!("output buffer size ({n}) is invalid"))),
        };
        let obt = req.output_buffer_timeout.unwrap_or(0);
        let output_buffer_timeout = match obt {
            -1 => Duration::ZERO,
            0 => o.output_buffer_timeout,
            ms if ms >= 0
                && (ms as u128) >= o.min_output_buffer_timeout.as_millis()
                && (ms as u128) <= o.max_output_buffer_timeout.as_millis() =>
            {
                Duration::from_millis(ms as u64)
            }
            ms => return Err(bad(format!("output buffer timeout ({ms}) is invalid"))),
        };
        let sample_rate = req.sample_rate.unwrap_or(0);
        if !(0..=99).contains(&sample_rate) {
            return Err(bad(format!("sample rate ({sample_rate}) is invalid")));
        }
        let mt = req.msg_timeout.unwrap_or(0);
        let msg_timeout = match mt {
            0 => o.msg_timeout,
            ms if ms >= 1000 && (ms as u128) <= o.max_msg_timeout.as_millis() => {
                Duration::from_millis(ms as u64)
            }
            ms => return Err(bad(format!("msg timeout ({ms}) is invalid"))),
        };

        {
            let mut id = self.client.identity.lock();
            if let Some(v) = req.client_id {
                id.client_id = v;
            }
            if let Some(v) = req.hostname {
                id.hostname = v;
            }
            id.user_agent = req.user_agent.unwrap_or_default();
            id.sample_rate = sample_rate;
            id.topology_region = req.topology_region.unwrap_or_default();
            id.topology_zone = req.topology_zone.unwrap_or_default();
        }
        self.settings = Settings {
            heartbeat,
            output_buffer_size,
            output_buffer_timeout,
            msg_timeout,
            sample_rate: sample_rate as u8,
        };
        self.heartbeat_changed = true;
        self.identified = true;

        if !req.feature_negotiation.unwrap_or(false) {
            self.respond(FrameType::Response, OK);
            return Ok(());
        }
        // Go's negotiation: TLS only with a certificate, compression unless disabled by flag;
        // the deflate level defaults to 6 and is capped by --max-deflate-level (Go reports
        // the capped default even when deflate is off).
        let tls_v1 = self.nsqd.tls_acceptor.get().is_some() && req.tls_v1.unwrap_or(false);
        let deflate = o.deflate && req.deflate.unwrap_or(false);
        let mut deflate_level = 6;
        if let Some(l) = req.deflate_level.filter(|&l| deflate && l > 0) {
            deflate_level = l;
        }
        deflate_level = deflate_level.min(o.max_deflate_level);
        let snappy = o.snappy && req.snappy.unwrap_or(false);
        if deflate && snappy {
            return Err(ClientError::new(
                ErrorCode::IdentifyFailed,
                "cannot enable both deflate and snappy compression",
            ));
        }
        let resp = IdentifyResponse {
            max_rdy_count: o.max_rdy_count,
            version: NSQ_VERSION.to_string(),
            max_msg_timeout: o.max_msg_timeout.as_millis() as i64,
            msg_timeout: msg_timeout.as_millis() as i64,
            tls_v1,
            deflate,
            deflate_level,
            max_deflate_level: o.max_deflate_level,
            snappy,
            sample_rate,
            auth_required: self.nsqd.auth.get().is_some(),
            output_buffer_size: output_buffer_size as i64,
            output_buffer_timeout: output_buffer_timeout.as_millis() as i64,
            topology_region: o.topology_region.clone(),
            topology_zone: o.topology_zone.clone(),
        };
        let json = serde_json::to_vec(&resp).map_err(|e| {
            ClientError::new(ErrorCode::IdentifyFailed, format!("IDENTIFY failed {e}"))
        })?;
        self.respond(FrameType::Response, &json);
        if tls_v1 || snappy || deflate {
            self.upgrade = Some(Upgrade {
                tls: tls_v1,
                snappy,
                deflate: deflate.then_some(deflate_level.clamp(1, 9) as u32),
            });
        }
        Ok(())
    }

    fn sub(&mut self, topic: &str, channel: &str) -> Result<(), ClientError> {
        if self.client.state() != client_state::INIT {
            return Err(ClientError::invalid("cannot SUB in current state"));
        }
        if self.settings.heartbeat.is_none() {
            return Err(ClientError::invalid("cannot SUB with heartbeats disabled"));
        }
        // A replicated topic is served by its leader only (its local copy exists there).
        let replicated = self.nsqd.is_replicated(topic);
        // An ephemeral channel (or topic) may be going away as we join it; Go retries once.
        let mut joined = None;
        for _ in 0..2 {
            let t = if replicated {
                match self.nsqd.topic(topic) {
                    Some(t) => t,
                    None => {
                        let leader = self.nsqd.replicas().map(|r| r.leader_of(topic));
                        return Err(ClientError::new(
                            ErrorCode::SubFailed,
                            format!(
                                "SUB failed topic {topic} is replicated and this node is not its leader (leader: {})",
                                leader.unwrap_or_default()
                            ),
                        ));
                    }
                }
            } else {
                self.nsqd.get_or_create_topic(topic)
            };
            let ch = match self.nsqd.get_or_create_channel(&t, channel) {
                Ok((ch, _)) => ch,
                Err(_) => continue,
            };
            match ch.add_client(self.client.clone(), self.nsqd.opts.max_channel_consumers) {
                Ok(()) => {
                    joined = Some(ch);
                    break;
                }
                Err(SubscribeError::Exiting) => continue,
                Err(e) => {
                    return Err(ClientError::new(
                        ErrorCode::SubFailed,
                        format!("SUB failed {e}"),
                    ))
                }
            }
        }
        let Some(ch) = joined else {
            return Err(ClientError::new(
                ErrorCode::SubFailed,
                "SUB failed to deleted topic/channel",
            ));
        };
        let o = &self.nsqd.opts;
        if o.topology_aware_consumption() {
            // Go (protocol_v2.go messagePump, after v1.3.0): zone-local when the IDENTIFY
            // zone equals --topology-zone, region-local likewise; an empty --topology-zone
            // has no zone channel, so nobody is zone-local then (same for the region).
            let local = {
                let id = self.client.identity.lock();
                if !o.topology_zone.is_empty() && id.topology_zone == o.topology_zone {
                    crate::state::channel::LOCAL_ZONE
                } else if !o.topology_region.is_empty() && id.topology_region == o.topology_region {
                    crate::state::channel::LOCAL_REGION
                } else {
                    0
                }
            };
            ch.state.lock().set_locality(self.client.id, local);
        }
        self.client
            .state
            .store(client_state::SUBSCRIBED, Ordering::Relaxed);
        self.channel = Some(ch);
        self.respond(FrameType::Response, OK);
        Ok(())
    }

    /// RDY 0 or CLS: this consumer no longer waits for messages; if it was a same-zone/region
    /// consumer holding back the others (topology-aware consumption), they are woken.
    fn stop_receiving(&self) {
        let Some(ch) = &self.channel else {
            return;
        };
        let wake = {
            let mut st = ch.state.lock();
            st.not_idle(self.client.id);
            st.take_topology_wake()
        };
        if wake {
            ch.wake_consumers();
        }
    }

    fn rdy(&mut self, count: u64) -> Result<(), ClientError> {
        match self.client.state() {
            client_state::CLOSING => return Ok(()),
            client_state::SUBSCRIBED => {}
            _ => return Err(ClientError::invalid("cannot RDY in current state")),
        }
        let max = self.nsqd.opts.max_rdy_count.max(0) as u64;
        if count > max {
            return Err(ClientError::invalid(format!(
                "RDY count {count} out of range 0-{max}"
            )));
        }
        self.client.ready_count.store(count, Ordering::Relaxed);
        if count == 0 {
            self.stop_receiving();
        }
        Ok(())
    }

    fn req(&mut self, id: nsq_protocol::MessageId, timeout_ms: u64) -> Result<(), ClientError> {
        self.check_subscribed("REQ")?;
        let max = self.nsqd.opts.max_req_timeout;
        let mut delay = Duration::from_millis(timeout_ms);
        if delay > max {
            tracing::info!(
                "[{}] REQ timeout {timeout_ms}ms out of range 0-{}ms; clamping",
                self.client.remote_addr,
                max.as_millis()
            );
            delay = max;
        }
        let ch = self
            .channel
            .clone()
            .expect("subscribed clients have a channel");
        let now = ch.clock().now();
        let (r, dead) = {
            let mut st = ch.state.lock();
            let r = st.req(self.client.id, id_key(&id), delay.as_nanos() as u64, now);
            (r, st.take_dead_letters())
        };
        match r {
            Ok(_) if !dead.is_empty() => {
                // Its last attempt (policy max_attempts): to the dead-letter topic.
                self.client.requeue_count.fetch_add(1, Ordering::Relaxed);
                ch.dead_letter(dead);
                Ok(())
            }
            Ok(m) => {
                self.client.requeue_count.fetch_add(1, Ordering::Relaxed);
                if delay.is_zero() {
                    ch.wake_consumers();
                } else {
                    ch.schedule(now + delay.as_nanos() as u64);
                    if let Some(pos) = m.log_pos() {
                        let due = crate::clock::unix_nanos() + delay.as_nanos() as i64;
                        ch.journal_defer(pos, due, m.attempts);
                    }
                }
                Ok(())
            }
            Err(e) => Err(in_flight_error(ErrorCode::ReqFailed, "REQ", &id, e)),
        }
    }

    fn touch(&mut self, id: nsq_protocol::MessageId) -> Result<(), ClientError> {
        self.check_subscribed("TOUCH")?;
        let ch = self
            .channel
            .clone()
            .expect("subscribed clients have a channel");
        let now = ch.clock().now();
        let r = ch.state.lock().touch(
            self.client.id,
            id_key(&id),
            self.settings.msg_timeout.as_nanos() as u64,
            self.nsqd.opts.max_msg_timeout.as_nanos() as u64,
            now,
        );
        r.map_err(|e| in_flight_error(ErrorCode::TouchFailed, "TOUCH", &id, e))
    }

    /// Takes messages from the channel while the client has RDY credit and room in its
    /// output buffer, and encodes their frames.
    pub(crate) fn pull(&mut self) {
        let Some(ch) = self.channel.as_ref() else {
            return;
        };
        if self.client.state() != client_state::SUBSCRIBED {
            return;
        }
        let rdy = self.client.ready_count.load(Ordering::Relaxed);
        if rdy == 0 || self.wbuf.len() >= self.settings.output_buffer_size {
            return;
        }
        let timeout = self.settings.msg_timeout.as_nanos() as u64;
        let now = ch.clock().now();
        let mut msgs = std::mem::take(&mut self.scratch);
        let sample =
            (self.settings.sample_rate > 0).then_some((self.settings.sample_rate, &mut self.rng));
        let ttl = ch.ttl_ns();
        let mut expired = Vec::new();
        let (n, wake) = {
            let mut st = ch.state.lock();
            let mut n = st.pop(
                self.client.id,
                rdy,
                MAX_PULL,
                timeout,
                now,
                sample,
                &mut msgs,
            );
            if ttl != 0 && n > 0 {
                // TTL policy: what outlived it is dropped here instead of delivered (its
                // storage reclaimed as a FIN's). Pop again while everything taken expired, so
                // expired messages at the head cannot stall a consumer with credit.
                let cutoff = crate::clock::unix_nanos().saturating_sub(ttl as i64);
                for _ in 0..64 {
                    let client = self.client.id;
                    msgs.retain(|m| {
                        if m.batch.timestamp(m.idx) >= cutoff {
                            return true;
                        }
                        if let Some(e) = st.expire(client, m.key()) {
                            expired.extend(e.log_pos());
                        }
                        false
                    });
                    if !msgs.is_empty() || n == 0 {
                        break;
                    }
                    n = st.pop(client, rdy, MAX_PULL, timeout, now, None, &mut msgs);
                }
                n = msgs.len();
            }
            self.held = st.consumer_in_flight(self.client.id);
            (n, st.take_topology_wake())
        };
        if !expired.is_empty() {
            ch.journal_acks(&expired);
        }
        if wake {
            // Topology-aware consumption: this (local) consumer ran out of credit with
            // messages left, which the less local ones were held back from.
            ch.wake_consumers();
        }
        ch.maybe_refill();
        if n > 0 {
            ch.schedule(now + timeout);
            self.client
                .message_count
                .fetch_add(n as u64, Ordering::Relaxed);
            for m in msgs.drain(..) {
                let b = &m.batch;
                put_message_frame(
                    &mut self.wbuf,
                    b.timestamp(m.idx),
                    m.attempts,
                    &b.id(m.idx),
                    b.body(m.idx),
                );
            }
        }
        self.scratch = msgs;
    }
}

fn in_flight_error(
    code: ErrorCode,
    what: &str,
    id: &nsq_protocol::MessageId,
    e: InFlightError,
) -> ClientError {
    ClientError::new(code, format!("{what} {id} failed {e}"))
}

#[cfg(test)]
mod tests {
    //! A session driven with bytes and events, no socket: each test feeds commands as a
    //! client would write them and reads back the frames the session produced.

    use std::net::SocketAddr;
    use std::time::Instant;

    use nsq_protocol::frame::{decode_frame, Frame};
    use nsq_protocol::message::Message;

    use super::*;
    use crate::config::Options;

    fn nsqd_with(f: impl FnOnce(&mut Options)) -> Arc<Nsqd> {
        let mut o = Options::default();
        f(&mut o);
        Nsqd::new(o)
    }

    fn session(nsqd: &Arc<Nsqd>) -> Session {
        let addr: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let client = Arc::new(ClientInfo::new(nsqd.next_client_id(), addr, 0));
        Session::new(nsqd.clone(), client)
    }

    /// Feeds `bytes` and returns the session's verdict.
    fn feed(s: &mut Session, bytes: &[u8]) -> Result<(), Close> {
        let mut rbuf = BytesMut::from(bytes);
        let r = s.handle_input(&mut rbuf);
        assert!(
            rbuf.is_empty() || !s.wants_input() || r.is_err(),
            "complete commands left unread: {rbuf:?}"
        );
        r
    }

    /// Every frame the session queued, oldest first.
    fn frames(s: &mut Session) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(f) = decode_frame(s.out(), 1 << 24).expect("well-formed frames") {
            out.push(f);
        }
        assert!(s.out().is_empty());
        out
    }

    fn texts(s: &mut Session) -> Vec<String> {
        frames(s)
            .iter()
            .map(|f| String::from_utf8_lossy(&f.data).into_owned())
            .collect()
    }

    fn identify(json: &str) -> Vec<u8> {
        let mut b = b"IDENTIFY\n".to_vec();
        b.extend_from_slice(&(json.len() as u32).to_be_bytes());
        b.extend_from_slice(json.as_bytes());
        b
    }

    fn pub_cmd(topic: &str, body: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        nsq_protocol::command::encode_pub(&mut b, topic, body);
        b.to_vec()
    }

    fn messages(s: &mut Session) -> Vec<Message> {
        frames(s)
            .into_iter()
            .filter(|f| f.frame_type == FrameType::Message)
            .map(|f| Message::decode(f.data).expect("message frame"))
            .collect()
    }

    #[tokio::test]
    async fn pipelined_publishes_are_answered_in_order() {
        let nsqd = nsqd_with(|_| {});
        let mut s = session(&nsqd);
        let mut input = pub_cmd("t", b"a");
        input.extend(pub_cmd("t", b"b"));
        input.extend(b"NOP\n");
        input.extend(pub_cmd("t", b"c"));
        feed(&mut s, &input).unwrap();
        assert_eq!(texts(&mut s), ["OK", "OK", "OK"]);
        assert_eq!(nsqd.topic("t").unwrap().depth(), 3);
        assert_eq!(s.client().pub_counter("t").load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_partial_command_waits_for_the_rest() {
        let nsqd = nsqd_with(|_| {});
        let mut s = session(&nsqd);
        let cmd = pub_cmd("t", b"hello");
        let mut rbuf = BytesMut::from(&cmd[..cmd.len() - 2]);
        s.handle_input(&mut rbuf).unwrap();
        assert!(frames(&mut s).is_empty());
        rbuf.extend_from_slice(&cmd[cmd.len() - 2..]);
        s.handle_input(&mut rbuf).unwrap();
        assert_eq!(texts(&mut s), ["OK"]);
    }

    #[tokio::test]
    async fn sub_rdy_delivers_and_fin_acks() {
        let nsqd = nsqd_with(|_| {});
        let mut consumer = session(&nsqd);
        feed(&mut consumer, b"SUB t c\nRDY 2\n").unwrap();
        assert_eq!(texts(&mut consumer), ["OK"]);
        let mut producer = session(&nsqd);
        let mut input = Vec::new();
        for body in [&b"m1"[..], b"m2", b"m3"] {
            input.extend(pub_cmd("t", body));
        }
        feed(&mut producer, &input).unwrap();
        assert_eq!(texts(&mut producer), ["OK", "OK", "OK"]);

        // RDY 2: two in flight, the third waits for credit.
        consumer.pull();
        let got = messages(&mut consumer);
        assert_eq!(got.len(), 2);
        assert_eq!(&got[0].body[..], b"m1");
        assert_eq!(got[0].attempts, 1);
        consumer.pull();
        assert!(
            messages(&mut consumer).is_empty(),
            "RDY 2 allows 2 in flight"
        );

        // FINs in one read are applied together; the credit frees the third message.
        let mut fins = BytesMut::new();
        for m in &got {
            nsq_protocol::command::encode_fin(&mut fins, &m.id);
        }
        feed(&mut consumer, &fins).unwrap();
        assert!(frames(&mut consumer).is_empty(), "FIN has no response");
        assert_eq!(consumer.client().finish_count.load(Ordering::Relaxed), 2);
        consumer.pull();
        let third = messages(&mut consumer);
        assert_eq!(third.len(), 1);
        assert_eq!(&third[0].body[..], b"m3");

        // REQ 0 puts it back at once with its attempts counted on redelivery.
        let req = format!("REQ {} 0\n", third[0].id.as_str());
        feed(&mut consumer, req.as_bytes()).unwrap();
        consumer.pull();
        let again = messages(&mut consumer);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 2);
        assert_eq!(consumer.client().requeue_count.load(Ordering::Relaxed), 1);
    }

    /// A small write of message frames may wait (≤ 1 ms, ≤ `output_buffer_timeout`) only
    /// while the client still holds at least half of its RDY; never for RDY below 4, never
    /// with `output_buffer_timeout` disabled, never once the buffer is half full.
    #[tokio::test]
    async fn small_writes_wait_only_while_the_client_holds_half_its_rdy() {
        let nsqd = nsqd_with(|_| {});
        let publish = |n: usize| {
            let mut producer = session(&nsqd);
            let mut input = Vec::new();
            for _ in 0..n {
                input.extend(pub_cmd("t", b"m"));
            }
            feed(&mut producer, &input).unwrap();
        };
        let subscribe = |channel: &str, identify: Option<&str>, rdy: u64| {
            let mut c = session(&nsqd);
            let mut cmd = Vec::new();
            if let Some(body) = identify {
                cmd.extend_from_slice(b"IDENTIFY\n");
                cmd.extend_from_slice(&(body.len() as u32).to_be_bytes());
                cmd.extend_from_slice(body.as_bytes());
            }
            cmd.extend_from_slice(format!("SUB t {channel}\nRDY {rdy}\n").as_bytes());
            feed(&mut c, &cmd).unwrap();
            frames(&mut c);
            c
        };

        let mut c = subscribe("c", None, 10);
        assert_eq!(c.coalesce_for(), None, "nothing to write");
        publish(10);
        c.pull();
        // All 10 of RDY 10 held, a few small frames buffered: wait for more credit.
        assert_eq!(c.coalesce_for(), Some(Duration::from_millis(1)));
        let got = messages(&mut c);
        assert_eq!(got.len(), 10);
        // FIN 7: 3 held. One more delivered makes 4 of 10, under half: it could starve.
        let mut fins = BytesMut::new();
        for m in &got[..7] {
            nsq_protocol::command::encode_fin(&mut fins, &m.id);
        }
        feed(&mut c, &fins).unwrap();
        publish(1);
        c.pull();
        assert_eq!(c.coalesce_for(), None);
        assert_eq!(messages(&mut c).len(), 1);
        // A fifth held: half of RDY, busy enough to wait.
        publish(1);
        c.pull();
        assert_eq!(c.coalesce_for(), Some(Duration::from_millis(1)));

        // RDY 1 (a worker pool) and a disabled output_buffer_timeout never wait.
        let mut one = subscribe("one", None, 1);
        publish(1);
        one.pull();
        assert!(!one.out().is_empty());
        assert_eq!(one.coalesce_for(), None, "holds 1 of RDY 1, but RDY < 4");
        let mut off = subscribe("off", Some(r#"{"output_buffer_timeout":-1}"#), 10);
        publish(10);
        off.pull();
        assert!(!off.out().is_empty());
        assert_eq!(off.coalesce_for(), None);
    }

    #[tokio::test]
    async fn fin_of_an_unknown_id_is_not_fatal_but_fin_before_sub_is() {
        let nsqd = nsqd_with(|_| {});
        let mut s = session(&nsqd);
        feed(&mut s, b"SUB t c\n").unwrap();
        frames(&mut s);
        let id = nsq_protocol::MessageId::from_u64(42);
        let mut fin = BytesMut::new();
        nsq_protocol::command::encode_fin(&mut fin, &id);
        fin.extend_from_slice(b"NOP\n");
        feed(&mut s, &fin).unwrap();
        let t = texts(&mut s);
        assert_eq!(t.len(), 1);
        assert!(t[0].starts_with("E_FIN_FAILED FIN "), "{t:?}");

        let mut fresh = session(&nsqd);
        let mut fin = BytesMut::new();
        nsq_protocol::command::encode_fin(&mut fin, &id);
        assert_eq!(feed(&mut fresh, &fin), Err(Close::fatal()));
        assert_eq!(texts(&mut fresh), ["E_INVALID cannot FIN in current state"]);
    }

    #[tokio::test]
    async fn rdy_beyond_max_and_bad_commands_are_errors() {
        let nsqd = nsqd_with(|o| o.max_rdy_count = 100);
        let mut s = session(&nsqd);
        assert_eq!(feed(&mut s, b"RDY 1\n"), Err(Close::fatal()));
        assert_eq!(texts(&mut s), ["E_INVALID cannot RDY in current state"]);

        let mut s = session(&nsqd);
        feed(&mut s, b"SUB t c\n").unwrap();
        frames(&mut s);
        assert_eq!(feed(&mut s, b"RDY 101\n"), Err(Close::fatal()));
        assert_eq!(
            texts(&mut s),
            ["E_INVALID RDY count 101 out of range 0-100"]
        );

        let mut s = session(&nsqd);
        assert_eq!(feed(&mut s, b"BOGUS\n"), Err(Close::fatal()));
        let t = texts(&mut s);
        assert!(t[0].starts_with("E_INVALID"), "{t:?}");

        let mut s = session(&nsqd);
        assert_eq!(feed(&mut s, &pub_cmd("bad!", b"x")), Err(Close::fatal()));
        let t = texts(&mut s);
        assert!(t[0].starts_with("E_BAD_TOPIC"), "{t:?}");
    }

    #[tokio::test]
    async fn identify_negotiates_settings_and_rejects_bad_values() {
        let nsqd = nsqd_with(|_| {});
        let mut s = session(&nsqd);
        feed(
            &mut s,
            &identify(
                r#"{"feature_negotiation":true,"heartbeat_interval":5000,"msg_timeout":2000,
                    "output_buffer_size":1024,"user_agent":"unit/1.0","client_id":"me"}"#,
            ),
        )
        .unwrap();
        let f = frames(&mut s);
        assert_eq!(f.len(), 1);
        let v: serde_json::Value = serde_json::from_slice(&f[0].data).unwrap();
        assert_eq!(v["msg_timeout"], 2000);
        assert_eq!(v["output_buffer_size"], 1024);
        assert_eq!(v["version"], NSQ_VERSION);
        assert_eq!(v["tls_v1"], false);
        assert!(s.take_heartbeat_changed());
        assert!(!s.take_heartbeat_changed(), "reported once");
        assert_eq!(s.heartbeat(), Some(Duration::from_secs(5)));
        assert_eq!(s.client().identity.lock().client_id, "me");
        assert!(
            s.take_action().is_none(),
            "no upgrade without TLS/compression"
        );

        // A second IDENTIFY is fatal.
        assert_eq!(feed(&mut s, &identify("{}")), Err(Close::fatal()));
        assert_eq!(
            texts(&mut s),
            ["E_INVALID cannot IDENTIFY in current state"]
        );

        let mut s = session(&nsqd);
        assert_eq!(
            feed(&mut s, &identify(r#"{"heartbeat_interval":999}"#)),
            Err(Close::fatal())
        );
        assert_eq!(
            texts(&mut s),
            ["E_BAD_BODY IDENTIFY heartbeat interval (999) is invalid"]
        );

        // Heartbeats disabled: no SUB.
        let mut s = session(&nsqd);
        feed(&mut s, &identify(r#"{"heartbeat_interval":-1}"#)).unwrap();
        assert_eq!(texts(&mut s), ["OK"]);
        assert_eq!(s.heartbeat(), None);
        assert_eq!(feed(&mut s, b"SUB t c\n"), Err(Close::fatal()));
        assert_eq!(
            texts(&mut s),
            ["E_INVALID cannot SUB with heartbeats disabled"]
        );
    }

    #[tokio::test]
    async fn compression_upgrade_stops_input_until_the_layer_is_in_place() {
        let nsqd = nsqd_with(|_| {});
        let mut s = session(&nsqd);
        let mut input = identify(r#"{"feature_negotiation":true,"snappy":true}"#);
        input.extend(b"NOP\n");
        let mut rbuf = BytesMut::from(&input[..]);
        s.handle_input(&mut rbuf).unwrap();
        // The bytes after IDENTIFY belong to the compressed stream: left for the loop.
        assert_eq!(&rbuf[..], b"NOP\n");
        assert!(!s.wants_input());
        let f = frames(&mut s);
        let v: serde_json::Value = serde_json::from_slice(&f[0].data).unwrap();
        assert_eq!(v["snappy"], true);
        match s.take_action() {
            Some(Action::Upgrade(up)) => assert_eq!(
                up,
                Upgrade {
                    tls: false,
                    snappy: true,
                    deflate: None
                }
            ),
            other => panic!("expected an upgrade, got {other:?}"),
        }
        s.upgraded(Layer::Snappy);
        assert_eq!(texts(&mut s), ["OK"]);
        assert!(s.client().snappy.load(Ordering::Relaxed));
        assert!(s.wants_input());

        let mut s = session(&nsqd);
        assert_eq!(
            feed(
                &mut s,
                &identify(r#"{"feature_negotiation":true,"snappy":true,"deflate":true}"#)
            ),
            Err(Close::fatal())
        );
        assert_eq!(
            texts(&mut s),
            ["E_IDENTIFY_FAILED cannot enable both deflate and snappy compression"]
        );
    }

    #[tokio::test]
    async fn tls_required_refuses_commands_before_tls() {
        let nsqd = nsqd_with(|o| o.tls_required = TlsRequired::On);
        let mut s = session(&nsqd);
        assert_eq!(feed(&mut s, &pub_cmd("t", b"x")), Err(Close::fatal()));
        assert_eq!(
            texts(&mut s),
            ["E_INVALID cannot PUB in current state (TLS required)"]
        );
        // After the TLS layer is reported, the same command goes through.
        let mut s = session(&nsqd);
        s.upgraded(Layer::Tls(None));
        assert_eq!(texts(&mut s), ["OK"]);
        feed(&mut s, &pub_cmd("t", b"x")).unwrap();
        assert_eq!(texts(&mut s), ["OK"]);
    }

    fn with_auth(o: &mut Options) {
        o.auth_http_addresses = vec!["127.0.0.1:1".into()];
    }

    fn auth_nsqd() -> Arc<Nsqd> {
        let nsqd = nsqd_with(with_auth);
        let _ = nsqd.auth.set(crate::auth::AuthClient {
            addresses: vec!["127.0.0.1:1".into()],
            post: false,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            tls: None,
        });
        nsqd
    }

    fn auth_state(ttl: i64) -> AuthState {
        let json = format!(
            r#"{{"ttl":{ttl},"identity":"bob","identity_url":"http://x/bob","authorizations":[
                {{"topic":"^ok","channels":[".*"],"permissions":["publish","subscribe"]}}]}}"#
        );
        crate::auth::parse_response(json.as_bytes(), Instant::now()).unwrap()
    }

    #[tokio::test]
    async fn auth_asks_the_loop_and_answers_with_the_identity() {
        let nsqd = auth_nsqd();
        let mut s = session(&nsqd);
        assert_eq!(feed(&mut s, &pub_cmd("ok", b"x")), Err(Close::fatal()));
        assert_eq!(texts(&mut s), ["E_AUTH_FIRST AUTH required before PUB"]);

        let mut s = session(&nsqd);
        let mut input = b"AUTH\n".to_vec();
        input.extend(6u32.to_be_bytes());
        input.extend(b"s3cret");
        input.extend(pub_cmd("ok", b"x"));
        let mut rbuf = BytesMut::from(&input[..]);
        s.handle_input(&mut rbuf).unwrap();
        assert!(!rbuf.is_empty(), "the PUB waits for the auth answer");
        let Some(Action::QueryAuth(req)) = s.take_action() else {
            panic!("expected an auth query");
        };
        assert_eq!(req.secret, "s3cret");
        assert_eq!(req.remote_ip, "127.0.0.1");
        assert!(!s.wants_input());
        s.auth_answered(Ok(auth_state(60))).unwrap();
        let f = texts(&mut s);
        let v: serde_json::Value = serde_json::from_str(&f[0]).unwrap();
        assert_eq!(v["identity"], "bob");
        assert_eq!(v["permission_count"], 1);
        assert!(s.client().auth.lock().authed);
        s.handle_input(&mut rbuf).unwrap();
        assert_eq!(texts(&mut s), ["OK"]);

        // Not authorized for this topic: fatal, as Go.
        assert_eq!(feed(&mut s, &pub_cmd("other", b"x")), Err(Close::fatal()));
        assert_eq!(
            texts(&mut s),
            ["E_UNAUTHORIZED AUTH failed for PUB on \"other\" \"\""]
        );
    }

    #[tokio::test]
    async fn expired_authorizations_are_rechecked_before_the_command_runs() {
        let nsqd = auth_nsqd();
        let mut s = session(&nsqd);
        s.auth_state = Some(auth_state(1));
        s.auth_state.as_mut().unwrap().expires = Instant::now() - Duration::from_secs(1);
        feed(&mut s, &pub_cmd("ok", b"x")).unwrap();
        assert!(
            frames(&mut s).is_empty(),
            "the PUB waits for a fresh answer"
        );
        assert_eq!(nsqd.topic("ok").map(|t| t.depth()).unwrap_or(0), 0);
        assert!(matches!(s.take_action(), Some(Action::QueryAuth(_))));
        s.auth_answered(Ok(auth_state(60))).unwrap();
        assert_eq!(texts(&mut s), ["OK"]);
        assert_eq!(nsqd.topic("ok").unwrap().depth(), 1);

        // The auth server failing is fatal and the client sees only "AUTH failed".
        s.auth_state.as_mut().unwrap().expires = Instant::now() - Duration::from_secs(1);
        feed(&mut s, &pub_cmd("ok", b"y")).unwrap();
        assert!(matches!(s.take_action(), Some(Action::QueryAuth(_))));
        let err = AuthError::All("connection refused".into());
        assert_eq!(s.auth_answered(Err(err)), Err(Close::fatal()));
        assert_eq!(texts(&mut s), ["E_AUTH_FAILED AUTH failed"]);
        assert_eq!(nsqd.topic("ok").unwrap().depth(), 1);
    }

    #[tokio::test]
    async fn replies_queue_behind_a_publish_waiting_for_the_log() {
        let nsqd = nsqd_with(|_| {});
        let mut s = session(&nsqd);
        // A durable publish in flight to the log, as `Topic::publish` leaves it.
        let (tx, rx) = tokio::sync::oneshot::channel();
        s.replies.push_back(Reply::Pending {
            rx,
            code: ErrorCode::PubFailed,
            what: "PUB",
        });
        let mut input = pub_cmd("t", b"a");
        input.extend(b"SUB t c\n");
        feed(&mut s, &input).unwrap();
        assert!(
            frames(&mut s).is_empty(),
            "both answers wait behind the first"
        );
        assert!(s.waiting_publish().is_some());
        tx.send(Ok(())).unwrap();
        let r = s.waiting_publish().unwrap().await.unwrap();
        s.publish_done(r).unwrap();
        assert_eq!(texts(&mut s), ["OK", "OK", "OK"]);
        assert!(s.waiting_publish().is_none());

        // A failed log write answers E_PUB_FAILED and closes.
        let (tx, rx) = tokio::sync::oneshot::channel();
        s.replies.push_back(Reply::Pending {
            rx,
            code: ErrorCode::PubFailed,
            what: "PUB",
        });
        drop(tx);
        let r = s.waiting_publish().unwrap().await;
        assert!(r.is_err());
        let closed = s.publish_done(Err(PublishError::Disk("disk full".into())));
        assert_eq!(closed, Err(Close("publish failed".into())));
        let t = texts(&mut s);
        assert!(t[0].starts_with("E_PUB_FAILED PUB failed"), "{t:?}");
    }

    #[tokio::test]
    async fn input_stops_while_a_slow_reader_has_a_megabyte_waiting() {
        let nsqd = nsqd_with(|_| {});
        let mut s = session(&nsqd);
        s.out().extend_from_slice(&vec![0u8; WRITE_HIGH_WATER]);
        let mut rbuf = BytesMut::from(&pub_cmd("t", b"x")[..]);
        s.handle_input(&mut rbuf).unwrap();
        assert!(
            !rbuf.is_empty(),
            "nothing decoded while output is over the mark"
        );
        assert!(nsqd.topic("t").is_none());
        s.out().clear();
        s.handle_input(&mut rbuf).unwrap();
        assert!(rbuf.is_empty());
        assert_eq!(texts(&mut s), ["OK"]);
    }

    /// Whether `c` was woken (its `Notify` holds a permit).
    fn woken(c: &ClientInfo) -> bool {
        use futures::FutureExt;
        c.wake.notified().now_or_never().is_some()
    }

    #[tokio::test]
    async fn a_publish_wakes_only_the_idle_consumers_it_can_feed() {
        let nsqd = nsqd_with(|_| {});
        let mut consumers: Vec<Session> = (0..3).map(|_| session(&nsqd)).collect();
        for c in consumers.iter_mut() {
            feed(c, b"SUB t c\nRDY 1\n").unwrap();
            c.pull();
            assert_eq!(texts(c), ["OK"]);
        }
        // RDY 0 takes a consumer out of the running.
        feed(&mut consumers[2], b"RDY 0\n").unwrap();
        let mut p = session(&nsqd);
        feed(&mut p, &pub_cmd("t", b"one")).unwrap();
        let woke: Vec<bool> = consumers.iter().map(|c| woken(c.client())).collect();
        assert_eq!(woke, [true, false, false], "one message, one wake-up");
        consumers[0].pull();
        assert_eq!(messages(&mut consumers[0]).len(), 1);

        // Two messages: the next idle consumer, then the first again once it is idle.
        feed(&mut p, &pub_cmd("t", b"two")).unwrap();
        let woke: Vec<bool> = consumers.iter().map(|c| woken(c.client())).collect();
        assert_eq!(woke, [false, true, false]);
        consumers[1].pull();
        assert_eq!(messages(&mut consumers[1]).len(), 1);
    }

    #[tokio::test]
    async fn cls_answers_close_wait_and_stops_delivery() {
        let nsqd = nsqd_with(|_| {});
        let mut s = session(&nsqd);
        feed(&mut s, b"SUB t c\nRDY 5\nCLS\n").unwrap();
        assert_eq!(texts(&mut s), ["OK", "CLOSE_WAIT"]);
        let mut p = session(&nsqd);
        feed(&mut p, &pub_cmd("t", b"x")).unwrap();
        s.pull();
        assert!(messages(&mut s).is_empty());
        assert!(!s.can_receive());
    }
}
