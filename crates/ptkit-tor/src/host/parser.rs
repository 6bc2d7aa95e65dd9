//! The sans-IO stdout state machine (items H-2..H-5, O-5, O-7, Q-5).

use std::net::SocketAddr;

use ptkit_core::Args;

use crate::lines::{HostLine, Severity, parse_host_line};

use super::*;

/// How a method is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodProtocol {
    /// A client method behind a SOCKS4 listener.
    Socks4,
    /// A client method behind a SOCKS5 listener.
    Socks5,
    /// A server method (the transport's own listener).
    Server,
}

/// One transport the PT launched (`CMETHOD` or `SMETHOD`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtMethod {
    /// Transport name.
    pub name: String,
    /// SOCKS version for client methods, [`MethodProtocol::Server`] for server methods.
    pub protocol: MethodProtocol,
    /// The listener's address.
    pub addr: SocketAddr,
    /// `SMETHOD … ARGS:` (what clients need); empty for client methods.
    pub args: Args,
}

/// A `CMETHOD-ERROR` / `SMETHOD-ERROR` (a per-transport failure, item H-4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodError {
    /// Transport name.
    pub transport: String,
    /// The PT's message.
    pub message: String,
}

/// What the PT configured, known at `*METHODS DONE`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PtMethods {
    /// Launched transports in the order printed (a repeated name keeps its first line).
    pub methods: Vec<PtMethod>,
    /// Per-transport errors in the order printed.
    pub errors: Vec<MethodError>,
    /// Requested transports without a METHOD line (whether or not an error explained why).
    pub missing: Vec<String>,
}

/// What one stdout line meant.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostEvent {
    /// `VERSION 1` accepted.
    Version,
    /// `PROXY DONE` accepted.
    ProxyDone,
    /// A transport was launched.
    Method(PtMethod),
    /// A transport failed; the PT goes on (item H-4).
    MethodError(MethodError),
    /// `*METHODS DONE`: configuration is complete.
    Done(PtMethods),
    /// A `LOG` line.
    Log(Severity, String),
    /// A `STATUS` line's pairs in order.
    Status(Vec<(String, String)>),
    /// A line that was ignored: unknown keyword (item O-5), a `PROXY DONE` nobody asked for,
    /// or a repeated method.
    Ignored(String),
    /// A malformed `LOG`/`STATUS` line: only the line is dropped (item Q-5).
    Warning(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ParserState {
    AwaitingVersion,
    AcceptingMethods,
    Done,
    Failed,
}

/// The host-side managed-proxy state machine, sans IO: feed it stdout lines one at a time.
///
/// It follows tor (spec §2.2, §6.1): `VERSION` first and exactly `1`; `VERSION-ERROR`,
/// `ENV-ERROR` and `PROXY-ERROR` are fatal; METHOD lines only between `VERSION` and
/// `*METHODS DONE`; after DONE only `LOG`/`STATUS`/unknown lines; METHOD-ERROR is
/// per-transport; `PROXY DONE` required iff a proxy was passed. Once it returned an error
/// every later line is an error too.
#[derive(Debug, Clone)]
pub struct HostParser {
    server: bool,
    requested: Vec<String>,
    proxy_expected: bool,
    proxy_done: bool,
    pub(super) state: ParserState,
    result: PtMethods,
}

impl HostParser {
    /// A parser for a client PT asked for `transports`, with or without `TOR_PT_PROXY`.
    pub fn client(transports: &[String], proxy_passed: bool) -> Self {
        Self::new(false, transports.to_vec(), proxy_passed)
    }

    /// A parser for a server PT asked for `transports`.
    pub fn server(transports: &[String]) -> Self {
        Self::new(true, transports.to_vec(), false)
    }

    /// A parser matching a launch role.
    pub fn for_role(role: &HostRole) -> Self {
        match role {
            HostRole::Client { transports, proxy } => Self::client(transports, proxy.is_some()),
            HostRole::Server { transports, .. } => Self::new(
                true,
                transports.iter().map(|t| t.name.clone()).collect(),
                false,
            ),
        }
    }

    fn new(server: bool, requested: Vec<String>, proxy_expected: bool) -> Self {
        HostParser {
            server,
            requested,
            proxy_expected,
            proxy_done: false,
            state: ParserState::AwaitingVersion,
            result: PtMethods::default(),
        }
    }

    /// True once `*METHODS DONE` was accepted.
    pub fn is_done(&self) -> bool {
        self.state == ParserState::Done
    }

    fn state_name(&self) -> &'static str {
        match self.state {
            ParserState::AwaitingVersion => "before VERSION",
            ParserState::AcceptingMethods => "while accepting methods",
            ParserState::Done => "after METHODS DONE",
            ParserState::Failed => "after a protocol failure",
        }
    }

    /// Feeds one line (without its LF; a trailing CR is tolerated, item O-1).
    pub fn feed(&mut self, line: &str) -> Result<HostEvent, HostError> {
        let result = self.step(line);
        if result.is_err() {
            self.state = ParserState::Failed;
        }
        result
    }

    fn step(&mut self, raw: &str) -> Result<HostEvent, HostError> {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if self.state == ParserState::Failed {
            return Err(unexpected(line, self.state_name()));
        }
        let parsed = match parse_host_line(line) {
            Ok(p) => p,
            Err(e) if e.keyword == "LOG" || e.keyword == "STATUS" => {
                return Ok(HostEvent::Warning(e.to_string()));
            }
            Err(e) => return Err(HostError::MalformedLine(e)),
        };
        let accepting = self.state == ParserState::AcceptingMethods;
        match parsed {
            HostLine::Log(sev, msg) => Ok(HostEvent::Log(sev, msg)),
            HostLine::Status(kv) => Ok(HostEvent::Status(kv)),
            HostLine::Unknown(l) => Ok(HostEvent::Ignored(l)),
            HostLine::VersionError(m) if self.state != ParserState::Done => {
                Err(HostError::VersionError(m))
            }
            HostLine::EnvError(m) if self.state != ParserState::Done => Err(HostError::EnvError(m)),
            HostLine::ProxyError(m) if self.state != ParserState::Done => {
                Err(HostError::ProxyError(m))
            }
            HostLine::Version(v) if self.state == ParserState::AwaitingVersion => {
                if v == "1" {
                    self.state = ParserState::AcceptingMethods;
                    Ok(HostEvent::Version)
                } else {
                    Err(HostError::UnsupportedVersion(v))
                }
            }
            HostLine::ProxyDone if accepting => {
                if self.proxy_expected {
                    self.proxy_done = true;
                    Ok(HostEvent::ProxyDone)
                } else {
                    // Tor logs it as an unknown line and goes on (observed).
                    Ok(HostEvent::Ignored(line.to_owned()))
                }
            }
            HostLine::Cmethod {
                name,
                protocol,
                addr,
            } if accepting && !self.server => {
                let protocol = if protocol == "socks4" {
                    MethodProtocol::Socks4
                } else {
                    MethodProtocol::Socks5
                };
                self.add_method(
                    line,
                    PtMethod {
                        name,
                        protocol,
                        addr,
                        args: Args::new(),
                    },
                )
            }
            HostLine::Smethod { name, addr, args } if accepting && self.server => self.add_method(
                line,
                PtMethod {
                    name,
                    protocol: MethodProtocol::Server,
                    addr,
                    args,
                },
            ),
            HostLine::CmethodError(transport, message) if accepting && !self.server => {
                Ok(self.add_error(MethodError { transport, message }))
            }
            HostLine::SmethodError(transport, message) if accepting && self.server => {
                Ok(self.add_error(MethodError { transport, message }))
            }
            HostLine::CmethodsDone if accepting && !self.server => self.finish(),
            HostLine::SmethodsDone if accepting && self.server => self.finish(),
            _ => Err(unexpected(line, self.state_name())),
        }
    }

    fn add_method(&mut self, line: &str, method: PtMethod) -> Result<HostEvent, HostError> {
        if self.result.methods.iter().any(|m| m.name == method.name) {
            // Tor skips a second registration of the same name with a notice.
            return Ok(HostEvent::Ignored(line.to_owned()));
        }
        self.result.methods.push(method.clone());
        Ok(HostEvent::Method(method))
    }

    fn add_error(&mut self, error: MethodError) -> HostEvent {
        self.result.errors.push(error.clone());
        HostEvent::MethodError(error)
    }

    fn finish(&mut self) -> Result<HostEvent, HostError> {
        if self.proxy_expected && !self.proxy_done {
            return Err(HostError::ProxyNotConfirmed);
        }
        self.state = ParserState::Done;
        let launched = &self.result.methods;
        self.result.missing = self
            .requested
            .iter()
            .filter(|r| !launched.iter().any(|m| &m.name == *r))
            .cloned()
            .collect();
        Ok(HostEvent::Done(self.result.clone()))
    }
}
