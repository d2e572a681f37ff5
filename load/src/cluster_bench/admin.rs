//! Reading a gateway's admin listener: a plain HTTP/1.1 GET over TCP (no
//! client library needed for two endpoints), Prometheus text lines and the
//! `GET /cluster` view.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A GET that takes longer than this counts as failed: a sample late by more
/// than a few sampling steps is worth less than a gap.
const TIMEOUT: Duration = Duration::from_secs(2);

/// `GET path` on `addr`; the body of a 200 answer.
pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let raw = tokio::time::timeout(TIMEOUT, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    })
    .await
    .map_err(|_| std::io::Error::other(format!("GET {addr}{path} timed out")))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("GET {addr}{path}: no HTTP answer")))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        let status = head.lines().next().unwrap_or_default();
        return Err(std::io::Error::other(format!("GET {addr}{path}: {status}")));
    }
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    Ok(if chunked {
        dechunk(body)
    } else {
        body.to_string()
    })
}

/// A chunked body's data.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The value of metric `name` whose labels include all of `labels`, in
/// whatever order the exposition writes them; summed over matching series.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (series, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once('}') {
                Some((ls, v)) => (ls, v),
                None => continue,
            },
            None if rest.starts_with(' ') => ("", rest),
            None => continue,
        };
        let has = |(k, v): &(&str, &str)| {
            series
                .split(',')
                .any(|pair| pair.trim() == format!("{k}=\"{v}\""))
        };
        if labels.iter().all(has) {
            if let Some(v) = value
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
            {
                *found.get_or_insert(0.0) += v;
            }
        }
    }
    found
}

/// The rate limit's admitted (or rejected) requests on one instance.
pub fn limit_count(metrics: &str, policy: &str, result: &str) -> Option<f64> {
    metric(
        metrics,
        "breakwater_limit_requests_total",
        &[
            ("kind", "rate_limit"),
            ("policy", policy),
            ("result", result),
        ],
    )
}

/// Redis commands this instance has sent.
pub fn redis_commands(metrics: &str) -> f64 {
    metric(metrics, "breakwater_cluster_redis_commands_total", &[]).unwrap_or(0.0)
}

/// `GET /cluster`.
pub async fn cluster_view(admin: SocketAddr) -> std::io::Result<serde_json::Value> {
    let body = get(admin, "/cluster").await?;
    serde_json::from_str(&body).map_err(|e| std::io::Error::other(format!("/cluster: {e}")))
}

/// Waits up to 15 s for an instance to sync with Redis (`mode: global`).
pub async fn wait_global(admin: SocketAddr) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(v) = cluster_view(admin).await {
            if v["mode"] == "global" && v["rounds"].as_u64().unwrap_or(0) > 0 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(std::io::Error::other(format!(
                "{admin}: not in global mode after 15 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = r#"# HELP breakwater_limit_requests_total Requests seen.
# TYPE breakwater_limit_requests_total counter
breakwater_limit_requests_total{kind="rate_limit",policy="per-user",result="admitted"} 1234
breakwater_limit_requests_total{kind="rate_limit",policy="per-user",result="rejected"} 56
breakwater_limit_requests_total{kind="rate_limit",policy="other",result="admitted"} 9
breakwater_cluster_redis_commands_total 77
breakwater_cluster_redis_commands_totally 1
"#;

    #[test]
    fn reads_series_by_labels_in_any_order() {
        assert_eq!(limit_count(METRICS, "per-user", "admitted"), Some(1234.0));
        assert_eq!(limit_count(METRICS, "per-user", "rejected"), Some(56.0));
        assert_eq!(limit_count(METRICS, "nobody", "admitted"), None);
        assert_eq!(
            metric(
                METRICS,
                "breakwater_limit_requests_total",
                &[("result", "admitted")]
            ),
            Some(1243.0)
        );
        assert_eq!(redis_commands(METRICS), 77.0);
    }

    #[test]
    fn joins_chunks() {
        assert_eq!(dechunk("4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"), "abcdefg");
    }
}
