//! The managed-proxy stdout protocol (pt-spec §2): building lines on the transport side,
//! writing them (the one place that touches stdout), and parsing them on the host side.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Mutex;

use ptkit_core::Args;

use crate::cstring;

/// Longest line the host side accepts from a PT (item H-2).
pub const MAX_LINE_LEN: usize = 64 * 1024;

/// True for a keyword tor accepts: `[A-Za-z0-9_-]+` (item O-2).
pub fn keyword_is_safe(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// True for an argument tor accepts: US-ASCII without NUL or LF (item O-2).
pub fn arg_is_safe(s: &str) -> bool {
    s.bytes().all(|b| b != 0 && b != b'\n' && b < 0x80)
}

/// True for a transport name tor accepts: a C identifier (item O-4).
pub fn is_transport_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Severity of a `LOG` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// `debug`
    Debug,
    /// `info`
    Info,
    /// `notice`
    Notice,
    /// `warning`
    Warning,
    /// `error`
    Error,
}

impl Severity {
    /// The word tor expects.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }

    /// Parses one of tor's five words (case-sensitive, as tor).
    pub fn parse(s: &[u8]) -> Option<Self> {
        Some(match s {
            b"debug" => Severity::Debug,
            b"info" => Severity::Info,
            b"notice" => Severity::Notice,
            b"warning" => Severity::Warning,
            b"error" => Severity::Error,
            _ => return None,
        })
    }
}

/// One line a transport prints.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Line {
    /// `VERSION 1`
    Version,
    /// `VERSION-ERROR no-version`
    VersionError,
    /// `ENV-ERROR <message>`
    EnvError(String),
    /// `PROXY DONE`
    ProxyDone,
    /// `PROXY-ERROR <message>`
    ProxyError(String),
    /// `CMETHOD <name> socks5 <addr>`
    Cmethod {
        /// Transport name.
        name: String,
        /// `socks4` or `socks5`.
        protocol: &'static str,
        /// Where the SOCKS listener is.
        addr: SocketAddr,
    },
    /// `CMETHOD-ERROR <name> <message>`
    CmethodError(String, String),
    /// `CMETHODS DONE`
    CmethodsDone,
    /// `SMETHOD <name> <addr> [ARGS:<args>]`
    Smethod {
        /// Transport name.
        name: String,
        /// Where the transport listens.
        addr: SocketAddr,
        /// What clients need (empty: no ARGS option).
        args: Args,
    },
    /// `SMETHOD-ERROR <name> <message>`
    SmethodError(String, String),
    /// `SMETHODS DONE`
    SmethodsDone,
    /// `LOG SEVERITY=<s> MESSAGE="<m>"`
    Log(Severity, String),
    /// `STATUS [TRANSPORT=<t>] K="V" …` (values always quoted, item Q-2).
    Status(Option<String>, Vec<(String, String)>),
}

impl Line {
    /// The line's text without the newline; any unsafe byte in a message is replaced with `?`
    /// so the line is always valid pure ASCII (items O-2, O-6, Q-4).
    pub fn render(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii() && c != '\n' && c != '\r' && c != '\0' {
                        c
                    } else {
                        '?'
                    }
                })
                .collect()
        };
        match self {
            Line::Version => "VERSION 1".into(),
            Line::VersionError => "VERSION-ERROR no-version".into(),
            Line::EnvError(m) => format!("ENV-ERROR {}", clean(m)),
            Line::ProxyDone => "PROXY DONE".into(),
            Line::ProxyError(m) => format!("PROXY-ERROR {}", clean(m)),
            Line::Cmethod {
                name,
                protocol,
                addr,
            } => format!("CMETHOD {} {protocol} {addr}", clean(name)),
            Line::CmethodError(n, m) => format!("CMETHOD-ERROR {} {}", clean(n), clean(m)),
            Line::CmethodsDone => "CMETHODS DONE".into(),
            Line::Smethod { name, addr, args } => {
                if args.is_empty() {
                    format!("SMETHOD {} {addr}", clean(name))
                } else {
                    // tor and Arti split on spaces and no escape survives that (item V-2):
                    // transports must not advertise spaces; replace any that slip through.
                    let encoded = clean(&args.encode_smethod()).replace(' ', "?");
                    format!("SMETHOD {} {addr} ARGS:{encoded}", clean(name))
                }
            }
            Line::SmethodError(n, m) => format!("SMETHOD-ERROR {} {}", clean(n), clean(m)),
            Line::SmethodsDone => "SMETHODS DONE".into(),
            // tor rejects a value that decodes to NUL, dropping the whole line: never send one.
            Line::Log(sev, msg) => format!(
                "LOG SEVERITY={} MESSAGE={}",
                sev.as_str(),
                cstring::encode(msg.replace('\0', "?").as_bytes())
            ),
            Line::Status(transport, kv) => {
                let mut out = String::from("STATUS");
                if let Some(t) = transport {
                    out.push_str(" TRANSPORT=");
                    out.push_str(&clean(t));
                }
                for (k, v) in kv {
                    out.push(' ');
                    out.push_str(
                        &k.chars()
                            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                            .collect::<String>(),
                    );
                    out.push('=');
                    out.push_str(&cstring::encode(v.replace('\0', "?").as_bytes()));
                }
                out
            }
        }
    }
}

/// Serialises protocol lines onto stdout (or any writer in tests), one flushed line at a time.
/// This is the only writer of stdout in managed mode (item O-10).
pub struct LineWriter {
    out: Mutex<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for LineWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LineWriter")
    }
}

impl LineWriter {
    /// Writes to the process's stdout.
    pub fn stdout() -> Self {
        LineWriter {
            out: Mutex::new(Box::new(std::io::stdout())),
        }
    }

    /// Writes to `w` (tests, IPC over other pipes).
    pub fn new(w: Box<dyn Write + Send>) -> Self {
        LineWriter { out: Mutex::new(w) }
    }

    /// Writes one line and flushes (item O-3). Errors (tor gone) are ignored: there is no one
    /// left to tell, and the stdin/signal lifecycle will end the process.
    pub fn send(&self, line: &Line) {
        let mut text = line.render();
        text.push('\n');
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
    }
}

/// A line a PT printed, as the host side understands it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostLine {
    /// `VERSION <v>` (the text after the keyword).
    Version(String),
    /// `VERSION-ERROR …`
    VersionError(String),
    /// `ENV-ERROR …`
    EnvError(String),
    /// `PROXY DONE`
    ProxyDone,
    /// `PROXY-ERROR …`
    ProxyError(String),
    /// A client method.
    Cmethod {
        /// Transport name.
        name: String,
        /// `socks4` or `socks5`.
        protocol: String,
        /// The SOCKS listener.
        addr: SocketAddr,
    },
    /// `CMETHOD-ERROR <name> <msg>`
    CmethodError(String, String),
    /// `CMETHODS DONE`
    CmethodsDone,
    /// A server method.
    Smethod {
        /// Transport name.
        name: String,
        /// The transport's listener.
        addr: SocketAddr,
        /// Parsed `ARGS:` option (empty when absent).
        args: Args,
    },
    /// `SMETHOD-ERROR <name> <msg>`
    SmethodError(String, String),
    /// `SMETHODS DONE`
    SmethodsDone,
    /// A `LOG` line.
    Log(Severity, String),
    /// A `STATUS` line's key/value pairs in order.
    Status(Vec<(String, String)>),
    /// A keyword the host does not know (ignored, item O-5).
    Unknown(String),
}

/// A line with a known keyword but a malformed body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {keyword} line: {reason}")]
pub struct LineError {
    /// The keyword.
    pub keyword: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn err(keyword: &'static str, reason: impl Into<String>) -> LineError {
    LineError {
        keyword,
        reason: reason.into(),
    }
}

fn method_error(rest: &str) -> (String, String) {
    match rest.split_once(' ') {
        Some((n, m)) => (n.to_owned(), m.to_owned()),
        None => (rest.to_owned(), String::new()),
    }
}

fn parse_method_addr(keyword: &'static str, s: &str) -> Result<SocketAddr, LineError> {
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| err(keyword, format!("address {s:?} is not IP:port")))?;
    if addr.port() == 0 {
        return Err(err(keyword, "port 0"));
    }
    Ok(addr)
}

/// Parses one stdout line (without its newline; a trailing CR is dropped) the way tor does
/// (items O-1, O-8, Q-5). LOG/STATUS lines that tor would reject are errors too; the caller
/// decides that only METHOD-level errors are fatal.
pub fn parse_host_line(line: &str) -> Result<HostLine, LineError> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
    Ok(match keyword {
        "ENV-ERROR" => HostLine::EnvError(rest.to_owned()),
        "VERSION-ERROR" => HostLine::VersionError(rest.to_owned()),
        "VERSION" => HostLine::Version(rest.to_owned()),
        "CMETHODS" if rest == "DONE" => HostLine::CmethodsDone,
        "SMETHODS" if rest == "DONE" => HostLine::SmethodsDone,
        "CMETHOD-ERROR" => {
            let (n, m) = method_error(rest);
            HostLine::CmethodError(n, m)
        }
        "SMETHOD-ERROR" => {
            let (n, m) = method_error(rest);
            HostLine::SmethodError(n, m)
        }
        "CMETHOD" => {
            let t: Vec<&str> = rest.split(' ').filter(|t| !t.is_empty()).collect();
            if t.len() < 3 {
                return Err(err("CMETHOD", "needs name, protocol and address"));
            }
            if !is_transport_name(t[0]) {
                return Err(err(
                    "CMETHOD",
                    format!("{:?} is not a transport name", t[0]),
                ));
            }
            if t[1] != "socks4" && t[1] != "socks5" {
                return Err(err("CMETHOD", format!("unknown protocol {:?}", t[1])));
            }
            HostLine::Cmethod {
                name: t[0].into(),
                protocol: t[1].into(),
                addr: parse_method_addr("CMETHOD", t[2])?,
            }
        }
        "SMETHOD" => {
            let t: Vec<&str> = rest.split(' ').filter(|t| !t.is_empty()).collect();
            if t.len() < 2 {
                return Err(err("SMETHOD", "needs name and address"));
            }
            if !is_transport_name(t[0]) {
                return Err(err(
                    "SMETHOD",
                    format!("{:?} is not a transport name", t[0]),
                ));
            }
            let addr = parse_method_addr("SMETHOD", t[1])?;
            let args = match t.get(2).and_then(|o| o.strip_prefix("ARGS:")) {
                Some(a) => Args::parse_smethod(a).map_err(|e| err("SMETHOD", e.to_string()))?,
                None => Args::new(),
            };
            HostLine::Smethod {
                name: t[0].into(),
                addr,
                args,
            }
        }
        "PROXY" if rest == "DONE" => HostLine::ProxyDone,
        "PROXY-ERROR" => HostLine::ProxyError(rest.to_owned()),
        "LOG" => {
            let kv = parse_kvline(rest.as_bytes()).map_err(|e| err("LOG", e))?;
            let sev = kv
                .iter()
                .rev()
                .find(|(k, _)| k == "SEVERITY")
                .ok_or_else(|| err("LOG", "no SEVERITY"))?;
            let sev = Severity::parse(sev.1.as_bytes())
                .ok_or_else(|| err("LOG", format!("invalid severity {:?}", sev.1)))?;
            let msg = kv
                .iter()
                .rev()
                .find(|(k, _)| k == "MESSAGE")
                .ok_or_else(|| err("LOG", "no MESSAGE"))?;
            HostLine::Log(sev, msg.1.clone())
        }
        "STATUS" => HostLine::Status(parse_kvline(rest.as_bytes()).map_err(|e| err("STATUS", e))?),
        _ => HostLine::Unknown(line.to_owned()),
    })
}

/// Parses tor's quoted `K=V` line body (`kvline_parse` with quoting): items separated by
/// whitespace, values either bare words or C strings.
pub fn parse_kvline(mut s: &[u8]) -> Result<Vec<(String, String)>, String> {
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\r' | 0x0b | b'\n');
    let mut out = Vec::new();
    loop {
        while let Some((&b, rest)) = s.split_first() {
            if !is_space(b) {
                break;
            }
            s = rest;
        }
        if s.is_empty() {
            return Ok(out);
        }
        let key_end = s
            .iter()
            .position(|&b| b == b'=' || is_space(b))
            .unwrap_or(s.len());
        if s.get(key_end) != Some(&b'=') {
            return Err("item without '='".into());
        }
        let key = &s[..key_end];
        if key.is_empty() || !key.iter().all(|b| b.is_ascii_graphic() && *b != b'"') {
            return Err("bad key".into());
        }
        s = &s[key_end + 1..];
        let value = if s.first() == Some(&b'"') {
            let (v, used) = cstring::decode(s).map_err(|e| e.to_string())?;
            s = &s[used..];
            v
        } else {
            let end = s.iter().position(|&b| is_space(b)).unwrap_or(s.len());
            let v = s[..end].to_vec();
            s = &s[end..];
            v
        };
        out.push((
            String::from_utf8_lossy(key).into_owned(),
            String::from_utf8_lossy(&value).into_owned(),
        ));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn o2_line_safety_vectors() {
        for ok in ["", "0-9a-zA-Z-_", "CMETHOD"] {
            assert!(keyword_is_safe(ok));
        }
        for bad in ["CMETHOD:", "a b c", "CMETHOD\x7f", "CMÉTHOD"] {
            assert!(!keyword_is_safe(bad), "{bad}");
        }
        for ok in [
            "",
            "abc",
            "127.0.0.1:8000",
            "a\\b",
            "ab\\",
            "abc\x7f",
            "var=GVsbG8\\=",
        ] {
            assert!(arg_is_safe(ok));
        }
        for bad in ["étude", "a\nb", "ab\\\n", "ab\n\\"] {
            assert!(!arg_is_safe(bad), "{bad}");
        }
    }

    #[test]
    fn o4_transport_names() {
        for ok in ["obfs4", "plain", "_x", "meek_lite"] {
            assert!(is_transport_name(ok));
        }
        for bad in ["", "4x", "rf*1149", "a-b", "a b"] {
            assert!(!is_transport_name(bad), "{bad}");
        }
    }

    #[test]
    fn o1_rendered_lines_are_canonical() {
        let addr: SocketAddr = "127.0.0.1:32525".parse().unwrap();
        assert_eq!(Line::Version.render(), "VERSION 1");
        assert_eq!(Line::VersionError.render(), "VERSION-ERROR no-version");
        assert_eq!(
            Line::Cmethod {
                name: "plain".into(),
                protocol: "socks5",
                addr
            }
            .render(),
            "CMETHOD plain socks5 127.0.0.1:32525"
        );
        let args = Args::new().with("cert", "abc=,def").with("iat-mode", "0");
        assert_eq!(
            Line::Smethod {
                name: "obfs4".into(),
                addr,
                args
            }
            .render(),
            "SMETHOD obfs4 127.0.0.1:32525 ARGS:cert=abc\\=\\,def,iat-mode=0"
        );
        assert_eq!(
            Line::Smethod {
                name: "plain".into(),
                addr,
                args: Args::new()
            }
            .render(),
            "SMETHOD plain 127.0.0.1:32525"
        );
        assert_eq!(
            Line::Log(Severity::Notice, "a \"b\"\nc".into()).render(),
            r#"LOG SEVERITY=notice MESSAGE="a \"b\"\nc""#
        );
        assert_eq!(
            Line::Status(
                Some("plain".into()),
                vec![("CONNECT".into(), "Success".into())]
            )
            .render(),
            r#"STATUS TRANSPORT=plain CONNECT="Success""#
        );
        assert_eq!(
            Line::EnvError("bad\nthing é".into()).render(),
            "ENV-ERROR bad?thing ?"
        );
    }

    /// Found by the host_lines fuzz target: a NUL made tor drop the whole LOG line.
    #[test]
    fn q4_nul_in_log_and_status_values_is_replaced() {
        let line = Line::Log(Severity::Debug, "a\0b".into()).render();
        assert_eq!(
            parse_host_line(&line).unwrap(),
            HostLine::Log(Severity::Debug, "a?b".into())
        );
        let st = Line::Status(None, vec![("K".into(), "\0".into())]).render();
        assert!(parse_host_line(&st).is_ok(), "{st}");
    }

    #[test]
    fn v2_smethod_args_never_contain_spaces() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let line = Line::Smethod {
            name: "t".into(),
            addr,
            args: Args::new().with("k", "a b"),
        }
        .render();
        assert_eq!(line.split(' ').count(), 4, "{line}");
    }

    #[test]
    fn h3_parses_arti_vectors() {
        assert_eq!(
            parse_host_line("VERSION-ERROR no-version").unwrap(),
            HostLine::VersionError("no-version".into())
        );
        assert_eq!(
            parse_host_line("VERSION 1").unwrap(),
            HostLine::Version("1".into())
        );
        assert_eq!(
            parse_host_line(
                "ENV-ERROR No TOR_PT_AUTH_COOKIE_FILE when TOR_PT_EXTENDED_SERVER_PORT set"
            )
            .unwrap(),
            HostLine::EnvError(
                "No TOR_PT_AUTH_COOKIE_FILE when TOR_PT_EXTENDED_SERVER_PORT set".into()
            )
        );
        assert_eq!(parse_host_line("PROXY DONE").unwrap(), HostLine::ProxyDone);
        assert_eq!(
            parse_host_line("PROXY-ERROR SOCKS 4 upstream proxies unsupported").unwrap(),
            HostLine::ProxyError("SOCKS 4 upstream proxies unsupported".into())
        );
        assert_eq!(
            parse_host_line("CMETHOD trebuchet socks5 127.0.0.1:19999").unwrap(),
            HostLine::Cmethod {
                name: "trebuchet".into(),
                protocol: "socks5".into(),
                addr: "127.0.0.1:19999".parse().unwrap()
            }
        );
        assert_eq!(
            parse_host_line("CMETHOD-ERROR trebuchet no rocks available").unwrap(),
            HostLine::CmethodError("trebuchet".into(), "no rocks available".into())
        );
        assert_eq!(
            parse_host_line("CMETHODS DONE\r").unwrap(),
            HostLine::CmethodsDone
        );
        assert_eq!(
            parse_host_line("SMETHOD-ERROR trebuchet no cows available").unwrap(),
            HostLine::SmethodError("trebuchet".into(), "no cows available".into())
        );
        assert_eq!(
            parse_host_line("LOG SEVERITY=debug MESSAGE=\"Connected to bridge A\"").unwrap(),
            HostLine::Log(Severity::Debug, "Connected to bridge A".into())
        );
        assert_eq!(
            parse_host_line(r#"LOG SEVERITY=debug MESSAGE="\r\n\t""#).unwrap(),
            HostLine::Log(Severity::Debug, "\r\n\t".into())
        );
        assert_eq!(
            parse_host_line("LOG SEVERITY=debug MESSAGE=").unwrap(),
            HostLine::Log(Severity::Debug, "".into())
        );
        // tor rejects \a (Arti would decode it to "a"); tor accepts \1..\7 octal.
        assert!(parse_host_line(r#"LOG SEVERITY=debug MESSAGE="\a""#).is_err());
        assert_eq!(
            parse_host_line(r#"LOG MESSAGE="\7" SEVERITY=debug"#).unwrap(),
            HostLine::Log(Severity::Debug, "\x07".into())
        );
        let st = parse_host_line(r#"STATUS ADDRESS=198.51.100.222:2222 CONNECT=Failed FINGERPRINT=X ERRSTR="Connection refused""#).unwrap();
        let HostLine::Status(kv) = st else { panic!() };
        assert_eq!(kv[3], ("ERRSTR".into(), "Connection refused".into()));
        let HostLine::Smethod { args, .. } =
            parse_host_line("SMETHOD rot_by_N 198.51.100.1:2323 ARGS:N=13").unwrap()
        else {
            panic!()
        };
        assert_eq!(args.get("N"), Some("13"));
        assert!(
            parse_host_line("SMETHOD trebuchet 198.51.100.1:19999 ARGS:iat-mode=fo=o").is_err()
        );
    }

    #[test]
    fn q5_tor_observed_log_reactions() {
        assert!(parse_host_line("LOG SEVERITY=notice MESSAGE=two words").is_err());
        assert!(parse_host_line("LOG SEVERITY=loud MESSAGE=\"bad severity\"").is_err());
        assert!(parse_host_line("LOG SEVERITY=notice").is_err());
        assert!(parse_host_line(r#"LOG SEVERITY=notice MESSAGE="bad escape \?""#).is_err());
        assert_eq!(
            parse_host_line("LOG SEVERITY=warning MESSAGE=unquoted").unwrap(),
            HostLine::Log(Severity::Warning, "unquoted".into())
        );
        assert_eq!(
            parse_host_line("FROBNICATE whatever").unwrap(),
            HostLine::Unknown("FROBNICATE whatever".into())
        );
        assert!(parse_host_line("CMETHOD dummy socks5 localhost:1080").is_err());
    }

    #[test]
    fn rendered_lines_parse_back() {
        let addr: SocketAddr = "[::1]:4443".parse().unwrap();
        let args = Args::new().with("cert", "ab,c=d\\").with("iat-mode", "0");
        let line = Line::Smethod {
            name: "obfs4".into(),
            addr,
            args: args.clone(),
        }
        .render();
        let HostLine::Smethod {
            args: back,
            addr: a,
            ..
        } = parse_host_line(&line).unwrap()
        else {
            panic!()
        };
        assert_eq!((back, a), (args, addr));
        let msg: String = (1u8..128).map(char::from).collect();
        let HostLine::Log(_, m) =
            parse_host_line(&Line::Log(Severity::Info, msg.clone()).render()).unwrap()
        else {
            panic!()
        };
        assert_eq!(m, msg);
    }
}
