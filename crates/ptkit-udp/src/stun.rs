//! Sans-IO STUN (RFC 5389) and TURN (RFC 5766, RFC 6156) messages: parsing with every length
//! bounded, building with MESSAGE-INTEGRITY (HMAC-SHA1, long-term credentials) and
//! FINGERPRINT (CRC-32 xor `0x5354554E`), XOR-encoded addresses, ERROR-CODE, and TURN's
//! ChannelData framing.
//!
//! Nothing here does I/O or reads a clock; [`crate::turn`] is the state machine on top.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aws_lc_rs::hmac;
use ptkit_core::reader::Reader;

use crate::error::StunError;

/// The fixed magic cookie of RFC 5389 (bytes 4..8 of every message).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the STUN header.
pub const HEADER_LEN: usize = 20;
/// Largest STUN message we accept or build (the 16-bit length field allows 20 + 65532).
pub const MAX_MESSAGE: usize = HEADER_LEN + 65_532;
/// Most attributes in one message; more is treated as malformed.
pub const MAX_ATTRIBUTES: usize = 64;
/// FINGERPRINT's xor constant (`"STUN"`).
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// Message methods (RFC 5389 §18.1, RFC 5766 §13).
pub mod method {
    /// Binding.
    pub const BINDING: u16 = 0x001;
    /// Allocate.
    pub const ALLOCATE: u16 = 0x003;
    /// Refresh.
    pub const REFRESH: u16 = 0x004;
    /// Send (indication only).
    pub const SEND: u16 = 0x006;
    /// Data (indication only).
    pub const DATA: u16 = 0x007;
    /// CreatePermission.
    pub const CREATE_PERMISSION: u16 = 0x008;
    /// ChannelBind.
    pub const CHANNEL_BIND: u16 = 0x009;
}

/// Attribute types (RFC 5389 §18.2, RFC 5766 §14, RFC 6156 §4.1.1).
pub mod attr {
    /// MAPPED-ADDRESS.
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// USERNAME (at most 513 bytes).
    pub const USERNAME: u16 = 0x0006;
    /// MESSAGE-INTEGRITY (20-byte HMAC-SHA1).
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// ERROR-CODE.
    pub const ERROR_CODE: u16 = 0x0009;
    /// UNKNOWN-ATTRIBUTES.
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// CHANNEL-NUMBER.
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    /// LIFETIME (seconds).
    pub const LIFETIME: u16 = 0x000D;
    /// XOR-PEER-ADDRESS.
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    /// DATA.
    pub const DATA: u16 = 0x0013;
    /// REALM (at most 763 bytes).
    pub const REALM: u16 = 0x0014;
    /// NONCE (at most 763 bytes).
    pub const NONCE: u16 = 0x0015;
    /// XOR-RELAYED-ADDRESS.
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    /// REQUESTED-ADDRESS-FAMILY (RFC 6156).
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    /// EVEN-PORT.
    pub const EVEN_PORT: u16 = 0x0018;
    /// REQUESTED-TRANSPORT.
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    /// DONT-FRAGMENT.
    pub const DONT_FRAGMENT: u16 = 0x001A;
    /// XOR-MAPPED-ADDRESS.
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// RESERVATION-TOKEN.
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    /// SOFTWARE.
    pub const SOFTWARE: u16 = 0x8022;
    /// FINGERPRINT.
    pub const FINGERPRINT: u16 = 0x8028;
}

/// The four message classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request (expects a response).
    Request,
    /// An indication (no response).
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }

    fn from_bits(b: u16) -> Class {
        match b & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        }
    }
}

/// Packs method and class into the 14-bit message type (RFC 5389 §6, figure 3).
pub fn message_type(method: u16, class: Class) -> u16 {
    let m = method & 0x0FFF;
    let c = class.bits();
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

/// Splits a message type into (method, class).
pub fn split_type(t: u16) -> (u16, Class) {
    let method = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80);
    let class = ((t >> 4) & 1) | ((t >> 7) & 2);
    (method, Class::from_bits(class))
}

/// One attribute as found on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The type.
    pub typ: u16,
    /// The value, without padding.
    pub value: Vec<u8>,
}

/// A parsed STUN message. `raw` is kept for MESSAGE-INTEGRITY verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The method (12 bits).
    pub method: u16,
    /// The class.
    pub class: Class,
    /// The 96-bit transaction ID.
    pub transaction_id: [u8; 12],
    /// Attributes in order, up to and including MESSAGE-INTEGRITY and FINGERPRINT
    /// (attributes between them and after MESSAGE-INTEGRITY are ignored, RFC 5389 §15.4).
    pub attributes: Vec<Attribute>,
    raw: Vec<u8>,
    /// Offset in `raw` of the MESSAGE-INTEGRITY attribute header, if any.
    integrity_at: Option<usize>,
}

/// True when `b` starts like a STUN message (top two bits zero and the magic cookie).
pub fn looks_like_stun(b: &[u8]) -> bool {
    b.len() >= HEADER_LEN && b[0] & 0xC0 == 0 && b[4..8] == MAGIC_COOKIE.to_be_bytes()
}

/// The length of the STUN message or ChannelData frame that starts `b` as it is carried on a
/// stream: `Some(n)` once the 4-byte prefix is known (STUN: 20 + length; ChannelData:
/// 4 + length rounded up to 4, RFC 5766 §11.5), `None` if more bytes are needed.
/// Errors when the first byte is neither.
pub fn stream_frame_len(b: &[u8]) -> Result<Option<usize>, StunError> {
    if b.len() < 4 {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    match b[0] >> 6 {
        0b00 if len % 4 == 0 => Ok(Some(HEADER_LEN + len)),
        0b00 => Err(StunError::Malformed("STUN length not a multiple of 4")),
        0b01 => Ok(Some(4 + len.div_ceil(4) * 4)),
        _ => Err(StunError::Malformed("neither STUN nor ChannelData")),
    }
}

impl Message {
    /// Parses one whole message (exactly `b`, no trailing bytes).
    pub fn parse(b: &[u8]) -> Result<Message, StunError> {
        if b.len() > MAX_MESSAGE {
            return Err(StunError::TooLong);
        }
        let mut r = Reader::new(b);
        let typ = r.u16_be().map_err(|_| StunError::Truncated)?;
        if typ & 0xC000 != 0 {
            return Err(StunError::Malformed("top bits of the type are not zero"));
        }
        let len = usize::from(r.u16_be().map_err(|_| StunError::Truncated)?);
        let cookie = r.take(4).map_err(|_| StunError::Truncated)?;
        if cookie != MAGIC_COOKIE.to_be_bytes() {
            return Err(StunError::Malformed("bad magic cookie"));
        }
        let mut transaction_id = [0u8; 12];
        transaction_id.copy_from_slice(r.take(12).map_err(|_| StunError::Truncated)?);
        if len % 4 != 0 {
            return Err(StunError::Malformed("length not a multiple of 4"));
        }
        if r.rest().len() != len {
            return Err(StunError::Malformed(
                "length field does not match the datagram",
            ));
        }
        let (method, class) = split_type(typ);
        let mut attributes = Vec::new();
        let mut integrity_at = None;
        let mut seen_fingerprint = false;
        while !r.is_empty() {
            if seen_fingerprint {
                return Err(StunError::Malformed("attribute after FINGERPRINT"));
            }
            let at = r.consumed();
            let t = r.u16_be().map_err(|_| StunError::Truncated)?;
            let l = usize::from(r.u16_be().map_err(|_| StunError::Truncated)?);
            let value = r.take(l).map_err(|_| StunError::Truncated)?;
            let pad = (4 - l % 4) % 4;
            r.take(pad).map_err(|_| StunError::Truncated)?;
            if attributes.len() >= MAX_ATTRIBUTES {
                return Err(StunError::Malformed("too many attributes"));
            }
            match t {
                attr::FINGERPRINT => {
                    if l != 4 {
                        return Err(StunError::Malformed("FINGERPRINT is not 4 bytes"));
                    }
                    let want = crc32(&with_length(&b[..at], at + 8 - HEADER_LEN)) ^ FINGERPRINT_XOR;
                    if value != want.to_be_bytes() {
                        return Err(StunError::BadFingerprint);
                    }
                    seen_fingerprint = true;
                }
                attr::MESSAGE_INTEGRITY if integrity_at.is_none() => {
                    if l != 20 {
                        return Err(StunError::Malformed("MESSAGE-INTEGRITY is not 20 bytes"));
                    }
                    integrity_at = Some(at);
                }
                // Anything after MESSAGE-INTEGRITY but FINGERPRINT is ignored (§15.4).
                _ if integrity_at.is_some() => continue,
                _ => {}
            }
            attributes.push(Attribute {
                typ: t,
                value: value.to_vec(),
            });
        }
        Ok(Message {
            method,
            class,
            transaction_id,
            attributes,
            raw: b.to_vec(),
            integrity_at,
        })
    }

    /// The first attribute of type `typ`.
    pub fn get(&self, typ: u16) -> Option<&[u8]> {
        self.attributes
            .iter()
            .find(|a| a.typ == typ)
            .map(|a| a.value.as_slice())
    }

    /// Every attribute of type `typ`, in order.
    pub fn get_all(&self, typ: u16) -> impl Iterator<Item = &[u8]> {
        self.attributes
            .iter()
            .filter(move |a| a.typ == typ)
            .map(|a| a.value.as_slice())
    }

    /// A UTF-8 text attribute (USERNAME, REALM, NONCE, SOFTWARE) of at most `max` bytes.
    pub fn text(&self, typ: u16, max: usize) -> Result<Option<&str>, StunError> {
        match self.get(typ) {
            None => Ok(None),
            Some(v) if v.len() > max => Err(StunError::Malformed("text attribute too long")),
            Some(v) => std::str::from_utf8(v)
                .map(Some)
                .map_err(|_| StunError::Malformed("text attribute is not UTF-8")),
        }
    }

    /// An XOR-encoded address attribute (XOR-MAPPED/-PEER/-RELAYED-ADDRESS).
    pub fn xor_address(&self, typ: u16) -> Result<Option<SocketAddr>, StunError> {
        self.get(typ)
            .map(|v| decode_xor_address(v, &self.transaction_id))
            .transpose()
    }

    /// A 32-bit attribute (LIFETIME).
    pub fn u32_attr(&self, typ: u16) -> Result<Option<u32>, StunError> {
        match self.get(typ) {
            None => Ok(None),
            Some(&[a, b, c, d]) => Ok(Some(u32::from_be_bytes([a, b, c, d]))),
            Some(_) => Err(StunError::Malformed("32-bit attribute of the wrong size")),
        }
    }

    /// ERROR-CODE as (code, reason).
    pub fn error_code(&self) -> Result<Option<(u16, String)>, StunError> {
        let Some(v) = self.get(attr::ERROR_CODE) else {
            return Ok(None);
        };
        if v.len() < 4 {
            return Err(StunError::Malformed("ERROR-CODE too short"));
        }
        let code = u16::from(v[2] & 0x07) * 100 + u16::from(v[3]);
        Ok(Some((code, String::from_utf8_lossy(&v[4..]).into_owned())))
    }

    /// True when the message carries MESSAGE-INTEGRITY.
    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some()
    }

    /// Checks MESSAGE-INTEGRITY with `key` (constant time). False when absent or wrong.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_at else {
            return false;
        };
        let Some(tag) = self.raw.get(at + 4..at + 24) else {
            return false;
        };
        let covered = with_length(&self.raw[..at], at + 24 - HEADER_LEN);
        let k = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
        hmac::verify(&k, &covered, tag).is_ok()
    }
}

/// A copy of `prefix` (header + attributes) with the header's length field set to `len`.
fn with_length(prefix: &[u8], len: usize) -> Vec<u8> {
    let mut v = prefix.to_vec();
    if v.len() >= 4 {
        let l = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
        v[2] = l[0];
        v[3] = l[1];
    }
    v
}

/// Decodes an XOR-encoded address value.
pub fn decode_xor_address(v: &[u8], txid: &[u8; 12]) -> Result<SocketAddr, StunError> {
    let mut r = Reader::new(v);
    let bad = |_| StunError::Malformed("address attribute truncated");
    r.u8().map_err(bad)?;
    let family = r.u8().map_err(bad)?;
    let port = r.u16_be().map_err(bad)? ^ (MAGIC_COOKIE >> 16) as u16;
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(txid);
    let ip = match (family, r.rest().len()) {
        (0x01, 4) => {
            let a = r.rest();
            IpAddr::V4(Ipv4Addr::new(
                a[0] ^ mask[0],
                a[1] ^ mask[1],
                a[2] ^ mask[2],
                a[3] ^ mask[3],
            ))
        }
        (0x02, 16) => {
            let mut a = [0u8; 16];
            for (i, b) in r.rest().iter().enumerate() {
                a[i] = b ^ mask[i];
            }
            IpAddr::V6(Ipv6Addr::from(a))
        }
        _ => return Err(StunError::Malformed("bad address family or length")),
    };
    Ok(SocketAddr::new(ip, port))
}

/// Encodes `addr` as an XOR-encoded address value.
pub fn encode_xor_address(addr: SocketAddr, txid: &[u8; 12]) -> Vec<u8> {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(txid);
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let mut v = vec![0];
    match addr.ip() {
        IpAddr::V4(ip) => {
            v.push(0x01);
            v.extend_from_slice(&port.to_be_bytes());
            v.extend(ip.octets().iter().zip(mask).map(|(a, m)| a ^ m));
        }
        IpAddr::V6(ip) => {
            v.push(0x02);
            v.extend_from_slice(&port.to_be_bytes());
            v.extend(ip.octets().iter().zip(mask).map(|(a, m)| a ^ m));
        }
    }
    v
}

/// Builds one message; attributes are appended in call order.
#[derive(Debug, Clone)]
pub struct Builder {
    buf: Vec<u8>,
    txid: [u8; 12],
}

impl Builder {
    /// Starts a message.
    pub fn new(method: u16, class: Class, transaction_id: [u8; 12]) -> Builder {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&message_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&transaction_id);
        Builder {
            buf,
            txid: transaction_id,
        }
    }

    /// Appends an attribute (padded to 4 bytes). Values longer than 65,535 bytes are cut
    /// (callers never build those: DATA comes from a datagram, bounded by UDP).
    pub fn attr(mut self, typ: u16, value: &[u8]) -> Builder {
        let value = &value[..value.len().min(usize::from(u16::MAX) - 3)];
        self.buf.extend_from_slice(&typ.to_be_bytes());
        let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(value);
        let pad = (4 - value.len() % 4) % 4;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// Appends an XOR-encoded address attribute.
    pub fn xor_address(self, typ: u16, addr: SocketAddr) -> Builder {
        let v = encode_xor_address(addr, &self.txid);
        self.attr(typ, &v)
    }

    /// Appends a 32-bit attribute.
    pub fn u32_attr(self, typ: u16, v: u32) -> Builder {
        self.attr(typ, &v.to_be_bytes())
    }

    /// Appends ERROR-CODE (`code` 300..=699) with its reason phrase.
    pub fn error(self, code: u16, reason: &str) -> Builder {
        let mut v = vec![0, 0, (code / 100) as u8 & 0x07, (code % 100) as u8];
        v.extend_from_slice(&reason.as_bytes()[..reason.len().min(763)]);
        self.attr(attr::ERROR_CODE, &v)
    }

    fn set_len(&mut self) {
        let len = u16::try_from(self.buf.len() - HEADER_LEN).unwrap_or(u16::MAX);
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// Finishes the message: MESSAGE-INTEGRITY with `key` when given, then FINGERPRINT when
    /// asked.
    pub fn finish(mut self, key: Option<&[u8]>, fingerprint: bool) -> Vec<u8> {
        if let Some(key) = key {
            let at = self.buf.len();
            let covered = with_length(&self.buf, at + 24 - HEADER_LEN);
            let k = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
            let tag = hmac::sign(&k, &covered);
            self = self.attr(attr::MESSAGE_INTEGRITY, tag.as_ref());
        }
        if fingerprint {
            let at = self.buf.len();
            let crc = crc32(&with_length(&self.buf, at + 8 - HEADER_LEN)) ^ FINGERPRINT_XOR;
            self = self.attr(attr::FINGERPRINT, &crc.to_be_bytes());
        }
        self.set_len();
        self.buf
    }
}

/// The long-term credential key: `MD5(username ":" realm ":" password)` (RFC 5389 §15.4;
/// SASLprep is not applied, so use ASCII credentials).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    md5(format!("{username}:{realm}:{password}").as_bytes())
}

/// A ChannelData message (RFC 5766 §11.4), as sent over UDP (no padding).
pub fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + data.len());
    v.extend_from_slice(&channel.to_be_bytes());
    let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(&data[..usize::from(len)]);
    v
}

/// Parses a ChannelData message: (channel number 0x4000..=0x7FFF, data). Trailing padding
/// (from a stream) is allowed and ignored.
pub fn parse_channel_data(b: &[u8]) -> Result<(u16, &[u8]), StunError> {
    let mut r = Reader::new(b);
    let ch = r.u16_be().map_err(|_| StunError::Truncated)?;
    if !(0x4000..=0x7FFF).contains(&ch) {
        return Err(StunError::Malformed("not a ChannelData channel number"));
    }
    let len = usize::from(r.u16_be().map_err(|_| StunError::Truncated)?);
    let data = r.take(len).map_err(|_| StunError::Truncated)?;
    if r.rest().len() > 3 {
        return Err(StunError::Malformed("ChannelData longer than its length"));
    }
    Ok((ch, data))
}

/// CRC-32 (IEEE 802.3, reflected, as zlib), for FINGERPRINT.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// MD5 (RFC 1321), only for the long-term credential key that RFC 5389 mandates.
pub fn md5(input: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i: i32| ((f64::from(i + 1)).sin().abs() * 4_294_967_296.0) as u32)
        .collect();
    let mut h: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let mut msg = input.to_vec();
    let bit_len = (input.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_le_bytes());
    for chunk in msg.chunks_exact(64) {
        let mut m = [0u32; 16];
        for (i, w) in chunk.chunks_exact(4).enumerate() {
            m[i] = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        }
        let [mut a, mut b, mut c, mut d] = h;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        h[0] = h[0].wrapping_add(a);
        h[1] = h[1].wrapping_add(b);
        h[2] = h[2].wrapping_add(c);
        h[3] = h[3].wrapping_add(d);
    }
    let mut out = [0u8; 16];
    for (i, w) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hex_literal::hex;

    #[test]
    fn md5_rfc1321_vectors() {
        assert_eq!(md5(b""), hex!("d41d8cd98f00b204e9800998ecf8427e"));
        assert_eq!(md5(b"abc"), hex!("900150983cd24fb0d6963f7d28e17f72"));
        assert_eq!(
            md5(
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
            ),
            hex!("57edf4a22be3c955ac49da2e2107b67a")
        );
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn type_packing_matches_rfc5389_examples() {
        assert_eq!(message_type(method::BINDING, Class::Request), 0x0001);
        assert_eq!(message_type(method::BINDING, Class::Success), 0x0101);
        assert_eq!(message_type(method::BINDING, Class::Error), 0x0111);
        assert_eq!(message_type(method::ALLOCATE, Class::Request), 0x0003);
        assert_eq!(message_type(method::SEND, Class::Indication), 0x0016);
        assert_eq!(message_type(method::DATA, Class::Indication), 0x0017);
        for m in 0..0x1000u16 {
            for c in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                assert_eq!(split_type(message_type(m, c)), (m, c));
            }
        }
    }

    /// RFC 5769 §2.1: sample request with software, long-term-free short-term credentials
    /// (key = the password "VOkJxbRl1RmTxUk/WvJxBt"), MESSAGE-INTEGRITY and FINGERPRINT.
    #[test]
    fn rfc5769_sample_request_verifies() {
        let msg = hex!(
            "000100582112a442b7e7a701bc34d686fa87dfae"
            "802200105354554e207465737420636c69656e74"
            "002400046e0001ff80290008932ff9b151263b36"
            "000600096576746a3a68367659202020"
            "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
            "80280004e57a3bcf"
        );
        let m = Message::parse(&msg).unwrap();
        assert_eq!((m.method, m.class), (method::BINDING, Class::Request));
        assert_eq!(m.text(attr::USERNAME, 513).unwrap(), Some("evtj:h6vY"));
        assert!(m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
        assert!(!m.verify_integrity(b"wrong"));
    }

    /// RFC 5769 §2.2: IPv4 response with XOR-MAPPED-ADDRESS 192.0.2.1:32853.
    #[test]
    fn rfc5769_sample_ipv4_response() {
        let msg = hex!(
            "0101003c2112a442b7e7a701bc34d686fa87dfae"
            "8022000b7465737420766563746f7220"
            "002000080001a147e112a643"
            "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
            "80280004c07d4c96"
        );
        let m = Message::parse(&msg).unwrap();
        assert_eq!(
            m.xor_address(attr::XOR_MAPPED_ADDRESS).unwrap(),
            Some("192.0.2.1:32853".parse().unwrap())
        );
        assert!(m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
        // Rebuilding gives the same bytes.
        let built = Builder::new(method::BINDING, Class::Success, m.transaction_id)
            .attr(attr::SOFTWARE, b"test vector")
            .xor_address(attr::XOR_MAPPED_ADDRESS, "192.0.2.1:32853".parse().unwrap())
            .finish(Some(b"VOkJxbRl1RmTxUk/WvJxBt"), true);
        assert_eq!(built.len(), msg.len());
        assert_eq!(&built[..28], &msg[..28]);
    }

    /// RFC 5769 §2.3: IPv6 response with XOR-MAPPED-ADDRESS [2001:db8:1234:5678:11:2233:4455:6677]:32853.
    #[test]
    fn rfc5769_sample_ipv6_response() {
        let msg = hex!(
            "010100482112a442b7e7a701bc34d686fa87dfae"
            "8022000b7465737420766563746f7220"
            "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
            "00080014a382954e4be67bf11784c97c8292c275bfe3ed41"
            "80280004c8fb0b4c"
        );
        let m = Message::parse(&msg).unwrap();
        assert_eq!(
            m.xor_address(attr::XOR_MAPPED_ADDRESS).unwrap(),
            Some(
                "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                    .parse()
                    .unwrap()
            )
        );
        assert!(m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
    }

    /// RFC 5769 §2.4: long-term credentials, key MD5("<U+30DE><U+30C8><U+30EA><U+30C3><U+30AF><U+30B9>:example.org:TheMatrIX").
    #[test]
    fn rfc5769_long_term_request() {
        let msg = hex!(
            "000100602112a44278ad3433c6ad72c029da412e"
            "00060012e3839ee38388e383aae38383e382afe382b90000"
            "0015001c662f2f3439396b39353464364f4c33346f4c39465354767936347341"
            "0014000b6578616d706c652e6f726700"
            "00080014f67024656dd64a3e02b8e0712e85c9a28ca89666"
        );
        let m = Message::parse(&msg).unwrap();
        let user = m.text(attr::USERNAME, 513).unwrap().unwrap();
        let realm = m.text(attr::REALM, 763).unwrap().unwrap();
        assert_eq!(realm, "example.org");
        let key = long_term_key(user, realm, "TheMatrIX");
        assert!(m.verify_integrity(&key));
    }

    #[test]
    fn malformed_messages_are_refused() {
        let ok = Builder::new(method::BINDING, Class::Request, [7; 12]).finish(None, true);
        assert!(Message::parse(&ok).is_ok());
        // Truncations and bit flips.
        for cut in 0..ok.len() {
            assert!(Message::parse(&ok[..cut]).is_err());
        }
        let mut bad = ok.clone();
        bad[4] ^= 1;
        assert!(Message::parse(&bad).is_err());
        let mut bad = ok.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(Message::parse(&bad), Err(StunError::BadFingerprint));
        let mut bad = ok.clone();
        bad[0] |= 0x80;
        assert!(Message::parse(&bad).is_err());
    }

    #[test]
    fn channel_data_round_trip_and_stream_lengths() {
        let cd = channel_data(0x4001, b"hello");
        assert_eq!(cd, hex!("40010005 68656c6c6f"));
        assert_eq!(parse_channel_data(&cd).unwrap(), (0x4001, &b"hello"[..]));
        assert_eq!(stream_frame_len(&cd).unwrap(), Some(12));
        assert!(parse_channel_data(&hex!("3fff0000")).is_err());
        let stun = Builder::new(method::BINDING, Class::Request, [1; 12]).finish(None, false);
        assert_eq!(stream_frame_len(&stun).unwrap(), Some(20));
        assert!(stream_frame_len(&[0x80, 0, 0, 0]).is_err());
        assert_eq!(stream_frame_len(&[0, 1]).unwrap(), None);
    }

    proptest::proptest! {
        #[test]
        fn xor_address_round_trip(v6 in proptest::bool::ANY, a in proptest::prelude::any::<[u8; 16]>(),
                                  port in proptest::prelude::any::<u16>(), txid in proptest::prelude::any::<[u8; 12]>()) {
            let ip = if v6 { IpAddr::V6(Ipv6Addr::from(a)) } else { IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])) };
            let addr = SocketAddr::new(ip, port);
            proptest::prop_assert_eq!(decode_xor_address(&encode_xor_address(addr, &txid), &txid).unwrap(), addr);
        }

        #[test]
        fn built_messages_parse_back(attrs in proptest::collection::vec((0u16..0x7fff, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)), 0..10),
                                     key in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..32)) {
            let mut b = Builder::new(method::ALLOCATE, Class::Request, [3; 12]);
            let attrs: Vec<_> = attrs.into_iter().filter(|(t, _)| *t != attr::MESSAGE_INTEGRITY && *t != attr::FINGERPRINT).collect();
            for (t, v) in &attrs {
                b = b.attr(*t, v);
            }
            let bytes = b.finish(Some(&key), true);
            let m = Message::parse(&bytes).unwrap();
            proptest::prop_assert!(m.verify_integrity(&key));
            for (i, (t, v)) in attrs.iter().enumerate() {
                proptest::prop_assert_eq!(&m.attributes[i], &Attribute { typ: *t, value: v.clone() });
            }
        }

        #[test]
        fn parse_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = Message::parse(&b);
            let _ = parse_channel_data(&b);
            let _ = stream_frame_len(&b);
        }
    }
}
