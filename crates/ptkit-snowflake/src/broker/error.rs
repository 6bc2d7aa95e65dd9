//! The broker's error types.

use std::io;
use std::path::PathBuf;

/// Why a signalling message (client poll, proxy poll, answer, AMP path or armor) was rejected.
///
/// The `Display` text of the variants a client can see is the Go broker's text, because it is
/// sent back verbatim in `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// A client poll without the `1.0` version line (or another version).
    #[error("unsupported message version")]
    UnsupportedVersion,
    /// A proxy poll or answer whose `Version` does not have major version 1.
    #[error("using unknown version")]
    UnknownVersion,
    /// The JSON did not parse, was not an object, or a field had the wrong type.
    #[error("{0}")]
    Json(String),
    /// A client poll with an empty `offer`.
    #[error("no supplied offer")]
    NoOffer,
    /// A client poll whose fingerprint is not hex of 20 or 32 bytes.
    #[error("cannot decode fingerprint")]
    BadFingerprint,
    /// A client poll with a NAT type other than unknown, restricted or unrestricted.
    #[error("invalid NAT type")]
    BadNat,
    /// A proxy poll without a session id.
    #[error("no supplied session id")]
    NoSid,
    /// A proxy answer without a session id or answer.
    #[error("no supplied sid or answer")]
    NoSidOrAnswer,
    /// An `/amp/client/` path that does not decode.
    #[error("cannot decode URL path")]
    BadAmpPath,
    /// An AMP armor document that does not decode.
    #[error("bad AMP armor: {0}")]
    BadArmor(&'static str),
}

impl MessageError {
    /// A short stable label for metrics and logs: `unsupported` or `malformed`.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageError::UnsupportedVersion | MessageError::UnknownVersion => "unsupported",
            _ => "malformed",
        }
    }
}

/// Everything else that can go wrong running a broker: configuration files, I/O, TLS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The bridge list file is invalid (the whole file is rejected).
    #[error("bridge list {path}: line {line}: {detail}")]
    BridgeList {
        /// The file.
        path: PathBuf,
        /// 1-based line number (0 when the problem is the file as a whole).
        line: usize,
        /// What was wrong.
        detail: String,
    },
    /// A geoip database file is invalid.
    #[error("geoip database {path}: line {line}: {detail}")]
    GeoIp {
        /// The file.
        path: PathBuf,
        /// 1-based line number (0 when the problem is the file as a whole).
        line: usize,
        /// What was wrong.
        detail: String,
    },
    /// A setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Reading a file, binding a socket or talking HTTP failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Setting up TLS failed.
    #[error("TLS: {0}")]
    Tls(#[from] ptkit_tls::Error),
}

impl BrokerError {
    /// A short stable label for metrics and logs: `malformed`, `config`, `io` or `tls`.
    pub fn kind(&self) -> &'static str {
        match self {
            BrokerError::BridgeList { .. } | BrokerError::GeoIp { .. } => "malformed",
            BrokerError::Config(_) => "config",
            BrokerError::Io { .. } => "io",
            BrokerError::Tls(_) => "tls",
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        BrokerError::Io {
            context: context.into(),
            source,
        }
    }
}
