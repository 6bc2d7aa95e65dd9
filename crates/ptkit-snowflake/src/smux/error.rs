//! The smux error type.

use super::StreamId;

/// Everything that can go wrong in an smux session or on one of its streams.
///
/// Errors that kill the whole session (the ones a [`Session`](super::Session) stores as its
/// [`close_reason`](super::Session::close_reason)) are [`BadVersion`](Self::BadVersion),
/// [`UnknownCommand`](Self::UnknownCommand), [`WindowExceeded`](Self::WindowExceeded),
/// [`KeepaliveTimeout`](Self::KeepaliveTimeout) and [`Closed`](Self::Closed) (a local close).
/// The others concern one call or one stream and leave the session running.
///
/// Variants may be added. [`SmuxError::kind`] gives a short stable label for metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SmuxError {
    /// A frame header carried a version byte other than 2 (session error).
    #[error("smux frame with version {version}, expected 2")]
    BadVersion {
        /// The version byte received.
        version: u8,
    },
    /// A frame header carried a command byte other than SYN/FIN/PSH/NOP/UPD (session error).
    #[error("smux frame with unknown command {cmd}")]
    UnknownCommand {
        /// The command byte received.
        cmd: u8,
    },
    /// The peer sent more stream data than the window it was given (session error).
    #[error("smux stream {sid}: peer sent {received} bytes, but was allowed only {allowed}")]
    WindowExceeded {
        /// The stream.
        sid: StreamId,
        /// Total bytes the peer has sent on this stream, the offending frame included.
        received: u64,
        /// Total bytes the peer was allowed to send by the windows we advertised.
        allowed: u64,
    },
    /// The peer acknowledged (UPD `consumed`) more bytes than we ever sent on a stream. The
    /// stream is unusable for writing; the session continues (as in Go smux, `ErrConsumed`).
    #[error("smux stream {sid}: peer consumed {consumed}, but only {written} were sent")]
    ConsumedMoreThanSent {
        /// The stream.
        sid: StreamId,
        /// The `consumed` value of the UPD (a wrapping 32-bit counter).
        consumed: u32,
        /// Our count of bytes written (a wrapping 32-bit counter).
        written: u32,
    },
    /// Nothing was received during one whole keepalive timeout (session error).
    #[error("smux keepalive timeout: nothing received from the peer")]
    KeepaliveTimeout,
    /// The session is closed (locally, or after an earlier error).
    #[error("smux session closed")]
    Closed,
    /// The stream id is not (or no longer) open in this session.
    #[error("smux stream {sid} is not open")]
    UnknownStream {
        /// The stream.
        sid: StreamId,
    },
    /// The peer closed the stream (FIN); smux has no half-close, so it cannot be written.
    #[error("smux stream {sid} was closed by the peer")]
    StreamFinished {
        /// The stream.
        sid: StreamId,
    },
    /// Opening another stream would exceed the configured stream limit.
    #[error("smux session already has {limit} streams")]
    TooManyStreams {
        /// The configured limit.
        limit: usize,
    },
    /// The 32-bit stream id space of this side is used up; open a new session.
    #[error("smux stream ids exhausted")]
    StreamIdsExhausted,
    /// A frame payload longer than 65535 bytes was to be encoded.
    #[error("smux frame payload of {len} bytes is longer than 65535")]
    PayloadTooLong {
        /// The payload length.
        len: usize,
    },
}

impl SmuxError {
    /// Stable short label for metrics: `malformed`, `misbehaving`, `timeout`, `closed`,
    /// `unknown_stream`, `stream_finished`, `limit` or `internal`.
    pub fn kind(&self) -> &'static str {
        match self {
            SmuxError::BadVersion { .. } | SmuxError::UnknownCommand { .. } => "malformed",
            SmuxError::WindowExceeded { .. } | SmuxError::ConsumedMoreThanSent { .. } => {
                "misbehaving"
            }
            SmuxError::KeepaliveTimeout => "timeout",
            SmuxError::Closed => "closed",
            SmuxError::UnknownStream { .. } => "unknown_stream",
            SmuxError::StreamFinished { .. } => "stream_finished",
            SmuxError::TooManyStreams { .. } | SmuxError::StreamIdsExhausted => "limit",
            SmuxError::PayloadTooLong { .. } => "internal",
        }
    }
}
