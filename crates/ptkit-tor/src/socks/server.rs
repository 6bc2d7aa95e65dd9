//! The SOCKS server handshake, sans-IO (arti's `Action { drain, reply, finished }` shape).
//!
//! Feed everything received so far to [`Handshake::step`]; it says how many bytes it used,
//! what to send back, and when the request is complete. It never reads past a message, never
//! allocates more than the limits allow, and every failure comes with the reply to send.
//!
//! # Extra SOCKS5 methods
//!
//! [`Handshake::new`] offers PT 1.0's methods: `0x02` (username/password carrying the
//! arguments) and `0x00`. [`Handshake::with_methods`] takes a [`MethodSet`] that may also
//! offer other methods, each run by a [`SubNegotiation`] after the method selection (PT 2.x
//! per-connection settings `0x09` and `0x80` live in `ptkit-ipc`, which implements the trait;
//! this crate does not depend on it). Selection order: the extra methods in the order they
//! were added, then `0x02`, then `0x00` (PT 2.x: `0x09` > `0x80` > `0x02` > `0x00`).
//!
//! Pipelining (item S-5) stays strict for the greeting and for PT 1.0 messages: the client
//! must wait for each reply. A sub-negotiation that completes *without* a reply (PT 2.x
//! settings have no auth-status message) lets the client send its CONNECT at once, so the
//! bytes after it are parsed as the request in the same step; the ordinary rule then applies
//! to the CONNECT itself.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ptkit_core::reader::{Reader, UnexpectedEnd};
use ptkit_core::{Args, Host, Target};

use super::Reply;

/// Longest SOCKS4 userid or host name accepted (tor sends ≤ 510 bytes of args).
pub const MAX_SOCKS4_FIELD: usize = 2048;

/// The SOCKS version the client spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// SOCKS4 or SOCKS4a.
    V4,
    /// SOCKS5.
    V5,
}

/// A complete CONNECT request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Protocol version used.
    pub version: Version,
    /// Where to connect.
    pub target: Target,
    /// Per-connection transport arguments.
    pub args: Args,
}

/// What to do after a step.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Action {
    /// Bytes of input consumed.
    pub drain: usize,
    /// Bytes to send to the client.
    pub reply: Vec<u8>,
    /// The request, once complete. The caller then dials and sends [`reply`].
    pub finished: Option<Request>,
}

/// Why the handshake failed; `reply` (possibly empty) should be sent before closing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct HandshakeError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Bytes to send before closing.
    pub reply: Vec<u8>,
}

/// Categories of SOCKS failures (also metrics labels via [`ErrorKind::label`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Not SOCKS at all (wrong version byte); probably another protocol on our port.
    #[error("not a SOCKS4 or SOCKS5 client (first byte {0:#04x})")]
    NotSocks(u8),
    /// No authentication method we support was offered.
    #[error("no acceptable SOCKS5 authentication method offered")]
    NoAcceptableMethod,
    /// Malformed username/password subnegotiation.
    #[error("malformed SOCKS5 username/password message")]
    BadAuth,
    /// The arguments in the credentials do not parse.
    #[error("bad transport arguments: {0}")]
    BadArgs(String),
    /// A command other than CONNECT.
    #[error("SOCKS command {0} not supported (only CONNECT)")]
    CommandNotSupported(u8),
    /// Unknown address type.
    #[error("SOCKS address type {0} not supported")]
    AddressType(u8),
    /// Malformed request fields.
    #[error("malformed SOCKS request: {0}")]
    Malformed(&'static str),
    /// The client sent more before our reply (item S-5).
    #[error("client sent data before the SOCKS reply")]
    Pipelined,
    /// A field longer than the limits.
    #[error("SOCKS field too long")]
    TooLong,
    /// The connection ended mid-handshake.
    #[error("connection closed during the SOCKS handshake")]
    Eof,
    /// A [`SubNegotiation`] (extra SOCKS5 method) refused the client.
    #[error("SOCKS method sub-negotiation failed: {message}")]
    SubNegotiation {
        /// Stable metrics label, returned by [`ErrorKind::label`].
        label: &'static str,
        /// Human-readable reason.
        message: String,
    },
}

impl ErrorKind {
    /// Stable metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            ErrorKind::NotSocks(_) => "socks_not_socks",
            ErrorKind::NoAcceptableMethod => "socks_no_method",
            ErrorKind::BadAuth => "socks_bad_auth",
            ErrorKind::BadArgs(_) => "socks_bad_args",
            ErrorKind::CommandNotSupported(_) => "socks_command",
            ErrorKind::AddressType(_) => "socks_address_type",
            ErrorKind::Malformed(_) => "socks_malformed",
            ErrorKind::Pipelined => "socks_pipelined",
            ErrorKind::TooLong => "socks_too_long",
            ErrorKind::Eof => "socks_eof",
            ErrorKind::SubNegotiation { label, .. } => label,
        }
    }
}

/// The outcome of one [`SubNegotiation::step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubStep {
    /// More bytes are needed. `drain` bytes of the input were consumed (the sub-negotiation
    /// keeps what it needs of them); they are not passed again.
    Need {
        /// Bytes of input consumed.
        drain: usize,
    },
    /// The sub-negotiation is complete: `drain` bytes were consumed, `reply` (possibly
    /// empty) goes to the client, and `args` become the request's arguments. Bytes after
    /// `drain` are never consumed; they belong to the CONNECT request. With an empty
    /// `reply` the client may send its CONNECT without waiting; with a non-empty one it must
    /// wait for it (bytes past `drain` are then a pipelining error).
    Done {
        /// Bytes of input consumed.
        drain: usize,
        /// Bytes to send to the client.
        reply: Vec<u8>,
        /// The per-connection arguments carried by the method.
        args: Args,
    },
    /// The client is refused: send `reply` (possibly empty) and close.
    Failed {
        /// Bytes to send before closing.
        reply: Vec<u8>,
        /// Why (usually [`ErrorKind::SubNegotiation`]).
        kind: ErrorKind,
    },
}

/// The exchange that follows the server's selection of an extra SOCKS5 method, sans-IO.
///
/// It receives only bytes after the method selection reply, and only bytes it has not
/// consumed before; it must never consume bytes past its own messages.
pub trait SubNegotiation: Send {
    /// Consumes the next bytes of `input` (possibly empty).
    fn step(&mut self, input: &[u8]) -> SubStep;

    /// The reply to send when the driver's handshake timeout fires during this
    /// sub-negotiation (empty: close without a reply).
    fn timed_out(&mut self) -> Vec<u8> {
        Vec::new()
    }
}

/// Builds a fresh [`SubNegotiation`] for each connection that selects the method.
pub type SubFactory = Arc<dyn Fn() -> Box<dyn SubNegotiation> + Send + Sync>;

/// The SOCKS5 methods a [`Handshake`] accepts, in preference order: the extra methods in the
/// order they were added, then `0x02` username/password, then `0x00` no authentication.
///
/// SOCKS4 is unaffected. An extra method registered as `0x00` or `0x02` takes the place of
/// the built-in one (it is checked first); `0xff` is never selected.
#[derive(Clone)]
pub struct MethodSet {
    no_auth: bool,
    username_password: bool,
    extra: Vec<(u8, SubFactory)>,
}

impl fmt::Debug for MethodSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let extra: Vec<String> = self
            .extra
            .iter()
            .map(|(m, _)| format!("{m:#04x}"))
            .collect();
        f.debug_struct("MethodSet")
            .field("no_auth", &self.no_auth)
            .field("username_password", &self.username_password)
            .field("extra", &extra)
            .finish()
    }
}

impl Default for MethodSet {
    fn default() -> Self {
        Self::pt1()
    }
}

impl MethodSet {
    /// PT 1.0: `0x02` then `0x00`, no extra methods (what [`Handshake::new`] uses).
    pub fn pt1() -> Self {
        MethodSet {
            no_auth: true,
            username_password: true,
            extra: Vec::new(),
        }
    }

    /// No method at all (every SOCKS5 greeting gets `05 ff`); add some with the builders.
    pub fn empty() -> Self {
        MethodSet {
            no_auth: false,
            username_password: false,
            extra: Vec::new(),
        }
    }

    /// Accepts `0x00` (no arguments) or not.
    pub fn no_auth(mut self, allowed: bool) -> Self {
        self.no_auth = allowed;
        self
    }

    /// Accepts `0x02` (RFC 1929 carrying PT 1.0 arguments) or not.
    pub fn username_password(mut self, allowed: bool) -> Self {
        self.username_password = allowed;
        self
    }

    /// Adds an extra method, preferred over the ones added later and over `0x02`/`0x00`.
    /// Adding a method twice keeps the first registration. `0xff` is ignored.
    pub fn with_method<F>(mut self, method: u8, factory: F) -> Self
    where
        F: Fn() -> Box<dyn SubNegotiation> + Send + Sync + 'static,
    {
        if method != 0xff && !self.extra.iter().any(|(m, _)| *m == method) {
            self.extra.push((method, Arc::new(factory)));
        }
        self
    }

    /// The methods accepted, in preference order.
    pub fn methods(&self) -> Vec<u8> {
        let mut out: Vec<u8> = self.extra.iter().map(|(m, _)| *m).collect();
        for (allowed, m) in [(self.username_password, 2u8), (self.no_auth, 0u8)] {
            if allowed && !out.contains(&m) {
                out.push(m);
            }
        }
        out
    }

    fn select(&self, offered: &[u8]) -> Option<Selected> {
        if let Some((m, f)) = self.extra.iter().find(|(m, _)| offered.contains(m)) {
            return Some(Selected::Extra(*m, f.clone()));
        }
        if self.username_password && offered.contains(&2) {
            return Some(Selected::UsernamePassword);
        }
        if self.no_auth && offered.contains(&0) {
            return Some(Selected::NoAuth);
        }
        None
    }
}

enum Selected {
    Extra(u8, SubFactory),
    UsernamePassword,
    NoAuth,
}

struct SubBox(Box<dyn SubNegotiation>);

impl fmt::Debug for SubBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubNegotiation")
    }
}

#[derive(Debug)]
enum State {
    Start,
    Auth,
    Sub(SubBox),
    Request { args: Args },
    Done,
}

/// The server side of one SOCKS handshake.
#[derive(Debug)]
pub struct Handshake {
    state: State,
    methods: MethodSet,
}

impl Default for Handshake {
    fn default() -> Self {
        Self::new()
    }
}

/// The SOCKS5 reply with BND = 0.0.0.0:0 (item S-6).
pub fn reply_v5(code: Reply) -> Vec<u8> {
    vec![5, code as u8, 0, 1, 0, 0, 0, 0, 0, 0]
}

/// The SOCKS4 reply: granted with the request's address, or rejected with zeros (§7.8).
pub fn reply_v4(granted: bool, target: &Target) -> Vec<u8> {
    let port = target.port.to_be_bytes();
    match (&target.host, granted) {
        (Host::Ip(IpAddr::V4(ip)), true) => {
            let o = ip.octets();
            vec![0, 0x5a, port[0], port[1], o[0], o[1], o[2], o[3]]
        }
        (_, true) => vec![0, 0x5a, port[0], port[1], 0, 0, 0, 0],
        (_, false) => vec![0, 0x5b, port[0], port[1], 0, 0, 0, 0],
    }
}

/// The reply to send once the outgoing connection succeeded or failed.
pub fn reply_for(request: &Request, code: Reply) -> Vec<u8> {
    match request.version {
        Version::V5 => reply_v5(code),
        Version::V4 => reply_v4(code == Reply::Succeeded, &request.target),
    }
}

fn fail(kind: ErrorKind, reply: Vec<u8>) -> HandshakeError {
    HandshakeError { kind, reply }
}

impl Handshake {
    /// A handshake waiting for the client's first byte.
    pub fn new() -> Self {
        Self::with_methods(MethodSet::pt1())
    }

    /// A handshake accepting the SOCKS5 `methods` (SOCKS4 is always accepted).
    pub fn with_methods(methods: MethodSet) -> Self {
        Handshake {
            state: State::Start,
            methods,
        }
    }

    /// True once a request was returned.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The reply to send when the driver's handshake timeout fires (empty: none). During a
    /// sub-negotiation this is its timeout reply (PT 2.x settings: `05 11 …`).
    pub fn timed_out(&mut self) -> Vec<u8> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Sub(mut sub) => sub.0.timed_out(),
            _ => Vec::new(),
        }
    }

    /// Consumes the next message from `input` if it is complete.
    ///
    /// `Ok` with `drain == 0` means "need more bytes". After `finished` is returned, any bytes
    /// left in `input` are a pipelining error the caller must report (item S-5).
    pub fn step(&mut self, input: &[u8]) -> Result<Action, HandshakeError> {
        let mut r = Reader::new(input);
        let result = match std::mem::replace(&mut self.state, State::Done) {
            State::Start => self.start(&mut r),
            State::Auth => self.auth(&mut r),
            State::Sub(sub) => return self.sub(sub, input),
            State::Request { args } => self.request(&mut r, args),
            State::Done => {
                return Err(fail(
                    ErrorKind::Malformed("handshake already finished"),
                    Vec::new(),
                ));
            }
        };
        match result {
            Ok(Some((reply, finished))) => {
                let drain = r.consumed();
                if drain < input.len() {
                    // Tor and Arti wait for every reply; anything else is not a PT client.
                    let reply = match &finished {
                        Some(req) => reply_for(req, Reply::GeneralFailure),
                        None => Vec::new(),
                    };
                    return Err(fail(ErrorKind::Pipelined, reply));
                }
                Ok(Action {
                    drain,
                    reply,
                    finished,
                })
            }
            Ok(None) => Ok(Action::default()),
            Err(e) => Err(e),
        }
    }

    fn sub(&mut self, mut sub: SubBox, input: &[u8]) -> Result<Action, HandshakeError> {
        match sub.0.step(input) {
            SubStep::Need { drain } => {
                self.state = State::Sub(sub);
                Ok(Action {
                    drain: drain.min(input.len()),
                    ..Action::default()
                })
            }
            SubStep::Done { drain, reply, args } => {
                let drain = drain.min(input.len());
                self.state = State::Request { args };
                if !reply.is_empty() {
                    if drain < input.len() {
                        return Err(fail(ErrorKind::Pipelined, Vec::new()));
                    }
                    return Ok(Action {
                        drain,
                        reply,
                        finished: None,
                    });
                }
                // No reply to wait for: the CONNECT may already follow.
                let mut action = self.step(&input[drain..])?;
                action.drain += drain;
                Ok(action)
            }
            SubStep::Failed { reply, kind } => Err(fail(kind, reply)),
        }
    }

    fn need_more<T>(&mut self, state: State) -> Result<Option<T>, HandshakeError> {
        self.state = state;
        Ok(None)
    }

    #[allow(clippy::type_complexity)]
    fn start(
        &mut self,
        r: &mut Reader<'_>,
    ) -> Result<Option<(Vec<u8>, Option<Request>)>, HandshakeError> {
        let Ok(version) = r.u8() else {
            return self.need_more(State::Start);
        };
        match version {
            5 => {
                let methods = match r.u8().and_then(|n| r.take(usize::from(n))) {
                    Ok(m) => m,
                    Err(UnexpectedEnd) => return self.need_more(State::Start),
                };
                // Item S-2: prefer username/password (it carries the arguments); extra
                // methods come first (see `MethodSet`).
                match self.methods.select(methods) {
                    Some(Selected::Extra(m, factory)) => {
                        self.state = State::Sub(SubBox(factory()));
                        Ok(Some((vec![5, m], None)))
                    }
                    Some(Selected::UsernamePassword) => {
                        self.state = State::Auth;
                        Ok(Some((vec![5, 2], None)))
                    }
                    Some(Selected::NoAuth) => {
                        self.state = State::Request { args: Args::new() };
                        Ok(Some((vec![5, 0], None)))
                    }
                    None => Err(fail(ErrorKind::NoAcceptableMethod, vec![5, 0xff])),
                }
            }
            4 => self.socks4(r),
            other => Err(fail(ErrorKind::NotSocks(other), Vec::new())),
        }
    }

    #[allow(clippy::type_complexity)]
    fn auth(
        &mut self,
        r: &mut Reader<'_>,
    ) -> Result<Option<(Vec<u8>, Option<Request>)>, HandshakeError> {
        let parsed = (|| {
            let ver = r.u8()?;
            let ulen = r.u8()?;
            let user = r.take(usize::from(ulen))?;
            let plen = r.u8()?;
            let pass = r.take(usize::from(plen))?;
            Ok::<_, UnexpectedEnd>((ver, user, pass))
        })();
        let Ok((ver, user, pass)) = parsed else {
            return self.need_more(State::Auth);
        };
        let refuse = |kind| Err(fail(kind, vec![1, 1]));
        if ver != 1 || user.is_empty() || pass.is_empty() {
            return refuse(ErrorKind::BadAuth);
        }
        // Item S-3: args = UNAME ‖ PASSWD, but a lone NUL password is tor's "no password".
        let mut joined = user.to_vec();
        if pass != [0] {
            joined.extend_from_slice(pass);
        }
        match Args::parse_client(&joined) {
            Ok(args) => {
                self.state = State::Request { args };
                Ok(Some((vec![1, 0], None)))
            }
            Err(e) => refuse(ErrorKind::BadArgs(e.to_string())),
        }
    }

    #[allow(clippy::type_complexity)]
    fn request(
        &mut self,
        r: &mut Reader<'_>,
        args: Args,
    ) -> Result<Option<(Vec<u8>, Option<Request>)>, HandshakeError> {
        let parsed = (|| {
            let head = r.take(4)?;
            let (ver, cmd, rsv, atyp) = (head[0], head[1], head[2], head[3]);
            let host = match atyp {
                1 => {
                    let b = r.take(4)?;
                    Some(Host::Ip(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))))
                }
                4 => {
                    let b = r.take(16)?;
                    let mut o = [0u8; 16];
                    o.copy_from_slice(b);
                    Some(Host::Ip(IpAddr::V6(Ipv6Addr::from(o))))
                }
                3 => {
                    let len = r.u8()?;
                    let name = r.take(usize::from(len))?;
                    // Invalid UTF-8 becomes an empty name, refused below like an empty one:
                    // nothing could resolve it, and a lossy copy could exceed 255 bytes.
                    Some(Host::Name(
                        std::str::from_utf8(name)
                            .map(str::to_owned)
                            .unwrap_or_default(),
                    ))
                }
                _ => None,
            };
            let port = if host.is_some() { r.u16_be()? } else { 0 };
            Ok::<_, UnexpectedEnd>((ver, cmd, rsv, atyp, host, port))
        })();
        let (ver, cmd, rsv, atyp, host, port) = match parsed {
            Ok(p) => p,
            Err(UnexpectedEnd) => return self.need_more(State::Request { args }),
        };
        if ver != 5 || rsv != 0 {
            return Err(fail(
                ErrorKind::Malformed("bad version or reserved byte"),
                reply_v5(Reply::GeneralFailure),
            ));
        }
        if cmd != 1 {
            return Err(fail(
                ErrorKind::CommandNotSupported(cmd),
                reply_v5(Reply::CommandNotSupported),
            ));
        }
        let Some(host) = host else {
            return Err(fail(
                ErrorKind::AddressType(atyp),
                reply_v5(Reply::AddressTypeNotSupported),
            ));
        };
        if matches!(&host, Host::Name(n) if n.is_empty()) {
            return Err(fail(
                ErrorKind::Malformed("empty or non-UTF-8 domain name"),
                reply_v5(Reply::GeneralFailure),
            ));
        }
        Ok(Some((
            Vec::new(),
            Some(Request {
                version: Version::V5,
                target: Target { host, port },
                args,
            }),
        )))
    }

    #[allow(clippy::type_complexity)]
    fn socks4(
        &mut self,
        r: &mut Reader<'_>,
    ) -> Result<Option<(Vec<u8>, Option<Request>)>, HandshakeError> {
        let Ok(head) = r.take(7) else {
            return self.need_more(State::Start);
        };
        let (cmd, port, ip) = (
            head[0],
            u16::from_be_bytes([head[1], head[2]]),
            [head[3], head[4], head[5], head[6]],
        );
        let reject = |kind| Err(fail(kind, vec![0, 0x5b, head[1], head[2], 0, 0, 0, 0]));
        if cmd != 1 {
            return reject(ErrorKind::CommandNotSupported(cmd));
        }
        let Ok(userid) = r.until(0) else {
            if r.rest().len() > MAX_SOCKS4_FIELD {
                return reject(ErrorKind::TooLong);
            }
            return self.need_more(State::Start);
        };
        if userid.len() > MAX_SOCKS4_FIELD {
            return reject(ErrorKind::TooLong);
        }
        let host = if ip[0..3] == [0, 0, 0] && ip[3] != 0 {
            // SOCKS4a: a host name follows.
            let Ok(name) = r.until(0) else {
                if r.rest().len() > MAX_SOCKS4_FIELD {
                    return reject(ErrorKind::TooLong);
                }
                return self.need_more(State::Start);
            };
            if name.len() > ptkit_core::target::MAX_HOST_LEN {
                return reject(ErrorKind::TooLong);
            }
            let Ok(name) = std::str::from_utf8(name) else {
                return reject(ErrorKind::Malformed("host name is not UTF-8"));
            };
            Host::Name(name.to_owned())
        } else {
            Host::Ip(IpAddr::V4(Ipv4Addr::from(ip)))
        };
        let args = match Args::parse_client(userid) {
            Ok(a) => a,
            Err(e) => return reject(ErrorKind::BadArgs(e.to_string())),
        };
        Ok(Some((
            Vec::new(),
            Some(Request {
                version: Version::V4,
                target: Target { host, port },
                args,
            }),
        )))
    }
}

/// Runs a whole handshake over `input` delivered in the given chunks (tests and fuzzing).
/// Returns the replies sent and the outcome.
pub fn run_chunks(chunks: &[&[u8]]) -> (Vec<u8>, Result<Option<Request>, HandshakeError>) {
    run_chunks_with(Handshake::new(), chunks)
}

/// [`run_chunks`] with a given handshake (e.g. [`Handshake::with_methods`]).
pub fn run_chunks_with(
    mut hs: Handshake,
    chunks: &[&[u8]],
) -> (Vec<u8>, Result<Option<Request>, HandshakeError>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut replies = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match hs.step(&buf) {
                Ok(a) if a.drain == 0 && a.finished.is_none() => break,
                Ok(a) => {
                    replies.extend_from_slice(&a.reply);
                    buf.drain(..a.drain);
                    if let Some(req) = a.finished {
                        if !buf.is_empty() {
                            return (replies, Err(fail(ErrorKind::Pipelined, Vec::new())));
                        }
                        return (replies, Ok(Some(req)));
                    }
                }
                Err(e) => {
                    replies.extend_from_slice(&e.reply);
                    return (replies, Err(e));
                }
            }
        }
    }
    (replies, Ok(None))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    fn run(bytes: &[u8]) -> (Vec<u8>, Result<Option<Request>, HandshakeError>) {
        run_chunks(&[bytes])
    }

    #[test]
    fn s2_greeting_vectors() {
        assert!(matches!(
            run(&hex!("03 01 00")).1,
            Err(HandshakeError {
                kind: ErrorKind::NotSocks(3),
                ..
            })
        ));
        assert_eq!(run(&hex!("05 00")).0, hex!("05 ff"));
        assert_eq!(run(&hex!("05 01 00")).0, hex!("05 00"));
        assert_eq!(run(&hex!("05 01 02")).0, hex!("05 02"));
        assert_eq!(run(&hex!("05 02 00 02")).0, hex!("05 02"));
        assert_eq!(run(&hex!("05 01 01")).0, hex!("05 ff"));
        assert_eq!(run(&hex!("05 03 00 01 02")).0, hex!("05 02"));
    }

    fn auth(body: &[u8]) -> (Vec<u8>, Result<Option<Request>, HandshakeError>) {
        run_chunks(&[&hex!("05 01 02"), body])
    }

    #[test]
    fn s3_rfc1929_vectors() {
        let mut v = vec![3, 5];
        v.extend(b"ABCDE\x05abcde");
        assert_eq!(auth(&v).0, hex!("05 02 01 01"));
        let mut v = vec![1, 0, 5];
        v.extend(b"abcde");
        assert_eq!(auth(&v).0, hex!("05 02 01 01"));
        let mut v = vec![1, 5];
        v.extend(b"ABCDE\x00");
        assert_eq!(auth(&v).0, hex!("05 02 01 01"));
        let mut v = vec![1, 5];
        v.extend(b"ABCDE\x05abcde");
        assert!(
            matches!(auth(&v), (r, Err(HandshakeError { kind: ErrorKind::BadArgs(_), .. })) if r == hex!("05 02 01 01"))
        );
        let good = hex!("01096b65793d76616c75650100");
        let (replies, res) =
            run_chunks(&[&hex!("05 01 02"), &good, &hex!("05 01 00 01 7f000001 235a")]);
        assert_eq!(replies, hex!("05 02 01 00"));
        let req = res.unwrap().unwrap();
        assert_eq!(req.args.get("key"), Some("value"));
        assert_eq!(req.target.to_string(), "127.0.0.1:9050");
    }

    fn request(body: &[u8]) -> (Vec<u8>, Result<Option<Request>, HandshakeError>) {
        run_chunks(&[&hex!("05 01 00"), body])
    }

    #[test]
    fn s4_request_vectors() {
        assert_eq!(
            request(&hex!("03 01 00 01 7f000001 235a")).0,
            hex!("05 00 05 01 00 01 00000000 0000")
        );
        assert_eq!(
            request(&hex!("05 05 00 01 7f000001 235a")).0,
            hex!("05 00 05 07 00 01 00000000 0000")
        );
        assert_eq!(
            request(&hex!("05 01 30 01 7f000001 235a")).0,
            hex!("05 00 05 01 00 01 00000000 0000")
        );
        assert_eq!(
            request(&hex!("05 01 00 05 7f000001 235a")).0,
            hex!("05 00 05 08 00 01 00000000 0000")
        );
        let t = |b: &[u8]| request(b).1.unwrap().unwrap().target.to_string();
        assert_eq!(t(&hex!("05 01 00 01 7f000001 235a")), "127.0.0.1:9050");
        assert_eq!(
            t(&hex!("05 01 00 04 0102030405060708090a0b0c0d0e0f10 235a")),
            "[102:304:506:708:90a:b0c:d0e:f10]:9050"
        );
        let mut d = hex!("05 01 00 03 0b").to_vec();
        d.extend(b"example.com\x23\x5a");
        assert_eq!(t(&d), "example.com:9050");
        assert!(request(&hex!("05 01 00 03 00 235a")).1.is_err());
        assert_eq!(
            reply_v5(Reply::Succeeded),
            hex!("05 00 00 01 00000000 0000")
        );
    }

    #[test]
    fn s5_pipelined_bytes_fail_and_eof_mid_handshake_is_incomplete() {
        let mut both = hex!("05 01 00").to_vec();
        both.extend(hex!("05 01 00 01 7f000001 235a"));
        assert!(matches!(
            run(&both).1,
            Err(HandshakeError {
                kind: ErrorKind::Pipelined,
                ..
            })
        ));
        assert!(matches!(run(&hex!("05 01 00")).1, Ok(None)));
    }

    #[test]
    fn tor_observed_split_args_295_bytes() {
        let args = format!("k1=v\\;1;k2=back\\\\slash;k3=x=y;cert={}", "A".repeat(260));
        assert_eq!(args.len(), 295);
        let mut auth = vec![1, 255];
        auth.extend(&args.as_bytes()[..255]);
        auth.push(40);
        auth.extend(&args.as_bytes()[255..]);
        let (replies, res) = run_chunks(&[
            &hex!("05 02 00 02"),
            &auth,
            &hex!("05 01 00 01 7f000002 115c"),
        ]);
        assert_eq!(replies, hex!("05 02 01 00"));
        let req = res.unwrap().unwrap();
        assert_eq!(req.args.get("k1"), Some("v;1"));
        assert_eq!(req.args.get("k2"), Some("back\\slash"));
        assert_eq!(req.args.get("k3"), Some("x=y"));
        assert_eq!(req.args.get("cert").map(str::len), Some(260));
        assert_eq!(req.target.to_string(), "127.0.0.2:4444");
        // SOCKS4 variant: the whole string in USERID.
        let mut v4 = hex!("04 01 115c 7f000002").to_vec();
        v4.extend(args.as_bytes());
        v4.push(0);
        let req = run(&v4).1.unwrap().unwrap();
        assert_eq!(
            (req.version, req.args.get("k1")),
            (Version::V4, Some("v;1"))
        );
    }

    #[test]
    fn socks4a_vectors_7_8() {
        let bad: &[&[u8]] = &[
            &hex!("04 01 1234 01020304"),
            b"\x04\x01\x12\x34\x01\x02\x03\x04key=value",
            b"\x04\x01\x12\x34\x00\x00\x00\x01key=value\x00",
            b"\x04\x01\x12\x34\x00\x00\x00\x01key=value\x00hostname",
        ];
        for b in bad {
            assert!(matches!(run(b).1, Ok(None)), "incomplete: {b:?}");
        }
        assert!(
            run(b"\x04\x01\x12\x34\x00\x00\x00\x01userid\x00hostname\x00")
                .1
                .is_err()
        );
        assert!(run(&hex!("03 01 1234 01020304 00")).1.is_err());
        let (reply, res) = run(&hex!("04 02 1234 01020304 00"));
        assert!(res.is_err());
        assert_eq!(reply, hex!("00 5b 12 34 00 00 00 00"));
        let ok = |b: &[u8]| run(b).1.unwrap().unwrap();
        let r = ok(b"\x04\x01\x12\x34\x01\x02\x03\x04key=value\x00");
        assert_eq!(
            (r.target.to_string(), r.args.get("key")),
            ("1.2.3.4:4660".into(), Some("value"))
        );
        assert!(ok(&hex!("04 01 1234 01020304 00")).args.is_empty());
        assert_eq!(
            ok(b"\x04\x01\x12\x34\x00\x00\x00\x01key=value\x00hostname\x00")
                .target
                .to_string(),
            "hostname:4660"
        );
        assert_eq!(
            ok(b"\x04\x01\x12\x34\x00\x00\x00\x01\x00hostname\x00")
                .target
                .to_string(),
            "hostname:4660"
        );
        assert_eq!(
            ok(b"\x04\x01\x12\x34\x00\x00\x00\x01key=value\x00\x00")
                .target
                .to_string(),
            ":4660"
        );
        let granted = reply_v4(true, &Target::parse("1.2.3.4:4660").unwrap());
        assert_eq!(granted, hex!("00 5a 12 34 01 02 03 04"));
        assert_eq!(
            reply_v4(false, &Target::parse("[::1]:4660").unwrap()),
            hex!("00 5b 12 34 00 00 00 00")
        );
    }

    #[test]
    fn s4_non_utf8_host_names_are_refused() {
        let mut v5 = hex!("05 01 00 03 02 ff fe").to_vec();
        v5.extend(hex!("0050"));
        assert_eq!(request(&v5).0, hex!("05 00 05 01 00 01 00000000 0000"));
        let v4a = b"\x04\x01\x00\x50\x00\x00\x00\x01\x00\xff\xfe\x00";
        assert_eq!(run(v4a).0, hex!("00 5b 00 50 00 00 00 00"));
    }

    #[test]
    fn socks4_userid_is_bounded() {
        let mut v = hex!("04 01 1234 01020304").to_vec();
        v.extend(vec![b'a'; MAX_SOCKS4_FIELD + 1]);
        assert!(matches!(
            run(&v).1,
            Err(HandshakeError {
                kind: ErrorKind::TooLong,
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn any_segmentation_gives_the_same_result(cuts in proptest::collection::vec(0usize..40, 0..6)) {
            let mut stream = hex!("05 02 00 02").to_vec();
            stream.extend(hex!("01096b65793d76616c75650100"));
            stream.extend(hex!("05 01 00 03 0b"));
            stream.extend(b"example.com\x23\x5a");
            // Replies come back per message, so feed whole messages' worth only at message
            // boundaries to avoid tripping the pipelining rule; inside messages, cut anywhere.
            let bounds = [0usize, 4, 17, stream.len()];
            let mut chunks: Vec<&[u8]> = Vec::new();
            for w in bounds.windows(2) {
                let msg = &stream[w[0]..w[1]];
                let mut points: Vec<usize> = cuts.iter().map(|c| c % (msg.len() + 1)).collect();
                points.push(0);
                points.push(msg.len());
                points.sort_unstable();
                points.dedup();
                for p in points.windows(2) {
                    chunks.push(&msg[p[0]..p[1]]);
                }
            }
            let (replies, res) = run_chunks(&chunks);
            prop_assert_eq!(replies, hex!("05 02 01 00").to_vec());
            let req = res.unwrap().unwrap();
            prop_assert_eq!(req.target.to_string(), "example.com:9050");
        }

        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..5)) {
            let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
            let _ = run_chunks(&refs);
        }
    }
}
