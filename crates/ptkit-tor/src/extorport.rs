//! Extended ORPort client with SAFE_COOKIE (ext-orport-spec; items X-1..X-7).
//!
//! [`ExtOrHandshake`] is the sans-IO core: it says how many bytes it wants next
//! ([`ExtOrHandshake::want`]), takes exactly those, and returns what to send. The driver
//! ([`ExtOrUpstream`]) therefore never reads past `OKAY`, so no OR-protocol byte is lost.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::hmac;
use ptkit_core::net::DirectDialer;
use ptkit_core::redact::sensitive;
use ptkit_core::{BoxFuture, ClientMeta, Conn, TransportError, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The 32-byte header of tor's cookie file.
pub const COOKIE_HEADER: &[u8; 32] = b"! Extended ORPort Auth Cookie !\n";
const SERVER_LABEL: &[u8] = b"ExtORPort authentication server-to-client hash";
const CLIENT_LABEL: &[u8] = b"ExtORPort authentication client-to-server hash";

/// Command codes.
pub mod cmd {
    /// PT → tor: end of metadata.
    pub const DONE: u16 = 0x0000;
    /// PT → tor: the client's address.
    pub const USERADDR: u16 = 0x0001;
    /// PT → tor: the transport name.
    pub const TRANSPORT: u16 = 0x0002;
    /// tor → PT: go ahead.
    pub const OKAY: u16 = 0x1000;
    /// tor → PT: refused.
    pub const DENY: u16 = 0x1001;
}

/// Time allowed for authentication and metadata (goptlib's 5 s).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Extended ORPort failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExtOrError {
    /// The cookie file is not tor's 64-byte format.
    #[error("bad ExtORPort cookie file: {0}")]
    BadCookie(&'static str),
    /// tor does not offer SAFE_COOKIE.
    #[error("ExtORPort does not offer SAFE_COOKIE authentication")]
    NoSafeCookie,
    /// The server's hash is wrong: not our tor, or a stale cookie.
    #[error("ExtORPort server hash mismatch (wrong cookie or not tor)")]
    ServerHashMismatch,
    /// tor rejected our client hash.
    #[error("ExtORPort authentication rejected by tor")]
    AuthRejected,
    /// tor answered DONE with DENY.
    #[error("ExtORPort connection denied by tor")]
    Denied,
    /// Anything else off-protocol.
    #[error("ExtORPort protocol error: {0}")]
    Protocol(&'static str),
    /// Metadata that cannot be encoded.
    #[error("ExtORPort body too long")]
    TooLong,
    /// Socket or file errors.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Deadline passed.
    #[error("ExtORPort handshake timed out")]
    Timeout,
}

/// The 32-byte secret from tor's cookie file.
#[derive(Clone)]
pub struct Cookie(pub [u8; 32]);

impl std::fmt::Debug for Cookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cookie([secret])")
    }
}

/// Parses the cookie file contents: exactly 64 bytes, header checked in constant time.
pub fn parse_cookie(bytes: &[u8]) -> Result<Cookie, ExtOrError> {
    if bytes.len() != 64 {
        return Err(ExtOrError::BadCookie("not 64 bytes"));
    }
    let diff = bytes[..32]
        .iter()
        .zip(COOKIE_HEADER)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return Err(ExtOrError::BadCookie("wrong header"));
    }
    let mut c = [0u8; 32];
    c.copy_from_slice(&bytes[32..]);
    Ok(Cookie(c))
}

/// Reads the cookie file; called for every connection.
pub async fn read_cookie(path: &Path) -> Result<Cookie, ExtOrError> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut buf = Vec::with_capacity(65);
    // Read at most 65 bytes: enough to tell "longer than 64" without trusting the file size.
    (&mut f).take(65).read_to_end(&mut buf).await?;
    parse_cookie(&buf)
}

fn mac(cookie: &Cookie, label: &[u8], client_nonce: &[u8; 32], server_nonce: &[u8]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &cookie.0);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(label);
    ctx.update(client_nonce);
    ctx.update(server_nonce);
    ctx.sign()
}

/// `HMAC-SHA256(cookie, server label ‖ ClientNonce ‖ ServerNonce)`.
pub fn server_hash(cookie: &Cookie, client_nonce: &[u8; 32], server_nonce: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(mac(cookie, SERVER_LABEL, client_nonce, server_nonce).as_ref());
    out
}

/// `HMAC-SHA256(cookie, client label ‖ ClientNonce ‖ ServerNonce)`.
pub fn client_hash(cookie: &Cookie, client_nonce: &[u8; 32], server_nonce: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(mac(cookie, CLIENT_LABEL, client_nonce, server_nonce).as_ref());
    out
}

/// Encodes one command frame.
pub fn encode_command(command: u16, body: &[u8]) -> Result<Vec<u8>, ExtOrError> {
    let len = u16::try_from(body.len()).map_err(|_| ExtOrError::TooLong)?;
    let mut v = Vec::with_capacity(4 + body.len());
    v.extend_from_slice(&command.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(body);
    Ok(v)
}

/// Decodes one command frame from the front of `buf`: `Ok(None)` when incomplete, else the
/// command, its body and the bytes used.
pub fn decode_command(buf: &[u8]) -> Option<(u16, &[u8], usize)> {
    let head = buf.get(..4)?;
    let command = u16::from_be_bytes([head[0], head[1]]);
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let body = buf.get(4..4 + len)?;
    Some((command, body, 4 + len))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AuthTypes {
        seen_safe_cookie: bool,
        count: usize,
    },
    ServerHash,
    Status,
    ReplyHead,
    ReplyBody {
        command: u16,
    },
    Done,
}

/// The PT side of one ExtORPort handshake.
#[derive(Debug)]
pub struct ExtOrHandshake {
    state: State,
    cookie: Cookie,
    client_nonce: [u8; 32],
    metadata: Vec<u8>,
}

impl ExtOrHandshake {
    /// A handshake that will report `useraddr` (if known) and `transport` (if non-empty).
    /// Returns the handshake; nothing is sent until tor lists its auth types.
    pub fn new(
        cookie: Cookie,
        client_nonce: [u8; 32],
        useraddr: Option<SocketAddr>,
        transport: &str,
    ) -> Result<Self, ExtOrError> {
        let mut metadata = Vec::new();
        if let Some(addr) = useraddr {
            metadata.extend(encode_command(cmd::USERADDR, addr.to_string().as_bytes())?);
        }
        if !transport.is_empty() {
            metadata.extend(encode_command(cmd::TRANSPORT, transport.as_bytes())?);
        }
        metadata.extend(encode_command(cmd::DONE, b"")?);
        Ok(ExtOrHandshake {
            state: State::AuthTypes {
                seen_safe_cookie: false,
                count: 0,
            },
            cookie,
            client_nonce,
            metadata,
        })
    }

    /// Exactly how many bytes to read next (0 once finished).
    pub fn want(&self) -> usize {
        match self.state {
            State::AuthTypes { .. } | State::Status => 1,
            State::ServerHash => 64,
            State::ReplyHead => 4,
            State::ReplyBody { .. } => 0,
            State::Done => 0,
        }
    }

    /// True once tor said OKAY.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes exactly [`Self::want`] bytes and returns bytes to send.
    pub fn input(&mut self, data: &[u8]) -> Result<Vec<u8>, ExtOrError> {
        if data.len() != self.want() {
            return Err(ExtOrError::Protocol(
                "driver passed the wrong number of bytes",
            ));
        }
        match self.state {
            State::AuthTypes {
                seen_safe_cookie,
                count,
            } => {
                let t = data[0];
                if t == 0 {
                    if !seen_safe_cookie {
                        return Err(ExtOrError::NoSafeCookie);
                    }
                    self.state = State::ServerHash;
                    let mut out = vec![1u8];
                    out.extend_from_slice(&self.client_nonce);
                    return Ok(out);
                }
                if count + 1 >= 256 {
                    return Err(ExtOrError::Protocol("auth type list without terminator"));
                }
                self.state = State::AuthTypes {
                    seen_safe_cookie: seen_safe_cookie || t == 1,
                    count: count + 1,
                };
                Ok(Vec::new())
            }
            State::ServerHash => {
                let mut server_nonce = [0u8; 32];
                server_nonce.copy_from_slice(&data[32..]);
                let key = hmac::Key::new(hmac::HMAC_SHA256, &self.cookie.0);
                let mut msg = Vec::with_capacity(SERVER_LABEL.len() + 64);
                msg.extend_from_slice(SERVER_LABEL);
                msg.extend_from_slice(&self.client_nonce);
                msg.extend_from_slice(&server_nonce);
                // Constant-time comparison.
                hmac::verify(&key, &msg, &data[..32])
                    .map_err(|_| ExtOrError::ServerHashMismatch)?;
                self.state = State::Status;
                Ok(client_hash(&self.cookie, &self.client_nonce, &server_nonce).to_vec())
            }
            State::Status => {
                if data[0] != 1 {
                    return Err(ExtOrError::AuthRejected);
                }
                self.state = State::ReplyHead;
                Ok(std::mem::take(&mut self.metadata))
            }
            State::ReplyHead => {
                let command = u16::from_be_bytes([data[0], data[1]]);
                let len = u16::from_be_bytes([data[2], data[3]]);
                if len != 0 {
                    // OKAY and DENY have empty bodies; anything else is a failure (goptlib).
                    return Err(ExtOrError::Protocol("unexpected reply to DONE"));
                }
                self.state = State::ReplyBody { command };
                self.finish_reply()
            }
            State::ReplyBody { .. } | State::Done => {
                Err(ExtOrError::Protocol("handshake already finished"))
            }
        }
    }

    fn finish_reply(&mut self) -> Result<Vec<u8>, ExtOrError> {
        match self.state {
            State::ReplyBody { command: cmd::OKAY } => {
                self.state = State::Done;
                Ok(Vec::new())
            }
            State::ReplyBody { command: cmd::DENY } => Err(ExtOrError::Denied),
            _ => Err(ExtOrError::Protocol("unexpected reply to DONE")),
        }
    }
}

/// Drives an [`ExtOrHandshake`] over `stream`. No payload byte is written before OKAY.
pub async fn handshake<S>(stream: &mut S, mut hs: ExtOrHandshake) -> Result<(), ExtOrError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = [0u8; 64];
    while !hs.is_done() {
        let n = hs.want();
        stream.read_exact(&mut buf[..n]).await?;
        let out = hs.input(&buf[..n])?;
        if !out.is_empty() {
            stream.write_all(&out).await?;
        }
    }
    Ok(())
}

/// Opens an Extended ORPort connection per client (item X-3), or falls back to the plain
/// ORPort (item X-5).
#[derive(Debug, Clone)]
pub struct ExtOrUpstream {
    /// `TOR_PT_EXTENDED_SERVER_PORT`.
    pub addr: SocketAddr,
    /// `TOR_PT_AUTH_COOKIE_FILE`.
    pub cookie_file: PathBuf,
    /// Transport name sent in TRANSPORT.
    pub transport: String,
    /// How to dial tor.
    pub dialer: DirectDialer,
}

impl ExtOrUpstream {
    /// Connects and authenticates, reporting `meta.client_addr` as USERADDR.
    pub async fn connect(&self, meta: &ClientMeta) -> Result<tokio::net::TcpStream, ExtOrError> {
        let run = async {
            let cookie = read_cookie(&self.cookie_file).await?;
            let mut nonce = [0u8; 32];
            aws_lc_rs::rand::fill(&mut nonce).map_err(|_| io::Error::other("no randomness"))?;
            let mut s = self.dialer.connect_addr(self.addr).await?;
            let hs = ExtOrHandshake::new(cookie, nonce, meta.client_addr, &self.transport)?;
            handshake(&mut s, hs).await?;
            Ok::<_, ExtOrError>(s)
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
            .await
            .map_err(|_| ExtOrError::Timeout)?
    }
}

impl Upstream for ExtOrUpstream {
    fn open(&self, meta: &ClientMeta) -> BoxFuture<'static, Result<Conn, TransportError>> {
        let this = self.clone();
        let meta = meta.clone();
        Box::pin(async move {
            match this.connect(&meta).await {
                Ok(s) => {
                    tracing::debug!(
                        "ExtORPort connection for {} accepted",
                        sensitive(meta.client_addr.map(|a| a.to_string()).unwrap_or_default())
                    );
                    Ok(Box::new(s) as Conn)
                }
                Err(ExtOrError::Io(e)) => Err(TransportError::Io(e)),
                Err(e) => Err(TransportError::Protocol(e.to_string())),
            }
        })
    }
}

/// Most metadata commands accepted before `DONE` (a bound on what a client can make us parse).
pub const MAX_SERVER_COMMANDS: usize = 64;

/// What a PT told the ExtORPort about its client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtOrMeta {
    /// From USERADDR (port 0 when the PT sent only an address, which tor accepts).
    pub useraddr: Option<SocketAddr>,
    /// From TRANSPORT.
    pub transport: Option<String>,
}

/// Why the server side refused a PT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtOrServerError {
    /// The PT chose an auth type other than SAFE_COOKIE; close without a reply.
    #[error("client chose unsupported auth type {0}")]
    AuthType(u8),
    /// The client hash is wrong; `00` was sent.
    #[error("client hash mismatch")]
    BadClientHash,
    /// USERADDR is not `ip:port` (or a bare IP), has a NUL, or port 0.
    #[error("malformed USERADDR")]
    BadUserAddr,
    /// TRANSPORT is not a C identifier.
    #[error("malformed TRANSPORT")]
    BadTransport,
    /// More than [`MAX_SERVER_COMMANDS`] commands.
    #[error("too many ExtORPort commands")]
    TooManyCommands,
    /// The driver broke the want/input contract.
    #[error("wrong number of bytes passed")]
    Driver,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    AuthType,
    ClientNonce,
    ClientHash,
    CommandHead,
    CommandBody { command: u16, len: usize },
    Done,
}

/// The tor side of one ExtORPort handshake (item H-10), sans-IO like [`ExtOrHandshake`].
///
/// Send [`ExtOrServer::greeting`] first, then loop on `want`/`input`. After `DONE` it has
/// sent `OKAY`; any bytes the PT pipelined are left unread on the stream, so they become the
/// start of the OR stream (the lenient choice the spec allows; tor itself closes).
#[derive(Debug)]
pub struct ExtOrServer {
    state: ServerState,
    cookie: Cookie,
    server_nonce: [u8; 32],
    client_nonce: [u8; 32],
    commands: usize,
    meta: ExtOrMeta,
}

impl ExtOrServer {
    /// A server with a fresh random `server_nonce`.
    pub fn new(cookie: Cookie, server_nonce: [u8; 32]) -> Self {
        ExtOrServer {
            state: ServerState::AuthType,
            cookie,
            server_nonce,
            client_nonce: [0; 32],
            commands: 0,
            meta: ExtOrMeta::default(),
        }
    }

    /// The auth-type list tor sends first: SAFE_COOKIE only.
    pub fn greeting() -> [u8; 2] {
        [1, 0]
    }

    /// Exactly how many bytes to read next (0 when done).
    pub fn want(&self) -> usize {
        match self.state {
            ServerState::AuthType => 1,
            ServerState::ClientNonce | ServerState::ClientHash => 32,
            ServerState::CommandHead => 4,
            ServerState::CommandBody { len, .. } => len,
            ServerState::Done => 0,
        }
    }

    /// True once `OKAY` was produced.
    pub fn is_done(&self) -> bool {
        self.state == ServerState::Done
    }

    /// The metadata received so far.
    pub fn meta(&self) -> &ExtOrMeta {
        &self.meta
    }

    /// Takes exactly [`Self::want`] bytes; returns bytes to send. After an error, send
    /// [`Self::failure_reply`] and close.
    pub fn input(&mut self, data: &[u8]) -> Result<Vec<u8>, ExtOrServerError> {
        if data.len() != self.want() {
            return Err(ExtOrServerError::Driver);
        }
        match self.state {
            ServerState::AuthType => {
                if data[0] != 1 {
                    return Err(ExtOrServerError::AuthType(data[0]));
                }
                self.state = ServerState::ClientNonce;
                Ok(Vec::new())
            }
            ServerState::ClientNonce => {
                self.client_nonce.copy_from_slice(data);
                self.state = ServerState::ClientHash;
                let mut out =
                    server_hash(&self.cookie, &self.client_nonce, &self.server_nonce).to_vec();
                out.extend_from_slice(&self.server_nonce);
                Ok(out)
            }
            ServerState::ClientHash => {
                let key = hmac::Key::new(hmac::HMAC_SHA256, &self.cookie.0);
                let mut msg = Vec::with_capacity(CLIENT_LABEL.len() + 64);
                msg.extend_from_slice(CLIENT_LABEL);
                msg.extend_from_slice(&self.client_nonce);
                msg.extend_from_slice(&self.server_nonce);
                // Constant-time comparison.
                hmac::verify(&key, &msg, data).map_err(|_| ExtOrServerError::BadClientHash)?;
                self.state = ServerState::CommandHead;
                Ok(vec![1])
            }
            ServerState::CommandHead => {
                let command = u16::from_be_bytes([data[0], data[1]]);
                let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
                self.state = ServerState::CommandBody { command, len };
                if len == 0 {
                    self.command(command, &[])
                } else {
                    Ok(Vec::new())
                }
            }
            ServerState::CommandBody { command, .. } => self.command(command, data),
            ServerState::Done => Err(ExtOrServerError::Driver),
        }
    }

    /// Bytes to send before closing after `err` (tor sends `00` for a bad client hash).
    pub fn failure_reply(err: &ExtOrServerError) -> &'static [u8] {
        match err {
            ExtOrServerError::BadClientHash => &[0],
            _ => &[],
        }
    }

    fn command(&mut self, command: u16, body: &[u8]) -> Result<Vec<u8>, ExtOrServerError> {
        self.commands += 1;
        if self.commands > MAX_SERVER_COMMANDS {
            return Err(ExtOrServerError::TooManyCommands);
        }
        self.state = ServerState::CommandHead;
        match command {
            cmd::DONE => {
                self.state = ServerState::Done;
                Ok(encode_command(cmd::OKAY, b"").unwrap_or_default())
            }
            cmd::USERADDR => {
                if body.contains(&0) {
                    return Err(ExtOrServerError::BadUserAddr);
                }
                let text = std::str::from_utf8(body).map_err(|_| ExtOrServerError::BadUserAddr)?;
                let addr = match text.parse::<SocketAddr>() {
                    Ok(a) if a.port() == 0 => return Err(ExtOrServerError::BadUserAddr),
                    Ok(a) => a,
                    // tor accepts a bare address (with a warning about the empty port).
                    Err(_) => {
                        SocketAddr::new(text.parse().map_err(|_| ExtOrServerError::BadUserAddr)?, 0)
                    }
                };
                self.meta.useraddr = Some(addr);
                Ok(Vec::new())
            }
            cmd::TRANSPORT => {
                let name = std::str::from_utf8(body).map_err(|_| ExtOrServerError::BadTransport)?;
                if !crate::lines::is_transport_name(name) {
                    return Err(ExtOrServerError::BadTransport);
                }
                self.meta.transport = Some(name.to_owned());
                Ok(Vec::new())
            }
            // Unknown commands are ignored [spec].
            _ => Ok(Vec::new()),
        }
    }
}

/// Serves one ExtORPort connection as tor would: authenticates with `cookie`, reads the
/// metadata and answers `OKAY`. The stream then carries the PT client's bytes.
pub async fn accept<S>(stream: &mut S, cookie: Cookie) -> Result<ExtOrMeta, ExtOrError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut nonce = [0u8; 32];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| io::Error::other("no randomness"))?;
    let mut server = ExtOrServer::new(cookie, nonce);
    let run = async {
        stream.write_all(&ExtOrServer::greeting()).await?;
        let mut buf = vec![0u8; 64];
        while !server.is_done() {
            let n = server.want();
            if buf.len() < n {
                buf.resize(n, 0);
            }
            stream.read_exact(&mut buf[..n]).await?;
            match server.input(&buf[..n]) {
                Ok(out) if !out.is_empty() => stream.write_all(&out).await?,
                Ok(_) => {}
                Err(e) => {
                    let reply = ExtOrServer::failure_reply(&e);
                    if !reply.is_empty() {
                        let _ = stream.write_all(reply).await;
                    }
                    return Err(ExtOrError::Protocol(match e {
                        ExtOrServerError::AuthType(_) => "unsupported auth type",
                        ExtOrServerError::BadClientHash => "client hash mismatch",
                        ExtOrServerError::BadUserAddr => "malformed USERADDR",
                        ExtOrServerError::BadTransport => "malformed TRANSPORT",
                        ExtOrServerError::TooManyCommands => "too many commands",
                        ExtOrServerError::Driver => "internal driver error",
                    }));
                }
            }
        }
        Ok::<_, ExtOrError>(())
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| ExtOrError::Timeout)??;
    Ok(server.meta().clone())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hex_literal::hex;
    use ptkit_core::reader::Reader;

    fn cookie(b: [u8; 32]) -> Cookie {
        Cookie(b)
    }

    #[test]
    fn x1_cookie_file_vectors() {
        let mut good = COOKIE_HEADER.to_vec();
        good.extend(b"0123456789ABCDEF0123456789ABCDEF");
        assert_eq!(
            &parse_cookie(&good).unwrap().0,
            b"0123456789ABCDEF0123456789ABCDEF"
        );
        let mut impostor = b"! Impostor ORPort Auth Cookie !\n".to_vec();
        impostor.extend([0u8; 32]);
        for bad in [
            &b""[..],
            &impostor,
            &good[..63],
            &[good.clone(), vec![0]].concat(),
        ] {
            assert!(parse_cookie(bad).is_err());
        }
    }

    #[test]
    fn hash_vectors_7_9() {
        let z = cookie([0; 32]);
        assert_eq!(
            server_hash(&z, &[0; 32], &[0; 32]),
            hex!("9e221919982a84f75faf60ef926949796268c97833e06960ff265369a90fd6d8")
        );
        assert_eq!(
            client_hash(&z, &[0; 32], &[0; 32]),
            hex!("0f368b1bee24aabc54a9114ce06c070f3ed99d0d368f599ccc6dfdc8bf457a62")
        );
        let c = cookie(*b"Gliding wrapt in a brown mantle,");
        let cn = *b"But when I look ahead up the whi";
        let sn = *b"te road There is always another ";
        assert_eq!(
            server_hash(&c, &cn, &sn),
            hex!("ec80ed6e546d3b36fdfc22fe1315416b029f1ade7610d910878b62eeb7403821")
        );
        assert_eq!(
            client_hash(&c, &cn, &sn),
            hex!("ab391732dd2ed968cd40c087d1b1f25b33b3cd77ff79bd80c2074bbf438119a2")
        );
        let mut seq = [0u8; 32];
        seq.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        let cn: [u8; 32] = std::array::from_fn(|i| 0x20 + i as u8);
        let sn: [u8; 32] = std::array::from_fn(|i| 0x40 + i as u8);
        assert_eq!(
            server_hash(&cookie(seq), &cn, &sn),
            hex!("67cb22838690cf4c49434d4ea3164fbdcc936e46fd90ee62f511639a8456d133")
        );
        assert_eq!(
            client_hash(&cookie(seq), &cn, &sn),
            hex!("4becde5c2fe8a9fed908d74f79be128d73abfbf82c009d3bdc17b4bc02740d58")
        );
    }

    #[test]
    fn framing_vectors_7_9() {
        assert_eq!(encode_command(0, b"").unwrap(), hex!("00000000"));
        assert_eq!(encode_command(0xffff, b"").unwrap(), hex!("ffff0000"));
        assert_eq!(
            encode_command(0x1234, b"hello").unwrap(),
            hex!("12340005 68656c6c6f")
        );
        assert_eq!(
            encode_command(0x1234, &[0; 65535]).unwrap().len(),
            4 + 65535
        );
        assert!(encode_command(0x1234, &[0; 65536]).is_err());
        for short in [
            &b""[..],
            &hex!("12"),
            &hex!("1234"),
            &hex!("123400"),
            &hex!("12340001"),
        ] {
            assert!(decode_command(short).is_none());
        }
        assert_eq!(
            decode_command(&hex!("12340000")),
            Some((0x1234, &b""[..], 4))
        );
        assert_eq!(
            decode_command(b"\x12\x34\x00\x04bodymore"),
            Some((0x1234, &b"body"[..], 8))
        );
    }

    /// The tor unit-test transcript, driven through the sans-IO core byte by byte.
    #[test]
    fn x3_tor_transcript() {
        let c = cookie(*b"Gliding wrapt in a brown mantle,");
        let cn = *b"But when I look ahead up the whi";
        let useraddr: SocketAddr = "1.2.3.4:5678".parse().unwrap();
        let mut hs = ExtOrHandshake::new(c, cn, Some(useraddr), "rfc1149").unwrap();
        assert_eq!(hs.input(&[1]).unwrap(), b"");
        let out = hs.input(&[0]).unwrap();
        assert_eq!(out[0], 1);
        assert_eq!(&out[1..], &cn);
        let server = hex!(
            "ec80ed6e546d3b36fdfc22fe1315416b029f1ade7610d910878b62eeb7403821"
            "746520726f616420546865726520697320616c7761797320616e6f7468657220"
        );
        assert_eq!(
            hs.input(&server).unwrap(),
            hex!("ab391732dd2ed968cd40c087d1b1f25b33b3cd77ff79bd80c2074bbf438119a2")
        );
        assert_eq!(
            hs.input(&[1]).unwrap(),
            hex!("0001 000c 312e322e332e343a35363738 0002 0007 72666331313439 0000 0000")
        );
        assert!(!hs.is_done());
        assert_eq!(hs.want(), 4);
        hs.input(&hex!("1000 0000")).unwrap();
        assert!(hs.is_done());
    }

    #[test]
    fn x3_failures() {
        let c = cookie([7; 32]);
        let mut hs = ExtOrHandshake::new(c.clone(), [0; 32], None, "plain").unwrap();
        hs.input(&[2]).unwrap();
        assert!(matches!(hs.input(&[0]), Err(ExtOrError::NoSafeCookie)));
        let mut hs = ExtOrHandshake::new(c.clone(), [0; 32], None, "plain").unwrap();
        hs.input(&[1]).unwrap();
        hs.input(&[0]).unwrap();
        assert!(matches!(
            hs.input(&[0u8; 64]),
            Err(ExtOrError::ServerHashMismatch)
        ));
        let ok_server = [server_hash(&c, &[0; 32], &[9; 32]), [9; 32]].concat();
        let mut hs = ExtOrHandshake::new(c.clone(), [0; 32], None, "").unwrap();
        hs.input(&[1]).unwrap();
        hs.input(&[0]).unwrap();
        hs.input(&ok_server).unwrap();
        assert!(matches!(hs.input(&[0]), Err(ExtOrError::AuthRejected)));
        let mut hs = ExtOrHandshake::new(c.clone(), [0; 32], None, "").unwrap();
        hs.input(&[1]).unwrap();
        hs.input(&[0]).unwrap();
        hs.input(&ok_server).unwrap();
        // Metadata: only DONE when nothing is known.
        assert_eq!(hs.input(&[1]).unwrap(), hex!("00000000"));
        assert!(matches!(
            hs.input(&hex!("1001 0000")),
            Err(ExtOrError::Denied)
        ));
        let mut endless = ExtOrHandshake::new(c, [0; 32], None, "").unwrap();
        let mut failed = false;
        for _ in 0..300 {
            if endless.input(&[5]).is_err() {
                failed = true;
                break;
            }
        }
        assert!(
            failed,
            "an auth-type list without terminator must be bounded"
        );
    }

    /// H-10: our server against our client, and the tor transcript's negatives.
    #[test]
    fn h10_server_accepts_our_client_and_rejects_bad_input() {
        let c = cookie(*b"Gliding wrapt in a brown mantle,");
        let cn = *b"But when I look ahead up the whi";
        let sn = *b"te road There is always another ";
        let mut server = ExtOrServer::new(c.clone(), sn);
        let mut client = ExtOrHandshake::new(
            c.clone(),
            cn,
            Some("1.2.3.4:5678".parse().unwrap()),
            "rfc1149",
        )
        .unwrap();
        let mut to_client: Vec<u8> = ExtOrServer::greeting().to_vec();
        let mut to_server: Vec<u8> = Vec::new();
        for _ in 0..100 {
            while client.want() > 0 && to_client.len() >= client.want() {
                let n = client.want();
                let chunk: Vec<u8> = to_client.drain(..n).collect();
                to_server.extend(client.input(&chunk).unwrap());
            }
            while server.want() > 0 && to_server.len() >= server.want() {
                let n = server.want();
                let chunk: Vec<u8> = to_server.drain(..n).collect();
                to_client.extend(server.input(&chunk).unwrap());
            }
            if client.is_done() && server.is_done() {
                break;
            }
        }
        assert!(client.is_done() && server.is_done());
        assert_eq!(
            server.meta().useraddr,
            Some("1.2.3.4:5678".parse().unwrap())
        );
        assert_eq!(server.meta().transport.as_deref(), Some("rfc1149"));

        let authed = |extra: &[u8]| {
            let mut s = ExtOrServer::new(c.clone(), sn);
            s.input(&[1]).unwrap();
            s.input(&cn).unwrap();
            s.input(&client_hash(&c, &cn, &sn)).unwrap();
            let mut r = Reader::new(extra);
            loop {
                let n = s.want();
                if n == 0 {
                    return Ok(s.meta().clone());
                }
                let Ok(chunk) = r.take(n) else {
                    return Ok(s.meta().clone());
                };
                s.input(chunk)?;
            }
        };
        assert!(matches!(
            ExtOrServer::new(c.clone(), sn).input(&[0x99]),
            Err(ExtOrServerError::AuthType(0x99))
        ));
        let mut s = ExtOrServer::new(c.clone(), sn);
        s.input(&[1]).unwrap();
        s.input(&cn).unwrap();
        let e = s.input(b"not with a bang but a whimper...").unwrap_err();
        assert_eq!(ExtOrServer::failure_reply(&e), [0]);
        assert_eq!(
            authed(&hex!("0001 000d 312e322e332e343a35363738 00")),
            Err(ExtOrServerError::BadUserAddr)
        );
        assert_eq!(
            authed(&hex!("0002 0008 72666331313439 00")),
            Err(ExtOrServerError::BadTransport)
        );
        assert_eq!(
            authed(b"\x00\x02\x00\x07rf*1149"),
            Err(ExtOrServerError::BadTransport)
        );
        assert_eq!(
            authed(b"\x00\x01\x00\x0eexample.com:80"),
            Err(ExtOrServerError::BadUserAddr)
        );
        assert_eq!(
            authed(b"\x00\x01\x00\x091.2.3.4:0"),
            Err(ExtOrServerError::BadUserAddr)
        );
        let bare = authed(b"\x00\x01\x00\x071.2.3.4\x00\x00\x00\x00").unwrap();
        assert_eq!(bare.useraddr, Some("1.2.3.4:0".parse().unwrap()));
        let unknown = authed(&hex!("fff0 0003 414243 0000 0000")).unwrap();
        assert_eq!(unknown, ExtOrMeta::default());
        let many: Vec<u8> = std::iter::repeat_n(hex!("fff0 0000"), MAX_SERVER_COMMANDS + 1)
            .flatten()
            .collect();
        assert_eq!(authed(&many), Err(ExtOrServerError::TooManyCommands));
    }
}
