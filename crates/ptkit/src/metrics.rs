//! `--metrics ADDR`: the counters of every running transport as Prometheus text on
//! `GET /metrics` and as the JSON stats schema on `GET /stats`. Bind it to loopback or a
//! management network: it says how busy the bridge is.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use ptkit_core::Stats;
use ptkit_core::shutdown::Shutdown;
use tokio::net::TcpListener;

/// Where the counters come from (called per request).
pub type StatsSource = Arc<dyn Fn() -> Vec<Stats> + Send + Sync>;

/// More Prometheus text appended to `/metrics` (a transport's own counters).
pub type ExtraSource = Arc<dyn Fn() -> String + Send + Sync>;

/// Most request-head bytes read per request.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;

fn respond(
    req: &Request<hyper::body::Incoming>,
    source: &StatsSource,
    extra: Option<&ExtraSource>,
) -> Response<Full<Bytes>> {
    let reply = |status, ctype: &'static str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = ctype.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            ptkit_core::stats::prometheus_text(&source()) + &extra.map(|e| e()).unwrap_or_default(),
        ),
        "/stats" => {
            let json = serde_json_array(&source());
            reply(StatusCode::OK, "application/json", json)
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics or /stats\n".into(),
        ),
    }
}

fn serde_json_array(all: &[Stats]) -> String {
    let items: Vec<String> = all.iter().map(Stats::to_json).collect();
    format!("[{}]\n", items.join(","))
}

/// Most metrics requests served at once.
pub const MAX_METRICS_CONNECTIONS: usize = 64;

/// Serves metrics on `listener` until `shutdown` stops accepting.
pub fn serve(listener: TcpListener, source: StatsSource, shutdown: Shutdown) {
    serve_inner(listener, source, None, shutdown);
}

/// Like [`serve`], with `extra` text appended to `/metrics`.
pub fn serve_with_extra(
    listener: TcpListener,
    source: StatsSource,
    extra: ExtraSource,
    shutdown: Shutdown,
) {
    serve_inner(listener, source, Some(extra), shutdown);
}

fn serve_inner(
    listener: TcpListener,
    source: StatsSource,
    extra: Option<ExtraSource>,
    shutdown: Shutdown,
) {
    ptkit_core::net::serve_tcp(
        listener,
        shutdown,
        MAX_METRICS_CONNECTIONS,
        "metrics",
        move |stream, _| {
            let source = source.clone();
            let extra = extra.clone();
            async move {
                let service = hyper::service::service_fn(move |req| {
                    let resp = respond(&req, &source, extra.as_ref());
                    async move { Ok::<_, Infallible>(resp) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(5))
                    .max_buf_size(MAX_REQUEST_HEAD)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
            }
        },
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ptkit_core::StatsCounter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn serves_prometheus_and_json_and_survives_garbage() {
        let counter = Arc::new(StatsCounter::new("plain"));
        counter.add_down(42);
        let c2 = counter.clone();
        let source: StatsSource = Arc::new(move || vec![c2.snapshot()]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        serve(listener, source, shutdown.clone());
        let m = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(m.starts_with("HTTP/1.1 200"), "{m}");
        assert!(
            m.contains("ptkit_bytes_down_total{transport=\"plain\"} 42"),
            "{m}"
        );
        let j = get(addr, b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(j.contains("\"bytes_down\":42"), "{j}");
        let bad = get(addr, b"\x16\x03\x01garbage\r\n\r\n").await;
        assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
        let huge = [
            b"GET /metrics HTTP/1.1\r\nX: ".as_slice(),
            &vec![b'a'; 64 * 1024],
            b"\r\n\r\n",
        ]
        .concat();
        let r = get(addr, &huge).await;
        assert!(
            r.is_empty() || r.starts_with("HTTP/1.1 431") || r.starts_with("HTTP/1.1 400"),
            "{r}"
        );
        let again = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(again.starts_with("HTTP/1.1 200"), "still serving: {again}");
        shutdown.abort();
    }
}
