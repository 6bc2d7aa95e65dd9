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

/// Serves HTTP-01 challenges (and 404 for anything else) on `listener` until `shutdown`
/// stops accepting. For when nothing else listens on port 80.
pub async fn serve_http01(
    listener: TcpListener,
    responder: Http01Responder,
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
                let response = responder.handle(&req).unwrap_or_else(|| {
                    let mut r = http::Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = http::StatusCode::NOT_FOUND;
                    r
                });
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
}
