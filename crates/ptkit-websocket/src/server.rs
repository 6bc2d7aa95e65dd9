//! The server half: a TCP listener whose connections go through optional TLS and an HTTP/1.1
//! upgrade served by hyper, then become [`WsStream`]s.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use ptkit_core::net::bind_tcp;
use ptkit_core::redact::sensitive;
use ptkit_core::{
    Accepted, Args, BoxFuture, ClientMeta, Conn, Pending, ServerConfig, ServerTransport,
    TransportError, TransportListener,
};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::addr::{AddrInputs, TrustedProxies, client_addr, client_ip_param};
use crate::handshake::check_request;
use crate::proto::{
    BASE64_SUBPROTOCOL, DEFAULT_MESSAGE_LIMIT, Framing, MAX_MESSAGE_LIMIT, MIN_MESSAGE_LIMIT,
};
use crate::stream::{WsStream, ws_settings};
use crate::tls::{RustlsAcceptor, TlsAccept, acceptor_from_pem};
use crate::{NAME, parse_bool, parse_limit};

/// Default time a client has for TLS and the HTTP upgrade (pt-websocket used 10 s).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on the bytes of an upgrade request (request line and headers).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Smallest header cap hyper accepts.
pub const MIN_MAX_HEADER_BYTES: usize = 8 * 1024;
/// Most header fields in an upgrade request.
pub const MAX_HEADERS: usize = 64;

/// The server's configuration (see the crate docs for the option names).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerOptions {
    /// Only this path is upgraded (others get 404); any path when `None`.
    pub path: Option<String>,
    /// Message limit in decoded payload bytes.
    pub max_message: usize,
    /// TCP peers whose `Forwarded` / `X-Forwarded-For` headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// Whether the `client_ip` query parameter sets the client address.
    pub client_ip: bool,
    /// PEM certificate chain for `wss` (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `wss` (with `tls_cert`).
    pub tls_key: Option<PathBuf>,
    /// The URL clients should use, advertised in `SMETHOD … ARGS:url=…`.
    pub url: Option<String>,
    /// Time allowed for TLS plus the HTTP upgrade; also hyper's header read timeout.
    pub handshake_timeout: Duration,
    /// Most bytes in the upgrade request's head (431 above).
    pub max_header_bytes: usize,
    /// Snowflake's rules (set by the snowflake server, not an option key): no subprotocol,
    /// text messages are raw bytes like binary ones, and the client address comes only from
    /// `client_ip` (never the TCP peer, which is a proxy).
    pub raw_messages: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            path: None,
            max_message: DEFAULT_MESSAGE_LIMIT,
            trusted_proxies: TrustedProxies::none(),
            client_ip: true,
            tls_cert: None,
            tls_key: None,
            url: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            raw_messages: false,
        }
    }
}

/// Keys [`ServerOptions::from_args`] understands.
pub const SERVER_OPTION_KEYS: &[&str] = &[
    "path",
    "max-message",
    "trusted-proxies",
    "client-ip",
    "tls-cert",
    "tls-key",
    "url",
    "handshake-timeout",
    "max-header-bytes",
];

fn bad(msg: impl Into<String>) -> TransportError {
    TransportError::BadSettings(msg.into())
}

/// A value that can go into `SMETHOD … ARGS:` unchanged (no spaces or commas) and is printable.
fn args_safe(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

impl ServerOptions {
    /// Reads server options; unknown keys are an error.
    pub fn from_args(args: &Args) -> Result<Self, TransportError> {
        let mut o = ServerOptions::default();
        for (k, v) in args.iter() {
            if !SERVER_OPTION_KEYS.contains(&k) {
                return Err(bad(format!(
                    "unknown websocket server option {k:?} (known: {})",
                    SERVER_OPTION_KEYS.join(", ")
                )));
            }
            match k {
                "path" => {
                    if !v.starts_with('/') || !args_safe(v) || v.contains('?') {
                        return Err(bad(format!(
                            "path {v:?} must start with / and have no query"
                        )));
                    }
                    o.path = Some(v.to_owned());
                }
                "max-message" => o.max_message = parse_limit(v)?,
                "trusted-proxies" => o
                    .trusted_proxies
                    .extend(TrustedProxies::parse(v).map_err(|e| bad(e.to_string()))?),
                "client-ip" => o.client_ip = parse_bool(k, v)?,
                "tls-cert" => o.tls_cert = Some(PathBuf::from(v)),
                "tls-key" => o.tls_key = Some(PathBuf::from(v)),
                "url" => {
                    if !args_safe(v) || !(v.starts_with("ws://") || v.starts_with("wss://")) {
                        return Err(bad(format!(
                            "url {v:?} must be ws:// or wss:// without spaces or commas"
                        )));
                    }
                    o.url = Some(v.to_owned());
                }
                "handshake-timeout" => {
                    let secs: f64 = v
                        .parse()
                        .ok()
                        .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 600.0)
                        .ok_or_else(|| bad(format!("handshake-timeout {v:?}: want 0 < s ≤ 600")))?;
                    o.handshake_timeout = Duration::from_secs_f64(secs);
                }
                "max-header-bytes" => {
                    o.max_header_bytes = v
                        .parse()
                        .ok()
                        .filter(|n| (MIN_MAX_HEADER_BYTES..=1024 * 1024).contains(n))
                        .ok_or_else(|| {
                            bad(format!(
                                "max-header-bytes {v:?}: want {MIN_MAX_HEADER_BYTES}..=1048576"
                            ))
                        })?;
                }
                _ => {}
            }
        }
        if o.tls_cert.is_some() != o.tls_key.is_some() {
            return Err(bad("tls-cert and tls-key go together"));
        }
        Ok(o)
    }

    /// What a client needs (`SMETHOD … ARGS:`): `url` when configured; otherwise `path` when
    /// set and `tls=1` when the server speaks TLS.
    pub fn client_args(&self, tls: bool) -> Args {
        let mut args = Args::new();
        if let Some(url) = &self.url {
            args.push("url", url.clone());
        } else {
            if let Some(path) = &self.path {
                args.push("path", path.clone());
            }
            if tls {
                args.push("tls", "1");
            }
        }
        args
    }
}

/// The websocket server transport ([`ServerTransport`], name `websocket`).
#[derive(Debug, Clone, Default)]
pub struct WebSocketServer {
    tls: Option<Arc<dyn TlsAccept>>,
}

impl WebSocketServer {
    /// A server configured only by its options (`tls-cert`/`tls-key` for `wss`).
    pub fn new() -> Self {
        Self::default()
    }

    /// A server that speaks TLS with `config` (e.g. one from `ptkit-tls` with an ACME or
    /// hot-swapped certificate resolver); `tls-cert`/`tls-key` options are then refused.
    pub fn with_tls_config(config: Arc<rustls::ServerConfig>) -> Self {
        WebSocketServer {
            tls: Some(Arc::new(RustlsAcceptor::new(config))),
        }
    }

    /// A server that speaks TLS through a `ptkit-tls` acceptor (a [`ptkit_tls::HotResolver`]
    /// kept fresh by an `AcmeManager`, TLS-ALPN-01 answered on the same port); build it with
    /// ALPN `http/1.1`. `tls-cert`/`tls-key` options are then refused.
    pub fn with_acceptor(acceptor: ptkit_tls::Acceptor) -> Self {
        WebSocketServer {
            tls: Some(Arc::new(acceptor)),
        }
    }

    /// Binds a listener on `listen` with `options`.
    pub fn bind(
        &self,
        listen: SocketAddr,
        options: ServerOptions,
    ) -> Result<WebSocketListener, TransportError> {
        let tls: Option<Arc<dyn TlsAccept>> = match (&self.tls, &options.tls_cert, &options.tls_key)
        {
            (Some(_), Some(_), _) => {
                return Err(bad(
                    "tls-cert given but the server already has a TLS config",
                ));
            }
            (Some(tls), None, _) => Some(tls.clone()),
            (None, Some(cert), Some(key)) => {
                Some(Arc::new(acceptor_from_pem(cert, key).map_err(bad)?))
            }
            _ => None,
        };
        let listener = bind_tcp(listen)?;
        Ok(WebSocketListener {
            listener,
            shared: Arc::new(Shared { options, tls }),
        })
    }
}

impl ServerTransport for WebSocketServer {
    fn name(&self) -> &str {
        NAME
    }

    fn generate_config(&self) -> Result<(Args, Args), TransportError> {
        Ok((Args::new(), Args::new()))
    }

    fn listen(
        &self,
        config: ServerConfig,
    ) -> BoxFuture<'static, Result<Box<dyn TransportListener>, TransportError>> {
        let this = self.clone();
        Box::pin(async move {
            let options = ServerOptions::from_args(&config.options)?;
            let listener = this.bind(config.listen, options)?;
            Ok(Box::new(listener) as Box<dyn TransportListener>)
        })
    }
}

#[derive(Debug)]
struct Shared {
    options: ServerOptions,
    tls: Option<Arc<dyn TlsAccept>>,
}

/// A bound websocket listener. `accept` only accepts TCP; TLS and the upgrade run in the
/// returned [`Pending`] future, bounded by the handshake timeout.
#[derive(Debug)]
pub struct WebSocketListener {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl WebSocketListener {
    /// The options in force.
    pub fn options(&self) -> &ServerOptions {
        &self.shared.options
    }

    /// Whether connections are TLS (`wss`).
    pub fn is_tls(&self) -> bool {
        self.shared.tls.is_some()
    }
}

impl TransportListener for WebSocketListener {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    fn client_args(&self) -> Args {
        self.shared.options.client_args(self.is_tls())
    }

    fn accept(&mut self) -> BoxFuture<'_, io::Result<Pending>> {
        Box::pin(async move {
            let (tcp, peer) = self.listener.accept().await?;
            tcp.set_nodelay(true)?;
            let shared = self.shared.clone();
            let pending: Pending = Box::pin(server_handshake(tcp, peer, shared));
            Ok(pending)
        })
    }
}

async fn server_handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> Result<Accepted, TransportError> {
    let timeout = shared.options.handshake_timeout;
    let work = async {
        let io: Conn = match &shared.tls {
            Some(tls) => tls
                .accept(tcp)
                .await
                .map_err(|e| TransportError::Protocol(format!("TLS handshake failed: {e}")))?,
            None => Box::new(tcp),
        };
        upgrade(io, peer, &shared).await
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(TransportError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            "websocket handshake timed out",
        ))),
    }
}

enum Outcome {
    Upgrade {
        on_upgrade: OnUpgrade,
        framing: Framing,
        client: Option<SocketAddr>,
    },
    Rejected(StatusCode, &'static str),
}

fn respond(
    req: &mut Request<Incoming>,
    shared: &Shared,
    peer: SocketAddr,
) -> (Response<Full<Bytes>>, Outcome) {
    let opts = &shared.options;
    let checked = check_request(
        req.method(),
        req.version(),
        req.uri().path(),
        req.headers(),
        opts.path.as_deref(),
    );
    let accept = match checked {
        Ok(a) => a,
        Err(r) => {
            let mut resp = Response::new(Full::new(Bytes::from(format!("{}\n", r.why))));
            *resp.status_mut() = r.status;
            let h = resp.headers_mut();
            h.insert(CONNECTION, HeaderValue::from_static("close"));
            for (k, v) in r.headers {
                h.insert(k, v);
            }
            return (resp, Outcome::Rejected(r.status, r.why));
        }
    };
    let headers = req.headers();
    let str_values = |name: &str| -> Vec<&str> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    };
    let inputs = AddrInputs {
        query: req.uri().query(),
        forwarded: str_values("forwarded"),
        x_forwarded_for: str_values("x-forwarded-for"),
    };
    let (client, framing) = if opts.raw_messages {
        (client_ip_param(inputs.query), Framing::Lenient)
    } else {
        (
            Some(client_addr(
                peer,
                &inputs,
                opts.client_ip,
                &opts.trusted_proxies,
            )),
            accept.framing,
        )
    };
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept.accept) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    if framing == Framing::Base64 {
        h.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(BASE64_SUBPROTOCOL),
        );
    }
    let on_upgrade = hyper::upgrade::on(req);
    (
        resp,
        Outcome::Upgrade {
            on_upgrade,
            framing,
            client,
        },
    )
}

async fn upgrade(
    io: Conn,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> Result<Accepted, TransportError> {
    let slot: Arc<Mutex<Option<Outcome>>> = Arc::new(Mutex::new(None));
    let svc_slot = slot.clone();
    let svc_shared = shared.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let (resp, outcome) = respond(&mut req, &svc_shared, peer);
        if let Ok(mut s) = svc_slot.lock() {
            *s = Some(outcome);
        }
        std::future::ready(Ok::<_, Infallible>(resp))
    });
    let opts = &shared.options;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.handshake_timeout)
        .max_buf_size(opts.max_header_bytes.max(MIN_MAX_HEADER_BYTES))
        .max_headers(MAX_HEADERS)
        .title_case_headers(true)
        .keep_alive(false);
    builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await
        .map_err(|e| TransportError::Protocol(format!("bad HTTP upgrade request: {e}")))?;
    let outcome = slot.lock().ok().and_then(|mut s| s.take());
    match outcome {
        Some(Outcome::Upgrade {
            on_upgrade,
            framing,
            client,
        }) => {
            let upgraded = on_upgrade
                .await
                .map_err(|e| TransportError::Protocol(format!("upgrade failed: {e}")))?;
            let (config, limits) = ws_settings(framing, opts.max_message);
            let ws = tokio_websockets::ServerBuilder::new()
                .config(config)
                .limits(limits)
                .serve(TokioIo::new(upgraded));
            debug!(
                client = ?client.map(sensitive),
                ?framing,
                "websocket upgrade accepted"
            );
            Ok(Accepted {
                conn: Box::new(WsStream::new(ws, framing, opts.max_message)),
                meta: ClientMeta {
                    client_addr: client,
                },
            })
        }
        Some(Outcome::Rejected(status, why)) => Err(TransportError::Protocol(format!(
            "upgrade refused with HTTP {}: {why}",
            status.as_u16()
        ))),
        None => Err(TransportError::Protocol(
            "connection closed before an upgrade request".into(),
        )),
    }
}

/// Checks a message limit: `MIN_MESSAGE_LIMIT..=MAX_MESSAGE_LIMIT`.
pub(crate) fn check_limit(n: usize) -> Result<usize, TransportError> {
    if (MIN_MESSAGE_LIMIT..=MAX_MESSAGE_LIMIT).contains(&n) {
        Ok(n)
    } else {
        Err(bad(format!(
            "max-message {n}: want {MIN_MESSAGE_LIMIT}..={MAX_MESSAGE_LIMIT}"
        )))
    }
}
