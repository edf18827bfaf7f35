//! The single integration-test binary: real nsqlookupd + nsqds + nsqadmin on loopback.

/// Headless Chromium screenshots of the UI (ignored unless chromium is installed).
mod browser;
/// Flags, version, startup errors.
mod cli;
/// The JSON API against a live cluster: aggregation, actions, dead nodes.
mod cluster;
/// Spawning the binaries, a raw HTTP client.
mod harness;
