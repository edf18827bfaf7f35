//! Placeholder until the HTTP API lands.
use std::sync::Arc;
/// Serves HTTP.
pub async fn serve(nsqd: Arc<crate::Nsqd>, _listener: tokio::net::TcpListener) {
    nsqd.shutdown.cancelled().await;
}
