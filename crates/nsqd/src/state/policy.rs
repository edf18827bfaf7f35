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
//! `"drop_oldest"`, `"metrics": false` (leave the topic out of `/metrics`), and
//! `max_attempts` + `dead_letter_topic` (set together; the dead-letter topic may not be the
//! channel's own). The other keys are recognised and refused with "not yet supported", so
//! nobody believes a policy is in force when it is not.

use std::time::Duration;

use serde_json::{Map, Value};

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

const TOPIC_NOT_YET: [&str; 3] = [
    "dedup_window",
    "dedup_capacity",
    "dedup_false_positive_rate",
];

fn not_yet(field: &str) -> PolicyError {
    err(field, "not yet supported by this nsqd")
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

fn positive_int(field: &str, v: &Value) -> Result<u64, PolicyError> {
    match v.as_u64() {
        Some(n) if n > 0 => Ok(n),
        _ => Err(err(field, format!("expected a positive integer, got {v}"))),
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
                "ttl" => {
                    self.ttl = if v.is_null() {
                        None
                    } else {
                        Some(duration(k, v)?)
                    }
                }
                "max_depth" => {
                    self.max_depth = if v.is_null() {
                        None
                    } else {
                        Some(positive_int(k, v)?)
                    }
                }
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
                k if TOPIC_NOT_YET.contains(&k) => {
                    if !v.is_null() {
                        return Err(not_yet(k));
                    }
                }
                _ => return Err(err(k, "unknown field")),
            }
        }
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
        Value::Object(m)
    }

    /// From what [`TopicPolicy::to_json`] wrote (`nsqd.dat`).
    pub fn from_json(v: &Value) -> Result<TopicPolicy, PolicyError> {
        let Value::Object(m) = v else {
            return Err(PolicyError(format!("expected an object, got {}", kind(v))));
        };
        let mut p = TopicPolicy::default();
        p.merge_map(m)?;
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
                "ttl" => {
                    self.ttl = if v.is_null() {
                        None
                    } else {
                        Some(duration(k, v)?)
                    }
                }
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
        let Value::Object(m) = v else {
            return Err(PolicyError(format!("expected an object, got {}", kind(v))));
        };
        let mut p = ChannelPolicy::default();
        p.merge_map(m)?;
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
        assert!(e(r#"{"dedup_window":"10m"}"#).starts_with("dedup_window: not yet supported"));
        assert!(e("[1]").starts_with("body: expected a JSON object"));
        assert!(e("{").starts_with("body: invalid JSON"));
        assert!(e("").starts_with("body: "));
        // A refused body changes nothing (merged returns a new value).
        let p = t(r#"{"ttl":"1m"}"#).unwrap();
        assert!(p.merged(br#"{"ttl":"2m","bogus":1}"#).is_err());
        assert_eq!(p.ttl, Some(Duration::from_secs(60)));
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
