//! TEMPORARY stand-in for config.rs while it is being written.
use std::time::Duration;
#[derive(Debug, thiserror::Error)]
pub enum ConfigError { #[error("clap")] Clap(clap::Error), #[error("{0}")] Invalid(String) }
#[derive(Debug, Clone, Copy)]
pub enum LogLevel { Info }
impl LogLevel { pub fn as_tracing_filter(&self) -> &'static str { "info" } }
#[derive(Debug, Clone)]
pub struct Options {
    pub version: bool, pub log_level: LogLevel, pub node_id: i64, pub mem_queue_size: i64,
    pub tcp_address: String, pub http_address: String, pub max_msg_size: i64, pub max_body_size: i64,
    pub msg_timeout: Duration, pub max_req_timeout: Duration, pub max_heartbeat_interval: Duration,
    pub max_output_buffer_size: i64, pub output_buffer_timeout: Duration, pub min_output_buffer_timeout: Duration,
    pub max_output_buffer_timeout: Duration, pub max_msg_timeout: Duration, pub max_rdy_count: i64,
    pub max_deflate_level: i64, pub topology_region: String, pub topology_zone: String, pub max_channel_consumers: i64,
}
impl Options {
    pub fn parse_from_env() -> Result<Options, ConfigError> {
        let mut o = Options { version: false, log_level: LogLevel::Info, node_id: 1, mem_queue_size: 10000,
            tcp_address: "0.0.0.0:4150".into(), http_address: "0.0.0.0:4151".into(), max_msg_size: 1048576, max_body_size: 5242880,
            msg_timeout: Duration::from_secs(60), max_req_timeout: Duration::from_secs(3600), max_heartbeat_interval: Duration::from_secs(60),
            max_output_buffer_size: 65536, output_buffer_timeout: Duration::from_millis(250), min_output_buffer_timeout: Duration::from_millis(25),
            max_output_buffer_timeout: Duration::from_secs(30), max_msg_timeout: Duration::from_secs(900), max_rdy_count: 2500,
            max_deflate_level: 6, topology_region: String::new(), topology_zone: String::new(), max_channel_consumers: 0 };
        for a in std::env::args().skip(1) {
            if let Some(v) = a.strip_prefix("--tcp-address=") { o.tcp_address = v.into(); }
            if let Some(v) = a.strip_prefix("--http-address=") { o.http_address = v.into(); }
            if let Some(v) = a.strip_prefix("--mem-queue-size=") { o.mem_queue_size = v.parse().unwrap(); }
            if let Some(v) = a.strip_prefix("--msg-timeout=") { o.msg_timeout = Duration::from_millis(v.trim_end_matches("ms").parse().unwrap()); }
        }
        Ok(o)
    }
    pub fn validate(&self) -> Result<(), ConfigError> { Ok(()) }
    pub fn unsupported_in_use(&self) -> Vec<String> { vec![] }
}
