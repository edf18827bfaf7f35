//! Sans-I/O queue state: no tokio, no sockets, no clock.
//!
//! Everything here is plain data plus methods that take the current time (`now`, nanoseconds
//! on a monotonic clock chosen by the caller) as a parameter. The async shells in
//! [`crate::topic`] and [`crate::channel`] own these values behind short, never-awaited
//! locks; tests drive them directly with explicit times.
//!
//! - [`batch`]: how message bodies are stored: one shared allocation per published batch,
//!   referenced (never copied) by every channel that holds a message of it.
//! - [`channel`]: one NSQ channel's ready queue, in-flight set with deadlines, deferred set,
//!   per-consumer in-flight counts and counters.
//! - [`dedup`]: the dedup window policy's filter: which message keys a topic saw recently
//!   (a Bloom filter in two rotating generations, sized by the textbook formula).
//! - [`e2e`]: end-to-end processing latency percentiles over a sliding window (a sketch per
//!   half-window, fed by FINs).
//! - [`guid`]: Go-compatible message ids.
//! - [`policy`]: per-topic and per-channel delivery policies (ttl, max_depth, dedup window;
//!   nsq-rs's).
//! - [`topic`]: one topic's fan-out: its channels, the messages it holds (no channel yet,
//!   paused, starting) in memory and as a log range, and where a new channel starts.

pub mod batch;
pub mod channel;
pub mod dedup;
pub mod e2e;
pub mod guid;
pub mod policy;
pub mod topic;
