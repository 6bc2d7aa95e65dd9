//! rustls configurations built on the one crypto provider, and the server-side acceptor.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::ResolvesServerCert;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use crate::error::{Error, Result};
use crate::resolver::{ACME_TLS_ALPN, HotResolver};

/// The aws-lc-rs crypto provider every ptkit TLS endpoint uses (one instance per process).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// A server configuration (TLS 1.2 and 1.3, no client auth) answering with `resolver` and
/// offering exactly the ALPN protocols `alpn`, in preference order.
///
/// To also answer TLS-ALPN-01 validations on the same port, use [`Acceptor`], which picks a
/// separate `acme-tls/1` configuration for those handshakes so that normal clients'
/// ALPN negotiation is not affected.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Which certificate authorities a client trusts.
///
/// ```
/// # use ptkit_tls::ClientRoots;
/// let roots = ClientRoots::system().with_pem_file("/etc/ptkit/test-ca.pem");
/// ```
#[derive(Clone, Default)]
pub struct ClientRoots {
    system: bool,
    pem_files: Vec<PathBuf>,
    certs: Vec<CertificateDer<'static>>,
}

impl ClientRoots {
    /// The operating system's trust store (`/etc/ssl/certs` and `SSL_CERT_FILE`/`SSL_CERT_DIR`),
    /// falling back to the Mozilla root set compiled in when the system has none.
    pub fn system() -> Self {
        ClientRoots {
            system: true,
            ..Self::default()
        }
    }

    /// No roots at all; add some with [`ClientRoots::with_pem_file`] or
    /// [`ClientRoots::with_der`].
    pub fn empty() -> Self {
        Self::default()
    }

    /// Also trust the system store.
    pub fn with_system(mut self) -> Self {
        self.system = true;
        self
    }

    /// Also trust every certificate in this PEM file (a test CA, Pebble's CA, …).
    pub fn with_pem_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.pem_files.push(path.into());
        self
    }

    /// Also trust this DER certificate.
    pub fn with_der(mut self, cert: CertificateDer<'static>) -> Self {
        self.certs.push(cert);
        self
    }

    /// Builds the root store; fails when a file is unreadable or the store would be empty.
    pub fn root_store(&self) -> Result<RootCertStore> {
        let mut store = RootCertStore::empty();
        if self.system {
            let native = rustls_native_certs::load_native_certs();
            for err in &native.errors {
                tracing::debug!(error = %err, "skipping part of the system trust store");
            }
            let (added, _) = store.add_parsable_certificates(native.certs);
            if added == 0 {
                tracing::debug!("system trust store is empty; using the built-in Mozilla roots");
                store.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.to_vec());
            }
        }
        for path in &self.pem_files {
            let mut found = 0usize;
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| pem_err(path, e))? {
                let cert = cert.map_err(|e| pem_err(path, e))?;
                store.add(cert).map_err(|source| Error::Key {
                    path: path.clone(),
                    source,
                })?;
                found += 1;
            }
            if found == 0 {
                return Err(Error::Pem {
                    path: path.clone(),
                    what: "no CERTIFICATE block found".into(),
                });
            }
        }
        for cert in &self.certs {
            store.add(cert.clone())?;
        }
        if store.is_empty() {
            return Err(Error::Config("no trusted root certificates".into()));
        }
        Ok(store)
    }
}

fn pem_err(path: &std::path::Path, e: rustls_pki_types::pem::Error) -> Error {
    match e {
        rustls_pki_types::pem::Error::Io(source) => Error::file(path, source),
        other => Error::Pem {
            path: path.into(),
            what: format!("malformed PEM: {other}"),
        },
    }
}

impl fmt::Debug for ClientRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientRoots")
            .field("system", &self.system)
            .field("pem_files", &self.pem_files)
            .field("certs", &self.certs.len())
            .finish()
    }
}

/// A client configuration (TLS 1.2 and 1.3, post-quantum key exchange preferred, no client
/// certificate, no ALPN: set `alpn_protocols` on a clone if needed) verifying servers
/// against `roots`.
pub fn client_config(roots: ClientRoots) -> Result<Arc<rustls::ClientConfig>> {
    let store = roots.root_store()?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Accepts TLS connections for a [`HotResolver`], answering TLS-ALPN-01 validations itself.
///
/// A ClientHello offering `acme-tls/1` is completed with a configuration whose only ALPN
/// protocol is `acme-tls/1` (so validation works whatever `alpn` is) and the connection is
/// then closed; every other ClientHello gets the normal configuration.
#[derive(Clone)]
pub struct Acceptor {
    config: Arc<rustls::ServerConfig>,
    acme_config: Arc<rustls::ServerConfig>,
}

impl Acceptor {
    /// An acceptor answering with `resolver` and offering the ALPN protocols `alpn`.
    pub fn new(resolver: Arc<HotResolver>, alpn: &[&[u8]]) -> Result<Self> {
        Ok(Acceptor {
            config: server_config(resolver.clone(), alpn)?,
            acme_config: server_config(resolver, &[ACME_TLS_ALPN])?,
        })
    }

    /// The configuration used for ordinary handshakes.
    pub fn config(&self) -> &Arc<rustls::ServerConfig> {
        &self.config
    }

    /// Runs the server handshake on `io`.
    ///
    /// Returns `Ok(None)` when the connection was a TLS-ALPN-01 validation that has been
    /// answered and closed. Bound this with a timeout: a silent peer stalls it.
    pub async fn accept<IO>(&self, io: IO) -> Result<Option<TlsStream<IO>>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io)
            .await
            .map_err(Error::Handshake)?;
        let acme = start
            .client_hello()
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            let mut stream = start
                .into_stream(self.acme_config.clone())
                .await
                .map_err(Error::Handshake)?;
            // RFC 8737 §3: the validation connection carries no application data.
            let _ = stream.shutdown().await;
            return Ok(None);
        }
        let stream = start
            .into_stream(self.config.clone())
            .await
            .map_err(Error::Handshake)?;
        Ok(Some(stream))
    }
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acceptor")
            .field("alpn", &self.config.alpn_protocols)
            .finish()
    }
}
