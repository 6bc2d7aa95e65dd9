//! The HTTP front end: routes, CORS, body limits and status codes exactly as the Go broker
//! (spec §3). A thin layer over [`Broker`] and the sans-IO codecs.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use ptkit_core::redact::sensitive;

use super::amp;
use super::messages::{
    self, ClientForm, ClientResponse, ERR_NO_PROXIES, ERR_OVERLOADED, ERR_TIMED_OUT,
};
use super::rendezvous::{Broker, ClientOutcome, ProxyOutcome};

/// Where `/metrics` reads from (the metrics log file), if anywhere.
#[derive(Debug, Clone, Default)]
pub struct HttpContext {
    /// The metrics log file served on `/metrics` (404 without one).
    pub metrics_file: Option<std::path::PathBuf>,
}

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
const NOT_FOUND: &str = "404 page not found\n";
/// Largest metrics log file served on `/metrics`.
const MAX_METRICS_FILE: u64 = 64 << 20;

fn response(
    status: StatusCode,
    content_type: Option<&'static str>,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Some(ct) = content_type {
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    r
}

fn status_only(status: StatusCode) -> Response<Full<Bytes>> {
    response(status, None, Bytes::new())
}

fn not_found() -> Response<Full<Bytes>> {
    response(StatusCode::NOT_FOUND, Some(TEXT_PLAIN), NOT_FOUND)
}

fn with_cors(mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let h = r.headers_mut();
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("Origin, X-Session-ID"),
    );
    r
}

/// Reads a request body of at most `max` bytes, within the body timeout.
async fn read_body<B>(broker: &Broker, body: B) -> Option<Bytes>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let limits = &broker.settings().limits;
    let collected = tokio::time::timeout(
        limits.body_timeout,
        Limited::new(body, limits.max_body).collect(),
    )
    .await
    .ok()?
    .ok()?;
    Some(collected.to_bytes())
}

/// Answers one request. `peer` is the TCP peer (the proxy's address for country counts).
pub async fn handle<B>(
    broker: Arc<Broker>,
    ctx: Arc<HttpContext>,
    req: Request<B>,
    peer: Option<SocketAddr>,
) -> Response<Full<Bytes>>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let path = req.uri().path().to_owned();
    let cors = matches!(
        path.as_str(),
        "/proxy" | "/client" | "/answer" | "/debug" | "/metrics"
    ) || path.starts_with("/amp/client/");
    if cors && req.method() == Method::OPTIONS {
        return with_cors(status_only(StatusCode::OK));
    }
    let r = match path.as_str() {
        "/robots.txt" => response(
            StatusCode::OK,
            Some(TEXT_PLAIN),
            "User-agent: *\nDisallow: /\n",
        ),
        "/proxy" => proxy(&broker, req, peer).await,
        "/client" => client(&broker, req).await,
        "/answer" => answer(&broker, req).await,
        "/debug" => response(StatusCode::OK, Some(TEXT_PLAIN), broker.debug_text()),
        "/metrics" => metrics_file(&ctx).await,
        "/prometheus" => response(
            StatusCode::OK,
            Some("text/plain; version=0.0.4; charset=utf-8"),
            broker.prometheus_text(),
        ),
        p => match p.strip_prefix("/amp/client/") {
            Some(rest) => amp_client(&broker, rest).await,
            None => not_found(),
        },
    };
    if cors { with_cors(r) } else { r }
}

async fn proxy<B>(
    broker: &Broker,
    req: Request<B>,
    peer: Option<SocketAddr>,
) -> Response<Full<Bytes>>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let Some(body) = read_body(broker, req.into_body()).await else {
        return status_only(StatusCode::BAD_REQUEST);
    };
    let poll = match messages::decode_proxy_poll(&body) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(error = %e, "bad proxy poll");
            return status_only(StatusCode::BAD_REQUEST);
        }
    };
    match broker.proxy_poll(poll, peer.map(|p| p.ip())).await {
        ProxyOutcome::Response(r) => response(
            StatusCode::OK,
            Some(TEXT_PLAIN),
            messages::encode_proxy_response(&r),
        ),
        ProxyOutcome::DuplicateSid => {
            tracing::debug!(peer = %sensitive(DisplayPeer(peer)), "proxy poll reused an active session id");
            status_only(StatusCode::BAD_REQUEST)
        }
    }
}

async fn client<B>(broker: &Broker, req: Request<B>) -> Response<Full<Bytes>>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let nat_header = req
        .headers()
        .get("snowflake-nat-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(body) = read_body(broker, req.into_body()).await else {
        return status_only(StatusCode::BAD_REQUEST);
    };
    let poll = match messages::decode_client_poll(&body, nat_header.as_deref()) {
        Ok(p) => p,
        Err(e) if body.first() == Some(&b'{') => {
            tracing::debug!(error = %e, "bad legacy client poll");
            return status_only(StatusCode::BAD_REQUEST);
        }
        Err(e) => return client_json(&ClientResponse::Error(e.to_string())),
    };
    let form = poll.form;
    let outcome = broker.client_poll(poll).await;
    match form {
        ClientForm::V1 => match client_response(outcome) {
            Some(r) => client_json(&r),
            None => status_only(StatusCode::INTERNAL_SERVER_ERROR),
        },
        ClientForm::Legacy => match outcome {
            ClientOutcome::Answer(a) => response(StatusCode::OK, Some(TEXT_PLAIN), a),
            ClientOutcome::NoProxies | ClientOutcome::Overloaded => {
                status_only(StatusCode::SERVICE_UNAVAILABLE)
            }
            ClientOutcome::TimedOut => status_only(StatusCode::GATEWAY_TIMEOUT),
            ClientOutcome::UnknownBridge => status_only(StatusCode::INTERNAL_SERVER_ERROR),
        },
    }
}

/// The JSON response for an outcome; `None` for the Go broker's HTTP 500 (unknown bridge).
fn client_response(outcome: ClientOutcome) -> Option<ClientResponse> {
    Some(match outcome {
        ClientOutcome::Answer(a) => ClientResponse::Answer(a),
        ClientOutcome::NoProxies => ClientResponse::Error(ERR_NO_PROXIES.into()),
        ClientOutcome::TimedOut => ClientResponse::Error(ERR_TIMED_OUT.into()),
        ClientOutcome::Overloaded => ClientResponse::Error(ERR_OVERLOADED.into()),
        ClientOutcome::UnknownBridge => return None,
    })
}

fn client_json(r: &ClientResponse) -> Response<Full<Bytes>> {
    response(
        StatusCode::OK,
        Some(TEXT_PLAIN),
        messages::encode_client_response(r),
    )
}

async fn answer<B>(broker: &Broker, req: Request<B>) -> Response<Full<Bytes>>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let Some(body) = read_body(broker, req.into_body()).await else {
        return status_only(StatusCode::BAD_REQUEST);
    };
    match messages::decode_proxy_answer(&body) {
        Ok(a) => {
            let delivered = broker.proxy_answer(&a.sid, a.answer);
            response(
                StatusCode::OK,
                Some(TEXT_PLAIN),
                messages::encode_answer_response(delivered),
            )
        }
        Err(e) => {
            tracing::debug!(error = %e, "bad proxy answer");
            status_only(StatusCode::BAD_REQUEST)
        }
    }
}

async fn amp_client(broker: &Broker, rest: &str) -> Response<Full<Bytes>> {
    let reply = match amp::decode_path(rest) {
        Ok(message) => match messages::decode_client_poll_v1(&message) {
            Ok(poll) => client_response(broker.client_poll(poll).await),
            Err(e) => Some(ClientResponse::Error(e.to_string())),
        },
        Err(e) => Some(ClientResponse::Error(e.to_string())),
    };
    let Some(reply) = reply else {
        return status_only(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let mut r = response(
        StatusCode::OK,
        Some("text/html"),
        amp::armor_encode(&messages::encode_client_response(&reply)),
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=15"));
    r
}

async fn metrics_file(ctx: &HttpContext) -> Response<Full<Bytes>> {
    let Some(path) = &ctx.metrics_file else {
        return not_found();
    };
    let read = async {
        use tokio::io::AsyncReadExt;
        let file = tokio::fs::File::open(path).await?;
        let mut buf = Vec::new();
        file.take(MAX_METRICS_FILE).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    match read.await {
        Ok(buf) => response(StatusCode::OK, Some(TEXT_PLAIN), buf),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the metrics log");
            not_found()
        }
    }
}

struct DisplayPeer(Option<SocketAddr>);

impl std::fmt::Display for DisplayPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("?"),
        }
    }
}
