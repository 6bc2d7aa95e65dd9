//! The `quic` pluggable transport: the client turns each SOCKS connection into one stream of
//! a single QUIC connection per bridge; the server hands each stream to ptkit's proxy
//! (ExtORPort or ORPort). The wire is the tunnel protocol with ALPN
//! [`crate::proto::ALPN_PT`], no client authentication, and [`Route::Upstream`] streams.
//!
//! Server certificate: `tls-cert`/`tls-key` options, or a key and self-signed certificate
//! created once in the state directory (`quic-cert.pem`, `quic-key.pem`, mode 0600) and
//! reused; the server advertises the certificate's SHA-256 as `cert-sha256=<hex>` in
//! `SMETHOD … ARGS:`, tor copies it into the bridge line, and the client accepts exactly that
//! certificate (as obfs4's `cert=` works).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ptkit_core::shutdown::Shutdown;
use ptkit_core::{
    Accepted, Args, BoxFuture, ClientConfig, ClientMeta, ClientTransport, Conn, Connector, Pending,
    ServerConfig, ServerTransport, Target, TransportError, TransportListener,
};
use rustls::sign::CertifiedKey;
use tokio::sync::mpsc;

use crate::auth::NoAuth;
use crate::client::{ClientOptions, Tunnel, TunnelClient};
use crate::manager::TunnelContext;
use crate::proto::{ALPN_PT, RefusalCode, Reply, Route};
use crate::routing::Router;
use crate::server::{ServerOptions, TunnelServer};
use crate::stream::{QuicStream, write_reply};
use crate::tls::{ClientTls, ServerTls, ServerTrust, cert_sha256, hex, parse_pin};

/// The transport name.
pub const NAME: &str = "quic";
/// The bridge-line argument carrying the server certificate's SHA-256.
pub const PIN_ARG: &str = "cert-sha256";
/// Certificate file in the state directory.
pub const CERT_FILE: &str = "quic-cert.pem";
/// Key file in the state directory.
pub const KEY_FILE: &str = "quic-key.pem";
/// Streams accepted but not yet picked up by the proxy (then QUIC flow control pushes back).
pub const ACCEPT_QUEUE: usize = 1024;

fn bad(m: impl Into<String>) -> TransportError {
    TransportError::BadSettings(m.into())
}

/// Loads `tls-cert`/`tls-key`, or the state directory's pinned key (creating it once), or,
/// with neither, an ephemeral key.
pub fn server_key(
    options: &Args,
    state_dir: Option<&Path>,
) -> Result<Arc<CertifiedKey>, TransportError> {
    match (options.get("tls-cert"), options.get("tls-key")) {
        (Some(c), Some(k)) => {
            return ptkit_tls::load_pem_files(Path::new(c), Path::new(k))
                .map_err(|e| bad(format!("quic certificate: {e}")));
        }
        (None, None) => {}
        _ => return Err(bad("quic: tls-cert and tls-key go together")),
    }
    let names = vec!["ptkit-quic.invalid".to_owned()];
    let Some(dir) = state_dir else {
        let (key, _, _) = ptkit_tls::self_signed(&names).map_err(|e| bad(e.to_string()))?;
        return Ok(key);
    };
    let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    if cert.exists() && key.exists() {
        return ptkit_tls::load_pem_files(&cert, &key)
            .map_err(|e| bad(format!("quic certificate in the state directory: {e}")));
    }
    let (ck, cert_pem, key_pem) = ptkit_tls::self_signed(&names).map_err(|e| bad(e.to_string()))?;
    std::fs::create_dir_all(dir)?;
    write_private(&key, key_pem.as_bytes())?;
    write_private(&cert, cert_pem.as_bytes())?;
    Ok(ck)
}

fn write_private(path: &PathBuf, data: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The SHA-256 pin of a key's leaf certificate, in hex.
pub fn pin_of(key: &CertifiedKey) -> Result<String, TransportError> {
    let leaf = key
        .cert
        .first()
        .ok_or_else(|| bad("empty certificate chain"))?;
    Ok(hex(&cert_sha256(leaf)))
}

/// The server half.
#[derive(Debug, Clone, Default)]
pub struct QuicServer {
    /// Limits and timeouts.
    pub options: ServerOptions,
}

#[derive(Debug)]
struct ChannelRouter {
    tx: mpsc::Sender<(QuicStream, SocketAddr)>,
}

impl Router for ChannelRouter {
    fn route(
        &self,
        tunnel: Arc<TunnelContext>,
        route: Route,
        mut stream: QuicStream,
    ) -> BoxFuture<'static, crate::Result<()>> {
        let tx = self.tx.clone();
        Box::pin(async move {
            if route != Route::Upstream {
                write_reply(
                    &mut stream.send,
                    &Reply::Refused(
                        RefusalCode::UnknownRoute,
                        "the quic transport only carries upstream streams".into(),
                    ),
                )
                .await?;
                let _ = stream.send.finish();
                return Ok(());
            }
            write_reply(&mut stream.send, &Reply::Ok { port: None }).await?;
            let _ = tx.send((stream, tunnel.remote)).await;
            Ok(())
        })
    }
}

/// A bound `quic` server.
pub struct QuicListener {
    server: TunnelServer,
    rx: mpsc::Receiver<(QuicStream, SocketAddr)>,
    args: Args,
    shutdown: Shutdown,
}

impl std::fmt::Debug for QuicListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicListener")
            .field("server", &self.server)
            .finish()
    }
}

impl QuicListener {
    /// The tunnel server behind the listener.
    pub fn server(&self) -> &TunnelServer {
        &self.server
    }
}

impl Drop for QuicListener {
    fn drop(&mut self) {
        // No new connections; tunnels already carrying streams finish on their own.
        self.shutdown.stop_accepting();
    }
}

impl TransportListener for QuicListener {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.server
            .local_addr()
            .map_err(|e| io::Error::other(e.to_string()))
    }

    fn client_args(&self) -> Args {
        self.args.clone()
    }

    fn accept(&mut self) -> BoxFuture<'_, io::Result<Pending>> {
        Box::pin(async move {
            let (stream, remote) = self
                .rx
                .recv()
                .await
                .ok_or_else(|| io::Error::other("quic server stopped"))?;
            let pending: Pending = Box::pin(async move {
                Ok(Accepted {
                    conn: Box::new(stream) as Conn,
                    meta: ClientMeta {
                        client_addr: Some(remote),
                    },
                })
            });
            Ok(pending)
        })
    }
}

impl QuicServer {
    /// Binds a `quic` server with an explicit key (tests, embedding).
    pub fn bind(
        &self,
        listen: SocketAddr,
        key: Arc<CertifiedKey>,
    ) -> Result<QuicListener, TransportError> {
        let pin = pin_of(&key)?;
        let tls = ServerTls::with_key(key, ALPN_PT);
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let shutdown = Shutdown::new();
        let server = TunnelServer::start(
            listen,
            &tls,
            self.options.clone(),
            Arc::new(NoAuth),
            Arc::new(ChannelRouter { tx }),
            shutdown.clone(),
        )
        .map_err(TransportError::from)?;
        Ok(QuicListener {
            server,
            rx,
            args: Args::new().with(PIN_ARG, pin),
            shutdown,
        })
    }
}

impl ServerTransport for QuicServer {
    fn name(&self) -> &str {
        NAME
    }

    fn generate_config(&self) -> Result<(Args, Args), TransportError> {
        let (key, cert_pem, key_pem) = ptkit_tls::self_signed(&["ptkit-quic.invalid".to_owned()])
            .map_err(|e| bad(e.to_string()))?;
        Ok((
            Args::new().with(PIN_ARG, pin_of(&key)?),
            Args::new()
                .with("tls-cert-pem", cert_pem)
                .with("tls-key-pem", key_pem),
        ))
    }

    fn listen(
        &self,
        config: ServerConfig,
    ) -> BoxFuture<'static, Result<Box<dyn TransportListener>, TransportError>> {
        let this = self.clone();
        Box::pin(async move {
            let key = match (
                config.options.get("tls-cert-pem"),
                config.options.get("tls-key-pem"),
            ) {
                (Some(c), Some(k)) => ptkit_tls::certified_key_from_pem(
                    c.as_bytes(),
                    k.as_bytes(),
                    Path::new("tls-cert-pem"),
                )
                .map_err(|e| bad(e.to_string()))?,
                _ => server_key(&config.options, config.state_dir.as_deref())?,
            };
            Ok(Box::new(this.bind(config.listen, key)?) as Box<dyn TransportListener>)
        })
    }
}

/// The client half.
#[derive(Debug, Clone, Default)]
pub struct QuicClient {
    /// Timeouts and QUIC knobs.
    pub options: ClientOptions,
}

impl ClientTransport for QuicClient {
    fn name(&self) -> &str {
        NAME
    }

    fn connector(&self, _config: &ClientConfig) -> Result<Arc<dyn Connector>, TransportError> {
        Ok(Arc::new(QuicConnector {
            options: self.options.clone(),
            state: Arc::new(tokio::sync::Mutex::new(ConnectorState::default())),
        }))
    }
}

#[derive(Default)]
struct ConnectorState {
    v4: Option<quinn::Endpoint>,
    v6: Option<quinn::Endpoint>,
    tunnels: HashMap<(SocketAddr, [u8; 32]), Tunnel>,
}

/// Opens streams over one QUIC connection per (bridge address, pin), reconnecting when it
/// has closed.
pub struct QuicConnector {
    options: ClientOptions,
    state: Arc<tokio::sync::Mutex<ConnectorState>>,
}

impl std::fmt::Debug for QuicConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicConnector").finish()
    }
}

async fn resolve(target: &Target) -> io::Result<SocketAddr> {
    if let Some(a) = target.socket_addr() {
        return Ok(a);
    }
    let ptkit_core::Host::Name(n) = &target.host else {
        return Err(io::Error::other("unreachable"));
    };
    tokio::net::lookup_host((n.as_str(), target.port))
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "bridge name resolved to nothing"))
}

impl Connector for QuicConnector {
    fn name(&self) -> &str {
        NAME
    }

    fn is_bound(&self) -> bool {
        true
    }

    fn connect(
        &self,
        settings: &Args,
        dest: Option<Target>,
    ) -> BoxFuture<'static, Result<Conn, TransportError>> {
        let pin = settings.get(PIN_ARG).map(str::to_owned);
        let sni = settings
            .get("sni")
            .unwrap_or("ptkit-quic.invalid")
            .to_owned();
        let state = self.state.clone();
        let options = self.options.clone();
        Box::pin(async move {
            let pin =
                pin.ok_or_else(|| bad(format!("quic needs {PIN_ARG}=… (from the bridge line)")))?;
            let pin = parse_pin(&pin).map_err(|e| bad(e.to_string()))?;
            let dest = dest.ok_or_else(|| bad("quic needs the bridge address"))?;
            let addr = resolve(&dest).await?;
            let tunnel = {
                let mut st = state.lock().await;
                match st.tunnels.get(&(addr, pin)) {
                    Some(t) if t.conn.close_reason().is_none() => t.clone(),
                    _ => {
                        let slot = if addr.is_ipv4() {
                            &mut st.v4
                        } else {
                            &mut st.v6
                        };
                        let endpoint = match slot {
                            Some(e) => e.clone(),
                            None => {
                                let bind: SocketAddr = if addr.is_ipv4() {
                                    ([0, 0, 0, 0], 0).into()
                                } else {
                                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                                };
                                let e = quinn::Endpoint::client(bind)?;
                                *slot = Some(e.clone());
                                e
                            }
                        };
                        let tls = ClientTls {
                            trust: ServerTrust::Pin(vec![pin]),
                            client_cert: None,
                            alpn: ALPN_PT.to_vec(),
                        };
                        let client = TunnelClient::with_endpoint(
                            endpoint,
                            addr,
                            sni,
                            &tls,
                            Arc::new(NoAuth),
                            options,
                        )
                        .map_err(TransportError::from)?;
                        let t = client.connect().await.map_err(TransportError::from)?;
                        st.tunnels.retain(|_, t| t.conn.close_reason().is_none());
                        st.tunnels.insert((addr, pin), t.clone());
                        t
                    }
                }
            };
            let stream = tunnel.upstream().await.map_err(TransportError::from)?;
            Ok(Box::new(stream) as Conn)
        })
    }
}
