//! Messages handed to the application, and the commands they send back.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use nsq_protocol::MessageId;
use tokio::sync::mpsc;

/// Commands for a connection task (from messages and from the consumer's coordinator).
#[derive(Debug)]
pub(crate) enum ConnCmd {
    Fin(MessageId),
    Req {
        id: MessageId,
        delay: Duration,
        backoff: bool,
    },
    Touch(MessageId),
    Rdy(u64),
    /// Send `CLS`, then close once nothing is in flight.
    Close,
}

/// The way back to the connection a message came from.
///
/// The mailbox is unbounded so that [`Message`]'s methods need no `.await`; what flows
/// through it is bounded by the messages in flight on that connection (one FIN/REQ each,
/// plus the TOUCHes the application chooses to send) and by RDY updates.
#[derive(Debug, Clone)]
pub(crate) struct ConnLink {
    pub(crate) tx: mpsc::UnboundedSender<ConnCmd>,
    pub(crate) addr: Arc<str>,
}

/// A message received by a [`Consumer`](crate::Consumer).
///
/// Answer every message exactly once with [`finish`](Message::finish),
/// [`requeue`](Message::requeue) or [`requeue_without_backoff`](Message::requeue_without_backoff).
/// These methods do not block and need no `.await`: the command is queued for the
/// connection the message arrived on. Long work can extend nsqd's in-flight timeout with
/// [`touch`](Message::touch).
///
/// # Dropping without answering
/// A message dropped without an answer is **requeued** (with the default delay and with
/// backoff), like a go-nsq handler returning an error. Set
/// [`Config::requeue_on_drop`](crate::Config::requeue_on_drop) to `false`, or call
/// [`disable_auto_requeue`](Message::disable_auto_requeue) on one message, to leave it
/// alone instead: nsqd then redelivers it after its `msg_timeout`.
///
/// If the connection closed in the meantime, answers are dropped silently; nsqd redelivers
/// the message after its timeout.
#[derive(Debug)]
pub struct Message {
    pub(crate) id: MessageId,
    pub(crate) body: Bytes,
    pub(crate) attempts: u16,
    pub(crate) timestamp: i64,
    pub(crate) link: ConnLink,
    pub(crate) responded: bool,
    pub(crate) auto_requeue: bool,
    /// `requeue(None)`'s delay for this message (go-nsq's linear delay).
    pub(crate) default_delay: Duration,
}

impl Message {
    /// The 16-byte message id nsqd assigned.
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// How many times nsqd has delivered this message (1 on the first delivery).
    pub fn attempts(&self) -> u16 {
        self.attempts
    }

    /// When it was published: nanoseconds since the Unix epoch.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// [`Message::timestamp`] as a `SystemTime`.
    pub fn published_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.timestamp.max(0) as u64)
    }

    /// The TCP address of the nsqd that delivered it.
    pub fn nsqd_address(&self) -> &str {
        &self.link.addr
    }

    /// Whether the connection it arrived on is still open (answers can still reach nsqd).
    pub fn is_connection_open(&self) -> bool {
        !self.link.tx.is_closed()
    }

    /// Tells nsqd the message was processed (`FIN`).
    pub fn finish(mut self) {
        self.responded = true;
        let _ = self.link.tx.send(ConnCmd::Fin(self.id));
    }

    /// Puts the message back for redelivery (`REQ`) after `delay` (`None`: go-nsq's default,
    /// `default_requeue_delay × attempts`, capped at `max_requeue_delay`), and signals a
    /// failure to the consumer's backoff logic.
    pub fn requeue(self, delay: Option<Duration>) {
        self.send_requeue(delay, true);
    }

    /// Like [`Message::requeue`] but without triggering backoff.
    pub fn requeue_without_backoff(self, delay: Option<Duration>) {
        self.send_requeue(delay, false);
    }

    /// Resets nsqd's in-flight timeout for this message (`TOUCH`).
    pub fn touch(&self) {
        let _ = self.link.tx.send(ConnCmd::Touch(self.id));
    }

    /// Dropping this message will not requeue it (see the type's docs).
    pub fn disable_auto_requeue(&mut self) {
        self.auto_requeue = false;
    }

    fn send_requeue(mut self, delay: Option<Duration>, backoff: bool) {
        self.responded = true;
        let delay = delay.unwrap_or(self.default_delay);
        let _ = self.link.tx.send(ConnCmd::Req {
            id: self.id,
            delay,
            backoff,
        });
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        if !self.responded && self.auto_requeue {
            tracing::debug!(id = %self.id, "message dropped without an answer: requeueing");
            let _ = self.link.tx.send(ConnCmd::Req {
                id: self.id,
                delay: self.default_delay,
                backoff: true,
            });
        }
    }
}
