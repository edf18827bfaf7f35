//! Rebuilding a channel's queue after a restart: [`recover_channel`].

use crate::error::StoreError;
use crate::journal::{AckSet, ChannelRecovery, DeferredEntry};
use crate::log::{LogMessage, LogReader};

/// What to do with a recovered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Deliver it (it was queued or in flight at the crash).
    Ready,
    /// Deliver it at `due_unix_ns` (ns since the Unix epoch; may already be past).
    Deferred {
        /// Due time.
        due_unix_ns: i64,
    },
}

/// One unacked message of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Its log position (the key for later `ack`/`defer`).
    pub pos: u64,
    /// The message, with `attempts` taken from the journal when it recorded them.
    pub msg: LogMessage,
    /// Ready or deferred.
    pub disposition: Disposition,
}

/// Replays a topic log for one channel: every record from `recovery.start` up to the
/// reader's `written_upto()` at the time of the call that is not acked, in log order, in
/// batches of at most `max_records` / about `max_bytes` (so memory stays bounded however big
/// the backlog). Deferral comes from the journal (REQ with delay) or else from the record
/// (DPUB).
///
/// Call it before appending to the log again, or at least note that records appended later
/// (at or past [`ChannelReplay::upto`]) are not part of the replay.
pub fn recover_channel(
    reader: LogReader,
    recovery: &ChannelRecovery,
    max_records: usize,
    max_bytes: usize,
) -> ChannelReplay {
    let upto = reader.written_upto();
    ChannelReplay {
        pos: recovery.start,
        upto,
        reader,
        acked: recovery.acked.clone(),
        ack_idx: 0,
        deferred: recovery.deferred.clone(),
        def_idx: 0,
        attempts: recovery.attempts.clone(),
        att_idx: 0,
        max_records: max_records.max(1),
        max_bytes: max_bytes.max(1),
        lowest_unacked: None,
        delivered: 0,
    }
}

/// The iterator [`recover_channel`] returns. Each item is one non-empty batch.
#[derive(Debug)]
pub struct ChannelReplay {
    reader: LogReader,
    pos: u64,
    upto: u64,
    acked: AckSet,
    ack_idx: usize,
    deferred: Vec<DeferredEntry>,
    def_idx: usize,
    attempts: Vec<(u64, u16)>,
    att_idx: usize,
    max_records: usize,
    max_bytes: usize,
    lowest_unacked: Option<u64>,
    delivered: u64,
}

impl ChannelReplay {
    /// Where the replay has got to.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Where it stops: the log's `written_upto()` when the replay began. The channel's live
    /// reading continues from here.
    pub fn upto(&self) -> u64 {
        self.upto
    }

    /// The first unacked position seen so far (the channel's retention point once finished;
    /// `None` if everything was acked).
    pub fn lowest_unacked(&self) -> Option<u64> {
        self.lowest_unacked
    }

    /// How many messages have been yielded.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    fn is_acked(&mut self, pos: u64) -> bool {
        let r = self.acked.ranges();
        while self.ack_idx < r.len() && r[self.ack_idx].1 <= pos {
            self.ack_idx += 1;
        }
        self.ack_idx < r.len() && r[self.ack_idx].0 <= pos
    }

    /// The next non-empty batch, or `None` when the replay is complete.
    pub fn next_batch(&mut self) -> Result<Option<Vec<Recovered>>, StoreError> {
        while self.pos < self.upto {
            let batch =
                self.reader
                    .read_range(self.pos, self.upto, self.max_records, self.max_bytes)?;
            if batch.next_pos <= self.pos && batch.records.is_empty() {
                // Nothing more readable below `upto` (e.g. segments vanished).
                self.pos = self.upto;
                break;
            }
            self.pos = batch.next_pos;
            let mut out = Vec::with_capacity(batch.records.len());
            for (pos, mut msg) in batch.records {
                if self.is_acked(pos) {
                    continue;
                }
                while self.def_idx < self.deferred.len() && self.deferred[self.def_idx].pos < pos {
                    self.def_idx += 1;
                }
                while self.att_idx < self.attempts.len() && self.attempts[self.att_idx].0 < pos {
                    self.att_idx += 1;
                }
                let mut disposition = if msg.defer_until > 0 {
                    Disposition::Deferred {
                        due_unix_ns: msg.defer_until,
                    }
                } else {
                    Disposition::Ready
                };
                if let Some(d) = self.deferred.get(self.def_idx).filter(|d| d.pos == pos) {
                    disposition = Disposition::Deferred {
                        due_unix_ns: d.due_unix_ns,
                    };
                    msg.attempts = d.attempts;
                } else if let Some(a) = self.attempts.get(self.att_idx).filter(|a| a.0 == pos) {
                    msg.attempts = a.1;
                }
                self.lowest_unacked.get_or_insert(pos);
                out.push(Recovered {
                    pos,
                    msg,
                    disposition,
                });
            }
            if !out.is_empty() {
                self.delivered += out.len() as u64;
                return Ok(Some(out));
            }
        }
        Ok(None)
    }
}

impl Iterator for ChannelReplay {
    type Item = Result<Vec<Recovered>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch().transpose()
    }
}
