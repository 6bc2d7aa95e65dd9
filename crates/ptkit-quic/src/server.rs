//! The [`TunnelServer`] (aggregator): accepts QUIC connections with bounded concurrency,
//! authenticates each under a deadline, registers it with the [`TunnelManager`], and hands
//! every stream the client opens to the [`Router`]. Stops gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ptkit_core::redact::sensitive;
use ptkit_core::shutdown::Shutdown;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::auth::{AuthenticationHandler, ServerAuthError, server_authenticate};
use crate::error::{Error, Result};
use crate::manager::{TunnelEvent, TunnelManager};
use crate::proto::{AuthMessage, RefusalCode, Reply};
use crate::routing::Router;
use crate::stream::{QuicStream, read_header, write_reply};
use crate::tls::{Knobs, ServerTls, StreamBudget};
use crate::{CLOSE_AUTH_REFUSED, CLOSE_AUTH_TIMEOUT, CLOSE_SHUTDOWN};

/// Server limits and timeouts.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// QUIC transport knobs (the server sends no keep-alives by default: clients do).
    pub knobs: Knobs,
    /// QUIC handshake plus authentication must finish within this.
    pub handshake_timeout: Duration,
    /// A stream's header must arrive within this.
    pub header_timeout: Duration,
    /// Most tunnels (authenticated or in their handshake) at once; further connection
    /// attempts are refused at the QUIC level.
    pub max_tunnels: usize,
    /// Answer new connections with a QUIC Retry first (proves the client's address; costs
    /// one round trip).
    pub retry: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            knobs: Knobs {
                keepalive: None,
                ..Knobs::default()
            },
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            max_tunnels: 10_000,
            retry: false,
        }
    }
}

/// A running aggregator.
#[derive(Clone)]
pub struct TunnelServer {
    endpoint: quinn::Endpoint,
    manager: Arc<TunnelManager>,
    shutdown: Shutdown,
}

impl std::fmt::Debug for TunnelServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelServer")
            .field("local_addr", &self.endpoint.local_addr().ok())
            .field("tunnels", &self.manager.len())
            .finish()
    }
}

impl TunnelServer {
    /// Binds `listen` (UDP) and starts serving in tasks tracked by `shutdown`.
    pub fn start(
        listen: SocketAddr,
        tls: &ServerTls,
        options: ServerOptions,
        auth: Arc<dyn AuthenticationHandler>,
        router: Arc<dyn Router>,
        shutdown: Shutdown,
    ) -> Result<Self> {
        let config = tls.quinn_config(&options.knobs)?;
        let endpoint = quinn::Endpoint::server(config, listen)?;
        Ok(Self::start_on(endpoint, options, auth, router, shutdown))
    }

    /// Serves on an existing endpoint (which must have a server configuration).
    pub fn start_on(
        endpoint: quinn::Endpoint,
        options: ServerOptions,
        auth: Arc<dyn AuthenticationHandler>,
        router: Arc<dyn Router>,
        shutdown: Shutdown,
    ) -> Self {
        let manager = Arc::new(TunnelManager::new());
        let server = TunnelServer {
            endpoint: endpoint.clone(),
            manager: manager.clone(),
            shutdown: shutdown.clone(),
        };
        let permits = Arc::new(Semaphore::new(options.max_tunnels.max(1)));
        let sd = shutdown.clone();
        let options = Arc::new(options);
        shutdown.spawn(async move {
            loop {
                let incoming = tokio::select! {
                    _ = sd.accepting_stopped() => break,
                    i = endpoint.accept() => match i {
                        Some(i) => i,
                        None => break,
                    },
                };
                if options.retry && !incoming.remote_address_validated() {
                    let _ = incoming.retry();
                    continue;
                }
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    manager.emit(TunnelEvent::Refused {
                        remote: incoming.remote_address(),
                        kind: "limit".into(),
                        reason: "too many tunnels".into(),
                    });
                    warn!("refused a connection: {} tunnels open", options.max_tunnels);
                    incoming.refuse();
                    continue;
                };
                let (manager, auth, router, options, sd2) = (
                    manager.clone(),
                    auth.clone(),
                    router.clone(),
                    options.clone(),
                    sd.clone(),
                );
                sd.spawn(async move {
                    let _permit = permit;
                    serve_tunnel(incoming, manager, auth, router, options, sd2).await;
                });
            }
            // No new connections once accepting stopped (existing tunnels keep going).
            endpoint.set_server_config(None);
        });
        server
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.endpoint.local_addr()?)
    }

    /// The live tunnels.
    pub fn manager(&self) -> &Arc<TunnelManager> {
        &self.manager
    }

    /// The endpoint (for statistics).
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// Graceful stop: accept no new tunnels, let streams finish for up to `grace`, then
    /// close every tunnel (clients see "server shutting down") and cut what is left.
    pub async fn stop(&self, grace: Duration) {
        self.shutdown.stop_accepting();
        self.endpoint.set_server_config(None);
        // Tunnels may finish on their own during the grace period.
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline && !self.manager.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.endpoint.close(
            CLOSE_SHUTDOWN.try_into().unwrap_or_default(),
            b"server shutting down",
        );
        self.shutdown.abort();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

async fn serve_tunnel(
    incoming: quinn::Incoming,
    manager: Arc<TunnelManager>,
    auth: Arc<dyn AuthenticationHandler>,
    router: Arc<dyn Router>,
    options: Arc<ServerOptions>,
    shutdown: Shutdown,
) {
    let remote = incoming.remote_address();
    let mut conn_slot: Option<quinn::Connection> = None;
    let handshake = async {
        let conn = incoming.await.map_err(Error::from)?;
        conn_slot = Some(conn.clone());
        manager.emit(TunnelEvent::Connected { remote });
        Ok::<_, Error>((conn.clone(), server_authenticate(&conn, &*auth).await))
    };
    let outcome = tokio::time::timeout(options.handshake_timeout, handshake).await;
    let (conn, identity) = match outcome {
        Err(_) => {
            info!(
                "client {} did not finish the handshake within {:?}",
                sensitive(remote),
                options.handshake_timeout
            );
            manager.emit(TunnelEvent::Refused {
                remote,
                kind: RefusalCode::Timeout.label().into(),
                reason: "handshake deadline exceeded".into(),
            });
            if let Some(c) = conn_slot {
                c.close(
                    CLOSE_AUTH_TIMEOUT.try_into().unwrap_or_default(),
                    b"authentication deadline exceeded",
                );
            }
            return;
        }
        Ok(Err(e)) => {
            // TLS failures (unknown CA, expired client certificate, wrong ALPN) land here.
            info!("handshake with {} failed: {e}", sensitive(remote));
            manager.emit(TunnelEvent::Refused {
                remote,
                kind: e.kind().into(),
                reason: e.to_string(),
            });
            return;
        }
        Ok(Ok((conn, Err(ServerAuthError::Io(e))))) => {
            debug!("authentication with {} failed: {e}", sensitive(remote));
            manager.emit(TunnelEvent::Refused {
                remote,
                kind: e.kind().into(),
                reason: e.to_string(),
            });
            conn.close(0u32.into(), b"authentication failed");
            return;
        }
        Ok(Ok((conn, Err(ServerAuthError::Refused(refusal, mut ch))))) => {
            info!(
                "refused client {}: {} ({})",
                sensitive(remote),
                refusal.reason,
                refusal.code.label()
            );
            manager.emit(TunnelEvent::Refused {
                remote,
                kind: refusal.code.label().into(),
                reason: refusal.reason.clone(),
            });
            let _ = ch
                .send(&AuthMessage::Refused(refusal.code, refusal.reason.clone()))
                .await;
            ch.finish();
            // Give the client a moment to read the refusal and close; then close with the
            // reason in the CONNECTION_CLOSE as well.
            let _ = tokio::time::timeout(Duration::from_millis(500), conn.closed()).await;
            conn.close(
                CLOSE_AUTH_REFUSED.try_into().unwrap_or_default(),
                refusal.reason.as_bytes(),
            );
            return;
        }
        Ok(Ok((conn, Ok(identity)))) => (conn, identity),
    };
    let ctx = manager.register(identity, remote, conn.clone());
    debug!(identity = %ctx.identity, "tunnel authenticated");
    let budget = StreamBudget::new(&conn, &options.knobs);
    let reason = loop {
        let (send, mut recv) = tokio::select! {
            s = conn.accept_bi() => match s {
                Ok(s) => s,
                Err(e) => break e.to_string(),
            },
            _ = shutdown.aborted() => break "server shutting down".to_owned(),
        };
        let router = router.clone();
        let ctx2 = ctx.clone();
        let header_timeout = options.header_timeout;
        let slot = budget.opened();
        shutdown.spawn(async move {
            let _slot = slot;
            let mut send = send;
            let route = match tokio::time::timeout(header_timeout, read_header(&mut recv)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    debug!("bad stream header: {e}");
                    let code = if matches!(&e, Error::Protocol(p) if p.kind() == "unsupported") {
                        RefusalCode::UnknownRoute
                    } else {
                        RefusalCode::Malformed
                    };
                    let _ = write_reply(&mut send, &Reply::Refused(code, e.to_string())).await;
                    let _ = send.finish();
                    return;
                }
                Err(_) => {
                    let _ = send.reset(0u32.into());
                    return;
                }
            };
            if let Err(e) = router.route(ctx2, route, QuicStream::new(send, recv)).await {
                debug!("stream ended: {e}");
            }
        });
    };
    manager.unregister(&ctx, reason);
}
