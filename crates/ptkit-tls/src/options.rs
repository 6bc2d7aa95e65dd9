//! Certificates from transport options: the `acme-*` keys every TLS-using transport accepts
//! (in a torrc's `ServerTransportOptions` or on the command line), split off before the
//! transport sees its own options.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ptkit_core::shutdown::Shutdown;
use ptkit_core::{Args, TransportError};

use crate::{Acceptor, AcmeConfig, AcmeManager, Challenge, HotResolver};

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
    /// Challenge type.
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
        other => {
            return Err(bad(format!(
                "acme-challenge {other:?}: use tls-alpn-01 or http-01"
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
    if challenge == Challenge::Http01 && http_listen.is_none() {
        return Err(bad(
            "acme-challenge=http-01 needs acme-http-listen (e.g. 0.0.0.0:80)".into(),
        ));
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
    let err = |e: crate::Error| TransportError::BadSettings(format!("ACME: {e}"));
    let resolver = Arc::new(HotResolver::new());
    let mut config = AcmeConfig::new(acme.hostnames.clone(), cache_dir);
    if let Some(d) = acme.directory {
        config.directory_url = d;
    }
    config.email = acme.email;
    config.extra_root_pem = acme.ca;
    config.challenge = acme.challenge;
    let manager = AcmeManager::new(config, resolver.clone()).map_err(err)?;
    // Never cancelled: renewal runs as long as the process (dropping the handle does not
    // cancel it).
    let shutdown = Shutdown::new();
    if let Some(addr) = acme.http_listen {
        let listener = ptkit_core::net::bind_tcp(addr)?;
        let responder = manager.http01_responder();
        let sd = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::serve_http01(listener, responder, sd).await {
                tracing::error!("ACME HTTP-01 listener failed: {e}");
            }
        });
    }
    manager.spawn_renewal(&shutdown);
    Acceptor::new(resolver, &[b"http/1.1"]).map_err(err)
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
        let h = a
            .with("acme-challenge", "http-01")
            .with("acme-http-listen", "127.0.0.1:80");
        assert_eq!(
            split_acme(&h).unwrap().0.unwrap().http_listen,
            Some("127.0.0.1:80".parse().unwrap())
        );
    }
}
