//! Sans-IO KCP compatible with kcp-go v5.6.1 under Snowflake settings (spec §2.5).
//!
//! Snowflake runs KCP with no crypto and no FEC, so every datagram is one or more raw KCP
//! segments ([`segment`]). Both ends use stream mode, windows of 65535 segments,
//! `NoDelay(0, 0, 0, 1)` (10 ms interval, minimum RTO 100 ms, initial RTO 200 ms growing
//! linearly by the current RTO on each timeout, no fast resend, no congestion window), MTU 1400
//! and a dead link after 20 transmissions of one segment. [`KcpConfig::default`] is exactly that.
//!
//! [`Kcp`] is the state machine: datagrams in ([`Kcp::input`]), datagrams out
//! ([`Kcp::poll_transmit`]), bytes in ([`Kcp::send`]) and out ([`Kcp::recv`]), and time passed in
//! as `u32` milliseconds that may wrap. It has no clock, socket or task of its own.
//!
//! # Driving it
//!
//! ```text
//! on datagram:   kcp.input(d, now)       then drain poll_transmit (a window slide flushes)
//! on app write:  kcp.send(bytes)         then check(now) == now, so update(now) right away
//! on app read:   kcp.recv(&mut v, max)   may reopen the window; re-arm the timer
//! on timer:      kcp.update(now)         then drain poll_transmit
//! timer:         sleep until kcp.check(now), re-computed after every call above
//! ```
//!
//! # Where this differs from kcp-go (deliberately)
//!
//! * Memory is bounded: received data (out-of-order buffer plus in-order queue) is limited by
//!   [`KcpConfig::max_recv_bytes`] and queued outgoing data by [`KcpConfig::max_send_bytes`]. A
//!   PUSH that does not fit is dropped *without* an ACK, so the peer retransmits it. To keep an
//!   honest peer from ever hitting that, the advertised window is also limited by the free
//!   bytes: `wnd = min(rcv_wnd - len(rcv_queue), (max_recv_bytes - queued) / (mss + 32))`. With
//!   a large enough `max_recv_bytes` this is kcp-go's `rcv_wnd - len(rcv_queue)` exactly.
//! * The pending-ACK list is capped ([`MAX_PENDING_ACKS`]); beyond it, ACKs are not recorded
//!   (the data is still taken; the peer retransmits and gets an ACK then).
//! * The queue of datagrams waiting for [`Kcp::poll_transmit`] is capped
//!   ([`MAX_OUTPUT_BYTES`]); beyond it, datagrams are dropped as a full socket would.
//! * kcp-go treats a datagram whose bytes 4..6 read as the FEC flags 0x00f1/0x00f2 as FEC even
//!   with FEC off; here such a datagram is a bad command, as no Snowflake peer sends them.
//! * `stream = false` (message mode) only changes how [`Kcp::send`] segments data (`frg`
//!   countdown, no coalescing); [`Kcp::recv`] always returns a byte stream.

mod engine;
mod flush;
pub mod segment;

#[cfg(test)]
mod tests;

pub use engine::Kcp;
pub use segment::{HEADER_LEN, SegmentHeader, first_segment};

use thiserror::Error;

/// kcp-go `IKCP_RTO_NDL`: minimum RTO with nodelay on.
pub const RTO_NODELAY_MIN: u32 = 30;
/// kcp-go `IKCP_RTO_MIN`: minimum RTO with nodelay off.
pub const RTO_MIN: u32 = 100;
/// kcp-go `IKCP_RTO_DEF`: RTO before any RTT sample.
pub const RTO_DEFAULT: u32 = 200;
/// kcp-go `IKCP_RTO_MAX`: upper bound of the smoothed RTO.
pub const RTO_MAX: u32 = 60_000;
/// kcp-go `IKCP_PROBE_INIT`: first window probe this long after the peer's window hit 0.
pub const PROBE_INIT_MS: u32 = 7_000;
/// kcp-go `IKCP_PROBE_LIMIT`: window probes are at most this far apart.
pub const PROBE_LIMIT_MS: u32 = 120_000;
/// Most ACKs remembered between two flushes.
pub const MAX_PENDING_ACKS: usize = 16_384;
/// Most bytes of datagrams waiting in the output queue.
pub const MAX_OUTPUT_BYTES: usize = 8 << 20;

/// Session settings. [`Default`] is Snowflake 2.5.1's configuration (both ends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KcpConfig {
    /// Largest datagram emitted (kcp-go default 1400; MSS = mtu − 24). Clamped to 50..=65535.
    pub mtu: usize,
    /// Send window in segments (`SetWindowSize(65535, _)`).
    pub send_window: u16,
    /// Receive window in segments (`SetWindowSize(_, 65535)`).
    pub recv_window: u16,
    /// Flush interval in ms; clamped to 10..=5000 like kcp-go (Snowflake passes 0 → 10).
    pub interval_ms: u32,
    /// kcp-go nodelay: minimum RTO 30 ms instead of 100, timeouts grow by rto/2 not rto.
    pub nodelay: bool,
    /// Fast resend after this many skipping ACKs; 0 disables it.
    pub fast_resend: u32,
    /// Congestion window on (kcp-go `nc = 0`). Snowflake turns it off.
    pub congestion_control: bool,
    /// Stream mode: data is coalesced into MSS-sized segments and `frg` is always 0.
    pub stream: bool,
    /// Dead link once a segment has been transmitted this many times.
    pub dead_link: u32,
    /// Bound on received data held (out-of-order buffer + in-order queue), in bytes (each
    /// segment also counts 32 bytes of bookkeeping). It may be exceeded by one segment so that
    /// the next in-order segment is always taken when nothing is queued.
    pub max_recv_bytes: usize,
    /// Bound on data accepted by [`Kcp::send`] and not yet acknowledged, in bytes.
    pub max_send_bytes: usize,
}

impl Default for KcpConfig {
    fn default() -> Self {
        KcpConfig {
            mtu: 1400,
            send_window: 65535,
            recv_window: 65535,
            interval_ms: 10,
            nodelay: false,
            fast_resend: 0,
            congestion_control: false,
            stream: true,
            dead_link: 20,
            max_recv_bytes: 2 << 20,
            max_send_bytes: 2 << 20,
        }
    }
}

/// Why a datagram was rejected by [`Kcp::input`].
///
/// Segments before the offending one stay applied, as in kcp-go (`kcp.go: KCP.Input` returns
/// in the middle of its loop); the offending segment and everything after it are ignored, and
/// nothing that `Input` does after the loop (RTT sample, window-slide flush) happens.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KcpError {
    /// The datagram is shorter than one header (malformed).
    #[error("KCP datagram of {0} bytes is shorter than a segment header")]
    TooShort(usize),
    /// A segment's conv is not this session's (misbehaving, or another session's packet).
    #[error("KCP segment for conv {got:#010x}, session is {expected:#010x}")]
    WrongConv {
        /// This session's conv.
        expected: u32,
        /// The segment's conv.
        got: u32,
    },
    /// A segment's `len` goes beyond the end of the datagram (malformed).
    #[error("KCP segment length {len} exceeds the {remaining} bytes left in the datagram")]
    LenOverflow {
        /// The `len` field.
        len: u32,
        /// Bytes after the header.
        remaining: usize,
    },
    /// A segment's command is not 81–84 (malformed or unsupported).
    #[error("unknown KCP command {0}")]
    BadCommand(u8),
}

impl KcpError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            KcpError::TooShort(_) => "too_short",
            KcpError::WrongConv { .. } => "wrong_conv",
            KcpError::LenOverflow { .. } => "len_overflow",
            KcpError::BadCommand(_) => "bad_cmd",
        }
    }
}

/// Counters of one session (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KcpStats {
    /// Segments written to datagrams (every command, retransmissions included).
    pub segments_sent: u64,
    /// PUSH segments sent again (timeout, fast and early retransmits).
    pub retransmitted_segments: u64,
    /// Of those, retransmissions caused by a timeout.
    pub lost_segments: u64,
    /// Datagrams queued for output.
    pub datagrams_sent: u64,
    /// Datagrams dropped because the output queue was full.
    pub datagrams_dropped: u64,
    /// Datagrams passed to [`Kcp::input`].
    pub datagrams_received: u64,
    /// Datagrams [`Kcp::input`] returned an error for.
    pub datagrams_rejected: u64,
    /// Well-formed segments processed by [`Kcp::input`].
    pub segments_received: u64,
    /// PUSH segments already received (or below `rcv_nxt`).
    pub duplicate_segments: u64,
    /// PUSH segments outside the receive window (ignored, not acknowledged).
    pub out_of_window_segments: u64,
    /// PUSH segments dropped (not acknowledged) because of `max_recv_bytes`.
    pub no_room_segments: u64,
    /// ACKs not recorded because [`MAX_PENDING_ACKS`] were pending.
    pub acks_dropped: u64,
}

/// Fuzz entry point: runs arbitrary bytes through a session as datagrams and app calls, and
/// checks the memory bounds. Never panics unless a bound is broken.
///
/// Format: a sequence of ops; the low 3 bits of each op byte choose it:
/// 0–2 a datagram (next u16 LE = length, capped at 2048; if the op's bit 7 is clear, the first
/// 4 bytes are patched with the session's conv so deeper paths are reached), 3 advance the
/// clock (next byte × 8 ms) and `update`, 4 `recv` (next byte × 64 bytes), 5 `send` (next
/// byte × 64 bytes), 6 `flush_acks`, 7 drain `poll_transmit`.
pub fn fuzz_input(data: &[u8]) {
    const CONV: u32 = 0x0102_0304;
    let config = KcpConfig {
        max_recv_bytes: 64 << 10,
        max_send_bytes: 64 << 10,
        ..KcpConfig::default()
    };
    let (max_recv, max_send) = (config.max_recv_bytes, config.max_send_bytes);
    let mut kcp = Kcp::new(CONV, config);
    let mut now: u32 = u32::MAX - 5_000; // exercise clock wrap-around
    let mut rest = data;
    let mut sink = Vec::new();
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let mut next_byte = || {
            let (&b, t) = rest.split_first().unwrap_or((&0, &[]));
            rest = t;
            usize::from(b)
        };
        match op & 7 {
            0..=2 => {
                let len = (next_byte() | (next_byte() << 8)).min(2048).min(rest.len());
                let (d, t) = rest.split_at(len);
                rest = t;
                let mut d = d.to_vec();
                if op & 0x80 == 0
                    && let Some(c) = d.get_mut(..4)
                {
                    c.copy_from_slice(&CONV.to_le_bytes());
                }
                let _ = kcp.input(&d, now);
            }
            3 => {
                now = now.wrapping_add((next_byte() as u32) * 8);
                kcp.update(now);
            }
            4 => {
                sink.clear();
                let n = next_byte() * 64;
                let got = kcp.recv(&mut sink, n);
                assert!(got <= n && got == sink.len());
            }
            5 => {
                let n = next_byte() * 64;
                let cap = kcp.send_capacity();
                let took = kcp.send(&vec![0x5a; n]);
                assert!(took <= n && took <= cap);
            }
            6 => kcp.flush_acks(now),
            _ => while kcp.poll_transmit().is_some() {},
        }
        let _ = kcp.check(now);
        assert!(kcp.recv_memory() <= max_recv + 2048 + 32);
        assert!(kcp.send_memory() <= max_send);
        assert!(kcp.output_memory() <= MAX_OUTPUT_BYTES);
    }
    while let Some(d) = kcp.poll_transmit() {
        assert!(d.len() <= 1400);
    }
}
