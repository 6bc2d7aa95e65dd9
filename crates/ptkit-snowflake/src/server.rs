//! The `snowflake` server transport: a WebSocket listener (any path, `client_ip`, binary or
//! text messages) whose turbotunnel sessions yield one [`Accepted`] stream per smux stream.
//! Plugged into `ptkit-core`'s server loop, each stream goes to tor's ExtORPort with
//! `TRANSPORT snowflake` and `USERADDR ip:1`, like the Go server.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use ptkit_core::{
    Accepted, Args, BoxFuture, Pending, ServerConfig, ServerTransport, TransportError,
    TransportListener,
};
use ptkit_websocket::{ServerOptions, WebSocketServer};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tracing::debug;

use crate::engine::{Engine, EngineConfig};
use crate::metrics::Metrics;

/// The transport name, as in `ServerTransportPlugin snowflake …`.
pub const NAME: &str = "snowflake";

/// The Go server's error when tor asks for port 0 (the port must be known before serving).
pub const PORT_ZERO_ERROR: &str =
    "cannot listen on port 0; configure a port using ServerTransportListenAddr";

/// Option keys [`SnowflakeServer`] understands (`TOR_PT_SERVER_TRANSPORT_OPTIONS`).
pub const OPTION_KEYS: &[&str] = &["num-turbotunnel", "orport-srcaddr", "tls-cert", "tls-key"];

/// Most WebSockets served at once (each holds a few KiB).
pub const DEFAULT_MAX_WEBSOCKETS: usize = 65_536;

/// The server transport.
#[derive(Clone)]
pub struct SnowflakeServer {
    ws: WebSocketServer,
    tls: bool,
    hostnames: Vec<String>,
    allow_port_zero: bool,
    engine: EngineConfig,
    metrics: Arc<Metrics>,
    max_websockets: usize,
}

impl std::fmt::Debug for SnowflakeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnowflakeServer")
            .field("tls", &self.tls)
            .field("hostnames", &self.hostnames)
            .finish()
    }
}

impl Default for SnowflakeServer {
    fn default() -> Self {
        Self::new()
    }
}

impl SnowflakeServer {
    /// A plain `ws://` server (TLS only via the `tls-cert`/`tls-key` options).
    pub fn new() -> Self {
        SnowflakeServer {
            ws: WebSocketServer::new(),
            tls: false,
            hostnames: Vec::new(),
            allow_port_zero: false,
            engine: EngineConfig::default(),
            metrics: Arc::new(Metrics::default()),
            max_websockets: DEFAULT_MAX_WEBSOCKETS,
        }
    }

    /// A `wss://` server answering with `acceptor` (ACME-managed certificates for
    /// `hostnames`, which are advertised in `SMETHOD … ARGS:hostname=…`).
    pub fn with_acceptor(acceptor: ptkit_tls::Acceptor, hostnames: Vec<String>) -> Self {
        SnowflakeServer {
            ws: WebSocketServer::with_acceptor(acceptor),
            tls: true,
            hostnames,
            ..Self::new()
        }
    }

    /// Lets tests and standalone use listen on port 0 (the Go server refuses it).
    pub fn allow_port_zero(mut self) -> Self {
        self.allow_port_zero = true;
        self
    }

    /// Replaces the engine limits.
    pub fn with_engine_config(mut self, config: EngineConfig) -> Self {
        self.engine = config;
        self
    }

    /// Shares `metrics` (e.g. with a `/metrics` endpoint).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The counters shared by every listener of this server.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }
}

fn bad(msg: impl Into<String>) -> TransportError {
    TransportError::BadSettings(msg.into())
}

/// Checks the options; returns the WebSocket options to use.
fn parse_options(args: &Args) -> Result<ServerOptions, TransportError> {
    let mut ws = ServerOptions::default();
    ws.raw_messages = true;
    for (k, v) in args.iter() {
        match k {
            "num-turbotunnel" => {
                // One engine serves every client here; the value is checked as Go does.
                let n: usize = v
                    .parse()
                    .map_err(|_| bad(format!("num-turbotunnel {v:?} is not a number")))?;
                if n < 1 {
                    return Err(bad("num-turbotunnel must be at least 1"));
                }
            }
            // Applied by the upstream dialer (ServerTransport::upstream_source).
            "orport-srcaddr" => {
                crate::srcaddr::SourceRange::parse(v).map_err(|e| bad(e.to_string()))?;
            }
            "tls-cert" => ws.tls_cert = Some(v.into()),
            "tls-key" => ws.tls_key = Some(v.into()),
            other => {
                return Err(bad(format!(
                    "unknown snowflake server option {other:?} (known: {})",
                    OPTION_KEYS.join(", ")
                )));
            }
        }
    }
    if ws.tls_cert.is_some() != ws.tls_key.is_some() {
        return Err(bad("tls-cert and tls-key go together"));
    }
    Ok(ws)
}

impl ServerTransport for SnowflakeServer {
    fn name(&self) -> &str {
        NAME
    }

    fn generate_config(&self) -> Result<(Args, Args), TransportError> {
        Ok((Args::new(), Args::new()))
    }

    fn upstream_source(&self, options: &Args) -> Option<ptkit_core::source::SourceRange> {
        options
            .get("orport-srcaddr")
            .and_then(|v| crate::srcaddr::SourceRange::parse(v).ok())
    }

    fn listen(
        &self,
        config: ServerConfig,
    ) -> BoxFuture<'static, Result<Box<dyn TransportListener>, TransportError>> {
        let this = self.clone();
        Box::pin(async move {
            if config.listen.port() == 0 && !this.allow_port_zero {
                return Err(TransportError::Io(io::Error::other(PORT_ZERO_ERROR)));
            }
            let options = parse_options(&config.options)?;
            let tls = this.tls || options.tls_cert.is_some();
            let mut ws = this.ws.bind(config.listen, options)?;
            let local = ws.local_addr()?;
            let (engine, accept_rx) = Engine::new(this.engine.clone(), this.metrics.clone());
            let permits = Arc::new(Semaphore::new(this.max_websockets.max(1)));
            let metrics = this.metrics.clone();
            let accept_loop = tokio::spawn(async move {
                loop {
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        return;
                    };
                    let pending: Pending = match ws.accept().await {
                        Ok(p) => p,
                        Err(e) => {
                            debug!("accept failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let engine = engine.clone();
                    let metrics = metrics.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        match pending.await {
                            Ok(a) => engine.serve_websocket(a.conn, a.meta.client_addr).await,
                            Err(e) => {
                                metrics.handshake_failure(match e.kind() {
                                    "io" => "websocket_io",
                                    _ => "websocket_upgrade",
                                });
                                debug!("WebSocket handshake failed: {e}");
                            }
                        }
                    });
                }
            });
            let mut client_args = Args::new();
            if tls {
                for h in &this.hostnames {
                    client_args.push("hostname", h.clone());
                }
                client_args.push("tls", "yes");
            } else {
                client_args.push("tls", "no");
            }
            Ok(Box::new(SnowflakeListener {
                local,
                accept_rx,
                accept_loop,
                client_args,
            }) as Box<dyn TransportListener>)
        })
    }
}

/// A bound Snowflake listener; dropping it stops accepting WebSockets.
pub struct SnowflakeListener {
    local: SocketAddr,
    accept_rx: mpsc::Receiver<Accepted>,
    accept_loop: JoinHandle<()>,
    client_args: Args,
}

impl Drop for SnowflakeListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl TransportListener for SnowflakeListener {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn client_args(&self) -> Args {
        self.client_args.clone()
    }

    fn accept(&mut self) -> BoxFuture<'_, io::Result<Pending>> {
        Box::pin(async move {
            match self.accept_rx.recv().await {
                Some(a) => Ok(Box::pin(std::future::ready(Ok(a))) as Pending),
                None => Err(io::Error::other("snowflake engine stopped")),
            }
        })
    }
}
