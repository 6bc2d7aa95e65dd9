//! Direct TCP: the default [`Dialer`], a fixed-target [`Upstream`], and the plain TCP
//! [`TransportListener`] every TCP-based server transport starts from.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::target::{Host, Target};
use crate::transport::{BoxFuture, ClientMeta, Conn, Dialer, TransportError, Upstream};

/// Default time allowed for a TCP connect.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Dials TCP directly, optionally from fixed source addresses
/// (`TOR_PT_OUTBOUND_BIND_ADDRESS_V4/_V6`); loopback destinations never get a source bind.
#[derive(Debug, Clone)]
pub struct DirectDialer {
    /// Source address for IPv4 destinations.
    pub bind_v4: Option<IpAddr>,
    /// Source address for IPv6 destinations.
    pub bind_v6: Option<IpAddr>,
    /// Connect timeout.
    pub timeout: Duration,
    /// A source range to bind every connection in (any destination, loopback included):
    /// a random address of the matching family per connection.
    pub source: Option<crate::source::SourceRange>,
}

impl Default for DirectDialer {
    fn default() -> Self {
        DirectDialer {
            bind_v4: None,
            bind_v6: None,
            timeout: DEFAULT_CONNECT_TIMEOUT,
            source: None,
        }
    }
}

impl DirectDialer {
    /// Connects to one socket address.
    pub async fn connect_addr(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        let ranged = self
            .source
            .filter(|r| r.is_ipv4() == addr.is_ipv4())
            .map(|r| r.pick_random());
        let bind = if ranged.is_some() {
            ranged
        } else if addr.ip().is_loopback() {
            None
        } else if addr.is_ipv4() {
            self.bind_v4
        } else {
            self.bind_v6
        };
        if let Some(ip) = bind {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = tokio::time::timeout(self.timeout, socket.connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Resolves `target` if needed and connects to the first address that answers.
    pub async fn connect(&self, target: &Target) -> io::Result<TcpStream> {
        match &target.host {
            Host::Ip(ip) => self.connect_addr(SocketAddr::new(*ip, target.port)).await,
            Host::Name(name) => {
                let mut last =
                    io::Error::new(io::ErrorKind::NotFound, "host name resolved to nothing");
                for addr in tokio::net::lookup_host((name.as_str(), target.port)).await? {
                    match self.connect_addr(addr).await {
                        Ok(s) => return Ok(s),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }
}

impl Dialer for DirectDialer {
    fn dial(&self, target: Target) -> BoxFuture<'static, io::Result<Conn>> {
        let this = self.clone();
        Box::pin(async move { Ok(Box::new(this.connect(&target).await?) as Conn) })
    }
}

/// Sends every stream to one fixed TCP target (standalone `--target`, or `TOR_PT_ORPORT`
/// when there is no ExtORPort).
#[derive(Debug, Clone)]
pub struct TcpUpstream {
    /// Where to connect.
    pub target: Target,
    /// How.
    pub dialer: DirectDialer,
}

impl Upstream for TcpUpstream {
    fn open(&self, _meta: &ClientMeta) -> BoxFuture<'static, Result<Conn, TransportError>> {
        let this = self.clone();
        Box::pin(async move { Ok(Box::new(this.dialer.connect(&this.target).await?) as Conn) })
    }
}

/// Binds a TCP listener with the options every server wants.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Most connections a TCP front end handles at once by default; further accepts wait.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16 * 1024;

/// The one TCP accept loop: accepts on `listener` until `shutdown` stops accepting, with at
/// most `max_connections` handled at once (further accepts wait for a slot), and runs
/// `handle` for each connection in its own tracked task. Accept errors (EMFILE and friends)
/// are logged and backed off instead of spinning. `what` names the listener in logs.
pub fn serve_tcp<F, Fut>(
    listener: TcpListener,
    shutdown: crate::shutdown::Shutdown,
    max_connections: usize,
    what: &'static str,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let tasks = shutdown.clone();
    shutdown.spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let accepted = tokio::select! {
                _ = tasks.accepting_stopped() => return,
                r = listener.accept() => r,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("{what} accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let work = handle(stream, peer);
            tasks.spawn(async move {
                let _permit = permit;
                work.await;
            });
        }
    });
}
