//! The client half: dial (through the configured [`Dialer`]), optional TLS, the HTTP/1.1
//! upgrade done by tokio-websockets on our stream, then a [`WsStream`].

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use http::header::{HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use ptkit_core::net::DirectDialer;
use ptkit_core::{
    Args, BoxFuture, ClientConfig, ClientTransport, Conn, Connector, Dialer, Target, TransportError,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::handshake::check_response;
use crate::proto::{BASE64_SUBPROTOCOL, DEFAULT_MESSAGE_LIMIT, Framing};
use crate::stream::{WsStream, ws_settings};
use crate::tls::{RustlsConnector, TlsConnect, client_config, server_name};
use crate::{NAME, parse_bool, parse_limit};

/// Default time for TLS plus the HTTP upgrade after the TCP connection is up.
pub const DEFAULT_CLIENT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// Most bytes of the server's HTTP answer we read before giving up.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024;

/// Transport-wide client options (from `ClientConfig::options`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Message limit in decoded bytes, for what we send and what we accept.
    pub max_message: usize,
    /// PEM CA certificates to trust for `wss` instead of the system bundle.
    pub ca_file: Option<PathBuf>,
    /// Time for TLS plus the upgrade.
    pub handshake_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            max_message: DEFAULT_MESSAGE_LIMIT,
            ca_file: None,
            handshake_timeout: DEFAULT_CLIENT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// Keys [`ClientOptions::from_args`] understands.
pub const CLIENT_OPTION_KEYS: &[&str] = &["max-message", "ca-file"];

impl ClientOptions {
    /// Reads transport-wide client options; unknown keys are an error.
    pub fn from_args(args: &Args) -> Result<Self, TransportError> {
        let mut o = ClientOptions::default();
        for (k, v) in args.iter() {
            match k {
                "max-message" => o.max_message = parse_limit(v)?,
                "ca-file" => o.ca_file = Some(PathBuf::from(v)),
                _ => {
                    return Err(TransportError::BadSettings(format!(
                        "unknown websocket client option {k:?} (known: {})",
                        CLIENT_OPTION_KEYS.join(", ")
                    )));
                }
            }
        }
        Ok(o)
    }
}

/// Per-connection settings (SOCKS arguments). See the crate docs for the exact semantics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectSettings {
    /// `url=`: `ws://` or `wss://` URL; its authority is the Host header, its path and query
    /// the request target.
    pub url: Option<String>,
    /// `front=`: the TLS SNI and certificate name (domain fronting); `wss` only.
    pub front: Option<String>,
    /// `base64=1`: offer and require the `base64` subprotocol.
    pub base64: bool,
    /// `path=`: request path when there is no `url` (default `/`).
    pub path: Option<String>,
    /// `tls=1`: `wss` when there is no `url`.
    pub tls: bool,
}

/// Keys [`ConnectSettings::from_args`] understands.
pub const CONNECT_KEYS: &[&str] = &["url", "front", "base64", "path", "tls"];

impl ConnectSettings {
    /// Reads per-connection settings; unknown keys are an error.
    pub fn from_args(args: &Args) -> Result<Self, TransportError> {
        let mut s = ConnectSettings::default();
        for (k, v) in args.iter() {
            match k {
                "url" => s.url = Some(v.to_owned()),
                "front" => s.front = Some(v.to_owned()),
                "base64" => s.base64 = parse_bool(k, v)?,
                "path" => s.path = Some(v.to_owned()),
                "tls" => s.tls = parse_bool(k, v)?,
                _ => {
                    return Err(TransportError::BadSettings(format!(
                        "unknown websocket argument {k:?} (known: {})",
                        CONNECT_KEYS.join(", ")
                    )));
                }
            }
        }
        Ok(s)
    }
}

/// Where and how one connection goes, resolved from settings and the SOCKS target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// TCP destination.
    pub dial: Target,
    /// Whether TLS is used (`wss`).
    pub tls: bool,
    /// SNI / certificate name, when `tls`.
    pub sni: Option<String>,
    /// The URI given to the upgrade (authority = Host header, path and query).
    pub request_uri: Uri,
}

fn bad(msg: impl Into<String>) -> TransportError {
    TransportError::BadSettings(msg.into())
}

impl ConnectSettings {
    /// Resolves the connection plan:
    /// - TCP goes to the SOCKS target when there is one, else to the URL's host and port;
    /// - the URL defaults to `ws://<target><path>` (`wss` with `tls=1`);
    /// - Host header = URL authority; SNI = `front`, else the URL host.
    pub fn plan(&self, dest: Option<&Target>) -> Result<Plan, TransportError> {
        let url = match (&self.url, dest) {
            (Some(u), _) => u.clone(),
            (None, Some(t)) => {
                let path = self.path.as_deref().unwrap_or("/");
                if !path.starts_with('/') {
                    return Err(bad(format!("path {path:?} must start with /")));
                }
                let scheme = if self.tls { "wss" } else { "ws" };
                format!("{scheme}://{t}{path}")
            }
            (None, None) => return Err(bad("websocket needs url= or a SOCKS target")),
        };
        let uri = Uri::from_str(&url).map_err(|e| bad(format!("bad url {url:?}: {e}")))?;
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(bad(format!("url {url:?} is not ws:// or wss://"))),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| bad(format!("url {url:?} has no host")))?;
        if authority.as_str().contains('@') {
            return Err(bad("url must not carry user information"));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(bad(format!("url {url:?} has no host")));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let dial = match dest {
            Some(t) => t.clone(),
            None => {
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                match bare.parse::<std::net::IpAddr>() {
                    Ok(ip) => Target::from_socket_addr(std::net::SocketAddr::new(ip, port)),
                    Err(_) => Target::parse(&format!("{bare}:{port}"))
                        .map_err(|e| bad(format!("url host: {e}")))?,
                }
            }
        };
        if self.front.is_some() && !tls {
            return Err(bad("front= needs a wss:// url (it only sets the TLS name)"));
        }
        let sni = tls.then(|| self.front.clone().unwrap_or_else(|| host.to_owned()));
        let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let path_and_query = if path_and_query.is_empty() {
            "/"
        } else {
            path_and_query
        };
        let request_uri = Uri::from_str(&format!(
            "{}://{}{}",
            if tls { "wss" } else { "ws" },
            authority,
            path_and_query
        ))
        .map_err(|e| bad(format!("bad url {url:?}: {e}")))?;
        Ok(Plan {
            dial,
            tls,
            sni,
            request_uri,
        })
    }
}

/// The websocket client transport ([`ClientTransport`], name `websocket`).
#[derive(Debug, Clone, Default)]
pub struct WebSocketClient {
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl WebSocketClient {
    /// A client that trusts the system CA bundle (or `ca-file`) for `wss`.
    pub fn new() -> Self {
        Self::default()
    }

    /// A client that uses `config` for `wss` (e.g. from `ptkit-tls`).
    pub fn with_tls_config(config: Arc<rustls::ClientConfig>) -> Self {
        WebSocketClient { tls: Some(config) }
    }
}

impl ClientTransport for WebSocketClient {
    fn name(&self) -> &str {
        NAME
    }

    fn connector(&self, config: &ClientConfig) -> Result<Arc<dyn Connector>, TransportError> {
        let options = ClientOptions::from_args(&config.options)?;
        let dialer = config
            .dialer
            .clone()
            .unwrap_or_else(|| Arc::new(DirectDialer::default()));
        Ok(Arc::new(WebSocketConnector::new(
            dialer,
            options,
            self.tls.clone(),
        )))
    }
}

/// Opens websocket connections (the [`Connector`] of [`WebSocketClient`]).
pub struct WebSocketConnector {
    dialer: Arc<dyn Dialer>,
    options: ClientOptions,
    tls_config: Option<Arc<rustls::ClientConfig>>,
    tls: OnceLock<Result<Arc<dyn TlsConnect>, String>>,
}

impl fmt::Debug for WebSocketConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketConnector")
            .field("dialer", &self.dialer)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The client-side stream type.
pub type ClientStream = WsStream<HandshakeLimit<Conn>>;

impl WebSocketConnector {
    /// A connector dialling through `dialer`; `tls` overrides the `wss` config built from
    /// `options.ca_file` or the system bundle.
    pub fn new(
        dialer: Arc<dyn Dialer>,
        options: ClientOptions,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Self {
        WebSocketConnector {
            dialer,
            options,
            tls_config: tls,
            tls: OnceLock::new(),
        }
    }

    fn tls(&self) -> Result<Arc<dyn TlsConnect>, TransportError> {
        self.tls
            .get_or_init(|| {
                let cfg = match &self.tls_config {
                    Some(c) => c.clone(),
                    None => client_config(self.options.ca_file.as_deref())?,
                };
                Ok(Arc::new(RustlsConnector::new(cfg)) as Arc<dyn TlsConnect>)
            })
            .clone()
            .map_err(TransportError::BadSettings)
    }

    /// Opens one connection and returns the typed stream.
    pub fn connect_ws(
        &self,
        settings: &ConnectSettings,
        dest: Option<Target>,
    ) -> BoxFuture<'static, Result<ClientStream, TransportError>> {
        let plan = settings.plan(dest.as_ref());
        let tls = match &plan {
            Ok(p) if p.tls => self.tls().map(Some),
            _ => Ok(None),
        };
        let dialer = self.dialer.clone();
        let options = self.options.clone();
        let base64 = settings.base64;
        Box::pin(async move {
            let plan = plan?;
            let tls = tls?;
            let tcp = dialer.dial(plan.dial.clone()).await?;
            let work = handshake(tcp, plan, tls, base64, options.max_message);
            match tokio::time::timeout(options.handshake_timeout, work).await {
                Ok(r) => r,
                Err(_) => Err(TransportError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "websocket handshake timed out",
                ))),
            }
        })
    }
}

async fn handshake(
    tcp: Conn,
    plan: Plan,
    tls: Option<Arc<dyn TlsConnect>>,
    base64: bool,
    limit: usize,
) -> Result<ClientStream, TransportError> {
    let io: Conn = match (tls, &plan.sni) {
        (Some(tls), Some(sni)) => {
            let name = server_name(sni).map_err(TransportError::BadSettings)?;
            tls.connect(name, tcp)
                .await
                .map_err(|e| TransportError::Protocol(format!("TLS handshake failed: {e}")))?
        }
        _ => tcp,
    };
    let offered = if base64 {
        Framing::Base64
    } else {
        Framing::Binary
    };
    let (config, limits) = ws_settings(offered, limit);
    let mut builder = tokio_websockets::ClientBuilder::from_uri(plan.request_uri)
        .config(config)
        .limits(limits);
    if base64 {
        builder = builder
            .add_header(
                SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(BASE64_SUBPROTOCOL),
            )
            .map_err(|e| TransportError::BadSettings(e.to_string()))?;
    }
    let limited = HandshakeLimit::new(io, MAX_RESPONSE_BYTES);
    let (mut ws, response) = builder.connect_on(limited).await.map_err(|e| match e {
        tokio_websockets::Error::Upgrade(
            tokio_websockets::upgrade::Error::DidNotSwitchProtocols(code),
        ) => TransportError::Protocol(format!(
            "server answered HTTP {code} instead of 101 (redirects are never followed)"
        )),
        tokio_websockets::Error::Io(e) => TransportError::Io(e),
        other => TransportError::Protocol(format!("websocket upgrade failed: {other}")),
    })?;
    let framing = check_response(response.headers(), base64).map_err(TransportError::Protocol)?;
    ws.get_mut().disarm();
    Ok(WsStream::new(ws, framing, limit))
}

impl Connector for WebSocketConnector {
    fn name(&self) -> &str {
        NAME
    }

    fn is_bound(&self) -> bool {
        // The server decides where the stream goes; the SOCKS target names the server.
        true
    }

    fn connect(
        &self,
        settings: &Args,
        dest: Option<Target>,
    ) -> BoxFuture<'static, Result<Conn, TransportError>> {
        let settings = match ConnectSettings::from_args(settings) {
            Ok(s) => s,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let fut = self.connect_ws(&settings, dest);
        Box::pin(async move { Ok(Box::new(fut.await?) as Conn) })
    }
}

/// A stream wrapper that refuses to read more than a budget until disarmed: it bounds the
/// memory a server can make us spend on its HTTP answer (tokio-websockets' response reader
/// has no size cap of its own).
#[derive(Debug)]
pub struct HandshakeLimit<S> {
    inner: S,
    budget: Option<usize>,
}

impl<S> HandshakeLimit<S> {
    /// Allows `budget` bytes to be read until [`HandshakeLimit::disarm`].
    pub fn new(inner: S, budget: usize) -> Self {
        HandshakeLimit {
            inner,
            budget: Some(budget),
        }
    }

    /// Lifts the limit.
    pub fn disarm(&mut self) {
        self.budget = None;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HandshakeLimit<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(budget) = this.budget else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        if budget == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "server's HTTP answer is too long",
            )));
        }
        let want = budget.min(buf.remaining());
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(want));
        let r = Pin::new(&mut this.inner).poll_read(cx, &mut limited);
        let n = limited.filled().len();
        if let Poll::Ready(Ok(())) = r {
            buf.advance(n);
            this.budget = Some(budget - n);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HandshakeLimit<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> ConnectSettings {
        let args: Args = pairs.iter().map(|(k, v)| (*k, *v)).collect();
        ConnectSettings::from_args(&args).unwrap()
    }

    #[test]
    fn plan_default_url_from_socks_target() {
        let t = Target::parse("192.0.2.1:8080").unwrap();
        let p = settings(&[]).plan(Some(&t)).unwrap();
        assert_eq!(p.dial, t);
        assert!(!p.tls);
        assert_eq!(p.sni, None);
        assert_eq!(p.request_uri.to_string(), "ws://192.0.2.1:8080/");
        let p = settings(&[("tls", "1"), ("path", "/ws")])
            .plan(Some(&t))
            .unwrap();
        assert_eq!(p.request_uri.to_string(), "wss://192.0.2.1:8080/ws");
        assert_eq!(p.sni.as_deref(), Some("192.0.2.1"));
        let v6 = Target::parse("[2001:db8::1]:80").unwrap();
        let p = settings(&[]).plan(Some(&v6)).unwrap();
        assert_eq!(p.request_uri.authority().unwrap().host(), "[2001:db8::1]");
    }

    #[test]
    fn plan_url_front_host_and_dial() {
        let t = Target::parse("203.0.113.5:443").unwrap();
        let s = settings(&[
            ("url", "wss://hidden.example/tunnel?x=1"),
            ("front", "allowed.example"),
        ]);
        let p = s.plan(Some(&t)).unwrap();
        // TCP: the SOCKS target; SNI: front; Host: the URL authority.
        assert_eq!(p.dial, t);
        assert_eq!(p.sni.as_deref(), Some("allowed.example"));
        assert_eq!(p.request_uri.to_string(), "wss://hidden.example/tunnel?x=1");
        // No SOCKS target: dial the URL host and default port.
        let p = s.plan(None).unwrap();
        assert_eq!(p.dial, Target::parse("hidden.example:443").unwrap());
        let p = settings(&[("url", "ws://[::1]:9/")]).plan(None).unwrap();
        assert_eq!(p.dial.to_string(), "[::1]:9");
    }

    #[test]
    fn plan_refusals() {
        assert!(settings(&[]).plan(None).is_err());
        for url in ["http://x/", "ws://", "ws://u@x/", "wss://x y/"] {
            assert!(settings(&[("url", url)]).plan(None).is_err(), "{url}");
        }
        assert!(
            settings(&[("url", "ws://x/"), ("front", "y")])
                .plan(None)
                .is_err()
        );
        assert!(ConnectSettings::from_args(&Args::new().with("colour", "1")).is_err());
        assert!(ConnectSettings::from_args(&Args::new().with("base64", "2")).is_err());
    }
}
