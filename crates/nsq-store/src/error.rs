//! The one error type of the crate.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything the store can fail with.
///
/// I/O variants name the file and keep the OS error, so a full disk reads like
/// `writing /data/orders.nsqrs.00000000000000000000.log: No space left on device (os error 28)`.
/// The error is `Clone` (the `io::Error` is shared) so one failed group commit can fail every
/// request in the group with the same cause.
///
/// Corruption found while *reading* is never an error: it is logged and skipped (see the crate
/// docs). Errors mean "the operation did not happen"; [`StoreError::Poisoned`] means "the state of
/// the file is unknown, reopen it".
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A name or option cannot be used (e.g. `segment_bytes == 0`, a topic name with `/`).
    #[error("invalid argument: {0}")]
    Invalid(String),

    /// A message body is larger than `max_msg_size`.
    #[error("message too large: {size} > max_msg_size {max}")]
    MessageTooLarge {
        /// Body length.
        size: usize,
        /// The configured limit.
        max: u32,
    },

    /// An I/O operation failed. `op` says which ("opening", "writing", "syncing", ...).
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Arc<io::Error>,
    },

    /// An earlier `fsync` (or the repair of a failed write) failed, so what is on disk is unknown.
    /// Every later write or sync fails with this error until the log is reopened (which rescans
    /// and repairs the files). Retrying `fsync` after a failure is unsafe on Linux: the kernel may
    /// have dropped the dirty pages and report success the second time.
    #[error("{} is unusable after an earlier failure ({cause}); reopen it", path.display())]
    Poisoned {
        /// The file.
        path: PathBuf,
        /// The first failure.
        cause: String,
    },

    /// The log writer thread has stopped (shutdown or panic).
    #[error("log writer thread is not running")]
    WriterStopped,

    /// The writer thread does not know this topic.
    #[error("unknown topic id {0}")]
    UnknownTopic(u64),
}

impl StoreError {
    /// An I/O failure of `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> StoreError {
        StoreError::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }

    /// The OS error kind, when this is an I/O error.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            StoreError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }

    /// True for "disk full" (`ENOSPC`) and "quota exceeded" (`EDQUOT`) errors.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => {
                matches!(source.raw_os_error(), Some(28) | Some(122))
            }
            _ => false,
        }
    }
}
