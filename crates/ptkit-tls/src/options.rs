//! Certificates from transport options: the `acme-*` keys every TLS-using transport accepts
//! (in a torrc's `ServerTransportOptions` or on the command line), split off before the
//! transport sees its own options.
//!
//! [`start_acme`] is the whole setup for a transport that answers TLS-ALPN-01 on its own
//! port. [`AcmeRuntime`] is for one that opens the challenge listeners itself (Snowflake:
//! HTTP-01 on port 80 and TLS-ALPN-01 on an extra port-443 listener).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ptkit_core::shutdown::Shutdown;
use ptkit_core::{Args, TransportError};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::LazyConfigAcceptor;

use crate::http01::serve_http01_with;
use crate::resolver::ACME_TLS_ALPN;
use crate::{Acceptor, AcmeConfig, AcmeManager, Challenge, HotResolver, server_config};

pub use crate::http01::Http01Fallback;

/// The option keys handled here rather than by the transport.
pub const ACME_KEYS: &[&str] = &[
    "acme-hostnames",
    "acme-email",
    "acme-directory",
    "acme-ca",
    "acme-challenge",
    "acme-http-listen",
];

/// ACME settings parsed from transport options.
#[derive(Debug, Clone)]
pub struct AcmeOptions {
    /// Names to certify.
    pub hostnames: Vec<String>,
    /// Account contact.
    pub email: Option<String>,
    /// Directory URL (default Let's Encrypt).
    pub directory: Option<String>,
    /// Extra CA for the directory's HTTPS (Pebble, a private CA).
    pub ca: Option<PathBuf>,
    /// Challenge type (`acme-challenge`: `tls-alpn-01`, the default, `http-01`, or `any`
    /// for both).
    pub challenge: Challenge,
    /// Where to answer HTTP-01 (e.g. `0.0.0.0:80`).
    pub http_listen: Option<SocketAddr>,
}

/// Splits `options` into ACME settings (if `acme-hostnames` is present) and the rest.
pub fn split_acme(options: &Args) -> Result<(Option<AcmeOptions>, Args), TransportError> {
    let bad = |m: String| TransportError::BadSettings(m);
    let rest: Args = options
        .iter()
        .filter(|(k, _)| !ACME_KEYS.contains(k))
        .collect();
    let Some(names) = options.get("acme-hostnames") else {
        if let Some(k) = ACME_KEYS.iter().find(|k| options.get(k).is_some()) {
            return Err(bad(format!("{k} needs acme-hostnames")));
        }
        return Ok((None, rest));
    };
    if rest.get("tls-cert").is_some() || rest.get("tls-key").is_some() {
        return Err(bad(
            "use either tls-cert/tls-key or acme-hostnames, not both".into(),
        ));
    }
    let hostnames: Vec<String> = names
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if hostnames.is_empty() {
        return Err(bad("acme-hostnames is empty".into()));
    }
    let challenge = match options.get("acme-challenge").unwrap_or("tls-alpn-01") {
        "tls-alpn-01" => Challenge::TlsAlpn01,
        "http-01" => Challenge::Http01,
        "any" => Challenge::Any,
        other => {
            return Err(bad(format!(
                "acme-challenge {other:?}: use tls-alpn-01, http-01 or any"
            )));
        }
    };
    let http_listen = match options.get("acme-http-listen") {
        Some(a) => Some(
            a.parse()
                .map_err(|_| bad(format!("acme-http-listen {a:?} is not IP:port")))?,
        ),
        None => None,
    };
    if challenge.uses_http01() && http_listen.is_none() {
        return Err(bad(format!(
            "acme-challenge={} needs acme-http-listen (e.g. 0.0.0.0:80)",
            options.get("acme-challenge").unwrap_or_default()
        )));
    }
    Ok((
        Some(AcmeOptions {
            hostnames,
            email: options.get("acme-email").map(str::to_owned),
            directory: options.get("acme-directory").map(str::to_owned),
            ca: options.get("acme-ca").map(PathBuf::from),
            challenge,
            http_listen,
        }),
        rest,
    ))
}

/// Starts ACME for `acme` (account and certificates cached in `cache_dir`) and returns
/// the TLS acceptor that serves them. Ordering runs in the background: the listener must be
/// up to answer TLS-ALPN-01, and a cached certificate is served at once.
pub async fn start_acme(acme: AcmeOptions, cache_dir: PathBuf) -> Result<Acceptor, TransportError> {
    let runtime = AcmeRuntime::new(&acme, cache_dir)?;
    if let Some(addr) = acme.http_listen {
        let listener = ptkit_core::net::bind_tcp(addr)?;
        runtime.serve_http01(listener, Http01Fallback::NotFound);
    }
    runtime.start_renewal();
    Ok(runtime.acceptor())
}

/// Most TLS-ALPN-01 validation handshakes in progress at once on a
/// [`AcmeRuntime::serve_tls_alpn01`] listener; further connections are closed at once.
const MAX_VALIDATION_HANDSHAKES: usize = 256;

/// An ACME manager, the TLS acceptor that serves its certificates, and the challenge
/// listeners the caller hands it. Cheap to clone; everything it spawns runs for the life
/// of the process.
///
/// Order of use: [`AcmeRuntime::new`] (contacts nobody), bind the challenge listeners and
/// the transport's own listener, then [`AcmeRuntime::start_renewal`], so that every
/// listener is up before the CA validates.
#[derive(Clone)]
pub struct AcmeRuntime {
    manager: AcmeManager,
    acceptor: Acceptor,
    acme_only: Arc<rustls::ServerConfig>,
    shutdown: Shutdown,
    renewing: Arc<AtomicBool>,
}

impl std::fmt::Debug for AcmeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeRuntime")
            .field("manager", &self.manager)
            .field("renewing", &self.renewing.load(Ordering::Relaxed))
            .finish()
    }
}

impl AcmeRuntime {
    /// Checks the settings and creates the cache directory (0700); contacts nobody. The
    /// acceptor offers ALPN `http/1.1` and answers TLS-ALPN-01 validations itself.
    pub fn new(acme: &AcmeOptions, cache_dir: PathBuf) -> Result<Self, TransportError> {
        let err = |e: crate::Error| TransportError::BadSettings(format!("ACME: {e}"));
        let resolver = Arc::new(HotResolver::new());
        let mut config = AcmeConfig::new(acme.hostnames.clone(), cache_dir);
        if let Some(d) = &acme.directory {
            config.directory_url.clone_from(d);
        }
        config.email.clone_from(&acme.email);
        config.extra_root_pem.clone_from(&acme.ca);
        config.challenge = acme.challenge;
        let manager = AcmeManager::new(config, resolver.clone()).map_err(err)?;
        let acceptor = Acceptor::new(resolver.clone(), &[b"http/1.1"]).map_err(err)?;
        let acme_only = server_config(resolver, &[ACME_TLS_ALPN]).map_err(err)?;
        Ok(AcmeRuntime {
            manager,
            acceptor,
            acme_only,
            // Never cancelled: renewal and the challenge listeners live as long as the
            // process (dropping the runtime does not stop them).
            shutdown: Shutdown::new(),
            renewing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The manager (its configuration, counters and HTTP-01 responder).
    pub fn manager(&self) -> &AcmeManager {
        &self.manager
    }

    /// The acceptor for the transport's TLS listener (certificates by SNI, and TLS-ALPN-01
    /// validations answered in place).
    pub fn acceptor(&self) -> Acceptor {
        self.acceptor.clone()
    }

    /// Serves HTTP-01 on `listener` (normally port 80), answering other requests with
    /// `fallback`.
    pub fn serve_http01(&self, listener: TcpListener, fallback: Http01Fallback) {
        let responder = self.manager.http01_responder();
        let shutdown = self.shutdown.clone();
        self.shutdown.spawn(async move {
            if let Err(e) = serve_http01_with(listener, responder, fallback, shutdown).await {
                tracing::error!("ACME HTTP-01 listener failed: {e}");
            }
        });
    }

    /// Answers TLS-ALPN-01 validations on `listener` (normally an extra port-443 listener)
    /// and nothing else: a ClientHello that does not offer `acme-tls/1` is closed without
    /// a handshake, so this port never serves the transport.
    pub fn serve_tls_alpn01(&self, listener: TcpListener) {
        let config = self.acme_only.clone();
        let shutdown = self.shutdown.clone();
        let permits = Arc::new(Semaphore::new(MAX_VALIDATION_HANDSHAKES));
        self.shutdown.spawn(async move {
            loop {
                let tcp = tokio::select! {
                    _ = shutdown.accepting_stopped() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((tcp, _)) => tcp,
                        Err(e) => {
                            tracing::debug!(error = %e, "TLS-ALPN-01 accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    continue;
                };
                let config = config.clone();
                shutdown.spawn(async move {
                    let _permit = permit;
                    let answer = answer_tls_alpn01(tcp, config);
                    match tokio::time::timeout(Duration::from_secs(10), answer).await {
                        Ok(Ok(true)) => tracing::debug!("answered a TLS-ALPN-01 validation"),
                        Ok(Ok(false)) => {
                            tracing::debug!(
                                "closed a non-ACME TLS connection on the TLS-ALPN-01 port"
                            );
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS-ALPN-01 handshake failed"),
                        Err(_) => tracing::debug!("TLS-ALPN-01 handshake timed out"),
                    }
                });
            }
        });
    }

    /// Starts ordering (or loading the cache) and the renewal loop; later calls do nothing.
    pub fn start_renewal(&self) {
        if !self.renewing.swap(true, Ordering::SeqCst) {
            self.manager.spawn_renewal(&self.shutdown);
        }
    }
}

/// Completes a TLS-ALPN-01 validation handshake (true), or closes a connection that does
/// not offer `acme-tls/1` (false).
async fn answer_tls_alpn01(
    tcp: tokio::net::TcpStream,
    config: Arc<rustls::ServerConfig>,
) -> std::io::Result<bool> {
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
    let acme = start
        .client_hello()
        .alpn()
        .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
    if !acme {
        return Ok(false);
    }
    let mut stream = start.into_stream(config).await?;
    // RFC 8737 §3: the validation connection carries no application data.
    let _ = stream.shutdown().await;
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn acme_options_are_split_and_checked() {
        let a = Args::new()
            .with("acme-hostnames", "a.example, b.example")
            .with("path", "/ws");
        let (acme, rest) = split_acme(&a).unwrap();
        let acme = acme.unwrap();
        assert_eq!(acme.hostnames, ["a.example", "b.example"]);
        assert_eq!(acme.challenge, Challenge::TlsAlpn01);
        assert_eq!(rest.get("path"), Some("/ws"));
        assert!(rest.get("acme-hostnames").is_none());
        assert!(split_acme(&Args::new().with("acme-email", "x@y")).is_err());
        assert!(split_acme(&a.clone().with("tls-cert", "c.pem")).is_err());
        assert!(split_acme(&a.clone().with("acme-challenge", "dns-01")).is_err());
        assert!(split_acme(&a.clone().with("acme-challenge", "http-01")).is_err());
        assert!(split_acme(&a.clone().with("acme-challenge", "any")).is_err());
        let any = a
            .clone()
            .with("acme-challenge", "any")
            .with("acme-http-listen", "0.0.0.0:80");
        assert_eq!(
            split_acme(&any).unwrap().0.unwrap().challenge,
            Challenge::Any
        );
        let h = a
            .with("acme-challenge", "http-01")
            .with("acme-http-listen", "127.0.0.1:80");
        assert_eq!(
            split_acme(&h).unwrap().0.unwrap().http_listen,
            Some("127.0.0.1:80".parse().unwrap())
        );
    }
}
