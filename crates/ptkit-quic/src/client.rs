//! The client: one authenticated tunnel ([`TunnelClient::connect`]), and a resilient runner
//! ([`ClientRunner`]) that keeps a tunnel up — reconnecting with exponential backoff and
//! jitter — serves local forward ports through it, re-announces its exposed services after
//! every reconnect, and answers the aggregator's reverse streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ptkit_core::StatsCounter;
use ptkit_core::redact::sensitive;
use ptkit_core::relay::{RelayConfig, relay};
use ptkit_core::shutdown::Shutdown;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};

use crate::auth::{AuthenticationClient, client_authenticate, refusal_from_close};
use crate::error::{Error, Result};
use crate::proto::{Reply, Route, TcpTarget};
use crate::routing::RoutingClient;
use crate::stream::{QuicStream, open_route, read_header};
use crate::tls::{ClientTls, Knobs, StreamBudget};

/// Client timeouts and reconnection policy.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// QUIC knobs (keep-alive every 5 s and a 30 s idle timeout by default).
    pub knobs: Knobs,
    /// QUIC handshake plus authentication must finish within this.
    pub connect_timeout: Duration,
    /// First reconnection delay.
    pub backoff_min: Duration,
    /// Longest reconnection delay.
    pub backoff_max: Duration,
    /// How long a local connection waits for a tunnel while reconnecting.
    pub wait_for_tunnel: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            knobs: Knobs::default(),
            connect_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            wait_for_tunnel: Duration::from_secs(10),
        }
    }
}

/// Delay before reconnection attempt `attempt` (0-based): `min · 2^attempt` capped at `max`,
/// then scaled by a random factor in [0.5, 1.0] (jitter, so many clients of a restarted
/// aggregator do not return in lockstep).
pub fn backoff(attempt: u32, min: Duration, max: Duration, random: u32) -> Duration {
    let base = min
        .checked_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max);
    let factor = 0.5 + f64::from(random) / f64::from(u32::MAX) * 0.5;
    base.mul_f64(factor)
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut b);
    u32::from_le_bytes(b)
}

/// Connects tunnels to one aggregator.
#[derive(Clone)]
pub struct TunnelClient {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    server: SocketAddr,
    server_name: String,
    auth: Arc<dyn AuthenticationClient>,
    options: ClientOptions,
}

impl std::fmt::Debug for TunnelClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelClient")
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// An authenticated tunnel.
#[derive(Debug, Clone)]
pub struct Tunnel {
    /// The connection.
    pub conn: quinn::Connection,
    /// The identity the aggregator accepted.
    pub identity: String,
}

impl Tunnel {
    /// Opens a forward stream to `target` (the aggregator's policy decides).
    pub async fn forward(&self, target: TcpTarget) -> Result<QuicStream> {
        Ok(open_route(&self.conn, &Route::Tcp(target)).await?.0)
    }

    /// Opens a stream to the aggregator's upstream (the pluggable transport's route).
    pub async fn upstream(&self) -> Result<QuicStream> {
        Ok(open_route(&self.conn, &Route::Upstream).await?.0)
    }

    /// Asks the aggregator to expose a port for service `name`; returns the port and the
    /// control stream (finish or drop it to end the exposure).
    pub async fn expose(&self, name: &str) -> Result<(u16, QuicStream)> {
        let (s, reply) = open_route(&self.conn, &Route::Expose(name.to_owned())).await?;
        match reply {
            Reply::Ok { port: Some(p) } => Ok((p, s)),
            _ => Err(Error::Misbehaved("expose reply without a port".into())),
        }
    }

    /// Serves streams the aggregator opens with `router` until the tunnel closes (raising
    /// the stream limit as [`Knobs::default`] says).
    pub async fn serve_incoming(&self, router: Arc<dyn RoutingClient>, shutdown: &Shutdown) {
        self.serve_incoming_with(router, shutdown, &Knobs::default())
            .await
    }

    async fn serve_incoming_with(
        &self,
        router: Arc<dyn RoutingClient>,
        shutdown: &Shutdown,
        knobs: &Knobs,
    ) {
        let budget = StreamBudget::new(&self.conn, knobs);
        loop {
            let (send, mut recv) = tokio::select! {
                s = self.conn.accept_bi() => match s {
                    Ok(s) => s,
                    Err(_) => return,
                },
                _ = shutdown.aborted() => return,
            };
            let router = router.clone();
            let slot = budget.opened();
            shutdown.spawn(async move {
                let _slot = slot;
                let route =
                    match tokio::time::timeout(Duration::from_secs(10), read_header(&mut recv))
                        .await
                    {
                        Ok(Ok(r)) => r,
                        _ => return,
                    };
                if let Err(e) = router.route(route, QuicStream::new(send, recv)).await {
                    debug!("reverse stream ended: {e}");
                }
            });
        }
    }
}

impl TunnelClient {
    /// A client of the aggregator at `server` (TLS name `server_name`), from a local UDP
    /// socket bound to `bind` (`0.0.0.0:0` or `[::]:0`).
    pub fn new(
        bind: SocketAddr,
        server: SocketAddr,
        server_name: impl Into<String>,
        tls: &ClientTls,
        auth: Arc<dyn AuthenticationClient>,
        options: ClientOptions,
    ) -> Result<Self> {
        let endpoint = quinn::Endpoint::client(bind)?;
        Self::with_endpoint(endpoint, server, server_name, tls, auth, options)
    }

    /// Like [`TunnelClient::new`] on an existing endpoint (shared by many clients).
    pub fn with_endpoint(
        endpoint: quinn::Endpoint,
        server: SocketAddr,
        server_name: impl Into<String>,
        tls: &ClientTls,
        auth: Arc<dyn AuthenticationClient>,
        options: ClientOptions,
    ) -> Result<Self> {
        let config = tls.quinn_config(&options.knobs)?;
        Ok(TunnelClient {
            endpoint,
            config,
            server,
            server_name: server_name.into(),
            auth,
            options,
        })
    }

    /// The aggregator's address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// One connection attempt: QUIC handshake and authentication within the connect
    /// timeout.
    pub async fn connect(&self) -> Result<Tunnel> {
        let attempt = async {
            let connecting =
                self.endpoint
                    .connect_with(self.config.clone(), self.server, &self.server_name)?;
            let conn = connecting.await.map_err(|e| refusal_from_close(e.into()))?;
            let identity = client_authenticate(&conn, &*self.auth).await?;
            Ok::<_, Error>(Tunnel { conn, identity })
        };
        tokio::time::timeout(self.options.connect_timeout, attempt)
            .await
            .map_err(|_| Error::Timeout("tunnel handshake"))?
    }
}

/// What the runner reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A tunnel is up (after a connect or reconnect).
    Connected {
        /// The identity the aggregator accepted.
        identity: String,
    },
    /// The aggregator exposed `port` for service `name`.
    Exposed {
        /// Service name.
        name: String,
        /// The aggregator's port.
        port: u16,
    },
    /// The tunnel went down; reconnecting after `retry_in`.
    Disconnected {
        /// Why.
        reason: String,
        /// The backoff delay.
        retry_in: Duration,
    },
}

/// Keeps a tunnel up and serves forward ports and reverse services through it.
pub struct ClientRunner {
    client: TunnelClient,
    forwards: Vec<(TcpListener, TcpTarget)>,
    exposes: Vec<String>,
    services: Option<Arc<dyn RoutingClient>>,
    relay: RelayConfig,
    stats: Arc<StatsCounter>,
    events: broadcast::Sender<ClientEvent>,
}

impl std::fmt::Debug for ClientRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRunner")
            .field("client", &self.client)
            .field("forwards", &self.forwards.len())
            .field("exposes", &self.exposes)
            .finish()
    }
}

impl ClientRunner {
    /// A runner for `client` with nothing to serve yet.
    pub fn new(client: TunnelClient, stats: Arc<StatsCounter>) -> Self {
        ClientRunner {
            client,
            forwards: Vec::new(),
            exposes: Vec::new(),
            services: None,
            relay: RelayConfig::default(),
            stats,
            events: broadcast::channel(64).0,
        }
    }

    /// Each TCP connection accepted on `listener` goes through the tunnel to `target`.
    pub fn forward(mut self, listener: TcpListener, target: TcpTarget) -> Self {
        self.forwards.push((listener, target));
        self
    }

    /// Asks the aggregator to expose a port for each service name (after every connect),
    /// served by `services`.
    pub fn expose(mut self, names: Vec<String>, services: Arc<dyn RoutingClient>) -> Self {
        self.exposes = names;
        self.services = Some(services);
        self
    }

    /// Receives events.
    pub fn subscribe(&self) -> broadcast::Receiver<ClientEvent> {
        self.events.subscribe()
    }

    /// Runs until `shutdown` aborts (`Ok`) or a fatal error (refused credentials, rejected
    /// certificate, bad configuration: `Err`). Other failures reconnect.
    pub async fn run(self, shutdown: Shutdown) -> Result<()> {
        let (tx, rx) = watch::channel::<Option<Tunnel>>(None);
        let has_forwards = !self.forwards.is_empty();
        for (listener, target) in self.forwards {
            let rx = rx.clone();
            let relay_cfg = self.relay.clone();
            let stats = self.stats.clone();
            let wait = self.client.options.wait_for_tunnel;
            let sd = shutdown.clone();
            shutdown.spawn(async move {
                loop {
                    let (mut tcp, _) = tokio::select! {
                        a = listener.accept() => match a {
                            Ok(a) => a,
                            Err(e) => {
                                warn!("local accept failed: {e}");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                        },
                        _ = sd.accepting_stopped() => return,
                    };
                    let _ = tcp.set_nodelay(true);
                    let mut rx = rx.clone();
                    let target = target.clone();
                    let relay_cfg = relay_cfg.clone();
                    let stats = stats.clone();
                    sd.spawn(async move {
                        let _open = stats.open();
                        let tunnel = tokio::time::timeout(wait, rx.wait_for(Option::is_some))
                            .await
                            .ok()
                            .and_then(|r| r.ok().and_then(|t| t.clone()));
                        let Some(tunnel) = tunnel else {
                            stats.fail("no_tunnel");
                            return;
                        };
                        match tunnel.forward(target).await {
                            Ok(mut s) => {
                                let _ = relay(&mut tcp, &mut s, &relay_cfg, Some(&stats)).await;
                            }
                            Err(e) => {
                                stats.fail(e.kind());
                                info!("forward stream failed: {e}");
                            }
                        }
                    });
                }
            });
        }
        let mut attempt = 0u32;
        loop {
            let result = tokio::select! {
                r = self.client.connect() => r,
                _ = shutdown.aborted() => return Ok(()),
            };
            let reason = match result {
                Err(e) if e.is_fatal() => {
                    warn!("giving up: {e}");
                    return Err(e);
                }
                Err(e) => e.to_string(),
                Ok(tunnel) => {
                    attempt = 0;
                    info!(
                        identity = %tunnel.identity,
                        "tunnel up to {}",
                        sensitive(self.client.server)
                    );
                    let _ = self.events.send(ClientEvent::Connected {
                        identity: tunnel.identity.clone(),
                    });
                    let _ = tx.send(Some(tunnel.clone()));
                    let mut controls = Vec::new();
                    let mut fatal = None;
                    for name in &self.exposes {
                        match tunnel.expose(name).await {
                            Ok((port, ctl)) => {
                                info!(service = %name, port, "aggregator exposed a port");
                                let _ = self.events.send(ClientEvent::Exposed {
                                    name: name.clone(),
                                    port,
                                });
                                controls.push(ctl);
                            }
                            Err(e @ Error::Refused { .. }) => {
                                warn!(service = %name, "aggregator refused to expose: {e}");
                                fatal = Some(e);
                            }
                            Err(e) => warn!(service = %name, "expose failed: {e}"),
                        }
                    }
                    // Nothing left to do when every exposure was refused and nothing is
                    // forwarded: that is a configuration error, not a network one.
                    if let Some(e) = fatal
                        && controls.is_empty()
                        && !has_forwards
                    {
                        return Err(e);
                    }
                    let served = async {
                        match &self.services {
                            Some(s) => {
                                tunnel
                                    .serve_incoming_with(
                                        s.clone(),
                                        &shutdown,
                                        &self.client.options.knobs,
                                    )
                                    .await
                            }
                            None => {
                                let _ = tunnel.conn.closed().await;
                            }
                        }
                        tunnel.conn.closed().await
                    };
                    let why = tokio::select! {
                        e = served => e.to_string(),
                        _ = shutdown.aborted() => {
                            tunnel.conn.close(0u32.into(), b"client shutting down");
                            return Ok(());
                        }
                    };
                    let _ = tx.send(None);
                    drop(controls);
                    why
                }
            };
            let delay = backoff(
                attempt,
                self.client.options.backoff_min,
                self.client.options.backoff_max,
                random_u32(),
            );
            attempt = attempt.saturating_add(1);
            info!("tunnel down ({reason}); reconnecting in {delay:?}");
            let _ = self.events.send(ClientEvent::Disconnected {
                reason,
                retry_in: delay,
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.aborted() => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(backoff(0, min, max, u32::MAX), min);
        assert_eq!(backoff(0, min, max, 0), min / 2);
        assert_eq!(backoff(3, min, max, u32::MAX), Duration::from_millis(800));
        assert_eq!(backoff(30, min, max, u32::MAX), max);
        assert!(backoff(30, min, max, 0) >= max / 2);
    }
}
