//! The client role's SOCKS port: handshake (sans-IO core in [`crate::socks::server`]), open
//! the transport connection, reply, relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ptkit_core::redact::sensitive;
use ptkit_core::relay::{RelayConfig, relay_streams};
use ptkit_core::shutdown::Shutdown;
use ptkit_core::{Connector, StatsCounter, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::socks::Reply;
use crate::socks::server::{ErrorKind, Handshake, Request, reply_for};

/// Limits of the SOCKS port.
#[derive(Debug, Clone)]
pub struct SocksLimits {
    /// Time for the whole SOCKS handshake (item S-1).
    pub handshake_timeout: Duration,
    /// Time for the transport to connect before the client gets a failure reply.
    pub connect_timeout: Duration,
    /// Most bytes buffered during the handshake (the largest legal message is ~2 KiB).
    pub max_handshake_bytes: usize,
    /// Most connections at once; further accepts wait.
    pub max_connections: usize,
    /// Relay buffers.
    pub relay: RelayConfig,
}

impl Default for SocksLimits {
    fn default() -> Self {
        SocksLimits {
            handshake_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(60),
            max_handshake_bytes: 4096,
            max_connections: 16 * 1024,
            relay: RelayConfig::default(),
        }
    }
}

/// Why one SOCKS connection failed before relaying.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocksFrontError {
    /// The handshake was malformed or unsupported.
    #[error(transparent)]
    Handshake(#[from] ErrorKind),
    /// The client took too long.
    #[error("SOCKS handshake timed out")]
    Timeout,
    /// Reading or writing the client socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads and answers a SOCKS handshake on `stream`; returns the request once complete.
/// Failure replies are sent before returning an error.
pub async fn read_request(
    stream: &mut TcpStream,
    limits: &SocksLimits,
) -> Result<Request, SocksFrontError> {
    let mut hs = Handshake::new();
    let mut buf = BytesMut::with_capacity(512);
    loop {
        if buf.len() >= limits.max_handshake_bytes {
            return Err(ErrorKind::TooLong.into());
        }
        let n = stream.read_buf(&mut buf).await?;
        if n == 0 {
            return Err(ErrorKind::Eof.into());
        }
        loop {
            match hs.step(&buf) {
                Ok(action) if action.drain == 0 && action.finished.is_none() => break,
                Ok(action) => {
                    let _ = buf.split_to(action.drain);
                    if !action.reply.is_empty() {
                        stream.write_all(&action.reply).await?;
                    }
                    if let Some(request) = action.finished {
                        return Ok(request);
                    }
                }
                Err(e) => {
                    if !e.reply.is_empty() {
                        let _ = stream.write_all(&e.reply).await;
                    }
                    return Err(e.kind.into());
                }
            }
        }
    }
}

fn reply_code(e: &TransportError) -> Reply {
    match e {
        TransportError::Io(io) => Reply::from_io_error(io),
        _ => Reply::GeneralFailure,
    }
}

/// Serves one accepted SOCKS client to completion.
pub async fn serve_connection(
    mut stream: TcpStream,
    connector: Arc<dyn Connector>,
    stats: Arc<StatsCounter>,
    limits: SocksLimits,
) {
    let _open = stats.open();
    let request =
        match tokio::time::timeout(limits.handshake_timeout, read_request(&mut stream, &limits))
            .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(SocksFrontError::Handshake(kind))) => {
                stats.fail(kind.label());
                info!("SOCKS handshake failed: {kind}");
                return;
            }
            Ok(Err(e)) => {
                stats.fail("socks_io");
                debug!("SOCKS handshake failed: {e}");
                return;
            }
            Err(_) => {
                stats.fail("socks_timeout");
                info!("SOCKS handshake timed out");
                return;
            }
        };
    let connecting = connector.connect(&request.args, Some(request.target.clone()));
    let outcome = match tokio::time::timeout(limits.connect_timeout, connecting).await {
        Ok(r) => r,
        Err(_) => Err(TransportError::Io(std::io::ErrorKind::TimedOut.into())),
    };
    let mut remote = match outcome {
        Ok(c) => c,
        Err(e) => {
            let code = reply_code(&e);
            stats.fail(match e {
                TransportError::Io(_) => "dial",
                _ => e.kind(),
            });
            warn!(
                "{} connection to {} failed: {e}",
                connector.name(),
                sensitive(&request.target)
            );
            let _ = stream.write_all(&reply_for(&request, code)).await;
            return;
        }
    };
    // Item S-7: success only once the transport connection exists.
    if stream
        .write_all(&reply_for(&request, Reply::Succeeded))
        .await
        .is_err()
    {
        return;
    }
    match relay_streams(&mut stream, &mut *remote, &limits.relay, Some(&stats)).await {
        Ok(t) => debug!(up = t.up, down = t.down, "SOCKS connection closed"),
        Err(e) => debug!("SOCKS connection ended with error: {e}"),
    }
}

/// Accepts SOCKS clients on `listener` until `shutdown` stops accepting.
pub fn serve(
    listener: TcpListener,
    connector: Arc<dyn Connector>,
    stats: Arc<StatsCounter>,
    shutdown: Shutdown,
    limits: SocksLimits,
) {
    let sd = shutdown.clone();
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    shutdown.spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let accepted = tokio::select! {
                _ = sd.accepting_stopped() => return,
                r = listener.accept() => r,
            };
            let (stream, peer): (TcpStream, SocketAddr) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!("SOCKS accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            debug!("SOCKS connection from {}", sensitive(peer));
            let _ = stream.set_nodelay(true);
            let (connector, stats, limits) = (connector.clone(), stats.clone(), limits.clone());
            sd.spawn(async move {
                let _permit = permit;
                serve_connection(stream, connector, stats, limits).await;
            });
        }
    });
}
