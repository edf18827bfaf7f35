//! Group commit: [`SyncPolicy`], the [`Committer`] state machine, and [`LogWriterThread`], a
//! dedicated I/O thread that owns topic logs and shares fsyncs between concurrent publishers.
//!
//! # How an async owner batches appends into one sync
//!
//! The async runtime must never do disk I/O on its workers. The intended shape:
//!
//! 1. A connection task turns PUB/MPUB into `Vec<LogMessage>` and sends it, with a completion
//!    (e.g. a `tokio::sync::oneshot::Sender` wrapped in a boxed closure), to the writer thread;
//!    it awaits the completion before answering `OK` (or `E_PUB_FAILED` on `Err`).
//! 2. The writer thread blocks on its queue. When a request arrives it also drains everything
//!    else already queued (bounded), appends every request to its topic's buffer, does one
//!    `write` per touched topic, and — when the policy requires it — **one `fdatasync` per
//!    touched topic for the whole group**. Then it completes every request in the group.
//!    While it is inside that fsync, new requests pile up in the queue and form the next group,
//!    so the number of fsyncs per second is bounded by the disk, not by the publishers: with
//!    100 concurrent publishers and a 1 ms fsync, each fsync commits about 100 requests.
//! 3. With `every == 1` (`--sync-every=1`) a request completes only after the fsync covering
//!    it. With `every > 1` it completes after the `write` (like Go, whose OK does not wait for
//!    fsync); the [`Committer`] then syncs after `every` records or `timeout`, whichever first,
//!    bounding what an OS crash can take back.
//!
//! One writer thread can serve every topic of a daemon; to use more disks or cores, run several
//! and shard topics by hash. `spawn_blocking` per publish also works (take the log's mutex,
//! append, flush, sync) but gets no group commit unless callers coalesce, so the thread is
//! preferred.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{error, warn};

use crate::error::StoreError;
use crate::log::{Appended, LogMessage, TopicLog};

/// When to fsync (`--sync-every`, `--sync-timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPolicy {
    /// Sync after this many appended records (`0` or `1`: after every group, and complete
    /// appends only once synced).
    pub every: u64,
    /// Sync at the latest this long after the first unsynced append.
    pub timeout: Duration,
}

impl Default for SyncPolicy {
    /// Go nsqd's defaults: 2500 records, 2 s.
    fn default() -> Self {
        SyncPolicy {
            every: 2500,
            timeout: Duration::from_secs(2),
        }
    }
}

impl SyncPolicy {
    /// True when an append must not be acknowledged before it is fsynced.
    pub fn ack_after_sync(&self) -> bool {
        self.every <= 1
    }
}

/// Decides when one log must be synced, given appends and time. Pure: time is a parameter.
#[derive(Debug, Clone)]
pub struct Committer {
    policy: SyncPolicy,
    unsynced: u64,
    since: Option<Instant>,
}

impl Committer {
    /// A committer with nothing pending.
    pub fn new(policy: SyncPolicy) -> Committer {
        Committer {
            policy,
            unsynced: 0,
            since: None,
        }
    }

    /// The policy.
    pub fn policy(&self) -> SyncPolicy {
        self.policy
    }

    /// Notes `records` appended at `now`.
    pub fn appended(&mut self, records: u64, now: Instant) {
        if records == 0 {
            return;
        }
        self.unsynced += records;
        self.since.get_or_insert(now);
    }

    /// Records appended since the last sync.
    pub fn unsynced(&self) -> u64 {
        self.unsynced
    }

    /// Must the log be synced now?
    pub fn should_sync(&self, now: Instant) -> bool {
        self.unsynced > 0
            && (self.unsynced >= self.policy.every.max(1)
                || self.deadline().is_some_and(|d| now >= d))
    }

    /// When the timeout will require a sync (if anything is pending).
    pub fn deadline(&self) -> Option<Instant> {
        self.since.map(|s| s + self.policy.timeout)
    }

    /// Notes a successful sync.
    pub fn synced(&mut self) {
        self.unsynced = 0;
        self.since = None;
    }
}

/// How [`LogWriterThread`] reports the outcome of an append. Implemented for
/// `std::sync::mpsc::Sender` and for boxed closures (wrap a tokio oneshot in one:
/// `Box::new(move |r| { let _ = tx.send(r); })`).
pub trait Completion: Send + 'static {
    /// Delivers the result (called exactly once, on the writer thread: keep it cheap).
    fn complete(self, result: Result<Appended, StoreError>);
}

impl Completion for mpsc::Sender<Result<Appended, StoreError>> {
    fn complete(self, result: Result<Appended, StoreError>) {
        let _ = self.send(result);
    }
}

impl Completion for Box<dyn FnOnce(Result<Appended, StoreError>) + Send> {
    fn complete(self, result: Result<Appended, StoreError>) {
        self(result)
    }
}

/// A topic registered with a [`LogWriterThread`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TopicId(pub u64);

type CallFn = Box<dyn FnOnce(Option<&mut TopicLog>) + Send>;
type RemoveFn = Box<dyn FnOnce(Option<TopicLog>) + Send>;

enum Request<C> {
    Add(u64, Box<TopicLog>),
    Append {
        topic: u64,
        msgs: Vec<LogMessage>,
        done: C,
    },
    Call(u64, CallFn),
    Remove(u64, RemoveFn),
    /// A background fsync finished.
    Synced {
        topic: u64,
        upto: u64,
        path: std::path::PathBuf,
        res: io::Result<()>,
    },
    Stop,
}

/// A background fsync to run: topic, file handle, position covered, path (for errors).
type SyncJob = (u64, std::fs::File, u64, std::path::PathBuf);

/// Most requests taken into one group.
const MAX_GROUP: usize = 4096;

/// A thread that owns topic logs and appends to them with group commit. See the module docs.
///
/// Dropping it (or [`LogWriterThread::shutdown`]) syncs every log and joins the thread.
pub struct LogWriterThread<C: Completion> {
    tx: mpsc::Sender<Request<C>>,
    join: Option<JoinHandle<()>>,
    next_id: AtomicU64,
}

impl<C: Completion> std::fmt::Debug for LogWriterThread<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriterThread").finish_non_exhaustive()
    }
}

impl<C: Completion> LogWriterThread<C> {
    /// Starts the thread.
    pub fn spawn(name: &str, policy: SyncPolicy) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        // Periodic fsyncs (without ack-after-sync) run on a second thread so that appends,
        // and the publishers waiting on them, are not held up by a slow disk flush.
        let (bg_tx, bg_rx) = mpsc::channel::<SyncJob>();
        let back = tx.clone();
        std::thread::Builder::new()
            .name(format!("{name}-sync"))
            .spawn(move || {
                for (topic, file, upto, path) in bg_rx {
                    let res = crate::observe::sync_data(&file);
                    if back
                        .send(Request::Synced {
                            topic,
                            upto,
                            path,
                            res,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            })?;
        let join = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || Worker::new(policy, bg_tx).run(rx))?;
        Ok(LogWriterThread {
            tx,
            join: Some(join),
            next_id: AtomicU64::new(1),
        })
    }

    /// Hands a log to the thread. Take [`TopicLog::reader`]s before, for consumers.
    pub fn add_topic(&self, log: TopicLog) -> TopicId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(Request::Add(id, Box::new(log)));
        TopicId(id)
    }

    /// Appends `msgs` to `topic`; `done` gets the positions once written (and synced, if the
    /// policy says so), or the error.
    pub fn append(&self, topic: TopicId, msgs: Vec<LogMessage>, done: C) {
        let req = Request::Append {
            topic: topic.0,
            msgs,
            done,
        };
        if let Err(mpsc::SendError(Request::Append { done, .. })) = self.tx.send(req) {
            done.complete(Err(StoreError::WriterStopped));
        }
    }

    /// Runs `f` on the writer thread with the topic's log (`None` if unknown), in order with
    /// appends: e.g. `remove_segments_before`, `roll`, `sync`, reading `end_pos`.
    pub fn call(&self, topic: TopicId, f: impl FnOnce(Option<&mut TopicLog>) + Send + 'static) {
        let _ = self.tx.send(Request::Call(topic.0, Box::new(f)));
    }

    /// Takes the log back (synced first, pending appends completed); e.g. to `delete_all` it.
    pub fn remove_topic(
        &self,
        topic: TopicId,
        done: impl FnOnce(Option<TopicLog>) + Send + 'static,
    ) {
        let _ = self.tx.send(Request::Remove(topic.0, Box::new(done)));
    }

    /// Syncs every log, stops the thread and waits for it.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.tx.send(Request::Stop);
        if let Some(j) = self.join.take() {
            if j.join().is_err() {
                error!("log writer thread panicked");
            }
        }
    }
}

impl<C: Completion> Drop for LogWriterThread<C> {
    fn drop(&mut self) {
        self.stop();
    }
}

struct TopicState<C> {
    log: TopicLog,
    committer: Committer,
    waiting: Vec<(Appended, C)>,
    appended: u64,
}

impl<C: Completion> TopicState<C> {
    fn fail_waiting(&mut self, err: &StoreError) {
        for (_, done) in self.waiting.drain(..) {
            done.complete(Err(err.clone()));
        }
        self.appended = 0;
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        let r = self.log.sync();
        if r.is_ok() {
            self.committer.synced();
        }
        r
    }

    /// Hands a sync to the background thread (records it as done for the sync policy).
    fn background_sync(&mut self, id: u64, bg: &mpsc::Sender<SyncJob>) {
        match self.log.begin_background_sync() {
            Ok(Some((file, upto, path))) => {
                self.committer.synced();
                if bg.send((id, file, upto, path)).is_err() {
                    warn!(topic = %self.log.topic(), "sync thread gone; syncing inline");
                    let _ = self.sync();
                }
            }
            Ok(None) => self.committer.synced(),
            Err(e) => warn!(topic = %self.log.topic(), error = %e, "periodic sync failed"),
        }
    }

    /// Writes (and syncs if required) this group's appends, then completes them.
    fn commit(&mut self, id: u64, now: Instant, bg: &mpsc::Sender<SyncJob>) {
        if let Err(e) = self.log.flush() {
            self.fail_waiting(&e);
            return;
        }
        self.committer.appended(self.appended, now);
        self.appended = 0;
        let policy = self.committer.policy();
        if policy.ack_after_sync() {
            if let Err(e) = self.sync() {
                self.fail_waiting(&e);
                return;
            }
        }
        // Without ack-after-sync the publishers only wait for the write: answer them before a
        // periodic fsync, which can take milliseconds.
        for (a, done) in self.waiting.drain(..) {
            done.complete(Ok(a));
        }
        if !policy.ack_after_sync() && self.committer.should_sync(now) {
            self.background_sync(id, bg);
        }
    }
}

struct Worker<C> {
    policy: SyncPolicy,
    bg: mpsc::Sender<SyncJob>,
    topics: HashMap<u64, TopicState<C>>,
    /// Topics with unsynced records (waiting for `every` or `timeout`).
    dirty: HashSet<u64>,
}

impl<C: Completion> Worker<C> {
    fn new(policy: SyncPolicy, bg: mpsc::Sender<SyncJob>) -> Self {
        Worker {
            policy,
            bg,
            topics: HashMap::new(),
            dirty: HashSet::new(),
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Request<C>>) {
        let mut touched: Vec<u64> = Vec::new();
        let mut stop = false;
        while !stop {
            let deadline = self
                .dirty
                .iter()
                .filter_map(|id| self.topics.get(id)?.committer.deadline())
                .min();
            let first = match deadline {
                None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
            };
            match first {
                Ok(req) => {
                    stop |= self.handle(req, &mut touched);
                    let mut n = 1;
                    while n < MAX_GROUP && !stop {
                        match rx.try_recv() {
                            Ok(req) => stop |= self.handle(req, &mut touched),
                            Err(_) => break,
                        }
                        n += 1;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => stop = true,
            }
            let now = Instant::now();
            for id in touched.drain(..) {
                if let Some(t) = self.topics.get_mut(&id) {
                    t.commit(id, now, &self.bg);
                    if t.committer.unsynced() > 0 {
                        self.dirty.insert(id);
                    } else {
                        self.dirty.remove(&id);
                    }
                }
            }
            let due: Vec<u64> = self
                .dirty
                .iter()
                .copied()
                .filter(|id| {
                    stop || self
                        .topics
                        .get(id)
                        .is_some_and(|t| t.committer.should_sync(now))
                })
                .collect();
            for id in due {
                self.dirty.remove(&id);
                if let Some(t) = self.topics.get_mut(&id) {
                    if stop {
                        if let Err(e) = t.sync() {
                            warn!(topic = %t.log.topic(), error = %e, "final sync failed");
                        }
                    } else {
                        t.background_sync(id, &self.bg);
                    }
                }
            }
        }
        for (_, t) in self.topics.drain() {
            if let Err(e) = t.log.close() {
                warn!(error = %e, "closing topic log failed");
            }
        }
    }

    /// Applies one request; returns true on `Stop`.
    fn handle(&mut self, req: Request<C>, touched: &mut Vec<u64>) -> bool {
        match req {
            Request::Add(id, log) => {
                self.topics.insert(
                    id,
                    TopicState {
                        log: *log,
                        committer: Committer::new(self.policy),
                        waiting: Vec::new(),
                        appended: 0,
                    },
                );
            }
            Request::Append { topic, msgs, done } => {
                let Some(t) = self.topics.get_mut(&topic) else {
                    done.complete(Err(StoreError::UnknownTopic(topic)));
                    return false;
                };
                match t.log.append(&msgs) {
                    Ok(a) => {
                        if t.waiting.is_empty() {
                            touched.push(topic);
                        }
                        t.appended += a.count as u64;
                        t.waiting.push((a, done));
                    }
                    Err(e @ StoreError::MessageTooLarge { .. }) => done.complete(Err(e)),
                    Err(e) => {
                        // Everything buffered since the last write is gone with it.
                        t.fail_waiting(&e);
                        done.complete(Err(e));
                    }
                }
            }
            Request::Call(id, f) => f(self.topics.get_mut(&id).map(|t| &mut t.log)),
            Request::Synced {
                topic,
                upto,
                path,
                res,
            } => {
                if let Some(t) = self.topics.get_mut(&topic) {
                    let _ = t.log.finish_background_sync(upto, &path, res);
                }
            }
            Request::Remove(id, f) => match self.topics.remove(&id) {
                Some(mut t) => {
                    self.dirty.remove(&id);
                    touched.retain(|&x| x != id);
                    match t.log.sync() {
                        Ok(()) => {
                            for (a, done) in t.waiting.drain(..) {
                                done.complete(Ok(a));
                            }
                        }
                        Err(e) => t.fail_waiting(&e),
                    }
                    f(Some(t.log));
                }
                None => f(None),
            },
            Request::Stop => return true,
        }
        false
    }
}
