//! The `ptkit` command: a Tor managed proxy when tor launches it, a standalone client or
//! server otherwise.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ptkit::transports;
use ptkit_core::net::{DirectDialer, TcpUpstream, bind_tcp};
use ptkit_core::server::{ServerLimits, proxy};
use ptkit_core::shutdown::Shutdown;
use ptkit_core::{ClientConfig, ServerConfig, StatsCounter, Target};
use ptkit_tor::lines::LineWriter;
use ptkit_tor::logging::LogLineLayer;
use ptkit_tor::managed::{self, ManagedOptions};
use ptkit_tor::socks_front::{self, SocksLimits};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const AFTER_HELP: &str = "\
Managed mode: when any TOR_PT_* variable is set (tor sets them), ptkit speaks Tor's
pluggable-transport protocol on stdout and ignores any subcommand. In a torrc:
    ClientTransportPlugin plain exec /usr/local/bin/ptkit
    ServerTransportPlugin plain exec /usr/local/bin/ptkit --log /var/log/tor/ptkit.log

Transports: plain (reference transport, no obfuscation).

Exit codes: 0 clean exit (SIGTERM, SIGINT, stdin closed); 1 configuration or runtime error
(in managed mode after ENV-ERROR, VERSION-ERROR or PROXY-ERROR); 2 command-line usage error.";

#[derive(Parser, Debug)]
#[command(name = "ptkit", version, about = "Pluggable transports for censorship circumvention", after_help = AFTER_HELP)]
struct Cli {
    /// Also write logs to FILE (appended). In managed mode logs otherwise only reach tor as
    /// LOG lines.
    #[arg(long, global = true, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Least severe level to log: error, warn, info, debug or trace (tor's words warning and
    /// notice work too). RUST_LOG, when set, overrides it.
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL")]
    log_level: String,
    /// Log client addresses, targets and arguments instead of "[scrubbed]".
    #[arg(long, global = true)]
    unsafe_logging: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a client: a SOCKS5 port whose connections travel through TRANSPORT.
    Client {
        /// Transport name (plain).
        transport: String,
        /// SOCKS5 address to listen on.
        #[arg(long, default_value = "127.0.0.1:1080")]
        listen: std::net::SocketAddr,
        /// The transport server. Without it, each SOCKS request's target is taken as the
        /// server's address, as tor does.
        #[arg(long)]
        server: Option<String>,
    },
    /// Run a server: accept TRANSPORT connections and forward each to TARGET.
    Server {
        /// Transport name (plain).
        transport: String,
        /// Address to listen on.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Where to forward de-obfuscated streams (host:port).
        #[arg(long)]
        target: String,
    },
    /// Start both ends of a plain tunnel on loopback, push data through, and show the numbers.
    Demo {
        /// MiB to echo through the tunnel.
        #[arg(long, default_value_t = 256)]
        mebibytes: u64,
    },
}

fn level_filter(level: &str) -> anyhow::Result<EnvFilter> {
    if let Ok(f) = EnvFilter::try_from_default_env() {
        return Ok(f);
    }
    let normalized = match level.to_ascii_lowercase().as_str() {
        "warning" => "warn".to_owned(),
        "notice" => "info".to_owned(),
        "error" | "warn" | "info" | "debug" | "trace" => level.to_ascii_lowercase(),
        other => {
            anyhow::bail!("unknown --log-level {other:?}: use error, warn, info, debug or trace")
        }
    };
    Ok(EnvFilter::new(normalized))
}

fn file_layer<S>(path: &PathBuf, level: &str) -> anyhow::Result<Box<dyn Layer<S> + Send + Sync>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open log file {}", path.display()))?;
    Ok(tracing_subscriber::fmt::layer()
        .with_writer(Arc::new(file))
        .with_ansi(false)
        .with_filter(level_filter(level)?)
        .boxed())
}

fn main() {
    let cli = Cli::parse();
    ptkit_core::redact::set_unsafe_logging(cli.unsafe_logging);
    // Any TOR_PT_ variable means a PT host launched us: answer in the protocol, even when
    // the version variable itself is missing (ENV-ERROR, as goptlib does).
    let managed = std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("TOR_PT_"));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ptkit: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async {
        let result = if managed {
            run_managed(&cli).await
        } else {
            run_standalone(&cli).await
        };
        match result {
            Ok(code) => code,
            Err(e) => {
                if managed {
                    tracing::error!("{e:#}");
                } else {
                    eprintln!("ptkit: {e:#}");
                }
                1
            }
        }
    });
    // Exit without waiting for the blocking stdin reader tokio keeps on a thread.
    runtime.shutdown_background();
    std::process::exit(code);
}

async fn run_managed(cli: &Cli) -> anyhow::Result<i32> {
    let out = Arc::new(LineWriter::stdout());
    let registry = tracing_subscriber::registry()
        .with(LogLineLayer::new(out.clone()).with_filter(level_filter(&cli.log_level)?));
    match &cli.log {
        Some(path) => registry.with(file_layer(path, &cli.log_level)?).init(),
        None => registry.init(),
    }
    if std::env::var("TOR_PT_EXIT_ON_STDIN_CLOSE").as_deref() != Ok("1") {
        die_with_parent();
    }
    let options = ManagedOptions {
        implementation: ("ptkit".into(), env!("CARGO_PKG_VERSION").into()),
        ..ManagedOptions::default()
    };
    let get = |k: &str| std::env::var(k).ok();
    let running = match managed::start(&get, &transports::registry(), &out, &options).await {
        Ok(r) => r,
        Err(_) => return Ok(1),
    };
    managed::wait(&running, &out).await?;
    running
        .shutdown
        .drained(std::time::Duration::from_secs(2))
        .await;
    Ok(0)
}

/// Item L-4: without the stdin mechanism, make sure we do not outlive tor.
#[allow(unsafe_code)]
fn die_with_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
    }
}

async fn run_standalone(cli: &Cli) -> anyhow::Result<i32> {
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(level_filter(&cli.log_level)?);
    let registry = tracing_subscriber::registry().with(stderr);
    match &cli.log {
        Some(path) => registry.with(file_layer(path, &cli.log_level)?).init(),
        None => registry.init(),
    }
    let Some(command) = &cli.command else {
        anyhow::bail!(
            "not launched by tor (TOR_PT_MANAGED_TRANSPORT_VER is unset) and no command given; see `ptkit --help`"
        );
    };
    let registry = transports::registry();
    let shutdown = Shutdown::new();
    match command {
        Command::Demo { mebibytes } => {
            ptkit::demo::run(*mebibytes).await?;
            return Ok(0);
        }
        Command::Client {
            transport,
            listen,
            server,
        } => {
            let t = registry.client(transport).with_context(|| {
                format!(
                    "unknown transport {transport:?}; known: {}",
                    registry.client_names().join(", ")
                )
            })?;
            let connector = match server {
                Some(s) => {
                    let target = Target::parse(s).with_context(|| format!("--server {s:?}"))?;
                    Arc::new(transports::plain::PlainConnector::fixed(
                        target,
                        Arc::new(DirectDialer::default()),
                    )) as Arc<dyn ptkit_core::Connector>
                }
                None => t.connector(&ClientConfig::default())?,
            };
            let listener =
                bind_tcp(*listen).with_context(|| format!("cannot listen on {listen}"))?;
            tracing::info!("{transport} client: SOCKS5 on {}", listener.local_addr()?);
            socks_front::serve(
                listener,
                connector,
                Arc::new(StatsCounter::new(transport.clone())),
                shutdown.clone(),
                SocksLimits::default(),
            );
        }
        Command::Server {
            transport,
            listen,
            target,
        } => {
            let t = registry.server(transport).with_context(|| {
                format!(
                    "unknown transport {transport:?}; known: {}",
                    registry.server_names().join(", ")
                )
            })?;
            let target = Target::parse(target).with_context(|| format!("--target {target:?}"))?;
            let listener = t
                .listen(ServerConfig {
                    listen: *listen,
                    options: Default::default(),
                    state_dir: None,
                })
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            tracing::info!(
                "{transport} server on {}, forwarding to {}",
                listener.local_addr()?,
                ptkit_core::redact::sensitive(&target)
            );
            let upstream = Arc::new(TcpUpstream {
                target,
                dialer: DirectDialer::default(),
            });
            proxy(
                listener,
                upstream,
                Arc::new(StatsCounter::new(transport.clone())),
                shutdown.clone(),
                ServerLimits::default(),
            );
        }
    }
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = sigint.recv() => {
            tracing::info!("SIGINT: draining (SIGINT again to exit now)");
            shutdown.stop_accepting();
            tokio::select! {
                _ = sigint.recv() => {}
                _ = sigterm.recv() => {}
                _ = shutdown.drained(std::time::Duration::MAX) => {}
            }
        }
        _ = sigterm.recv() => {}
    }
    shutdown.abort();
    Ok(0)
}
