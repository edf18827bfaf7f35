//! Sans-I/O codec for NSQ's TCP protocol V2, shared by `nsqd`, the client library and the tools.
//!
//! This crate is the single source of truth for the wire format.
//! It performs no I/O, spawns nothing and depends on no async runtime:
//! callers hand it bytes (a `BytesMut` they filled from a socket) and get typed values back,
//! or hand it values and get bytes appended to a buffer they own.
//! That keeps parsing testable without sockets and lets a connection writer batch
//! many frames into one buffer (one syscall).
//!
//! # Layout
//! - [`command`]: client → server commands (`IDENTIFY`, `SUB`, `PUB`, `MPUB`, `DPUB`, `RDY`,
//!   `FIN`, `REQ`, `TOUCH`, `CLS`, `NOP`, `AUTH`): decoding with limits checked *before* a body
//!   is buffered, and encoding for clients.
//! - [`frame`]: server → client frames (`[size][type][data]`), encoding and decoding.
//! - [`message`]: the message payload shared by the wire and the disk queue
//!   (timestamp, attempts, 16-byte id, body) and message ids.
//! - [`names`]: topic and channel name validation, `#ephemeral`.
//! - [`error`]: `E_*` codes and decode errors.
//! - [`identify`]: the IDENTIFY request and response JSON.
//! - [`lookup`]: the nsqd → nsqlookupd protocol V1 (magic, IDENTIFY/REGISTER/UNREGISTER/PING,
//!   size-prefixed responses).
//!
//! `fuzzing` (hidden) holds the bodies of the cargo-fuzz targets in `fuzz/`, so that the
//! stable test `tests/fuzz_corpus.rs` can replay their corpora in CI.

pub mod command;
pub mod error;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod identify;
pub mod lookup;
pub mod message;
pub mod names;

pub use command::{Command, Decoder, Limits};
pub use error::{ErrorCode, ProtocolError};
pub use frame::{Frame, FrameType};
pub use message::{Message, MessageId};

/// The 4 bytes a V2 client sends first.
pub const MAGIC_V2: &[u8; 4] = b"  V2";

/// The body of the response frame nsqd sends as a heartbeat.
pub const HEARTBEAT: &[u8] = b"_heartbeat_";

/// The body of a plain success response frame.
pub const OK: &[u8] = b"OK";

/// The body of the response to `CLS`.
pub const CLOSE_WAIT: &[u8] = b"CLOSE_WAIT";

/// The version string nsq-rs reports where NSQ reports its own (`/info`, IDENTIFY, lookupd).
/// Clients and nsqadmin compare it against NSQ's versions, so we report the NSQ release
/// whose interface we implement.
pub const NSQ_VERSION: &str = "1.3.0";
