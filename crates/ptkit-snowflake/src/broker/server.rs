//! Running a broker: load the bridge list and geoip files, listen (plain HTTP or TLS), write
//! the metrics log, reload on request.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use ptkit_core::redact::sensitive;
use ptkit_core::shutdown::Shutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use super::bridges::BridgeList;
use super::error::BrokerError;
use super::geoip::GeoIp;
use super::http::{HttpContext, handle};
use super::rendezvous::{Broker, BrokerSettings};

/// Where the 24-hour metrics log goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MetricsLog {
    /// Nowhere.
    #[default]
    Off,
    /// Standard output (the Go broker's default when `--metrics-log` is not given).
    Stdout,
    /// Appended to this file (created 0644 at start), also served on `/metrics`.
    File(PathBuf),
}

/// Everything [`start`] needs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BrokerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// TLS for the listener (`None`: plain HTTP, `--disable-tls`).
    pub tls: Option<ptkit_tls::Acceptor>,
    /// Matching policy, files and limits.
    pub settings: BrokerSettings,
    /// Where the metrics log goes.
    pub metrics_log: MetricsLog,
}

impl BrokerConfig {
    /// Plain HTTP on `listen` with default settings: the built-in bridge list, no relay
    /// pattern, no geoip, no metrics log. Adjust the public fields from there.
    pub fn new(listen: SocketAddr) -> BrokerConfig {
        BrokerConfig {
            listen,
            tls: None,
            settings: BrokerSettings::default(),
            metrics_log: MetricsLog::Off,
        }
    }
}

/// A started broker.
#[derive(Debug, Clone)]
pub struct RunningBroker {
    /// The broker (state, counters, reload).
    pub broker: Arc<Broker>,
    local_addr: SocketAddr,
}

impl RunningBroker {
    /// The address actually listened on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Reloads the bridge list and the geoip database (what SIGHUP does).
    pub async fn reload(&self) -> Result<(), BrokerError> {
        reload(&self.broker).await
    }
}

/// Starts a broker: binds, loads the bridge list and geoip files, serves until `shutdown`,
/// and writes the metrics log every [`super::BrokerLimits::metrics_interval`].
pub async fn start(
    config: BrokerConfig,
    shutdown: &Shutdown,
) -> Result<RunningBroker, BrokerError> {
    // Bind first: connections arriving while the files load wait in the listen backlog.
    let listener = ptkit_core::net::bind_tcp(config.listen)
        .map_err(|e| BrokerError::io(format!("cannot listen on {}", config.listen), e))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| BrokerError::io("listener address", e))?;
    let broker = Arc::new(Broker::new(config.settings));
    reload(&broker).await?;
    let metrics_file = match &config.metrics_log {
        MetricsLog::File(path) => {
            open_metrics_file(path)?;
            Some(path.clone())
        }
        _ => None,
    };
    let ctx = Arc::new(HttpContext { metrics_file });
    serve(listener, broker.clone(), ctx, config.tls, shutdown);
    spawn_metrics_log(broker.clone(), config.metrics_log, shutdown);
    Ok(RunningBroker { broker, local_addr })
}

/// Loads the configured bridge list and geoip files into `broker`. On error nothing changes.
pub async fn reload(broker: &Broker) -> Result<(), BrokerError> {
    let settings = broker.settings().clone();
    let (bridges, geoip) = tokio::task::spawn_blocking(move || {
        let bridges = settings
            .bridge_list_path
            .as_deref()
            .map(load_bridge_list)
            .transpose()?;
        let geoip = settings
            .geoip_paths
            .as_ref()
            .map(|(v4, v6)| load_geoip(v4, v6))
            .transpose()?;
        Ok::<_, BrokerError>((bridges, geoip))
    })
    .await
    .map_err(|e| BrokerError::Config(format!("loading task failed: {e}")))??;
    if let Some(b) = bridges {
        tracing::info!(bridges = b.len(), "bridge list loaded");
        broker.set_bridges(b);
    }
    if let Some(g) = geoip {
        let (v4, v6) = g.len();
        tracing::info!(ipv4_ranges = v4, ipv6_ranges = v6, "geoip databases loaded");
        broker.set_geoip(Some(g));
    }
    Ok(())
}

/// Reads and parses a bridge list file.
pub fn load_bridge_list(path: &Path) -> Result<BridgeList, BrokerError> {
    let data = read_limited(path, super::bridges::MAX_FILE_LEN as u64)?;
    BridgeList::parse(&data).map_err(|e| BrokerError::BridgeList {
        path: path.to_owned(),
        line: e.line,
        detail: e.detail,
    })
}

/// Reads and parses tor's IPv4 and IPv6 geoip files.
pub fn load_geoip(v4: &Path, v6: &Path) -> Result<GeoIp, BrokerError> {
    let limit = super::geoip::MAX_FILE_LEN as u64;
    let a = read_limited(v4, limit)?;
    let b = read_limited(v6, limit)?;
    GeoIp::parse(&a, &b).map_err(|(is_v6, e)| BrokerError::GeoIp {
        path: if is_v6 { v6 } else { v4 }.to_owned(),
        line: e.line,
        detail: e.detail,
    })
}

fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, BrokerError> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)
        .map_err(|e| BrokerError::io(format!("cannot open {}", path.display()), e))?;
    let mut data = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut data)
        .map_err(|e| BrokerError::io(format!("cannot read {}", path.display()), e))?;
    if data.len() as u64 > limit {
        return Err(BrokerError::Config(format!(
            "{} is larger than {limit} bytes",
            path.display()
        )));
    }
    Ok(data)
}

fn open_metrics_file(path: &Path) -> Result<std::fs::File, BrokerError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| BrokerError::io(format!("cannot open metrics log {}", path.display()), e))
}

fn spawn_metrics_log(broker: Arc<Broker>, log: MetricsLog, shutdown: &Shutdown) {
    if log == MetricsLog::Off {
        return;
    }
    let interval = broker.settings().limits.metrics_interval;
    shutdown.spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            tick.tick().await;
            let text = broker.take_metrics_log();
            let written = match &log {
                MetricsLog::File(path) => open_metrics_file(path).and_then(|mut f| {
                    f.write_all(text.as_bytes())
                        .map_err(|e| BrokerError::io("writing the metrics log", e))
                }),
                MetricsLog::Stdout => std::io::stdout()
                    .write_all(text.as_bytes())
                    .map_err(|e| BrokerError::io("writing the metrics log", e)),
                MetricsLog::Off => Ok(()),
            };
            if let Err(e) = written {
                tracing::warn!("{e}");
            }
        }
    });
}

/// Serves the broker's HTTP endpoints on `listener` (TLS when `tls` is given) until
/// `shutdown` stops accepting.
pub fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    ctx: Arc<HttpContext>,
    tls: Option<ptkit_tls::Acceptor>,
    shutdown: &Shutdown,
) {
    let max = broker.settings().limits.max_connections;
    ptkit_core::net::serve_tcp(
        listener,
        shutdown.clone(),
        max,
        "snowflake-broker",
        move |stream, peer| {
            let broker = broker.clone();
            let ctx = ctx.clone();
            let tls = tls.clone();
            async move {
                let timeout = broker.settings().limits.header_timeout;
                match tls {
                    None => serve_connection(stream, peer, broker, ctx).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                            Ok(Ok(Some(tls))) => serve_connection(tls, peer, broker, ctx).await,
                            Ok(Ok(None)) => {}
                            Ok(Err(e)) => {
                                tracing::debug!(peer = %sensitive(peer), error = %e, "TLS handshake failed")
                            }
                            Err(_) => {
                                tracing::debug!(peer = %sensitive(peer), "TLS handshake timed out")
                            }
                        }
                    }
                }
            }
        },
    );
}

async fn serve_connection<IO>(io: IO, peer: SocketAddr, broker: Arc<Broker>, ctx: Arc<HttpContext>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = broker.settings().limits.clone();
    let service = service_fn(move |req| {
        let broker = broker.clone();
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(broker, ctx, req, Some(peer)).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_buf.max(8192))
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = conn.await {
        tracing::debug!(peer = %sensitive(peer), error = %e, "HTTP connection ended with an error");
    }
}
