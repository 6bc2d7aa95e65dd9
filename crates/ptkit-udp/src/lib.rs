//! # ptkit-udp
//!
//! UDP over any ptkit transport (spec §1.3.4 and §6 row 3 of
//! `shared/specs/pt2-websocket-quic.md`):
//!
//! - [`framing`]: the sans-IO datagram framings — `u16` big-endian length (`transparent-UDP`,
//!   both directions), shapeshifter-dispatcher's one-way little-endian compatibility format,
//!   and self-delimiting STUN/ChannelData (`STUN` mode) — and the documented knobs
//!   ([`framing::UdpOptions`], `udp-*` option keys);
//! - [`stun`]: the sans-IO STUN/TURN message codec (RFC 5389, RFC 5766, RFC 6156);
//! - [`turn`]: the sans-IO TURN server state machine (allocations, long-term credentials,
//!   permissions, channels);
//! - [`flow`] and [`turn_front`]: the async drivers (client, server, TURN front end).
//!
//! See `docs/udp.md` for the modes as the dispatcher runs them.

pub mod error;
pub mod flow;
pub mod framing;
pub mod stun;
pub mod turn;
pub mod turn_front;

pub use error::{StunError, UdpError};
pub use flow::{TransportPath, UdpCounters, serve_client, serve_server};
pub use framing::{Framing, UdpOptions};
pub use turn::{TurnConfig, TurnServer};
pub use turn_front::serve_turn;

/// Fuzz entry point for `fuzz/fuzz_targets/stun_turn.rs`: runs untrusted bytes through the
/// STUN parser, the ChannelData parser, every stream framing's decoder, and the TURN state
/// machine (as the first datagram of a fresh server and after a login). Never panics.
pub fn fuzz_stun_turn(data: &[u8]) {
    use std::time::Instant;
    let _ = stun::Message::parse(data).map(|m| {
        let _ = m.verify_integrity(b"key");
        let _ = m.error_code();
        let _ = m.xor_address(stun::attr::XOR_PEER_ADDRESS);
    });
    let _ = stun::parse_channel_data(data);
    for f in [Framing::BigEndian, Framing::Shapeshifter, Framing::Stun] {
        let mut d = framing::Decoder::new(f, framing::MAX_FRAME);
        d.push(data);
        while let Ok(Some(_)) = d.next_datagram() {}
    }
    let now = Instant::now();
    let cfg = TurnConfig {
        users: vec![("u".into(), "p".into())],
        ..TurnConfig::default()
    };
    let mut s = TurnServer::new(cfg, 1, now);
    let from = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
    let _ = s.handle(from, data, now);
    for chunk in data.chunks(64) {
        let _ = s.handle(from, chunk, now);
    }
    let _ = s.expire(now);
}
