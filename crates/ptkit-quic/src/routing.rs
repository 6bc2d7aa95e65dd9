//! Routing: what the aggregator does with a stream a client opens ([`Router`]), and what a
//! client does with a stream the aggregator opens ([`RoutingClient`]).
//!
//! Shipped: [`AggregatorRouter`] (forward routing to TCP targets allowed by a
//! [`ForwardPolicy`], default deny; reverse routing by exposing a port per client service)
//! and [`LocalServices`] (the client's named local targets; the aggregator can only name a
//! service, never make the client dial an arbitrary address).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ptkit_core::net::DirectDialer;
use ptkit_core::redact::sensitive;
use ptkit_core::relay::{RelayConfig, relay};
use ptkit_core::shutdown::Shutdown;
use ptkit_core::{BoxFuture, StatsCounter, Target};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::manager::TunnelContext;
use crate::proto::{RefusalCode, Reply, Route, TargetHost, TcpTarget};
use crate::stream::{QuicStream, open_route, write_reply};

/// Server side: serves one stream a client opened, whose header was `route`. It must write a
/// reply ([`Reply::Ok`] or a refusal) before any payload.
pub trait Router: Send + Sync {
    /// Handles the stream until it ends.
    fn route(
        &self,
        tunnel: Arc<TunnelContext>,
        route: Route,
        stream: QuicStream,
    ) -> BoxFuture<'static, Result<()>>;
}

/// Client side: serves one stream the aggregator opened.
pub trait RoutingClient: Send + Sync {
    /// Handles the stream until it ends.
    fn route(&self, route: Route, stream: QuicStream) -> BoxFuture<'static, Result<()>>;
}

async fn refuse(mut stream: QuicStream, code: RefusalCode, reason: String) -> Result<()> {
    write_reply(&mut stream.send, &Reply::Refused(code, reason)).await?;
    let _ = stream.send.finish();
    Ok(())
}

/// One rule of a [`ForwardPolicy`]: `[IDENTITY@]HOST:PORT`, where each of IDENTITY, HOST
/// and PORT may be `*`. HOST matches an IP literal exactly or a DNS name case-insensitively
/// (the name is matched as sent, before resolution).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    identity: Option<String>,
    host: Option<String>,
    port: Option<u16>,
}

impl AllowRule {
    /// Parses a rule.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::Config(format!("allow rule {s:?}: expected [IDENTITY@]HOST:PORT"));
        let (identity, rest) = match s.rsplit_once('@') {
            Some((i, r)) => (Some(i), r),
            None => (None, s),
        };
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port.is_empty() {
            return Err(bad());
        }
        let wild = |v: &str| (v != "*").then(|| v.to_owned());
        let port = match port {
            "*" => None,
            p => Some(p.parse().map_err(|_| bad())?),
        };
        let host = wild(host).map(|h| match h.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => h.to_ascii_lowercase(),
        });
        Ok(AllowRule {
            identity: identity.and_then(wild),
            host,
            port,
        })
    }

    fn matches(&self, identity: &str, target: &TcpTarget) -> bool {
        if self.identity.as_deref().is_some_and(|i| i != identity) {
            return false;
        }
        if self.port.is_some_and(|p| p != target.port) {
            return false;
        }
        match &self.host {
            None => true,
            Some(h) => {
                let t = match &target.host {
                    TargetHost::V4(a) => a.to_string(),
                    TargetHost::V6(a) => a.to_string(),
                    TargetHost::Dns(n) => n.to_ascii_lowercase(),
                };
                *h == t
            }
        }
    }
}

/// Which forward targets clients may reach. Empty = deny everything (the default).
#[derive(Debug, Clone, Default)]
pub struct ForwardPolicy {
    rules: Vec<AllowRule>,
}

impl ForwardPolicy {
    /// Denies everything.
    pub fn deny_all() -> Self {
        Self::default()
    }

    /// Adds an allow rule.
    pub fn allow(mut self, rule: AllowRule) -> Self {
        self.rules.push(rule);
        self
    }

    /// True when `identity` may reach `target`.
    pub fn allows(&self, identity: &str, target: &TcpTarget) -> bool {
        self.rules.iter().any(|r| r.matches(identity, target))
    }
}

/// Reverse routing settings: where the aggregator exposes ports for clients.
#[derive(Debug, Clone)]
pub struct ReverseConfig {
    /// The address exposed ports bind to (default loopback: publishing them is a decision).
    pub bind_ip: IpAddr,
    /// Ports handed out, lowest free first (snocat's `--ports a:b`).
    pub ports: std::ops::RangeInclusive<u16>,
    /// Most ports one tunnel may expose at once.
    pub max_per_tunnel: usize,
}

impl Default for ReverseConfig {
    fn default() -> Self {
        ReverseConfig {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: 8080..=8090,
            max_per_tunnel: 8,
        }
    }
}

/// The aggregator's router: forward streams by policy, expose ports for reverse routing.
#[derive(Debug, Clone)]
pub struct AggregatorRouter {
    /// Forward routing policy (default deny).
    pub policy: ForwardPolicy,
    /// Reverse routing; `None` refuses `Expose`.
    pub reverse: Option<ReverseConfig>,
    /// How forward targets are dialled.
    pub dialer: DirectDialer,
    /// Relay buffers.
    pub relay: RelayConfig,
    /// Counters (streams are the "connections").
    pub stats: Arc<StatsCounter>,
    /// Exposed listeners stop on this shutdown's abort.
    pub shutdown: Shutdown,
}

impl AggregatorRouter {
    /// A router with `policy`, no reverse routing, default dialer and relay.
    pub fn new(policy: ForwardPolicy, stats: Arc<StatsCounter>, shutdown: Shutdown) -> Self {
        AggregatorRouter {
            policy,
            reverse: None,
            dialer: DirectDialer::default(),
            relay: RelayConfig::default(),
            stats,
            shutdown,
        }
    }
}

async fn splice_tcp(
    mut tcp: TcpStream,
    mut stream: QuicStream,
    relay_cfg: &RelayConfig,
    stats: &StatsCounter,
) {
    let _open = stats.open();
    match relay(&mut tcp, &mut stream, relay_cfg, Some(stats)).await {
        Ok(t) => debug!(up = t.up, down = t.down, "stream closed"),
        Err(e) => debug!("stream ended with error: {e}"),
    }
}

impl Router for AggregatorRouter {
    fn route(
        &self,
        tunnel: Arc<TunnelContext>,
        route: Route,
        stream: QuicStream,
    ) -> BoxFuture<'static, Result<()>> {
        let this = self.clone();
        Box::pin(async move {
            match route {
                Route::Tcp(target) => {
                    if !this.policy.allows(&tunnel.identity, &target) {
                        this.stats.fail("policy");
                        info!(
                            identity = %tunnel.identity,
                            "refused forward stream to {}: not allowed by policy",
                            sensitive(&target)
                        );
                        return refuse(
                            stream,
                            RefusalCode::Policy,
                            format!("the aggregator's policy does not allow {target}"),
                        )
                        .await;
                    }
                    let tcp = match this.dialer.connect(&Target::from(&target)).await {
                        Ok(t) => t,
                        Err(e) => {
                            this.stats.fail("unreachable");
                            return refuse(
                                stream,
                                RefusalCode::Unreachable,
                                format!("cannot connect to {target}: {e}"),
                            )
                            .await;
                        }
                    };
                    let mut stream = stream;
                    write_reply(&mut stream.send, &Reply::Ok { port: None }).await?;
                    splice_tcp(tcp, stream, &this.relay, &this.stats).await;
                    Ok(())
                }
                Route::Expose(name) => this.expose(tunnel, name, stream).await,
                Route::Upstream | Route::Service(_) => {
                    refuse(
                        stream,
                        RefusalCode::UnknownRoute,
                        "this aggregator serves only forward (tcp) and expose routes".into(),
                    )
                    .await
                }
            }
        })
    }
}

impl AggregatorRouter {
    async fn expose(
        &self,
        tunnel: Arc<TunnelContext>,
        name: String,
        stream: QuicStream,
    ) -> Result<()> {
        let Some(rev) = self.reverse.clone() else {
            return refuse(
                stream,
                RefusalCode::UnknownRoute,
                "reverse routing is not enabled on this aggregator".into(),
            )
            .await;
        };
        if tunnel.exposures.load(Ordering::Relaxed) >= rev.max_per_tunnel {
            return refuse(
                stream,
                RefusalCode::Limit,
                format!("at most {} exposed ports per tunnel", rev.max_per_tunnel),
            )
            .await;
        }
        let mut listener = None;
        for port in rev.ports.clone() {
            if let Ok(l) = ptkit_core::net::bind_tcp(SocketAddr::new(rev.bind_ip, port)) {
                // Port 0 in the range means "any": report the one the OS chose.
                let bound = l.local_addr().map(|a| a.port()).unwrap_or(port);
                listener = Some((l, bound));
                break;
            }
        }
        let Some((listener, port)) = listener else {
            return refuse(
                stream,
                RefusalCode::Limit,
                format!("no free port in {}:{}", rev.ports.start(), rev.ports.end()),
            )
            .await;
        };
        tunnel.exposures.fetch_add(1, Ordering::Relaxed);
        let mut stream = stream;
        let result = async {
            write_reply(&mut stream.send, &Reply::Ok { port: Some(port) }).await?;
            info!(identity = %tunnel.identity, service = %name, port, "exposed a port");
            let mut sink = [0u8; 64];
            loop {
                tokio::select! {
                    // The client ends the exposure by finishing (or resetting) its side.
                    r = stream.recv.read(&mut sink) => match r {
                        Ok(Some(_)) => continue,
                        _ => break,
                    },
                    _ = tunnel.conn.closed() => break,
                    _ = self.shutdown.aborted() => break,
                    a = listener.accept() => {
                        let (tcp, _) = match a {
                            Ok(x) => x,
                            Err(e) => {
                                warn!("accept on exposed port {port} failed: {e}");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                        };
                        let _ = tcp.set_nodelay(true);
                        let conn = tunnel.conn.clone();
                        let name = name.clone();
                        let relay_cfg = self.relay.clone();
                        let stats = self.stats.clone();
                        self.shutdown.spawn(async move {
                            match open_route(&conn, &Route::Service(name)).await {
                                Ok((s, _)) => splice_tcp(tcp, s, &relay_cfg, &stats).await,
                                Err(e) => {
                                    stats.fail(e.kind());
                                    debug!("reverse stream refused by client: {e}");
                                }
                            }
                        });
                    }
                }
            }
            Ok::<(), Error>(())
        }
        .await;
        tunnel.exposures.fetch_sub(1, Ordering::Relaxed);
        info!(identity = %tunnel.identity, port, "exposure ended");
        let _ = stream.send.finish();
        result
    }
}

/// The client's named local services (reverse routing targets).
#[derive(Debug, Clone)]
pub struct LocalServices {
    services: Arc<Vec<(String, Target)>>,
    dialer: DirectDialer,
    relay: RelayConfig,
    stats: Arc<StatsCounter>,
}

impl LocalServices {
    /// Services by name.
    pub fn new(services: Vec<(String, Target)>, stats: Arc<StatsCounter>) -> Self {
        LocalServices {
            services: Arc::new(services),
            dialer: DirectDialer::default(),
            relay: RelayConfig::default(),
            stats,
        }
    }

    /// The service names.
    pub fn names(&self) -> Vec<String> {
        self.services.iter().map(|(n, _)| n.clone()).collect()
    }
}

impl RoutingClient for LocalServices {
    fn route(&self, route: Route, stream: QuicStream) -> BoxFuture<'static, Result<()>> {
        let this = self.clone();
        Box::pin(async move {
            let Route::Service(name) = route else {
                return refuse(
                    stream,
                    RefusalCode::UnknownRoute,
                    "clients accept only service streams".into(),
                )
                .await;
            };
            let Some((_, target)) = this.services.iter().find(|(n, _)| *n == name) else {
                return refuse(
                    stream,
                    RefusalCode::UnknownRoute,
                    format!("no local service named {name:?}"),
                )
                .await;
            };
            let tcp = match this.dialer.connect(target).await {
                Ok(t) => t,
                Err(e) => {
                    this.stats.fail("unreachable");
                    return refuse(
                        stream,
                        RefusalCode::Unreachable,
                        format!("local service {name:?} is down: {e}"),
                    )
                    .await;
                }
            };
            let mut stream = stream;
            write_reply(&mut stream.send, &Reply::Ok { port: None }).await?;
            splice_tcp(tcp, stream, &this.relay, &this.stats).await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn policy_default_deny_and_rules() {
        let t = |s: &str| TcpTarget::parse(s).unwrap();
        assert!(!ForwardPolicy::deny_all().allows("a", &t("127.0.0.1:22")));
        let p = ForwardPolicy::deny_all()
            .allow(AllowRule::parse("127.0.0.1:22").unwrap())
            .allow(AllowRule::parse("alice@db.internal:*").unwrap())
            .allow(AllowRule::parse("*@[::1]:80").unwrap());
        assert!(p.allows("bob", &t("127.0.0.1:22")));
        assert!(!p.allows("bob", &t("127.0.0.1:23")));
        assert!(p.allows("alice", &t("DB.internal:5432")));
        assert!(!p.allows("bob", &t("db.internal:5432")));
        assert!(p.allows("bob", &t("[::1]:80")));
        assert!(AllowRule::parse("nope").is_err());
        assert!(AllowRule::parse("h:99999").is_err());
    }
}
