//! How long fsyncs take, for whoever wants to know (nsqd's `/metrics` histogram): one
//! process-wide observer, set once, called after every `fdatasync` of a log segment or
//! journal with the time it took. Without an observer the cost is one atomic load per
//! fsync (itself a disk flush of milliseconds), so the store does not depend on any
//! metrics crate.

use std::fs::File;
use std::io;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static OBSERVER: OnceLock<fn(Duration)> = OnceLock::new();

/// Sets the observer (the first call wins; later ones are ignored).
pub fn set_fsync_observer(f: fn(Duration)) {
    let _ = OBSERVER.set(f);
}

/// `file.sync_data()`, timed for the observer.
pub(crate) fn sync_data(file: &File) -> io::Result<()> {
    match OBSERVER.get() {
        None => file.sync_data(),
        Some(f) => {
            let t = Instant::now();
            let r = file.sync_data();
            f(t.elapsed());
            r
        }
    }
}
