//! The consumer: subscribes to one topic/channel on any number of nsqd instances (given
//! directly or discovered through nsqlookupd) and yields their messages as one
//! [`futures::Stream`].
//!
//! # Tasks
//! - one task per connection ([`conn`]): reads frames, writes commands, pushes messages into
//!   the shared delivery queue;
//! - one coordinator task: owns the connection set and the [`rdy::RdyController`], turns
//!   connection events (connected, message arrived, message answered, closed) into RDY
//!   updates, reconnects to directly given nsqd addresses, drives shutdown;
//! - one lookupd poller task (only after [`Consumer::connect_to_lookupd`]).
//!
//! The delivery queue needs no bound of its own: it never holds more than the messages
//! nsqd sent, which RDY limits to `max_in_flight`.

mod conn;
mod message;
pub(crate) mod rdy;

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::stream::{FusedStream, Stream};
use nsq_protocol::names::{is_valid_channel_name, is_valid_topic_name};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;

pub use message::Message;

use self::message::ConnCmd;
use self::rdy::{Actions, ConnId, Outcome, RdyController};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lookupd::{self, LookupdAddr};

/// Mailbox size of the coordinator (connection tasks wait when it is full).
const EVENTS: usize = 1024;

/// Counters describing a consumer (see [`Consumer::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// Connections currently subscribed.
    pub connections: usize,
    /// Messages received from nsqd.
    pub messages_received: u64,
    /// FINs sent (including messages finished because they exceeded `max_attempts`).
    pub messages_finished: u64,
    /// REQs sent.
    pub messages_requeued: u64,
    /// Messages finished without being handed out because they exceeded `max_attempts`.
    pub messages_failed: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) finished: AtomicU64,
    pub(crate) requeued: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) connections: AtomicUsize,
}

/// State shared by the consumer handle and its tasks.
pub(crate) struct Shared {
    pub(crate) topic: String,
    pub(crate) channel: String,
    pub(crate) config: Arc<Config>,
    /// Built once from the TLS options; `None` without them.
    pub(crate) tls: Option<Arc<nsq_net::rustls::ClientConfig>>,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) queue: DeliveryQueue,
    pub(crate) stats: Counters,
    lookupds: Mutex<Vec<LookupdAddr>>,
    /// The pooled HTTP client of the lookupd queries.
    lookupd_http: nsq_http_client::Client,
    lookupd_notify: Notify,
    lookupd_started: AtomicBool,
    stop_tx: watch::Sender<bool>,
    done_rx: watch::Receiver<bool>,
}

/// What connection tasks, the lookupd poller and the API tell the coordinator.
pub(crate) enum Event {
    Connect {
        addr: String,
        direct: bool,
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    Discovered(Vec<String>),
    Connected {
        id: ConnId,
        max_rdy: u64,
        cmd_tx: mpsc::UnboundedSender<ConnCmd>,
    },
    ConnectFailed {
        id: ConnId,
    },
    Arrived {
        id: ConnId,
    },
    Responded {
        id: ConnId,
        outcome: Outcome,
    },
    Disconnected {
        id: ConnId,
    },
    Reconnect {
        addr: String,
    },
    SetMaxInFlight(u64),
}

/// Messages received but not yet taken by the application.
pub(crate) struct DeliveryQueue {
    inner: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<Message>,
    waker: Option<Waker>,
    /// Stopping: new messages are refused (and requeued by their connection).
    closing: bool,
    /// Stopped: the stream ends once `items` is empty.
    closed: bool,
}

impl DeliveryQueue {
    fn new() -> DeliveryQueue {
        DeliveryQueue {
            inner: Mutex::new(QueueState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.inner.lock().expect("delivery queue lock poisoned")
    }

    /// Queues a message; gives it back when the consumer is stopping.
    pub(crate) fn push(&self, msg: Message) -> std::result::Result<(), Message> {
        let waker = {
            let mut q = self.lock();
            if q.closing {
                return Err(msg);
            }
            q.items.push_back(msg);
            q.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    fn begin_close(&self) -> Vec<Message> {
        let mut q = self.lock();
        q.closing = true;
        q.items.drain(..).collect()
    }

    fn close(&self) {
        let waker = {
            let mut q = self.lock();
            q.closing = true;
            q.closed = true;
            q.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        let mut q = self.lock();
        if let Some(m) = q.items.pop_front() {
            return Poll::Ready(Some(m));
        }
        if q.closed {
            return Poll::Ready(None);
        }
        q.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_terminated(&self) -> bool {
        let q = self.lock();
        q.closed && q.items.is_empty()
    }
}

/// Consumes one topic/channel from one or more nsqd instances, as a [`Stream`] of
/// [`Message`]s.
///
/// Create it with [`Consumer::new`] (inside a Tokio runtime), add sources with
/// [`connect_to_nsqd`](Consumer::connect_to_nsqd) and/or
/// [`connect_to_lookupd`](Consumer::connect_to_lookupd), then poll it like any stream.
/// Every message must be answered ([`Message::finish`], [`Message::requeue`], ...); see
/// [`Message`] for what happens when one is dropped unanswered.
///
/// # Stopping
/// [`stop`](Consumer::stop) (or [`StopHandle::stop`], or dropping the consumer) sends `CLS`
/// on every connection, requeues the messages received but not yet taken from the stream,
/// waits (at most `stop_timeout`) until every message taken from the stream has been
/// answered, closes the connections and then ends the stream. So
/// `consumer.take(10).collect::<Vec<_>>().await` ends after ten messages and shuts the
/// consumer down in the background, while the ten messages can still be finished.
///
/// # RDY
/// Following the NSQ client contract: RDY 1 per new connection, `max_in_flight` spread over the
/// connections (rotated when there are more connections than `max_in_flight`), exponential
/// backoff after requeues, never above the server's `max_rdy_count`.
pub struct Consumer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("topic", &self.shared.topic)
            .field("channel", &self.shared.channel)
            .finish_non_exhaustive()
    }
}

/// Stops a [`Consumer`] from elsewhere (e.g. a signal handler) while the consumer itself is
/// owned by a stream combinator. Cheap to clone.
#[derive(Clone)]
pub struct StopHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StopHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopHandle").finish_non_exhaustive()
    }
}

impl StopHandle {
    /// Starts the graceful shutdown (see [`Consumer`]); returns at once.
    pub fn stop(&self) {
        self.shared.stop_tx.send_replace(true);
    }

    /// Waits until the shutdown has completed (every connection closed).
    pub async fn stopped(&self) {
        let mut rx = self.shared.done_rx.clone();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                break;
            }
        }
    }

    /// Whether the shutdown has completed.
    pub fn is_stopped(&self) -> bool {
        *self.shared.done_rx.borrow()
    }
}

impl Consumer {
    /// Creates a consumer of `topic`/`channel`. Must be called within a Tokio runtime (it
    /// spawns the coordinator task). Nothing is connected yet.
    pub fn new(
        topic: impl Into<String>,
        channel: impl Into<String>,
        config: Config,
    ) -> Result<Consumer> {
        let topic = topic.into();
        let channel = channel.into();
        if !is_valid_topic_name(topic.as_bytes()) {
            return Err(Error::InvalidArgument(format!(
                "topic name {topic:?} is not valid"
            )));
        }
        if !is_valid_channel_name(channel.as_bytes()) {
            return Err(Error::InvalidArgument(format!(
                "channel name {channel:?} is not valid"
            )));
        }
        config.validate()?;
        if config.heartbeat_interval.is_none() {
            return Err(Error::Config(
                "consumers need heartbeats (nsqd refuses SUB without them)".into(),
            ));
        }
        let tls = crate::tls::client_config(&config)?;
        let lookupd_http = lookupd::http_client(&config)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::Config("Consumer::new must be called within a Tokio runtime".into())
        })?;
        let (events_tx, events_rx) = mpsc::channel(EVENTS);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = watch::channel(false);
        let settings = rdy::Settings {
            backoff_multiplier: config.backoff_multiplier,
            max_backoff_duration: config.max_backoff_duration,
            low_rdy_idle_timeout: config.low_rdy_idle_timeout,
            // nsqd may hold messages in its output buffer for up to output_buffer_timeout
            // (0 = its 250 ms default); add a margin for the wire.
            lower_grace: match config.output_buffer_timeout {
                Some(d) if !d.is_zero() => d,
                Some(_) => Duration::from_millis(250),
                None => Duration::ZERO,
            } + Duration::from_millis(100),
        };
        let rdy = RdyController::new(config.max_in_flight, settings);
        let shared = Arc::new(Shared {
            topic,
            channel,
            config: Arc::new(config),
            tls,
            events: events_tx,
            queue: DeliveryQueue::new(),
            stats: Counters::default(),
            lookupds: Mutex::new(Vec::new()),
            lookupd_http,
            lookupd_notify: Notify::new(),
            lookupd_started: AtomicBool::new(false),
            stop_tx,
            done_rx,
        });
        let coordinator = Coordinator {
            shared: shared.clone(),
            rx: events_rx,
            stop_rx,
            done_tx,
            rdy,
            conns: HashMap::new(),
            addrs: HashMap::new(),
            by_id: HashMap::new(),
            next_id: 1,
            stopping: false,
        };
        runtime.spawn(coordinator.run());
        Ok(Consumer { shared })
    }

    /// The topic consumed.
    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    /// The channel consumed.
    pub fn channel(&self) -> &str {
        &self.shared.channel
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Connects to the nsqd at `addr` (its TCP address) and subscribes; returns once
    /// subscribed, or with the connection error. Can be called for several nsqds; a second
    /// call with an address already connected does nothing. If an established connection
    /// is lost later it is re-established with backoff until the consumer stops.
    pub async fn connect_to_nsqd(&self, addr: impl AsRef<str>) -> Result<()> {
        let addr = crate::conn::normalize_addr(addr.as_ref())?;
        let (reply, rx) = oneshot::channel();
        self.send(Event::Connect {
            addr,
            direct: true,
            reply: Some(reply),
        })
        .await?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Adds an nsqlookupd HTTP address (`host:port`, `http://host:port[/path]` or
    /// `https://host:port[/path]`) and polls
    /// it (`/lookup?topic=`) right away and then every `lookupd_poll_interval`; every nsqd
    /// it reports (`broadcast_address:tcp_port`) is connected once. Connections to
    /// discovered nsqds that are lost are not retried until the next poll reports them
    /// again. A topic lookupd does not know yet (404) is simply polled again later.
    pub async fn connect_to_lookupd(&self, addr: impl AsRef<str>) -> Result<()> {
        let parsed = lookupd::parse_lookupd_addr(addr.as_ref())?;
        if *self.shared.stop_tx.borrow() {
            return Err(Error::Closed);
        }
        {
            let mut list = self.shared.lookupds.lock().expect("lookupd list poisoned");
            if list.contains(&parsed) {
                return Ok(());
            }
            list.push(parsed);
        }
        if self.shared.lookupd_started.swap(true, Ordering::SeqCst) {
            self.shared.lookupd_notify.notify_one();
        } else {
            let stop_rx = self.shared.stop_tx.subscribe();
            tokio::spawn(lookupd_loop(self.shared.clone(), stop_rx));
        }
        Ok(())
    }

    /// Changes `max_in_flight` (0 pauses delivery) and redistributes RDY.
    pub async fn change_max_in_flight(&self, max_in_flight: u64) -> Result<()> {
        self.send(Event::SetMaxInFlight(max_in_flight)).await
    }

    /// A handle to stop this consumer from another task.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            shared: self.shared.clone(),
        }
    }

    /// Stops gracefully (see the type docs) and waits until every connection is closed.
    /// Messages already taken from the stream must be answered for this to finish before
    /// `stop_timeout`.
    pub async fn stop(&self) {
        let handle = self.stop_handle();
        handle.stop();
        handle.stopped().await;
    }

    /// Current counters.
    pub fn stats(&self) -> ConsumerStats {
        let s = &self.shared.stats;
        ConsumerStats {
            connections: s.connections.load(Ordering::Relaxed),
            messages_received: s.received.load(Ordering::Relaxed),
            messages_finished: s.finished.load(Ordering::Relaxed),
            messages_requeued: s.requeued.load(Ordering::Relaxed),
            messages_failed: s.failed.load(Ordering::Relaxed),
        }
    }

    async fn send(&self, event: Event) -> Result<()> {
        if *self.shared.stop_tx.borrow() {
            return Err(Error::Closed);
        }
        self.shared
            .events
            .send(event)
            .await
            .map_err(|_| Error::Closed)
    }
}

impl Stream for Consumer {
    type Item = Message;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.shared.queue.poll_pop(cx)
    }
}

impl FusedStream for Consumer {
    fn is_terminated(&self) -> bool {
        self.shared.queue.is_terminated()
    }
}

impl Drop for Consumer {
    /// Dropping the consumer starts the graceful shutdown in the background.
    fn drop(&mut self) {
        self.shared.stop_tx.send_replace(true);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddrState {
    Connecting { initial: bool },
    Connected,
    WaitingRetry,
}

struct AddrEntry {
    id: ConnId,
    direct: bool,
    state: AddrState,
    retry_delay: Duration,
}

struct Coordinator {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Event>,
    stop_rx: watch::Receiver<bool>,
    done_tx: watch::Sender<bool>,
    rdy: RdyController,
    conns: HashMap<ConnId, mpsc::UnboundedSender<ConnCmd>>,
    addrs: HashMap<String, AddrEntry>,
    by_id: HashMap<ConnId, String>,
    next_id: ConnId,
    stopping: bool,
}

impl Coordinator {
    async fn run(mut self) {
        if *self.stop_rx.borrow_and_update() {
            self.begin_stop();
        }
        while !self.finished() {
            let timer = self.rdy.poll_timeout();
            let now = Instant::now();
            let wake = timer.map(|t| t.max(now + Duration::from_millis(1)));
            tokio::select! {
                ev = self.rx.recv() => match ev {
                    Some(ev) => self.handle(ev),
                    None => break,
                },
                r = self.stop_rx.changed(), if !self.stopping => {
                    if r.is_err() || *self.stop_rx.borrow_and_update() {
                        self.begin_stop();
                    }
                }
                _ = sleep_until_opt(wake) => {
                    let actions = self.rdy.on_timeout(Instant::now());
                    self.apply(actions);
                }
            }
        }
        self.shared.queue.close();
        self.done_tx.send_replace(true);
        tracing::debug!(topic = %self.shared.topic, channel = %self.shared.channel, "consumer stopped");
    }

    fn finished(&self) -> bool {
        self.stopping && self.by_id.is_empty()
    }

    fn handle(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Connect {
                addr,
                direct,
                reply,
            } => {
                if self.stopping {
                    if let Some(r) = reply {
                        let _ = r.send(Err(Error::Closed));
                    }
                    return;
                }
                if let Some(e) = self.addrs.get_mut(&addr) {
                    e.direct |= direct;
                    if let Some(r) = reply {
                        let _ = r.send(Ok(()));
                    }
                    return;
                }
                self.spawn_conn(addr, direct, reply, true);
            }
            Event::Discovered(list) => {
                if self.stopping {
                    return;
                }
                for addr in list {
                    if !self.addrs.contains_key(&addr) {
                        tracing::info!(%addr, "nsqlookupd reported a new nsqd");
                        self.spawn_conn(addr, false, None, true);
                    }
                }
            }
            Event::Connected {
                id,
                max_rdy,
                cmd_tx,
            } => {
                let initial_delay = self.initial_retry_delay();
                let Some(addr) = self.by_id.get(&id) else {
                    let _ = cmd_tx.send(ConnCmd::Close);
                    return;
                };
                if let Some(e) = self.addrs.get_mut(addr) {
                    e.state = AddrState::Connected;
                    e.retry_delay = initial_delay;
                }
                self.shared
                    .stats
                    .connections
                    .fetch_add(1, Ordering::Relaxed);
                if self.stopping {
                    let _ = cmd_tx.send(ConnCmd::Close);
                    self.conns.insert(id, cmd_tx);
                    return;
                }
                self.conns.insert(id, cmd_tx);
                let actions = self.rdy.add_conn(id, max_rdy, now);
                self.apply(actions);
            }
            Event::ConnectFailed { id } => {
                let Some(addr) = self.by_id.remove(&id) else {
                    return;
                };
                let retry = match self.addrs.get(&addr) {
                    Some(e) => e.direct && e.state == (AddrState::Connecting { initial: false }),
                    None => false,
                };
                if retry && !self.stopping {
                    self.schedule_retry(&addr);
                } else {
                    self.addrs.remove(&addr);
                }
            }
            Event::Disconnected { id } => {
                let Some(addr) = self.by_id.remove(&id) else {
                    return;
                };
                if self.conns.remove(&id).is_some() {
                    self.shared
                        .stats
                        .connections
                        .fetch_sub(1, Ordering::Relaxed);
                }
                let actions = self.rdy.remove_conn(id, now);
                self.apply(actions);
                let direct = self.addrs.get(&addr).is_some_and(|e| e.direct);
                if direct && !self.stopping {
                    self.schedule_retry(&addr);
                } else {
                    self.addrs.remove(&addr);
                }
            }
            Event::Reconnect { addr } => {
                let waiting = self
                    .addrs
                    .get(&addr)
                    .is_some_and(|e| e.state == AddrState::WaitingRetry);
                if !waiting {
                    return;
                }
                if self.stopping {
                    self.addrs.remove(&addr);
                } else {
                    tracing::info!(%addr, "reconnecting");
                    self.spawn_conn(addr, true, None, false);
                }
            }
            Event::Arrived { id } => {
                let actions = self.rdy.on_message(id, now);
                self.apply(actions);
            }
            Event::Responded { id, outcome } => {
                let actions = self.rdy.on_response(id, outcome, now);
                self.apply(actions);
            }
            Event::SetMaxInFlight(n) => {
                let actions = self.rdy.set_max_in_flight(n, now);
                self.apply(actions);
            }
        }
    }

    fn apply(&self, actions: Actions) {
        if self.stopping {
            return;
        }
        for (id, count) in actions {
            if let Some(tx) = self.conns.get(&id) {
                tracing::trace!(id, count, "RDY");
                let _ = tx.send(ConnCmd::Rdy(count));
            }
        }
    }

    fn initial_retry_delay(&self) -> Duration {
        Duration::from_secs(1).min(self.shared.config.lookupd_poll_interval)
    }

    fn spawn_conn(
        &mut self,
        addr: String,
        direct: bool,
        reply: Option<oneshot::Sender<Result<()>>>,
        initial: bool,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        let retry_delay = self
            .addrs
            .get(&addr)
            .map_or_else(|| self.initial_retry_delay(), |e| e.retry_delay);
        self.addrs.insert(
            addr.clone(),
            AddrEntry {
                id,
                direct,
                state: AddrState::Connecting { initial },
                retry_delay,
            },
        );
        self.by_id.insert(id, addr.clone());
        tokio::spawn(conn::run(id, addr, self.shared.clone(), reply));
    }

    fn schedule_retry(&mut self, addr: &str) {
        let cap = self
            .shared
            .config
            .lookupd_poll_interval
            .max(self.initial_retry_delay());
        let Some(e) = self.addrs.get_mut(addr) else {
            return;
        };
        e.state = AddrState::WaitingRetry;
        let delay = e.retry_delay;
        e.retry_delay = (delay * 2).min(cap);
        tracing::info!(%addr, "re-connecting in {delay:?}");
        let events = self.shared.events.clone();
        let addr = addr.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(Event::Reconnect { addr }).await;
        });
    }

    fn begin_stop(&mut self) {
        if self.stopping {
            return;
        }
        tracing::debug!(topic = %self.shared.topic, channel = %self.shared.channel, "stopping consumer");
        self.stopping = true;
        for tx in self.conns.values() {
            let _ = tx.send(ConnCmd::Close);
        }
        for msg in self.shared.queue.begin_close() {
            msg.requeue_without_backoff(Some(Duration::ZERO));
        }
        self.addrs.retain(|_, e| e.state != AddrState::WaitingRetry);
        // Entries still connecting finish (Connected → CLS, or ConnectFailed) on their own.
        debug_assert!(self.addrs.values().all(|e| self.by_id.contains_key(&e.id)));
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Follows one lookupd's `/lookup/watch` stream for the consumer's topic, waking
/// [`lookupd_loop`] on each pushed change; reconnects with backoff (1 s doubling up to the
/// poll interval) when the stream breaks; ends for good when the lookupd has no such stream,
/// when it is removed from the consumer's list, or when the consumer stops.
async fn watch_lookupd(
    shared: Arc<Shared>,
    addr: lookupd::LookupdAddr,
    mut stop_rx: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_secs(1);
    let cap = shared.config.lookupd_poll_interval.max(backoff);
    loop {
        if *stop_rx.borrow() {
            return;
        }
        let notify = || shared.lookupd_notify.notify_one();
        let end = tokio::select! {
            e = lookupd::watch(&shared.lookupd_http, &addr, &shared.topic, notify) => e,
            _ = stop_rx.changed() => return,
        };
        match end {
            lookupd::WatchEnd::Unsupported => {
                tracing::debug!(lookupd = %addr.host_port, "no /lookup/watch there: polling only");
                return;
            }
            lookupd::WatchEnd::Broken(e) => {
                tracing::debug!(lookupd = %addr.host_port, error = %e, "lookupd watch stream ended; again in {backoff:?}");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop_rx.changed() => return,
        }
        backoff = (backoff * 2).min(cap);
        let still_listed = shared
            .lookupds
            .lock()
            .expect("lookupd list poisoned")
            .contains(&addr);
        if !still_listed {
            return;
        }
    }
}

/// A random number in [0, 1) without a RNG dependency (std's randomly keyed hasher).
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Polls every lookupd now, after a random jitter plus one interval, then every interval
/// (and at once when a lookupd is added), reporting the nsqd addresses found.
///
/// Each lookupd that offers nsq-rs's `/lookup/watch` is also followed (one task per
/// lookupd, [`watch_lookupd`]): a change it pushes wakes this loop at once, so a new
/// producer is found in milliseconds instead of up to a poll interval. Polling goes on as
/// before, and is all there is with lookupds that have no such stream (Go's).
async fn lookupd_loop(shared: Arc<Shared>, mut stop_rx: watch::Receiver<bool>) {
    let config = shared.config.clone();
    let mut first = true;
    let mut watched: std::collections::HashSet<(String, String)> = Default::default();
    loop {
        if *stop_rx.borrow_and_update() {
            return;
        }
        let list = shared
            .lookupds
            .lock()
            .expect("lookupd list poisoned")
            .clone();
        for addr in &list {
            if watched.insert((addr.host_port.clone(), addr.path.clone())) {
                tokio::spawn(watch_lookupd(shared.clone(), addr.clone(), stop_rx.clone()));
            }
        }
        let mut found: Vec<String> = Vec::new();
        for addr in &list {
            match lookupd::lookup(&shared.lookupd_http, addr, &shared.topic).await {
                Ok(producers) => {
                    if producers.is_empty() {
                        tracing::debug!(lookupd = %addr.host_port, topic = %shared.topic, "no producers for topic yet");
                    }
                    found.extend(producers.iter().map(|p| p.tcp_address()));
                }
                Err(e) => {
                    tracing::warn!(lookupd = %addr.host_port, error = %e, "lookupd query failed")
                }
            }
        }
        found.sort();
        found.dedup();
        if shared.events.send(Event::Discovered(found)).await.is_err() {
            return;
        }
        let mut wait = config.lookupd_poll_interval;
        if first {
            first = false;
            wait += config
                .lookupd_poll_interval
                .mul_f64(config.lookupd_poll_jitter * random_fraction());
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.lookupd_notify.notified() => {}
            _ = stop_rx.changed() => return,
        }
    }
}
