//! Sans-IO smux protocol version 2, compatible with xtaci/smux v1.5.16 as snowflake 2.5.1
//! uses it (`specs/snowflake.md` §2.6).
//!
//! A [`Session`] sits on one reliable, ordered byte stream (a KCP session). Bytes from the
//! peer go in through [`Session::handle_input`]; bytes for the peer come out of
//! [`Session::poll_transmit`]; time goes in through [`Session::handle_timeout`]. Stream
//! activity is reported by [`Session::poll_event`]. There are no sockets, tasks or clocks.
//!
//! Behaviour that matters on the wire, as in Go smux 1.5.16:
//!
//! * Stream ids: a client opens odd ids starting at 3, a server even ids starting at 2.
//! * SYN for an existing id is ignored; FIN, PSH and UPD for an unknown id are ignored (PSH
//!   data is discarded). A bad version byte or an unknown command kills the session.
//! * Flow control per stream: a writer keeps at most `window − (written − consumed)` bytes in
//!   flight, with the peer's window assumed to be 262 144 until its first UPD. A reader sends
//!   `UPD(consumed, max_stream_buffer)` after its first read and then whenever another
//!   `max_stream_buffer / 2` bytes have been read.
//! * A NOP goes out every keepalive interval; the session dies when nothing was received for
//!   one keepalive timeout.
//! * Closing a stream sends FIN and forgets it; there is no half-close.
//!
//! Bounds added here (Go smux has none of these): at most [`SmuxConfig::max_streams`]
//! streams (excess SYNs are answered with FIN), a peer that sends more than the window it was
//! given is a session error (so a stream's receive buffer never exceeds that window), and
//! stream data waiting in [`Session::poll_transmit`] is limited to
//! [`SmuxConfig::max_pending_output`].

mod error;
pub mod frame;
mod session;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use error::SmuxError;
pub use session::{Session, fuzz_frames};

/// A stream identifier (odd for client-opened streams, even for server-opened ones).
pub type StreamId = u32;

/// Which end of the session this is (decides the parity of locally opened stream ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The dialling side: opens odd stream ids 3, 5, 7, ...
    Client,
    /// The accepting side: opens even stream ids 2, 4, 6, ...
    Server,
}

/// Session settings. [`SmuxConfig::server`] and [`SmuxConfig::client`] give snowflake 2.5.1's
/// values; out-of-range values are clamped by [`Session::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmuxConfig {
    /// How often a NOP is sent (smux `KeepAliveInterval`, 10 s). At least 1 ms.
    pub keepalive_interval: Duration,
    /// The session is closed when nothing was received for this long (smux
    /// `KeepAliveTimeout`: 4 min on the snowflake server, 10 min on the client).
    pub keepalive_timeout: Duration,
    /// Largest PSH payload we send (smux `MaxFrameSize`, 32 768), clamped to 1..=65535. We
    /// receive any length up to 65535 regardless.
    pub max_frame_size: usize,
    /// The receive window advertised in our UPDs (smux `MaxStreamBuffer`, 1 MiB in
    /// snowflake), clamped to 1..=2^31−1. UPDs go out after the first read and every
    /// `max_stream_buffer / 2` bytes read after that.
    pub max_stream_buffer: u32,
    /// Most streams open at once. A SYN beyond it is answered with FIN at once and counted in
    /// [`SmuxStats::streams_rejected`]; [`Session::open_stream`] fails beyond it.
    pub max_streams: usize,
    /// Most bytes of stream data (PSH and FIN frames) waiting in [`Session::poll_transmit`].
    /// [`Session::write`] accepts no more than fits. At least 1.
    pub max_pending_output: usize,
    /// Session-wide received-but-unread data above which [`Session::wants_input`] turns
    /// false (smux `MaxReceiveBuffer`, 4 MiB). The session does not enforce it (each stream is
    /// already bounded by its window); it is a back-pressure hint for the driver, which
    /// should then stop feeding input, as Go's receive loop does. While the session is over
    /// it, the keepalive timeout does not fire (as in Go).
    pub max_receive_buffer: usize,
}

impl SmuxConfig {
    /// snowflake-server 2.5.1: keepalive 10 s / 4 min, frames of 32 768, stream window 1 MiB.
    pub fn server() -> Self {
        SmuxConfig {
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(4 * 60),
            max_frame_size: 32_768,
            max_stream_buffer: 1_048_576,
            max_streams: 256,
            max_pending_output: 256 * 1024,
            max_receive_buffer: 4 * 1024 * 1024,
        }
    }

    /// snowflake-client 2.5.1: as the server but with a 10 min keepalive timeout.
    pub fn client() -> Self {
        SmuxConfig {
            keepalive_timeout: Duration::from_secs(10 * 60),
            ..SmuxConfig::server()
        }
    }
}

impl Default for SmuxConfig {
    fn default() -> Self {
        SmuxConfig::server()
    }
}

/// Something that happened to a stream, reported by [`Session::poll_event`].
///
/// Events are coalesced: at most one `Readable` and one `Writable` per stream is queued until
/// it is polled. Session death is not an event: check [`Session::is_closed`] after
/// [`Session::handle_input`] and [`Session::handle_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The peer opened a stream (SYN). It is accepted: read and write it, close it when done.
    Opened(StreamId),
    /// Data arrived on the stream.
    Readable(StreamId),
    /// The stream can take more data: the peer's window reopened (UPD), pending output
    /// drained, or a write would now fail (peer misbehaviour); call [`Session::write`].
    Writable(StreamId),
    /// The peer closed the stream (FIN): reads drain what is buffered, then give EOF; writes
    /// fail. Writers waiting for `Writable` should wake on this too.
    Finished(StreamId),
}

impl Event {
    /// The stream this event concerns.
    pub fn sid(&self) -> StreamId {
        match *self {
            Event::Opened(sid)
            | Event::Readable(sid)
            | Event::Writable(sid)
            | Event::Finished(sid) => sid,
        }
    }
}

/// Result of [`Session::read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes were copied (0 only for an empty buffer).
    Data(usize),
    /// Nothing buffered yet; wait for [`Event::Readable`] or [`Event::Finished`].
    WouldBlock,
    /// The peer closed the stream and everything it sent has been read.
    Eof,
}

/// Counters for one session (all monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmuxStats {
    /// Whole frames decoded from the peer.
    pub frames_received: u64,
    /// Frames queued for the peer.
    pub frames_sent: u64,
    /// PSH payload bytes received on open streams.
    pub bytes_received: u64,
    /// PSH payload bytes queued for the peer.
    pub bytes_sent: u64,
    /// Streams the peer opened that we accepted.
    pub streams_accepted: u64,
    /// Streams we opened.
    pub streams_opened: u64,
    /// Peer SYNs refused (answered with FIN) because of `max_streams`.
    pub streams_rejected: u64,
    /// SYNs for a stream id that was already open (ignored).
    pub syn_duplicate: u64,
    /// FIN, PSH and UPD frames for stream ids that are not open (ignored).
    pub frames_unknown_stream: u64,
    /// PSH payload bytes discarded because their stream was not open.
    pub bytes_discarded: u64,
    /// NOPs received.
    pub nop_received: u64,
    /// NOPs queued.
    pub nop_sent: u64,
    /// UPDs received for open streams.
    pub upd_received: u64,
    /// UPDs queued.
    pub upd_sent: u64,
    /// FINs received for open streams.
    pub fin_received: u64,
    /// FINs queued (local closes and rejected SYNs).
    pub fin_sent: u64,
    /// UPDs that acknowledged more than we sent (the stream is then unusable for writing).
    pub bad_upd: u64,
    /// Control frames (NOP, FIN for a rejected SYN) not queued because output was full.
    pub control_dropped: u64,
}
