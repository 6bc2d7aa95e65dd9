//! The tunnel's wire formats, sans-IO: the per-stream header and its reply, and the messages of
//! the authentication stream. Bytes in, values out; nothing here touches a socket or a clock.
//!
//! Every decoder returns [`Decode::Need`] with the *exact* number of further bytes it needs
//! before it can say more, so an async driver can read precisely that many bytes and never
//! swallow payload that follows a header. Every length is bounded by a constant below; see
//! `docs/quic-tunnel.md` for the byte layouts.

use std::net::{Ipv4Addr, Ipv6Addr};

use ptkit_core::reader::Reader;

/// The four bytes that open every routed stream.
pub const MAGIC: [u8; 4] = *b"PTQT";
/// The protocol version this crate speaks (in the stream header and the auth `Hello`).
pub const VERSION: u8 = 1;
/// The ALPN protocol of tunnels (`ptkit tunnel`).
pub const ALPN_TUNNEL: &[u8] = b"ptkit-tunnel/1";
/// The ALPN protocol of the `quic` pluggable transport.
pub const ALPN_PT: &[u8] = b"ptkit-quic/1";
/// Longest service name or DNS host name in a header (one length byte).
pub const MAX_NAME: usize = 255;
/// Longest reply body (a refusal reason).
pub const MAX_REPLY_BODY: usize = 512;
/// Longest auth-message body.
pub const MAX_AUTH_BODY: usize = 1024;
/// Length of the HMAC challenge nonce and of the proof.
pub const NONCE_LEN: usize = 32;

/// Why bytes could not be decoded. `kind()` is a metrics label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The stream did not start with [`MAGIC`]: not our protocol.
    #[error("stream does not start with the PTQT magic")]
    BadMagic,
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {0} (this side speaks {VERSION})")]
    UnsupportedVersion(u8),
    /// A route kind this version does not define.
    #[error("unknown route kind {0}")]
    UnknownRoute(u8),
    /// An address type this version does not define.
    #[error("unknown address type {0}")]
    UnknownAddressType(u8),
    /// An auth message type this version does not define.
    #[error("unknown auth message type {0}")]
    UnknownMessage(u8),
    /// An auth method this version does not define.
    #[error("unknown auth method {0}")]
    UnknownMethod(u8),
    /// A length field above its documented limit.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// The length the peer sent.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A field that must be UTF-8 text is not, or is empty where it must not be.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

impl ProtoError {
    /// Stable short label: `malformed` or `unsupported`.
    pub fn kind(&self) -> &'static str {
        match self {
            ProtoError::UnsupportedVersion(_)
            | ProtoError::UnknownRoute(_)
            | ProtoError::UnknownMethod(_) => "unsupported",
            _ => "malformed",
        }
    }
}

/// The result of feeding bytes to a decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decode<T> {
    /// A complete item and the number of bytes it used.
    Done(T, usize),
    /// At least (and, for these formats, exactly) this many more bytes are needed.
    Need(usize),
}

/// Where a stream should go: what the opener asks of the acceptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The acceptor's configured upstream (the `quic` pluggable transport: tor's ORPort).
    Upstream,
    /// Forward routing: the acceptor dials this TCP target, if its policy allows.
    Tcp(TcpTarget),
    /// Reverse routing, aggregator → client: connect this stream to your local target `name`.
    Service(String),
    /// Reverse routing, client → aggregator: expose a port whose connections come back to me
    /// as [`Route::Service`] streams for `name`. The stream stays open while the port exists.
    Expose(String),
}

/// A TCP destination in a header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TcpTarget {
    /// The host.
    pub host: TargetHost,
    /// The port.
    pub port: u16,
}

/// The host part of a [`TcpTarget`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetHost {
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 address.
    V6(Ipv6Addr),
    /// A DNS name (1–255 bytes).
    Dns(String),
}

impl std::fmt::Display for TcpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            TargetHost::V4(a) => write!(f, "{a}:{}", self.port),
            TargetHost::V6(a) => write!(f, "[{a}]:{}", self.port),
            TargetHost::Dns(h) => write!(f, "{h}:{}", self.port),
        }
    }
}

impl TcpTarget {
    /// Parses `host:port`, `[v6]:port` or `v4:port`.
    pub fn parse(s: &str) -> Result<Self, ProtoError> {
        let t = ptkit_core::Target::parse(s).map_err(|_| ProtoError::Malformed("target"))?;
        Ok(Self::from(t))
    }
}

impl From<ptkit_core::Target> for TcpTarget {
    fn from(t: ptkit_core::Target) -> Self {
        let host = match t.host {
            ptkit_core::Host::Ip(std::net::IpAddr::V4(a)) => TargetHost::V4(a),
            ptkit_core::Host::Ip(std::net::IpAddr::V6(a)) => TargetHost::V6(a),
            ptkit_core::Host::Name(n) => TargetHost::Dns(n),
        };
        TcpTarget { host, port: t.port }
    }
}

impl From<&TcpTarget> for ptkit_core::Target {
    fn from(t: &TcpTarget) -> Self {
        let host = match &t.host {
            TargetHost::V4(a) => ptkit_core::Host::Ip((*a).into()),
            TargetHost::V6(a) => ptkit_core::Host::Ip((*a).into()),
            TargetHost::Dns(n) => ptkit_core::Host::Name(n.clone()),
        };
        ptkit_core::Target { host, port: t.port }
    }
}

const ROUTE_UPSTREAM: u8 = 0;
const ROUTE_TCP: u8 = 1;
const ROUTE_SERVICE: u8 = 2;
const ROUTE_EXPOSE: u8 = 3;
const ADDR_V4: u8 = 1;
const ADDR_DNS: u8 = 3;
const ADDR_V6: u8 = 4;

fn push_name(out: &mut Vec<u8>, what: &'static str, name: &str) -> Result<(), ProtoError> {
    if name.is_empty() {
        return Err(ProtoError::Malformed(what));
    }
    if name.len() > MAX_NAME {
        return Err(ProtoError::TooLong {
            what,
            len: name.len(),
            max: MAX_NAME,
        });
    }
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

/// Encodes the stream header for `route`. Fails only for names that are empty or longer
/// than [`MAX_NAME`].
pub fn encode_header(route: &Route) -> Result<Vec<u8>, ProtoError> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    match route {
        Route::Upstream => out.push(ROUTE_UPSTREAM),
        Route::Tcp(t) => {
            out.push(ROUTE_TCP);
            match &t.host {
                TargetHost::V4(a) => {
                    out.push(ADDR_V4);
                    out.extend_from_slice(&a.octets());
                }
                TargetHost::V6(a) => {
                    out.push(ADDR_V6);
                    out.extend_from_slice(&a.octets());
                }
                TargetHost::Dns(h) => {
                    out.push(ADDR_DNS);
                    push_name(&mut out, "host name", h)?;
                }
            }
            out.extend_from_slice(&t.port.to_be_bytes());
        }
        Route::Service(n) => {
            out.push(ROUTE_SERVICE);
            push_name(&mut out, "service name", n)?;
        }
        Route::Expose(n) => {
            out.push(ROUTE_EXPOSE);
            push_name(&mut out, "service name", n)?;
        }
    }
    Ok(out)
}

/// Reads a length-prefixed name at `r`, or says how many more bytes are needed given that
/// `r` covers the whole buffer so far.
fn name_at(r: &mut Reader<'_>, what: &'static str) -> Result<Result<String, usize>, ProtoError> {
    let Ok(len) = r.u8() else { return Ok(Err(1)) };
    let len = len as usize;
    if len == 0 {
        return Err(ProtoError::Malformed(what));
    }
    let have = r.rest().len();
    if have < len {
        return Ok(Err(len - have));
    }
    let bytes = r.take(len).map_err(|_| ProtoError::Malformed(what))?;
    let s = std::str::from_utf8(bytes).map_err(|_| ProtoError::Malformed(what))?;
    Ok(Ok(s.to_owned()))
}

/// Decodes a stream header from the start of `buf`.
pub fn decode_header(buf: &[u8]) -> Result<Decode<Route>, ProtoError> {
    const FIXED: usize = 6;
    if buf.len() < FIXED {
        // Check what we have early: a wrong magic fails at its first byte.
        if buf.iter().zip(MAGIC.iter()).any(|(a, b)| a != b) {
            return Err(ProtoError::BadMagic);
        }
        return Ok(Decode::Need(FIXED - buf.len()));
    }
    let mut r = Reader::new(buf);
    let magic = r.take(4).map_err(|_| ProtoError::BadMagic)?;
    if magic != MAGIC {
        return Err(ProtoError::BadMagic);
    }
    let version = r.u8().map_err(|_| ProtoError::BadMagic)?;
    if version != VERSION {
        return Err(ProtoError::UnsupportedVersion(version));
    }
    let kind = r.u8().map_err(|_| ProtoError::BadMagic)?;
    let route = match kind {
        ROUTE_UPSTREAM => Route::Upstream,
        ROUTE_SERVICE | ROUTE_EXPOSE => match name_at(&mut r, "service name")? {
            Ok(n) if kind == ROUTE_SERVICE => Route::Service(n),
            Ok(n) => Route::Expose(n),
            Err(need) => return Ok(Decode::Need(need)),
        },
        ROUTE_TCP => {
            let Ok(at) = r.u8() else {
                return Ok(Decode::Need(1));
            };
            let host = match at {
                ADDR_V4 | ADDR_V6 => {
                    let n = if at == ADDR_V4 { 4 } else { 16 };
                    let have = r.rest().len();
                    if have < n + 2 {
                        return Ok(Decode::Need(n + 2 - have));
                    }
                    let b = r.take(n).map_err(|_| ProtoError::Malformed("address"))?;
                    if at == ADDR_V4 {
                        TargetHost::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
                    } else {
                        let mut o = [0u8; 16];
                        o.copy_from_slice(b);
                        TargetHost::V6(Ipv6Addr::from(o))
                    }
                }
                ADDR_DNS => match name_at(&mut r, "host name")? {
                    Ok(h) => TargetHost::Dns(h),
                    Err(need) => return Ok(Decode::Need(need + 2)),
                },
                other => return Err(ProtoError::UnknownAddressType(other)),
            };
            let have = r.rest().len();
            if have < 2 {
                return Ok(Decode::Need(2 - have));
            }
            let port = r.u16_be().map_err(|_| ProtoError::Malformed("port"))?;
            Route::Tcp(TcpTarget { host, port })
        }
        other => return Err(ProtoError::UnknownRoute(other)),
    };
    Ok(Decode::Done(route, r.consumed()))
}

/// The acceptor's answer to a stream header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Accepted. For [`Route::Expose`], `port` is the port the aggregator bound.
    Ok {
        /// The exposed port (only for `Expose`).
        port: Option<u16>,
    },
    /// Refused, with a reason code and a human-readable reason.
    Refused(RefusalCode, String),
}

/// Why a stream (or a tunnel, in an auth `Refused`) was refused. Stable wire values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalCode {
    /// The policy does not allow this route for this identity.
    Policy,
    /// The acceptor does not serve this kind of route (or this service name).
    UnknownRoute,
    /// The target could not be reached.
    Unreachable,
    /// A configured limit (streams, ports, tunnels) is exhausted.
    Limit,
    /// The request was malformed.
    Malformed,
    /// Authentication: the credentials did not verify.
    BadCredentials,
    /// Authentication: the method is not accepted by this server.
    MethodNotAllowed,
    /// Authentication took longer than the deadline.
    Timeout,
    /// A code from a newer version.
    Other(u8),
}

impl RefusalCode {
    /// The wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            RefusalCode::Policy => 1,
            RefusalCode::UnknownRoute => 2,
            RefusalCode::Unreachable => 3,
            RefusalCode::Limit => 4,
            RefusalCode::Malformed => 5,
            RefusalCode::BadCredentials => 6,
            RefusalCode::MethodNotAllowed => 7,
            RefusalCode::Timeout => 8,
            RefusalCode::Other(v) => v,
        }
    }

    /// From the wire value (0 is "ok" and never a refusal; it maps to `Other(0)`).
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => RefusalCode::Policy,
            2 => RefusalCode::UnknownRoute,
            3 => RefusalCode::Unreachable,
            4 => RefusalCode::Limit,
            5 => RefusalCode::Malformed,
            6 => RefusalCode::BadCredentials,
            7 => RefusalCode::MethodNotAllowed,
            8 => RefusalCode::Timeout,
            v => RefusalCode::Other(v),
        }
    }

    /// A stable label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            RefusalCode::Policy => "policy",
            RefusalCode::UnknownRoute => "unknown_route",
            RefusalCode::Unreachable => "unreachable",
            RefusalCode::Limit => "limit",
            RefusalCode::Malformed => "malformed",
            RefusalCode::BadCredentials => "bad_credentials",
            RefusalCode::MethodNotAllowed => "method_not_allowed",
            RefusalCode::Timeout => "timeout",
            RefusalCode::Other(_) => "other",
        }
    }
}

fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Encodes a reply: status byte, u16 body length, body. Reasons are cut to
/// [`MAX_REPLY_BODY`] bytes.
pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    let (status, body): (u8, Vec<u8>) = match reply {
        Reply::Ok { port: None } => (0, Vec::new()),
        Reply::Ok { port: Some(p) } => (0, p.to_be_bytes().to_vec()),
        Reply::Refused(code, reason) => (
            code.to_u8().max(1),
            clip(reason, MAX_REPLY_BODY).as_bytes().to_vec(),
        ),
    };
    let mut out = Vec::with_capacity(3 + body.len());
    out.push(status);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes a reply from the start of `buf`.
pub fn decode_reply(buf: &[u8]) -> Result<Decode<Reply>, ProtoError> {
    if buf.len() < 3 {
        return Ok(Decode::Need(3 - buf.len()));
    }
    let mut r = Reader::new(buf);
    let status = r.u8().map_err(|_| ProtoError::Malformed("reply"))?;
    let len = r.u16_be().map_err(|_| ProtoError::Malformed("reply"))? as usize;
    if len > MAX_REPLY_BODY {
        return Err(ProtoError::TooLong {
            what: "reply body",
            len,
            max: MAX_REPLY_BODY,
        });
    }
    if r.rest().len() < len {
        return Ok(Decode::Need(len - r.rest().len()));
    }
    let body = r.take(len).map_err(|_| ProtoError::Malformed("reply"))?;
    let reply = if status == 0 {
        match body.len() {
            0 => Reply::Ok { port: None },
            2 => Reply::Ok {
                port: Some(u16::from_be_bytes([body[0], body[1]])),
            },
            _ => return Err(ProtoError::Malformed("reply body")),
        }
    } else {
        let reason =
            std::str::from_utf8(body).map_err(|_| ProtoError::Malformed("refusal reason"))?;
        Reply::Refused(RefusalCode::from_u8(status), reason.to_owned())
    };
    Ok(Decode::Done(reply, r.consumed()))
}

/// How a client authenticates (the `Hello`'s method byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthMethod {
    /// No client authentication (the `quic` pluggable transport: whoever has the bridge line).
    None,
    /// The TLS client certificate is the credential (mutual TLS).
    Mtls,
    /// HMAC-SHA256 challenge-response over a shared secret.
    Hmac,
}

impl AuthMethod {
    fn to_u8(self) -> u8 {
        match self {
            AuthMethod::None => 0,
            AuthMethod::Mtls => 1,
            AuthMethod::Hmac => 2,
        }
    }
    fn from_u8(v: u8) -> Result<Self, ProtoError> {
        match v {
            0 => Ok(AuthMethod::None),
            1 => Ok(AuthMethod::Mtls),
            2 => Ok(AuthMethod::Hmac),
            v => Err(ProtoError::UnknownMethod(v)),
        }
    }
    /// The method's name in logs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::Mtls => "mtls",
            AuthMethod::Hmac => "hmac",
        }
    }
}

/// A message on the authentication stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMessage {
    /// Client → server, first: protocol version, method, and the name the client claims
    /// (may be empty for mTLS, where the certificate names the client).
    Hello {
        /// Protocol version ([`VERSION`]).
        version: u8,
        /// The method.
        method: AuthMethod,
        /// The claimed identity (≤ [`MAX_NAME`] bytes).
        name: String,
    },
    /// Server → client (HMAC): a fresh random nonce.
    Challenge([u8; NONCE_LEN]),
    /// Client → server (HMAC): `HMAC-SHA256(secret, transcript)`, see [`crate::auth`].
    Proof([u8; NONCE_LEN]),
    /// Server → client: authenticated as this identity.
    Accepted(String),
    /// Server → client: refused, with a code and a reason.
    Refused(RefusalCode, String),
}

const MSG_HELLO: u8 = 1;
const MSG_CHALLENGE: u8 = 2;
const MSG_PROOF: u8 = 3;
const MSG_ACCEPTED: u8 = 4;
const MSG_REFUSED: u8 = 5;

/// Encodes an auth message: type byte, u16 body length, body.
pub fn encode_auth(msg: &AuthMessage) -> Result<Vec<u8>, ProtoError> {
    let mut body = Vec::new();
    let ty = match msg {
        AuthMessage::Hello {
            version,
            method,
            name,
        } => {
            body.push(*version);
            body.push(method.to_u8());
            if name.len() > MAX_NAME {
                return Err(ProtoError::TooLong {
                    what: "client name",
                    len: name.len(),
                    max: MAX_NAME,
                });
            }
            body.push(name.len() as u8);
            body.extend_from_slice(name.as_bytes());
            MSG_HELLO
        }
        AuthMessage::Challenge(n) => {
            body.extend_from_slice(n);
            MSG_CHALLENGE
        }
        AuthMessage::Proof(p) => {
            body.extend_from_slice(p);
            MSG_PROOF
        }
        AuthMessage::Accepted(id) => {
            push_name(&mut body, "identity", id)?;
            MSG_ACCEPTED
        }
        AuthMessage::Refused(code, reason) => {
            body.push(code.to_u8());
            body.extend_from_slice(clip(reason, MAX_AUTH_BODY - 1).as_bytes());
            MSG_REFUSED
        }
    };
    let mut out = Vec::with_capacity(3 + body.len());
    out.push(ty);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes an auth message from the start of `buf`.
pub fn decode_auth(buf: &[u8]) -> Result<Decode<AuthMessage>, ProtoError> {
    if buf.len() < 3 {
        return Ok(Decode::Need(3 - buf.len()));
    }
    let mut r = Reader::new(buf);
    let ty = r.u8().map_err(|_| ProtoError::Malformed("auth message"))?;
    if !(MSG_HELLO..=MSG_REFUSED).contains(&ty) {
        return Err(ProtoError::UnknownMessage(ty));
    }
    let len = r
        .u16_be()
        .map_err(|_| ProtoError::Malformed("auth message"))? as usize;
    if len > MAX_AUTH_BODY {
        return Err(ProtoError::TooLong {
            what: "auth message",
            len,
            max: MAX_AUTH_BODY,
        });
    }
    if r.rest().len() < len {
        return Ok(Decode::Need(len - r.rest().len()));
    }
    let mut b = r
        .sub(len)
        .map_err(|_| ProtoError::Malformed("auth message"))?;
    let fixed = |b: &mut Reader<'_>, what| -> Result<[u8; NONCE_LEN], ProtoError> {
        let v = b.take(NONCE_LEN).map_err(|_| ProtoError::Malformed(what))?;
        let mut o = [0u8; NONCE_LEN];
        o.copy_from_slice(v);
        Ok(o)
    };
    let msg = match ty {
        MSG_HELLO => {
            let version = b.u8().map_err(|_| ProtoError::Malformed("hello"))?;
            if version != VERSION {
                return Err(ProtoError::UnsupportedVersion(version));
            }
            let method = AuthMethod::from_u8(b.u8().map_err(|_| ProtoError::Malformed("hello"))?)?;
            let n = b.u8().map_err(|_| ProtoError::Malformed("hello"))? as usize;
            let name = b.take(n).map_err(|_| ProtoError::Malformed("hello"))?;
            let name =
                std::str::from_utf8(name).map_err(|_| ProtoError::Malformed("client name"))?;
            AuthMessage::Hello {
                version,
                method,
                name: name.to_owned(),
            }
        }
        MSG_CHALLENGE => AuthMessage::Challenge(fixed(&mut b, "challenge")?),
        MSG_PROOF => AuthMessage::Proof(fixed(&mut b, "proof")?),
        MSG_ACCEPTED => match name_at(&mut b, "identity")? {
            Ok(id) => AuthMessage::Accepted(id),
            Err(_) => return Err(ProtoError::Malformed("identity")),
        },
        _ => {
            let code = b.u8().map_err(|_| ProtoError::Malformed("refusal"))?;
            let reason = std::str::from_utf8(b.rest())
                .map_err(|_| ProtoError::Malformed("refusal reason"))?;
            let _ = b.take(b.rest().len());
            AuthMessage::Refused(RefusalCode::from_u8(code), reason.to_owned())
        }
    };
    if !b.is_empty() {
        return Err(ProtoError::Malformed("trailing bytes in auth message"));
    }
    Ok(Decode::Done(msg, r.consumed()))
}

/// Fuzz entry point (`fuzz/fuzz_targets/quic_header.rs`): runs every decoder on `data` and
/// checks their invariants: no panic, `Done` never claims more bytes than given, `Need` is
/// positive, and what decodes re-encodes to the same bytes.
pub fn fuzz_decoders(data: &[u8]) {
    fn check<T: Clone>(
        data: &[u8],
        d: Result<Decode<T>, ProtoError>,
        enc: impl Fn(&T) -> Option<Vec<u8>>,
    ) {
        match d {
            Ok(Decode::Done(v, used)) => {
                assert!(used <= data.len());
                if let Some(bytes) = enc(&v) {
                    assert_eq!(bytes.as_slice(), &data[..used], "re-encoding differs");
                }
            }
            Ok(Decode::Need(n)) => assert!(n > 0),
            Err(e) => {
                let _ = e.kind();
            }
        }
    }
    check(data, decode_header(data), |r| encode_header(r).ok());
    check(data, decode_reply(data), |r| match r {
        // Status bytes above the known codes decode as Other and re-encode identically.
        Reply::Refused(_, _) | Reply::Ok { .. } => Some(encode_reply(r)),
    });
    check(data, decode_auth(data), |m| encode_auth(m).ok());
    // Feeding a prefix must ask for more, never fail differently than the whole would.
    if let Ok(Decode::Done(_, used)) = decode_header(data) {
        for cut in 0..used {
            assert!(
                matches!(decode_header(&data[..cut]), Ok(Decode::Need(n)) if n > 0),
                "prefix of a valid header was not 'need more'"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_vectors() {
        let h = encode_header(&Route::Tcp(TcpTarget::parse("127.0.0.1:8080").unwrap())).unwrap();
        assert_eq!(h, b"PTQT\x01\x01\x01\x7f\x00\x00\x01\x1f\x90");
        let h = encode_header(&Route::Upstream).unwrap();
        assert_eq!(h, b"PTQT\x01\x00");
        let h = encode_header(&Route::Service("web".into())).unwrap();
        assert_eq!(h, b"PTQT\x01\x02\x03web");
        let h = encode_header(&Route::Tcp(TcpTarget::parse("example.com:443").unwrap())).unwrap();
        assert_eq!(h, b"PTQT\x01\x01\x03\x0bexample.com\x01\xbb");
        assert_eq!(
            decode_header(b"PTQT\x02\x00"),
            Err(ProtoError::UnsupportedVersion(2))
        );
        assert_eq!(decode_header(b"GET "), Err(ProtoError::BadMagic));
        assert_eq!(
            decode_header(b"PTQT\x01\x09"),
            Err(ProtoError::UnknownRoute(9))
        );
        assert_eq!(
            decode_header(b"PTQT\x01\x02\x00"),
            Err(ProtoError::Malformed("service name"))
        );
        assert!(encode_header(&Route::Service("x".repeat(256))).is_err());
    }

    #[test]
    fn need_is_exact() {
        let routes = [
            Route::Upstream,
            Route::Tcp(TcpTarget::parse("[::1]:22").unwrap()),
            Route::Tcp(TcpTarget::parse("host.example:22").unwrap()),
            Route::Expose("ssh".into()),
        ];
        for route in routes {
            let bytes = encode_header(&route).unwrap();
            // Reading exactly what Need asks for reaches the end of the header, never beyond.
            let mut have = 0;
            loop {
                match decode_header(&bytes[..have]).unwrap() {
                    Decode::Need(n) => {
                        have += n;
                        assert!(have <= bytes.len(), "{route:?} asked past its end");
                    }
                    Decode::Done(r, used) => {
                        assert_eq!(r, route);
                        assert_eq!(used, bytes.len());
                        break;
                    }
                }
            }
        }
    }

    #[test]
    fn reply_and_auth_round_trip() {
        for r in [
            Reply::Ok { port: None },
            Reply::Ok { port: Some(8080) },
            Reply::Refused(RefusalCode::Policy, "not allowed".into()),
        ] {
            let b = encode_reply(&r);
            assert_eq!(decode_reply(&b).unwrap(), Decode::Done(r, b.len()));
        }
        assert_eq!(encode_reply(&Reply::Ok { port: Some(1) }), [0, 0, 2, 0, 1]);
        for m in [
            AuthMessage::Hello {
                version: VERSION,
                method: AuthMethod::Hmac,
                name: "alice".into(),
            },
            AuthMessage::Challenge([7; 32]),
            AuthMessage::Proof([9; 32]),
            AuthMessage::Accepted("alice".into()),
            AuthMessage::Refused(RefusalCode::BadCredentials, "wrong secret".into()),
        ] {
            let b = encode_auth(&m).unwrap();
            assert_eq!(decode_auth(&b).unwrap(), Decode::Done(m, b.len()));
        }
        assert_eq!(
            encode_auth(&AuthMessage::Hello {
                version: 1,
                method: AuthMethod::Mtls,
                name: String::new()
            })
            .unwrap(),
            [1, 0, 3, 1, 1, 0]
        );
        assert!(matches!(
            decode_auth(&[1, 0xff, 0xff]),
            Err(ProtoError::TooLong { .. })
        ));
        assert_eq!(decode_auth(&[9, 0, 0]), Err(ProtoError::UnknownMessage(9)));
        assert_eq!(
            decode_auth(&[3, 0, 1, 0]),
            Err(ProtoError::Malformed("proof"))
        );
    }

    proptest! {
        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            fuzz_decoders(&data);
        }

        #[test]
        fn dns_headers_round_trip(name in "[a-z0-9.-]{1,255}", port in any::<u16>()) {
            let route = Route::Tcp(TcpTarget { host: TargetHost::Dns(name), port });
            let b = encode_header(&route).unwrap();
            let len = b.len();
            prop_assert_eq!(decode_header(&b).unwrap(), Decode::Done(route, len));
        }
    }
}
