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
//! One exception (`Session::coalesce_for`): while a consumer still holds at least half of its
//! RDY (4 or more) unfinished, a write under half the output buffer waits up to 1 ms (never
//! more than its `output_buffer_timeout`; never when that is disabled) for more FINs, so each
//! send carries more frames. Such a consumer has work queued, so it does not wait for us; with
//! NSQ's bench_reader (RDY 2500) this cut nsqd's sends 8× (35 → ~240 messages per send) and
//! its CPU per consumed message by about 10 %.
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
//! What to send is decided by the [`Session`] (`session.rs`), a state machine with no
//! socket: this loop hands it the bytes read, the heartbeat ticks and the answers of the
//! topic log and the auth server, writes the frames it produced, and performs the
//! [`Action`]s it asks for (a stream upgrade, a query to the auth server) before handing it
//! more input.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use nsq_net::NsqStream;
use nsq_protocol::frame::{put_frame, FrameType};
use nsq_protocol::MAGIC_V2;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::io::poll_read_buf;

use crate::auth::{AuthError, AuthRequest, AuthState};
use crate::client::ClientInfo;
use crate::clock::unix_secs;
use crate::session::{Action, Close, Layer, Session, Upgrade};
use crate::topic::PublishError;
use crate::Nsqd;
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
    if let Some(ch) = conn.session.take_channel() {
        nsqd.consumer_left(&ch, client.id);
    }
    nsqd.remove_producer(client.id);
}

/// What one poll of the socket produced.
enum Io {
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
    Flushed(io::Result<()>),
}

/// The I/O half of a connection: the socket, the read buffer, the timers.
struct Conn {
    nsqd: Arc<Nsqd>,
    /// The session's client, for its wake-up `Notify` (a field of its own so the loop can
    /// wait on it while the session's buffers are borrowed).
    client: Arc<ClientInfo>,
    stream: NsqStream<TcpStream>,
    rbuf: BytesMut,
    /// Bytes were written to a buffering layer (TLS, compression) since the last flush.
    need_flush: bool,
    session: Session,
}

impl Conn {
    fn new(nsqd: Arc<Nsqd>, client: Arc<ClientInfo>, stream: NsqStream<TcpStream>) -> Conn {
        Conn {
            session: Session::new(nsqd.clone(), client.clone()),
            client,
            nsqd,
            stream,
            rbuf: BytesMut::with_capacity(16 * 1024),
            need_flush: false,
        }
    }

    async fn run(&mut self) -> Result<(), String> {
        let mut heartbeat = new_heartbeat(self.session.heartbeat());
        let mut last_read = tokio::time::Instant::now();
        let read_deadline = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(read_deadline);
        let mut deadline_armed = false;
        // A small write held back for more frames (`Session::coalesce_for`): armed once per
        // held write, and the write goes out when it fires or the buffer has grown.
        let coalesce = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(coalesce);
        let mut coalesce_armed = false;
        let mut coalesce_due = false;
        let shutdown = self.nsqd.shutdown.clone();
        loop {
            // 1. Handle every complete command.
            let handled = self.session.handle_input(&mut self.rbuf);
            if self.session.take_heartbeat_changed() {
                heartbeat = new_heartbeat(self.session.heartbeat());
                deadline_armed = false;
            }
            if let Err(Close(reason)) = handled {
                self.flush_all().await;
                return Err(reason);
            }
            match self.session.take_action() {
                Some(Action::Upgrade(up)) => {
                    if let Err(e) = self.do_upgrade(up).await {
                        let Close(reason) = self.session.upgrade_failed(&e);
                        self.flush_all().await;
                        return Err(reason);
                    }
                    continue;
                }
                Some(Action::QueryAuth(req)) => {
                    let answer = tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        r = query_auth(&self.nsqd, &req) => r,
                    };
                    if let Err(Close(reason)) = self.session.auth_answered(answer) {
                        self.flush_all().await;
                        return Err(reason);
                    }
                    continue;
                }
                None => {}
            }
            // 2. Pull messages. Take the wake-up future first so a publish that lands
            //    between the pull and the wait still wakes us.
            let chan = self.session.channel().cloned();
            let ch_notified = chan.as_ref().map(|c| c.notify.notified());
            self.session.pull();
            let can_receive = self.session.can_receive();
            let ch_exit = chan.as_ref().map(|c| c.exit.clone());

            if !deadline_armed {
                if let Some(hb) = self.session.heartbeat() {
                    read_deadline.as_mut().reset(last_read + hb * 2);
                    deadline_armed = true;
                }
            }
            let want_read = self.session.wants_input();
            let want_flush = self.need_flush;
            let hold = if coalesce_due {
                None
            } else {
                self.session.coalesce_for()
            };
            if let Some(d) = hold {
                if !coalesce_armed {
                    coalesce.as_mut().reset(tokio::time::Instant::now() + d);
                    coalesce_armed = true;
                }
            }
            let (wbuf, head) = self.session.io_parts();
            let want_write = !wbuf.is_empty() && hold.is_none();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    return Ok(());
                }
                _ = async { match &ch_exit { Some(t) => t.cancelled().await, None => std::future::pending().await } } => {
                    // The channel was deleted: Go closes its consumers' connections.
                    let _ = tokio::time::timeout(FLUSH_TIMEOUT, write_out(&mut self.stream, self.session.out())).await;
                    return Err("channel deleted".into());
                }
                io = poll_fn(|cx| poll_io(&mut self.stream, &mut self.rbuf, wbuf, want_read, want_write, want_flush, cx)), if want_read || want_write || want_flush => {
                    match io {
                        Io::Wrote(Ok(0)) => return Err("write returned 0".into()),
                        Io::Wrote(Ok(n)) => {
                            self.session.out().advance(n);
                            self.need_flush = self.stream.needs_flush();
                            coalesce_armed = false;
                            coalesce_due = false;
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
                r = async { match head { Some(rx) => rx.await, None => std::future::pending().await } } => {
                    let r = r.unwrap_or_else(|_| Err(PublishError::Disk("log writer stopped".into())));
                    if let Err(Close(reason)) = self.session.publish_done(r) {
                        self.flush_all().await;
                        return Err(reason);
                    }
                }
                _ = async { match heartbeat.as_mut() { Some(h) => { h.tick().await; } None => std::future::pending().await } } => {
                    self.session.heartbeat_tick();
                }
                _ = &mut coalesce, if coalesce_armed && hold.is_some() => {
                    coalesce_due = true;
                }
                _ = &mut read_deadline, if deadline_armed => {
                    let hb = self.session.heartbeat().unwrap_or(Duration::from_secs(30));
                    if last_read.elapsed() >= hb * 2 {
                        return Err(format!("no data received for {:?} (2 heartbeat intervals)", hb * 2));
                    }
                    deadline_armed = false;
                }
            }
        }
    }

    /// Writes what is queued (after the answers of publishes still waiting for the log),
    /// bounded, before the connection closes.
    async fn flush_all(&mut self) {
        self.drain_replies().await;
        if !self.session.out().is_empty() || self.need_flush {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                write_out(&mut self.stream, self.session.out()),
            )
            .await;
            self.session.out().clear();
            self.need_flush = false;
        }
    }

    /// Performs the upgrades IDENTIFY negotiated, each answered by `OK` on the new layer.
    async fn do_upgrade(&mut self, up: Upgrade) -> Result<(), String> {
        let addr = self.session.client().remote_addr;
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
            self.session.upgraded(Layer::Tls(self.stream.tls_info()));
            self.send_now().await?;
        }
        if up.snappy {
            tracing::info!("PROTOCOL(V2): [{addr}] upgrading connection to snappy");
            let early = self.rbuf.split();
            self.stream
                .upgrade_snappy(&early)
                .map_err(|e| e.to_string())?;
            self.session.upgraded(Layer::Snappy);
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
            self.session.upgraded(Layer::Deflate);
            self.send_now().await?;
        }
        Ok(())
    }

    /// Writes and flushes the write buffer now (bounded by [`FLUSH_TIMEOUT`]).
    async fn send_now(&mut self) -> Result<(), String> {
        match tokio::time::timeout(
            FLUSH_TIMEOUT,
            write_out(&mut self.stream, self.session.out()),
        )
        .await
        {
            Ok(Ok(())) => {
                self.need_flush = false;
                Ok(())
            }
            Ok(Err(e)) => Err(format!("write error: {e}")),
            Err(_) => Err(format!("write timed out after {FLUSH_TIMEOUT:?}")),
        }
    }

    /// Waits (bounded) for every publish still waiting for the log, so a closing connection
    /// still gets its answers in order.
    async fn drain_replies(&mut self) {
        while let Some(rx) = self.session.waiting_publish() {
            let r = match tokio::time::timeout(Duration::from_secs(5), rx).await {
                Ok(Ok(r)) => r,
                _ => Err(PublishError::Disk("no answer from the topic log".into())),
            };
            // A failure is answered with its error frame; the connection closes anyway.
            let _ = self.session.publish_done(r);
        }
    }
}

/// Go's `QueryAuthd`: asks the auth servers about the client's secret.
async fn query_auth(nsqd: &Nsqd, req: &AuthRequest) -> Result<AuthState, AuthError> {
    let Some(auth) = nsqd.auth.get() else {
        return Err(AuthError::All("auth is not configured".into()));
    };
    auth.query_any(req).await
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
