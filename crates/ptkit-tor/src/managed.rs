//! Running as a managed proxy under tor (or any PT 1.0 host): read the environment, announce
//! methods, serve, and follow tor's lifecycle (pt-spec §1, §2, §5).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ptkit_core::net::{DirectDialer, TcpUpstream, bind_tcp};
use ptkit_core::server::{ServerLimits, proxy};
use ptkit_core::shutdown::Shutdown;
use ptkit_core::{
    Args, ClientConfig, Dialer, Registry, ServerConfig, ServerTransport, StatsCounter, Target,
    Upstream,
};
use tokio::io::AsyncReadExt;
use tracing::{error, info, warn};

use crate::env::{self, ClientEnv, EnvError, ManagedEnv, Role, ServerBind, ServerEnv};
use crate::extorport::ExtOrUpstream;
use crate::lines::{Line, LineWriter};
use crate::proxy::{ProxyDialer, ProxyUrl};
use crate::socks_front::{self, SocksLimits};

/// Knobs of managed mode.
#[derive(Debug, Clone, Default)]
pub struct ManagedOptions {
    /// SOCKS port limits (client role).
    pub socks: SocksLimits,
    /// Server limits (server role).
    pub server: ServerLimits,
    /// Implementation name and version for `STATUS TYPE=version`.
    pub implementation: (String, String),
}

/// A started managed proxy: its shutdown handle and per-transport counters.
#[derive(Debug)]
pub struct Running {
    /// Stops listeners and connections.
    pub shutdown: Shutdown,
    /// Counters, one per served transport.
    pub stats: Vec<Arc<StatsCounter>>,
    /// The parsed environment.
    pub env: ManagedEnv,
}

/// Why managed mode could not start. The matching protocol line was already written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// `VERSION-ERROR` or `ENV-ERROR` was sent.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// `PROXY-ERROR` was sent.
    #[error("unusable TOR_PT_PROXY: {0}")]
    Proxy(String),
}

/// Announces and starts every requested transport that `registry` knows.
///
/// Configuration errors print `VERSION-ERROR` / `ENV-ERROR` before anything else, so tor logs
/// their text at warning level (tor only shows an `ENV-ERROR` that follows `VERSION 1` at info,
/// item E-14); the message also goes to the log pipeline (stderr / `--log`).
pub async fn start(
    get: &dyn Fn(&str) -> Option<String>,
    registry: &Registry,
    out: &Arc<LineWriter>,
    options: &ManagedOptions,
) -> Result<Running, StartError> {
    let env = match env::parse(get) {
        Ok(e) => e,
        Err(EnvError::NoVersion) => {
            out.send(&Line::VersionError);
            error!("tor offers no managed-proxy version we speak (we speak 1)");
            return Err(EnvError::NoVersion.into());
        }
        Err(EnvError::Env(m)) => {
            out.send(&Line::EnvError(m.clone()));
            error!("{m}");
            return Err(EnvError::Env(m).into());
        }
    };
    if let Err(e) = env::make_state_dir(&env.state_dir) {
        let m = format!(
            "cannot create TOR_PT_STATE_LOCATION {}: {e}",
            env.state_dir.display()
        );
        out.send(&Line::EnvError(m.clone()));
        error!("{m}");
        return Err(EnvError::Env(m).into());
    }
    out.send(&Line::Version);
    let (name, version) = &options.implementation;
    if !name.is_empty() {
        out.send(&Line::Status(
            None,
            vec![
                ("TYPE".into(), "version".into()),
                ("IMPLEMENTATION".into(), name.clone()),
                ("VERSION".into(), version.clone()),
            ],
        ));
    }
    let shutdown = Shutdown::new();
    let direct = DirectDialer {
        bind_v4: env.bind_v4,
        bind_v6: env.bind_v6,
        ..DirectDialer::default()
    };
    let stats = match &env.role {
        Role::Client(c) => start_client(c, &env, registry, out, options, &shutdown, direct).await?,
        Role::Server(s) => start_server(s, &env, registry, out, options, &shutdown, direct).await,
    };
    Ok(Running {
        shutdown,
        stats,
        env,
    })
}

async fn start_client(
    c: &ClientEnv,
    env: &ManagedEnv,
    registry: &Registry,
    out: &Arc<LineWriter>,
    options: &ManagedOptions,
    shutdown: &Shutdown,
    direct: DirectDialer,
) -> Result<Vec<Arc<StatsCounter>>, StartError> {
    let dialer: Arc<dyn Dialer> = match &c.proxy {
        Some(uri) => match ProxyUrl::parse(uri) {
            Ok(p) => {
                out.send(&Line::ProxyDone);
                info!("all connections go through the {:?} proxy", p.scheme);
                Arc::new(ProxyDialer {
                    proxy: Arc::new(p),
                    direct,
                })
            }
            Err(e) => {
                out.send(&Line::ProxyError(e.to_string()));
                error!("TOR_PT_PROXY: {e}");
                return Err(StartError::Proxy(e.to_string()));
            }
        },
        None => Arc::new(direct),
    };
    let mut all = Vec::new();
    for name in &c.transports {
        let Some(transport) = registry.client(name) else {
            // Item E-5: unknown names are skipped silently on the protocol.
            info!("skipping unknown transport {name:?}");
            continue;
        };
        let config = ClientConfig {
            options: Default::default(),
            state_dir: Some(env.state_dir.clone()),
            dialer: Some(dialer.clone()),
        };
        let started = (|| {
            let connector = transport.connector(&config).map_err(|e| e.to_string())?;
            let listener = bind_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .map_err(|e| format!("cannot listen: {e}"))?;
            let addr = listener
                .local_addr()
                .map_err(|e| format!("cannot listen: {e}"))?;
            let stats = Arc::new(StatsCounter::new(name.clone()));
            socks_front::serve(
                listener,
                connector,
                stats.clone(),
                shutdown.clone(),
                options.socks.clone(),
            );
            Ok::<_, String>((addr, stats))
        })();
        match started {
            Ok((addr, stats)) => {
                out.send(&Line::Cmethod {
                    name: name.clone(),
                    protocol: "socks5",
                    addr,
                });
                all.push(stats);
            }
            Err(m) => out.send(&Line::CmethodError(name.clone(), m)),
        }
    }
    out.send(&Line::CmethodsDone);
    Ok(all)
}

async fn start_server(
    s: &ServerEnv,
    env: &ManagedEnv,
    registry: &Registry,
    out: &Arc<LineWriter>,
    options: &ManagedOptions,
    shutdown: &Shutdown,
    direct: DirectDialer,
) -> Vec<Arc<StatsCounter>> {
    let mut all = Vec::new();
    for bind in &s.transports {
        let Some(transport) = registry.server(&bind.name) else {
            info!("skipping unknown transport {:?}", bind.name);
            continue;
        };
        match start_server_method(transport, bind, s, env, options, shutdown, &direct).await {
            Ok((addr, args, stats)) => {
                out.send(&Line::Smethod {
                    name: bind.name.clone(),
                    addr,
                    args,
                });
                all.push(stats);
            }
            Err(m) => out.send(&Line::SmethodError(bind.name.clone(), m)),
        }
    }
    out.send(&Line::SmethodsDone);
    all
}

/// Where a server transport's streams go: the Extended ORPort when there is one (with a
/// cookie), reporting USERADDR and TRANSPORT (items ); else plain TCP to `target`
/// without metadata (item X-5). `None` when there is neither.
pub fn server_upstream(
    transport: &str,
    extorport: Option<SocketAddr>,
    cookie_file: Option<&std::path::Path>,
    target: Option<Target>,
    dialer: &DirectDialer,
) -> Option<Arc<dyn Upstream>> {
    match (extorport, cookie_file, target) {
        (Some(addr), Some(cookie), _) => {
            if !addr.ip().is_loopback() {
                warn!("the Extended ORPort is not on a loopback address");
            }
            Some(Arc::new(ExtOrUpstream {
                addr,
                cookie_file: cookie.to_path_buf(),
                transport: transport.to_owned(),
                // Outbound bind addresses are for the internet, not tor's loopback port; a
                // transport's own source range (orport-srcaddr) applies.
                dialer: DirectDialer {
                    source: dialer.source,
                    ..DirectDialer::default()
                },
            }))
        }
        (_, _, Some(target)) => Some(Arc::new(TcpUpstream {
            target,
            dialer: dialer.clone(),
        })),
        _ => None,
    }
}

/// Binds one server transport and starts forwarding to tor; returns what `SMETHOD` reports.
async fn start_server_method(
    transport: Arc<dyn ServerTransport>,
    bind: &ServerBind,
    s: &ServerEnv,
    env: &ManagedEnv,
    options: &ManagedOptions,
    shutdown: &Shutdown,
    direct: &DirectDialer,
) -> Result<(SocketAddr, Args, Arc<StatsCounter>), String> {
    let orport = s.orport.map(Target::from_socket_addr);
    let direct = DirectDialer {
        source: transport.upstream_source(&bind.options),
        ..direct.clone()
    };
    let upstream = server_upstream(
        &bind.name,
        s.extorport,
        s.cookie_file.as_deref(),
        orport,
        &direct,
    )
    .ok_or("no ORPort to forward to")?;
    let config = ServerConfig {
        listen: bind.addr,
        options: bind.options.clone(),
        state_dir: Some(env.state_dir.clone()),
    };
    let listener = transport.listen(config).await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let args = listener.client_args();
    let stats = Arc::new(StatsCounter::new(bind.name.clone()));
    proxy(
        listener,
        upstream,
        stats.clone(),
        shutdown.clone(),
        options.server.clone(),
    );
    Ok((addr, args, stats))
}

/// What ended the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// SIGTERM.
    Terminated,
    /// Two SIGINTs.
    Interrupted,
    /// First SIGINT, then every connection finished.
    Drained,
    /// stdin closed with `TOR_PT_EXIT_ON_STDIN_CLOSE=1`.
    StdinClosed,
}

/// Emits one `STATUS` line per transport with its counters, and logs the JSON stats.
pub fn report_stats(out: &LineWriter, stats: &[Arc<StatsCounter>]) {
    for s in stats {
        let snap = s.snapshot();
        // The JSON schema every adapter shares, for whoever reads the log.
        info!("stats {}", snap.to_json());
        out.send(&Line::Status(
            Some(snap.transport.clone()),
            vec![
                ("TYPE".into(), "stats".into()),
                ("CONNECTIONS_OPEN".into(), snap.connections_open.to_string()),
                (
                    "CONNECTIONS_TOTAL".into(),
                    snap.connections_total.to_string(),
                ),
                (
                    "CONNECTIONS_FAILED".into(),
                    snap.connections_failed.to_string(),
                ),
                ("BYTES_UP".into(), snap.bytes_up.to_string()),
                ("BYTES_DOWN".into(), snap.bytes_down.to_string()),
            ],
        ));
    }
}

/// Follows the lifecycle of managed mode (items L-1..L-3), reporting counters as `STATUS`
/// lines on SIGUSR1. See [`lifecycle`].
pub async fn wait(running: &Running, out: &Arc<LineWriter>) -> std::io::Result<ExitReason> {
    lifecycle(&running.shutdown, running.env.exit_on_stdin_close, || {
        report_stats(out, &running.stats)
    })
    .await
}

/// The one process lifecycle every mode uses (items L-1..L-3): SIGTERM, or stdin EOF when
/// `exit_on_stdin_close`, exits now; the first SIGINT stops accepting and returns once
/// connections drain; a second SIGINT returns now; SIGUSR1 calls `on_usr1`. The shutdown is
/// aborted before returning.
pub async fn lifecycle(
    shutdown: &Shutdown,
    exit_on_stdin_close: bool,
    mut on_usr1: impl FnMut(),
) -> std::io::Result<ExitReason> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigusr1 = signal(SignalKind::user_defined1())?;
    let stdin_closed = async {
        if !exit_on_stdin_close {
            return std::future::pending::<()>().await;
        }
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 256];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::pin!(stdin_closed);
    let mut interrupted = false;
    let reason = loop {
        let drained = async {
            if interrupted {
                shutdown.drained(Duration::MAX).await;
            } else {
                std::future::pending::<bool>().await;
            }
        };
        tokio::select! {
            _ = sigterm.recv() => break ExitReason::Terminated,
            _ = &mut stdin_closed => break ExitReason::StdinClosed,
            _ = sigusr1.recv() => on_usr1(),
            _ = sigint.recv() => {
                if interrupted {
                    break ExitReason::Interrupted;
                }
                interrupted = true;
                info!("SIGINT: no longer accepting; exiting when open connections finish (SIGINT again to exit now)");
                shutdown.stop_accepting();
            }
            _ = drained => break ExitReason::Drained,
        }
    };
    shutdown.abort();
    info!("exiting: {reason:?}");
    Ok(reason)
}
