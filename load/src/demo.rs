//! The demo upstream behind the default `conf/gateway.yaml`.
//!
//! A small, fast HTTP/1.1 and h2c server with a few endpoints that make the
//! gateway's behaviour visible from `curl`:
//!
//! | path | answer |
//! |---|---|
//! | `/goods/{id}` | a product as JSON |
//! | `/users/{id}` | a user as JSON |
//! | `/echo` | method, path, headers and body size as JSON (any method) |
//! | `/slow?ms=N` | the same, after N milliseconds (at most 60 s) |
//! | `/status/{code}` | an empty response with that status |
//! | anything else | `{"service":"demo","path":...}` |

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}

fn query_ms(query: Option<&str>) -> u64 {
    query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        .min(60_000)
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let body_len = match body.collect().await {
        Ok(b) => b.to_bytes().len(),
        Err(_) => 0,
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let echo = || {
        let headers: serde_json::Map<String, serde_json::Value> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
            .collect();
        json!({
            "method": parts.method.as_str(),
            "path": path,
            "query": parts.uri.query(),
            "headers": headers,
            "body_bytes": body_len,
        })
    };
    let resp = match segments.as_slice() {
        ["goods", id] => json(
            StatusCode::OK,
            json!({ "id": id, "name": format!("item {id}"), "price_cents": 1999, "stock": 42 }),
        ),
        ["users", id] => json(
            StatusCode::OK,
            json!({ "id": id, "name": format!("user {id}") }),
        ),
        ["echo"] => json(StatusCode::OK, echo()),
        ["slow"] => {
            tokio::time::sleep(Duration::from_millis(query_ms(parts.uri.query()))).await;
            json(StatusCode::OK, echo())
        }
        ["status", code] => {
            let status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::BAD_REQUEST);
            Response::builder()
                .status(status)
                .body(Full::new(Bytes::new()))
                .expect("valid response")
        }
        _ => json(StatusCode::OK, json!({ "service": "demo", "path": path })),
    };
    Ok(resp)
}

/// Serves the demo on `listener` until the process ends.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let io = TokioIo::new(stream);
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(io, service_fn(handle))
                .await;
        });
    }
}
