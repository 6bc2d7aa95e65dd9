//! HTTP-01 challenge responses: a shared token → key-authorization map, and a tiny server.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use ptkit_core::shutdown::Shutdown;
use tokio::net::TcpListener;

use crate::error::Result;

/// The path prefix ACME servers fetch HTTP-01 responses from.
pub const HTTP01_PATH_PREFIX: &str = "/.well-known/acme-challenge/";

/// Pending HTTP-01 responses, shared between the [`crate::AcmeManager`] and whatever HTTP
/// server answers port 80 (cheap to clone).
#[derive(Clone, Default)]
pub struct Http01Responder {
    tokens: Arc<RwLock<HashMap<String, String>>>,
}

impl Http01Responder {
    /// An empty responder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key authorization to answer for `token`, if one is pending.
    pub fn key_authorization(&self, token: &str) -> Option<String> {
        self.tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .cloned()
    }

    /// The response body for a request path: `Some` when `path` is
    /// `/.well-known/acme-challenge/<token>` with a pending token.
    pub fn respond(&self, path: &str) -> Option<String> {
        path.strip_prefix(HTTP01_PATH_PREFIX)
            .and_then(|token| self.key_authorization(token))
    }

    /// Answers a request under [`HTTP01_PATH_PREFIX`] (200 with the key authorization, or
    /// 404 for an unknown token). Returns `None` for other paths: the caller routes those.
    pub fn handle<B>(&self, req: &http::Request<B>) -> Option<http::Response<Full<Bytes>>> {
        let path = req.uri().path();
        if !path.starts_with(HTTP01_PATH_PREFIX) {
            return None;
        }
        let (status, body) = match (req.method(), self.respond(path)) {
            (&http::Method::GET | &http::Method::HEAD, Some(key_auth)) => {
                (http::StatusCode::OK, Bytes::from(key_auth))
            }
            _ => (http::StatusCode::NOT_FOUND, Bytes::new()),
        };
        let mut response = http::Response::new(Full::new(body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/octet-stream"),
        );
        Some(response)
    }

    /// The number of pending tokens.
    pub fn len(&self) -> usize {
        self.tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// True when no token is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn insert(&self, token: String, key_authorization: String) {
        self.tokens
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token, key_authorization);
    }

    pub(crate) fn remove(&self, token: &str) {
        self.tokens
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(token);
    }
}

impl fmt::Debug for Http01Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http01Responder")
            .field("pending", &self.len())
            .finish()
    }
}

/// What the port-80 server answers to requests that are not HTTP-01 challenges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Http01Fallback {
    /// 404 with an empty body.
    #[default]
    NotFound,
    /// Go autocert's `HTTPHandler(nil)`, which the Go Snowflake server uses: GET and HEAD
    /// get a 302 to `https://<host>/<uri>` (with `:443` when the `Host` header names a
    /// port), other methods a 400 "Use HTTPS".
    RedirectToHttps,
}

impl Http01Fallback {
    /// The response to a request outside [`HTTP01_PATH_PREFIX`].
    pub fn respond<B>(self, req: &http::Request<B>) -> http::Response<Full<Bytes>> {
        match self {
            Http01Fallback::NotFound => {
                plain_response(http::StatusCode::NOT_FOUND, Bytes::new(), None)
            }
            Http01Fallback::RedirectToHttps => redirect_to_https(req),
        }
    }
}

/// autocert's `handleHTTPRedirect`.
fn redirect_to_https<B>(req: &http::Request<B>) -> http::Response<Full<Bytes>> {
    let method = req.method();
    if method != http::Method::GET && method != http::Method::HEAD {
        // net/http's http.Error.
        return plain_response(
            http::StatusCode::BAD_REQUEST,
            Bytes::from_static(b"Use HTTPS\n"),
            Some("text/plain; charset=utf-8"),
        );
    }
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(http::uri::Authority::as_str))
        .unwrap_or("");
    let uri = req
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let target = format!("https://{}{uri}", https_host(host));
    // net/http's http.Redirect: a short HTML body for GET, none for HEAD.
    let body = if method == http::Method::GET {
        Bytes::from(format!(
            "<a href=\"{}\">Found</a>.\n\n",
            html_escape(&target)
        ))
    } else {
        Bytes::new()
    };
    let mut response = plain_response(
        http::StatusCode::FOUND,
        body,
        (method == http::Method::GET).then_some("text/html; charset=utf-8"),
    );
    if let Ok(location) = http::HeaderValue::from_str(&target) {
        response
            .headers_mut()
            .insert(http::header::LOCATION, location);
    }
    response
}

/// autocert's `stripPort`: `host:port` becomes `host:443`; a host without a port is kept.
fn https_host(host: &str) -> String {
    let split = match host.strip_prefix('[') {
        // "[v6]:port"
        Some(rest) => rest.split_once("]:").map(|(ip, _)| format!("[{ip}]:443")),
        None => match host.split_once(':') {
            // Exactly one colon: "name:port" (a bare IPv6 address has several).
            Some((name, port)) if !port.contains(':') => Some(format!("{name}:443")),
            _ => None,
        },
    };
    split.unwrap_or_else(|| host.to_owned())
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

fn plain_response(
    status: http::StatusCode,
    body: Bytes,
    content_type: Option<&'static str>,
) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(body));
    *response.status_mut() = status;
    if let Some(ct) = content_type {
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(ct),
        );
        headers.insert(
            http::header::X_CONTENT_TYPE_OPTIONS,
            http::HeaderValue::from_static("nosniff"),
        );
    }
    response
}

/// Serves HTTP-01 challenges (and 404 for anything else) on `listener` until `shutdown`
/// stops accepting. For when nothing else listens on port 80.
pub async fn serve_http01(
    listener: TcpListener,
    responder: Http01Responder,
    shutdown: Shutdown,
) -> Result<()> {
    serve_http01_with(listener, responder, Http01Fallback::NotFound, shutdown).await
}

/// [`serve_http01`] answering other requests with `fallback`.
pub(crate) async fn serve_http01_with(
    listener: TcpListener,
    responder: Http01Responder,
    fallback: Http01Fallback,
    shutdown: Shutdown,
) -> Result<()> {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.accepting_stopped() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Transient (EMFILE, aborted connections): keep serving.
                    tracing::debug!(error = %e, "HTTP-01 accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let responder = responder.clone();
        shutdown.spawn(async move {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let response = responder
                    .handle(&req)
                    .unwrap_or_else(|| fallback.respond(&req));
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_buf_size(16 * 1024)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(Duration::from_secs(30), conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "HTTP-01 connection failed"),
                Err(_) => tracing::debug!("HTTP-01 connection timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn routes_tokens() {
        let r = Http01Responder::new();
        r.insert("tok".into(), "tok.thumb".into());
        assert_eq!(
            r.respond("/.well-known/acme-challenge/tok").as_deref(),
            Some("tok.thumb")
        );
        assert_eq!(r.respond("/.well-known/acme-challenge/other"), None);
        assert_eq!(r.respond("/tok"), None);
        let req = http::Request::get("/.well-known/acme-challenge/nope")
            .body(())
            .unwrap();
        assert_eq!(r.handle(&req).unwrap().status(), 404);
        let req = http::Request::get("/index.html").body(()).unwrap();
        assert!(r.handle(&req).is_none());
        r.remove("tok");
        assert!(r.is_empty());
    }

    #[test]
    fn redirects_like_autocert() {
        let fallback = Http01Fallback::RedirectToHttps;
        let get = |uri: &str, host: &str| {
            let req = http::Request::get(uri)
                .header("host", host)
                .body(())
                .unwrap();
            fallback.respond(&req)
        };
        let r = get("/a/b?c=d", "snow.example.com:80");
        assert_eq!(r.status(), 302);
        assert_eq!(
            r.headers()["location"],
            "https://snow.example.com:443/a/b?c=d"
        );
        assert_eq!(
            get("/", "snow.example.com").headers()["location"],
            "https://snow.example.com/"
        );
        assert_eq!(
            get("/x", "[2001:db8::1]:8080").headers()["location"],
            "https://[2001:db8::1]:443/x"
        );
        assert_eq!(
            get("/x", "[2001:db8::1]").headers()["location"],
            "https://[2001:db8::1]/x"
        );
        let head = http::Request::head("/").header("host", "h.example:80");
        let r = fallback.respond(&head.body(()).unwrap());
        assert_eq!(r.status(), 302);
        assert_eq!(r.headers()["location"], "https://h.example:443/");
        let post = http::Request::post("/").header("host", "h.example");
        let r = fallback.respond(&post.body(()).unwrap());
        assert_eq!(r.status(), 400);
        let body = http_body_util::BodyExt::collect(r.into_body());
        let bytes = collect_body(body);
        assert_eq!(&bytes[..], b"Use HTTPS\n");
        assert_eq!(
            Http01Fallback::NotFound
                .respond(&http::Request::get("/").body(()).unwrap())
                .status(),
            404
        );
    }

    fn collect_body(body: http_body_util::combinators::Collect<Full<Bytes>>) -> Bytes {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(body)
            .unwrap()
            .to_bytes()
    }
}
