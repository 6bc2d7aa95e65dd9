//! # ptkit-tls
//!
//! ptkit's one TLS setup, shared by the websocket, snowflake and QUIC transports:
//!
//! * [`provider`], [`server_config`], [`client_config`] with [`ClientRoots`]: rustls
//!   configurations on the single aws-lc-rs crypto provider.
//! * [`HotResolver`]: a lock-free, hot-swappable `ResolvesServerCert` (per-name
//!   certificates, an optional default, TLS-ALPN-01 challenge certificates), and
//!   [`Acceptor`], which answers TLS-ALPN-01 validations on a normal TLS port.
//! * [`load_pem_files`] for static certificate/key files and [`self_signed`] for tests
//!   and pinned certificates.
//! * [`AcmeManager`]: ACME (RFC 8555) with HTTP-01 or TLS-ALPN-01, a private on-disk cache
//!   reused across restarts, and renewal ahead of expiry with a hot swap that never touches
//!   established connections.
//!
//! ```no_run
//! # async fn run() -> Result<(), ptkit_tls::Error> {
//! use std::sync::Arc;
//! use ptkit_tls::{AcmeConfig, AcmeManager, Acceptor, Challenge, HotResolver};
//!
//! let resolver = Arc::new(HotResolver::new());
//! let mut config = AcmeConfig::new(vec!["ws.example.com".into()], "/var/lib/ptkit/acme");
//! config.challenge = Challenge::TlsAlpn01;
//! let acme = AcmeManager::new(config, resolver.clone())?;
//! let shutdown = ptkit_core::shutdown::Shutdown::new();
//! acme.spawn_renewal(&shutdown); // orders (or loads the cache) now, then renews
//! let acceptor = Acceptor::new(resolver, &[b"http/1.1"])?;
//! // for each accepted TCP stream: if let Some(tls) = acceptor.accept(tcp).await? { … }
//! # Ok(()) }
//! ```

mod acme;
mod cache;
mod certs;
mod config;
mod error;
mod http01;
pub mod options;
mod resolver;

pub use acme::{
    AcmeConfig, AcmeManager, Challenge, LETS_ENCRYPT_PRODUCTION, LETS_ENCRYPT_STAGING,
    cached_cert_paths,
};
pub use cache::{DIR_MODE, FILE_MODE};
pub use certs::{CertInfo, certified_key_from_pem, load_pem_files, self_signed};
pub use config::{Acceptor, ClientRoots, client_config, provider, server_config};
pub use error::{Error, Result};
pub use http01::{HTTP01_PATH_PREFIX, Http01Responder, serve_http01};
pub use resolver::{ACME_TLS_ALPN, CertStore, HotResolver};

/// Re-exported so users need not name rustls for the resolver's key type.
pub use rustls::sign::CertifiedKey;
