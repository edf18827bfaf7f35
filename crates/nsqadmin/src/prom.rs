//! `--prometheus-url` (nsq-rs): the topic and channel charts and the topics list's rates
//! come from a real Prometheus server that scrapes the nsqds' `/metrics`, instead of
//! nsqadmin's own sampler (which is then off). Same JSON as the sampler's
//! (`/api/history/...`, `/api/rates`), so the UI does not care where the points come from.
//!
//! Queries (`T`, `C` are escaped label values; sums run over every nsqd Prometheus scrapes):
//! - topic: `sum(nsq_topic_messages_total{topic="T"})`, `sum(nsq_topic_depth{topic="T"})`;
//! - its channels: `sum by (channel) (nsq_channel_messages_total{topic="T"})`, likewise
//!   `nsq_channel_depth` and `nsq_channel_in_flight`;
//! - the topics list: instant `sum by (topic) (...)` of the same counters and depths, the rate
//!   over the last two steps from the counter's range.
//!
//! The range is the sampler's: `--stats-sample-count` points, `--stats-sample-interval`
//! apart, ending now; Prometheus answers at exactly those steps, so the points line up
//! across series. Rates are computed from consecutive counter values as the sampler does
//! (a counter that went backwards, e.g. an nsqd restart, gives no rate for that step).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::client::{query_escape, Client};
use crate::history::{points, Latest, Point, Sample};

/// Where and how to ask.
#[derive(Debug, Clone)]
pub struct Prom {
    /// The server's base URL (`http://host:9090`, no trailing slash).
    pub base: String,
    /// Step between points.
    pub step: Duration,
    /// Points per series.
    pub count: usize,
}

/// A label value inside a PromQL string literal.
pub fn label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One series of a range query: its labels and `(unix ms, value)` points.
type Series = (BTreeMap<String, String>, Vec<(i64, f64)>);

/// Parses Prometheus' `/api/v1/query_range` (matrix) or `/api/v1/query` (vector) answer.
fn parse(body: &[u8]) -> Result<Vec<Series>, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("Prometheus answered non-JSON: {e}"))?;
    if v["status"] != "success" {
        return Err(format!(
            "Prometheus: {} {}",
            v["errorType"].as_str().unwrap_or("error"),
            v["error"].as_str().unwrap_or("")
        ));
    }
    let point = |p: &Value| -> Option<(i64, f64)> {
        let ts = p.get(0)?.as_f64()?;
        let v = p.get(1)?.as_str()?.parse::<f64>().ok()?;
        #[allow(clippy::cast_possible_truncation)]
        Some(((ts * 1000.0).round() as i64, v))
    };
    let mut out = Vec::new();
    for r in v["data"]["result"].as_array().into_iter().flatten() {
        let labels = r["metric"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let pts: Vec<(i64, f64)> = match r.get("values") {
            Some(vals) => vals
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(point)
                .collect(),
            None => r.get("value").and_then(point).into_iter().collect(),
        };
        out.push((labels, pts));
    }
    Ok(out)
}

impl Prom {
    async fn range(
        &self,
        client: &Client,
        query: &str,
        now_ms: i64,
    ) -> Result<Vec<Series>, String> {
        let step_s = self.step.as_secs_f64().max(0.001);
        let end = now_ms as f64 / 1000.0;
        // Align to the step so consecutive page loads ask for the same instants.
        let end = (end / step_s).floor() * step_s;
        let start = end - step_s * (self.count.saturating_sub(1)) as f64;
        let url = format!(
            "{}/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={step_s}",
            self.base,
            query_escape(query)
        );
        let body = client.get_url(&url).await.map_err(|e| e.to_string())?;
        parse(&body)
    }

    /// One series' `(ms, value)` map, summed by `key` label (`""`: a single series).
    async fn by(
        &self,
        client: &Client,
        query: &str,
        key: &str,
        now_ms: i64,
    ) -> Result<BTreeMap<String, BTreeMap<i64, f64>>, String> {
        let mut out: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
        for (labels, pts) in self.range(client, query, now_ms).await? {
            let k = labels.get(key).cloned().unwrap_or_default();
            out.entry(k).or_default().extend(pts);
        }
        Ok(out)
    }

    /// A topic's points and its channels' (as `History::topic`).
    pub async fn topic(
        &self,
        client: &Client,
        topic: &str,
        now_ms: i64,
    ) -> Result<(Vec<Point>, Vec<(String, Vec<Point>)>), String> {
        let t = label_value(topic);
        let msgs = self
            .by(
                client,
                &format!("sum(nsq_topic_messages_total{{topic={t}}})"),
                "",
                now_ms,
            )
            .await?;
        let depth = self
            .by(
                client,
                &format!("sum(nsq_topic_depth{{topic={t}}})"),
                "",
                now_ms,
            )
            .await?;
        let topic_points = samples(msgs.get(""), depth.get(""), None);
        let sel = format!("{{topic={t}}}");
        let cm = self
            .by(
                client,
                &format!("sum by (channel) (nsq_channel_messages_total{sel})"),
                "channel",
                now_ms,
            )
            .await?;
        let cd = self
            .by(
                client,
                &format!("sum by (channel) (nsq_channel_depth{sel})"),
                "channel",
                now_ms,
            )
            .await?;
        let ci = self
            .by(
                client,
                &format!("sum by (channel) (nsq_channel_in_flight{sel})"),
                "channel",
                now_ms,
            )
            .await?;
        let channels = cm
            .iter()
            .map(|(c, m)| (c.clone(), samples(Some(m), cd.get(c), ci.get(c))))
            .collect();
        Ok((topic_points, channels))
    }

    /// A channel's points.
    pub async fn channel(
        &self,
        client: &Client,
        topic: &str,
        channel: &str,
        now_ms: i64,
    ) -> Result<Vec<Point>, String> {
        let sel = format!(
            "{{topic={},channel={}}}",
            label_value(topic),
            label_value(channel)
        );
        let m = self
            .by(
                client,
                &format!("sum(nsq_channel_messages_total{sel})"),
                "",
                now_ms,
            )
            .await?;
        let d = self
            .by(client, &format!("sum(nsq_channel_depth{sel})"), "", now_ms)
            .await?;
        let i = self
            .by(
                client,
                &format!("sum(nsq_channel_in_flight{sel})"),
                "",
                now_ms,
            )
            .await?;
        Ok(samples(m.get(""), d.get(""), i.get("")))
    }

    /// Every topic's latest rate, depth and message count (as `History::latest`).
    pub async fn latest(
        &self,
        client: &Client,
        now_ms: i64,
    ) -> Result<Vec<(String, Latest)>, String> {
        // The last two steps of each topic's counter give its rate.
        let short = Prom {
            count: 2,
            ..self.clone()
        };
        let m = short
            .by(
                client,
                "sum by (topic) (nsq_topic_messages_total)",
                "topic",
                now_ms,
            )
            .await?;
        let d = short
            .by(client, "sum by (topic) (nsq_topic_depth)", "topic", now_ms)
            .await?;
        Ok(m.iter()
            .filter_map(|(t, m)| {
                let pts = samples(Some(m), d.get(t), None);
                let last = pts.last()?;
                Some((
                    t.clone(),
                    Latest {
                        rate: last.rate,
                        depth: last.depth,
                        message_count: last.message_count,
                    },
                ))
            })
            .collect())
    }
}

/// Samples at the counter's instants (a depth or in-flight value missing at an instant
/// counts as 0), then points with rates.
fn samples(
    msgs: Option<&BTreeMap<i64, f64>>,
    depth: Option<&BTreeMap<i64, f64>>,
    in_flight: Option<&BTreeMap<i64, f64>>,
) -> Vec<Point> {
    let at = |m: Option<&BTreeMap<i64, f64>>, ts: &i64| -> i64 {
        #[allow(clippy::cast_possible_truncation)]
        m.and_then(|m| m.get(ts)).map_or(0, |v| v.round() as i64)
    };
    let ss: Vec<Sample> = msgs
        .into_iter()
        .flatten()
        .map(|(ts, v)| Sample {
            ts_ms: *ts,
            #[allow(clippy::cast_possible_truncation)]
            message_count: v.round() as i64,
            depth: at(depth, ts),
            in_flight: at(in_flight, ts),
        })
        .collect();
    points(&ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a"), r#""a""#);
        assert_eq!(label_value(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn parses_matrices_and_vectors_and_errors() {
        let m = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"channel":"c"},"values":[[1700000000,"5"],[1700000001.5,"7"]]}]}}"#;
        let s = parse(m).unwrap();
        assert_eq!(s[0].0["channel"], "c");
        assert_eq!(
            s[0].1,
            vec![(1_700_000_000_000, 5.0), (1_700_000_001_500, 7.0)]
        );
        let v = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{},"value":[1700000000,"3"]}]}}"#;
        assert_eq!(parse(v).unwrap()[0].1, vec![(1_700_000_000_000, 3.0)]);
        let e = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert_eq!(parse(e).unwrap_err(), "Prometheus: bad_data parse error");
        assert!(parse(b"<html>").is_err());
    }

    #[test]
    fn samples_line_up_and_rate_like_the_sampler() {
        let m: BTreeMap<i64, f64> = [(1000, 10.0), (2000, 30.0), (3000, 20.0)].into();
        let d: BTreeMap<i64, f64> = [(1000, 4.0), (3000, 1.0)].into();
        let p = samples(Some(&m), Some(&d), None);
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].rate, p[0].depth), (None, 4));
        assert_eq!((p[1].rate, p[1].depth), (Some(20.0), 0));
        assert_eq!(p[2].rate, None, "a counter that went back has no rate");
    }
}
