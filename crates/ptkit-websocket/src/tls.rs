//! TLS for `wss`, in one place.
//!
//! Everything TLS-specific of this crate is here: the two small traits the transport uses
//! ([`TlsAccept`] on the server, [`TlsConnect`] on the client), implemented with tokio-rustls
//! for plain `rustls` configs and with `ptkit-tls` (the project's one TLS setup: provider,
//! root stores, PEM loading, hot-swap resolver, ACME) for everything built from options.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use ptkit_core::{BoxFuture, Conn};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// The only ALPN protocol we speak: WebSocket upgrades are HTTP/1.1.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Server side: wraps an accepted TCP connection in TLS.
pub trait TlsAccept: Send + Sync + fmt::Debug {
    /// Runs the TLS handshake.
    fn accept(&self, tcp: TcpStream) -> BoxFuture<'static, io::Result<Conn>>;
}

/// Client side: wraps a dialled connection in TLS, sending `name` as SNI (none for an IP).
pub trait TlsConnect: Send + Sync + fmt::Debug {
    /// Runs the TLS handshake and verifies the certificate for `name`.
    fn connect(&self, name: ServerName<'static>, io: Conn) -> BoxFuture<'static, io::Result<Conn>>;
}

/// [`TlsAccept`] with tokio-rustls.
#[derive(Clone)]
pub struct RustlsAcceptor(tokio_rustls::TlsAcceptor);

impl fmt::Debug for RustlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RustlsAcceptor")
    }
}

impl RustlsAcceptor {
    /// Uses `config` as is (its ALPN list should allow `http/1.1`).
    pub fn new(config: Arc<rustls::ServerConfig>) -> Self {
        RustlsAcceptor(tokio_rustls::TlsAcceptor::from(config))
    }
}

impl TlsAccept for RustlsAcceptor {
    fn accept(&self, tcp: TcpStream) -> BoxFuture<'static, io::Result<Conn>> {
        let acceptor = self.0.clone();
        Box::pin(async move { Ok(Box::new(acceptor.accept(tcp).await?) as Conn) })
    }
}

/// [`TlsConnect`] with tokio-rustls.
#[derive(Clone)]
pub struct RustlsConnector(tokio_rustls::TlsConnector);

impl fmt::Debug for RustlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RustlsConnector")
    }
}

impl RustlsConnector {
    /// Uses `config` as is.
    pub fn new(config: Arc<rustls::ClientConfig>) -> Self {
        RustlsConnector(tokio_rustls::TlsConnector::from(config))
    }
}

impl TlsConnect for RustlsConnector {
    fn connect(&self, name: ServerName<'static>, io: Conn) -> BoxFuture<'static, io::Result<Conn>> {
        let connector = self.0.clone();
        Box::pin(async move { Ok(Box::new(connector.connect(name, io).await?) as Conn) })
    }
}

/// [`TlsAccept`] with `ptkit-tls`'s acceptor: certificates from a hot-swappable resolver
/// (static files, ACME), TLS-ALPN-01 validations answered on the same port.
impl TlsAccept for ptkit_tls::Acceptor {
    fn accept(&self, tcp: TcpStream) -> BoxFuture<'static, io::Result<Conn>> {
        let acceptor = self.clone();
        Box::pin(async move {
            match acceptor.accept(tcp).await {
                Ok(Some(tls)) => Ok(Box::new(tls) as Conn),
                Ok(None) => Err(io::Error::other("answered a TLS-ALPN-01 validation")),
                Err(e) => Err(io::Error::other(e.to_string())),
            }
        })
    }
}

/// A `ptkit-tls` acceptor serving the PEM certificate chain and key, ALPN `http/1.1`.
pub fn acceptor_from_pem(cert: &Path, key: &Path) -> Result<ptkit_tls::Acceptor, String> {
    let key = ptkit_tls::load_pem_files(cert, key).map_err(|e| e.to_string())?;
    let resolver = Arc::new(ptkit_tls::HotResolver::with_default(key));
    ptkit_tls::Acceptor::new(resolver, &[ALPN_HTTP11]).map_err(|e| e.to_string())
}

/// A client config trusting only the PEM certificates in `ca_file`, or else the system
/// store (`ptkit-tls`'s `ClientRoots::system`). ALPN `http/1.1`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = match ca_file {
        Some(p) => ptkit_tls::ClientRoots::empty().with_pem_file(p),
        None => ptkit_tls::ClientRoots::system(),
    };
    let config = ptkit_tls::client_config(roots).map_err(|e| e.to_string())?;
    let mut config = (*config).clone();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// The SNI / verification name for a host (`[v6]` brackets removed; IPs get no SNI).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|_| format!("bad TLS server name {host:?}"))
}
