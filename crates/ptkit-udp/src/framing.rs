//! Sans-IO datagram framing over a byte stream (spec §1.3.4), and the documented knobs of
//! the UDP layer.
//!
//! - [`Framing::BigEndian`] (`transparent-UDP`, default): `u16 big-endian length ‖ payload`,
//!   both directions;
//! - [`Framing::Shapeshifter`]: shapeshifter-dispatcher's wire format, `u16 little-endian
//!   length ‖ payload`, client → server only (its server never answers; ours drops replies,
//!   so a shapeshifter client that never reads cannot stall the connection);
//! - [`Framing::Stun`] (`STUN` mode): no extra framing; each STUN message is delimited by its
//!   own header (20 + length) and TURN ChannelData by its 4-byte header, padded to 4 bytes
//!   on the stream as RFC 5766 §11.5 requires over TCP. Other datagrams are refused.

use std::time::Duration;

use ptkit_core::Args;

use crate::error::UdpError;
use crate::stun;

/// Largest payload a 2-byte length prefix can carry.
pub const MAX_FRAME: usize = u16::MAX as usize;

/// How datagrams are delimited on the transport stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Framing {
    /// `u16` big-endian length, both directions (the spec).
    #[default]
    BigEndian,
    /// `u16` little-endian length, one-way (shapeshifter-dispatcher compatibility).
    Shapeshifter,
    /// STUN / ChannelData self-delimiting messages (the `STUN` mode).
    Stun,
}

impl Framing {
    /// True when the server sends replies back through the transport.
    pub fn two_way(self) -> bool {
        self != Framing::Shapeshifter
    }

    /// True when `datagram` may be carried (STUN mode accepts only STUN and ChannelData;
    /// the length-prefixed framings anything up to [`MAX_FRAME`] bytes).
    pub fn accepts(self, datagram: &[u8]) -> bool {
        match self {
            Framing::Stun => {
                stun::looks_like_stun(datagram)
                    && stun::stream_frame_len(datagram).ok().flatten() == Some(datagram.len())
                    || stun::parse_channel_data(datagram).is_ok()
            }
            _ => datagram.len() <= MAX_FRAME,
        }
    }

    /// Appends `datagram`, framed, to `out`. Callers check [`Framing::accepts`] first; a
    /// datagram that does not fit is cut to [`MAX_FRAME`].
    pub fn encode(self, datagram: &[u8], out: &mut Vec<u8>) {
        let d = &datagram[..datagram.len().min(MAX_FRAME)];
        let len = u16::try_from(d.len()).unwrap_or(u16::MAX);
        match self {
            Framing::BigEndian => out.extend_from_slice(&len.to_be_bytes()),
            Framing::Shapeshifter => out.extend_from_slice(&len.to_le_bytes()),
            Framing::Stun => {}
        }
        out.extend_from_slice(d);
        if self == Framing::Stun && d.first().is_some_and(|b| b >> 6 == 1) {
            out.extend(std::iter::repeat_n(0u8, (4 - d.len() % 4) % 4));
        }
    }
}

/// Splits a byte stream back into datagrams. Holds at most one partial frame plus one read.
#[derive(Debug)]
pub struct Decoder {
    framing: Framing,
    max: usize,
    buf: Vec<u8>,
    start: usize,
}

impl Decoder {
    /// A decoder refusing frames longer than `max_datagram` (at most [`MAX_FRAME`], plus
    /// the STUN header or ChannelData padding in STUN mode).
    pub fn new(framing: Framing, max_datagram: usize) -> Decoder {
        Decoder {
            framing,
            max: max_datagram.min(MAX_FRAME),
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole datagram, `Ok(None)` when more bytes are needed, or an error that
    /// ends the stream (oversized frame, non-STUN bytes in STUN mode).
    pub fn next_datagram(&mut self) -> Result<Option<Vec<u8>>, UdpError> {
        let b = &self.buf[self.start..];
        let (header, len, keep) = match self.framing {
            Framing::BigEndian | Framing::Shapeshifter => {
                if b.len() < 2 {
                    return Ok(None);
                }
                let n = if self.framing == Framing::BigEndian {
                    u16::from_be_bytes([b[0], b[1]])
                } else {
                    u16::from_le_bytes([b[0], b[1]])
                };
                let n = usize::from(n);
                (2, n, n)
            }
            Framing::Stun => match stun::stream_frame_len(b)? {
                None => return Ok(None),
                Some(n) => {
                    // ChannelData: deliver 4 + length, drop the stream padding.
                    let keep = if b[0] >> 6 == 1 {
                        4 + usize::from(u16::from_be_bytes([b[2], b[3]]))
                    } else {
                        n
                    };
                    (0, n, keep)
                }
            },
        };
        if keep > self.max + if self.framing == Framing::Stun { 20 } else { 0 } {
            return Err(UdpError::TooLarge(keep));
        }
        if b.len() < header + len {
            return Ok(None);
        }
        let d = b[header..header + keep].to_vec();
        self.start += header + len;
        Ok(Some(d))
    }

    /// Bytes buffered but not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// The UDP layer's knobs, set through `udp-*` keys of a transport's options (see
/// `docs/udp.md`); every queue and table is bounded by one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpOptions {
    /// `udp-framing=be|shapeshifter` (STUN mode always uses [`Framing::Stun`]).
    pub framing: Framing,
    /// `udp-idle-timeout=SECONDS` (default 60): a peer (client) or connection (server)
    /// silent this long in both directions is closed.
    pub idle_timeout: Duration,
    /// `udp-max-peers=N` (default 1024): most local peers (client) or transport
    /// connections (server) at once; datagrams from further peers are dropped.
    pub max_peers: usize,
    /// `udp-queue=N` (default 256): datagrams queued per peer while its transport
    /// connection is being opened or is slow; further ones are dropped (UDP semantics).
    pub queue: usize,
    /// `udp-max-datagram=BYTES` (default and maximum 65535): longer frames end the
    /// connection as misbehaving.
    pub max_datagram: usize,
    /// `udp-connect-timeout=SECONDS` (default 20): opening one transport connection.
    pub connect_timeout: Duration,
    /// `udp-turn-users=user:pass[,user:pass…]` (client, `transparent-UDP` mode): the local
    /// listener speaks TURN (RFC 5766) with these long-term credentials instead of taking
    /// raw datagrams. `None`: no TURN (the default; TURN without users is refused).
    pub turn_users: Option<Vec<(String, String)>>,
    /// `udp-turn-realm=REALM` (default `ptkit`).
    pub turn_realm: String,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            framing: Framing::BigEndian,
            idle_timeout: Duration::from_secs(60),
            max_peers: 1024,
            queue: 256,
            max_datagram: MAX_FRAME,
            connect_timeout: Duration::from_secs(20),
            turn_users: None,
            turn_realm: "ptkit".into(),
        }
    }
}

impl UdpOptions {
    /// Takes the `udp-*` keys out of `args`: returns the knobs and the remaining arguments
    /// (which belong to the transport). Unknown `udp-*` keys and bad values are errors.
    pub fn split(args: &Args) -> Result<(UdpOptions, Args), UdpError> {
        let mut o = UdpOptions::default();
        let mut rest = Args::new();
        for (k, v) in args.iter() {
            let bad = |reason: &str| UdpError::BadOption {
                key: k.to_owned(),
                reason: reason.to_owned(),
            };
            let num = |lo: u64, hi: u64| -> Result<u64, UdpError> {
                v.parse::<u64>()
                    .ok()
                    .filter(|n| (lo..=hi).contains(n))
                    .ok_or_else(|| bad(&format!("want an integer in {lo}..={hi}")))
            };
            match k {
                "udp-framing" => {
                    o.framing = match v {
                        "be" => Framing::BigEndian,
                        "shapeshifter" => Framing::Shapeshifter,
                        _ => return Err(bad("want be or shapeshifter")),
                    }
                }
                "udp-idle-timeout" => o.idle_timeout = Duration::from_secs(num(1, 86_400)?),
                "udp-max-peers" => o.max_peers = num(1, 1 << 20)? as usize,
                "udp-queue" => o.queue = num(1, 65_536)? as usize,
                "udp-max-datagram" => o.max_datagram = num(1, MAX_FRAME as u64)? as usize,
                "udp-connect-timeout" => o.connect_timeout = Duration::from_secs(num(1, 600)?),
                "udp-turn-users" => {
                    let mut users = Vec::new();
                    for pair in v.split(',') {
                        match pair.split_once(':') {
                            Some((u, p)) if !u.is_empty() && !p.is_empty() && u.len() <= 513 => {
                                users.push((u.to_owned(), p.to_owned()));
                            }
                            _ => return Err(bad("want user:password[,user:password…]")),
                        }
                    }
                    o.turn_users = Some(users);
                }
                "udp-turn-realm" if !v.is_empty() && v.len() <= 763 => o.turn_realm = v.to_owned(),
                "udp-turn-realm" => return Err(bad("want 1 to 763 bytes")),
                _ if k.starts_with("udp-") => return Err(bad("unknown UDP option")),
                _ => rest.push(k, v),
            }
        }
        Ok((o, rest))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    #[test]
    fn s1_3_4_big_endian_vector() {
        let mut out = Vec::new();
        Framing::BigEndian.encode(b"abcdef", &mut out);
        assert_eq!(out, hex!("0006 616263646566"));
        let mut out = Vec::new();
        // shapeshifter issue #31: `[6 0]` before a 6-byte datagram.
        Framing::Shapeshifter.encode(b"abcdef", &mut out);
        assert_eq!(out, hex!("0600 616263646566"));
    }

    #[test]
    fn stun_mode_pads_channel_data_and_strips_it() {
        let cd = crate::stun::channel_data(0x4000, b"xyz");
        let mut out = Vec::new();
        Framing::Stun.encode(&cd, &mut out);
        assert_eq!(out, hex!("40000003 78797a 00"));
        let mut d = Decoder::new(Framing::Stun, MAX_FRAME);
        d.push(&out);
        assert_eq!(d.next_datagram().unwrap(), Some(cd));
        assert!(!Framing::Stun.accepts(b"not stun at all, sorry"));
        d.push(&hex!("c0000000"));
        assert!(d.next_datagram().is_err());
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut d = Decoder::new(Framing::BigEndian, 100);
        d.push(&hex!("0065"));
        assert_eq!(d.next_datagram(), Err(UdpError::TooLarge(101)));
    }

    #[test]
    fn options_split() {
        let a = Args::new()
            .with("udp-framing", "shapeshifter")
            .with("udp-max-peers", "3")
            .with("cert", "x");
        let (o, rest) = UdpOptions::split(&a).unwrap();
        assert_eq!(o.framing, Framing::Shapeshifter);
        assert_eq!(o.max_peers, 3);
        assert_eq!(rest, Args::new().with("cert", "x"));
        assert!(UdpOptions::split(&Args::new().with("udp-nope", "1")).is_err());
        assert!(UdpOptions::split(&Args::new().with("udp-queue", "0")).is_err());
        let (o, _) = UdpOptions::split(&Args::new().with("udp-turn-users", "a:b,c:d:e")).unwrap();
        assert_eq!(
            o.turn_users,
            Some(vec![("a".into(), "b".into()), ("c".into(), "d:e".into())])
        );
        assert!(UdpOptions::split(&Args::new().with("udp-turn-users", "nopass")).is_err());
    }

    proptest! {
        #[test]
        fn round_trip_with_arbitrary_chunking(
            framing in prop_oneof![Just(Framing::BigEndian), Just(Framing::Shapeshifter)],
            dgrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
            chunk in 1usize..50,
        ) {
            let mut wire = Vec::new();
            for d in &dgrams {
                framing.encode(d, &mut wire);
            }
            let mut dec = Decoder::new(framing, MAX_FRAME);
            let mut got = Vec::new();
            for c in wire.chunks(chunk) {
                dec.push(c);
                while let Some(d) = dec.next_datagram().unwrap() {
                    got.push(d);
                }
            }
            prop_assert_eq!(got, dgrams);
            prop_assert_eq!(dec.buffered(), 0);
        }

        #[test]
        fn stun_round_trip(ids in proptest::collection::vec((any::<[u8; 12]>(), proptest::collection::vec(any::<u8>(), 0..64)), 0..10), chunk in 1usize..40) {
            let mut wire = Vec::new();
            let mut want = Vec::new();
            for (i, (id, data)) in ids.iter().enumerate() {
                let d = if i % 2 == 0 {
                    crate::stun::Builder::new(crate::stun::method::SEND, crate::stun::Class::Indication, *id)
                        .attr(crate::stun::attr::DATA, data).finish(None, true)
                } else {
                    crate::stun::channel_data(0x4000 + i as u16, data)
                };
                prop_assert!(Framing::Stun.accepts(&d));
                Framing::Stun.encode(&d, &mut wire);
                want.push(d);
            }
            let mut dec = Decoder::new(Framing::Stun, MAX_FRAME);
            let mut got = Vec::new();
            for c in wire.chunks(chunk) {
                dec.push(c);
                while let Some(d) = dec.next_datagram().unwrap() {
                    got.push(d);
                }
            }
            prop_assert_eq!(got, want);
        }
    }
}
