//! The single integration-test binary: real nsqlookupd + nsqds + nsqadmin on loopback.

/// Headless Chromium (Playwright) driving the UI of a live cluster; screenshots.
mod browser;
/// Flags, version, startup errors.
mod cli;
/// The JSON API against a live cluster: aggregation, actions, dead nodes.
mod cluster;
/// Sampler (rates, history), /config, gzip, /lookup and /counter data.
mod features;
/// Spawning the binaries, a raw HTTP client.
mod harness;
/// The real Prometheus server scraping nsqd, nsqlookupd and nsqadmin; PromQL checks.
mod prometheus;
