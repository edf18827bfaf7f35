//! The producer: one connection to one nsqd, publishing with PUB, MPUB and DPUB.
//!
//! # Design
//! Callers encode their command on their own task, then hand the bytes and a reply slot to
//! the connection task through a bounded mailbox. The connection task writes commands in
//! batches and records each reply slot in a FIFO *before* writing the command; nsqd answers
//! commands in order, so the n-th `OK`/error frame belongs to the n-th queued slot. Many
//! publishes can therefore be in flight on one connection (pipelining).
//!
//! When the connection fails, every written-but-unanswered publish gets the error, and
//! publishes that were still queued are retried once on a fresh connection (they were never
//! sent). Later calls reconnect transparently.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nsq_protocol::command::{encode_mpub, encode_pub};
use nsq_protocol::names::is_valid_topic_name;
use nsq_protocol::{Command, FrameType};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::Config;
use crate::conn::{self, FrameReader, Transport};
use crate::error::{Error, Result};

/// Commands queued per connection before callers wait (backpressure).
const MAILBOX: usize = 1024;
/// Commands written per batch; bounds how long the task goes without reading.
const BATCH: usize = 128;

/// A connection to one nsqd for publishing.
///
/// Cheap to clone: clones share the connection, so many tasks can publish concurrently and
/// their commands are pipelined on the one socket. Each call waits for its own response.
///
/// ```no_run
/// # async fn demo() -> Result<(), nsq_client::Error> {
/// use nsq_client::{Config, Producer};
/// use std::time::Duration;
///
/// let producer = Producer::connect("127.0.0.1:4150", Config::new()).await?;
/// producer.publish("events", "hello").await?;
/// producer.multi_publish("events", ["a", "b", "c"]).await?;
/// producer.deferred_publish("events", Duration::from_secs(5), "later").await?;
/// producer.stop().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

struct Inner {
    addr: String,
    config: Config,
    /// Built once from the TLS options; `None` without them.
    tls: Option<Arc<nsq_net::rustls::ClientConfig>>,
    conn: Mutex<Option<ConnHandle>>,
    /// Serialises (re)connecting so concurrent callers share one new connection.
    connect_lock: tokio::sync::Mutex<()>,
    stopped: AtomicBool,
}

struct ConnHandle {
    tx: mpsc::Sender<Request>,
    task: JoinHandle<()>,
}

enum Request {
    /// A command that nsqd answers with `OK` or an error frame.
    Command { data: Bytes, reply: Reply },
    /// A `NOP`; answered (by us) once it has been written.
    Nop { reply: Reply },
}

type Reply = oneshot::Sender<Outcome>;

enum Outcome {
    Done(Result<()>),
    /// The command never reached the socket; safe to retry elsewhere.
    NotSent,
}

impl Producer {
    /// Connects to the nsqd at `addr` (`host:port` of its TCP listener) and performs the
    /// IDENTIFY handshake.
    pub async fn connect(addr: impl AsRef<str>, config: Config) -> Result<Producer> {
        config.validate()?;
        let addr = conn::normalize_addr(addr.as_ref())?;
        let tls = crate::tls::client_config(&config)?;
        let producer = Producer {
            inner: Arc::new(Inner {
                addr,
                config,
                tls,
                conn: Mutex::new(None),
                connect_lock: tokio::sync::Mutex::new(()),
                stopped: AtomicBool::new(false),
            }),
        };
        producer.sender().await?;
        Ok(producer)
    }

    /// The nsqd address this producer publishes to.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Publishes one message (`PUB`) and waits for nsqd's answer.
    pub async fn publish(&self, topic: &str, body: impl AsRef<[u8]>) -> Result<()> {
        check_topic(topic)?;
        let body = body.as_ref();
        if body.is_empty() {
            return Err(Error::InvalidArgument("empty message body".into()));
        }
        let mut buf = BytesMut::with_capacity(body.len() + topic.len() + 10);
        encode_pub(&mut buf, topic, body);
        self.request(buf.freeze()).await
    }

    /// Publishes a batch atomically (`MPUB`) and waits for nsqd's answer.
    pub async fn multi_publish<I, B>(&self, topic: &str, bodies: I) -> Result<()>
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        check_topic(topic)?;
        let bodies: Vec<B> = bodies.into_iter().collect();
        if bodies.is_empty() {
            return Err(Error::InvalidArgument(
                "MPUB needs at least one body".into(),
            ));
        }
        if bodies.iter().any(|b| b.as_ref().is_empty()) {
            return Err(Error::InvalidArgument("empty message body".into()));
        }
        let mut buf = BytesMut::new();
        encode_mpub(&mut buf, topic, &bodies);
        self.request(buf.freeze()).await
    }

    /// Publishes one message delivered after `delay` (`DPUB`, millisecond precision; nsqd
    /// rejects delays above its `--max-req-timeout`).
    pub async fn deferred_publish(
        &self,
        topic: &str,
        delay: Duration,
        body: impl AsRef<[u8]>,
    ) -> Result<()> {
        check_topic(topic)?;
        let body = body.as_ref();
        if body.is_empty() {
            return Err(Error::InvalidArgument("empty message body".into()));
        }
        let mut buf = BytesMut::with_capacity(body.len() + topic.len() + 32);
        Command::Dpub {
            topic: topic.to_owned(),
            defer_ms: delay.as_millis() as u64,
            body: Bytes::copy_from_slice(body),
        }
        .encode(&mut buf);
        self.request(buf.freeze()).await
    }

    /// Checks the connection: connects if needed (reconnecting after a failure) and writes a
    /// `NOP`. nsqd does not answer `NOP`, so success means the connection is established and
    /// writable, not that a round trip completed; a dead peer shows up on the next call.
    pub async fn ping(&self) -> Result<()> {
        for _ in 0..2 {
            let tx = self.sender().await?;
            let (reply, rx) = oneshot::channel();
            if tx.send(Request::Nop { reply }).await.is_err() {
                self.forget(&tx);
                continue;
            }
            drop(tx);
            match rx.await {
                Ok(Outcome::Done(r)) => return r,
                Ok(Outcome::NotSent) | Err(_) => self.forget_closed(),
            }
        }
        Err(Error::Closed)
    }

    /// Stops the producer: no new publishes are accepted ([`Error::Closed`]), publishes
    /// already sent get their answers (bounded by `read_timeout`), then the connection is
    /// closed. Affects every clone.
    pub async fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        let _guard = self.inner.connect_lock.lock().await;
        let handle = self.inner.conn.lock().expect("conn lock poisoned").take();
        if let Some(ConnHandle { tx, task }) = handle {
            drop(tx);
            let abort = task.abort_handle();
            let bound = self.inner.config.read_timeout + self.inner.config.write_timeout;
            if tokio::time::timeout(bound, task).await.is_err() {
                abort.abort();
            }
        }
    }

    async fn request(&self, data: Bytes) -> Result<()> {
        // At most one retry, and only for a command that never reached a socket.
        for _ in 0..2 {
            let tx = self.sender().await?;
            let (reply, rx) = oneshot::channel();
            let req = Request::Command {
                data: data.clone(),
                reply,
            };
            if tx.send(req).await.is_err() {
                self.forget(&tx);
                continue;
            }
            drop(tx);
            match rx.await {
                Ok(Outcome::Done(r)) => return r,
                Ok(Outcome::NotSent) | Err(_) => self.forget_closed(),
            }
        }
        Err(Error::Closed)
    }

    /// The current connection's mailbox, connecting first if there is none (or it died).
    async fn sender(&self) -> Result<mpsc::Sender<Request>> {
        if let Some(tx) = self.live_sender()? {
            return Ok(tx);
        }
        let _guard = self.inner.connect_lock.lock().await;
        if let Some(tx) = self.live_sender()? {
            return Ok(tx);
        }
        let config = &self.inner.config;
        let (stream, reader, negotiated) =
            conn::connect(&self.inner.addr, config, self.inner.tls.as_ref()).await?;
        tracing::debug!(addr = %self.inner.addr, layers = negotiated.layers, "producer connected");
        let (tx, rx) = mpsc::channel(MAILBOX);
        let task = tokio::spawn(run(
            stream,
            reader,
            rx,
            config.clone(),
            self.inner.addr.clone(),
        ));
        *self.inner.conn.lock().expect("conn lock poisoned") = Some(ConnHandle {
            tx: tx.clone(),
            task,
        });
        Ok(tx)
    }

    fn live_sender(&self) -> Result<Option<mpsc::Sender<Request>>> {
        if self.inner.stopped.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        let guard = self.inner.conn.lock().expect("conn lock poisoned");
        Ok(guard
            .as_ref()
            .filter(|h| !h.tx.is_closed())
            .map(|h| h.tx.clone()))
    }

    fn forget(&self, tx: &mpsc::Sender<Request>) {
        let mut guard = self.inner.conn.lock().expect("conn lock poisoned");
        if guard.as_ref().is_some_and(|h| h.tx.same_channel(tx)) {
            *guard = None;
        }
    }

    fn forget_closed(&self) {
        let mut guard = self.inner.conn.lock().expect("conn lock poisoned");
        if guard.as_ref().is_some_and(|h| h.tx.is_closed()) {
            *guard = None;
        }
    }
}

fn check_topic(topic: &str) -> Result<()> {
    if is_valid_topic_name(topic.as_bytes()) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "topic name {topic:?} is not valid"
        )))
    }
}

/// The connection task: writes queued commands, matches answers to them in order, answers
/// heartbeats. Ends when the connection fails or (after `stop`) when the mailbox is closed
/// and every sent command has been answered.
async fn run<S: Transport>(
    mut stream: S,
    mut reader: FrameReader,
    mut rx: mpsc::Receiver<Request>,
    config: Config,
    addr: String,
) {
    let mut pending: VecDeque<Reply> = VecDeque::new();
    let result = run_inner(&mut stream, &mut reader, &mut rx, &mut pending, &config).await;
    match &result {
        Ok(()) => tracing::debug!(%addr, "producer connection closed"),
        Err(e) => tracing::warn!(%addr, error = %e, "producer connection failed"),
    }
    let err = result.err().unwrap_or(Error::Closed);
    for reply in pending.drain(..) {
        let _ = reply.send(Outcome::Done(Err(err.duplicate())));
    }
    rx.close();
    while let Ok(req) = rx.try_recv() {
        let reply = match req {
            Request::Command { reply, .. } | Request::Nop { reply } => reply,
        };
        let _ = reply.send(Outcome::NotSent);
    }
    let _ = tokio::time::timeout(config.write_timeout, async {
        use tokio::io::AsyncWriteExt;
        let _ = stream.shutdown().await;
    })
    .await;
}

async fn run_inner<S: Transport>(
    stream: &mut S,
    reader: &mut FrameReader,
    rx: &mut mpsc::Receiver<Request>,
    pending: &mut VecDeque<Reply>,
    config: &Config,
) -> Result<()> {
    let mut batch = Vec::with_capacity(BATCH);
    let mut wbuf = BytesMut::new();
    let mut nops: Vec<Reply> = Vec::new();
    let mut input_closed = false;
    let mut last_read = Instant::now();
    loop {
        while let Some(frame) = reader.next_buffered()? {
            if frame.is_heartbeat() {
                conn::write_all(stream, b"NOP\n", config.write_timeout).await?;
                continue;
            }
            let result = match frame.frame_type {
                FrameType::Response => Ok(()),
                FrameType::Error => Err(Error::from_error_frame(&frame.data)),
                FrameType::Message => {
                    return Err(Error::Protocol(
                        "producer connection received a message".into(),
                    ))
                }
            };
            // Unknown codes are treated as fatal, like nsqd closing after them.
            let fatal = match &result {
                Ok(()) => false,
                Err(e) => match e.server_code() {
                    Some(code) => code.is_fatal(),
                    None => true,
                },
            };
            match pending.pop_front() {
                Some(reply) => {
                    let _ = reply.send(Outcome::Done(result));
                }
                None => {
                    return Err(match result {
                        Err(e) => e,
                        Ok(()) => Error::Protocol("unexpected response from nsqd".into()),
                    })
                }
            }
            if fatal {
                // nsqd closes the connection after a fatal error.
                return Err(Error::Closed);
            }
        }
        if input_closed && pending.is_empty() {
            return Ok(());
        }
        tokio::select! {
            r = reader.fill(stream) => {
                r?;
                last_read = Instant::now();
            }
            n = rx.recv_many(&mut batch, BATCH), if !input_closed => {
                if n == 0 {
                    input_closed = true;
                    continue;
                }
                for req in batch.drain(..) {
                    match req {
                        Request::Command { data, reply } => {
                            wbuf.extend_from_slice(&data);
                            pending.push_back(reply);
                        }
                        Request::Nop { reply } => {
                            wbuf.extend_from_slice(b"NOP\n");
                            nops.push(reply);
                        }
                    }
                }
                let written = conn::write_all(stream, &wbuf, config.write_timeout).await;
                wbuf.clear();
                match written {
                    Ok(()) => {
                        for reply in nops.drain(..) {
                            let _ = reply.send(Outcome::Done(Ok(())));
                        }
                    }
                    Err(e) => {
                        for reply in nops.drain(..) {
                            let _ = reply.send(Outcome::Done(Err(e.duplicate())));
                        }
                        return Err(e);
                    }
                }
            }
            _ = tokio::time::sleep_until(last_read + config.read_timeout) => {
                return Err(Error::Timeout);
            }
        }
    }
}
