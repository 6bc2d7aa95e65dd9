//! The crate's error type: what went wrong, split the house way (malformed / misbehaving /
//! unsupported / refused / I/O), each with a stable [`Error::kind`] label.

use std::io;

use crate::proto::{ProtoError, RefusalCode};

/// Everything that can fail in a tunnel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer sent bytes that do not decode (or a version we do not speak).
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtoError),
    /// The peer broke the protocol's rules with well-formed messages (wrong order, a
    /// message of the other side).
    #[error("peer misbehaved: {0}")]
    Misbehaved(String),
    /// The peer refused: authentication failed or a route was not allowed. `reason` is the
    /// peer's own words.
    #[error("refused by peer ({}): {reason}", code.label())]
    Refused {
        /// Why, as a stable code.
        code: RefusalCode,
        /// The peer's explanation.
        reason: String,
    },
    /// Something did not finish before its deadline.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// Local configuration is unusable (a certificate file, a policy line, a secret).
    #[error("configuration: {0}")]
    Config(String),
    /// TLS setup failed locally.
    #[error("TLS: {0}")]
    Tls(#[from] ptkit_tls::Error),
    /// QUIC could not start a connection (bad address or server name).
    #[error("cannot connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The QUIC connection failed or was closed (including TLS alerts: a certificate the
    /// other side did not accept shows up here).
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// A stream write failed.
    #[error("stream write: {0}")]
    Write(#[from] quinn::WriteError),
    /// Socket I/O failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    /// Stable short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Protocol(p) => p.kind(),
            Error::Misbehaved(_) => "misbehaved",
            Error::Refused { .. } => "refused",
            Error::Timeout(_) => "timeout",
            Error::Config(_) => "config",
            Error::Tls(_) => "tls",
            Error::Connect(_) => "connect",
            Error::Connection(quinn::ConnectionError::TransportError(_)) => "tls_or_transport",
            Error::Connection(_) => "connection",
            Error::Write(_) => "io",
            Error::Io(_) => "io",
        }
    }

    /// True when retrying with the same settings cannot help (a refusal by the server's
    /// authentication, a certificate one side rejects, bad local configuration). A client
    /// exits non-zero on these instead of reconnecting.
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::Refused { code, .. } => matches!(
                code,
                RefusalCode::BadCredentials | RefusalCode::MethodNotAllowed
            ),
            Error::Config(_) | Error::Tls(_) | Error::Connect(_) => true,
            // TLS alerts (0x100..0x1ff): one side rejected the other's certificate.
            Error::Connection(quinn::ConnectionError::TransportError(t)) => {
                (0x100..0x200).contains(&u64::from(t.code))
            }
            Error::Connection(quinn::ConnectionError::ConnectionClosed(c)) => {
                (0x100..0x200).contains(&u64::from(c.error_code))
            }
            Error::Connection(quinn::ConnectionError::ApplicationClosed(c)) => {
                u64::from(c.error_code) == crate::CLOSE_AUTH_REFUSED
            }
            _ => false,
        }
    }
}

impl From<quinn::ReadExactError> for Error {
    fn from(e: quinn::ReadExactError) -> Self {
        match e {
            quinn::ReadExactError::FinishedEarly(_) => {
                Error::Misbehaved("stream ended in the middle of a message".into())
            }
            quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(c)) => {
                Error::Connection(c)
            }
            quinn::ReadExactError::ReadError(r) => Error::Io(r.into()),
        }
    }
}

impl From<Error> for ptkit_core::TransportError {
    fn from(e: Error) -> Self {
        match e {
            Error::Protocol(p) => ptkit_core::TransportError::Protocol(p.to_string()),
            Error::Config(c) => ptkit_core::TransportError::BadSettings(c),
            Error::Io(io) => ptkit_core::TransportError::Io(io),
            other => ptkit_core::TransportError::Io(io::Error::other(other.to_string())),
        }
    }
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;
