//! The sans-IO core of the websocket transport: what a received data message means, and the
//! `base64` subprotocol of Fifield's proposal (`seeds/002`, "The base64 subprotocol").
//!
//! No sockets, no clock. The async adapter ([`crate::WsStream`]) hands every complete data
//! message it gets from tokio-websockets to [`Inbound::accept`] and either passes the returned
//! bytes on or closes the connection with the returned [`CloseReason`]. Frame-level checks
//! (masking, reserved bits, opcodes, control-frame rules, per-frame size) are done by
//! tokio-websockets; see the crate documentation for who sends which close code.
//!
//! The base64 rules implemented by [`Base64Reassembler`]:
//! - the encoding is per *message*: the text of all frames of a message is concatenated and
//!   decoded as one base64 string, so a frame may end in the middle of a 4-character group;
//! - `=` padding may appear only at the very end of the message; padding is optional (an
//!   unpadded final group of 2 or 3 characters is accepted), non-zero trailing bits are
//!   tolerated (as Go's `base64.StdEncoding` does); any other character, including white space,
//!   makes the message undecodable (close 1007);
//! - the decoded size of one message is capped by the configured message limit (close 1009).

use std::fmt;

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// The smallest message limit allowed: the proposal says endpoints MUST accept messages of
/// 1500 bytes of binary data.
pub const MIN_MESSAGE_LIMIT: usize = 1500;
/// The default message limit (decoded payload bytes of one message).
pub const DEFAULT_MESSAGE_LIMIT: usize = 64 * 1024;
/// The largest message limit accepted from configuration.
pub const MAX_MESSAGE_LIMIT: usize = 16 * 1024 * 1024;

/// The name of the base64 subprotocol.
pub const BASE64_SUBPROTOCOL: &str = "base64";

/// Encoder for outgoing base64 messages (canonical: padded, zero trailing bits).
pub(crate) const ENCODER: GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Decoder for incoming base64 messages (lenient about padding and trailing bits).
const DECODER: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// How data travels in WebSocket messages on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    /// Binary messages (opcode 2) carry the bytes; text messages are refused (close 1003).
    Binary,
    /// The `base64` subprotocol was negotiated: we send text messages holding the base64 of
    /// each message; we accept those and binary messages.
    Base64,
    /// Snowflake's Go reader: no subprotocol; binary *and* text messages carry raw bytes, and
    /// we send binary.
    Lenient,
}

/// The kind of a received data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    /// Opcode 1.
    Text,
    /// Opcode 2.
    Binary,
}

/// Why we close a connection: a WebSocket close status code (RFC 6455 §7.4.1) and a short
/// reason sent in the close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    /// The status code.
    pub code: u16,
    /// The reason text (at most 123 bytes, ASCII).
    pub reason: &'static str,
}

impl CloseReason {
    /// 1000: the stream ended normally.
    pub const NORMAL: CloseReason = CloseReason {
        code: 1000,
        reason: "",
    };
    /// 1003: a text message arrived but `base64` was not negotiated.
    pub const TEXT_WITHOUT_BASE64: CloseReason = CloseReason {
        code: 1003,
        reason: "text message without the base64 subprotocol",
    };
    /// 1007: a text message is not valid base64.
    pub const BAD_BASE64: CloseReason = CloseReason {
        code: 1007,
        reason: "message is not valid base64",
    };
    /// 1009: a message is larger than the configured limit.
    pub const TOO_BIG: CloseReason = CloseReason {
        code: 1009,
        reason: "message too big",
    };
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() {
            write!(f, "close {}", self.code)
        } else {
            write!(f, "close {} ({})", self.code, self.reason)
        }
    }
}

/// The largest base64 text whose decoded size is at most `limit` (with padding):
/// `ceil(limit / 3) * 4`.
pub fn base64_len(limit: usize) -> usize {
    limit.div_ceil(3).saturating_mul(4)
}

/// The largest payload we accept in one WebSocket message (frame or reassembled) on the wire,
/// given the decoded `limit` and the framing: `limit` for binary, `ceil(limit/3)*4` for base64.
pub fn wire_limit(framing: Framing, limit: usize) -> usize {
    match framing {
        Framing::Binary | Framing::Lenient => limit,
        Framing::Base64 => base64_len(limit),
    }
}

/// What to do with one received data message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Pass the payload through unchanged (a binary message).
    Pass,
    /// Pass these decoded bytes instead (a base64 text message).
    Decoded(Vec<u8>),
}

/// The receive policy of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inbound {
    /// The negotiated framing.
    pub framing: Framing,
    /// Most decoded payload bytes in one message.
    pub limit: usize,
}

impl Inbound {
    /// A policy for `framing` with a message `limit` in decoded bytes.
    pub fn new(framing: Framing, limit: usize) -> Self {
        Inbound { framing, limit }
    }

    /// Judges one complete data message.
    pub fn accept(&self, kind: DataKind, payload: &[u8]) -> Result<Verdict, CloseReason> {
        match (kind, self.framing) {
            (DataKind::Binary, _) => {
                if payload.len() > self.limit {
                    Err(CloseReason::TOO_BIG)
                } else {
                    Ok(Verdict::Pass)
                }
            }
            (DataKind::Text, Framing::Binary) => Err(CloseReason::TEXT_WITHOUT_BASE64),
            (DataKind::Text, Framing::Lenient) => {
                if payload.len() > self.limit {
                    Err(CloseReason::TOO_BIG)
                } else {
                    Ok(Verdict::Pass)
                }
            }
            (DataKind::Text, Framing::Base64) => {
                if payload.len() > base64_len(self.limit) {
                    return Err(CloseReason::TOO_BIG);
                }
                let mut out = Vec::with_capacity(payload.len() / 4 * 3 + 2);
                let mut r = Base64Reassembler::new(self.limit);
                r.push(payload, &mut out)?;
                r.finish(&mut out)?;
                Ok(Verdict::Decoded(out))
            }
        }
    }
}

/// Decodes the base64 text of one message fed in arbitrary fragments (for example one per
/// WebSocket frame), writing decoded bytes as soon as whole 4-character groups are known.
///
/// Memory: 4 bytes of carry besides the output, which is capped at `limit` bytes.
#[derive(Debug, Clone)]
pub struct Base64Reassembler {
    limit: usize,
    carry: [u8; 4],
    carry_len: usize,
    padded: bool,
    total: usize,
    // Over the limit: output is no longer kept, but the rest of the message is still
    // validated so the close code does not depend on how the message was fragmented.
    too_big: bool,
}

impl Base64Reassembler {
    /// A reassembler for one message of at most `limit` decoded bytes.
    pub fn new(limit: usize) -> Self {
        Base64Reassembler {
            limit,
            carry: [0; 4],
            carry_len: 0,
            padded: false,
            total: 0,
            too_big: false,
        }
    }

    /// Decoded bytes produced so far for this message.
    pub fn decoded_len(&self) -> usize {
        self.total
    }

    /// Feeds the next fragment of the message's text.
    pub fn push(&mut self, mut fragment: &[u8], out: &mut Vec<u8>) -> Result<(), CloseReason> {
        if fragment.is_empty() {
            return Ok(());
        }
        if self.padded {
            // Something follows the padding of a final group.
            return Err(CloseReason::BAD_BASE64);
        }
        if self.carry_len > 0 {
            let take = (4 - self.carry_len).min(fragment.len());
            self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&fragment[..take]);
            self.carry_len += take;
            fragment = &fragment[take..];
            if self.carry_len < 4 {
                return Ok(());
            }
            let group = self.carry;
            self.carry_len = 0;
            self.decode_groups(&group, out)?;
            if self.padded && !fragment.is_empty() {
                return Err(CloseReason::BAD_BASE64);
            }
        }
        let whole = fragment.len() / 4 * 4;
        if whole > 0 {
            self.decode_groups(&fragment[..whole], out)?;
        }
        let rest = &fragment[whole..];
        if !rest.is_empty() {
            if self.padded {
                return Err(CloseReason::BAD_BASE64);
            }
            self.carry[..rest.len()].copy_from_slice(rest);
            self.carry_len = rest.len();
        }
        Ok(())
    }

    /// Ends the message: decodes a final unpadded group, then resets for the next message.
    /// Invalid base64 anywhere in the message is 1007; otherwise more than `limit` decoded
    /// bytes is 1009 — whatever the fragmentation.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), CloseReason> {
        let carry_len = std::mem::replace(&mut self.carry_len, 0);
        let result = match carry_len {
            0 => Ok(()),
            1 => Err(CloseReason::BAD_BASE64),
            _ => {
                let group = self.carry;
                self.decode_groups(&group[..carry_len], out)
            }
        };
        let too_big = std::mem::replace(&mut self.too_big, false);
        self.padded = false;
        self.total = 0;
        match result {
            Ok(()) if too_big => Err(CloseReason::TOO_BIG),
            other => other,
        }
    }

    /// Decodes `text`: whole groups, or the final unpadded partial group.
    fn decode_groups(&mut self, text: &[u8], out: &mut Vec<u8>) -> Result<(), CloseReason> {
        let pad = text.iter().rev().take_while(|&&b| b == b'=').count();
        let start = out.len();
        // `text` is bounded by the frame limit, so this scratch space is too.
        out.resize(start + text.len().div_ceil(4) * 3, 0);
        match DECODER.decode_slice(text, &mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                if pad > 0 {
                    self.padded = true;
                }
                match self.total.checked_add(n) {
                    Some(t) if !self.too_big && t <= self.limit => self.total = t,
                    _ => {
                        self.too_big = true;
                        out.truncate(start);
                    }
                }
                Ok(())
            }
            Err(_) => {
                out.truncate(start);
                Err(CloseReason::BAD_BASE64)
            }
        }
    }
}

/// Encodes one outgoing message's bytes as base64 text (padded).
pub fn encode_base64(data: &[u8]) -> String {
    ENCODER.encode(data)
}

/// Decodes a whole message's text in one piece (the reference for [`Base64Reassembler`]).
pub fn decode_base64(text: &[u8], limit: usize) -> Result<Vec<u8>, CloseReason> {
    let mut out = Vec::new();
    let mut r = Base64Reassembler::new(limit);
    r.push(text, &mut out)?;
    r.finish(&mut out)?;
    Ok(out)
}

/// Entry point for a fuzz target over the base64 reassembly.
///
/// The first byte picks a fragment size (1..=16) and the next two bytes a limit; the rest is
/// the message text. Panics if fragmenting changes the outcome, if the decoded size exceeds
/// the limit, or if a valid message does not round-trip through [`encode_base64`].
pub fn fuzz_base64(data: &[u8]) {
    let [step, l0, l1, text @ ..] = data else {
        return;
    };
    let step = usize::from(step % 16) + 1;
    let limit = usize::from(u16::from_le_bytes([*l0, *l1]));
    let whole = decode_base64(text, limit);
    let mut r = Base64Reassembler::new(limit);
    let mut out = Vec::new();
    let mut pieces = Ok(());
    for chunk in text.chunks(step) {
        pieces = r.push(chunk, &mut out);
        if pieces.is_err() {
            break;
        }
    }
    let pieced = pieces.and_then(|()| r.finish(&mut out)).map(|()| out);
    assert_eq!(whole, pieced, "fragmenting changed the result");
    if let Ok(bytes) = &whole {
        assert!(bytes.len() <= limit);
        let again = decode_base64(encode_base64(bytes).as_bytes(), limit);
        assert_eq!(again.as_ref(), Ok(bytes));
    }
    // The receive policy never panics on anything either.
    for framing in [Framing::Binary, Framing::Base64] {
        for kind in [DataKind::Text, DataKind::Binary] {
            let _ = Inbound::new(framing, limit).accept(kind, text);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// Found by the websocket_base64 fuzz target: an oversize message with invalid base64 got
    /// 1009 or 1007 depending on how it was fragmented. Invalid text now always wins.
    #[test]
    fn proposal_close_code_does_not_depend_on_fragmentation() {
        fuzz_base64(&[
            0x03, 0x03, 0x00, 0x01, 0x53, 0x00, 0x01, 0x53, 0x47, 0x56, 0x73, 0x62, 0x47, 0x38,
            0x3d,
        ]);
        assert_eq!(
            decode_base64(b"SGVsbG8=SGVs!", 3),
            Err(CloseReason::BAD_BASE64)
        );
        assert_eq!(decode_base64(b"SGVsbG8=", 3), Err(CloseReason::TOO_BIG));
    }

    /// Proposal, "The base64 subprotocol": the 5-byte message "Hello" is `SGVsbG8=`.
    #[test]
    fn proposal_base64_hello_one_frame() {
        assert_eq!(encode_base64(b"Hello"), "SGVsbG8=");
        assert_eq!(decode_base64(b"SGVsbG8=", 1500).unwrap(), b"Hello");
    }

    /// Proposal: the same message as two frames, "one of 2 bytes and one of 6 bytes"; the
    /// padding is only at the end of the message and the frame boundary falls inside a
    /// 4-character group.
    ///
    /// Erratum: the proposal prints the second frame as `0x81 0x06 "sbG8="`, five characters
    /// under a length of 6; the "V" is missing. The frames are "SG" and "VsbG8=".
    #[test]
    fn proposal_base64_hello_two_frames() {
        let mut r = Base64Reassembler::new(1500);
        let mut out = Vec::new();
        r.push(b"SG", &mut out).unwrap();
        assert!(out.is_empty());
        r.push(b"VsbG8=", &mut out).unwrap();
        r.finish(&mut out).unwrap();
        assert_eq!(out, b"Hello");
        // The literal text of the erratum does not decode to "Hello".
        assert_ne!(decode_base64(b"SGsbG8=", 1500), Ok(b"Hello".to_vec()));
    }

    #[test]
    fn proposal_padding_only_at_message_end() {
        // Each frame padded separately ("SGVs" "bG8=") is fine, but "SGU=" then more is not.
        assert_eq!(
            decode_base64(b"SGU=SGVsbG8=", 100),
            Err(CloseReason::BAD_BASE64)
        );
        let mut r = Base64Reassembler::new(100);
        let mut out = Vec::new();
        r.push(b"SGU=", &mut out).unwrap();
        assert_eq!(r.push(b"SGVs", &mut out), Err(CloseReason::BAD_BASE64));
    }

    #[test]
    fn base64_lenient_padding_strict_alphabet() {
        assert_eq!(decode_base64(b"SGVsbG8", 100).unwrap(), b"Hello");
        assert_eq!(decode_base64(b"", 100).unwrap(), b"");
        for bad in [
            &b"S"[..],
            b"SGVsbG8=\n",
            b"SGVs bG8=",
            b"SGVsbG8==",
            b"====",
            b"SG-_",
            b"\xff\xfe",
        ] {
            assert_eq!(
                decode_base64(bad, 100),
                Err(CloseReason::BAD_BASE64),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn proposal_limit_applies_to_decoded_size() {
        let data = vec![7u8; 1500];
        let text = encode_base64(&data);
        assert_eq!(text.len(), base64_len(1500));
        assert_eq!(decode_base64(text.as_bytes(), 1500).unwrap(), data);
        assert_eq!(
            decode_base64(text.as_bytes(), 1499),
            Err(CloseReason::TOO_BIG)
        );
        let p = Inbound::new(Framing::Base64, 1500);
        assert_eq!(
            p.accept(DataKind::Text, text.as_bytes()),
            Ok(Verdict::Decoded(data.clone()))
        );
        assert_eq!(p.accept(DataKind::Binary, &data), Ok(Verdict::Pass));
        assert_eq!(
            p.accept(DataKind::Binary, &[0; 1501]),
            Err(CloseReason::TOO_BIG)
        );
        // 1501 decoded bytes fit in ceil(1500/3)*4 = 2000 characters minus nothing: refused.
        let text = encode_base64(&[1u8; 1501]);
        assert_eq!(
            p.accept(DataKind::Text, text.as_bytes()),
            Err(CloseReason::TOO_BIG)
        );
    }

    #[test]
    fn proposal_text_refused_without_base64() {
        let p = Inbound::new(Framing::Binary, 1500);
        assert_eq!(
            p.accept(DataKind::Text, b"SGVsbG8="),
            Err(CloseReason::TEXT_WITHOUT_BASE64)
        );
        assert_eq!(CloseReason::TEXT_WITHOUT_BASE64.code, 1003);
        assert_eq!(CloseReason::BAD_BASE64.code, 1007);
        assert_eq!(CloseReason::TOO_BIG.code, 1009);
    }

    #[test]
    fn wire_limits() {
        assert_eq!(wire_limit(Framing::Binary, 65536), 65536);
        assert_eq!(wire_limit(Framing::Base64, 65536), 87384);
        assert_eq!(base64_len(1500), 2000);
        assert_eq!(base64_len(1), 4);
    }

    proptest! {
        #[test]
        fn base64_reassembly_any_split(data in proptest::collection::vec(any::<u8>(), 0..300),
                                       cuts in proptest::collection::vec(0usize..400, 0..8)) {
            let text = encode_base64(&data);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (text.len() + 1)).collect();
            cuts.sort_unstable();
            let mut r = Base64Reassembler::new(300);
            let mut out = Vec::new();
            let mut prev = 0;
            for c in cuts.into_iter().chain([text.len()]) {
                r.push(&text.as_bytes()[prev..c], &mut out).unwrap();
                prev = c;
            }
            r.finish(&mut out).unwrap();
            prop_assert_eq!(out, data);
        }

        #[test]
        fn base64_fragmenting_never_changes_outcome(data in proptest::collection::vec(
            prop_oneof![Just(b'='), Just(b'A'), Just(b'/'), Just(b'g'), any::<u8>()], 0..40)) {
            for step in 0..16u8 {
                let mut input = vec![step, 40, 0];
                input.extend_from_slice(&data);
                fuzz_base64(&input);
            }
        }
    }
}
