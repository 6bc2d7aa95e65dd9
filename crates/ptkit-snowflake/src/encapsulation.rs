//! Turbotunnel encapsulation (spec §2.3): after the token and ClientID, both directions carry
//! chunks, each a 1–3 byte length prefix and that many bytes.
//!
//! ```text
//! first byte:  d c x x x x x x    d = 1 data / 0 padding; c = another prefix byte follows
//! next bytes:  c y y y y y y y    (at most two of these)
//! ```
//!
//! A data chunk is one packet (one KCP datagram); padding is skipped. The [`Decoder`] is
//! sans-IO and streaming: feed it bytes in any chunking, it hands out whole packets. It never
//! buffers padding and never buffers a data chunk larger than its packet limit (such a chunk
//! is skipped and counted, as the Go reader truncates it into a datagram KCP then rejects).

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Largest chunk length a 3-byte prefix can encode (20 bits).
pub const MAX_CHUNK_LEN: usize = 0xF_FFFF;

/// Largest packet the decoder hands on by default. kcp-go in 2.5.1 reads datagrams into a
/// 1500-byte buffer, later servers into 2048; honest packets are at most the 1400-byte MTU.
pub const DEFAULT_MAX_PACKET: usize = 2048;

/// Padding chunks the padding writer emits are at most this many bytes, prefix included.
const MAX_PADDING_CHUNK: usize = 1024;

/// What went wrong while decoding or encoding.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncapsulationError {
    /// A fourth prefix byte was announced (malformed input).
    #[error("encapsulation length prefix too long")]
    PrefixTooLong,
    /// The stream ended inside a prefix or a chunk body.
    #[error("unexpected end of stream inside an encapsulated chunk")]
    UnexpectedEof,
    /// A packet larger than [`MAX_CHUNK_LEN`] cannot be encoded.
    #[error("packet of {0} bytes is too long to encapsulate")]
    TooLong(usize),
    /// A padding budget of 0 has no data capacity.
    #[error("no room for data in a budget of 0 bytes")]
    ZeroBudget,
}

impl EncapsulationError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            EncapsulationError::PrefixTooLong => "prefix_too_long",
            EncapsulationError::UnexpectedEof => "unexpected_eof",
            EncapsulationError::TooLong(_) => "too_long",
            EncapsulationError::ZeroBudget => "zero_budget",
        }
    }
}

#[derive(Debug, Clone)]
enum State {
    /// Between chunks, or inside a prefix: `have` prefix bytes read so far.
    Prefix { have: u8, len: usize, data: bool },
    /// Inside a body with `left` bytes to go; `keep` holds a data packet being collected,
    /// `None` for padding and for oversized data being skipped.
    Body { left: usize, keep: Option<BytesMut> },
}

/// Streaming decoder of encapsulated chunks into packets.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    max_packet: usize,
    oversized: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_PACKET)
    }
}

impl Decoder {
    /// A decoder handing on data packets of at most `max_packet` bytes (longer ones are
    /// skipped and counted in [`Decoder::oversized`]).
    pub fn new(max_packet: usize) -> Self {
        Decoder {
            state: State::Prefix {
                have: 0,
                len: 0,
                data: false,
            },
            max_packet,
            oversized: 0,
        }
    }

    /// Data chunks skipped because they exceeded the packet limit.
    pub fn oversized(&self) -> u64 {
        self.oversized
    }

    /// Whether the decoder sits between chunks (so end of stream here is clean).
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Prefix { have: 0, .. })
    }

    /// Decodes `input`, calling `packet` for each complete data chunk. On error the stream is
    /// unusable (the caller drops the connection).
    pub fn push(
        &mut self,
        mut input: &[u8],
        mut packet: impl FnMut(Bytes),
    ) -> Result<(), EncapsulationError> {
        while !input.is_empty() {
            match &mut self.state {
                State::Prefix { have, len, data } => {
                    let b = input[0];
                    input = &input[1..];
                    let more = if *have == 0 {
                        *data = b & 0x80 != 0;
                        *len = usize::from(b & 0x3f);
                        b & 0x40 != 0
                    } else {
                        *len = (*len << 7) | usize::from(b & 0x7f);
                        b & 0x80 != 0
                    };
                    *have += 1;
                    if more {
                        if *have == 3 {
                            return Err(EncapsulationError::PrefixTooLong);
                        }
                        continue;
                    }
                    let (left, data) = (*len, *data);
                    let keep = if !data {
                        None
                    } else if left > self.max_packet {
                        self.oversized += 1;
                        None
                    } else {
                        Some(BytesMut::with_capacity(left))
                    };
                    if left == 0 {
                        if keep.is_some() {
                            packet(Bytes::new());
                        }
                        self.state = Self::fresh();
                    } else {
                        self.state = State::Body { left, keep };
                    }
                }
                State::Body { left, keep } => {
                    let n = (*left).min(input.len());
                    if let Some(buf) = keep {
                        buf.extend_from_slice(&input[..n]);
                    }
                    input = &input[n..];
                    *left -= n;
                    if *left == 0 {
                        if let Some(buf) = keep.take() {
                            packet(buf.freeze());
                        }
                        self.state = Self::fresh();
                    }
                }
            }
        }
        Ok(())
    }

    /// End of stream: clean between chunks, an error inside one.
    pub fn finish(&self) -> Result<(), EncapsulationError> {
        if self.at_boundary() {
            Ok(())
        } else {
            Err(EncapsulationError::UnexpectedEof)
        }
    }

    fn fresh() -> State {
        State::Prefix {
            have: 0,
            len: 0,
            data: false,
        }
    }
}

/// Appends the minimal prefix for a chunk of `len` bytes; `data` selects data or padding.
fn put_prefix(len: usize, data: bool, out: &mut BytesMut) -> Result<(), EncapsulationError> {
    let d = if data { 0x80 } else { 0 };
    if len <= 0x3f {
        out.put_u8(d | len as u8);
    } else if len <= 0x1fff {
        out.put_u8(d | 0x40 | (len >> 7) as u8);
        out.put_u8((len & 0x7f) as u8);
    } else if len <= MAX_CHUNK_LEN {
        out.put_u8(d | 0x40 | (len >> 14) as u8);
        out.put_u8(0x80 | ((len >> 7) & 0x7f) as u8);
        out.put_u8((len & 0x7f) as u8);
    } else {
        return Err(EncapsulationError::TooLong(len));
    }
    Ok(())
}

/// The prefix length for a chunk of `len` bytes.
fn prefix_len(len: usize) -> usize {
    match len {
        0..=0x3f => 1,
        0x40..=0x1fff => 2,
        _ => 3,
    }
}

/// Appends one data chunk (minimal prefix, then `packet`) to `out`.
pub fn encode_data(packet: &[u8], out: &mut BytesMut) -> Result<(), EncapsulationError> {
    out.reserve(prefix_len(packet.len()) + packet.len());
    put_prefix(packet.len(), true, out)?;
    out.extend_from_slice(packet);
    Ok(())
}

/// Appends padding chunks totalling exactly `total` bytes, prefixes included, in chunks of
/// at most 1024 bytes (the Go writer's rule).
pub fn encode_padding(mut total: usize, out: &mut BytesMut) {
    while total > 0 {
        let chunk = total.min(MAX_PADDING_CHUNK);
        // A chunk of `chunk` bytes in all: a 1-byte prefix fits up to 64, else 2 bytes.
        let (plen, body) = if chunk <= 0x40 {
            (1, chunk - 1)
        } else {
            (2, chunk - 2)
        };
        // Go writes a 2-byte prefix even for a 63-byte body here (total 65): not minimal.
        if plen == 1 {
            out.put_u8(body as u8);
        } else {
            out.put_u8(0x40 | (body >> 7) as u8);
            out.put_u8((body & 0x7f) as u8);
        }
        out.put_bytes(0, body);
        total -= chunk;
    }
}

/// The largest data payload to send in a budget of `budget` bytes, by the Go writer's rule
/// (conservative at the prefix-size boundaries: the prefix width is chosen from the budget,
/// and the total never exceeds 0xFFFFF).
pub fn max_data_for_budget(budget: usize) -> Result<usize, EncapsulationError> {
    match budget {
        0 => Err(EncapsulationError::ZeroBudget),
        1..=0x3f => Ok(budget - 1),
        0x40..=0x1fff => Ok(budget - 2),
        _ => Ok(budget.min(MAX_CHUNK_LEN) - 3),
    }
}

/// Fuzz entry: decodes `data` in two pieces split at its first byte; never panics, never
/// yields a packet over the limit.
pub fn fuzz_decoder(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(rest.len());
    let mut d = Decoder::new(1500);
    let mut total = 0usize;
    for part in [&rest[..at], &rest[at..]] {
        let r = d.push(part, |p| {
            assert!(p.len() <= 1500);
            total += p.len();
        });
        if r.is_err() {
            return;
        }
    }
    assert!(total <= rest.len());
    let _ = d.finish();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    /// Decodes a whole input, returning the packets, then the end-of-stream verdict.
    fn decode_all(input: &[u8]) -> Result<Vec<Vec<u8>>, EncapsulationError> {
        let mut d = Decoder::new(MAX_CHUNK_LEN);
        let mut out = Vec::new();
        d.push(input, |p| out.push(p.to_vec()))?;
        d.finish()?;
        Ok(out)
    }

    fn enc(p: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        encode_data(p, &mut b).unwrap();
        b.to_vec()
    }

    #[test]
    fn spec_5_1_minimal_prefixes() {
        let cases: &[(usize, &[u8])] = &[
            (0, &hex!("80")),
            (1, &hex!("81")),
            (63, &hex!("bf")),
            (64, &hex!("c0 40")),
            (65, &hex!("c0 41")),
            (127, &hex!("c0 7f")),
            (128, &hex!("c1 00")),
            (8191, &hex!("ff 7f")),
            (8192, &hex!("c0 c0 00")),
            (8193, &hex!("c0 c0 01")),
            (1_048_575, &hex!("ff ff 7f")),
        ];
        for (len, prefix) in cases {
            let e = enc(&vec![0x58; *len]);
            assert_eq!(&e[..prefix.len()], *prefix, "len {len}");
            assert_eq!(e.len(), prefix.len() + len);
        }
        let mut b = BytesMut::new();
        assert_eq!(
            encode_data(&vec![0; 1_048_576], &mut b),
            Err(EncapsulationError::TooLong(1_048_576))
        );
    }

    #[test]
    fn spec_5_1_round_trip_sizes() {
        for len in [
            0usize, 1, 0x3e, 0x3f, 0x40, 0x41, 0xfe, 0xff, 0x100, 0x101, 0x1ffe, 0x1fff, 0x2000,
            0x2001, 0xfffe, 0xffff, 0x10000, 0x10001, 0xffffe, 0xfffff,
        ] {
            let p: Vec<u8> = (0..len).map(|i| i as u8).collect();
            assert_eq!(decode_all(&enc(&p)).unwrap(), vec![p], "len {len}");
        }
    }

    #[test]
    fn spec_5_1_non_minimal_prefixes_decode() {
        for input in [&hex!("81 58")[..], &hex!("c0 01 58"), &hex!("c0 80 01 58")] {
            assert_eq!(decode_all(input).unwrap(), vec![b"X".to_vec()]);
        }
    }

    #[test]
    fn spec_5_1_four_byte_prefixes_rejected() {
        for input in [
            &hex!("c0 c0 80 80 58")[..],
            &hex!("c0 80 80 80"),
            &hex!("40 c0 80 80 58"),
            &hex!("40 80 80 80"),
        ] {
            assert_eq!(decode_all(input), Err(EncapsulationError::PrefixTooLong));
        }
    }

    #[test]
    fn spec_5_1_largest_padding_accepted() {
        let mut input = hex!("7f ff 7f").to_vec();
        input.extend(std::iter::repeat_n(0u8, 1_048_575));
        input.extend(enc(b"hello"));
        assert_eq!(decode_all(&input).unwrap(), vec![b"hello".to_vec()]);
    }

    #[test]
    fn spec_5_1_unexpected_eof() {
        for input in [
            &hex!("40")[..],
            &hex!("c0"),
            &hex!("41 80"),
            &hex!("c1 80"),
            &hex!("02"),
            &hex!("82"),
            &hex!("02 58"),
            &hex!("82 58"),
            &hex!("41 00"),
            &hex!("c1 00"),
            &hex!("41 00 58"),
            &hex!("c1 00 58"),
            &hex!("41 80 00"),
            &hex!("c1 80 00"),
            &hex!("41 80 00 58"),
            &hex!("c1 80 00 58"),
        ] {
            assert_eq!(
                decode_all(input),
                Err(EncapsulationError::UnexpectedEof),
                "{input:02x?}"
            );
        }
        assert_eq!(decode_all(&[]).unwrap(), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn spec_5_1_skipping_padding() {
        let mut b = BytesMut::new();
        let pad = |n, b: &mut BytesMut| encode_padding(n, b);
        pad(10, &mut b);
        pad(100, &mut b);
        encode_data(b"", &mut b).unwrap();
        encode_data(b"", &mut b).unwrap();
        pad(10, &mut b);
        encode_data(b"hello", &mut b).unwrap();
        encode_data(b"", &mut b).unwrap();
        pad(10, &mut b);
        encode_data(b"world", &mut b).unwrap();
        pad(10, &mut b);
        pad(10, &mut b);
        let want: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"".to_vec(),
            b"hello".to_vec(),
            b"".to_vec(),
            b"world".to_vec(),
        ];
        assert_eq!(decode_all(&b).unwrap(), want);
    }

    #[test]
    fn spec_5_1_padding_writer() {
        let head = |total| {
            let mut b = BytesMut::new();
            encode_padding(total, &mut b);
            b
        };
        assert_eq!(&head(1)[..], &hex!("00"));
        assert_eq!(&head(2)[..1], &hex!("01"));
        assert_eq!(&head(64)[..1], &hex!("3f"));
        assert_eq!(&head(65)[..2], &hex!("40 3f"));
        assert_eq!(&head(66)[..2], &hex!("40 40"));
        assert_eq!(&head(1024)[..2], &hex!("47 7e"));
        let mut totals = vec![0usize, 1];
        for base in [0x3f, 0xff, 0x2000, 0x10000, 0x100001] {
            totals.extend(base..base + 4);
        }
        for t in totals {
            let b = head(t);
            assert_eq!(b.len(), t, "total {t}");
            assert_eq!(decode_all(&b).unwrap(), Vec::<Vec<u8>>::new());
        }
    }

    #[test]
    fn spec_5_1_max_data_for_budget() {
        for (n, want) in [
            (1, 0),
            (2, 1),
            (0x3f, 0x3e),
            (0x40, 0x3e),
            (0x41, 0x3f),
            (0x1fff, 0x1ffd),
            (0x2000, 0x1ffd),
            (0x2001, 0x1ffe),
            (0xfffff, 0xffffc),
            (0x100000, 0xffffc),
            (0x200000, 0xffffc),
        ] {
            assert_eq!(max_data_for_budget(n), Ok(want), "budget {n:#x}");
        }
        assert_eq!(max_data_for_budget(0), Err(EncapsulationError::ZeroBudget));
    }

    #[test]
    fn oversized_data_is_skipped_not_buffered() {
        let mut d = Decoder::new(1500);
        let mut b = BytesMut::new();
        encode_data(&[7; 4000], &mut b).unwrap();
        encode_data(b"ok", &mut b).unwrap();
        let mut got = Vec::new();
        d.push(&b, |p| got.push(p)).unwrap();
        assert_eq!(got, vec![Bytes::from_static(b"ok")]);
        assert_eq!(d.oversized(), 1);
        assert!(d.finish().is_ok());
    }

    #[test]
    fn captured_upstream_chunk_decodes() {
        // Spec §5.2 WS msg 3: one 32-byte data chunk.
        let msg =
            hex!("a0 3c3f06eb 51 00 ffff 46040000 00000000 00000000 08000000 02 00 0000 03000000");
        let got = decode_all(&msg).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), 32);
        assert_eq!(&got[0][..4], &hex!("3c3f06eb"));
    }

    proptest! {
        #[test]
        fn any_chunking_round_trips(
            packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 0..12),
            pads in proptest::collection::vec(0usize..3000, 0..12),
            cuts in proptest::collection::vec(1usize..700, 1..40),
        ) {
            let mut wire = BytesMut::new();
            for (i, p) in packets.iter().enumerate() {
                if let Some(&pad) = pads.get(i) {
                    encode_padding(pad, &mut wire);
                }
                encode_data(p, &mut wire).unwrap();
            }
            let mut d = Decoder::new(4096);
            let mut got = Vec::new();
            let mut rest = &wire[..];
            let mut ci = 0;
            while !rest.is_empty() {
                let n = cuts[ci % cuts.len()].min(rest.len());
                ci += 1;
                d.push(&rest[..n], |p| got.push(p.to_vec())).unwrap();
                rest = &rest[n..];
            }
            prop_assert!(d.finish().is_ok());
            prop_assert_eq!(got, packets);
        }

        #[test]
        fn hostile_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            fuzz_decoder(&data);
        }
    }
}
