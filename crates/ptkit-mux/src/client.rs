//! The client end: a *free* [`Connector`] that carries every connection as one stream of a
//! mux session over one connection of a *bound* connector, and a SOCKS5 front end for it.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use ptkit_core::redact::sensitive;
use ptkit_core::relay::relay_streams;
use ptkit_core::shutdown::Shutdown;
use ptkit_core::{Args, BoxFuture, Conn, Connector, StatsCounter, Target, TransportError};
use ptkit_snowflake::smux::{Role, SmuxConfig};
use ptkit_tor::socks::Reply;
use ptkit_tor::socks::server::reply_for;
use ptkit_tor::socks_front::{SocksFrontError, SocksLimits, drive_handshake};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

use crate::header::{HeaderError, MuxReply, MuxRequest, REPLY_LEN};
use crate::session::{MuxSession, default_smux_config};

/// Settings of a [`MuxConnector`].
#[derive(Debug, Clone)]
pub struct MuxClientConfig {
    /// Per-connection settings for the inner transport's one connection.
    pub settings: Args,
    /// The inner transport's server (for Tor-style transports that take it as destination).
    pub server: Option<Target>,
    /// Time to open the transport connection.
    pub connect_timeout: Duration,
    /// Time for the server's reply to a stream's header.
    pub reply_timeout: Duration,
    /// smux settings.
    pub smux: SmuxConfig,
}

impl Default for MuxClientConfig {
    fn default() -> Self {
        MuxClientConfig {
            settings: Args::new(),
            server: None,
            connect_timeout: Duration::from_secs(30),
            reply_timeout: Duration::from_secs(30),
            smux: default_smux_config(),
        }
    }
}

/// The server refused a stream with this SOCKS reply code. Carried inside the
/// `io::Error` of a [`TransportError::Io`] so a SOCKS front end can send the exact code
/// ([`reply_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("mux server refused the stream: {}", .0.describe())]
pub struct Refused(pub Reply);

fn io_kind(reply: Reply) -> io::ErrorKind {
    match reply {
        Reply::NotAllowed => io::ErrorKind::PermissionDenied,
        Reply::NetworkUnreachable => io::ErrorKind::NetworkUnreachable,
        Reply::HostUnreachable => io::ErrorKind::HostUnreachable,
        Reply::ConnectionRefused => io::ErrorKind::ConnectionRefused,
        Reply::TtlExpired => io::ErrorKind::TimedOut,
        Reply::AddressTypeNotSupported => io::ErrorKind::Unsupported,
        _ => io::ErrorKind::Other,
    }
}

/// The SOCKS reply for a failed connect: the mux server's own code when it refused the
/// stream, else the usual mapping of the I/O error.
pub fn reply_code(e: &TransportError) -> Reply {
    match e {
        TransportError::Io(io) => match io.get_ref().and_then(|i| i.downcast_ref::<Refused>()) {
            Some(Refused(r)) => *r,
            None => Reply::from_io_error(io),
        },
        _ => Reply::GeneralFailure,
    }
}

/// A free connector over one connection of a bound connector (see the [crate docs](crate)).
///
/// The transport connection is opened on first use and again after it died; every
/// [`Connector::connect`] opens one stream, sends the destination header and waits for the
/// server's reply. Cloning shares the session.
#[derive(Clone)]
pub struct MuxConnector {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    transport: Arc<dyn Connector>,
    config: MuxClientConfig,
    session: Mutex<Option<MuxSession>>,
}

impl std::fmt::Debug for MuxConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxConnector")
            .field("name", &self.inner.name)
            .finish()
    }
}

impl MuxConnector {
    /// Wraps `transport` (a bound connector). The connector's name is `<transport>_mux`.
    pub fn new(transport: Arc<dyn Connector>, config: MuxClientConfig) -> Self {
        MuxConnector {
            inner: Arc::new(Inner {
                name: format!("{}_mux", transport.name()),
                transport,
                config,
                session: Mutex::new(None),
            }),
        }
    }

    /// The live session, opening the transport connection if there is none.
    pub async fn session(&self) -> Result<MuxSession, TransportError> {
        let inner = &self.inner;
        let mut slot = inner.session.lock().await;
        if let Some(s) = slot.as_ref()
            && s.ended().is_none()
        {
            return Ok(s.clone());
        }
        let connecting = inner
            .transport
            .connect(&inner.config.settings, inner.config.server.clone());
        let conn = tokio::time::timeout(inner.config.connect_timeout, connecting)
            .await
            .map_err(|_| {
                TransportError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "transport connection for the mux timed out",
                ))
            })??;
        let (session, _incoming) = MuxSession::start(conn, Role::Client, inner.config.smux.clone());
        tracing::debug!(transport = %inner.transport.name(), "mux session started");
        *slot = Some(session.clone());
        Ok(session)
    }

    /// Opens one stream to `target`; fails with the server's reply code ([`Refused`]) on
    /// refusal.
    pub async fn open(&self, target: Target) -> Result<Conn, TransportError> {
        let header = MuxRequest::new(target)
            .encode()
            .map_err(|e| TransportError::BadSettings(e.to_string()))?;
        let session = self.session().await?;
        let mut stream = session.open_stream()?;
        let exchange = async {
            stream.write_all(&header).await?;
            let mut reply = [0u8; REPLY_LEN];
            stream.read_exact(&mut reply).await?;
            Ok::<_, io::Error>(reply)
        };
        let reply = tokio::time::timeout(self.inner.config.reply_timeout, exchange)
            .await
            .map_err(|_| {
                TransportError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "mux server did not answer the stream header",
                ))
            })??;
        let reply = MuxReply::decode(reply)
            .map_err(|e: HeaderError| TransportError::Protocol(format!("mux server reply: {e}")))?;
        match reply.socks() {
            Reply::Succeeded => Ok(Box::new(stream) as Conn),
            r => Err(TransportError::Io(io::Error::new(io_kind(r), Refused(r)))),
        }
    }
}

impl Connector for MuxConnector {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn is_bound(&self) -> bool {
        false
    }

    fn connect(
        &self,
        _settings: &Args,
        dest: Option<Target>,
    ) -> BoxFuture<'static, Result<Conn, TransportError>> {
        let this = self.clone();
        Box::pin(async move {
            let dest = dest.ok_or_else(|| {
                TransportError::BadSettings("the mux needs a destination per connection".into())
            })?;
            this.open(dest).await
        })
    }
}

/// Serves one SOCKS client: handshake, a connection through `connector`, the exact reply
/// code ([`reply_code`]), relay.
pub async fn serve_socks_connection(
    mut stream: TcpStream,
    connector: Arc<dyn Connector>,
    stats: Arc<StatsCounter>,
    limits: SocksLimits,
) {
    let _open = stats.open();
    let mut hs = limits.handshake();
    let request = match tokio::time::timeout(
        limits.handshake_timeout,
        drive_handshake(&mut stream, &mut hs, &limits),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(SocksFrontError::Handshake(kind))) => {
            stats.fail(kind.label());
            return;
        }
        Ok(Err(_)) => {
            stats.fail("socks_io");
            return;
        }
        Err(_) => {
            stats.fail("socks_timeout");
            let reply = hs.timed_out();
            if !reply.is_empty() {
                let _ = stream.write_all(&reply).await;
            }
            return;
        }
    };
    let connecting = connector.connect(&request.args, Some(request.target.clone()));
    let outcome = match tokio::time::timeout(limits.connect_timeout, connecting).await {
        Ok(r) => r,
        Err(_) => Err(TransportError::Io(io::ErrorKind::TimedOut.into())),
    };
    let mut remote = match outcome {
        Ok(c) => c,
        Err(e) => {
            let code = reply_code(&e);
            stats.fail(match code {
                Reply::NotAllowed => "not_allowed",
                _ => e.kind(),
            });
            tracing::info!(
                "{} stream to {} failed: {e}",
                connector.name(),
                sensitive(&request.target)
            );
            let _ = stream.write_all(&reply_for(&request, code)).await;
            return;
        }
    };
    if stream
        .write_all(&reply_for(&request, Reply::Succeeded))
        .await
        .is_err()
    {
        return;
    }
    if let Err(e) = relay_streams(&mut stream, &mut *remote, &limits.relay, Some(&stats)).await {
        tracing::debug!("mux SOCKS connection ended with error: {e}");
    }
}

/// Accepts SOCKS clients on `listener` until `shutdown` stops accepting (the shape of
/// `ptkit_tor::socks_front::serve`, with the mux server's reply codes passed through).
pub fn serve_socks(
    listener: TcpListener,
    connector: Arc<dyn Connector>,
    stats: Arc<StatsCounter>,
    shutdown: Shutdown,
    limits: SocksLimits,
) {
    let max = limits.max_connections;
    ptkit_core::net::serve_tcp(
        listener,
        shutdown,
        max,
        "mux SOCKS",
        move |stream, _peer| {
            serve_socks_connection(stream, connector.clone(), stats.clone(), limits.clone())
        },
    );
}
