//! Sans-IO host side of the 2.x/3.0 IPC: the command line a parent passes, and a state
//! machine fed the child's output lines one at a time.

use std::net::SocketAddr;
use std::path::Path;

use ptkit_core::{Args, Target};
use ptkit_tor::host::{ServerTransportSpec, encode_server_options};
use ptkit_tor::lines::{HostLine, is_transport_name, parse_host_line};
use serde_json::{Map, Value};

use crate::lines::LogLevel;
use crate::version::PtVersion;

use super::AdapterError;

/// What a parent asks a 2.x/3.0 child to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchRole {
    /// A client: a SOCKS5 listener (`-proxylistenaddr` when given).
    Client {
        /// `-proxylistenaddr`.
        listen: Option<SocketAddr>,
        /// `-target`: where the bound request `[::0]:0` goes.
        target: Option<Target>,
    },
    /// A server listening on `bind`, forwarding to `target`.
    Server {
        /// `-bindaddr <transport>-<bind>`.
        bind: SocketAddr,
        /// `-orport` (before 3.0) or `-target` (3.0).
        target: Target,
    },
}

/// Encodes `-options` for `version`: PT 1.0's `t:k=v;…` microformat before 2.2, JSON keyed
/// by transport from 2.2 (§1.3.1). `None` when there are no options.
pub fn encode_options(version: PtVersion, transport: &str, options: &Args) -> Option<String> {
    if options.is_empty() {
        return None;
    }
    if version.json_options() {
        let inner: Map<String, Value> = options
            .iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
            .collect();
        let mut outer = Map::new();
        outer.insert(transport.to_owned(), Value::Object(inner));
        Some(Value::Object(outer).to_string())
    } else {
        Some(encode_server_options(&[ServerTransportSpec {
            name: transport.to_owned(),
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            options: options.clone(),
        }]))
    }
}

/// The command line for a 2.x/3.0 child (flags only, no `TOR_PT_*` variables): always
/// `-ptversion`, `-client`/`-server`, `-transports`, `-state` and `-exit-on-stdin-close`.
pub fn build_args(
    version: PtVersion,
    transport: &str,
    role: &LaunchRole,
    state_dir: &Path,
    options: &Args,
    proxy: Option<&str>,
) -> Vec<String> {
    let mut a: Vec<String> = vec!["-ptversion".into(), version.as_str().into()];
    a.push(
        match role {
            LaunchRole::Client { .. } => "-client",
            LaunchRole::Server { .. } => "-server",
        }
        .into(),
    );
    a.extend(["-transports".into(), transport.to_owned()]);
    a.extend(["-state".into(), state_dir.display().to_string()]);
    a.push("-exit-on-stdin-close".into());
    if let Some(p) = proxy {
        a.extend(["-proxy".into(), p.to_owned()]);
    }
    if let Some(o) = encode_options(version, transport, options) {
        a.extend(["-options".into(), o]);
    }
    match role {
        LaunchRole::Client { listen, target } => {
            if let Some(l) = listen {
                a.extend(["-proxylistenaddr".into(), l.to_string()]);
            }
            if let Some(t) = target {
                a.extend(["-target".into(), t.to_string()]);
            }
        }
        LaunchRole::Server { bind, target } => {
            a.extend(["-bindaddr".into(), format!("{transport}-{bind}")]);
            let flag = if version >= PtVersion::V3_0 {
                "-target"
            } else {
                "-orport"
            };
            a.extend([flag.into(), target.to_string()]);
        }
    }
    a
}

/// How a launched method is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodKind {
    /// A SOCKS5 listener (`CMETHOD t socks5 addr`).
    Socks5,
    /// A SOCKS4 listener (PT 1.0 only).
    Socks4,
    /// `transparent-TCP`: every connection goes to the configured target.
    TransparentTcp,
    /// `transparent-UDP`.
    TransparentUdp,
    /// `STUN`.
    Stun,
    /// A server method (`SMETHOD`).
    Server,
}

/// One launched transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// Transport name.
    pub name: String,
    /// How it is reached.
    pub kind: MethodKind,
    /// Its listener.
    pub addr: SocketAddr,
    /// `SMETHOD … ARGS:` (empty for client methods).
    pub args: Args,
}

/// What one output line meant.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpcHostEvent {
    /// `VERSION` accepted.
    Version,
    /// `PROXY DONE`.
    ProxyDone,
    /// A method was launched.
    Method(Method),
    /// `CMETHOD-ERROR` / `SMETHOD-ERROR` (not fatal).
    MethodError(String, String),
    /// `*METHODS DONE`: the launched methods, in order.
    Done(Vec<Method>),
    /// A `LOG` line (either syntax).
    Log(String),
    /// Anything else (ignored, as a parent must).
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Configuring,
    Done,
}

/// The parent's view of a 2.x/3.0 child's stdout (and of its stderr error lines).
#[derive(Debug, Clone)]
pub struct IpcHostParser {
    offered: PtVersion,
    server: bool,
    state: State,
    methods: Vec<Method>,
}

impl IpcHostParser {
    /// A parser for a child offered `version` in the given role.
    pub fn new(version: PtVersion, server: bool) -> Self {
        IpcHostParser {
            offered: version,
            server,
            state: State::Start,
            methods: Vec::new(),
        }
    }

    /// True once `*METHODS DONE` was seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds one line (without its newline). Fatal lines (`VERSION-ERROR`, `ENV-ERROR`,
    /// `PROXY-ERROR`), a wrong version, a malformed method line or a method line in the
    /// wrong role or place are errors.
    pub fn feed(&mut self, line: &str) -> Result<IpcHostEvent, AdapterError> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
        match keyword {
            "VERSION" => {
                if self.state != State::Start {
                    return Err(AdapterError::Protocol(format!(
                        "VERSION after configuration started: {line:?}"
                    )));
                }
                if PtVersion::from_token(rest) != Some(self.offered) {
                    return Err(AdapterError::UnsupportedVersion(rest.to_owned()));
                }
                self.state = State::Configuring;
                return Ok(IpcHostEvent::Version);
            }
            "LOG" => {
                // 2.2 syntax `LOG LEVEL message`, else PT 1.0's `LOG SEVERITY=… MESSAGE=…`.
                if let Some((level, msg)) = rest.split_once(' ')
                    && LogLevel::parse_threshold(level).flatten().is_some()
                {
                    return Ok(IpcHostEvent::Log(format!("{level} {msg}")));
                }
                return Ok(match parse_host_line(line) {
                    Ok(HostLine::Log(sev, msg)) => IpcHostEvent::Log(format!("{sev:?} {msg}")),
                    _ => IpcHostEvent::Ignored,
                });
            }
            "CMETHOD" => {
                if self.server || self.state != State::Configuring {
                    return Err(AdapterError::Protocol(format!("unexpected {line:?}")));
                }
                let t: Vec<&str> = rest.split(' ').filter(|t| !t.is_empty()).collect();
                let (Some(name), Some(mode), Some(addr)) = (t.first(), t.get(1), t.get(2)) else {
                    return Err(AdapterError::Protocol(format!("malformed {line:?}")));
                };
                if !is_transport_name(name) {
                    return Err(AdapterError::Protocol(format!("bad name in {line:?}")));
                }
                let kind = match mode.to_ascii_lowercase().as_str() {
                    "socks5" => MethodKind::Socks5,
                    "socks4" => MethodKind::Socks4,
                    "transparent-tcp" => MethodKind::TransparentTcp,
                    "transparent-udp" => MethodKind::TransparentUdp,
                    "stun" => MethodKind::Stun,
                    _ => return Err(AdapterError::Protocol(format!("unknown mode in {line:?}"))),
                };
                let addr: SocketAddr = addr
                    .parse()
                    .map_err(|_| AdapterError::Protocol(format!("bad address in {line:?}")))?;
                let m = Method {
                    name: (*name).to_owned(),
                    kind,
                    addr,
                    args: Args::new(),
                };
                if !self.methods.iter().any(|x| x.name == m.name) {
                    self.methods.push(m.clone());
                }
                return Ok(IpcHostEvent::Method(m));
            }
            _ => {}
        }
        let parsed = parse_host_line(line).map_err(|e| AdapterError::Protocol(e.to_string()))?;
        Ok(match parsed {
            HostLine::VersionError(m) => return Err(AdapterError::VersionError(m)),
            HostLine::EnvError(m) => return Err(AdapterError::EnvError(m)),
            HostLine::ProxyError(m) => return Err(AdapterError::ProxyError(m)),
            HostLine::ProxyDone => IpcHostEvent::ProxyDone,
            HostLine::Smethod { name, addr, args } => {
                if !self.server || self.state != State::Configuring {
                    return Err(AdapterError::Protocol(format!("unexpected {line:?}")));
                }
                let m = Method {
                    name,
                    kind: MethodKind::Server,
                    addr,
                    args,
                };
                if !self.methods.iter().any(|x| x.name == m.name) {
                    self.methods.push(m.clone());
                }
                IpcHostEvent::Method(m)
            }
            HostLine::CmethodError(n, m) | HostLine::SmethodError(n, m) => {
                IpcHostEvent::MethodError(n, m)
            }
            HostLine::CmethodsDone | HostLine::SmethodsDone => {
                if self.state != State::Configuring
                    || matches!(parsed, HostLine::CmethodsDone) == self.server
                {
                    return Err(AdapterError::Protocol(format!("unexpected {line:?}")));
                }
                self.state = State::Done;
                IpcHostEvent::Done(self.methods.clone())
            }
            _ => IpcHostEvent::Ignored,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn command_lines_per_version() {
        let mut opts = Args::new();
        opts.push("cert", "AB;C");
        let client = build_args(
            PtVersion::V2_1,
            "obfs4",
            &LaunchRole::Client {
                listen: Some("127.0.0.1:0".parse().unwrap()),
                target: Some(Target::parse("192.0.2.1:443").unwrap()),
            },
            Path::new("/s"),
            &opts,
            None,
        );
        assert_eq!(
            client.join(" "),
            "-ptversion 2.1 -client -transports obfs4 -state /s -exit-on-stdin-close \
             -options obfs4:cert=AB\\;C -proxylistenaddr 127.0.0.1:0 -target 192.0.2.1:443"
        );
        let server = build_args(
            PtVersion::V3_0,
            "plain",
            &LaunchRole::Server {
                bind: "127.0.0.1:4433".parse().unwrap(),
                target: Target::parse("127.0.0.1:9001").unwrap(),
            },
            Path::new("/s"),
            &opts,
            Some("socks5://127.0.0.1:1"),
        );
        assert_eq!(
            server.join(" "),
            "-ptversion 3.0 -server -transports plain -state /s -exit-on-stdin-close \
             -proxy socks5://127.0.0.1:1 -options {\"plain\":{\"cert\":\"AB;C\"}} \
             -bindaddr plain-127.0.0.1:4433 -target 127.0.0.1:9001"
        );
        let old = build_args(
            PtVersion::V2_0,
            "plain",
            &LaunchRole::Server {
                bind: "127.0.0.1:1".parse().unwrap(),
                target: Target::parse("127.0.0.1:2").unwrap(),
            },
            Path::new("/s"),
            &Args::new(),
            None,
        );
        assert!(
            old.join(" ")
                .ends_with("-bindaddr plain-127.0.0.1:1 -orport 127.0.0.1:2")
        );
    }

    #[test]
    fn client_and_server_line_sequences() {
        let mut p = IpcHostParser::new(PtVersion::V2_2, false);
        assert_eq!(p.feed("VERSION 2.2").unwrap(), IpcHostEvent::Version);
        assert!(matches!(
            p.feed("LOG INFO hello").unwrap(),
            IpcHostEvent::Log(_)
        ));
        assert!(matches!(
            p.feed("CMETHOD plain socks5 127.0.0.1:5555").unwrap(),
            IpcHostEvent::Method(_)
        ));
        assert!(matches!(
            p.feed("CMETHOD-ERROR nope no such transport").unwrap(),
            IpcHostEvent::MethodError(..)
        ));
        assert_eq!(p.feed("SOMETHING new").unwrap(), IpcHostEvent::Ignored);
        let IpcHostEvent::Done(m) = p.feed("CMETHODS DONE").unwrap() else {
            panic!()
        };
        assert_eq!(m[0].kind, MethodKind::Socks5);
        assert_eq!(m[0].addr, "127.0.0.1:5555".parse().unwrap());

        let mut s = IpcHostParser::new(PtVersion::V3_0, true);
        s.feed("VERSION 3").unwrap();
        let IpcHostEvent::Method(m) = s.feed("SMETHOD plain 127.0.0.1:1 ARGS:a=b").unwrap() else {
            panic!()
        };
        assert_eq!(m.args.get("a"), Some("b"));
        assert!(s.feed("CMETHODS DONE").is_err());
    }

    #[test]
    fn fatal_and_misplaced_lines() {
        let mut p = IpcHostParser::new(PtVersion::V2_1, false);
        assert!(matches!(
            p.feed("VERSION 2.2"),
            Err(AdapterError::UnsupportedVersion(_))
        ));
        let mut p = IpcHostParser::new(PtVersion::V2_1, false);
        assert!(p.feed("CMETHOD plain socks5 127.0.0.1:1").is_err());
        assert!(matches!(
            p.feed("VERSION-ERROR no-version"),
            Err(AdapterError::VersionError(_))
        ));
        assert!(matches!(
            p.feed("ENV-ERROR bad"),
            Err(AdapterError::EnvError(_))
        ));
        assert!(matches!(
            p.feed("PROXY-ERROR x"),
            Err(AdapterError::ProxyError(_))
        ));
        let mut p = IpcHostParser::new(PtVersion::V2_0, false);
        p.feed("VERSION 2.0").unwrap();
        for bad in [
            "CMETHOD plain",
            "CMETHOD pl-ain socks5 127.0.0.1:1",
            "CMETHOD plain carrier-pigeon 127.0.0.1:1",
            "CMETHOD plain socks5 localhost:1",
            "SMETHOD plain 127.0.0.1:1",
        ] {
            assert!(p.feed(bad).is_err(), "{bad}");
        }
    }
}
