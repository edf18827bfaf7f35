//! One consumer connection: handshake + SUB, then a loop that reads frames (messages,
//! heartbeats, `CLOSE_WAIT`, errors) and writes commands (RDY from the coordinator,
//! FIN/REQ/TOUCH from messages, CLS on stop).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use nsq_protocol::command::encode_fin;
use nsq_protocol::{Command, FrameType};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::message::{ConnCmd, ConnLink, Message};
use super::rdy::{ConnId, Outcome};
use super::{Event, Shared};
use crate::conn::{self, FrameReader, Transport};
use crate::error::{Error, Result};

/// Commands handled per write batch.
const BATCH: usize = 256;

/// Connects to `addr`, subscribes and runs the connection until it closes, reporting to the
/// coordinator. `reply` (for `connect_to_nsqd`) learns whether the connection was established.
pub(crate) async fn run(
    id: ConnId,
    addr: String,
    shared: Arc<Shared>,
    reply: Option<oneshot::Sender<Result<()>>>,
) {
    let established = establish(&addr, &shared).await;
    let (stream, reader, max_rdy) = match established {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(%addr, error = %e, "consumer connection failed");
            if let Some(reply) = reply {
                let _ = reply.send(Err(e.duplicate()));
            }
            let _ = shared.events.send(Event::ConnectFailed { id }).await;
            return;
        }
    };
    tracing::info!(%addr, topic = %shared.topic, channel = %shared.channel, "consumer connected");
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let link = ConnLink {
        tx: cmd_tx.clone(),
        addr: Arc::from(addr.as_str()),
    };
    let _ = shared
        .events
        .send(Event::Connected {
            id,
            max_rdy,
            cmd_tx,
        })
        .await;
    if let Some(reply) = reply {
        let _ = reply.send(Ok(()));
    }
    let mut task = ConnTask {
        id,
        shared: shared.clone(),
        link,
        in_flight: 0,
        closing: false,
        close_wait: false,
        outcomes: Vec::new(),
    };
    let result = task.run_loop(stream, reader, cmd_rx).await;
    match &result {
        Ok(()) => tracing::info!(%addr, "consumer connection closed"),
        Err(e) => tracing::warn!(%addr, error = %e, "consumer connection lost"),
    }
    let _ = shared.events.send(Event::Disconnected { id }).await;
}

async fn establish(addr: &str, shared: &Shared) -> Result<(conn::Stream, FrameReader, u64)> {
    let config = &shared.config;
    let (mut stream, mut reader, negotiated) =
        conn::connect(addr, config, shared.tls.as_ref()).await?;
    tracing::debug!(
        %addr,
        version = ?negotiated.version,
        max_rdy_count = negotiated.max_rdy_count,
        layers = negotiated.layers,
        auth_identity = ?negotiated.auth_identity,
        "IDENTIFY done"
    );
    let mut buf = BytesMut::new();
    Command::Sub {
        topic: shared.topic.clone(),
        channel: shared.channel.clone(),
    }
    .encode(&mut buf);
    conn::write_all(&mut stream, &buf, config.write_timeout).await?;
    let frame = conn::read_response(&mut stream, &mut reader, config).await?;
    if frame.frame_type != FrameType::Response || frame.data.as_ref() != nsq_protocol::OK {
        return Err(Error::Protocol(format!(
            "unexpected reply to SUB: {:?}",
            String::from_utf8_lossy(&frame.data)
        )));
    }
    Ok((stream, reader, negotiated.max_rdy_count))
}

struct ConnTask {
    id: ConnId,
    shared: Arc<Shared>,
    link: ConnLink,
    in_flight: u64,
    closing: bool,
    close_wait: bool,
    /// Answers written in the current batch, reported to the coordinator after the write.
    outcomes: Vec<Outcome>,
}

impl ConnTask {
    async fn run_loop<S: Transport>(
        &mut self,
        mut stream: S,
        mut reader: FrameReader,
        mut cmd_rx: mpsc::UnboundedReceiver<ConnCmd>,
    ) -> Result<()> {
        let config = self.shared.config.clone();
        let mut cmds = Vec::with_capacity(BATCH);
        let mut wbuf = BytesMut::new();
        let mut last_read = Instant::now();
        let mut close_deadline = Instant::now();
        let result = loop {
            // Frames already buffered.
            loop {
                let frame = match reader.next_buffered() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => return Err(e),
                };
                self.handle_frame(frame, &mut wbuf).await?;
            }
            if !wbuf.is_empty() {
                conn::write_all(&mut stream, &wbuf, config.write_timeout).await?;
                wbuf.clear();
                self.report_outcomes().await;
            }
            if self.closing && self.close_wait && self.in_flight == 0 {
                break Ok(());
            }
            tokio::select! {
                r = reader.fill(&mut stream) => {
                    r?;
                    last_read = Instant::now();
                }
                n = cmd_rx.recv_many(&mut cmds, BATCH) => {
                    if n == 0 {
                        // Coordinator and every message are gone.
                        break Ok(());
                    }
                    for cmd in cmds.drain(..) {
                        if let ConnCmd::Close = cmd {
                            if !self.closing {
                                self.closing = true;
                                close_deadline = Instant::now() + config.stop_timeout;
                            }
                        }
                        self.encode_cmd(cmd, &mut wbuf);
                    }
                    conn::write_all(&mut stream, &wbuf, config.write_timeout).await?;
                    wbuf.clear();
                    self.report_outcomes().await;
                }
                _ = tokio::time::sleep_until(last_read + config.read_timeout) => {
                    break Err(Error::Timeout);
                }
                _ = tokio::time::sleep_until(close_deadline), if self.closing => {
                    tracing::warn!(
                        addr = %self.link.addr,
                        in_flight = self.in_flight,
                        "closing with messages still in flight (stop_timeout)"
                    );
                    break Ok(());
                }
            }
        };
        let _ = tokio::time::timeout(config.write_timeout, async {
            use tokio::io::AsyncWriteExt;
            let _ = stream.shutdown().await;
        })
        .await;
        result
    }

    fn encode_cmd(&mut self, cmd: ConnCmd, wbuf: &mut BytesMut) {
        match cmd {
            ConnCmd::Fin(id) => {
                encode_fin(wbuf, &id);
                self.in_flight = self.in_flight.saturating_sub(1);
                self.shared.stats.finished.fetch_add(1, Ordering::Relaxed);
                self.outcomes.push(Outcome::Finish);
            }
            ConnCmd::Req { id, delay, backoff } => {
                Command::Req {
                    id,
                    timeout_ms: delay.as_millis() as u64,
                }
                .encode(wbuf);
                self.in_flight = self.in_flight.saturating_sub(1);
                self.shared.stats.requeued.fetch_add(1, Ordering::Relaxed);
                self.outcomes.push(Outcome::Requeue { backoff });
            }
            ConnCmd::Touch(id) => Command::Touch { id }.encode(wbuf),
            ConnCmd::Rdy(count) => {
                // nsqd ignores RDY once closing; don't bother.
                if !self.closing {
                    Command::Rdy { count }.encode(wbuf);
                }
            }
            ConnCmd::Close => {
                if !self.close_wait {
                    Command::Cls.encode(wbuf);
                }
            }
        }
    }

    async fn report_outcomes(&mut self) {
        for outcome in self.outcomes.drain(..) {
            let _ = self
                .shared
                .events
                .send(Event::Responded {
                    id: self.id,
                    outcome,
                })
                .await;
        }
    }

    async fn handle_frame(
        &mut self,
        frame: nsq_protocol::Frame,
        wbuf: &mut BytesMut,
    ) -> Result<()> {
        match frame.frame_type {
            FrameType::Response => {
                if frame.is_heartbeat() {
                    Command::Nop.encode(wbuf);
                } else if frame.data.as_ref() == nsq_protocol::CLOSE_WAIT {
                    self.close_wait = true;
                } else {
                    tracing::debug!(
                        addr = %self.link.addr,
                        "ignoring response {:?}",
                        String::from_utf8_lossy(&frame.data)
                    );
                }
                Ok(())
            }
            FrameType::Error => {
                let err = Error::from_error_frame(&frame.data);
                match err.server_code() {
                    Some(code) if !code.is_fatal() => {
                        // E_FIN_FAILED / E_REQ_FAILED / E_TOUCH_FAILED: e.g. the message
                        // timed out before the answer arrived.
                        tracing::warn!(addr = %self.link.addr, error = %err, "nsqd rejected an answer");
                        Ok(())
                    }
                    _ => Err(err),
                }
            }
            FrameType::Message => {
                let m = nsq_protocol::Message::decode(frame.data)?;
                self.in_flight += 1;
                self.shared.stats.received.fetch_add(1, Ordering::Relaxed);
                let _ = self
                    .shared
                    .events
                    .send(Event::Arrived { id: self.id })
                    .await;
                let config = &self.shared.config;
                if config.max_attempts > 0 && m.attempts > config.max_attempts {
                    // go-nsq: LogFailedMessage, then FIN.
                    tracing::warn!(
                        addr = %self.link.addr,
                        id = %m.id,
                        attempts = m.attempts,
                        max_attempts = config.max_attempts,
                        "message exceeded max_attempts: finishing it without processing"
                    );
                    self.shared.stats.failed.fetch_add(1, Ordering::Relaxed);
                    self.encode_cmd(ConnCmd::Fin(m.id), wbuf);
                    return Ok(());
                }
                let msg = Message {
                    id: m.id,
                    body: m.body,
                    attempts: m.attempts,
                    timestamp: m.timestamp,
                    link: self.link.clone(),
                    responded: false,
                    auto_requeue: config.requeue_on_drop,
                    default_delay: config.default_requeue_delay_for(m.attempts),
                };
                if let Err(msg) = self.shared.queue.push(msg) {
                    // The consumer is stopping: hand it straight back.
                    msg.requeue_without_backoff(Some(std::time::Duration::ZERO));
                }
                Ok(())
            }
        }
    }
}
