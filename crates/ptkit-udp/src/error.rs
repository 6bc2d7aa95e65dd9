//! Errors of the UDP layer, each with a stable `kind()` metrics label.

/// Why a STUN message or ChannelData frame was refused (malformed input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StunError {
    /// The bytes end before the message does.
    #[error("truncated STUN message")]
    Truncated,
    /// Larger than [`crate::stun::MAX_MESSAGE`].
    #[error("STUN message too long")]
    TooLong,
    /// A field breaks RFC 5389's rules.
    #[error("malformed STUN message: {0}")]
    Malformed(&'static str),
    /// FINGERPRINT does not match the message.
    #[error("STUN FINGERPRINT mismatch")]
    BadFingerprint,
}

impl StunError {
    /// Stable short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            StunError::Truncated => "stun_truncated",
            StunError::TooLong => "stun_too_long",
            StunError::Malformed(_) => "stun_malformed",
            StunError::BadFingerprint => "stun_bad_fingerprint",
        }
    }
}

/// Why a stream of framed datagrams, or the UDP configuration, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UdpError {
    /// STUN-mode framing met bytes that are neither STUN nor ChannelData (malformed).
    #[error(transparent)]
    Stun(#[from] StunError),
    /// A frame longer than the configured maximum datagram (misbehaving peer).
    #[error("framed datagram of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// An unknown or invalid `udp-*` option (configuration).
    #[error("bad UDP option {key}: {reason}")]
    BadOption {
        /// The option key.
        key: String,
        /// Why.
        reason: String,
    },
}

impl UdpError {
    /// Stable short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UdpError::Stun(e) => e.kind(),
            UdpError::TooLarge(_) => "udp_frame_too_large",
            UdpError::BadOption { .. } => "udp_bad_option",
        }
    }
}
