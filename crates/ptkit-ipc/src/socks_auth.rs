//! SOCKS5 per-connection settings (spec §1.3.3), sans-IO: methods `0x80` (WIP/Draft 1
//! unframed JSON, Draft 2 u32-BE-length JSON) and `0x09` (IANA "JSON Parameter Block",
//! Draft 3 → 3.0), plus the bound-transport destination `[::0]:0` (§1.2).
//!
//! # Where it slots into the SOCKS5 flow
//!
//! ```text
//! client → 05 01 09                    greeting; the server picks with select_method()
//! server → 05 09                       method selection (05 80 for the 0x80 method)
//! client → 00 00 00 1e {…30 bytes…}    SettingsReader::step consumes exactly these bytes
//!          (no reply here: no auth-status message exists for 0x09 or 0x80)
//! client → 05 01 00 <atyp> <dst> <port> CONNECT, parsed by the ordinary request parser
//! server → 05 00 00 01 00000000 0000   after dialling (or an RFC 1928 failure code)
//! ```
//!
//! The client sends its CONNECT right after the settings without waiting, so input may hold
//! CONNECT bytes after the settings: `step` never consumes past the end of the settings.
//! On a settings failure `step` returns the reply `05 <REP> 00 01 00000000 0000` with REP
//! `0x10` too large, `0x11` timeout (from [`SettingsReader::timed_out`]), `0x12` JSON parse
//! error, `0x13` invalid keys or values; the driver sends it at once, in the place of the
//! CONNECT reply, and closes (a client reads the next server bytes as its CONNECT reply, so
//! this is indistinguishable from waiting for the CONNECT, and the stream cannot be
//! resynchronised after an oversized or unterminated block). The 0x80 drafts define no error
//! codes; the same replies are used (any non-zero REP is a failure to an RFC 1928 client).
//!
//! Framing of `0x80`: a JSON text never starts with `00`, and a length prefix within any
//! limit below 16 MiB always does, so the first byte tells Draft 2 (`00`) from unframed
//! WIP/Draft-1 JSON. Unframed JSON is scanned incrementally, byte by byte, until the
//! top-level object closes; the object must start with `{` (after optional whitespace), and
//! trailing whitespace after `}` is not consumed. Draft 2's printed example is little-endian
//! (an erratum); only big-endian is accepted.
//!
//! # Running it inside `ptkit_tor`'s SOCKS server
//!
//! [`SettingsReader`] implements [`SubNegotiation`], and [`methods`] /
//! [`methods_with_limit`] build the [`MethodSet`] for `Handshake::with_methods` or
//! `SocksLimits::methods`: `0x09`, then `0x80`, then PT 1.0's `0x02`, then `0x00` (the
//! order of [`select_method`]). The handshake parses a CONNECT that follows the settings
//! without waiting, and sends the settings' error reply in place of the CONNECT reply.
//!
//! Settings are a JSON object; values are flattened to strings by
//! [`crate::options::json_to_string`] (`null` omitted) and empty keys are refused (0x13). A
//! zero length is empty settings.

use std::net::{IpAddr, Ipv6Addr};

use ptkit_core::{Args, Host, Target};
use ptkit_tor::socks::server::{ErrorKind, MethodSet, SubNegotiation, SubStep};
use serde_json::Value;

use crate::options::flatten;

/// RFC 1928 "no authentication required".
pub const METHOD_NO_AUTH: u8 = 0x00;
/// RFC 1929 username/password (PT 1.0 arguments).
pub const METHOD_USERNAME_PASSWORD: u8 = 0x02;
/// IANA "JSON Parameter Block" (PT 2.0 Draft 3 → 3.0).
pub const METHOD_JSON_PARAMETER_BLOCK: u8 = 0x09;
/// Private method of the WIP and Drafts 1–2.
pub const METHOD_JSON_LEGACY: u8 = 0x80;
/// "No acceptable methods".
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xff;

/// Default cap on settings, in bytes (the prefix's value, or the unframed JSON's size).
pub const DEFAULT_MAX_SETTINGS: usize = 64 * 1024;
/// Deepest JSON nesting the unframed scanner follows (serde_json's own limit is 128).
pub const MAX_JSON_DEPTH: u32 = 128;

/// REP `0x10`: settings too large.
pub const REP_TOO_LARGE: u8 = 0x10;
/// REP `0x11`: timeout reading settings.
pub const REP_TIMEOUT: u8 = 0x11;
/// REP `0x12`: JSON parse error.
pub const REP_JSON_ERROR: u8 = 0x12;
/// REP `0x13`: invalid or missing keys or values.
pub const REP_INVALID_VALUES: u8 = 0x13;

/// The bound-transport CONNECT request: ATYP 4, sixteen zero bytes, port 0 (§1.2).
pub const BOUND_CONNECT_REQUEST: [u8; 22] = [
    5, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// True for the bound-transport destination `[::0]:0` (§1.2): the client names no
/// destination and the transport uses its fixed one.
pub fn is_bound_destination(target: &Target) -> bool {
    target.port == 0 && target.host == Host::Ip(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
}

/// Picks our method from the client's offer: `0x09`, then `0x80`, then `0x02` (PT 1.0
/// arguments), then `0x00`; `None` means reply `05 ff` and close.
pub fn select_method(offered: &[u8]) -> Option<u8> {
    [
        METHOD_JSON_PARAMETER_BLOCK,
        METHOD_JSON_LEGACY,
        METHOD_USERNAME_PASSWORD,
        METHOD_NO_AUTH,
    ]
    .into_iter()
    .find(|m| offered.contains(m))
}

/// The failure reply `05 <rep> 00 01 00000000 0000`.
pub fn error_reply(rep: u8) -> Vec<u8> {
    vec![5, rep, 0, 1, 0, 0, 0, 0, 0, 0]
}

/// Client side of `0x09` (and Draft-2 `0x80`): u32 big-endian length, then the JSON.
pub fn encode_block(json: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(json.len()).ok()?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(json);
    Some(out)
}

/// How the settings are delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// u32 big-endian length, then JSON (`0x09`, Draft-2 `0x80`).
    LengthPrefixed,
    /// JSON alone, ended by the close of the top-level object (WIP/Draft-1 `0x80`).
    Unframed,
    /// Decide from the first byte: `00` → length-prefixed, else unframed (`0x80`).
    Sniff,
}

impl Framing {
    /// The framing for a selected method; `None` for methods without JSON settings.
    pub fn for_method(method: u8) -> Option<Self> {
        match method {
            METHOD_JSON_PARAMETER_BLOCK => Some(Framing::LengthPrefixed),
            METHOD_JSON_LEGACY => Some(Framing::Sniff),
            _ => None,
        }
    }
}

/// What to do after a step (the shape of `ptkit_tor::socks::server::Action`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Action {
    /// Bytes of input consumed (kept internally; do not feed them again).
    pub drain: usize,
    /// Bytes to send to the client (always empty on success: no auth-status reply).
    pub reply: Vec<u8>,
    /// The settings, once complete; the CONNECT request follows.
    pub finished: Option<Args>,
}

/// Why the settings were refused; send `reply` (possibly empty) and close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct SettingsError {
    /// What went wrong.
    pub kind: SettingsErrorKind,
    /// Bytes to send before closing.
    pub reply: Vec<u8>,
}

/// Categories of settings failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsErrorKind {
    /// Above the limit (REP 0x10).
    #[error("SOCKS settings larger than {limit} bytes")]
    TooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// The driver's read timeout fired (REP 0x11).
    #[error("timeout reading SOCKS settings")]
    Timeout,
    /// Not JSON (REP 0x12).
    #[error("SOCKS settings are not valid JSON: {0}")]
    Json(String),
    /// Valid JSON but not an object, or an empty key (REP 0x13).
    #[error("invalid SOCKS settings: {0}")]
    Invalid(&'static str),
    /// The connection ended before the settings did (no reply).
    #[error("connection closed while reading SOCKS settings")]
    Eof,
    /// `step` after the settings were complete or refused (no reply).
    #[error("SOCKS settings already finished")]
    Finished,
}

impl SettingsErrorKind {
    /// Stable metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            SettingsErrorKind::TooLarge { .. } => "settings_too_large",
            SettingsErrorKind::Timeout => "settings_timeout",
            SettingsErrorKind::Json(_) => "settings_json",
            SettingsErrorKind::Invalid(_) => "settings_invalid",
            SettingsErrorKind::Eof => "settings_eof",
            SettingsErrorKind::Finished => "settings_finished",
        }
    }

    /// The REP code for the reply, if one is sent.
    pub fn rep(&self) -> Option<u8> {
        match self {
            SettingsErrorKind::TooLarge { .. } => Some(REP_TOO_LARGE),
            SettingsErrorKind::Timeout => Some(REP_TIMEOUT),
            SettingsErrorKind::Json(_) => Some(REP_JSON_ERROR),
            SettingsErrorKind::Invalid(_) => Some(REP_INVALID_VALUES),
            SettingsErrorKind::Eof | SettingsErrorKind::Finished => None,
        }
    }
}

impl From<SettingsErrorKind> for SettingsError {
    fn from(kind: SettingsErrorKind) -> Self {
        let reply = kind.rep().map(error_reply).unwrap_or_default();
        SettingsError { kind, reply }
    }
}

/// Finds the end of a top-level JSON object incrementally.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Scanner {
    depth: u32,
    started: bool,
    in_string: bool,
    escape: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    More,
    Complete,
    Invalid(&'static str),
}

impl Scanner {
    fn push(&mut self, b: u8) -> Scan {
        if !self.started {
            return match b {
                b' ' | b'\t' | b'\r' | b'\n' => Scan::More,
                b'{' => {
                    self.started = true;
                    self.depth = 1;
                    Scan::More
                }
                _ => Scan::Invalid("expected a JSON object"),
            };
        }
        if self.in_string {
            if self.escape {
                self.escape = false;
            } else if b == b'\\' {
                self.escape = true;
            } else if b == b'"' {
                self.in_string = false;
            }
            return Scan::More;
        }
        match b {
            b'"' => self.in_string = true,
            b'{' | b'[' => {
                self.depth += 1;
                if self.depth > MAX_JSON_DEPTH {
                    return Scan::Invalid("JSON nested too deeply");
                }
            }
            b'}' | b']' => {
                self.depth -= 1;
                if self.depth == 0 {
                    return Scan::Complete;
                }
            }
            _ => {}
        }
        Scan::More
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Start,
    Length,
    Body { len: usize },
    Unframed(Scanner),
    Done,
}

/// Reads one connection's settings after the server selected `0x09` or `0x80`.
#[derive(Debug)]
pub struct SettingsReader {
    framing: Framing,
    limit: usize,
    state: State,
    buf: Vec<u8>,
}

impl SettingsReader {
    /// A reader for `framing` with the [`DEFAULT_MAX_SETTINGS`] limit.
    pub fn new(framing: Framing) -> Self {
        Self::with_limit(framing, DEFAULT_MAX_SETTINGS)
    }

    /// A reader for the method the server selected (`None` for methods without settings).
    pub fn for_method(method: u8) -> Option<Self> {
        Framing::for_method(method).map(Self::new)
    }

    /// A reader with an explicit size limit in bytes.
    pub fn with_limit(framing: Framing, limit: usize) -> Self {
        SettingsReader {
            framing,
            limit,
            state: State::Start,
            buf: Vec::new(),
        }
    }

    /// True once settings were returned or refused.
    pub fn is_finished(&self) -> bool {
        self.state == State::Done
    }

    /// The error to report when the driver's read timeout fires (REP 0x11).
    pub fn timed_out(&mut self) -> SettingsError {
        self.state = State::Done;
        SettingsErrorKind::Timeout.into()
    }

    /// The error to report when the client closed before the settings ended (no reply).
    pub fn eof(&mut self) -> SettingsError {
        self.state = State::Done;
        SettingsErrorKind::Eof.into()
    }

    /// Consumes settings bytes from `input` (new bytes only: what was drained before is
    /// kept here). Stops exactly at the end of the settings.
    pub fn step(&mut self, input: &[u8]) -> Result<Action, SettingsError> {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match std::mem::replace(&mut self.state, State::Done) {
                State::Done => return Err(SettingsErrorKind::Finished.into()),
                State::Start => {
                    let Some(&first) = rest.first() else {
                        self.state = State::Start;
                        break;
                    };
                    self.state = match self.framing {
                        Framing::LengthPrefixed => State::Length,
                        Framing::Unframed => State::Unframed(Scanner::default()),
                        Framing::Sniff if first == 0 => State::Length,
                        Framing::Sniff => State::Unframed(Scanner::default()),
                    };
                }
                State::Length => {
                    let n = (4 - self.buf.len()).min(rest.len());
                    self.buf.extend_from_slice(&rest[..n]);
                    used += n;
                    let Ok(bytes) = <[u8; 4]>::try_from(self.buf.as_slice()) else {
                        self.state = State::Length;
                        break;
                    };
                    self.buf.clear();
                    let len = usize::try_from(u32::from_be_bytes(bytes)).unwrap_or(usize::MAX);
                    if len > self.limit {
                        return Err(SettingsErrorKind::TooLarge { limit: self.limit }.into());
                    }
                    if len == 0 {
                        return Ok(self.done(used, Args::new()));
                    }
                    self.buf.reserve_exact(len);
                    self.state = State::Body { len };
                }
                State::Body { len } => {
                    let n = (len - self.buf.len()).min(rest.len());
                    self.buf.extend_from_slice(&rest[..n]);
                    used += n;
                    if self.buf.len() < len {
                        self.state = State::Body { len };
                        break;
                    }
                    let args = self.parse()?;
                    return Ok(self.done(used, args));
                }
                State::Unframed(mut scanner) => {
                    for &b in rest {
                        used += 1;
                        self.buf.push(b);
                        let scan = scanner.push(b);
                        if self.buf.len() > self.limit {
                            return Err(SettingsErrorKind::TooLarge { limit: self.limit }.into());
                        }
                        match scan {
                            Scan::More => {}
                            Scan::Invalid(why) => {
                                return Err(SettingsErrorKind::Json(why.into()).into());
                            }
                            Scan::Complete => {
                                let args = self.parse()?;
                                return Ok(self.done(used, args));
                            }
                        }
                    }
                    self.state = State::Unframed(scanner);
                    break;
                }
            }
        }
        Ok(Action {
            drain: used,
            reply: Vec::new(),
            finished: None,
        })
    }

    fn done(&mut self, drain: usize, args: Args) -> Action {
        self.state = State::Done;
        self.buf = Vec::new();
        Action {
            drain,
            reply: Vec::new(),
            finished: Some(args),
        }
    }

    fn parse(&mut self) -> Result<Args, SettingsError> {
        let value: Value = serde_json::from_slice(&self.buf)
            .map_err(|e| SettingsError::from(SettingsErrorKind::Json(e.to_string())))?;
        let Value::Object(map) = value else {
            return Err(SettingsErrorKind::Invalid("settings are not a JSON object").into());
        };
        if map.keys().any(String::is_empty) {
            return Err(SettingsErrorKind::Invalid("empty key").into());
        }
        Ok(flatten(&map))
    }
}

impl SubNegotiation for SettingsReader {
    fn step(&mut self, input: &[u8]) -> SubStep {
        match SettingsReader::step(self, input) {
            Ok(Action {
                drain,
                finished: None,
                ..
            }) => SubStep::Need { drain },
            Ok(Action {
                drain,
                reply,
                finished: Some(args),
            }) => SubStep::Done { drain, reply, args },
            Err(e) => SubStep::Failed {
                kind: settings_error_kind(&e.kind),
                reply: e.reply,
            },
        }
    }

    fn timed_out(&mut self) -> Vec<u8> {
        SettingsReader::timed_out(self).reply
    }
}

/// The SOCKS server's error for a settings failure (label = [`SettingsErrorKind::kind`]).
pub fn settings_error_kind(kind: &SettingsErrorKind) -> ErrorKind {
    ErrorKind::SubNegotiation {
        label: kind.kind(),
        message: kind.to_string(),
    }
}

/// The PT 2.x settings methods with the [`DEFAULT_MAX_SETTINGS`] limit: see
/// [`methods_with_limit`].
pub fn methods() -> MethodSet {
    methods_with_limit(DEFAULT_MAX_SETTINGS)
}

/// SOCKS5 methods `0x09` (u32-BE-length JSON), `0x80` (sniffed: Draft-2 length-prefixed or
/// unframed JSON), then PT 1.0's `0x02` and `0x00`, in that order of preference; settings
/// above `limit` bytes are refused with REP `0x10`.
pub fn methods_with_limit(limit: usize) -> MethodSet {
    MethodSet::pt1()
        .with_method(METHOD_JSON_PARAMETER_BLOCK, move || {
            Box::new(SettingsReader::with_limit(Framing::LengthPrefixed, limit))
        })
        .with_method(METHOD_JSON_LEGACY, move || {
            Box::new(SettingsReader::with_limit(Framing::Sniff, limit))
        })
}

/// Feeds `chunks` to a fresh reader (tests and fuzzing): the replies sent, the outcome, and
/// the bytes left after the settings (the CONNECT request).
pub fn run_chunks(
    framing: Framing,
    limit: usize,
    chunks: &[&[u8]],
) -> (Vec<u8>, Result<Option<Args>, SettingsError>, Vec<u8>) {
    let mut reader = SettingsReader::with_limit(framing, limit);
    let mut leftover = Vec::new();
    let mut outcome = Ok(None);
    let mut replies = Vec::new();
    for chunk in chunks {
        if reader.is_finished() {
            leftover.extend_from_slice(chunk);
            continue;
        }
        match reader.step(chunk) {
            Ok(a) => {
                replies.extend_from_slice(&a.reply);
                if let Some(args) = a.finished {
                    outcome = Ok(Some(args));
                    leftover.extend_from_slice(&chunk[a.drain..]);
                }
            }
            Err(e) => {
                replies.extend_from_slice(&e.reply);
                outcome = Err(e);
                break;
            }
        }
    }
    (replies, outcome, leftover)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    const SETTINGS: &[u8] = br#"{"cert":"AAAA","iat-mode":"0"}"#;
    const CONNECT: [u8; 10] = hex!("05 01 00 01 7f000001 235a");

    fn one(
        framing: Framing,
        bytes: &[u8],
    ) -> (Vec<u8>, Result<Option<Args>, SettingsError>, Vec<u8>) {
        run_chunks(framing, DEFAULT_MAX_SETTINGS, &[bytes])
    }

    fn want() -> Args {
        Args::new().with("cert", "AAAA").with("iat-mode", "0")
    }

    #[test]
    fn s1_3_3_method_selection() {
        assert_eq!(select_method(&hex!("00 02 09 80")), Some(0x09));
        assert_eq!(select_method(&hex!("00 80 02")), Some(0x80));
        assert_eq!(select_method(&hex!("00 02")), Some(0x02));
        assert_eq!(select_method(&hex!("00")), Some(0x00));
        assert_eq!(select_method(&hex!("01 03")), None);
        assert_eq!(Framing::for_method(0x09), Some(Framing::LengthPrefixed));
        assert_eq!(Framing::for_method(0x80), Some(Framing::Sniff));
        assert_eq!(Framing::for_method(0x02), None);
        assert!(SettingsReader::for_method(0x00).is_none());
    }

    #[test]
    fn s1_3_3_example_0x09_block_then_connect() {
        // §1.3.3 example: 30-byte settings, prefix 00 00 00 1e, CONNECT follows unanswered.
        assert_eq!(SETTINGS.len(), 30);
        let mut wire = hex!("00 00 00 1e").to_vec();
        wire.extend_from_slice(SETTINGS);
        assert_eq!(encode_block(SETTINGS).unwrap(), wire);
        wire.extend_from_slice(&CONNECT);
        let mut r = SettingsReader::for_method(0x09).unwrap();
        let a = r.step(&wire).unwrap();
        assert_eq!(a.drain, 34);
        assert!(a.reply.is_empty());
        assert_eq!(a.finished, Some(want()));
        assert_eq!(&wire[a.drain..], CONNECT);
        assert!(r.is_finished());
        assert_eq!(
            r.step(&CONNECT).unwrap_err().kind,
            SettingsErrorKind::Finished
        );
    }

    #[test]
    fn s1_3_3_draft2_0x80_length_prefixed_big_endian() {
        let mut wire = encode_block(SETTINGS).unwrap();
        wire.extend_from_slice(&CONNECT);
        let (reply, out, rest) = one(Framing::Sniff, &wire);
        assert!(reply.is_empty());
        assert_eq!(out.unwrap(), Some(want()));
        assert_eq!(rest, CONNECT);
        // The little-endian erratum is not accepted: 1e 00 00 00 is not JSON.
        let mut le = hex!("1e 00 00 00").to_vec();
        le.extend_from_slice(SETTINGS);
        let (reply, out, _) = one(Framing::Sniff, &le);
        assert_eq!(reply, hex!("05 12 00 01 00000000 0000"));
        assert!(matches!(out.unwrap_err().kind, SettingsErrorKind::Json(_)));
    }

    #[test]
    fn s1_2_wip_0x80_unframed_json() {
        let mut wire = b" \n".to_vec();
        wire.extend_from_slice(br#"{"a":{"b":["}",{"c":"\"}"}]},"n":1.5,"t":false,"z":null}"#);
        wire.extend_from_slice(&CONNECT);
        let (reply, out, rest) = one(Framing::Sniff, &wire);
        assert!(reply.is_empty());
        let args = out.unwrap().unwrap();
        assert_eq!(args.get("a"), Some(r#"{"b":["}",{"c":"\"}"}]}"#));
        assert_eq!(args.get("n"), Some("1.5"));
        assert_eq!(args.get("t"), Some("false"));
        assert_eq!(args.get("z"), None);
        assert_eq!(rest, CONNECT);
        let (_, out, rest) = one(Framing::Unframed, b"{}\x05");
        assert_eq!(out.unwrap(), Some(Args::new()));
        assert_eq!(rest, [5]);
    }

    #[test]
    fn s1_3_3_oversized_refused_with_0x10() {
        // Declared length above the limit: refused as soon as the prefix arrives.
        let (reply, out, _) = run_chunks(Framing::LengthPrefixed, 16, &[&hex!("00 00 00 11")]);
        assert_eq!(reply, hex!("05 10 00 01 00000000 0000"));
        assert_eq!(
            out.unwrap_err().kind,
            SettingsErrorKind::TooLarge { limit: 16 }
        );
        let (reply, _, _) = one(Framing::LengthPrefixed, &hex!("ff ff ff ff"));
        assert_eq!(reply[1], REP_TOO_LARGE);
        // Exactly at the limit is fine.
        let mut ok = hex!("00 00 00 1e").to_vec();
        ok.extend_from_slice(SETTINGS);
        assert!(run_chunks(Framing::LengthPrefixed, 30, &[&ok]).1.is_ok());
        // Unframed: refused once more than the limit has arrived without the end.
        let big = format!("{{\"k\":\"{}\"}}", "x".repeat(64));
        let (reply, out, _) = run_chunks(Framing::Unframed, 32, &[big.as_bytes()]);
        assert_eq!(reply, hex!("05 10 00 01 00000000 0000"));
        assert_eq!(out.unwrap_err().kind.kind(), "settings_too_large");
        assert!(
            run_chunks(Framing::Unframed, big.len(), &[big.as_bytes()])
                .1
                .is_ok()
        );
    }

    #[test]
    fn s1_3_3_malformed_json_0x12_and_invalid_0x13() {
        for bad in [&b"{\"a\":}"[..], b"{\"a\" 1}", b"{\"a\":\"\xff\"}", b"{]"] {
            let (reply, out, _) = one(Framing::LengthPrefixed, &encode_block(bad).unwrap());
            assert_eq!(reply, hex!("05 12 00 01 00000000 0000"), "{bad:?}");
            assert!(matches!(out.unwrap_err().kind, SettingsErrorKind::Json(_)));
            let (reply, _, _) = one(Framing::Unframed, bad);
            assert_eq!(reply[1], REP_JSON_ERROR, "{bad:?}");
        }
        for not_obj in [&b"[1]"[..], b"\"s\"", b"1", b"{\"\":1}"] {
            let (reply, out, _) = one(Framing::LengthPrefixed, &encode_block(not_obj).unwrap());
            assert_eq!(reply, hex!("05 13 00 01 00000000 0000"), "{not_obj:?}");
            assert!(matches!(
                out.unwrap_err().kind,
                SettingsErrorKind::Invalid(_)
            ));
        }
        // Unframed must be an object: found at the first byte.
        let (reply, _, _) = one(Framing::Unframed, b"[1]");
        assert_eq!(reply[1], REP_JSON_ERROR);
        let deep = "[".repeat(200);
        let (reply, _, _) = one(Framing::Unframed, format!("{{\"a\":{deep}").as_bytes());
        assert_eq!(reply[1], REP_JSON_ERROR);
    }

    #[test]
    fn s1_3_3_timeout_eof_and_empty() {
        let mut r = SettingsReader::new(Framing::LengthPrefixed);
        assert_eq!(r.step(&hex!("00 00")).unwrap().drain, 2);
        let e = r.timed_out();
        assert_eq!(e.reply, hex!("05 11 00 01 00000000 0000"));
        assert!(r.is_finished());
        let mut r = SettingsReader::new(Framing::Unframed);
        r.step(b"{\"a\"").unwrap();
        let e = r.eof();
        assert!(e.reply.is_empty());
        assert_eq!(e.kind.kind(), "settings_eof");
        let (_, out, rest) = one(Framing::LengthPrefixed, &[0, 0, 0, 0, 5]);
        assert_eq!(out.unwrap(), Some(Args::new()));
        assert_eq!(rest, [5]);
        let mut r = SettingsReader::new(Framing::Sniff);
        assert_eq!(r.step(&[]).unwrap(), Action::default());
    }

    #[test]
    fn s1_2_bound_destination() {
        assert_eq!(
            BOUND_CONNECT_REQUEST,
            hex!("05 01 00 04 00000000000000000000000000000000 0000")
        );
        let (_, req) =
            ptkit_tor::socks::server::run_chunks(&[&hex!("05 01 00"), &BOUND_CONNECT_REQUEST]);
        assert!(is_bound_destination(&req.unwrap().unwrap().target));
        assert!(is_bound_destination(&Target::parse("[::]:0").unwrap()));
        assert!(!is_bound_destination(&Target::parse("[::]:1").unwrap()));
        assert!(!is_bound_destination(&Target::parse("0.0.0.0:0").unwrap()));
        assert!(!is_bound_destination(&Target::parse("[::1]:0").unwrap()));
    }

    fn chunked(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut prev = 0;
        for c in cuts.into_iter().chain([bytes.len()]) {
            out.push(bytes[prev..c].to_vec());
            prev = c;
        }
        out
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            ".{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn s1_3_3_split_json_any_chunking_same_result(
            map in proptest::collection::btree_map("[a-z\"\\\\{}]{1,6}", json_value(), 0..5),
            cuts in proptest::collection::vec(any::<usize>(), 0..40),
            framing in prop_oneof![Just(Framing::Unframed), Just(Framing::LengthPrefixed), Just(Framing::Sniff)],
        ) {
            let json = serde_json::to_vec(&Value::Object(map.into_iter().collect())).unwrap();
            let mut wire = match framing {
                Framing::Unframed => json.clone(),
                _ => encode_block(&json).unwrap(),
            };
            wire.extend_from_slice(&CONNECT);
            let (r0, o0, rest0) = run_chunks(framing, DEFAULT_MAX_SETTINGS, &[&wire]);
            prop_assert!(o0.as_ref().is_ok_and(Option::is_some));
            prop_assert_eq!(&rest0, &CONNECT);
            let bytewise: Vec<&[u8]> = wire.chunks(1).collect();
            prop_assert_eq!(run_chunks(framing, DEFAULT_MAX_SETTINGS, &bytewise), (r0.clone(), o0.clone(), rest0.clone()));
            let pieces = chunked(&wire, &cuts);
            let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(run_chunks(framing, DEFAULT_MAX_SETTINGS, &refs), (r0, o0, rest0));
        }

        #[test]
        fn s1_3_3_garbage_never_panics_and_chunking_agrees(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            cuts in proptest::collection::vec(any::<usize>(), 0..20),
            limit in 0usize..128,
        ) {
            for framing in [Framing::Unframed, Framing::LengthPrefixed, Framing::Sniff] {
                let whole = run_chunks(framing, limit, &[&bytes]);
                let pieces = chunked(&bytes, &cuts);
                let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
                prop_assert_eq!(run_chunks(framing, limit, &refs), whole);
            }
        }
    }
}
