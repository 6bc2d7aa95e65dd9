//! `ptkit mux client|server TRANSPORT …`: the bound → free adapter (`ptkit_mux`) on the
//! command line. The client is a free SOCKS5 proxy whose every connection becomes one stream
//! of a mux session over ONE connection of TRANSPORT; the server serves those sessions under
//! a default-deny destination policy. See docs/mux.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use ptkit_core::shutdown::Shutdown;
use ptkit_core::{Args, ClientConfig, Connector, Pinned, ServerConfig, StatsCounter, Target};
use ptkit_mux::client::serve_socks;
use ptkit_mux::{MuxClientConfig, MuxConnector, MuxServer, MuxServerConfig, Policy};
use ptkit_tor::socks_front::SocksLimits;

/// `ptkit mux …`.
#[derive(clap::Args, Debug, Clone)]
pub struct MuxArgs {
    /// Which end to run.
    #[command(subcommand)]
    pub role: MuxRole,
}

/// The two ends.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum MuxRole {
    /// A free SOCKS5 proxy (CONNECT to IPv4, IPv6 and names) over one TRANSPORT connection.
    Client(MuxClientArgs),
    /// Serve mux sessions arriving over TRANSPORT, dialling destinations the policy allows.
    Server(MuxServerArgs),
}

/// `ptkit mux client`.
#[derive(clap::Args, Debug, Clone)]
pub struct MuxClientArgs {
    /// Transport name (a bound transport: plain, websocket).
    pub transport: String,
    /// SOCKS5 address to listen on.
    #[arg(long, default_value = "127.0.0.1:1080")]
    pub listen: SocketAddr,
    /// The transport server (host:port).
    #[arg(long)]
    pub server: Option<String>,
    /// websocket: the server URL (ws://… or wss://…).
    #[arg(long)]
    pub url: Option<String>,
    /// A per-connection transport argument (KEY=VALUE, repeatable).
    #[arg(long = "arg", value_name = "KEY=VALUE")]
    pub args: Vec<String>,
    /// A transport-wide option (KEY=VALUE, repeatable).
    #[arg(long = "option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// Free → bound: send every connection to HOST:PORT, whatever the SOCKS client asks.
    #[arg(long, value_name = "HOST:PORT")]
    pub pin: Option<String>,
}

/// `ptkit mux server`.
#[derive(clap::Args, Debug, Clone)]
pub struct MuxServerArgs {
    /// Transport name.
    pub transport: String,
    /// Address to listen on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Allow destinations matching RULE (repeatable): `*`, `host`, `*.suffix`, `ip`,
    /// `cidr`, each with an optional `:PORTS` (`443`, `8000-8080`, `80,443`); IPv6 with a
    /// port in brackets (`[2001:db8::]/32:443`). Without any, every stream is refused.
    #[arg(long = "allow", value_name = "RULE")]
    pub allow: Vec<String>,
    /// A transport option (KEY=VALUE, repeatable).
    #[arg(long = "option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// Directory for persistent state.
    #[arg(long, default_value = "ptkit-state", value_name = "DIR")]
    pub state_dir: PathBuf,
}

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

/// Runs `ptkit mux …` until SIGINT/SIGTERM.
pub async fn run(args: MuxArgs) -> anyhow::Result<i32> {
    let registry = crate::transports::registry();
    let shutdown = Shutdown::new();
    let stats = Arc::new(StatsCounter::new("mux"));
    match args.role {
        MuxRole::Client(c) => {
            let t = registry
                .client(&c.transport)
                .with_context(|| format!("unknown transport {:?}", c.transport))?;
            let inner = t.connector(&ClientConfig {
                options: kv_list("--option", &c.options)?,
                ..ClientConfig::default()
            })?;
            let mut settings = kv_list("--arg", &c.args)?;
            if let Some(u) = &c.url {
                settings.push("url", u.clone());
            }
            let server = match &c.server {
                Some(s) => Some(Target::parse(s).with_context(|| format!("--server {s:?}"))?),
                None => None,
            };
            anyhow::ensure!(
                server.is_some() || c.url.is_some(),
                "give the transport server with --server (or --url)"
            );
            let mux = Arc::new(MuxConnector::new(
                inner,
                MuxClientConfig {
                    settings,
                    server,
                    ..MuxClientConfig::default()
                },
            ));
            let connector: Arc<dyn Connector> = match &c.pin {
                Some(p) => {
                    let dest = Target::parse(p).with_context(|| format!("--pin {p:?}"))?;
                    Arc::new(Pinned::new(mux, Args::new(), Some(dest)))
                }
                None => mux,
            };
            let listener = ptkit_core::net::bind_tcp(c.listen)
                .with_context(|| format!("cannot listen on {}", c.listen))?;
            tracing::info!(
                "mux client over {}: SOCKS5 on {}",
                c.transport,
                listener.local_addr()?
            );
            serve_socks(
                listener,
                connector,
                stats.clone(),
                shutdown.clone(),
                SocksLimits::default(),
            );
        }
        MuxRole::Server(s) => {
            let policy = Policy::parse(&s.allow).context("--allow")?;
            let t = registry
                .server(&s.transport)
                .with_context(|| format!("unknown transport {:?}", s.transport))?;
            let listener = t
                .listen(ServerConfig {
                    listen: s.listen,
                    options: kv_list("--option", &s.options)?,
                    state_dir: Some(s.state_dir.clone()),
                })
                .await
                .with_context(|| format!("cannot start the {} server", s.transport))?;
            tracing::info!(
                "mux server over {} on {} ({} allow rules)",
                s.transport,
                listener.local_addr()?,
                s.allow.len()
            );
            MuxServer::new(
                MuxServerConfig {
                    policy,
                    ..MuxServerConfig::default()
                },
                stats.clone(),
            )
            .serve_listener(listener, shutdown.clone());
        }
    }
    ptkit_tor::managed::lifecycle(&shutdown, false, || {
        tracing::info!("stats {}", stats.snapshot().to_json());
    })
    .await?;
    Ok(0)
}
