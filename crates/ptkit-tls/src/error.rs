//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while setting up TLS or obtaining certificates.
///
/// Variants may be added in minor releases. [`Error::kind`] gives a short stable label for
/// metrics and logs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    File {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// A PEM file could not be parsed, or did not hold what was expected.
    #[error("{path}: {what}")]
    Pem {
        /// The file involved.
        path: PathBuf,
        /// What was wrong with it.
        what: String,
    },
    /// A certificate and private key do not belong together, or the key is unusable.
    #[error("{path}: {source}")]
    Key {
        /// The file (or files) involved.
        path: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// A certificate could not be parsed (for example its validity period).
    #[error("malformed certificate: {0}")]
    MalformedCertificate(&'static str),
    /// rustls rejected a configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Generating a key, certificate or CSR failed.
    #[error("certificate generation: {0}")]
    CertGen(#[from] rcgen::Error),
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The ACME server (or the HTTP exchange with it) failed.
    #[error("ACME {context}: {source}")]
    Acme {
        /// Which step failed.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: instant_acme::Error,
    },
    /// The ACME server did not validate an order.
    #[error("ACME order for {name} ended in state {status}")]
    OrderFailed {
        /// The host name being ordered.
        name: String,
        /// The final order status.
        status: String,
    },
    /// The ACME server offers no challenge of the configured type.
    #[error("ACME server offers no {challenge} challenge for {name}")]
    ChallengeUnavailable {
        /// The host name being ordered.
        name: String,
        /// The challenge type asked for.
        challenge: &'static str,
    },
    /// Another process held the cache lock for too long.
    #[error("timed out waiting for the ACME cache lock {0}")]
    LockTimeout(PathBuf),
    /// The TLS handshake failed.
    #[error("TLS handshake: {0}")]
    Handshake(#[source] io::Error),
    /// A network operation failed.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

impl Error {
    /// A short, stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::File { .. } => "file",
            Error::Pem { .. } => "pem",
            Error::Key { .. } => "key",
            Error::MalformedCertificate(_) => "malformed_certificate",
            Error::Rustls(_) => "tls_config",
            Error::CertGen(_) => "certgen",
            Error::Config(_) => "config",
            Error::Acme { .. } => "acme",
            Error::OrderFailed { .. } => "acme_order",
            Error::ChallengeUnavailable { .. } => "acme_challenge",
            Error::LockTimeout(_) => "lock_timeout",
            Error::Handshake(_) => "handshake",
            Error::Io(_) => "io",
        }
    }

    pub(crate) fn file(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::File {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn acme(context: &'static str) -> impl FnOnce(instant_acme::Error) -> Self {
        move |source| Error::Acme { context, source }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
