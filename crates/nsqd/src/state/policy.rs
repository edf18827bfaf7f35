//! Delivery policies, per topic and per channel (nsq-rs extension; NSQ has none): what
//! `POST /topic/config` and `POST /channel/config` accept, what `GET` answers, and what
//! `nsqd.dat` keeps (as an extra field Go nsqd 1.3 ignores when it takes a directory back).
//!
//! Every policy is opt-in: with none set, a topic or channel behaves exactly as in NSQ 1.3.
//!
//! The JSON shape (the names are a public interface; scripts rely on them):
//! - topic: `{"ttl":"1h","max_depth":1000000,"overflow":"reject"|"drop_oldest",
//!   "dedup_window":"10m","dedup_capacity":1000000,"dedup_false_positive_rate":0.0001}`
//! - channel: `{"max_attempts":5,"dead_letter_topic":"T.dead","ttl":"30m"}`
//!
//! A `POST` body is merged into the current policy: a key sets that field, `null` clears it,
//! absent keys stay. Unknown keys, wrong types, bad durations and bad names are refused with
//! a message that names the field.
//!
//! Built so far: `ttl` (topic and channel), `max_depth` with `overflow` `"reject"` or
//! `"drop_oldest"`, `"metrics": false` (leave the topic out of `/metrics`),
//! `max_attempts` + `dead_letter_topic` (set together; the dead-letter topic may not be the
//! channel's own), and the dedup window (see [`crate::state::dedup`]).
//!
//! Dedup keys: `dedup_window` (a positive Go duration) turns the dedup window on, `null`
//! turns it off (and clears the other two). `dedup_capacity` (a positive integer, distinct
//! messages per window, default 1,000,000) and `dedup_false_positive_rate` (a number in
//! (0, 0.5), default 0.0001) need a window, set in the same body or before; `null` puts
//! them back to their defaults. A configuration whose filter would need more than 512 MiB
//! per generation is refused (naming `dedup_capacity`). `GET` shows all three once a window
//! is set. Any change of the three rebuilds the filter empty; other changes keep it.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::state::dedup::{self, DedupConfig};

/// What `overflow` says to do when a publish would take a channel past `max_depth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Refuse the whole publish (`E_PUB_FAILED` / HTTP 503).
    #[default]
    Reject,
    /// Accept it and drop the oldest ready messages of every channel it takes past the limit
    /// (counted as `dropped_count`).
    DropOldest,
}

/// A topic's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicPolicy {
    /// The dedup window: repeats of a message seen within it are acknowledged, not queued.
    pub dedup: Option<DedupConfig>,
    /// Messages older than this are never delivered, on any channel.
    pub ttl: Option<Duration>,
    /// No channel (nor the channel-less topic) may hold more ready messages than this.
    pub max_depth: Option<u64>,
    /// What happens at `max_depth`.
    pub overflow: Overflow,
    /// `"metrics": false` leaves the topic and its channels out of `/metrics` (cardinality
    /// at many topics); `None` (the default) is true.
    pub metrics: Option<bool>,
}

/// A channel's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelPolicy {
    /// Messages older than this are never delivered on this channel (at most the topic's).
    pub ttl: Option<Duration>,
    /// A message delivered this many times goes to `dead_letter_topic` instead of back to
    /// the queue after its next REQ or timeout. Set together with `dead_letter_topic`.
    pub max_attempts: Option<u16>,
    /// Where such messages go (a topic on this node, created when needed).
    pub dead_letter_topic: Option<String>,
}

/// Why a policy was refused (the HTTP 400 `message`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

fn err(field: &str, what: impl std::fmt::Display) -> PolicyError {
    PolicyError(format!("{field}: {what}"))
}

/// Parses a `POST` body: a JSON object.
fn object(body: &[u8]) -> Result<Map<String, Value>, PolicyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(PolicyError(
            "body: expected a JSON object, got nothing".into(),
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(PolicyError(format!(
            "body: expected a JSON object, got {}",
            kind(&other)
        ))),
        Err(e) => Err(PolicyError(format!("body: invalid JSON: {e}"))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A Go duration string, positive.
fn duration(field: &str, v: &Value) -> Result<Duration, PolicyError> {
    let Value::String(s) = v else {
        return Err(err(
            field,
            format!(
                "expected a duration string such as \"30m\", got {}",
                kind(v)
            ),
        ));
    };
    let d = nsq_cli::parse_go_duration(s).map_err(|e| err(field, e))?;
    if d.is_zero() {
        return Err(err(field, "must be positive (use null to clear it)"));
    }
    Ok(d)
}

/// A field that `null` clears: `None` for null, else what `parse` makes of the value.
fn nullable<T>(
    v: &Value,
    parse: impl FnOnce(&Value) -> Result<T, PolicyError>,
) -> Result<Option<T>, PolicyError> {
    if v.is_null() {
        Ok(None)
    } else {
        parse(v).map(Some)
    }
}

/// A policy as `nsqd.dat` stores it (what `to_json` wrote): an object.
fn stored(v: &Value) -> Result<&Map<String, Value>, PolicyError> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(PolicyError(format!("expected an object, got {}", kind(v)))),
    }
}

fn positive_int(field: &str, v: &Value) -> Result<u64, PolicyError> {
    match v.as_u64() {
        Some(n) if n > 0 => Ok(n),
        _ => Err(err(field, format!("expected a positive integer, got {v}"))),
    }
}

/// A false-positive rate: a number in (0, 0.5).
fn rate(field: &str, v: &Value) -> Result<f64, PolicyError> {
    match v.as_f64() {
        Some(p) if p > 0.0 && p < 0.5 => Ok(p),
        _ => Err(err(
            field,
            format!("expected a number between 0 and 0.5 (exclusive), got {v}"),
        )),
    }
}

impl TopicPolicy {
    /// `self` with a `POST` body merged in.
    pub fn merged(&self, body: &[u8]) -> Result<TopicPolicy, PolicyError> {
        let mut p = self.clone();
        p.merge_map(&object(body)?)?;
        Ok(p)
    }

    fn merge_map(&mut self, m: &Map<String, Value>) -> Result<(), PolicyError> {
        for (k, v) in m {
            match k.as_str() {
                "ttl" => self.ttl = nullable(v, |v| duration(k, v))?,
                // Merged below, together.
                "dedup_window" | "dedup_capacity" | "dedup_false_positive_rate" => {}
                "max_depth" => self.max_depth = nullable(v, |v| positive_int(k, v))?,
                "overflow" => match v {
                    Value::Null => self.overflow = Overflow::Reject,
                    Value::String(s) if s == "reject" => self.overflow = Overflow::Reject,
                    Value::String(s) if s == "drop_oldest" => self.overflow = Overflow::DropOldest,
                    _ => {
                        return Err(err(
                            k,
                            format!("expected \"reject\" or \"drop_oldest\", got {v}"),
                        ))
                    }
                },
                "metrics" => {
                    self.metrics = match v {
                        Value::Null | Value::Bool(true) => None,
                        Value::Bool(false) => Some(false),
                        _ => return Err(err(k, format!("expected true or false, got {v}"))),
                    }
                }
                _ => return Err(err(k, "unknown field")),
            }
        }
        self.merge_dedup(m)
    }

    /// The three `dedup_*` keys (see the module doc).
    fn merge_dedup(&mut self, m: &Map<String, Value>) -> Result<(), PolicyError> {
        let (w, c, r) = (
            m.get("dedup_window"),
            m.get("dedup_capacity"),
            m.get("dedup_false_positive_rate"),
        );
        if w.is_none() && c.is_none() && r.is_none() {
            return Ok(());
        }
        let mut d = self.dedup;
        match w {
            Some(Value::Null) => d = None,
            Some(v) => {
                let window = duration("dedup_window", v)?;
                d = Some(match d {
                    Some(old) => DedupConfig { window, ..old },
                    None => DedupConfig::with_window(window),
                });
            }
            None => {}
        }
        let needs_window = |field: &str| {
            err(
                field,
                "needs dedup_window (set it in the same body or before)",
            )
        };
        if let Some(v) = c {
            match (&mut d, v.is_null()) {
                (Some(d), true) => d.capacity = dedup::DEFAULT_CAPACITY,
                (Some(d), false) => d.capacity = positive_int("dedup_capacity", v)?,
                (None, true) => {}
                (None, false) => return Err(needs_window("dedup_capacity")),
            }
        }
        if let Some(v) = r {
            match (&mut d, v.is_null()) {
                (Some(d), true) => d.false_positive_rate = dedup::DEFAULT_FALSE_POSITIVE_RATE,
                (Some(d), false) => d.false_positive_rate = rate("dedup_false_positive_rate", v)?,
                (None, true) => {}
                (None, false) => return Err(needs_window("dedup_false_positive_rate")),
            }
        }
        if let Some(d) = &d {
            let bits = d.bits_per_generation();
            if bits > dedup::MAX_BITS_PER_GENERATION {
                return Err(err(
                    "dedup_capacity",
                    format!(
                        "{} messages at false positive rate {} need {} MiB per generation \
                         (2 generations), more than the {} MiB limit",
                        d.capacity,
                        d.false_positive_rate,
                        bits.div_ceil(8 << 20),
                        dedup::MAX_BITS_PER_GENERATION / (8 << 20)
                    ),
                ));
            }
        }
        self.dedup = d;
        Ok(())
    }

    /// Whether nothing is set (the topic behaves as in NSQ).
    pub fn is_empty(&self) -> bool {
        *self == TopicPolicy::default()
    }

    /// The JSON `GET` answers (only the fields that are set; `{}` for none).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(d) = self.ttl {
            m.insert("ttl".into(), nsq_cli::format_go_duration(d).into());
        }
        if let Some(n) = self.max_depth {
            m.insert("max_depth".into(), n.into());
            m.insert(
                "overflow".into(),
                match self.overflow {
                    Overflow::Reject => "reject",
                    Overflow::DropOldest => "drop_oldest",
                }
                .into(),
            );
        }
        if self.metrics == Some(false) {
            m.insert("metrics".into(), false.into());
        }
        if let Some(d) = &self.dedup {
            m.insert(
                "dedup_window".into(),
                nsq_cli::format_go_duration(d.window).into(),
            );
            m.insert("dedup_capacity".into(), d.capacity.into());
            m.insert(
                "dedup_false_positive_rate".into(),
                d.false_positive_rate.into(),
            );
        }
        Value::Object(m)
    }

    /// From what [`TopicPolicy::to_json`] wrote (`nsqd.dat`).
    pub fn from_json(v: &Value) -> Result<TopicPolicy, PolicyError> {
        let mut p = TopicPolicy::default();
        p.merge_map(stored(v)?)?;
        Ok(p)
    }
}

impl ChannelPolicy {
    /// `self` with a `POST` body merged in. `topic_ttl` is the topic's ttl, which a channel's
    /// may not exceed.
    pub fn merged(
        &self,
        body: &[u8],
        topic: &str,
        topic_ttl: Option<Duration>,
    ) -> Result<ChannelPolicy, PolicyError> {
        let mut p = self.clone();
        p.merge_map(&object(body)?)?;
        match (&p.max_attempts, &p.dead_letter_topic) {
            (Some(_), None) => {
                return Err(err(
                    "max_attempts",
                    "needs a dead_letter_topic to send messages to",
                ))
            }
            (None, Some(_)) => return Err(err("dead_letter_topic", "needs max_attempts")),
            (_, Some(t)) if t == topic => {
                return Err(err(
                    "dead_letter_topic",
                    "must not be the channel's own topic",
                ))
            }
            _ => {}
        }
        if let (Some(c), Some(t)) = (p.ttl, topic_ttl) {
            if c > t {
                return Err(err(
                    "ttl",
                    format!(
                        "{} is longer than the topic's ttl {}",
                        nsq_cli::format_go_duration(c),
                        nsq_cli::format_go_duration(t)
                    ),
                ));
            }
        }
        Ok(p)
    }

    fn merge_map(&mut self, m: &Map<String, Value>) -> Result<(), PolicyError> {
        for (k, v) in m {
            match k.as_str() {
                "ttl" => self.ttl = nullable(v, |v| duration(k, v))?,
                "max_attempts" => {
                    self.max_attempts = match v {
                        Value::Null => None,
                        _ => match v.as_u64() {
                            Some(n @ 1..=65535) => Some(n as u16),
                            _ => {
                                return Err(err(
                                    k,
                                    format!("expected an integer from 1 to 65535, got {v}"),
                                ))
                            }
                        },
                    }
                }
                "dead_letter_topic" => {
                    self.dead_letter_topic = match v {
                        Value::Null => None,
                        Value::String(t)
                            if nsq_protocol::names::is_valid_topic_name(t.as_bytes()) =>
                        {
                            Some(t.clone())
                        }
                        _ => return Err(err(k, format!("not a valid topic name: {v}"))),
                    }
                }
                _ => return Err(err(k, "unknown field")),
            }
        }
        Ok(())
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == ChannelPolicy::default()
    }

    /// The JSON `GET` answers.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(n) = self.max_attempts {
            m.insert("max_attempts".into(), n.into());
        }
        if let Some(t) = &self.dead_letter_topic {
            m.insert("dead_letter_topic".into(), t.clone().into());
        }
        if let Some(d) = self.ttl {
            m.insert("ttl".into(), nsq_cli::format_go_duration(d).into());
        }
        Value::Object(m)
    }

    /// From what [`ChannelPolicy::to_json`] wrote.
    pub fn from_json(v: &Value) -> Result<ChannelPolicy, PolicyError> {
        let mut p = ChannelPolicy::default();
        p.merge_map(stored(v)?)?;
        Ok(p)
    }
}

/// The ttl in force on a channel: the shorter of its own and its topic's.
pub fn effective_ttl(topic: Option<Duration>, channel: Option<Duration>) -> Option<Duration> {
    match (topic, channel) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(body: &str) -> Result<TopicPolicy, PolicyError> {
        TopicPolicy::default().merged(body.as_bytes())
    }

    #[test]
    fn topic_round_trip_and_merge() {
        let p = t(r#"{"ttl":"1h","max_depth":1000,"overflow":"reject"}"#).unwrap();
        assert_eq!(p.ttl, Some(Duration::from_secs(3600)));
        assert_eq!(p.max_depth, Some(1000));
        assert_eq!(
            p.to_json(),
            json!({"ttl":"1h0m0s","max_depth":1000,"overflow":"reject"})
        );
        assert_eq!(TopicPolicy::from_json(&p.to_json()).unwrap(), p);
        // Absent keys stay, null clears.
        let q = p.merged(br#"{"max_depth":null}"#).unwrap();
        assert_eq!(q.ttl, p.ttl);
        assert_eq!(q.max_depth, None);
        assert_eq!(q.to_json(), json!({"ttl":"1h0m0s"}));
        assert!(q.merged(br#"{"ttl":null}"#).unwrap().is_empty());
        assert_eq!(TopicPolicy::default().to_json(), json!({}));
    }

    #[test]
    fn refusals_name_the_field() {
        let e = |body: &str| t(body).unwrap_err().0;
        assert_eq!(e(r#"{"tll":"1h"}"#), "tll: unknown field");
        assert!(
            e(r#"{"ttl":"an hour"}"#).starts_with("ttl: "),
            "{}",
            e(r#"{"ttl":"x"}"#)
        );
        assert!(e(r#"{"ttl":3600}"#).starts_with("ttl: expected a duration"));
        assert!(e(r#"{"ttl":"0s"}"#).starts_with("ttl: must be positive"));
        assert!(e(r#"{"max_depth":-1}"#).starts_with("max_depth: expected a positive integer"));
        assert!(e(r#"{"max_depth":0}"#).starts_with("max_depth: "));
        assert!(e(r#"{"overflow":"spill"}"#).starts_with("overflow: expected"));
        assert!(e("[1]").starts_with("body: expected a JSON object"));
        assert!(e("{").starts_with("body: invalid JSON"));
        assert!(e("").starts_with("body: "));
        // A refused body changes nothing (merged returns a new value).
        let p = t(r#"{"ttl":"1m"}"#).unwrap();
        assert!(p.merged(br#"{"ttl":"2m","bogus":1}"#).is_err());
        assert_eq!(p.ttl, Some(Duration::from_secs(60)));
    }

    #[test]
    fn dedup_keys_merge_with_defaults_and_refusals_name_the_field() {
        let p = t(r#"{"dedup_window":"10m"}"#).unwrap();
        let want = DedupConfig {
            window: Duration::from_secs(600),
            capacity: 1_000_000,
            false_positive_rate: 0.0001,
        };
        assert_eq!(p.dedup, Some(want));
        assert_eq!(
            p.to_json(),
            json!({"dedup_window":"10m0s","dedup_capacity":1000000,
                   "dedup_false_positive_rate":0.0001})
        );
        assert_eq!(TopicPolicy::from_json(&p.to_json()).unwrap(), p);
        // Capacity and rate merge into a window set before; null puts back the default.
        let q = p
            .merged(br#"{"dedup_capacity":5000,"dedup_false_positive_rate":0.01}"#)
            .unwrap();
        assert_eq!(q.dedup.unwrap().capacity, 5000);
        assert_eq!(q.dedup.unwrap().false_positive_rate, 0.01);
        assert_eq!(q.dedup.unwrap().window, want.window);
        let r = q
            .merged(br#"{"dedup_window":"1s","dedup_capacity":null}"#)
            .unwrap();
        assert_eq!(r.dedup.unwrap().capacity, 1_000_000);
        assert_eq!(r.dedup.unwrap().false_positive_rate, 0.01);
        assert_eq!(r.dedup.unwrap().window, Duration::from_secs(1));
        // Other keys leave it alone; a null window clears all three.
        assert_eq!(r.merged(br#"{"ttl":"1h"}"#).unwrap().dedup, r.dedup);
        assert!(r.merged(br#"{"dedup_window":null}"#).unwrap().is_empty());
        assert!(t(r#"{"dedup_capacity":null}"#).unwrap().is_empty());

        let e = |body: &str| t(body).unwrap_err().0;
        assert_eq!(
            e(r#"{"dedup_capacity":10}"#),
            "dedup_capacity: needs dedup_window (set it in the same body or before)"
        );
        assert!(
            e(r#"{"dedup_window":null,"dedup_false_positive_rate":0.1}"#)
                .starts_with("dedup_false_positive_rate: needs dedup_window")
        );
        assert!(e(r#"{"dedup_window":"0s"}"#).starts_with("dedup_window: must be positive"));
        assert!(e(r#"{"dedup_window":60}"#).starts_with("dedup_window: expected a duration"));
        assert!(e(r#"{"dedup_window":"1m","dedup_capacity":0}"#)
            .starts_with("dedup_capacity: expected a positive integer"));
        for bad in ["0", "0.5", "1", "-0.1", "\"0.1\""] {
            let body = format!(r#"{{"dedup_window":"1m","dedup_false_positive_rate":{bad}}}"#);
            assert!(
                e(&body).starts_with("dedup_false_positive_rate: expected a number between"),
                "{bad}: {}",
                e(&body)
            );
        }
        let big = e(r#"{"dedup_window":"1m","dedup_capacity":1000000000}"#);
        assert!(
            big.starts_with("dedup_capacity: 1000000000 messages at false positive rate 0.0001"),
            "{big}"
        );
        assert!(big.contains("MiB limit"), "{big}");
    }

    #[test]
    fn channel_ttl_is_at_most_the_topics() {
        let hour = Some(Duration::from_secs(3600));
        let c = ChannelPolicy::default();
        let p = c.merged(br#"{"ttl":"30m"}"#, "t", hour).unwrap();
        assert_eq!(p.to_json(), json!({"ttl":"30m0s"}));
        let e = c.merged(br#"{"ttl":"2h"}"#, "t", hour).unwrap_err().0;
        assert_eq!(e, "ttl: 2h0m0s is longer than the topic's ttl 1h0m0s");
        assert!(c.merged(br#"{"ttl":"2h"}"#, "t", None).is_ok());
        assert_eq!(
            c.merged(br#"{"ttl":"1m","x":1}"#, "t", None).unwrap_err().0,
            "x: unknown field"
        );
    }

    #[test]
    fn dead_letters_need_both_fields_and_another_topic() {
        let c = ChannelPolicy::default();
        let m = |b: &str| c.merged(b.as_bytes(), "jobs", None);
        let p = m(r#"{"max_attempts":5,"dead_letter_topic":"jobs.dead"}"#).unwrap();
        assert_eq!(
            p.to_json(),
            json!({"max_attempts":5,"dead_letter_topic":"jobs.dead"})
        );
        assert_eq!(ChannelPolicy::from_json(&p.to_json()).unwrap(), p);
        let e = |b: &str| m(b).unwrap_err().0;
        assert!(e(r#"{"max_attempts":5}"#).starts_with("max_attempts: needs a dead_letter_topic"));
        assert!(
            e(r#"{"dead_letter_topic":"x"}"#).starts_with("dead_letter_topic: needs max_attempts")
        );
        assert!(e(r#"{"max_attempts":5,"dead_letter_topic":"jobs"}"#).contains("own topic"));
        assert!(e(r#"{"max_attempts":5,"dead_letter_topic":"a b"}"#)
            .starts_with("dead_letter_topic: not a valid topic name"));
        assert!(e(r#"{"max_attempts":0,"dead_letter_topic":"x"}"#)
            .starts_with("max_attempts: expected an integer"));
        let q = p.merged(
            br#"{"max_attempts":null,"dead_letter_topic":null}"#,
            "jobs",
            None,
        );
        assert!(q.unwrap().is_empty());
    }

    #[test]
    fn effective_ttl_is_the_shorter() {
        let m = |n| Some(Duration::from_secs(n));
        assert_eq!(effective_ttl(m(60), m(30)), m(30));
        assert_eq!(effective_ttl(m(30), m(60)), m(30));
        assert_eq!(effective_ttl(None, m(60)), m(60));
        assert_eq!(effective_ttl(m(60), None), m(60));
        assert_eq!(effective_ttl(None, None), None);
    }
}
