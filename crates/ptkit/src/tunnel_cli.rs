//! `ptkit tunnel server|client`: authenticated QUIC tunnels between an aggregator and many
//! clients, with snocat-cli's flag names (`--driver`, `--san`, `--authority`, `--target`,
//! `--quic`, `--ports`, `--bindip`, `--cert`, `--key`). See docs/quic-tunnel.md.
//!
//! Exit codes: 0 after SIGINT/SIGTERM, 1 on a fatal error (refused credentials, a
//! certificate either side rejects, a bad configuration), 2 on a usage error.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use ptkit_core::StatsCounter;
use ptkit_core::shutdown::Shutdown;
use ptkit_quic::auth::{
    AuthenticationClient, AuthenticationHandler, HmacAuth, HmacClient, MtlsAuth, MtlsClient,
    read_secret_file,
};
use ptkit_quic::client::{ClientOptions, ClientRunner, TunnelClient};
use ptkit_quic::proto::{ALPN_TUNNEL, TcpTarget};
use ptkit_quic::routing::{
    AggregatorRouter, AllowRule, ForwardPolicy, LocalServices, ReverseConfig,
};
use ptkit_quic::server::{ServerOptions, TunnelServer};
use ptkit_quic::tls::{ClientTls, ServerTls, ServerTrust};

/// `ptkit tunnel …`
#[derive(clap::Args, Debug, Clone)]
pub struct TunnelArgs {
    #[command(subcommand)]
    command: TunnelCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
enum TunnelCommand {
    /// Run the aggregator: accept authenticated tunnels, forward streams by policy, expose
    /// ports for clients' services.
    #[command(visible_alias = "s")]
    Server(ServerArgs),
    /// Run a client: keep a tunnel to the aggregator up, forward local ports through it,
    /// expose local services on the aggregator.
    #[command(visible_alias = "c")]
    Client(ClientArgs),
}

#[derive(clap::Args, Debug, Clone)]
struct ServerArgs {
    /// UDP address to listen on.
    #[arg(
        long,
        visible_alias = "quic",
        short = 'q',
        default_value = "127.0.0.1:9090"
    )]
    listen: SocketAddr,
    /// PEM certificate chain of the aggregator (with --key).
    #[arg(long, short = 'c', value_name = "FILE")]
    cert: Option<PathBuf>,
    /// PEM private key for --cert.
    #[arg(long, short = 'k', value_name = "FILE")]
    key: Option<PathBuf>,
    /// Obtain the certificate by ACME for these names (comma-separated); QUIC has no TCP
    /// port for TLS-ALPN-01, so this uses HTTP-01 on --acme-http-listen.
    #[arg(long, value_name = "NAMES")]
    acme_hostnames: Option<String>,
    /// ACME account contact.
    #[arg(long, value_name = "EMAIL")]
    acme_email: Option<String>,
    /// ACME directory URL (default Let's Encrypt).
    #[arg(long, value_name = "URL")]
    acme_directory: Option<String>,
    /// Where to answer HTTP-01 challenges (default 0.0.0.0:80).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:80")]
    acme_http_listen: String,
    /// State directory (ACME cache).
    #[arg(long, default_value = "ptkit-state", value_name = "DIR")]
    state_dir: PathBuf,
    /// Authenticate clients by certificates issued by this CA (mutual TLS).
    #[arg(long, value_name = "FILE", conflicts_with = "secret_file")]
    client_ca: Option<PathBuf>,
    /// Authenticate clients by HMAC challenge-response over the secret in FILE (≥ 16 bytes).
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// Allow forward streams to [IDENTITY@]HOST:PORT (`*` wildcards; repeatable). Without
    /// any, every forward stream is refused.
    #[arg(long = "allow", value_name = "RULE")]
    allow: Vec<String>,
    /// Ports handed out for clients' exposed services, lowest free first (A:B). Without it,
    /// reverse routing is off.
    #[arg(long, short = 'p', value_name = "A:B")]
    ports: Option<String>,
    /// Address exposed ports bind to (snocat's --tcp; default loopback).
    #[arg(long, visible_alias = "tcp", short = 'i', default_value = "127.0.0.1")]
    bindip: IpAddr,
    /// Most exposed ports per tunnel.
    #[arg(long, default_value_t = 8)]
    max_ports_per_tunnel: usize,
    /// Most tunnels at once.
    #[arg(long, default_value_t = 10_000)]
    max_tunnels: usize,
    /// Most concurrent streams per tunnel.
    #[arg(long, default_value_t = 256)]
    max_streams: u32,
    /// Seconds a client has for the QUIC handshake plus authentication.
    #[arg(long, default_value_t = 10)]
    handshake_timeout: u64,
    /// Seconds without any packet before a tunnel is closed.
    #[arg(long, default_value_t = 30)]
    idle_timeout: u64,
    /// Answer new connections with a QUIC Retry (address validation).
    #[arg(long)]
    retry: bool,
}

#[derive(clap::Args, Debug, Clone)]
struct ClientArgs {
    /// The aggregator, HOST:PORT (UDP).
    #[arg(long, short = 'd')]
    driver: String,
    /// The aggregator's TLS name.
    #[arg(long, visible_alias = "driver-san", short = 's')]
    san: String,
    /// PEM CA(s) to trust for the aggregator; only these are trusted (repeatable).
    #[arg(long, short = 'a', value_name = "FILE")]
    authority: Vec<PathBuf>,
    /// Also trust the system's CA store.
    #[arg(long)]
    system_roots: bool,
    /// Client certificate (PEM) for mutual TLS (with --client-key).
    #[arg(long, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// Private key for --client-cert.
    #[arg(long, value_name = "FILE")]
    client_key: Option<PathBuf>,
    /// Shared secret file for HMAC authentication.
    #[arg(long, value_name = "FILE", conflicts_with = "client_cert")]
    secret_file: Option<PathBuf>,
    /// The name to authenticate as (HMAC: the identity; mTLS: a DNS name in the certificate).
    #[arg(long, default_value = "")]
    name: String,
    /// Expose a local service on the aggregator: [NAME=]HOST:PORT or PORT (repeatable; the
    /// name defaults to the target text).
    #[arg(long, short = 't', value_name = "TARGET")]
    target: Vec<String>,
    /// Forward a local port through the tunnel: LISTEN_ADDR=HOST:PORT (repeatable).
    #[arg(long, value_name = "LISTEN=TARGET")]
    forward: Vec<String>,
    /// Seconds between keep-alives.
    #[arg(long, default_value_t = 5)]
    keepalive: u64,
    /// Seconds without any packet before the tunnel is considered dead.
    #[arg(long, default_value_t = 30)]
    idle_timeout: u64,
    /// Longest reconnection delay in seconds.
    #[arg(long, default_value_t = 30)]
    max_backoff: u64,
}

/// Runs `ptkit tunnel …`; returns the exit code.
pub async fn run(args: TunnelArgs) -> anyhow::Result<i32> {
    let shutdown = Shutdown::new();
    let sd = shutdown.clone();
    // The one process lifecycle of ptkit: SIGTERM exits now, the first SIGINT drains and a
    // second exits; it aborts the shutdown before returning.
    tokio::spawn(async move {
        if ptkit_tor::managed::lifecycle(&sd, false, || {})
            .await
            .is_err()
        {
            sd.abort();
        }
    });
    match args.command {
        TunnelCommand::Server(a) => server(a, shutdown).await,
        TunnelCommand::Client(a) => client(a, shutdown).await,
    }
}

fn parse_ports(s: &str) -> anyhow::Result<std::ops::RangeInclusive<u16>> {
    let (a, b) = s.split_once(':').context("--ports: expected A:B")?;
    let (a, b): (u16, u16) = (
        a.parse().context("--ports A")?,
        b.parse().context("--ports B")?,
    );
    if a > b {
        bail!("--ports {s}: A must not exceed B");
    }
    Ok(a..=b)
}

async fn server(a: ServerArgs, shutdown: Shutdown) -> anyhow::Result<i32> {
    let auth: Arc<dyn AuthenticationHandler> = match (&a.client_ca, &a.secret_file) {
        (Some(_), None) => Arc::new(MtlsAuth),
        (None, Some(f)) => Arc::new(HmacAuth::shared(read_secret_file(f)?)?),
        _ => bail!(
            "choose client authentication: --client-ca FILE (mutual TLS) or --secret-file FILE (HMAC)"
        ),
    };
    let resolver: Arc<dyn ptkit_quic::rustls::server::ResolvesServerCert> = match (
        &a.cert,
        &a.key,
        &a.acme_hostnames,
    ) {
        (Some(c), Some(k), None) => Arc::new(ptkit_tls::HotResolver::with_default(
            ptkit_tls::load_pem_files(c, k).context("--cert/--key")?,
        )),
        (None, None, Some(names)) => {
            let mut o = ptkit_core::Args::new()
                .with("acme-hostnames", names.clone())
                .with("acme-challenge", "http-01")
                .with("acme-http-listen", a.acme_http_listen.clone());
            if let Some(e) = &a.acme_email {
                o.push("acme-email", e.clone());
            }
            if let Some(d) = &a.acme_directory {
                o.push("acme-directory", d.clone());
            }
            let (Some(acme), _) = ptkit_tls::options::split_acme(&o)? else {
                bail!("--acme-hostnames is empty");
            };
            ptkit_tor::env::make_state_dir(&a.state_dir)
                .with_context(|| format!("cannot create --state-dir {}", a.state_dir.display()))?;
            let runtime =
                ptkit_tls::options::AcmeRuntime::new(&acme, a.state_dir.join("tunnel-acme"))?;
            let addr: SocketAddr = a.acme_http_listen.parse().context("--acme-http-listen")?;
            let l = ptkit_core::net::bind_tcp(addr)
                .with_context(|| format!("cannot listen on {addr} for HTTP-01"))?;
            runtime.serve_http01(l, ptkit_tls::options::Http01Fallback::NotFound);
            runtime.start_renewal();
            runtime.manager().resolver().clone()
        }
        _ => bail!(
            "give the aggregator a certificate: --cert FILE --key FILE, or --acme-hostnames NAMES"
        ),
    };
    let tls = ServerTls {
        resolver,
        client_ca: a.client_ca.clone(),
        alpn: ALPN_TUNNEL.to_vec(),
    };
    let mut policy = ForwardPolicy::deny_all();
    for r in &a.allow {
        policy = policy.allow(AllowRule::parse(r)?);
    }
    let stats = Arc::new(StatsCounter::new("tunnel"));
    let mut router = AggregatorRouter::new(policy, stats.clone(), shutdown.clone());
    if let Some(p) = &a.ports {
        router.reverse = Some(ReverseConfig {
            bind_ip: a.bindip,
            ports: parse_ports(p)?,
            max_per_tunnel: a.max_ports_per_tunnel,
        });
    }
    let mut options = ServerOptions {
        handshake_timeout: Duration::from_secs(a.handshake_timeout),
        max_tunnels: a.max_tunnels,
        retry: a.retry,
        ..ServerOptions::default()
    };
    options.knobs.max_streams = a.max_streams;
    options.knobs.idle_timeout = Duration::from_secs(a.idle_timeout);
    let server = TunnelServer::start(
        a.listen,
        &tls,
        options,
        auth,
        Arc::new(router),
        shutdown.clone(),
    )
    .with_context(|| format!("cannot listen on {}", a.listen))?;
    tracing::info!(
        "tunnel aggregator on udp {} ({} client auth, {} allow rules, reverse ports {})",
        server.local_addr()?,
        if a.client_ca.is_some() {
            "mTLS"
        } else {
            "HMAC"
        },
        a.allow.len(),
        a.ports.as_deref().unwrap_or("off"),
    );
    let mut events = server.manager().subscribe();
    let log_events = async {
        while let Ok(e) = events.recv().await {
            use ptkit_quic::manager::TunnelEvent;
            match e {
                TunnelEvent::Authenticated { identity, .. } => {
                    tracing::info!(%identity, "tunnel up")
                }
                TunnelEvent::Closed {
                    identity, reason, ..
                } => tracing::info!(%identity, "tunnel closed: {reason}"),
                TunnelEvent::Refused { kind, reason, .. } => {
                    tracing::info!("client refused ({kind}): {reason}")
                }
                _ => {}
            }
        }
    };
    tokio::select! {
        _ = log_events => {}
        _ = shutdown.accepting_stopped() => {}
    }
    tracing::info!("stopping: no new tunnels; open ones get 10 s");
    tokio::select! {
        _ = server.stop(Duration::from_secs(10)) => {}
        _ = shutdown.aborted() => {}
    }
    tracing::info!("stats {}", stats.snapshot().to_json());
    Ok(0)
}

async fn client(a: ClientArgs, shutdown: Shutdown) -> anyhow::Result<i32> {
    let driver = tokio::net::lookup_host(a.driver.as_str())
        .await
        .with_context(|| format!("--driver {:?}", a.driver))?
        .next()
        .with_context(|| format!("--driver {:?} resolved to nothing", a.driver))?;
    let trust = {
        let mut roots = if a.system_roots {
            ptkit_tls::ClientRoots::system()
        } else {
            ptkit_tls::ClientRoots::empty()
        };
        for f in &a.authority {
            roots = roots.with_pem_file(f);
        }
        if a.authority.is_empty() && !a.system_roots {
            bail!("trust something: --authority CA.pem (repeatable) and/or --system-roots");
        }
        ServerTrust::Roots(roots)
    };
    let client_cert = match (&a.client_cert, &a.client_key) {
        (Some(c), Some(k)) => {
            Some(ptkit_tls::load_pem_files(c, k).context("--client-cert/--client-key")?)
        }
        _ => None,
    };
    let auth: Arc<dyn AuthenticationClient> = match (&client_cert, &a.secret_file) {
        (Some(_), None) => Arc::new(MtlsClient {
            name: a.name.clone(),
        }),
        (None, Some(f)) => {
            let name = if a.name.is_empty() {
                "client".to_owned()
            } else {
                a.name.clone()
            };
            Arc::new(HmacClient::new(name, read_secret_file(f)?)?)
        }
        _ => bail!(
            "choose client authentication: --client-cert/--client-key (mutual TLS) or --secret-file (HMAC)"
        ),
    };
    let tls = ClientTls {
        trust,
        client_cert,
        alpn: ALPN_TUNNEL.to_vec(),
    };
    let mut options = ClientOptions {
        backoff_max: Duration::from_secs(a.max_backoff.max(1)),
        ..ClientOptions::default()
    };
    options.knobs.keepalive = (a.keepalive > 0).then(|| Duration::from_secs(a.keepalive));
    options.knobs.idle_timeout = Duration::from_secs(a.idle_timeout);
    let bind: SocketAddr = if driver.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let tc = TunnelClient::new(bind, driver, a.san.clone(), &tls, auth, options)?;
    let stats = Arc::new(StatsCounter::new("tunnel-client"));
    let mut runner = ClientRunner::new(tc, stats.clone());
    for f in &a.forward {
        let (listen, target) = f
            .split_once('=')
            .with_context(|| format!("--forward {f:?}: expected LISTEN=HOST:PORT"))?;
        let listen: SocketAddr = listen
            .parse()
            .with_context(|| format!("--forward {f:?}: bad listen address"))?;
        let target =
            TcpTarget::parse(target).with_context(|| format!("--forward {f:?}: bad target"))?;
        let l = ptkit_core::net::bind_tcp(listen)
            .with_context(|| format!("cannot listen on {listen}"))?;
        tracing::info!("forwarding {} through the tunnel", l.local_addr()?);
        runner = runner.forward(l, target);
    }
    if !a.target.is_empty() {
        let mut services = Vec::new();
        for t in &a.target {
            let (name, target) = match t.split_once('=') {
                Some((n, t)) => (n.to_owned(), t.to_owned()),
                None => (t.clone(), t.clone()),
            };
            let target = if target.parse::<u16>().is_ok() {
                format!("127.0.0.1:{target}")
            } else {
                target
            };
            let target =
                ptkit_core::Target::parse(&target).with_context(|| format!("--target {t:?}"))?;
            services.push((name, target));
        }
        let names = services.iter().map(|(n, _)| n.clone()).collect();
        runner = runner.expose(names, Arc::new(LocalServices::new(services, stats.clone())));
    }
    match runner.run(shutdown).await {
        Ok(()) => Ok(0),
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("ptkit tunnel client: {e}");
            Ok(1)
        }
    }
}
