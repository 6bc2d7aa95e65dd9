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
use ptkit_core::{Args, ClientConfig, Pinned, ServerConfig, StatsCounter, Target};
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

Transports: plain (reference transport, no obfuscation), websocket (RFC 6455, ws and wss,
base64 subprotocol, automatic ACME certificates).

Examples:
    ptkit server websocket --listen 0.0.0.0:443 --target 127.0.0.1:9001 \\
        --acme-hostnames ws.example.com --acme-email ops@example.com
    ptkit client websocket --listen 127.0.0.1:1080 --url wss://ws.example.com/

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
    /// Serve the counters as Prometheus text on http://ADDR/metrics and as JSON on /stats.
    /// Bind it to loopback or a management network.
    #[arg(long, global = true, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a client: a SOCKS5 (and SOCKS4a) port whose connections travel through TRANSPORT.
    Client(ClientArgs),
    /// Run a server: accept TRANSPORT connections and forward each to --target.
    Server(ServerArgs),
    /// Start both ends of a plain tunnel on loopback, push data through, and show the numbers.
    Demo {
        /// MiB to echo through the tunnel.
        #[arg(long, default_value_t = 256)]
        mebibytes: u64,
    },
    /// Load-test a Snowflake server with turbotunnel sessions over WebSockets (no WebRTC):
    /// throughput, round-trip latency, idle sessions, WebSocket switches mid-session. The
    /// server's upstream must be `loadgen server` (see scripts/bench-snowflake.sh).
    Turbotunnel(ptkit::turbotunnel_load::LoadArgs),
    /// Bound → free: a SOCKS5 proxy whose connections share ONE transport connection
    /// (`ptkit mux client …`), and its server with a default-deny destination policy
    /// (`ptkit mux server … --allow RULE`); see docs/mux.md.
    Mux(ptkit::mux_cli::MuxArgs),
    /// Authenticated QUIC tunnels between an aggregator and many clients (snocat-style):
    /// `ptkit tunnel server …` and `ptkit tunnel client …`; see docs/quic-tunnel.md.
    Tunnel(ptkit::tunnel_cli::TunnelArgs),
}

#[derive(clap::Args, Debug)]
struct ClientArgs {
    /// Transport name: plain or websocket.
    transport: String,
    /// SOCKS address to listen on.
    #[arg(long, default_value = "127.0.0.1:1080")]
    listen: std::net::SocketAddr,
    /// The transport server (host:port). With neither --server nor --url, each SOCKS
    /// request's target is taken as the server's address, as tor does.
    #[arg(long)]
    server: Option<String>,
    /// websocket: the server URL (ws://host:port/path or wss://…).
    #[arg(long)]
    url: Option<String>,
    /// websocket: TLS SNI and certificate name to present instead of the URL's host (domain
    /// fronting; wss only).
    #[arg(long)]
    front: Option<String>,
    /// websocket: use the base64 subprotocol (text frames).
    #[arg(long)]
    base64: bool,
    /// websocket: PEM file of CA certificates to trust for wss instead of the system store.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// A per-connection transport argument (KEY=VALUE, repeatable), used when the SOCKS
    /// client sends none.
    #[arg(long = "arg", value_name = "KEY=VALUE")]
    args: Vec<String>,
    /// A transport-wide option (KEY=VALUE, repeatable), e.g. max-message=16384.
    #[arg(long = "option", value_name = "KEY=VALUE")]
    options: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct ServerArgs {
    /// Transport name: plain or websocket.
    transport: String,
    /// Address to listen on.
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// Where to forward de-obfuscated streams (host:port).
    #[arg(long)]
    target: String,
    /// Directory for persistent state (ACME account and certificates), created 0700.
    #[arg(long, default_value = "ptkit-state", value_name = "DIR")]
    state_dir: PathBuf,
    /// websocket: serve wss with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// websocket: the PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// websocket: obtain certificates automatically for these names (comma-separated) with
    /// ACME: TLS-ALPN-01 on the listening port (which must be reachable as port 443), or
    /// HTTP-01 with --acme-http-listen.
    #[arg(long, value_name = "NAMES")]
    acme_hostnames: Option<String>,
    /// ACME account contact address.
    #[arg(long, value_name = "EMAIL")]
    acme_email: Option<String>,
    /// ACME directory URL (default: Let's Encrypt production).
    #[arg(long, value_name = "URL")]
    acme_directory: Option<String>,
    /// PEM CA to trust for the ACME directory's HTTPS (a private CA or Pebble).
    #[arg(long, value_name = "FILE")]
    acme_ca: Option<PathBuf>,
    /// ACME challenge: tls-alpn-01 (default) or http-01.
    #[arg(long, value_name = "TYPE")]
    acme_challenge: Option<String>,
    /// Where to answer HTTP-01 challenges, e.g. 0.0.0.0:80.
    #[arg(long, value_name = "ADDR")]
    acme_http_listen: Option<String>,
    /// websocket: the only URL path upgraded (default: any).
    #[arg(long)]
    path: Option<String>,
    /// A transport option (KEY=VALUE, repeatable), as in TOR_PT_SERVER_TRANSPORT_OPTIONS.
    #[arg(long = "option", value_name = "KEY=VALUE")]
    options: Vec<String>,
}

/// Parses repeated KEY=VALUE flags.
fn kv_list(flag: &str, items: &[String]) -> anyhow::Result<Args> {
    let mut args = Args::new();
    for item in items {
        let (k, v) = item
            .split_once('=')
            .with_context(|| format!("{flag} {item:?}: expected KEY=VALUE"))?;
        args.push(k, v);
    }
    Ok(args)
}

impl ServerArgs {
    fn options(&self) -> anyhow::Result<Args> {
        let mut o = kv_list("--option", &self.options)?;
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        for (k, v) in [
            ("tls-cert", path(&self.tls_cert)),
            ("tls-key", path(&self.tls_key)),
            ("acme-hostnames", self.acme_hostnames.clone()),
            ("acme-email", self.acme_email.clone()),
            ("acme-directory", self.acme_directory.clone()),
            ("acme-ca", path(&self.acme_ca)),
            ("acme-challenge", self.acme_challenge.clone()),
            ("acme-http-listen", self.acme_http_listen.clone()),
            ("path", self.path.clone()),
        ] {
            if let Some(v) = v {
                o.push(k, v);
            }
        }
        Ok(o)
    }
}

impl ClientArgs {
    fn settings(&self) -> anyhow::Result<Args> {
        let mut a = kv_list("--arg", &self.args)?;
        if let Some(u) = &self.url {
            a.push("url", u.clone());
        }
        if let Some(f) = &self.front {
            a.push("front", f.clone());
        }
        if self.base64 {
            a.push("base64", "1");
        }
        Ok(a)
    }

    fn options(&self) -> anyhow::Result<Args> {
        let mut o = kv_list("--option", &self.options)?;
        if let Some(c) = &self.ca_file {
            o.push("ca-file", c.display().to_string());
        }
        Ok(o)
    }
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

/// Single-dash flags of the PT 2.x/3.0 dispatcher (`ptkit_ipc::flags`): when the first argument
/// is one of them (`-name` or `-name=value`), ptkit runs as a dispatcher instead of parsing its
/// own command line with clap.
const IPC_FLAGS: &[&str] = &[
    "ptversion",
    "transports",
    "transport",
    "state",
    "exit-on-stdin-close",
    "proxy",
    "options",
    "optionsFile",
    "bindaddr",
    "bindhost",
    "bindport",
    "target",
    "targethost",
    "targetport",
    "orport",
    "extorport",
    "authcookie",
    "proxylistenaddr",
    "proxylistenhost",
    "proxylistenport",
    "mode",
    "client",
    "server",
    "ipcLogLevel",
    "metrics",
];

/// Runs the PT 2.x/3.0 dispatcher and exits with its code. Logs become `LOG` lines on
/// stdout under `-ipcLogLevel` (default NONE: none), and go to stderr when RUST_LOG is set;
/// stdin carries requests (`STATS`, signals; docs/IPC.md). `config`: the 2016 draft's JSON
/// configuration (`--config`) instead of flags.
fn run_ipc(argv: &[String]) -> ! {
    run_ipc_with(argv, None)
}

fn run_ipc_with(argv: &[String], config: Option<&str>) -> ! {
    let out = Arc::new(ptkit_ipc::run::IpcOut::std());
    let stderr = EnvFilter::try_from_default_env().ok().map(|filter| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
    });
    tracing_subscriber::registry()
        .with(ptkit_ipc::log::IpcLogLayer::new(out.clone()))
        .with(stderr)
        .init();
    if !argv
        .iter()
        .any(|a| a.trim_start_matches('-').starts_with("exit-on-stdin-close"))
        && !config.is_some_and(|c| c.contains("exitOnStdinClose"))
    {
        die_with_parent();
    }
    let hooks = ptkit_ipc::run::Hooks {
        input: Some(Box::new(tokio::io::stdin())),
        metrics: Some(Box::new(|addr, source, shutdown| {
            let listener = bind_tcp(addr).map_err(|e| e.to_string())?;
            let bound = listener.local_addr().map_err(|e| e.to_string())?;
            ptkit::metrics::serve(listener, source, shutdown);
            Ok(bound)
        })),
    };
    let registry = transports::registry();
    let get = |k: &str| std::env::var(k).ok();
    run_to_exit(async move {
        match config {
            None => ptkit_ipc::run::run_with(argv, &get, &registry, out, hooks).await,
            Some(text) => match ptkit_ipc::config::parse(text) {
                Ok(cfg) => ptkit_ipc::run::run_config(cfg, &registry, out, hooks).await,
                Err(m) => {
                    let line = ptkit_ipc::lines::IpcLine::EnvError(m);
                    out.send(&line, ptkit_ipc::lines::Dialect::Pt2);
                    ptkit_ipc::lines::EX_USAGE
                }
            },
        }
    })
}

/// `ptkit --config JSON` (the 2016 PT 2.0 draft's configuration object) and `ptkit
/// generate-config TRANSPORT …` (its matching client and server configurations); returns
/// when `argv` is neither.
fn config_modes(argv: &[String]) {
    match argv.first().map(String::as_str) {
        Some("generate-config") => {
            match ptkit_ipc::config::generate(&argv[1..], &transports::registry()) {
                Ok(json) => {
                    use std::io::Write as _;
                    let mut stdout = std::io::stdout();
                    let ok = writeln!(stdout, "{json}").and_then(|()| stdout.flush());
                    std::process::exit(if ok.is_ok() { 0 } else { 74 })
                }
                Err(m) => {
                    eprintln!("ptkit generate-config: {m}");
                    std::process::exit(ptkit_ipc::lines::EX_USAGE)
                }
            }
        }
        Some("--config" | "-config") => match &argv[1..] {
            [json] => run_ipc_with(argv, Some(json)),
            _ => {
                let line = ptkit_ipc::lines::IpcLine::EnvError(
                    "usage: ptkit --config JSON (one argument: the configuration object)".into(),
                );
                eprintln!("{}", line.render(ptkit_ipc::lines::Dialect::Pt2));
                std::process::exit(ptkit_ipc::lines::EX_USAGE)
            }
        },
        Some(a) if a.starts_with("--config=") || a.starts_with("-config=") => {
            let json = a.split_once('=').map_or("", |(_, j)| j).to_owned();
            match &argv[1..] {
                [] => run_ipc_with(argv, Some(&json)),
                _ => config_modes(&["--config".into()]),
            }
        }
        _ => {}
    }
}

/// Runs `fut` on a multi-threaded runtime and exits with its code, without waiting for the
/// blocking stdin reader tokio keeps on a thread.
fn run_to_exit(fut: impl std::future::Future<Output = i32>) -> ! {
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
    let code = runtime.block_on(fut);
    runtime.shutdown_background();
    std::process::exit(code)
}

fn main() {
    // PT 2.x/3.0 dispatcher flags (clap would reject them); TOR_PT_* without them stays
    // Tor managed mode below, and subcommands stay standalone mode.
    let argv: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // Drop-in names for the Go Snowflake programs: a `snowflake-server` or
    // `snowflake-broker` link to ptkit (or that word as the first argument) takes the Go
    // program's flags.
    let program = std::env::args_os()
        .next()
        .map(|a| {
            PathBuf::from(a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default()
        .unwrap_or_default();
    let (program, rest) = match argv.first().map(String::as_str) {
        Some(p @ ("snowflake-server" | "snowflake-broker")) => (p.to_owned(), argv[1..].to_vec()),
        _ => (program, argv.clone()),
    };
    match program.as_str() {
        "snowflake-server" => run_to_exit(ptkit::snowflake_server::main(rest)),
        "snowflake-broker" => run_to_exit(ptkit::snowflake_broker::main(rest)),
        _ => {}
    }
    config_modes(&argv);
    if argv.first().is_some_and(|a| {
        a.strip_prefix('-')
            .map(|b| b.split_once('=').map_or(b, |(n, _)| n))
            .is_some_and(|n| IPC_FLAGS.contains(&n))
    }) {
        run_ipc(&argv);
    }
    let cli = Cli::parse();
    ptkit_core::redact::set_unsafe_logging(cli.unsafe_logging);
    // Any TOR_PT_ variable means a PT host launched us: answer in the protocol, even when
    // the version variable itself is missing (ENV-ERROR, as goptlib does).
    let managed = std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("TOR_PT_"));
    run_to_exit(async {
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
    })
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
    if let Some(addr) = cli.metrics {
        let stats = running.stats.clone();
        start_metrics(
            addr,
            Arc::new(move || stats.iter().map(|s| s.snapshot()).collect()),
            &running.shutdown,
        )?;
    }
    managed::wait(&running, &out).await?;
    running
        .shutdown
        .drained(std::time::Duration::from_secs(2))
        .await;
    Ok(0)
}

fn start_metrics(
    addr: std::net::SocketAddr,
    source: ptkit::metrics::StatsSource,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let listener = bind_tcp(addr).with_context(|| format!("cannot listen on --metrics {addr}"))?;
    tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
    ptkit::metrics::serve(listener, source, shutdown.clone());
    Ok(())
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
    let standalone_stats: Option<Arc<StatsCounter>>;
    match command {
        Command::Demo { mebibytes } => {
            ptkit::demo::run(*mebibytes).await?;
            return Ok(0);
        }
        Command::Turbotunnel(a) => return ptkit::turbotunnel_load::run(a.clone()).await,
        Command::Mux(a) => return ptkit::mux_cli::run(a.clone()).await,
        Command::Tunnel(a) => return ptkit::tunnel_cli::run(a.clone()).await,
        Command::Client(c) => {
            let t = registry.client(&c.transport).with_context(|| {
                format!(
                    "unknown transport {:?}; known: {}",
                    c.transport,
                    registry.client_names().join(", ")
                )
            })?;
            let config = ClientConfig {
                options: c.options()?,
                ..ClientConfig::default()
            };
            let mut connector = t.connector(&config)?;
            let settings = c.settings()?;
            let server = match &c.server {
                Some(s) => Some(Target::parse(s).with_context(|| format!("--server {s:?}"))?),
                None => None,
            };
            if server.is_some() || !settings.is_empty() {
                connector = Arc::new(Pinned::new(connector, settings, server));
            }
            let listener =
                bind_tcp(c.listen).with_context(|| format!("cannot listen on {}", c.listen))?;
            tracing::info!(
                "{} client: SOCKS5 on {}",
                c.transport,
                listener.local_addr()?
            );
            let stats = Arc::new(StatsCounter::new(c.transport.clone()));
            socks_front::serve(
                listener,
                connector,
                stats.clone(),
                shutdown.clone(),
                SocksLimits::default(),
            );
            standalone_stats = Some(stats);
        }
        Command::Server(sv) => {
            let t = registry.server(&sv.transport).with_context(|| {
                format!(
                    "unknown transport {:?}; known: {}",
                    sv.transport,
                    registry.server_names().join(", ")
                )
            })?;
            let target =
                Target::parse(&sv.target).with_context(|| format!("--target {:?}", sv.target))?;
            let options = sv.options()?;
            if options.get("acme-hostnames").is_some() {
                ptkit_tor::env::make_state_dir(&sv.state_dir).with_context(|| {
                    format!("cannot create --state-dir {}", sv.state_dir.display())
                })?;
            }
            let listener = t
                .listen(ServerConfig {
                    listen: sv.listen,
                    options,
                    state_dir: Some(sv.state_dir.clone()),
                })
                .await
                .with_context(|| {
                    format!("cannot start the {} server on {}", sv.transport, sv.listen)
                })?;
            let args = listener.client_args();
            tracing::info!(
                "{} server on {}, forwarding to {}{}",
                sv.transport,
                listener.local_addr()?,
                ptkit_core::redact::sensitive(&target),
                if args.is_empty() {
                    String::new()
                } else {
                    format!("; clients need: {}", args.encode_client())
                }
            );
            let upstream = Arc::new(TcpUpstream {
                target,
                dialer: DirectDialer::default(),
            });
            let stats = Arc::new(StatsCounter::new(sv.transport.clone()));
            proxy(
                listener,
                upstream,
                stats.clone(),
                shutdown.clone(),
                ServerLimits::default(),
            );
            standalone_stats = Some(stats);
        }
    }
    if let (Some(addr), Some(stats)) = (cli.metrics, standalone_stats.clone()) {
        start_metrics(addr, Arc::new(move || vec![stats.snapshot()]), &shutdown)?;
    }
    managed::lifecycle(&shutdown, false, || {
        if let Some(stats) = &standalone_stats {
            tracing::info!("stats {}", stats.snapshot().to_json());
        }
    })
    .await?;
    Ok(0)
}
