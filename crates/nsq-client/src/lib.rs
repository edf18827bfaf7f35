//! An async ([Tokio](https://tokio.rs)) client for NSQ, wire compatible with NSQ 1.3 and
//! modelled on go-nsq: a [`Producer`] that publishes to one nsqd and a [`Consumer`] that
//! subscribes to a topic/channel on many nsqds and is a [`futures::Stream`] of [`Message`]s.
//!
//! All encoding and decoding goes through the sans-I/O `nsq-protocol` crate. Options use
//! go-nsq's names and defaults ([`Config`], [`Config::set`]). Errors are one
//! [`enum@Error`] type; a server error keeps nsqd's `E_*` code and text.
//!
//! TLS (rustls), snappy and deflate compression and AUTH are negotiated as go-nsq does:
//! ask for them in [`Config`] (`tls_v1`, `tls_root_ca_file`, `tls_cert`/`tls_key`,
//! `snappy`, `deflate`/`deflate_level`, `auth_secret`) and every connection upgrades in place
//! after IDENTIFY (TLS first, then compression, then AUTH). A server that requires AUTH when no
//! secret is set is [`Error::Auth`]; a failed handshake is [`Error::Tls`]; a refused secret is
//! nsqd's own [`Error::Server`] (`E_UNAUTHORIZED`, `E_AUTH_FAILED`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), nsq_client::Error> {
//! let mut config = nsq_client::Config::new();
//! config.set("tls_v1", "true")?;
//! config.set("tls_root_ca_file", "/etc/nsq/ca.pem")?;
//! config.set("snappy", "true")?;
//! config.set("auth_secret", "s3cret")?;
//! let producer = nsq_client::Producer::connect("nsqd.example:4150", config).await?;
//! producer.publish("events", "over TLS, compressed").await?;
//! # Ok(()) }
//! ```
//!
//! # Publishing
//!
//! ```no_run
//! use std::time::Duration;
//! use nsq_client::{Config, Producer};
//!
//! # async fn demo() -> Result<(), nsq_client::Error> {
//! let producer = Producer::connect("127.0.0.1:4150", Config::new()).await?;
//! producer.publish("events", b"hello".as_slice()).await?;
//! producer.multi_publish("events", vec!["one", "two", "three"]).await?;
//! producer.deferred_publish("events", Duration::from_secs(10), "later").await?;
//!
//! // A Producer is cheap to clone; concurrent publishes are pipelined on one connection.
//! let tasks: Vec<_> = (0..100)
//!     .map(|i| {
//!         let p = producer.clone();
//!         tokio::spawn(async move { p.publish("events", format!("msg {i}")).await })
//!     })
//!     .collect();
//! for t in tasks {
//!     t.await.expect("task panicked")?;
//! }
//! producer.stop().await;
//! # Ok(()) }
//! ```
//!
//! # Consuming
//!
//! ```no_run
//! use futures::StreamExt;
//! use nsq_client::{Config, Consumer};
//!
//! # async fn demo() -> Result<(), nsq_client::Error> {
//! let mut config = Config::new();
//! config.max_in_flight = 10;
//! let mut consumer = Consumer::new("events", "archive", config)?;
//! consumer.connect_to_nsqd("127.0.0.1:4150").await?;
//! // and/or: consumer.connect_to_lookupd("127.0.0.1:4161").await?;
//!
//! while let Some(msg) = consumer.next().await {
//!     println!("{}", String::from_utf8_lossy(msg.body()));
//!     msg.finish(); // or msg.requeue(None), or msg.touch() while working
//! }
//! # Ok(()) }
//! ```
//!
//! The consumer composes with stream combinators. The stream ends after the consumer has
//! stopped, and dropping the consumer (here: when `take` is done) stops it gracefully in the
//! background:
//!
//! ```no_run
//! use futures::StreamExt;
//! # async fn demo() -> Result<(), nsq_client::Error> {
//! let consumer = nsq_client::Consumer::new("events", "sample", nsq_client::Config::new())?;
//! consumer.connect_to_nsqd("127.0.0.1:4150").await?;
//! let first_ten: Vec<nsq_client::Message> = consumer.take(10).collect().await;
//! for msg in first_ten {
//!     msg.finish();
//! }
//! # Ok(()) }
//! ```
//!
//! # Processing messages concurrently, on all cores
//!
//! `max_in_flight` bounds how many messages nsqd hands out at once; to actually process
//! them in parallel, run each one on its own Tokio task (Tokio's multi-threaded runtime
//! spreads tasks over all cores) or, for CPU-heavy work, on the blocking pool. A
//! [`StopHandle`] stops the consumer while a combinator owns it.
//!
//! ```no_run
//! use futures::StreamExt;
//! use nsq_client::{Config, Consumer};
//!
//! fn is_prime(n: u64) -> bool {
//!     n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
//! }
//!
//! # async fn demo() -> Result<(), nsq_client::Error> {
//! let workers = std::thread::available_parallelism().map_or(4, |n| n.get());
//! let mut config = Config::new();
//! config.max_in_flight = (workers * 4) as u64;
//! let consumer = Consumer::new("numbers", "primes", config)?;
//! consumer.connect_to_nsqd("127.0.0.1:4150").await?;
//!
//! let stop = consumer.stop_handle();
//! tokio::spawn(async move {
//!     let _ = tokio::signal::ctrl_c().await;
//!     stop.stop(); // CLS, wait for in-flight answers, then the stream ends
//! });
//!
//! // Up to `workers * 4` messages in progress; the CPU work runs on the blocking pool,
//! // which uses every core. (Equivalently: `tokio::spawn` one task per message.)
//! consumer
//!     .for_each_concurrent(workers * 4, |msg| async move {
//!         let text = String::from_utf8_lossy(msg.body()).into_owned();
//!         let Ok(n) = text.trim().parse::<u64>() else {
//!             msg.finish(); // not a number: drop it
//!             return;
//!         };
//!         match tokio::task::spawn_blocking(move || is_prime(n)).await {
//!             Ok(prime) => {
//!                 if prime {
//!                     println!("{n}");
//!                 }
//!                 msg.finish();
//!             }
//!             Err(_) => msg.requeue(None),
//!         }
//!     })
//!     .await;
//! # Ok(()) }
//! ```
//!
//! Note that `for_each_concurrent` alone runs all its futures on the *current* task (one
//! core at a time); the parallelism above comes from `spawn_blocking` (or `tokio::spawn`).

mod config;
mod conn;
mod consumer;
mod error;
mod lookupd;
mod producer;
mod tls;

pub use config::Config;
pub use consumer::{Consumer, ConsumerStats, Message, StopHandle};
pub use error::{Error, Result};
pub use lookupd::{parse_lookup_response, LookupProducer};
pub use nsq_protocol::{ErrorCode, MessageId};
pub use producer::Producer;
