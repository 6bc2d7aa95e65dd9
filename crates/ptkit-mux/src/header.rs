//! The stream header, sans-IO: the first bytes of every mux stream (see `docs/mux.md`).
//!
//! ```text
//! request (client → server), 7..=261 bytes:
//!   ver=0x01 | rsv=0x00 | atyp | address | port (u16 big-endian, 1..=65535)
//!   atyp 0x01: 4 bytes IPv4      atyp 0x04: 16 bytes IPv6
//!   atyp 0x03: len (1..=255) + host name (ASCII letters, digits, '-', '.', '_')
//! reply (server → client), 2 bytes:
//!   ver=0x01 | rep (a SOCKS5 reply code: 0x00 succeeded, 0x02 not allowed by ruleset, …)
//! ```
//!
//! The client sends nothing after the request until it read a `0x00` reply; any other reply
//! is followed by the server closing the stream. The address types and reply codes are
//! RFC 1928's, so a SOCKS5 front end passes them through unchanged.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ptkit_core::reader::Reader;
use ptkit_core::{Host, Target};
use ptkit_tor::socks::Reply;

/// The header version this module speaks.
pub const VERSION: u8 = 1;
/// Address type: IPv4.
pub const ATYP_IPV4: u8 = 1;
/// Address type: host name.
pub const ATYP_DOMAIN: u8 = 3;
/// Address type: IPv6.
pub const ATYP_IPV6: u8 = 4;
/// The longest request: version, reserved, type, length, 255 name bytes, port.
pub const MAX_REQUEST_LEN: usize = 4 + 255 + 2;
/// The length of a reply.
pub const REPLY_LEN: usize = 2;

/// A stream's destination request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MuxRequest {
    /// Where the server should connect.
    pub target: Target,
}

/// The server's answer to a request: a SOCKS5 reply code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MuxReply(pub u8);

impl MuxReply {
    /// Success: the stream now carries the destination's bytes.
    pub const SUCCEEDED: MuxReply = MuxReply(0);

    /// The reply for a SOCKS reply code.
    pub fn from_socks(reply: Reply) -> Self {
        MuxReply(reply as u8)
    }

    /// The SOCKS reply code (unknown codes read as general failure).
    pub fn socks(self) -> Reply {
        match self.0 {
            0 => Reply::Succeeded,
            2 => Reply::NotAllowed,
            3 => Reply::NetworkUnreachable,
            4 => Reply::HostUnreachable,
            5 => Reply::ConnectionRefused,
            6 => Reply::TtlExpired,
            7 => Reply::CommandNotSupported,
            8 => Reply::AddressTypeNotSupported,
            _ => Reply::GeneralFailure,
        }
    }

    /// The two reply bytes.
    pub fn encode(self) -> [u8; REPLY_LEN] {
        [VERSION, self.0]
    }

    /// Parses the two reply bytes.
    pub fn decode(bytes: [u8; REPLY_LEN]) -> Result<Self, HeaderError> {
        match bytes {
            [VERSION, rep] => Ok(MuxReply(rep)),
            [v, _] => Err(HeaderError::BadVersion(v)),
        }
    }
}

/// Why a header is unusable. Each maps to the reply the server sends ([`HeaderError::reply`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// A version other than [`VERSION`] (unsupported).
    #[error("unsupported mux header version {0}")]
    BadVersion(u8),
    /// The reserved byte is not zero (malformed).
    #[error("mux header reserved byte is {0:#04x}, not 0")]
    Reserved(u8),
    /// An address type other than 1, 3, 4 (unsupported).
    #[error("unsupported mux address type {0:#04x}")]
    BadAddressType(u8),
    /// An empty or invalid host name (malformed).
    #[error("invalid host name in mux header")]
    BadHost,
    /// Port 0 (malformed).
    #[error("port 0 in mux header")]
    ZeroPort,
    /// The host name does not fit the header (encoding only).
    #[error("host name longer than 255 bytes")]
    HostTooLong,
}

impl HeaderError {
    /// Stable metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            HeaderError::BadVersion(_) | HeaderError::BadAddressType(_) => "header_unsupported",
            HeaderError::Reserved(_)
            | HeaderError::BadHost
            | HeaderError::ZeroPort
            | HeaderError::HostTooLong => "header_malformed",
        }
    }

    /// The reply the server sends before closing: `0x08` for an unknown address type,
    /// `0x01` (general failure) otherwise.
    pub fn reply(&self) -> MuxReply {
        match self {
            HeaderError::BadAddressType(_) => MuxReply::from_socks(Reply::AddressTypeNotSupported),
            _ => MuxReply::from_socks(Reply::GeneralFailure),
        }
    }
}

/// True for the characters a host name may carry (those `Target::parse` accepts).
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

impl MuxRequest {
    /// A request for `target`.
    pub fn new(target: Target) -> Self {
        MuxRequest { target }
    }

    /// The request bytes.
    pub fn encode(&self) -> Result<Vec<u8>, HeaderError> {
        if self.target.port == 0 {
            return Err(HeaderError::ZeroPort);
        }
        let mut out = Vec::with_capacity(24);
        out.extend_from_slice(&[VERSION, 0]);
        match &self.target.host {
            Host::Ip(IpAddr::V4(ip)) => {
                out.push(ATYP_IPV4);
                out.extend_from_slice(&ip.octets());
            }
            Host::Ip(IpAddr::V6(ip)) => {
                out.push(ATYP_IPV6);
                out.extend_from_slice(&ip.octets());
            }
            Host::Name(name) => {
                let len = u8::try_from(name.len()).map_err(|_| HeaderError::HostTooLong)?;
                if !valid_name(name.as_bytes()) {
                    return Err(HeaderError::BadHost);
                }
                out.push(ATYP_DOMAIN);
                out.push(len);
                out.extend_from_slice(name.as_bytes());
            }
        }
        out.extend_from_slice(&self.target.port.to_be_bytes());
        Ok(out)
    }

    /// Decodes a request from the start of `input`: `Ok(None)` when more bytes are needed
    /// (never more than [`MAX_REQUEST_LEN`] in all), else the request and the bytes it took.
    /// Bytes after the request are not looked at.
    pub fn decode(input: &[u8]) -> Result<Option<(MuxRequest, usize)>, HeaderError> {
        let mut r = Reader::new(input);
        match Self::decode_from(&mut r) {
            Ok(Some(req)) => Ok(Some((req, r.consumed()))),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Option<MuxRequest>, HeaderError> {
        // Errors are reported as soon as the offending byte arrives, so a hostile peer cannot
        // make the server wait for bytes after a bad version or address type.
        let Ok(version) = r.u8() else {
            return Ok(None);
        };
        if version != VERSION {
            return Err(HeaderError::BadVersion(version));
        }
        let Ok(reserved) = r.u8() else {
            return Ok(None);
        };
        if reserved != 0 {
            return Err(HeaderError::Reserved(reserved));
        }
        let Ok(atyp) = r.u8() else {
            return Ok(None);
        };
        let host = match atyp {
            ATYP_IPV4 => {
                let Ok(b) = r.take(4) else { return Ok(None) };
                Host::Ip(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
            }
            ATYP_IPV6 => {
                let Ok(b) = r.take(16) else { return Ok(None) };
                let mut octets = [0u8; 16];
                octets.copy_from_slice(b);
                Host::Ip(IpAddr::V6(Ipv6Addr::from(octets)))
            }
            ATYP_DOMAIN => {
                let Ok(len) = r.u8() else { return Ok(None) };
                if len == 0 {
                    return Err(HeaderError::BadHost);
                }
                let Ok(name) = r.take(usize::from(len)) else {
                    // Check what arrived so far, so junk is refused early.
                    if !r.rest().iter().all(|b| valid_name(&[*b])) {
                        return Err(HeaderError::BadHost);
                    }
                    return Ok(None);
                };
                if !valid_name(name) {
                    return Err(HeaderError::BadHost);
                }
                // valid_name admits ASCII only, so this cannot fail.
                let name = String::from_utf8_lossy(name).into_owned();
                Host::Name(name)
            }
            other => return Err(HeaderError::BadAddressType(other)),
        };
        let Ok(port) = r.u16_be() else {
            return Ok(None);
        };
        if port == 0 {
            return Err(HeaderError::ZeroPort);
        }
        Ok(Some(MuxRequest {
            target: Target { host, port },
        }))
    }
}

/// Fuzz entry point (`fuzz/fuzz_targets/mux_header.rs`): decodes `data` whole and in every
/// two-way split, checks that a decoded request re-encodes to exactly the bytes it took, that
/// splitting never changes the outcome, and that no decode claims more than
/// [`MAX_REQUEST_LEN`] bytes; also decodes the first two bytes as a reply.
pub fn fuzz_header(data: &[u8]) {
    let whole = MuxRequest::decode(data);
    if let Ok(Some((req, used))) = &whole {
        assert!(*used <= MAX_REQUEST_LEN && *used <= data.len());
        assert_eq!(req.encode().ok().as_deref(), data.get(..*used));
    }
    if whole == Ok(None) {
        assert!(data.len() < MAX_REQUEST_LEN);
    }
    // Feeding a prefix must give "need more" or the same answer (or an earlier error).
    for cut in 0..data.len().min(MAX_REQUEST_LEN + 1) {
        match (MuxRequest::decode(&data[..cut]), &whole) {
            (Ok(None), _) => {}
            (Ok(Some(a)), Ok(Some(b))) => assert_eq!(&a, b),
            (Err(a), Err(b)) => assert_eq!(&a, b),
            (prefix, w) => panic!("prefix {cut} gave {prefix:?}, whole gave {w:?}"),
        }
    }
    if let [a, b, ..] = *data {
        let _ = MuxReply::decode([a, b]);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    fn t(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    #[test]
    fn vectors_for_every_address_type() {
        let cases: &[(&str, &[u8])] = &[
            ("192.0.2.7:443", &hex!("01 00 01 c0000207 01bb")),
            (
                "[2001:db8::1]:80",
                &hex!("01 00 04 20010db8000000000000000000000001 0050"),
            ),
            (
                "example.com:8080",
                &hex!("01 00 03 0b 6578616d706c652e636f6d 1f90"),
            ),
        ];
        for (target, bytes) in cases {
            let req = MuxRequest::new(t(target));
            assert_eq!(req.encode().unwrap(), *bytes, "{target}");
            assert_eq!(
                MuxRequest::decode(bytes).unwrap(),
                Some((req.clone(), bytes.len()))
            );
            // Trailing bytes (the stream's data) are left alone.
            let mut more = bytes.to_vec();
            more.extend_from_slice(b"GET /");
            assert_eq!(MuxRequest::decode(&more).unwrap(), Some((req, bytes.len())));
        }
        assert_eq!(MuxReply::SUCCEEDED.encode(), hex!("01 00"));
        assert_eq!(
            MuxReply::decode(hex!("01 02")).unwrap().socks(),
            Reply::NotAllowed
        );
        assert_eq!(
            MuxReply::decode(hex!("02 00")),
            Err(HeaderError::BadVersion(2))
        );
    }

    #[test]
    fn hostile_headers_are_refused_with_their_reply() {
        let cases: &[(&[u8], HeaderError, u8)] = &[
            (&hex!("02"), HeaderError::BadVersion(2), 1),
            (&hex!("00 00 01"), HeaderError::BadVersion(0), 1),
            (&hex!("01 01"), HeaderError::Reserved(1), 1),
            (&hex!("01 00 02"), HeaderError::BadAddressType(2), 8),
            (&hex!("01 00 ff"), HeaderError::BadAddressType(0xff), 8),
            (&hex!("01 00 03 00 0050"), HeaderError::BadHost, 1),
            (&hex!("01 00 03 03 61 20 62 0050"), HeaderError::BadHost, 1),
            (&hex!("01 00 03 05 61 00"), HeaderError::BadHost, 1),
            (&hex!("01 00 01 7f000001 0000"), HeaderError::ZeroPort, 1),
        ];
        for (bytes, err, rep) in cases {
            assert_eq!(MuxRequest::decode(bytes).as_ref(), Err(err), "{bytes:02x?}");
            assert_eq!(err.reply().0, *rep);
        }
        // Incomplete but plausible: wait for more.
        for partial in [&hex!("")[..], &hex!("01"), &hex!("01 00 03 ff 61 62")] {
            assert_eq!(MuxRequest::decode(partial), Ok(None));
        }
        assert_eq!(
            MuxRequest::new(t("example.com:0")).encode(),
            Err(HeaderError::ZeroPort)
        );
        let long = Target {
            host: Host::Name("a".repeat(256)),
            port: 1,
        };
        assert_eq!(
            MuxRequest::new(long).encode(),
            Err(HeaderError::HostTooLong)
        );
    }

    #[test]
    fn longest_request_is_max_request_len() {
        let name = "a".repeat(255);
        let req = MuxRequest::new(Target {
            host: Host::Name(name),
            port: 65535,
        });
        assert_eq!(req.encode().unwrap().len(), MAX_REQUEST_LEN);
    }

    fn arb_target() -> impl Strategy<Value = Target> {
        let host = prop_oneof![
            any::<[u8; 4]>().prop_map(|b| Host::Ip(IpAddr::V4(Ipv4Addr::from(b)))),
            any::<[u8; 16]>().prop_map(|b| Host::Ip(IpAddr::V6(Ipv6Addr::from(b)))),
            "[a-zA-Z0-9._-]{1,255}".prop_map(Host::Name),
        ];
        (host, 1u16..).prop_map(|(host, port)| Target { host, port })
    }

    proptest! {
        #[test]
        fn round_trip_in_any_chunking(target in arb_target(), cut in any::<prop::sample::Index>(), tail in prop::collection::vec(any::<u8>(), 0..8)) {
            let req = MuxRequest::new(target);
            let mut bytes = req.encode().unwrap();
            let len = bytes.len();
            let cut = cut.index(len);
            prop_assert_eq!(MuxRequest::decode(&bytes[..cut]), Ok(None));
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(MuxRequest::decode(&bytes), Ok(Some((req, len))));
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..300)) {
            fuzz_header(&data);
        }
    }
}
