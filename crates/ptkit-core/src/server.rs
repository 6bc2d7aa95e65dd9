//! Running a server transport: accept, handshake, open the upstream, relay — with stats and a
//! graceful stop. Every driver (Tor managed mode, standalone, IPC) uses [`proxy`].

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::redact::sensitive;
use crate::relay::{RelayConfig, relay_streams};
use crate::shutdown::Shutdown;
use crate::stats::{Stats, StatsCounter};
use crate::transport::{TransportListener, Upstream};

/// Limits for a running server.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// How long a client may take to finish the transport handshake.
    pub handshake_timeout: Duration,
    /// Most connections in the handshake or relaying at once; further accepts wait.
    pub max_connections: usize,
    /// Relay buffers.
    pub relay: RelayConfig,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            handshake_timeout: Duration::from_secs(30),
            max_connections: 16 * 1024,
            relay: RelayConfig::default(),
        }
    }
}

/// A running server: stop it, read its stats.
#[derive(Debug, Clone)]
pub struct ServerManager {
    shutdown: Shutdown,
    stats: Arc<StatsCounter>,
}

impl ServerManager {
    /// Stops accepting and waits up to `grace` for open connections to finish, then cuts them.
    pub async fn stop(&self, grace: Duration) {
        self.shutdown.stop_accepting();
        if !self.shutdown.drained(grace).await {
            self.shutdown.abort();
            self.shutdown.drained(Duration::from_secs(5)).await;
        }
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        self.stats.snapshot()
    }
}

/// Serves `listener`: each accepted connection's handshake runs in its own task, then the
/// stream is relayed to a fresh `upstream` connection.
pub fn proxy(
    mut listener: Box<dyn TransportListener>,
    upstream: Arc<dyn Upstream>,
    stats: Arc<StatsCounter>,
    shutdown: Shutdown,
    limits: ServerLimits,
) -> ServerManager {
    let manager = ServerManager {
        shutdown: shutdown.clone(),
        stats: stats.clone(),
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let sd = shutdown.clone();
    shutdown.spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let pending = tokio::select! {
                _ = sd.accepting_stopped() => return,
                r = listener.accept() => r,
            };
            let pending = match pending {
                Ok(p) => p,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let stats = stats.clone();
            let upstream = upstream.clone();
            let limits = limits.clone();
            sd.spawn(async move {
                let _permit = permit;
                let _open = stats.open();
                let accepted = match tokio::time::timeout(limits.handshake_timeout, pending).await {
                    Ok(Ok(a)) => a,
                    Ok(Err(e)) => {
                        stats.fail(e.kind());
                        info!("transport handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        stats.fail("handshake_timeout");
                        info!("transport handshake timed out");
                        return;
                    }
                };
                let mut conn = accepted.conn;
                let mut up = match upstream.open(&accepted.meta).await {
                    Ok(c) => c,
                    Err(e) => {
                        stats.fail("upstream");
                        warn!(
                            "cannot open upstream for client {}: {e}",
                            sensitive(
                                accepted
                                    .meta
                                    .client_addr
                                    .map(|a| a.to_string())
                                    .unwrap_or_default()
                            )
                        );
                        return;
                    }
                };
                match relay_streams(&mut *conn, &mut *up, &limits.relay, Some(&stats)).await {
                    Ok(t) => debug!(up = t.up, down = t.down, "connection closed"),
                    Err(e) => debug!("connection ended with error: {e}"),
                }
            });
        }
    });
    manager
}
