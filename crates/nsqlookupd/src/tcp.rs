//! The TCP side: nsqds connect, send the magic `"  V1"`, IDENTIFY, then REGISTER/UNREGISTER
//! their topics and channels and PING every 15 s (Go: `nsqlookupd/tcp.go`,
//! `nsqlookupd/lookup_protocol_v1.go`).
//!
//! One task per connection reads bytes, lets [`RequestDecoder`] cut them into commands,
//! applies each to the registration database (one short lock per command) and writes the
//! responses of everything that arrived in one read with one write. Every protocol error is
//! fatal: the error response is sent and the connection closed. When a connection ends, for
//! whatever reason, all of its peer's registrations are removed, as in Go.
//!
//! Log lines follow Go's wording (`TCP: new client(..)`, `CLIENT(..): IDENTIFY ..`,
//! `DB: client(..) REGISTER category:.. key:.. subkey:..`) so operators' greps keep working.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::hostname;
use crate::http::json;
use crate::lookup::{
    put_error, put_response, IdentifyResponse, LookupCommand, LookupLimits, PeerIdentity,
    RequestDecoder, MAGIC_V1, OK,
};
use crate::registration_db::{PeerInfo, Registration};
use crate::Nsqlookupd;

/// Accepts connections until shutdown.
pub async fn serve(lookupd: Arc<Nsqlookupd>, listener: TcpListener) {
    let addr = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            _ = lookupd.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                lookupd.tracker.spawn(handle(lookupd.clone(), stream, peer));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::error!("TCP: accept failed - {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    match addr {
        Some(a) => tracing::info!("TCP: closing {a}"),
        None => tracing::info!("TCP: closing"),
    }
}

/// Runs one connection to completion (or shutdown).
pub async fn handle(lookupd: Arc<Nsqlookupd>, mut stream: TcpStream, peer: SocketAddr) {
    tracing::info!("TCP: new client({peer})");
    let shutdown = lookupd.shutdown.clone();
    let mut conn = Connection {
        lookupd: &lookupd,
        client: peer.to_string(),
        decoder: RequestDecoder::new(LookupLimits::default()),
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        r = conn.run(&mut stream) => {
            if let Err(e) = r {
                tracing::debug!("CLIENT({}): {e}", conn.client);
            }
        }
    }
    conn.close();
}

/// After a fatal error: half-closes and discards what the client still sends (for at most
/// a second), so the kernel does not answer unread input with a reset that could destroy
/// the error response before the client reads it.
async fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

struct Connection<'a> {
    lookupd: &'a Nsqlookupd,
    /// The remote address, which is also the peer id once identified.
    client: String,
    decoder: RequestDecoder,
}

impl Connection<'_> {
    async fn run(&mut self, stream: &mut TcpStream) -> std::io::Result<()> {
        let mut magic = [0u8; 4];
        stream.read_exact(&mut magic).await?;
        tracing::info!(
            "CLIENT({}): desired protocol magic '{}'",
            self.client,
            String::from_utf8_lossy(&magic)
        );
        if &magic != MAGIC_V1 {
            let mut out = BytesMut::new();
            put_response(&mut out, b"E_BAD_PROTOCOL");
            tracing::error!(
                "client({}) bad protocol magic '{}'",
                self.client,
                String::from_utf8_lossy(&magic)
            );
            stream.write_all(&out).await?;
            linger(stream).await;
            return Ok(());
        }

        let mut buf = BytesMut::with_capacity(4096);
        let mut out = BytesMut::with_capacity(256);
        loop {
            let mut fatal = false;
            loop {
                match self.decoder.decode(&mut buf) {
                    Ok(Some(cmd)) => self.exec(cmd, &mut out),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!("[{}] - {e}", self.client);
                        put_error(&mut out, &e);
                        fatal = true;
                        break;
                    }
                }
            }
            if !out.is_empty() {
                stream.write_all(&out).await?;
                out.clear();
            }
            if fatal {
                linger(stream).await;
                return Ok(());
            }
            buf.reserve(4096);
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
    }

    fn exec(&mut self, cmd: LookupCommand, out: &mut BytesMut) {
        let now = self.lookupd.clock.now();
        match cmd {
            LookupCommand::Ping => {
                // A PING before IDENTIFY is answered but changes nothing (Go).
                if let Some(last) = self.lookupd.db().touch(&self.client, now) {
                    let since = Duration::from_nanos(now.saturating_sub(last));
                    tracing::debug!("CLIENT({}): pinged (last ping {since:?})", self.client);
                }
                put_response(out, OK);
            }
            LookupCommand::Identify(identity) => self.identify(identity, now, out),
            LookupCommand::Register { topic, channel } => {
                let mut db = self.lookupd.db();
                if let Some(ch) = &channel {
                    let r = Registration::channel(&topic, ch);
                    if db.add_producer(r.clone(), &self.client) {
                        tracing::info!("DB: client({}) REGISTER {r}", self.client);
                    }
                }
                let r = Registration::topic(&topic);
                if db.add_producer(r.clone(), &self.client) {
                    tracing::info!("DB: client({}) REGISTER {r}", self.client);
                }
                drop(db);
                put_response(out, OK);
            }
            LookupCommand::Unregister { topic, channel } => {
                let removed =
                    self.lookupd
                        .db()
                        .unregister(&self.client, &topic, channel.as_deref());
                for r in removed {
                    tracing::info!("DB: client({}) UNREGISTER {r}", self.client);
                }
                put_response(out, OK);
            }
        }
    }

    fn identify(&mut self, id: PeerIdentity, now: u64, out: &mut BytesMut) {
        tracing::info!(
            "CLIENT({}): IDENTIFY Address:{} TCP:{} HTTP:{} Version:{}",
            self.client,
            id.broadcast_address,
            id.tcp_port,
            id.http_port,
            id.version
        );
        let peer = PeerInfo {
            id: self.client.clone(),
            remote_address: self.client.clone(),
            hostname: id.hostname,
            broadcast_address: id.broadcast_address,
            tcp_port: id.tcp_port,
            http_port: id.http_port,
            version: id.version,
            topology_zone: id.topology_zone,
            topology_region: id.topology_region,
            last_update: now,
        };
        if self.lookupd.db().add_peer(peer) {
            tracing::info!(
                "DB: client({}) REGISTER {}",
                self.client,
                Registration::client()
            );
        }
        let response = IdentifyResponse {
            broadcast_address: self.lookupd.opts.broadcast_address.clone(),
            hostname: hostname(),
            http_port: self.lookupd.http_addr.port(),
            tcp_port: self.lookupd.tcp_addr.port(),
            version: crate::config::NSQ_VERSION.to_owned(),
        };
        put_response(out, &json::to_vec(&response));
    }

    /// Removes everything the peer registered (Go does this at the end of `IOLoop`).
    fn close(&mut self) {
        tracing::info!("CLIENT({}): closing", self.client);
        if !self.decoder.is_identified() {
            return;
        }
        let removed = self.lookupd.db().remove_peer(&self.client);
        for r in removed {
            tracing::info!("DB: client({}) UNREGISTER {r}", self.client);
        }
    }
}
