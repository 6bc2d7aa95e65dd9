//! `snowflake-server`: a drop-in for the Go Snowflake server (same flags, same managed mode).
//!
//! tor launches it with `ServerTransportPlugin snowflake exec /usr/bin/snowflake-server …`;
//! it answers `VERSION 1`, `SMETHOD snowflake <addr> ARGS:tls=no|hostname=…,tls=yes`,
//! `SMETHODS DONE`, and sends each client stream to the Extended ORPort with
//! `TRANSPORT snowflake` and `USERADDR <client_ip>:1`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use ptkit_core::{
    Args, BoxFuture, Registry, ServerConfig, ServerTransport, TransportError, TransportListener,
};
use ptkit_snowflake::SnowflakeServer;
use ptkit_snowflake::metrics::Metrics;
use ptkit_tls::options::{AcmeOptions, AcmeRuntime, Http01Fallback};
use ptkit_tor::lines::LineWriter;
use ptkit_tor::managed::{self, ManagedOptions};
use tracing::{error, info};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::goflags;

const AFTER_HELP: &str = "\
snowflake-server runs under tor, which sets TOR_PT_* variables. In a torrc:
    ServerTransportPlugin snowflake exec /usr/local/bin/snowflake-server \\
        -acme-hostnames snowflake.example -acme-email ops@example.com -log /var/log/tor/snowflake.log
    ServerTransportListenAddr snowflake 0.0.0.0:443
    ExtORPort auto

Certificates: with -acme-hostnames the server obtains them itself from Let's Encrypt, answering
HTTP-01 on port 80 of the listen address (as the Go server does) and TLS-ALPN-01 on port 443
(an extra listener when the listen port is not 443; the server exits if it cannot bind it);
they are cached in $TOR_PT_STATE_LOCATION/snowflake-certificate-cache. Ports below 1024 need
    setcap 'cap_net_bind_service=+ep' /usr/local/bin/snowflake-server
Transport options (ServerTransportOptions snowflake …): num-turbotunnel=N, orport-srcaddr=IP[/len].

Go-style flags: -name and --name both work; booleans accept -name=false.";

#[derive(Parser, Debug)]
#[command(
    name = "snowflake-server",
    about = "Snowflake server (ptkit): WebSocket + turbotunnel (KCP, smux) to tor's Extended ORPort",
    after_help = AFTER_HELP,
    disable_version_flag = true
)]
struct Flags {
    /// Comma-separated host names to obtain TLS certificates for (required unless
    /// --disable-tls or --tls-cert).
    #[arg(long, value_name = "NAMES")]
    acme_hostnames: Option<String>,
    /// Contact address for the ACME account.
    #[arg(long, value_name = "EMAIL")]
    acme_email: Option<String>,
    /// ptkit extra: ACME directory URL (default: Let's Encrypt).
    #[arg(long, value_name = "URL")]
    acme_directory: Option<String>,
    /// ptkit extra: PEM CA to trust for the ACME directory (a private CA or Pebble).
    #[arg(long, value_name = "FILE")]
    acme_ca: Option<PathBuf>,
    /// ptkit extra: answer only this challenge type, tls-alpn-01 or http-01 (default:
    /// whichever the CA offers, TLS-ALPN-01 first).
    #[arg(long, value_name = "TYPE")]
    acme_challenge: Option<String>,
    /// Serve plain ws:// instead of TLS (for testing, or behind a TLS terminator).
    #[arg(long)]
    disable_tls: bool,
    /// ptkit extra: serve wss:// with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// ptkit extra: the PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Append logs to FILE (created mode 0600) instead of stderr.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Do not scrub client IP addresses from logs.
    #[arg(long)]
    unsafe_logging: bool,
    /// ptkit extra: serve Prometheus metrics on http://ADDR/metrics (bind to loopback).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Print the version and exit.
    #[arg(long)]
    version: bool,
}

const BOOL_FLAGS: &[&str] = &["disable-tls", "unsafe-logging", "version", "help", "h"];

/// Runs `snowflake-server` with the Go program's flags (`argv` without the program name) and
/// returns the exit code.
pub async fn main(argv: Vec<String>) -> i32 {
    let mut args = vec!["snowflake-server".to_owned()];
    args.extend(goflags::normalize(&argv, BOOL_FLAGS));
    let flags = match Flags::try_parse_from(&args) {
        Ok(f) => f,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    if flags.version {
        eprintln!(
            "snowflake-server {} (ptkit; compatible with snowflake 2.5.1)",
            env!("CARGO_PKG_VERSION")
        );
        return 0;
    }
    if let Err(e) = init_logging(&flags) {
        eprintln!("snowflake-server: {e}");
        return 1;
    }
    ptkit_core::redact::set_unsafe_logging(flags.unsafe_logging);
    match run(flags).await {
        Ok(code) => code,
        Err(e) => {
            error!("{e:#}");
            1
        }
    }
}

/// Go's log format: `2006/01/02 15:04:05 message`, in UTC.
struct GoTime;

impl tracing_subscriber::fmt::time::FormatTime for GoTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (y, m, d) = civil_from_days((secs / 86_400) as i64);
        let s = secs % 86_400;
        write!(
            w,
            "{y:04}/{m:02}/{d:02} {:02}:{:02}:{:02}",
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn init_logging(flags: &Flags) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let layer = tracing_subscriber::fmt::layer()
        .with_timer(GoTime)
        .with_target(false)
        .with_level(false)
        .with_ansi(false);
    match &flags.log {
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| anyhow::anyhow!("cannot open log file {}: {e}", path.display()))?;
            tracing_subscriber::registry()
                .with(layer.with_writer(Arc::new(file)))
                .with(filter)
                .init();
        }
        None => tracing_subscriber::registry()
            .with(layer.with_writer(std::io::stderr))
            .with(filter)
            .init(),
    }
    Ok(())
}

/// How the server gets its certificate.
#[derive(Debug, Clone)]
enum Tls {
    Disabled,
    Files(PathBuf, PathBuf),
    Acme(AcmeSetup),
}

/// ACME settings plus what every bind address shares: one manager, one HTTP-01 listener
/// (on the first bind address whose port 80 can be bound, as in Go), one TLS-ALPN-01
/// listener per IP.
#[derive(Debug, Clone)]
struct AcmeSetup {
    options: AcmeOptions,
    shared: Arc<tokio::sync::Mutex<AcmeShared>>,
}

#[derive(Debug, Default)]
struct AcmeShared {
    runtime: Option<AcmeRuntime>,
    http01_open: bool,
    /// IPs with a TLS-ALPN-01 answerer on port 443 (an extra listener, or the WebSocket
    /// listener itself).
    tls_alpn01_on: Vec<IpAddr>,
}

impl AcmeSetup {
    fn new(options: AcmeOptions) -> Self {
        AcmeSetup {
            options,
            shared: Arc::default(),
        }
    }

    /// Gets the ACME manager ready for the bind address `listen` and opens the challenge
    /// listeners it needs: HTTP-01 on `<ip>:80` (once), and TLS-ALPN-01 on an extra
    /// `<ip>:443` listener when `listen` is not on port 443. The error text is what
    /// `SMETHOD-ERROR snowflake` reports for this bind address.
    async fn prepare(
        &self,
        listen: SocketAddr,
        state_dir: Option<PathBuf>,
    ) -> Result<AcmeRuntime, TransportError> {
        let mut shared = self.shared.lock().await;
        let runtime = match &shared.runtime {
            Some(r) => r.clone(),
            None => {
                let cache = state_dir
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join("snowflake-certificate-cache");
                info!(
                    "caching ACME certificates in directory {:?}",
                    cache.display().to_string()
                );
                let r = AcmeRuntime::new(&self.options, cache)?;
                shared.runtime = Some(r.clone());
                r
            }
        };
        let challenge = self.options.challenge;
        let ip = listen.ip();
        let http01 = if challenge.uses_http01() && !shared.http01_open {
            let addr = SocketAddr::new(ip, 80);
            let listener = ptkit_core::net::bind_tcp(addr).map_err(|e| {
                TransportError::Io(std::io::Error::other(format!(
                    "HTTP-01 ACME listener: {}",
                    go_listen_error(addr, &e)
                )))
            })?;
            Some(listener)
        } else {
            None
        };
        let covered = |ips: &[IpAddr]| {
            ips.iter()
                .any(|c| *c == ip || (c.is_unspecified() && c.is_ipv4() == ip.is_ipv4()))
        };
        let tls_alpn01 = if !challenge.uses_tls_alpn01() || covered(&shared.tls_alpn01_on) {
            None
        } else if listen.port() == 443 {
            // The WebSocket listener answers `acme-tls/1` itself.
            shared.tls_alpn01_on.push(ip);
            None
        } else {
            let addr = SocketAddr::new(ip, 443);
            // On failure the port-80 listener bound above is dropped with this bind address.
            let listener = ptkit_core::net::bind_tcp(addr)
                .map_err(|e| TransportError::Io(std::io::Error::other(port_443_error(addr, &e))))?;
            Some(listener)
        };
        if let Some(listener) = http01 {
            info!("ACME HTTP-01 listener on {}", SocketAddr::new(ip, 80));
            runtime.serve_http01(listener, Http01Fallback::RedirectToHttps);
            shared.http01_open = true;
        }
        if let Some(listener) = tls_alpn01 {
            info!(
                "ACME TLS-ALPN-01 listener on {} (answers only ACME validations)",
                SocketAddr::new(ip, 443)
            );
            runtime.serve_tls_alpn01(listener);
            shared.tls_alpn01_on.push(ip);
        }
        Ok(runtime)
    }
}

/// Go's `net.Listen` error text: `listen tcp 127.0.0.1:80: bind: address already in use`.
fn go_listen_error(addr: SocketAddr, e: &std::io::Error) -> String {
    let reason = match e.raw_os_error() {
        Some(code) => {
            let text = std::io::Error::from_raw_os_error(code).to_string();
            let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => format!("bind: {}{}", first.to_lowercase(), chars.as_str()),
                None => text,
            }
        }
        None => e.to_string(),
    };
    format!("listen tcp {addr}: {reason}")
}

/// The one-line reason when the TLS-ALPN-01 listener on port 443 cannot be opened.
fn port_443_error(addr: SocketAddr, e: &std::io::Error) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/usr/local/bin/snowflake-server".to_owned());
    format!(
        "ACME TLS-ALPN-01 listener: {}; ACME certificates need port 443 (free it, or allow \
         binding it without root: setcap 'cap_net_bind_service=+ep' {exe}; or use \
         --acme-challenge http-01)",
        go_listen_error(addr, e)
    )
}

fn tls_mode(flags: &Flags) -> anyhow::Result<Tls> {
    if flags.disable_tls {
        return Ok(Tls::Disabled);
    }
    match (&flags.tls_cert, &flags.tls_key, &flags.acme_hostnames) {
        (Some(c), Some(k), None) => Ok(Tls::Files(c.clone(), k.clone())),
        (Some(_), None, _) | (None, Some(_), _) => {
            anyhow::bail!("--tls-cert and --tls-key go together")
        }
        (Some(_), Some(_), Some(_)) => {
            anyhow::bail!("--tls-cert and --acme-hostnames exclude each other")
        }
        (None, None, Some(names)) => {
            let mut opts = Args::new().with("acme-hostnames", names.clone());
            if let Some(e) = &flags.acme_email {
                opts.push("acme-email", e.clone());
            }
            if let Some(d) = &flags.acme_directory {
                opts.push("acme-directory", d.clone());
            }
            if let Some(c) = &flags.acme_ca {
                opts.push("acme-ca", c.display().to_string());
            }
            // Both challenges unless one is forced: TLS-ALPN-01 on port 443 as the seed
            // README describes, HTTP-01 on port 80 as Go 2.5.1 does.
            opts.push(
                "acme-challenge",
                flags.acme_challenge.clone().unwrap_or_else(|| "any".into()),
            );
            // Placeholder: the HTTP-01 listener is opened on the first bind address's IP.
            opts.push("acme-http-listen", "0.0.0.0:80");
            let (acme, _) =
                ptkit_tls::options::split_acme(&opts).map_err(|e| anyhow::anyhow!("{e}"))?;
            acme.map(|a| Tls::Acme(AcmeSetup::new(a)))
                .ok_or_else(|| anyhow::anyhow!("--acme-hostnames is empty"))
        }
        (None, None, None) => anyhow::bail!(
            "the --acme-hostnames option is required (or --disable-tls, or --tls-cert/--tls-key)"
        ),
    }
}

/// The `snowflake` server transport with the process's TLS mode.
#[derive(Clone)]
struct SnowflakeTransport {
    tls: Tls,
    metrics: Arc<Metrics>,
}

impl ServerTransport for SnowflakeTransport {
    fn name(&self) -> &str {
        ptkit_snowflake::NAME
    }

    fn generate_config(&self) -> Result<(Args, Args), TransportError> {
        Ok((Args::new(), Args::new()))
    }

    fn upstream_source(&self, options: &Args) -> Option<ptkit_core::source::SourceRange> {
        SnowflakeServer::new().upstream_source(options)
    }

    fn listen(
        &self,
        config: ServerConfig,
    ) -> BoxFuture<'static, Result<Box<dyn TransportListener>, TransportError>> {
        let this = self.clone();
        Box::pin(async move {
            let mut config = config;
            let server = match this.tls {
                Tls::Disabled => SnowflakeServer::new(),
                Tls::Files(cert, key) => {
                    config.options.push("tls-cert", cert.display().to_string());
                    config.options.push("tls-key", key.display().to_string());
                    SnowflakeServer::new()
                }
                Tls::Acme(acme) => {
                    if config.listen.port() == 0 {
                        return Err(TransportError::Io(std::io::Error::other(
                            ptkit_snowflake::server::PORT_ZERO_ERROR,
                        )));
                    }
                    let runtime = acme
                        .prepare(config.listen, config.state_dir.clone())
                        .await?;
                    let names = acme.options.hostnames.clone();
                    let listener = SnowflakeServer::with_acceptor(runtime.acceptor(), names)
                        .with_metrics(this.metrics.clone())
                        .listen(config)
                        .await?;
                    // Every challenge listener is up now: order (or load the cache).
                    runtime.start_renewal();
                    return Ok(listener);
                }
            };
            server
                .with_metrics(this.metrics.clone())
                .listen(config)
                .await
        })
    }
}

async fn run(flags: Flags) -> anyhow::Result<i32> {
    info!("snowflake-server {} (ptkit)", env!("CARGO_PKG_VERSION"));
    // The Go server refuses to start without certificates before any PT handshake.
    let tls = tls_mode(&flags)?;
    info!("starting");
    if let Tls::Acme(a) = &tls {
        info!("ACME hostnames: {:?}", a.options.hostnames);
    }
    let metrics = Arc::new(Metrics::default());
    let transport = SnowflakeTransport {
        tls,
        metrics: metrics.clone(),
    };
    let registry = Registry::new().with_server(Arc::new(transport));
    let out = Arc::new(LineWriter::stdout());
    if std::env::var("TOR_PT_EXIT_ON_STDIN_CLOSE").as_deref() != Ok("1") {
        // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers and touches no memory of ours.
        #[allow(unsafe_code)]
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        }
    }
    let options = ManagedOptions {
        implementation: (
            "snowflake-server (ptkit)".into(),
            env!("CARGO_PKG_VERSION").into(),
        ),
        ..ManagedOptions::default()
    };
    let get = |k: &str| std::env::var(k).ok();
    let running = match managed::start(&get, &registry, &out, &options).await {
        Ok(r) => r,
        Err(_) => return Ok(1),
    };
    if running.stats.is_empty() {
        // Every bind address got SMETHOD-ERROR (e.g. port 443 or 80 unavailable for ACME).
        error!("no snowflake listener could be opened; exiting");
        return Ok(1);
    }
    if let Some(addr) = flags.metrics {
        let stats = running.stats.clone();
        let listener = ptkit_core::net::bind_tcp(addr)?;
        let m = metrics.clone();
        crate::metrics::serve_with_extra(
            listener,
            Arc::new(move || stats.iter().map(|s| s.snapshot()).collect()),
            Arc::new(move || m.prometheus_text()),
            running.shutdown.clone(),
        );
    }
    let daily = metrics.clone();
    let sd = running.shutdown.clone();
    sd.spawn(async move {
        let period = std::time::Duration::from_secs(24 * 3600);
        let mut last = (0u64, 0u64);
        loop {
            tokio::time::sleep(period).await;
            let with = daily
                .streams_with_client_ip
                .load(std::sync::atomic::Ordering::Relaxed);
            let all = daily
                .streams_total
                .load(std::sync::atomic::Ordering::Relaxed);
            info!(
                "in the past {} s, {}/{} connections had client_ip",
                period.as_secs(),
                with - last.0,
                all - last.1
            );
            last = (with, all);
        }
    });
    managed::wait(&running, &out).await?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_errors_read_like_go() {
        let addr: SocketAddr = "127.0.0.1:80".parse().unwrap_or_else(|_| unreachable!());
        let e = std::io::Error::from_raw_os_error(libc::EADDRINUSE);
        assert_eq!(
            go_listen_error(addr, &e),
            "listen tcp 127.0.0.1:80: bind: address already in use"
        );
        let e = std::io::Error::from_raw_os_error(libc::EACCES);
        let line = port_443_error("0.0.0.0:443".parse().unwrap_or_else(|_| unreachable!()), &e);
        assert!(
            line.starts_with(
                "ACME TLS-ALPN-01 listener: listen tcp 0.0.0.0:443: bind: permission denied;"
            ),
            "{line}"
        );
        assert!(
            line.contains("setcap 'cap_net_bind_service=+ep' /"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn dates_like_go() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_429), (2025, 12, 7));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
