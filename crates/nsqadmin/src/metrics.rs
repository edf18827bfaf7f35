//! `GET /metrics` (below `--base-path`): nsqadmin for Prometheus (an nsq-rs extension). The
//! exposition, build info and `process_*` metrics are shared in [`nsq_http::metrics`]; on
//! top of them, `nsqadmin_upstream_requests_total{result="ok"|"error"}` counts the requests
//! nsqadmin made to nsqd and nsqlookupd (every one goes through [`crate::client::Client`]'s
//! `get`/`post`; `--notification-http-endpoint` posts are not counted). The cluster's own
//! figures are not repeated here: scrape the nsqds and nsqlookupds themselves.
//!
//! nsqadmin has no `--http-api-token` check of its own (the flag is the token it sends to
//! nsqd), so `/metrics` is as open as its UI.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nsq_http::metrics::{counter_family, Collector, DescriptorEncoder, Registry};

use crate::client::UpstreamCounts;

/// The registry `/metrics` serves; `counts` are the shared client's.
pub fn registry(counts: Arc<UpstreamCounts>) -> Registry {
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut r = nsq_http::metrics::daemon_registry("nsqadmin", crate::config::NSQ_VERSION, start);
    r.register_collector(Box::new(UpstreamCollector(counts)));
    r
}

#[derive(Debug)]
struct UpstreamCollector(Arc<UpstreamCounts>);

impl Collector for UpstreamCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        counter_family(
            &mut enc,
            "nsqadmin_upstream_requests",
            "HTTP requests to nsqd and nsqlookupd, by outcome (error: no connection, timeout \
             or a non-2xx status).",
            None,
            [
                ([("result", "ok")], self.0.ok.load(Ordering::Relaxed)),
                ([("result", "error")], self.0.error.load(Ordering::Relaxed)),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use nsq_http::metrics::{encode, Format};

    use super::*;

    #[test]
    fn upstream_counters() {
        let counts = Arc::new(UpstreamCounts::default());
        counts.ok.store(3, Ordering::Relaxed);
        counts.error.store(1, Ordering::Relaxed);
        let text = encode(&registry(counts), Format::Text).unwrap();
        assert!(
            text.contains(
                "# TYPE nsqadmin_upstream_requests_total counter\n\
                 nsqadmin_upstream_requests_total{result=\"ok\"} 3\n\
                 nsqadmin_upstream_requests_total{result=\"error\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("nsq_build_info{daemon=\"nsqadmin\""),
            "{text}"
        );
    }
}
