//! What the gateways say about their overload state while a run goes on:
//! `GET /overload` on each admin listener, once a second.
//!
//! The lab does not depend on the endpoint's exact shape: it looks for
//! every JSON object with a numeric `limit` (one per cluster) and reads
//! `in_flight`, `queued`, `min_rtt_ms`, `rtt_ms` and `shed` beside it
//! (`shed` a number, or an object of counts by class, summed). A gateway
//! without the endpoint (404) is asked no more.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// One cluster's state on one instance, at one second of the run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    pub second: u64,
    pub instance: usize,
    pub cluster: String,
    pub limit: f64,
    pub in_flight: f64,
    pub queued: f64,
    pub min_rtt_ms: f64,
    pub rtt_ms: f64,
    /// Refused so far, every class together.
    pub shed: f64,
}

fn number(v: &Value, key: &str) -> f64 {
    match v.get(key) {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(Value::Object(m)) => m.values().filter_map(Value::as_f64).sum(),
        _ => 0.0,
    }
}

/// Every cluster's state in an `/overload` answer: objects with a numeric
/// `limit`, named by their `cluster` or `name` field, or by their key.
pub fn parse(body: &Value, second: u64, instance: usize) -> Vec<Sample> {
    let mut out = Vec::new();
    walk(body, "", second, instance, &mut out);
    out
}

fn walk(v: &Value, key: &str, second: u64, instance: usize, out: &mut Vec<Sample>) {
    match v {
        Value::Object(m) => {
            if m.get("limit").is_some_and(Value::is_number) {
                let name = ["cluster", "name"]
                    .iter()
                    .find_map(|k| m.get(*k).and_then(Value::as_str))
                    .unwrap_or(key);
                out.push(Sample {
                    second,
                    instance,
                    cluster: name.to_string(),
                    limit: number(v, "limit"),
                    in_flight: number(v, "in_flight"),
                    queued: number(v, "queued"),
                    min_rtt_ms: number(v, "min_rtt_ms"),
                    rtt_ms: number(v, "rtt_ms"),
                    shed: number(v, "shed"),
                });
                return;
            }
            for (k, child) in m {
                walk(child, k, second, instance, out);
            }
        }
        Value::Array(items) => {
            for child in items {
                walk(child, key, second, instance, out);
            }
        }
        _ => {}
    }
}

/// Polls every admin address once a second until `stop` fires; returns
/// every sample and the raw answers (one JSON line per poll).
pub async fn poll(
    admins: Vec<SocketAddr>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> (Vec<Sample>, String) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let client = Arc::new(client);
    let mut alive = vec![true; admins.len()];
    let mut samples = Vec::new();
    let mut raw = String::new();
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        let second = start.elapsed().as_secs();
        for (i, admin) in admins.iter().enumerate() {
            if !alive[i] {
                continue;
            }
            let Ok(req) = http::Request::get(format!("http://{admin}/overload")).body(Empty::new())
            else {
                continue;
            };
            let answer = tokio::time::timeout(Duration::from_millis(500), async {
                let resp = client.request(req).await.ok()?;
                let status = resp.status();
                let body = resp.into_body().collect().await.ok()?.to_bytes();
                Some((status, body))
            })
            .await
            .ok()
            .flatten();
            match answer {
                Some((status, _)) if status == http::StatusCode::NOT_FOUND => alive[i] = false,
                Some((status, body)) if status.is_success() => {
                    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                        samples.extend(parse(&v, second, i));
                        raw.push_str(
                            &serde_json::json!({"second": second, "instance": i, "overload": v})
                                .to_string(),
                        );
                        raw.push('\n');
                    }
                }
                _ => {}
            }
        }
    }
    (samples, raw)
}

/// The samples as CSV.
pub fn to_csv(samples: &[Sample]) -> String {
    let mut out =
        String::from("second,instance,cluster,limit,in_flight,queued,min_rtt_ms,rtt_ms,shed\n");
    for s in samples {
        out.push_str(&format!(
            "{},{},{},{},{},{},{:.2},{:.2},{}\n",
            s.second,
            s.instance,
            s.cluster,
            s.limit,
            s.in_flight,
            s.queued,
            s.min_rtt_ms,
            s.rtt_ms,
            s.shed
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_cluster_whatever_the_nesting() {
        let by_key = serde_json::json!({"clusters": {"provider": {
            "limit": 42, "in_flight": 40, "queued": 3, "min_rtt_ms": 50.5, "rtt_ms": 61.0,
            "shed": {"default": 10, "important": 1}
        }}});
        let s = parse(&by_key, 7, 1);
        assert_eq!(s.len(), 1);
        assert_eq!(
            (
                s[0].cluster.as_str(),
                s[0].limit,
                s[0].shed,
                s[0].second,
                s[0].instance
            ),
            ("provider", 42.0, 11.0, 7, 1)
        );
        let listed =
            serde_json::json!([{"cluster": "a", "limit": 5}, {"name": "b", "limit": 6, "shed": 2}]);
        let s = parse(&listed, 0, 0);
        assert_eq!(
            s.iter().map(|x| x.cluster.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(s[1].shed, 2.0);
        assert!(parse(&serde_json::json!({"error": "not found"}), 0, 0).is_empty());
    }
}
