//! TCP protocol V2: the accept loop and one task per connection.
//!
//! A connection task owns both halves of its socket and loops over:
//! 1. decode every complete command in the read buffer and handle it, appending responses
//!    to the write buffer (consecutive FINs are applied under one channel lock);
//! 2. if subscribed with RDY credit, pull ready messages from the channel and append their
//!    frames, up to the client's output buffer size;
//! 3. wait for whichever comes first: more bytes to read, the socket accepting our pending
//!    bytes, new messages on the channel, a heartbeat tick, the read deadline, or shutdown.
//!
//! Responses and messages leave as soon as nothing more is ready, so a lone message is not
//! held back for `output_buffer_timeout` (Go waits for its flush ticker); under load the
//! write buffer fills up to `output_buffer_size` and each syscall carries many frames.
//! Reading stops while more than `WRITE_HIGH_WATER` bytes wait to be written, so a client
//! that publishes without reading its responses cannot grow our memory without bound.
//!
//! The socket is an [`NsqStream`]: plain TCP until IDENTIFY negotiates TLS and/or snappy or
//! deflate, then upgraded in place, in Go's order: the IDENTIFY response goes out on the
//! current layer, the TLS handshake runs (5 s limit), `OK` is sent over TLS; compression
//! wraps the stream and `OK` is sent compressed. Plain TCP is the enum's first variant, so
//! the common case pays one predictable branch per poll. TLS and the compressors buffer, so
//! after writing on such a stream the loop flushes once the write buffer is empty.
//!
//! Commands that need to wait for something outside the connection (an upgrade, a query to
//! the auth server) stop command processing; the loop performs them and then carries on.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use nsq_net::NsqStream;
use nsq_protocol::command::{Command, Decoder, Limits};
use nsq_protocol::error::ErrorCode;
use nsq_protocol::frame::{put_frame, put_message_frame, FrameType};
use nsq_protocol::identify::{IdentifyRequest, IdentifyResponse};
use nsq_protocol::{CLOSE_WAIT, HEARTBEAT, MAGIC_V2, NSQ_VERSION, OK};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::io::poll_read_buf;

use crate::auth::{AuthError, AuthRequest, AuthState};
use crate::channel::{Channel, SubscribeError};
use crate::client::{client_state, ClientInfo};
use crate::clock::unix_secs;
use crate::config::TlsRequired;
use crate::state::batch::id_key;
use crate::state::channel::{InFlightError, MsgRef};
use crate::topic::{PublishError, Published, Topic};
use crate::Nsqd;

/// Stop reading commands while this many bytes wait to be written.
const WRITE_HIGH_WATER: usize = 1 << 20;
/// Most messages taken from a channel per pull.
const MAX_PULL: usize = 512;
/// Stop reading commands while this many replies wait for the topic log.
const MAX_PENDING_REPLIES: usize = 4096;
/// How long a new connection has to send the protocol magic.
const MAGIC_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the TLS handshake after IDENTIFY may take (Go's deadline).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing the frames of an upgrade (or the last frames before closing) may take.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts connections until shutdown.
pub async fn serve(nsqd: Arc<Nsqd>, listener: TcpListener) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = nsqd.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, addr)) => {
                backoff = Duration::from_millis(5);
                let _ = stream.set_nodelay(true);
                nsqd.tracker.spawn(handle(nsqd.clone(), stream, addr));
            }
            Err(e) => {
                // EMFILE and friends: log, back off, keep serving.
                tracing::error!("TCP: accept error: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    tracing::info!(
        "TCP: closing {}",
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
}

async fn handle(nsqd: Arc<Nsqd>, mut stream: TcpStream, addr: SocketAddr) {
    tracing::info!("TCP: new client({addr})");
    let mut magic = [0u8; 4];
    let read = tokio::select! {
        _ = nsqd.shutdown.cancelled() => return,
        r = tokio::time::timeout(MAGIC_TIMEOUT, stream.read_exact(&mut magic)) => r,
    };
    match read {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::info!("client({addr}): failed to read protocol version - {e}");
            return;
        }
        Err(_) => {
            tracing::info!("client({addr}): timed out waiting for protocol version");
            return;
        }
    }
    if &magic != MAGIC_V2 {
        tracing::error!(
            "client({addr}): bad protocol magic '{}'",
            String::from_utf8_lossy(&magic)
        );
        let mut out = BytesMut::new();
        put_frame(&mut out, FrameType::Error, b"E_BAD_PROTOCOL");
        let _ = stream.write_all(&out).await;
        return;
    }
    tracing::info!("client({addr}): desired protocol magic '  V2'");
    let client = Arc::new(ClientInfo::new(nsqd.next_client_id(), addr, unix_secs()));
    let mut conn = Conn::new(nsqd.clone(), client.clone(), NsqStream::Plain(stream));
    let reason = conn.run().await;
    match &reason {
        Ok(()) => tracing::info!("PROTOCOL(V2): [{addr}] exiting ioloop"),
        Err(e) => tracing::info!("PROTOCOL(V2): [{addr}] exiting ioloop: {e}"),
    }
    if let Some(ch) = conn.channel.take() {
        nsqd.consumer_left(&ch, client.id);
    }
    nsqd.remove_producer(client.id);
}

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
        rx: tokio::sync::oneshot::Receiver<Result<(), PublishError>>,
        code: ErrorCode,
        what: &'static str,
    },
}

/// Stream upgrades negotiated by IDENTIFY, done by the loop once the response is out.
#[derive(Debug, Clone, Copy)]
struct Upgrade {
    tls: bool,
    snappy: bool,
    deflate: Option<u32>,
}

/// Work a command handed to the loop because it has to wait for the auth server.
enum Pending {
    /// `AUTH <secret>`: query, then answer.
    Auth(Vec<u8>),
    /// A PUB/MPUB/DPUB/SUB whose authorizations expired: query again, then run it.
    Recheck(Command),
}

/// What one poll of the socket produced.
enum Io {
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
    Flushed(io::Result<()>),
}

/// Per-connection settings negotiated by IDENTIFY.
struct Settings {
    heartbeat: Option<Duration>,
    output_buffer_size: usize,
    msg_timeout: Duration,
    sample_rate: u8,
}

struct Conn {
    nsqd: Arc<Nsqd>,
    client: Arc<ClientInfo>,
    stream: NsqStream<TcpStream>,
    /// Bytes were written to a buffering layer (TLS, compression) since the last flush.
    need_flush: bool,
    /// `--tls-required` applies and the connection has not upgraded to TLS yet.
    tls_missing: bool,
    /// Set by IDENTIFY; performed by `run` before any further command.
    upgrade: Option<Upgrade>,
    /// Set by AUTH (or an expired authorization); performed by `run` before any further
    /// command.
    pending: Option<Pending>,
    /// The last answer of the auth server and the secret it was asked about.
    auth_state: Option<AuthState>,
    auth_secret: String,
    rbuf: BytesMut,
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
    rng: u64,
    heartbeat_changed: bool,
    replies: VecDeque<Reply>,
}

impl Conn {
    fn new(nsqd: Arc<Nsqd>, client: Arc<ClientInfo>, stream: NsqStream<TcpStream>) -> Conn {
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
            msg_timeout: o.msg_timeout,
            sample_rate: 0,
        };
        let rng = 0x9e37_79b9_7f4a_7c15u64 ^ client.id.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let tls_missing = o.effective_tls_required() != TlsRequired::Off;
        Conn {
            nsqd,
            client,
            stream,
            need_flush: false,
            tls_missing,
            upgrade: None,
            pending: None,
            auth_state: None,
            auth_secret: String::new(),
            rbuf: BytesMut::with_capacity(16 * 1024),
            wbuf: BytesMut::with_capacity(16 * 1024),
            decoder: Decoder::new(limits),
            settings,
            identified: false,
            channel: None,
            topic_cache: None,
            producer: false,
            pending_fins: Vec::new(),
            scratch: Vec::new(),
            rng: rng | 1,
            heartbeat_changed: false,
            replies: VecDeque::new(),
        }
    }

    async fn run(&mut self) -> Result<(), String> {
        let mut heartbeat = new_heartbeat(self.settings.heartbeat);
        let mut last_read = tokio::time::Instant::now();
        let read_deadline = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(read_deadline);
        let mut deadline_armed = false;
        let shutdown = self.nsqd.shutdown.clone();
        loop {
            // 1. Handle every complete command.
            let fatal = self.process_commands();
            if self.heartbeat_changed {
                self.heartbeat_changed = false;
                heartbeat = new_heartbeat(self.settings.heartbeat);
                deadline_armed = false;
            }
            if fatal {
                self.flush_all().await;
                return Err("fatal client error".into());
            }
            if let Some(up) = self.upgrade.take() {
                if let Err(e) = self.do_upgrade(up).await {
                    // Go answers E_IDENTIFY_FAILED on whatever layer still works.
                    self.send_error(&ClientError::new(
                        ErrorCode::IdentifyFailed,
                        format!("IDENTIFY failed {e}"),
                    ));
                    self.flush_all().await;
                    return Err(format!("upgrade failed: {e}"));
                }
                continue;
            }
            if let Some(p) = self.pending.take() {
                let fatal = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    f = self.run_pending(p) => f,
                };
                if fatal {
                    self.flush_all().await;
                    return Err("fatal client error".into());
                }
                continue;
            }
            // 2. Pull messages. Take the wake-up future first so a publish that lands
            //    between the pull and the wait still wakes us.
            let chan = self.channel.clone();
            let ch_notified = chan.as_ref().map(|c| c.notify.notified());
            self.pull();
            let can_receive = self.can_receive(chan.as_deref());
            let ch_exit = chan.as_ref().map(|c| c.exit.clone());

            if !deadline_armed {
                if let Some(hb) = self.settings.heartbeat {
                    read_deadline.as_mut().reset(last_read + hb * 2);
                    deadline_armed = true;
                }
            }
            let want_read =
                self.wbuf.len() < WRITE_HIGH_WATER && self.replies.len() < MAX_PENDING_REPLIES;
            let head = match self.replies.front_mut() {
                Some(Reply::Pending { rx, .. }) => Some(rx),
                _ => None,
            };
            let has_head = head.is_some();
            let want_write = !self.wbuf.is_empty();
            let want_flush = self.need_flush;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    return Ok(());
                }
                _ = async { match &ch_exit { Some(t) => t.cancelled().await, None => std::future::pending().await } } => {
                    // The channel was deleted: Go closes its consumers' connections.
                    let _ = tokio::time::timeout(FLUSH_TIMEOUT, write_out(&mut self.stream, &mut self.wbuf)).await;
                    return Err("channel deleted".into());
                }
                io = poll_fn(|cx| poll_io(&mut self.stream, &mut self.rbuf, &self.wbuf, want_read, want_write, want_flush, cx)), if want_read || want_write || want_flush => {
                    match io {
                        Io::Wrote(Ok(0)) => return Err("write returned 0".into()),
                        Io::Wrote(Ok(n)) => {
                            self.wbuf.advance(n);
                            self.need_flush = self.stream.needs_flush();
                        }
                        Io::Wrote(Err(e)) => return Err(format!("write error: {e}")),
                        Io::Flushed(Ok(())) => self.need_flush = false,
                        Io::Flushed(Err(e)) => return Err(format!("write error: {e}")),
                        Io::Read(Ok(0)) => return Ok(()),
                        // Many TLS clients close without close_notify: that is a plain EOF.
                        Io::Read(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                        Io::Read(Ok(_)) => last_read = tokio::time::Instant::now(),
                        Io::Read(Err(e)) => return Err(format!("read error: {e}")),
                    }
                }
                _ = async { match ch_notified { Some(n) => n.await, None => std::future::pending().await } }, if can_receive => {}
                _ = self.client.wake.notified() => {}
                r = async { match head { Some(rx) => rx.await, None => std::future::pending().await } }, if has_head => {
                    let r = r.unwrap_or_else(|_| Err(PublishError::Disk("log writer stopped".into())));
                    if self.resolve_head(r) {
                        self.flush_all().await;
                        return Err("publish failed".into());
                    }
                }
                _ = async { match heartbeat.as_mut() { Some(h) => { h.tick().await; } None => std::future::pending().await } } => {
                    put_frame(&mut self.wbuf, FrameType::Response, HEARTBEAT);
                }
                _ = &mut read_deadline, if deadline_armed => {
                    let hb = self.settings.heartbeat.unwrap_or(Duration::from_secs(30));
                    if last_read.elapsed() >= hb * 2 {
                        return Err(format!("no data received for {:?} (2 heartbeat intervals)", hb * 2));
                    }
                    deadline_armed = false;
                }
            }
        }
    }

    fn can_receive(&self, chan: Option<&Channel>) -> bool {
        chan.is_some()
            && self.client.state() == client_state::SUBSCRIBED
            && self.client.ready_count.load(Ordering::Relaxed) > 0
            && self.wbuf.len() < self.settings.output_buffer_size
    }

    async fn flush_all(&mut self) {
        self.drain_replies().await;
        if !self.wbuf.is_empty() || self.need_flush {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                write_out(&mut self.stream, &mut self.wbuf),
            )
            .await;
            self.wbuf.clear();
            self.need_flush = false;
        }
    }

    /// Performs the upgrades IDENTIFY negotiated, each answered by `OK` on the new layer.
    async fn do_upgrade(&mut self, up: Upgrade) -> Result<(), String> {
        let addr = self.client.remote_addr;
        // The IDENTIFY response (and anything queued before it) leaves on the old layer.
        self.drain_replies().await;
        self.send_now().await?;
        if up.tls {
            if !self.rbuf.is_empty() {
                return Err("client sent data before the TLS handshake".into());
            }
            let Some(acceptor) = self.nsqd.tls_acceptor.get().cloned() else {
                return Err("TLS is not configured".into());
            };
            tracing::info!("PROTOCOL(V2): [{addr}] upgrading connection to TLS");
            self.stream
                .upgrade_tls_server(&acceptor, TLS_HANDSHAKE_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(info) = self.stream.tls_info() {
                let _ = self.client.tls.set(info);
            }
            self.tls_missing = false;
            put_frame(&mut self.wbuf, FrameType::Response, OK);
            self.send_now().await?;
        }
        if up.snappy {
            tracing::info!("PROTOCOL(V2): [{addr}] upgrading connection to snappy");
            let early = self.rbuf.split();
            self.stream
                .upgrade_snappy(&early)
                .map_err(|e| e.to_string())?;
            self.client.snappy.store(true, Ordering::Relaxed);
            put_frame(&mut self.wbuf, FrameType::Response, OK);
            self.send_now().await?;
        }
        if let Some(level) = up.deflate {
            tracing::info!(
                "PROTOCOL(V2): [{addr}] upgrading connection to deflate (level {level})"
            );
            let early = self.rbuf.split();
            self.stream
                .upgrade_deflate(level, &early)
                .map_err(|e| e.to_string())?;
            self.client.deflate.store(true, Ordering::Relaxed);
            put_frame(&mut self.wbuf, FrameType::Response, OK);
            self.send_now().await?;
        }
        Ok(())
    }

    /// Writes and flushes the write buffer now (bounded by [`FLUSH_TIMEOUT`]).
    async fn send_now(&mut self) -> Result<(), String> {
        match tokio::time::timeout(FLUSH_TIMEOUT, write_out(&mut self.stream, &mut self.wbuf)).await
        {
            Ok(Ok(())) => {
                self.need_flush = false;
                Ok(())
            }
            Ok(Err(e)) => Err(format!("write error: {e}")),
            Err(_) => Err(format!("write timed out after {FLUSH_TIMEOUT:?}")),
        }
    }

    /// Runs a command that had to wait for the auth server; returns true after a fatal error.
    async fn run_pending(&mut self, p: Pending) -> bool {
        let addr = self.client.remote_addr;
        match p {
            Pending::Auth(secret) => {
                self.auth_secret = String::from_utf8_lossy(&secret).into_owned();
                if let Err(e) = self.query_auth().await {
                    // The details stay in our log: the client is not trusted with them.
                    tracing::warn!("PROTOCOL(V2): [{addr}] AUTH failed {e}");
                    self.send_error(&ClientError::new(ErrorCode::AuthFailed, "AUTH failed"));
                    return true;
                }
                let Some(st) = self.auth_state.as_ref() else {
                    return true;
                };
                if st.authorizations.is_empty() {
                    self.send_error(&ClientError::new(
                        ErrorCode::Unauthorized,
                        "AUTH no authorizations found",
                    ));
                    return true;
                }
                let body = serde_json::json!({
                    "identity": st.identity,
                    "identity_url": st.identity_url,
                    "permission_count": st.authorizations.len(),
                });
                let json = serde_json::to_vec(&body).unwrap_or_default();
                self.respond(FrameType::Response, &json);
                false
            }
            Pending::Recheck(cmd) => {
                if let Err(e) = self.query_auth().await {
                    tracing::warn!("PROTOCOL(V2): [{addr}] AUTH failed {e}");
                    self.send_error(&ClientError::new(ErrorCode::AuthFailed, "AUTH failed"));
                    return true;
                }
                match self.exec(cmd) {
                    Ok(()) => false,
                    Err(e) => {
                        self.send_error(&e);
                        e.code.is_fatal()
                    }
                }
            }
        }
    }

    /// Go's `QueryAuthd`: asks the auth servers about our secret and keeps the answer.
    async fn query_auth(&mut self) -> Result<(), AuthError> {
        let Some(auth) = self.nsqd.auth.get() else {
            return Err(AuthError::All("auth is not configured".into()));
        };
        let tls = self.client.tls.get();
        let req = AuthRequest {
            remote_ip: self.client.remote_addr.ip().to_string(),
            tls: tls.is_some(),
            secret: self.auth_secret.clone(),
            common_name: tls.map(|t| t.peer_common_name.clone()).unwrap_or_default(),
        };
        let st = auth.query_any(&req).await?;
        *self.client.auth.lock() = crate::client::AuthSummary {
            authed: !st.authorizations.is_empty(),
            identity: st.identity.clone(),
            identity_url: st.identity_url.clone(),
        };
        self.auth_state = Some(st);
        Ok(())
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

    /// Decodes and handles buffered commands; returns true after a fatal error.
    fn process_commands(&mut self) -> bool {
        while self.wbuf.len() < WRITE_HIGH_WATER
            && self.replies.len() < MAX_PENDING_REPLIES
            && self.upgrade.is_none()
            && self.pending.is_none()
        {
            match self.decoder.decode(&mut self.rbuf) {
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

    /// Waits (bounded) for every publish still waiting for the log, so a closing connection
    /// still gets its answers in order.
    async fn drain_replies(&mut self) {
        while let Some(front) = self.replies.front_mut() {
            let r = match front {
                Reply::Pending { rx, .. } => {
                    match tokio::time::timeout(Duration::from_secs(5), rx).await {
                        Ok(Ok(r)) => r,
                        _ => Err(PublishError::Disk("no answer from the topic log".into())),
                    }
                }
                Reply::Frame(_) => Ok(()),
            };
            if matches!(self.replies.front(), Some(Reply::Frame(_))) {
                if let Some(Reply::Frame(f)) = self.replies.pop_front() {
                    self.wbuf.extend_from_slice(&f);
                }
                continue;
            }
            self.resolve_head(r);
        }
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
        {
            let mut st = ch.state.lock();
            for id in &self.pending_fins {
                match st.fin(self.client.id, id_key(id)) {
                    Ok(m) => acked.extend(m.log_pos()),
                    Err(e) => failed.push((*id, e)),
                }
            }
        }
        ch.journal_acks(&acked);
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
                self.pending = Some(Pending::Recheck(cmd));
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
                self.pending = Some(Pending::Auth(secret.to_vec()));
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
        // An ephemeral channel (or topic) may be going away as we join it; Go retries once.
        let mut joined = None;
        for _ in 0..2 {
            let t = self.nsqd.get_or_create_topic(topic);
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
        self.client
            .state
            .store(client_state::SUBSCRIBED, Ordering::Relaxed);
        self.channel = Some(ch);
        self.respond(FrameType::Response, OK);
        Ok(())
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
        let r = ch
            .state
            .lock()
            .req(self.client.id, id_key(&id), delay.as_nanos() as u64, now);
        match r {
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
    fn pull(&mut self) {
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
        let n = ch.state.lock().pop(
            self.client.id,
            rdy,
            MAX_PULL,
            timeout,
            now,
            sample,
            &mut msgs,
        );
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

fn new_heartbeat(hb: Option<Duration>) -> Option<tokio::time::Interval> {
    hb.map(|d| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    })
}

/// Polls the socket once for each wanted operation, writing before reading (as the loop's
/// `biased` order did with separate branches). One future for both directions because a
/// layered stream cannot be split into independently borrowed halves.
fn poll_io(
    stream: &mut NsqStream<TcpStream>,
    rbuf: &mut BytesMut,
    wbuf: &[u8],
    want_read: bool,
    want_write: bool,
    want_flush: bool,
    cx: &mut Context<'_>,
) -> Poll<Io> {
    if want_write {
        if let Poll::Ready(r) = Pin::new(&mut *stream).poll_write(cx, wbuf) {
            return Poll::Ready(Io::Wrote(r));
        }
    } else if want_flush {
        if let Poll::Ready(r) = Pin::new(&mut *stream).poll_flush(cx) {
            return Poll::Ready(Io::Flushed(r));
        }
    }
    if want_read {
        if rbuf.capacity() - rbuf.len() < 4096 {
            rbuf.reserve(64 * 1024);
        }
        if let Poll::Ready(r) = poll_read_buf(Pin::new(&mut *stream), cx, rbuf) {
            return Poll::Ready(Io::Read(r));
        }
    }
    Poll::Pending
}

/// Writes all of `wbuf` and flushes the layers.
async fn write_out(stream: &mut NsqStream<TcpStream>, wbuf: &mut BytesMut) -> io::Result<()> {
    stream.write_all(wbuf).await?;
    wbuf.clear();
    stream.flush().await
}
