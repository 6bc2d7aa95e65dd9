//! IPC output lines for PT 2.x/3.0 (spec §1.3.2) and how they differ from PT 1.0: which
//! stream each goes to, which sysexits code ends the process, the two `LOG` syntaxes, and a
//! defined syntax for the WIP's `CMESSAGE`/`SMESSAGE` signals channel.
//!
//! Rendering is pure (a `String` without the newline); writing is the binary's job (stdout
//! belongs to the protocol, DESIGN §4.4).
//!
//! `CMESSAGE`/`SMESSAGE` (WIP §1.2 leaves the syntax unspecified; this is ours):
//! `CMESSAGE <transport> <base64>` / `SMESSAGE <transport> <base64>`, standard base64 with
//! padding, at most [`MAX_MESSAGE_PAYLOAD`] decoded bytes; an empty payload is written as
//! `CMESSAGE <transport>` with no trailing space. `CMESSAGE` carries client→server signals,
//! `SMESSAGE` server→client; a PT writes its own kind on stdout and reads the other on stdin.
//!
//! Requests a dispatcher reads on stdin (ours, documented in `docs/IPC.md`):
//! - `SMESSAGE <transport> <base64>` (client role) / `CMESSAGE …` (server role): a signal
//!   for that transport's signals handler;
//! - `STATS` or `STATS <transport>`: answered on stdout by one `STATS <json>` line, where
//!   `<json>` is a JSON array of the stats schema of `ptkit_core::stats::Stats` (the same
//!   array as the `/stats` endpoint of `--metrics`).
//!
//! A request that cannot be served gets one `<KEYWORD>-ERROR <message>` line
//! (`CMESSAGE-ERROR`, `SMESSAGE-ERROR`, `STATS-ERROR`, or `STDIN-ERROR` for a line too long
//! to read a keyword from) on the error stream (stderr under 2.x/3.0, stdout under PT 1.0);
//! it is never fatal. Unknown keywords are ignored, as a parent ignores ours.

use std::net::SocketAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ptkit_core::Args;
use ptkit_tor::lines::{Line as Pt1Line, Severity, is_transport_name};

use crate::flags::Mode;

/// sysexits `EX_OK`: graceful exit.
pub const EX_OK: i32 = 0;
/// sysexits `EX_USAGE` (64): `ENV-ERROR` under 2.x/3.0.
pub const EX_USAGE: i32 = 64;
/// sysexits `EX_UNAVAILABLE` (69): `PROXY-ERROR` under 2.x/3.0.
pub const EX_UNAVAILABLE: i32 = 69;
/// sysexits `EX_CONFIG` (78): `VERSION-ERROR` under 2.x/3.0.
pub const EX_CONFIG: i32 = 78;
/// Exit code we use for fatal errors under PT 1.0, where the spec leaves it unspecified.
pub const EX_PT1_FATAL: i32 = 1;

/// Longest line [`parse`] accepts, in bytes (same bound as ptkit-tor's host side).
pub const MAX_LINE_LEN: usize = ptkit_tor::lines::MAX_LINE_LEN;
/// Largest decoded `CMESSAGE`/`SMESSAGE` payload, in bytes.
pub const MAX_MESSAGE_PAYLOAD: usize = 16 * 1024;

/// Which output conventions apply: PT 1.0 or PT 2.x/3.0 (§1.3.2 columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Tor's PT 1.0: every line on stdout, PT 1.0 `LOG` syntax.
    Pt1,
    /// PT 2.x/3.0: error lines on stderr with sysexits codes, 2.2 `LOG` syntax.
    Pt2,
}

/// Which standard stream a line goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Level of a 2.2+ `LOG` line and of `-ipcLogLevel` (where `NONE` is `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// `ERROR`
    Error,
    /// `WARN`
    Warn,
    /// `INFO`
    Info,
    /// `DEBUG`
    Debug,
}

impl LogLevel {
    /// The 2.2 keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "ERROR",
            LogLevel::Warn => "WARN",
            LogLevel::Info => "INFO",
            LogLevel::Debug => "DEBUG",
        }
    }

    /// The PT 1.0 severity used when the same message goes to a PT 1.0 parent.
    pub fn severity(self) -> Severity {
        match self {
            LogLevel::Error => Severity::Error,
            LogLevel::Warn => Severity::Warning,
            LogLevel::Info => Severity::Info,
            LogLevel::Debug => Severity::Debug,
        }
    }

    /// Parses an `-ipcLogLevel` value, case-insensitively; `Some(None)` is `NONE`, `None` an
    /// unknown word.
    pub fn parse_threshold(s: &str) -> Option<Option<Self>> {
        Some(Some(match s.to_ascii_uppercase().as_str() {
            "NONE" => return Some(None),
            "ERROR" => LogLevel::Error,
            "WARN" => LogLevel::Warn,
            "INFO" => LogLevel::Info,
            "DEBUG" => LogLevel::Debug,
            _ => return None,
        }))
    }

    /// True when a line at `self` passes the `-ipcLogLevel` threshold (`None` = `NONE`).
    pub fn passes(self, threshold: Option<LogLevel>) -> bool {
        threshold.is_some_and(|t| self <= t)
    }
}

/// One IPC line a dispatcher prints, or (for signals and logs) reads.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpcLine {
    /// `VERSION <token>` (token as the parent spelled it).
    Version(String),
    /// `VERSION-ERROR no-version`
    VersionError,
    /// `ENV-ERROR <message>`
    EnvError(String),
    /// `PROXY DONE`
    ProxyDone,
    /// `PROXY-ERROR <message>`
    ProxyError(String),
    /// `CMETHOD <transport> <mode> <addr:port>`
    Cmethod {
        /// Transport name.
        name: String,
        /// Proxy mode (`socks5` is also PT 1.0's protocol word).
        mode: Mode,
        /// Where the client listener is.
        addr: SocketAddr,
    },
    /// `CMETHOD-ERROR <transport> <message>`
    CmethodError(String, String),
    /// `CMETHODS DONE`
    CmethodsDone,
    /// `SMETHOD <transport> <addr:port> [ARGS:k=v,k=v]`
    Smethod {
        /// Transport name.
        name: String,
        /// Where the transport listens.
        addr: SocketAddr,
        /// Client arguments (empty: no `ARGS:`).
        args: Args,
    },
    /// `SMETHOD-ERROR <transport> <message>`
    SmethodError(String, String),
    /// `SMETHODS DONE`
    SmethodsDone,
    /// `LOG <LEVEL> <message>` (2.2+) or `LOG SEVERITY=… MESSAGE="…"` (PT 1.0).
    Log(LogLevel, String),
    /// `CMESSAGE <transport> <base64>`: a client→server signal.
    Cmessage {
        /// Transport instance the signal belongs to.
        transport: String,
        /// Opaque payload, at most [`MAX_MESSAGE_PAYLOAD`] bytes.
        payload: Vec<u8>,
    },
    /// `SMESSAGE <transport> <base64>`: a server→client signal.
    Smessage {
        /// Transport instance the signal belongs to.
        transport: String,
        /// Opaque payload, at most [`MAX_MESSAGE_PAYLOAD`] bytes.
        payload: Vec<u8>,
    },
    /// `STATS` / `STATS <transport>` on stdin: a request for the stats of every running
    /// transport, or of one.
    StatsRequest(Option<String>),
    /// `STATS <json array>` on stdout: the answer (one [`ptkit_core::Stats`] object per
    /// transport).
    Stats(String),
    /// `<KEYWORD>-ERROR <message>`: a stdin request that could not be served (not fatal).
    RequestError {
        /// The request's keyword (`CMESSAGE`, `SMESSAGE`, `STATS`) or `STDIN`.
        keyword: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// Why a line could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// Longer than [`MAX_LINE_LEN`] or a payload above [`MAX_MESSAGE_PAYLOAD`].
    #[error("{0} line or payload too long")]
    TooLong(&'static str),
    /// Transport name is not a C identifier.
    #[error("{0}: bad transport name")]
    BadTransport(&'static str),
    /// The payload is not valid padded base64.
    #[error("{0}: payload is not base64")]
    BadBase64(&'static str),
    /// Missing or extra fields, or an unknown log level.
    #[error("{0}: malformed line")]
    Malformed(&'static str),
}

impl LineError {
    /// Stable metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            LineError::TooLong(_) => "line_too_long",
            LineError::BadTransport(_) => "line_bad_transport",
            LineError::BadBase64(_) => "line_bad_base64",
            LineError::Malformed(_) => "line_malformed",
        }
    }
}

/// Replaces anything but printable-or-space ASCII with `?` (PT 1.0 argument rule, §1.3.2).
fn clean_ascii(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Keeps UTF-8 but replaces control characters (LF, CR, NUL, …) with `?` (2.2 `LOG`).
fn clean_utf8(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn check_message(keyword: &'static str, transport: &str, payload: &[u8]) -> Result<(), LineError> {
    if !is_transport_name(transport) {
        return Err(LineError::BadTransport(keyword));
    }
    if payload.len() > MAX_MESSAGE_PAYLOAD {
        return Err(LineError::TooLong(keyword));
    }
    Ok(())
}

impl IpcLine {
    /// A checked `CMESSAGE` (transport is a C identifier, payload within the limit).
    pub fn cmessage(transport: &str, payload: &[u8]) -> Result<Self, LineError> {
        check_message("CMESSAGE", transport, payload)?;
        Ok(IpcLine::Cmessage {
            transport: transport.to_owned(),
            payload: payload.to_vec(),
        })
    }

    /// A checked `SMESSAGE` (transport is a C identifier, payload within the limit).
    pub fn smessage(transport: &str, payload: &[u8]) -> Result<Self, LineError> {
        check_message("SMESSAGE", transport, payload)?;
        Ok(IpcLine::Smessage {
            transport: transport.to_owned(),
            payload: payload.to_vec(),
        })
    }

    /// The line without its newline, in the given dialect's syntax. Unsafe characters in
    /// free text become `?`, so the result is always one line.
    pub fn render(&self, dialect: Dialect) -> String {
        match self {
            IpcLine::Version(t) => format!("VERSION {}", clean_ascii(t)),
            // Lines PT 1.0 already defines are rendered by ptkit-tor: one renderer.
            IpcLine::VersionError => Pt1Line::VersionError.render(),
            IpcLine::EnvError(m) => Pt1Line::EnvError(m.clone()).render(),
            IpcLine::ProxyDone => Pt1Line::ProxyDone.render(),
            IpcLine::ProxyError(m) => Pt1Line::ProxyError(m.clone()).render(),
            IpcLine::Cmethod { name, mode, addr } => {
                format!("CMETHOD {} {} {addr}", clean_ascii(name), mode.as_str())
            }
            IpcLine::CmethodError(n, m) => Pt1Line::CmethodError(n.clone(), m.clone()).render(),
            IpcLine::CmethodsDone => Pt1Line::CmethodsDone.render(),
            IpcLine::Smethod { name, addr, args } => Pt1Line::Smethod {
                name: name.clone(),
                addr: *addr,
                args: args.clone(),
            }
            .render(),
            IpcLine::SmethodError(n, m) => Pt1Line::SmethodError(n.clone(), m.clone()).render(),
            IpcLine::SmethodsDone => Pt1Line::SmethodsDone.render(),
            IpcLine::Log(level, msg) => match dialect {
                Dialect::Pt1 => Pt1Line::Log(level.severity(), msg.clone()).render(),
                Dialect::Pt2 => format!("LOG {} {}", level.as_str(), clean_utf8(msg)),
            },
            IpcLine::Cmessage { transport, payload } => {
                render_message("CMESSAGE", transport, payload)
            }
            IpcLine::Smessage { transport, payload } => {
                render_message("SMESSAGE", transport, payload)
            }
            IpcLine::StatsRequest(None) => "STATS".to_owned(),
            IpcLine::StatsRequest(Some(t)) => format!("STATS {}", clean_ascii(t)),
            IpcLine::Stats(json) => format!("STATS {}", clean_ascii(json)),
            IpcLine::RequestError { keyword, message } => {
                format!("{keyword}-ERROR {}", clean_ascii(message))
            }
        }
    }

    /// The stream this line goes to (§1.3.2; cautions: errors on stderr only under 2.x/3.0).
    pub fn stream(&self, dialect: Dialect) -> Stream {
        match (dialect, self) {
            (Dialect::Pt1, _) => Stream::Stdout,
            (
                Dialect::Pt2,
                IpcLine::VersionError
                | IpcLine::EnvError(_)
                | IpcLine::ProxyError(_)
                | IpcLine::CmethodError(..)
                | IpcLine::SmethodError(..)
                | IpcLine::RequestError { .. },
            ) => Stream::Stderr,
            (Dialect::Pt2, _) => Stream::Stdout,
        }
    }

    /// The exit code after printing this line, for fatal lines: 78/64/69 under 2.x/3.0,
    /// [`EX_PT1_FATAL`] under PT 1.0 (where the spec leaves it unspecified). `None`: not fatal.
    pub fn exit_code(&self, dialect: Dialect) -> Option<i32> {
        let pt2 = match self {
            IpcLine::VersionError => EX_CONFIG,
            IpcLine::EnvError(_) => EX_USAGE,
            IpcLine::ProxyError(_) => EX_UNAVAILABLE,
            _ => return None,
        };
        Some(match dialect {
            Dialect::Pt1 => EX_PT1_FATAL,
            Dialect::Pt2 => pt2,
        })
    }
}

fn render_message(keyword: &str, transport: &str, payload: &[u8]) -> String {
    if payload.is_empty() {
        format!("{keyword} {}", clean_ascii(transport))
    } else {
        format!(
            "{keyword} {} {}",
            clean_ascii(transport),
            STANDARD.encode(payload)
        )
    }
}

/// Parses the lines of this module that a dispatcher or parent reads: `CMESSAGE`,
/// `SMESSAGE`, `STATS` (request or answer), 2.2 `LOG` and `VERSION`. A trailing `\n` (or `\r\n`) is ignored. Other
/// keywords give `Ok(None)` (the parent ignores unknown keywords, §1.3.2).
pub fn parse(line: &str) -> Result<Option<IpcLine>, LineError> {
    if line.len() > MAX_LINE_LEN {
        return Err(LineError::TooLong("IPC"));
    }
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    let (keyword, rest) = match line.split_once(' ') {
        Some((k, r)) => (k, Some(r)),
        None => (line, None),
    };
    match keyword {
        "CMESSAGE" | "SMESSAGE" => {
            let kw = if keyword == "CMESSAGE" {
                "CMESSAGE"
            } else {
                "SMESSAGE"
            };
            let rest = rest.ok_or(LineError::Malformed(kw))?;
            let (transport, b64) = match rest.split_once(' ') {
                Some((t, b)) => (t, b),
                None => (rest, ""),
            };
            if !is_transport_name(transport) {
                return Err(LineError::BadTransport(kw));
            }
            if b64.len() > MAX_MESSAGE_PAYLOAD.div_ceil(3) * 4 {
                return Err(LineError::TooLong(kw));
            }
            let payload = STANDARD.decode(b64).map_err(|_| LineError::BadBase64(kw))?;
            if payload.len() > MAX_MESSAGE_PAYLOAD {
                return Err(LineError::TooLong(kw));
            }
            Ok(Some(if kw == "CMESSAGE" {
                IpcLine::Cmessage {
                    transport: transport.to_owned(),
                    payload,
                }
            } else {
                IpcLine::Smessage {
                    transport: transport.to_owned(),
                    payload,
                }
            }))
        }
        "LOG" => {
            let rest = rest.ok_or(LineError::Malformed("LOG"))?;
            let (level, msg) = rest.split_once(' ').unwrap_or((rest, ""));
            let level = match LogLevel::parse_threshold(level) {
                Some(Some(l)) if l.as_str() == level => l,
                _ => return Err(LineError::Malformed("LOG")),
            };
            Ok(Some(IpcLine::Log(level, msg.to_owned())))
        }
        "STATS" => match rest {
            None => Ok(Some(IpcLine::StatsRequest(None))),
            Some(r) if r.starts_with('[') => Ok(Some(IpcLine::Stats(r.to_owned()))),
            Some(t) if is_transport_name(t) => Ok(Some(IpcLine::StatsRequest(Some(t.into())))),
            Some(_) => Err(LineError::BadTransport("STATS")),
        },
        "VERSION" => match rest {
            Some(t) if !t.is_empty() && !t.contains(' ') => Ok(Some(IpcLine::Version(t.into()))),
            _ => Err(LineError::Malformed("VERSION")),
        },
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    const ALL: [Dialect; 2] = [Dialect::Pt1, Dialect::Pt2];

    #[test]
    fn s1_3_2_error_lines_route_by_dialect() {
        let cases = [
            (IpcLine::VersionError, "VERSION-ERROR no-version", EX_CONFIG),
            (
                IpcLine::EnvError("bad -mode".into()),
                "ENV-ERROR bad -mode",
                EX_USAGE,
            ),
            (
                IpcLine::ProxyError("unsupported scheme".into()),
                "PROXY-ERROR unsupported scheme",
                EX_UNAVAILABLE,
            ),
        ];
        for (line, text, code) in cases {
            for d in ALL {
                assert_eq!(line.render(d), text);
            }
            assert_eq!(line.stream(Dialect::Pt2), Stream::Stderr);
            assert_eq!(line.exit_code(Dialect::Pt2), Some(code));
            assert_eq!(line.stream(Dialect::Pt1), Stream::Stdout);
            assert_eq!(line.exit_code(Dialect::Pt1), Some(EX_PT1_FATAL));
        }
    }

    #[test]
    fn s1_3_2_method_lines() {
        let addr: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        for (mode, word) in [
            (Mode::Socks5, "socks5"),
            (Mode::TransparentTcp, "transparent-TCP"),
            (Mode::TransparentUdp, "transparent-UDP"),
            (Mode::Stun, "STUN"),
        ] {
            let l = IpcLine::Cmethod {
                name: "shadow".into(),
                mode,
                addr,
            };
            assert_eq!(
                l.render(Dialect::Pt2),
                format!("CMETHOD shadow {word} 127.0.0.1:5555")
            );
            assert_eq!(l.stream(Dialect::Pt2), Stream::Stdout);
            assert_eq!(l.exit_code(Dialect::Pt2), None);
        }
        let e = IpcLine::CmethodError("shadow".into(), "no\nway".into());
        assert_eq!(e.render(Dialect::Pt2), "CMETHOD-ERROR shadow no?way");
        assert_eq!(e.stream(Dialect::Pt2), Stream::Stderr);
        assert_eq!(e.exit_code(Dialect::Pt2), None);
        let e = IpcLine::SmethodError("shadow".into(), "bind".into());
        assert_eq!(e.stream(Dialect::Pt2), Stream::Stderr);
        assert_eq!(e.stream(Dialect::Pt1), Stream::Stdout);
        let s = IpcLine::Smethod {
            name: "obfs4".into(),
            addr,
            args: Args::new().with("cert", "a=b").with("iat-mode", "0"),
        };
        assert_eq!(
            s.render(Dialect::Pt2),
            "SMETHOD obfs4 127.0.0.1:5555 ARGS:cert=a\\=b,iat-mode=0"
        );
        assert_eq!(IpcLine::CmethodsDone.render(Dialect::Pt2), "CMETHODS DONE");
        assert_eq!(IpcLine::SmethodsDone.render(Dialect::Pt2), "SMETHODS DONE");
        assert_eq!(IpcLine::ProxyDone.render(Dialect::Pt2), "PROXY DONE");
        assert_eq!(IpcLine::ProxyDone.stream(Dialect::Pt2), Stream::Stdout);
    }

    #[test]
    fn s1_3_2_log_two_syntaxes() {
        let l = IpcLine::Log(LogLevel::Warn, "héllo \"x\"\nnext".into());
        assert_eq!(l.render(Dialect::Pt2), "LOG WARN héllo \"x\"?next");
        assert_eq!(
            l.render(Dialect::Pt1),
            "LOG SEVERITY=warning MESSAGE=\"h\\303\\251llo \\\"x\\\"\\nnext\""
        );
        assert_eq!(l.stream(Dialect::Pt2), Stream::Stdout);
        assert_eq!(
            IpcLine::Log(LogLevel::Info, "up".into()).render(Dialect::Pt1),
            "LOG SEVERITY=info MESSAGE=\"up\""
        );
        assert_eq!(
            parse("LOG DEBUG a b").unwrap(),
            Some(IpcLine::Log(LogLevel::Debug, "a b".into()))
        );
        assert!(parse("LOG debug a").is_err());
        assert!(parse("LOG NONE a").is_err());
    }

    #[test]
    fn s1_3_1_ipc_log_level_threshold() {
        assert_eq!(LogLevel::parse_threshold("NONE"), Some(None));
        assert_eq!(
            LogLevel::parse_threshold("warn"),
            Some(Some(LogLevel::Warn))
        );
        assert!(LogLevel::parse_threshold("TRACE").is_none());
        assert!(!LogLevel::Error.passes(None));
        assert!(LogLevel::Error.passes(Some(LogLevel::Warn)));
        assert!(LogLevel::Warn.passes(Some(LogLevel::Warn)));
        assert!(!LogLevel::Info.passes(Some(LogLevel::Warn)));
        assert!(LogLevel::Debug.passes(Some(LogLevel::Debug)));
    }

    #[test]
    fn s1_2_cmessage_smessage_vectors() {
        let l = IpcLine::cmessage("shadow", b"hello").unwrap();
        assert_eq!(l.render(Dialect::Pt2), "CMESSAGE shadow aGVsbG8=");
        assert_eq!(parse("CMESSAGE shadow aGVsbG8=\n").unwrap(), Some(l));
        let s = IpcLine::smessage("obfs4", b"").unwrap();
        assert_eq!(s.render(Dialect::Pt2), "SMESSAGE obfs4");
        assert_eq!(parse("SMESSAGE obfs4").unwrap(), Some(s));
        assert_eq!(
            IpcLine::cmessage("1bad", b"x"),
            Err(LineError::BadTransport("CMESSAGE"))
        );
        assert_eq!(
            IpcLine::cmessage("t", &vec![0; MAX_MESSAGE_PAYLOAD + 1]),
            Err(LineError::TooLong("CMESSAGE"))
        );
        assert!(IpcLine::cmessage("t", &vec![0; MAX_MESSAGE_PAYLOAD]).is_ok());
        let big = format!(
            "CMESSAGE t {}",
            STANDARD.encode(vec![0; MAX_MESSAGE_PAYLOAD + 1])
        );
        assert_eq!(parse(&big), Err(LineError::TooLong("CMESSAGE")));
        assert_eq!(
            parse("CMESSAGE t aGVsbG8"),
            Err(LineError::BadBase64("CMESSAGE"))
        );
        assert_eq!(parse("CMESSAGE"), Err(LineError::Malformed("CMESSAGE")));
        assert_eq!(
            parse("SMESSAGE t-x aGk="),
            Err(LineError::BadTransport("SMESSAGE"))
        );
        assert_eq!(parse("STATUS TRANSPORT=x").unwrap(), None);
        assert_eq!(
            parse("VERSION 2.1").unwrap(),
            Some(IpcLine::Version("2.1".into()))
        );
        assert_eq!(LineError::TooLong("x").kind(), "line_too_long");
    }

    #[test]
    fn stats_request_answer_and_request_errors() {
        assert_eq!(parse("STATS\n").unwrap(), Some(IpcLine::StatsRequest(None)));
        assert_eq!(
            parse("STATS plain").unwrap(),
            Some(IpcLine::StatsRequest(Some("plain".into())))
        );
        assert_eq!(parse("STATS a b"), Err(LineError::BadTransport("STATS")));
        assert_eq!(IpcLine::StatsRequest(None).render(Dialect::Pt2), "STATS");
        let json = r#"[{"transport":"plain","connections_open":0}]"#;
        let a = IpcLine::Stats(json.into());
        assert_eq!(a.render(Dialect::Pt2), format!("STATS {json}"));
        assert_eq!(a.stream(Dialect::Pt2), Stream::Stdout);
        assert_eq!(parse(&a.render(Dialect::Pt2)).unwrap(), Some(a));
        let e = IpcLine::RequestError {
            keyword: "SMESSAGE",
            message: "unknown transport \"x\"\n".into(),
        };
        assert_eq!(
            e.render(Dialect::Pt2),
            "SMESSAGE-ERROR unknown transport \"x\"?"
        );
        assert_eq!(e.stream(Dialect::Pt2), Stream::Stderr);
        assert_eq!(e.stream(Dialect::Pt1), Stream::Stdout);
        assert_eq!(e.exit_code(Dialect::Pt2), None);
    }

    proptest! {
        #[test]
        fn s1_2_cmessage_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..512),
                                    server in any::<bool>()) {
            let line = if server {
                IpcLine::smessage("snowflake", &payload).unwrap()
            } else {
                IpcLine::cmessage("snowflake", &payload).unwrap()
            };
            let text = line.render(Dialect::Pt2);
            prop_assert!(!text.contains('\n'));
            prop_assert_eq!(parse(&text).unwrap(), Some(line));
        }

        #[test]
        fn s1_3_2_rendered_lines_are_single_lines(msg in ".*") {
            for d in ALL {
                for l in [IpcLine::EnvError(msg.clone()), IpcLine::Log(LogLevel::Info, msg.clone())] {
                    let t = l.render(d);
                    prop_assert!(!t.contains('\n') && !t.contains('\r') && !t.contains('\0'));
                }
            }
        }
    }
}
