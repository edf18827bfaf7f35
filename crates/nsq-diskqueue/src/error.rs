//! The one error type of the crate.

use std::io;
use std::path::PathBuf;

/// Everything [`DiskQueue`](crate::DiskQueue) can fail with.
///
/// Every I/O variant names the file it was working on, so the message reads like
/// `writing /data/orders.diskqueue.000001.dat: No space left on device (os error 28)`.
/// Data corruption found while *reading* is never returned: it is logged and the
/// bad file is set aside, as go-diskqueue does (see the crate docs).
#[derive(Debug, thiserror::Error)]
pub enum DiskQueueError {
    /// The options cannot describe a working queue (e.g. `max_bytes_per_file <= 0`).
    #[error("invalid disk queue options: {0}")]
    InvalidOptions(String),

    /// `put` was given a payload outside `[min_msg_size, max_msg_size]`.
    #[error("invalid message write size ({size}) minMsgSize={min} maxMsgSize={max}")]
    InvalidMessageSize {
        /// Length of the rejected payload in bytes.
        size: usize,
        /// The queue's `min_msg_size`.
        min: i32,
        /// The queue's `max_msg_size`.
        max: i32,
    },

    /// The queue was closed or deleted; it accepts no more operations.
    #[error("disk queue {0} is closed")]
    Closed(String),

    /// Opening (or creating) a file failed.
    #[error("opening {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },

    /// Reading a file (or listing the data directory) failed for a reason other
    /// than corruption (e.g. `EIO`, `EMFILE`).
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },

    /// Positioning a file failed.
    #[error("seeking {} to {offset}: {source}", path.display())]
    Seek {
        /// The file.
        path: PathBuf,
        /// Where we tried to go.
        offset: i64,
        /// The cause.
        source: io::Error,
    },

    /// Writing a file failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },

    /// `fsync` failed.
    #[error("syncing {}: {source}", path.display())]
    Sync {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },

    /// Renaming a file failed.
    #[error("renaming {} to {}: {source}", from.display(), to.display())]
    Rename {
        /// Old name.
        from: PathBuf,
        /// New name.
        to: PathBuf,
        /// The cause.
        source: io::Error,
    },

    /// Removing a file failed (a missing file is not an error).
    #[error("removing {}: {source}", path.display())]
    Remove {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}
