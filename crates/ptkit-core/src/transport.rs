//! The transport vocabulary (the PT 2.0 abstract interfaces as traits).
//!
//! A transport is a pair: a [`ClientTransport`] that yields named [`Connector`]s, and a
//! [`ServerTransport`] whose listener turns accepted connections into plain byte streams.
//! Everything else (Tor's managed mode, SOCKS, ExtORPort, stats, lifecycle) is written once
//! around these traits.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::args::Args;
use crate::target::Target;

/// A boxed, sendable future (the traits stay object-safe so drivers can hold registries).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Any bidirectional byte stream a transport hands out. `Any` lets the relay recognise two
/// plain TCP sockets and move their bytes with `splice(2)`.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + std::any::Any + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A transport connection, type-erased.
pub type Conn = Box<dyn Stream>;

/// Why a transport could not connect or accept. The kind is a stable metrics label.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The caller's settings are unusable (missing or malformed argument).
    #[error("bad transport settings: {0}")]
    BadSettings(String),
    /// The peer broke the transport's protocol.
    #[error("peer violated the protocol: {0}")]
    Protocol(String),
    /// The peer speaks a version or option we do not support.
    #[error("unsupported by peer: {0}")]
    Unsupported(String),
    /// Dialling or I/O failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl TransportError {
    /// Stable short label for metrics and STATUS lines.
    pub fn kind(&self) -> &'static str {
        match self {
            TransportError::BadSettings(_) => "bad_settings",
            TransportError::Protocol(_) => "protocol",
            TransportError::Unsupported(_) => "unsupported",
            TransportError::Io(_) => "io",
        }
    }
}

/// The *Connection Factory*: opens transport connections.
pub trait Connector: Send + Sync {
    /// The transport name (a C identifier, as Tor requires).
    fn name(&self) -> &str;

    /// True when the transport decides the final destination itself (the server is
    /// configured with it), false when `dest` is a free destination the server will dial.
    fn is_bound(&self) -> bool;

    /// Opens one connection. `settings` are per-connection arguments (SOCKS `k=v` args);
    /// `dest` is the SOCKS target: the transport server's address for Tor-style transports.
    fn connect(
        &self,
        settings: &Args,
        dest: Option<Target>,
    ) -> BoxFuture<'static, Result<Conn, TransportError>>;
}

/// The *Transport Factory* on the client side.
pub trait ClientTransport: Send + Sync {
    /// The transport name.
    fn name(&self) -> &str;

    /// Builds the connector(s) of this transport from its configuration.
    fn connector(&self, config: &ClientConfig) -> Result<Arc<dyn Connector>, TransportError>;

    /// Asks for the out-of-band *signals* channel (PT 2.0 WIP): `outbox` sends this side's
    /// messages to the server (a `CMESSAGE` line on the IPC); the returned handler receives
    /// the server's (`SMESSAGE`). Default: not interested (`None`), and `outbox` is dropped.
    fn signals(&self, outbox: SignalOutbox) -> Option<Arc<dyn SignalHandler>> {
        let _ = outbox;
        None
    }
}

/// Receives out-of-band signals from the other side of a transport (PT 2.0 WIP `signals`):
/// unreliable, possibly human-carried (copy and paste into an e-mail), opaque bytes.
pub trait SignalHandler: Send + Sync {
    /// One message from the peer side. Called from the driver's input task: do not block.
    fn on_message(&self, payload: &[u8]);
}

/// Sends one out-of-band message to the other side of a transport; the driver bounds its
/// size (the IPC drops messages above its documented limit with a log line).
pub type SignalOutbox = Arc<dyn Fn(Vec<u8>) + Send + Sync>;

/// Environment a client transport is built in.
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// Transport-wide options.
    pub options: Args,
    /// The directory for persistent state, if any.
    pub state_dir: Option<PathBuf>,
    /// How to open TCP connections (outbound bind addresses, an upstream proxy).
    pub dialer: Option<Arc<dyn Dialer>>,
}

/// Opens outgoing TCP connections, so transports honour `TOR_PT_PROXY` and outbound bind
/// addresses without knowing about them.
pub trait Dialer: Send + Sync + std::fmt::Debug {
    /// Connects to `target`.
    fn dial(&self, target: Target) -> BoxFuture<'static, io::Result<Conn>>;
}

/// What a server transport learned about an accepted connection.
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    /// The client's address, when known (the TCP peer, or one the transport was told).
    pub client_addr: Option<SocketAddr>,
}

/// An accepted, fully handshaked transport connection.
pub struct Accepted {
    /// The de-obfuscated byte stream.
    pub conn: Conn,
    /// Metadata for the upstream (ExtORPort USERADDR).
    pub meta: ClientMeta,
}

/// A connection still in its transport handshake; run it in its own task.
pub type Pending = BoxFuture<'static, Result<Accepted, TransportError>>;

/// A bound server-side listener.
pub trait TransportListener: Send {
    /// The address actually bound (reported in `SMETHOD`).
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Arguments a client needs (the `SMETHOD … ARGS:` option).
    fn client_args(&self) -> Args {
        Args::new()
    }

    /// Waits for the next connection and returns its handshake to run.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Pending>>;
}

/// Environment a server transport is started in.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Transport options (`TOR_PT_SERVER_TRANSPORT_OPTIONS` or the command line).
    pub options: Args,
    /// The directory for persistent state, if any.
    pub state_dir: Option<PathBuf>,
}

/// The *Server Factory*.
pub trait ServerTransport: Send + Sync {
    /// The transport name.
    fn name(&self) -> &str;

    /// A matching pair of (client, server) configurations for a fresh deployment.
    fn generate_config(&self) -> Result<(Args, Args), TransportError>;

    /// Binds a listener.
    fn listen(
        &self,
        config: ServerConfig,
    ) -> BoxFuture<'static, Result<Box<dyn TransportListener>, TransportError>>;

    /// The source range for this transport's upstream connections given its `options`
    /// (Snowflake's `orport-srcaddr`). Default: none (the system picks).
    fn upstream_source(&self, options: &Args) -> Option<crate::source::SourceRange> {
        let _ = options;
        None
    }

    /// Asks for the out-of-band *signals* channel (PT 2.0 WIP): `outbox` sends this side's
    /// messages to clients (an `SMESSAGE` line on the IPC); the returned handler receives
    /// theirs (`CMESSAGE`). Default: not interested (`None`).
    fn signals(&self, outbox: SignalOutbox) -> Option<Arc<dyn SignalHandler>> {
        let _ = outbox;
        None
    }
}

/// Where a server sends de-obfuscated streams: the ExtORPort, the ORPort, or any target.
pub trait Upstream: Send + Sync {
    /// Opens the upstream connection for one client.
    fn open(&self, meta: &ClientMeta) -> BoxFuture<'static, Result<Conn, TransportError>>;
}

/// A connector with a fixed destination and default per-connection settings: what a
/// standalone client uses when the SOCKS client's target and arguments should not decide
/// where the transport goes (`ptkit client … --server`, `--url`).
#[derive(Clone)]
pub struct Pinned {
    inner: std::sync::Arc<dyn Connector>,
    settings: Args,
    dest: Option<Target>,
}

impl std::fmt::Debug for Pinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pinned")
            .field("transport", &self.inner.name())
            .field("settings", &self.settings)
            .finish()
    }
}

impl Pinned {
    /// Wraps `inner`: `settings` apply when the caller sends none; `dest`, when set, replaces
    /// the caller's destination (when unset, the destination is dropped so the transport
    /// uses its own settings, e.g. a `url`).
    pub fn new(inner: std::sync::Arc<dyn Connector>, settings: Args, dest: Option<Target>) -> Self {
        Pinned {
            inner,
            settings,
            dest,
        }
    }
}

impl Connector for Pinned {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn is_bound(&self) -> bool {
        true
    }

    fn connect(
        &self,
        settings: &Args,
        _dest: Option<Target>,
    ) -> BoxFuture<'static, Result<Conn, TransportError>> {
        let settings = if settings.is_empty() {
            &self.settings
        } else {
            settings
        };
        self.inner.connect(settings, self.dest.clone())
    }
}
