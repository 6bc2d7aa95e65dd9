//! The server end: each accepted transport connection carries one mux session; each stream
//! names a destination, which the [`Policy`] allows or refuses, and is then relayed.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ptkit_core::net::DirectDialer;
use ptkit_core::redact::sensitive;
use ptkit_core::relay::{RelayConfig, relay_streams};
use ptkit_core::shutdown::Shutdown;
use ptkit_core::{Conn, Host, StatsCounter, Target, TransportListener};
use ptkit_snowflake::smux::{Role, SmuxConfig};
use ptkit_tor::socks::Reply;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::header::{MAX_REQUEST_LEN, MuxReply, MuxRequest};
use crate::policy::{Decision, Policy};
use crate::session::{MuxSession, MuxStream, default_smux_config};

/// Settings of a [`MuxServer`].
#[derive(Debug, Clone)]
pub struct MuxServerConfig {
    /// Which destinations streams may reach (default: none).
    pub policy: Policy,
    /// How destinations are dialled (source addresses, connect timeout).
    pub dialer: DirectDialer,
    /// Time a stream has to send its header.
    pub header_timeout: Duration,
    /// Time a transport connection has to finish its handshake.
    pub handshake_timeout: Duration,
    /// Most transport connections (sessions) at once; further accepts wait.
    pub max_sessions: usize,
    /// smux settings (`max_streams` bounds streams per session).
    pub smux: SmuxConfig,
    /// Relay buffers.
    pub relay: RelayConfig,
}

impl Default for MuxServerConfig {
    fn default() -> Self {
        MuxServerConfig {
            policy: Policy::deny_all(),
            dialer: DirectDialer::default(),
            header_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(30),
            max_sessions: 4096,
            smux: default_smux_config(),
            relay: RelayConfig::default(),
        }
    }
}

/// Serves mux sessions. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MuxServer {
    config: Arc<MuxServerConfig>,
    stats: Arc<StatsCounter>,
}

/// Why a stream was not connected: the reply sent, and a metrics label.
struct Refusal(Reply, &'static str);

impl MuxServer {
    /// A server with `config`; per-stream counters go to `stats`.
    pub fn new(config: MuxServerConfig, stats: Arc<StatsCounter>) -> Self {
        if config.policy.is_deny_all() {
            tracing::warn!("mux server policy allows no destination: every stream is refused");
        }
        MuxServer {
            config: Arc::new(config),
            stats,
        }
    }

    /// Per-stream counters.
    pub fn stats(&self) -> &Arc<StatsCounter> {
        &self.stats
    }

    /// Runs one session over `conn` until it ends; each stream is served in its own task
    /// tracked by `shutdown`.
    pub async fn serve_conn(&self, conn: Conn, shutdown: Shutdown) {
        let (session, mut incoming) =
            MuxSession::start(conn, Role::Server, self.config.smux.clone());
        loop {
            let stream = tokio::select! {
                _ = shutdown.aborted() => break,
                s = incoming.recv() => s,
            };
            let Some(stream) = stream else { break };
            let this = self.clone();
            shutdown.spawn(async move { this.serve_stream(stream).await });
        }
        session.close();
    }

    /// Reads one stream's header, applies the policy, dials, replies and relays.
    pub async fn serve_stream(&self, mut stream: MuxStream) {
        let _open = self.stats.open();
        let (request, early) = match tokio::time::timeout(
            self.config.header_timeout,
            read_header(&mut stream),
        )
        .await
        {
            Ok(Ok(Ok(r))) => r,
            Ok(Ok(Err(e))) => {
                self.stats.fail(e.kind());
                tracing::info!("mux stream header refused: {e}");
                let _ = stream.write_all(&e.reply().encode()).await;
                return;
            }
            Ok(Err(_)) => {
                self.stats.fail("header_io");
                return;
            }
            Err(_) => {
                self.stats.fail("header_timeout");
                return;
            }
        };
        let target = request.target;
        let mut remote = match self.dial(&target).await {
            Ok(s) => s,
            Err(Refusal(reply, label)) => {
                self.stats.fail(label);
                tracing::info!(
                    "mux stream to {} refused: {}",
                    sensitive(&target),
                    reply.describe()
                );
                let _ = stream
                    .write_all(&MuxReply::from_socks(reply).encode())
                    .await;
                return;
            }
        };
        if stream
            .write_all(&MuxReply::SUCCEEDED.encode())
            .await
            .is_err()
        {
            return;
        }
        if !early.is_empty() && remote.write_all(&early).await.is_err() {
            return;
        }
        if let Err(e) = relay_streams(
            &mut stream,
            &mut remote,
            &self.config.relay,
            Some(&self.stats),
        )
        .await
        {
            tracing::debug!("mux stream ended with error: {e}");
        }
    }

    async fn dial(&self, target: &Target) -> Result<TcpStream, Refusal> {
        let policy = &self.config.policy;
        let addrs: Vec<SocketAddr> = match (&target.host, policy.check(target)) {
            (_, Decision::Deny) => return Err(Refusal(Reply::NotAllowed, "not_allowed")),
            (Host::Ip(ip), _) => vec![SocketAddr::new(*ip, target.port)],
            (Host::Name(name), decision) => {
                let resolved: Vec<SocketAddr> =
                    match tokio::net::lookup_host((name.as_str(), target.port)).await {
                        Ok(a) => a.collect(),
                        Err(_) => return Err(Refusal(Reply::HostUnreachable, "resolve")),
                    };
                if resolved.is_empty() {
                    return Err(Refusal(Reply::HostUnreachable, "resolve"));
                }
                if decision == Decision::Allow {
                    resolved
                } else {
                    let allowed: Vec<SocketAddr> = resolved
                        .into_iter()
                        .filter(|a| policy.allows_ip(a.ip(), a.port()))
                        .collect();
                    if allowed.is_empty() {
                        return Err(Refusal(Reply::NotAllowed, "not_allowed"));
                    }
                    allowed
                }
            }
        };
        let mut last = io::Error::new(io::ErrorKind::HostUnreachable, "no address");
        for addr in addrs {
            match self.config.dialer.connect_addr(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(Refusal(Reply::from_io_error(&last), "dial"))
    }

    /// Accepts transport connections on `listener` until `shutdown` stops accepting; each
    /// one's handshake and session run in their own task.
    pub fn serve_listener(&self, mut listener: Box<dyn TransportListener>, shutdown: Shutdown) {
        let this = self.clone();
        let sd = shutdown.clone();
        let permits = Arc::new(tokio::sync::Semaphore::new(self.config.max_sessions.max(1)));
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
                        tracing::warn!("mux accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let this = this.clone();
                let sd2 = sd.clone();
                sd.spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(this.config.handshake_timeout, pending).await {
                        Ok(Ok(accepted)) => this.serve_conn(accepted.conn, sd2).await,
                        Ok(Err(e)) => {
                            this.stats.fail(e.kind());
                            tracing::info!("transport handshake failed: {e}");
                        }
                        Err(_) => {
                            this.stats.fail("handshake_timeout");
                        }
                    }
                });
            }
        });
    }
}

/// Reads the request header (bytes past it are returned for the destination).
async fn read_header(
    stream: &mut MuxStream,
) -> io::Result<Result<(MuxRequest, Vec<u8>), crate::header::HeaderError>> {
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; MAX_REQUEST_LEN];
    loop {
        match MuxRequest::decode(&buf) {
            Ok(Some((req, used))) => return Ok(Ok((req, buf.split_off(used)))),
            Ok(None) => {}
            Err(e) => return Ok(Err(e)),
        }
        // Never read far past the longest header.
        let want = MAX_REQUEST_LEN.saturating_sub(buf.len()).max(1);
        let n = stream.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
