//! Host side: launch a managed PT binary as tor does, and use it.
//!
//! Three layers, following the house rule of sans-IO cores:
//!
//! - [`build_env`] is a pure function producing the `TOR_PT_*` environment exactly as tor sets
//!   it (item H-1);
//! - [`HostParser`] is a sans-IO state machine fed one stdout line at a time (items H-2..H-5,
//!   O-5, O-7, Q-5);
//! - [`ManagedPt`] spawns the process, drives the parser under a startup timeout (H-6), keeps
//!   reading stdout and stderr afterwards (H-9), and stops the process with the
//!   stdin → SIGTERM → SIGKILL ladder (H-7). [`PtConnector`] dials through one of its client
//!   methods (spec §3.2, §3.3).
//!
//! Not done here: relaunching (H-8) and the Extended ORPort server (H-10).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ptkit_core::args::escape_into;
use ptkit_core::redact::sensitive;
use ptkit_core::{Args, BoxFuture, Conn, Connector, Target, TransportError};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;

use crate::lines::{HostLine, LineError, MAX_LINE_LEN, Severity, parse_host_line};
use crate::socks::Reply;
use crate::socks::client::{self, ClientError};

/// Startup timeout used when none is configured (Arti's value; tor has none, item O-9).
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Deadline for the whole SOCKS handshake with a PT's client method.
pub const SOCKS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// How many `STATUS` lines a [`ManagedPt`] remembers (oldest dropped first).
pub const MAX_STATUS_HISTORY: usize = 64;

/// How long to wait for the exit status of a PT that closed stdout during startup before
/// killing it.
const EARLY_EXIT_WAIT: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------------------------
// Configuration and environment (H-1)
// ---------------------------------------------------------------------------------------------

/// How to launch one managed PT.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The PT binary.
    pub program: PathBuf,
    /// Its command-line arguments (tor's `exec <path> [args…]`).
    pub args: Vec<String>,
    /// Client or server, and what to ask for.
    pub role: HostRole,
    /// `TOR_PT_STATE_LOCATION`; made absolute at launch, not created (the PT creates it, E-6).
    pub state_dir: PathBuf,
    /// How long the PT may take to reach `*METHODS DONE` (item H-6).
    pub startup_timeout: Duration,
    /// Extra environment, applied after the `TOR_PT_*` variables (so it can override them,
    /// e.g. to add `TOR_PT_OUTBOUND_BIND_ADDRESS_V4`).
    pub extra_env: Vec<(String, String)>,
}

impl HostConfig {
    /// A configuration with no arguments, no extra environment and the default timeout.
    pub fn new(program: impl Into<PathBuf>, role: HostRole, state_dir: impl Into<PathBuf>) -> Self {
        HostConfig {
            program: program.into(),
            args: Vec::new(),
            role,
            state_dir: state_dir.into(),
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            extra_env: Vec::new(),
        }
    }
}

/// Which side of the managed-proxy protocol the PT runs.
#[derive(Debug, Clone)]
pub enum HostRole {
    /// A client PT (`TOR_PT_CLIENT_TRANSPORTS`).
    Client {
        /// Transport names to request.
        transports: Vec<String>,
        /// `TOR_PT_PROXY` URI (`socks5://…`, `socks4a://…`, `http://…`); when set the PT must
        /// answer `PROXY DONE` (item H-5).
        proxy: Option<String>,
    },
    /// A server PT (`TOR_PT_SERVER_TRANSPORTS`).
    Server {
        /// Transports with their bind addresses and options.
        transports: Vec<ServerTransportSpec>,
        /// `TOR_PT_ORPORT`.
        orport: Option<SocketAddr>,
        /// `TOR_PT_EXTENDED_SERVER_PORT` (set to the empty string when `None`, as tor does).
        extorport: Option<SocketAddr>,
        /// `TOR_PT_AUTH_COOKIE_FILE`.
        cookie_file: Option<PathBuf>,
    },
}

/// One server transport to request.
#[derive(Debug, Clone)]
pub struct ServerTransportSpec {
    /// Transport name.
    pub name: String,
    /// Where it should listen (port 0: the PT picks one).
    pub bind: SocketAddr,
    /// `ServerTransportOptions` for it.
    pub options: Args,
}

/// Encodes `TOR_PT_SERVER_TRANSPORT_OPTIONS` as tor does (spec §4.1, observed
/// `dummy:shared-secret=a\;b\:c\\d;dummy:key2=x=y`): one `transport:k=v` item per pair, `\`,
/// `:` and `;` escaped (and `=` in keys, so keys stay unambiguous), joined by `;`.
pub fn encode_server_options(transports: &[ServerTransportSpec]) -> String {
    let mut out = String::new();
    for t in transports {
        for (k, v) in t.options.iter() {
            if !out.is_empty() {
                out.push(';');
            }
            escape_into(&mut out, &t.name, &['\\', ':', ';', '=']);
            out.push(':');
            escape_into(&mut out, k, &['\\', ':', ';', '=']);
            out.push('=');
            escape_into(&mut out, v, &['\\', ':', ';']);
        }
    }
    out
}

/// The environment tor gives a managed PT (item H-1, spec §1.1), in order, followed by
/// `config.extra_env`. Values are OS strings because paths need not be UTF-8.
pub fn build_env(config: &HostConfig) -> Vec<(String, OsString)> {
    let mut env: Vec<(String, OsString)> = Vec::new();
    let mut set = |k: &str, v: OsString| env.push((k.to_owned(), v));
    set("TOR_PT_MANAGED_TRANSPORT_VER", "1".into());
    set(
        "TOR_PT_STATE_LOCATION",
        config.state_dir.clone().into_os_string(),
    );
    set("TOR_PT_EXIT_ON_STDIN_CLOSE", "1".into());
    match &config.role {
        HostRole::Client { transports, proxy } => {
            set("TOR_PT_CLIENT_TRANSPORTS", transports.join(",").into());
            if let Some(proxy) = proxy {
                set("TOR_PT_PROXY", proxy.into());
            }
        }
        HostRole::Server {
            transports,
            orport,
            extorport,
            cookie_file,
        } => {
            let names: Vec<&str> = transports.iter().map(|t| t.name.as_str()).collect();
            set("TOR_PT_SERVER_TRANSPORTS", names.join(",").into());
            let binds: Vec<String> = transports
                .iter()
                .map(|t| format!("{}-{}", t.name, t.bind))
                .collect();
            set("TOR_PT_SERVER_BINDADDR", binds.join(",").into());
            let options = encode_server_options(transports);
            if !options.is_empty() {
                set("TOR_PT_SERVER_TRANSPORT_OPTIONS", options.into());
            }
            if let Some(orport) = orport {
                set("TOR_PT_ORPORT", orport.to_string().into());
            }
            set(
                "TOR_PT_EXTENDED_SERVER_PORT",
                extorport.map(|a| a.to_string()).unwrap_or_default().into(),
            );
            if let Some(cookie) = cookie_file {
                set("TOR_PT_AUTH_COOKIE_FILE", cookie.clone().into_os_string());
            }
        }
    }
    for (k, v) in &config.extra_env {
        env.push((k.clone(), v.into()));
    }
    env
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why a managed PT could not be launched or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The program could not be started.
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Reading the PT's pipes or waiting for it failed.
    #[error("I/O with the PT failed: {0}")]
    Io(#[from] io::Error),
    /// The PT printed `VERSION-ERROR` (it supports no version we offered).
    #[error("PT supports no offered protocol version: VERSION-ERROR {0}")]
    VersionError(String),
    /// The PT printed a `VERSION` other than exactly `1` (item H-3).
    #[error("PT announced unsupported protocol version {0:?}")]
    UnsupportedVersion(String),
    /// The PT printed `ENV-ERROR`.
    #[error("PT rejected its environment: {0}")]
    EnvError(String),
    /// The PT printed `PROXY-ERROR`.
    #[error("PT cannot use the outgoing proxy: {0}")]
    ProxyError(String),
    /// A proxy was passed but the PT finished without `PROXY DONE` (item H-5).
    #[error("PT did not confirm the outgoing proxy with PROXY DONE")]
    ProxyNotConfirmed,
    /// A protocol line with a known keyword was malformed (e.g. a `CMETHOD` with a host name).
    #[error(transparent)]
    MalformedLine(#[from] LineError),
    /// A stdout line exceeded [`MAX_LINE_LEN`] (item H-2).
    #[error("PT printed a line longer than {MAX_LINE_LEN} bytes")]
    LineTooLong,
    /// A valid line in a state where it is not allowed (items O-7, H-3).
    #[error("protocol violation: {line:?} not allowed {state}")]
    Unexpected {
        /// The offending line (truncated).
        line: String,
        /// Where in the protocol it came.
        state: &'static str,
    },
    /// The PT did not reach `*METHODS DONE` in time (item H-6).
    #[error("PT did not finish configuring within {0:?}")]
    StartupTimeout(Duration),
    /// The PT closed its stdout (usually: exited) before `*METHODS DONE`.
    #[error("PT exited before finishing configuration ({})", describe_status(.status))]
    ExitedEarly {
        /// The exit status, when it could be collected.
        status: Option<ExitStatus>,
    },
}

fn describe_status(status: &Option<ExitStatus>) -> String {
    match status {
        Some(s) => s.to_string(),
        None => "status unknown".into(),
    }
}

impl HostError {
    /// Stable short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            HostError::Spawn { .. } | HostError::Io(_) => "io",
            HostError::VersionError(_) | HostError::UnsupportedVersion(_) => "unsupported",
            HostError::EnvError(_) | HostError::ProxyError(_) => "pt_reported",
            HostError::MalformedLine(_) | HostError::LineTooLong => "malformed",
            HostError::ProxyNotConfirmed
            | HostError::Unexpected { .. }
            | HostError::ExitedEarly { .. } => "misbehaving",
            HostError::StartupTimeout(_) => "timeout",
        }
    }
}

fn unexpected(line: &str, state: &'static str) -> HostError {
    let mut line = line.to_owned();
    if line.len() > 200 {
        let mut cut = 200;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    HostError::Unexpected { line, state }
}

// ---------------------------------------------------------------------------------------------
// The sans-IO stdout state machine (H-2..H-5)
// ---------------------------------------------------------------------------------------------

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
enum ParserState {
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
    state: ParserState,
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

// ---------------------------------------------------------------------------------------------
// Bounded line reading (H-2)
// ---------------------------------------------------------------------------------------------

enum LineRead {
    /// A complete line (LF and one CR stripped) or the unterminated last line.
    Line,
    /// The line exceeds the limit; `rest_pending` when its end has not been consumed yet.
    TooLong { rest_pending: bool },
    /// End of stream.
    Eof,
}

/// Reads one line into `buf` (cleared first) without ever buffering more than `max + 2` bytes.
async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<LineRead> {
    buf.clear();
    let cap = max.saturating_add(2);
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(if buf.is_empty() {
                LineRead::Eof
            } else {
                strip_line(buf, max)
            });
        }
        let newline = avail.iter().position(|&b| b == b'\n');
        let take = newline.map_or(avail.len(), |i| i + 1);
        if buf.len().saturating_add(take) > cap {
            let room = cap.saturating_sub(buf.len());
            let reached_end = newline.is_some_and(|i| i < room);
            r.consume(room);
            return Ok(LineRead::TooLong {
                rest_pending: !reached_end,
            });
        }
        buf.extend_from_slice(&avail[..take]);
        r.consume(take);
        if newline.is_some() {
            return Ok(strip_line(buf, max));
        }
    }
}

fn strip_line(buf: &mut Vec<u8>, max: usize) -> LineRead {
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    if buf.len() > max {
        LineRead::TooLong {
            rest_pending: false,
        }
    } else {
        LineRead::Line
    }
}

/// Consumes input up to and including the next LF (or EOF).
async fn discard_line<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<()> {
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(());
        }
        match avail.iter().position(|&b| b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = avail.len();
                r.consume(n);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The process driver (H-6, H-7, H-9)
// ---------------------------------------------------------------------------------------------

/// One `STATUS` line a PT printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtStatus {
    /// The `TRANSPORT` value, if the line had one.
    pub transport: Option<String>,
    /// All pairs in order (including `TRANSPORT`).
    pub values: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Shared {
    statuses: VecDeque<PtStatus>,
    implementation: Option<(String, String)>,
    failure: Option<String>,
    stdout_closed: bool,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Aborts the task when dropped.
#[derive(Debug)]
struct TaskGuard(JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running managed PT whose methods are configured.
///
/// Dropping it kills the process (SIGKILL); call [`ManagedPt::stop`] for a graceful exit.
pub struct ManagedPt {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    methods: PtMethods,
    shared: Arc<Mutex<Shared>>,
    _stdout_task: TaskGuard,
    _stderr_task: TaskGuard,
}

impl fmt::Debug for ManagedPt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedPt")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .field("methods", &self.methods)
            .finish()
    }
}

fn program_name(program: &Path) -> String {
    program
        .file_name()
        .unwrap_or(program.as_os_str())
        .to_string_lossy()
        .into_owned()
}

/// Logs or records what a line meant (both during startup and afterwards).
fn dispatch(pt: &str, event: &HostEvent, shared: &Mutex<Shared>) {
    match event {
        HostEvent::Log(sev, msg) => match sev {
            Severity::Error => tracing::error!(pt, "{msg}"),
            Severity::Warning => tracing::warn!(pt, "{msg}"),
            Severity::Notice => tracing::info!(pt, "{msg}"),
            Severity::Info => tracing::debug!(pt, "{msg}"),
            Severity::Debug => tracing::trace!(pt, "{msg}"),
        },
        HostEvent::Status(kv) => {
            tracing::debug!(pt, keys = ?kv.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), "STATUS");
            let mut s = lock(shared);
            let get = |key: &str| {
                kv.iter()
                    .rev()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
            };
            if get("TYPE").is_some_and(|t| t.eq_ignore_ascii_case("version"))
                && let (Some(i), Some(v)) = (get("IMPLEMENTATION"), get("VERSION"))
            {
                s.implementation = Some((i, v));
            }
            if s.statuses.len() >= MAX_STATUS_HISTORY {
                s.statuses.pop_front();
            }
            s.statuses.push_back(PtStatus {
                transport: get("TRANSPORT"),
                values: kv.clone(),
            });
        }
        HostEvent::Warning(w) => tracing::warn!(pt, "dropped a line: {w}"),
        HostEvent::Ignored(l) => tracing::info!(pt, line = %sensitive(l), "ignored line"),
        HostEvent::MethodError(e) => {
            tracing::warn!(pt, transport = %e.transport, "method error: {}", e.message)
        }
        HostEvent::Method(m) => {
            tracing::debug!(pt, transport = %m.name, addr = %m.addr, "method launched")
        }
        HostEvent::Version | HostEvent::ProxyDone | HostEvent::Done(_) => {}
    }
}

/// Drives the parser until `*METHODS DONE`.
async fn configure<R: AsyncBufRead + Unpin>(
    pt: &str,
    stdout: &mut R,
    parser: &mut HostParser,
    shared: &Mutex<Shared>,
) -> Result<Option<PtMethods>, HostError> {
    let mut buf = Vec::new();
    loop {
        match read_line_bounded(stdout, &mut buf, MAX_LINE_LEN).await? {
            LineRead::Eof => return Ok(None),
            LineRead::TooLong { .. } => return Err(HostError::LineTooLong),
            LineRead::Line => {
                let line = String::from_utf8_lossy(&buf);
                tracing::trace!(pt, "stdout: {line}");
                let event = parser.feed(&line)?;
                dispatch(pt, &event, shared);
                if let HostEvent::Done(methods) = event {
                    return Ok(Some(methods));
                }
            }
        }
    }
}

/// Keeps reading stdout after configuration (LOG → tracing, STATUS → history).
async fn watch_stdout<R: AsyncBufRead + Unpin>(
    pt: String,
    mut stdout: R,
    mut parser: HostParser,
    shared: Arc<Mutex<Shared>>,
) {
    let mut buf = Vec::new();
    loop {
        match read_line_bounded(&mut stdout, &mut buf, MAX_LINE_LEN).await {
            Ok(LineRead::Eof) | Err(_) => break,
            Ok(LineRead::TooLong { rest_pending }) => {
                tracing::warn!(pt, "dropped a stdout line longer than {MAX_LINE_LEN} bytes");
                if rest_pending && discard_line(&mut stdout).await.is_err() {
                    break;
                }
            }
            Ok(LineRead::Line) => {
                let line = String::from_utf8_lossy(&buf);
                match parser.feed(&line) {
                    Ok(event) => dispatch(&pt, &event, &shared),
                    Err(e) => {
                        // Tor would mark the PT broken (O-7); we record it and keep draining so
                        // the PT never blocks on a full pipe. The owner decides what to do.
                        tracing::warn!(pt, "protocol failure after configuration: {e}");
                        let mut s = lock(&shared);
                        if s.failure.is_none() {
                            s.failure = Some(e.to_string());
                        }
                        // Let later LOG/STATUS lines through again.
                        parser.state = ParserState::Done;
                    }
                }
            }
        }
    }
    tracing::debug!(pt, "PT closed its stdout");
    lock(&shared).stdout_closed = true;
}

/// Logs stderr lines at debug (item H-9).
async fn watch_stderr<R: AsyncBufRead + Unpin>(pt: String, mut stderr: R) {
    let mut buf = Vec::new();
    loop {
        match read_line_bounded(&mut stderr, &mut buf, MAX_LINE_LEN).await {
            Ok(LineRead::Eof) | Err(_) => return,
            Ok(LineRead::TooLong { rest_pending }) => {
                tracing::debug!(pt, "stderr: {} [truncated]", String::from_utf8_lossy(&buf));
                if rest_pending && discard_line(&mut stderr).await.is_err() {
                    return;
                }
            }
            Ok(LineRead::Line) => tracing::debug!(pt, "stderr: {}", String::from_utf8_lossy(&buf)),
        }
    }
}

/// Sends `sig` to our own, not yet reaped child.
#[allow(unsafe_code)]
fn send_signal(pid: u32, sig: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: kill(2) takes two integers and touches none of our memory. The pid is that of a
    // child we spawned and have not reaped (callers only signal after `wait` timed out, and
    // tokio reaps only through our `Child`), so it cannot have been reused by another process.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl ManagedPt {
    /// Spawns the PT, reads its configuration, and returns once it printed `*METHODS DONE`.
    ///
    /// On any failure the process is killed and reaped before the error is returned.
    pub async fn launch(config: HostConfig) -> Result<ManagedPt, HostError> {
        let mut config = config;
        config.state_dir = std::path::absolute(&config.state_dir)?;
        let name = program_name(&config.program);
        let mut cmd = Command::new(&config.program);
        cmd.args(&config.args);
        // Inherit our environment as tor does, but never leak our own TOR_PT_* variables.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TOR_PT_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(build_env(&config));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| HostError::Spawn {
            program: config.program.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        tracing::debug!(pt = %name, pid, "launched managed PT");

        let stdin = child.stdin.take();
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill().await;
            return Err(HostError::Io(io::Error::other("child pipes missing")));
        };
        let stderr_task = TaskGuard(tokio::spawn(watch_stderr(
            name.clone(),
            BufReader::new(stderr),
        )));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut stdout = BufReader::new(stdout);
        let mut parser = HostParser::for_role(&config.role);

        let outcome = tokio::time::timeout(
            config.startup_timeout,
            configure(&name, &mut stdout, &mut parser, &shared),
        )
        .await;
        let failure = match outcome {
            Ok(Ok(Some(methods))) => {
                if methods.methods.is_empty() {
                    tracing::warn!(pt = %name, "PT launched no transport at all");
                }
                for missing in &methods.missing {
                    tracing::warn!(pt = %name, transport = %missing, "requested transport not launched");
                }
                let stdout_task = TaskGuard(tokio::spawn(watch_stdout(
                    name.clone(),
                    stdout,
                    parser,
                    shared.clone(),
                )));
                return Ok(ManagedPt {
                    name,
                    child,
                    stdin,
                    pid,
                    methods,
                    shared,
                    _stdout_task: stdout_task,
                    _stderr_task: stderr_task,
                });
            }
            Ok(Ok(None)) => {
                drop(stdin);
                let status = match tokio::time::timeout(EARLY_EXIT_WAIT, child.wait()).await {
                    Ok(Ok(status)) => Some(status),
                    _ => {
                        let _ = child.kill().await;
                        None
                    }
                };
                return Err(HostError::ExitedEarly { status });
            }
            Ok(Err(e)) => e,
            Err(_) => HostError::StartupTimeout(config.startup_timeout),
        };
        tracing::warn!(pt = %name, "managed PT failed to launch: {failure}");
        drop(stdin);
        // SIGKILL and reap, so no zombie and no half-configured PT remain.
        let _ = child.kill().await;
        drop(stderr_task);
        Err(failure)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Everything the PT reported at `*METHODS DONE` (methods, per-transport errors, missing).
    pub fn methods(&self) -> &PtMethods {
        &self.methods
    }

    /// The client methods (`CMETHOD`), in the order printed.
    pub fn client_methods(&self) -> impl Iterator<Item = &PtMethod> + '_ {
        self.methods
            .methods
            .iter()
            .filter(|m| m.protocol != MethodProtocol::Server)
    }

    /// The server methods (`SMETHOD`), in the order printed.
    pub fn server_methods(&self) -> impl Iterator<Item = &PtMethod> + '_ {
        self.methods
            .methods
            .iter()
            .filter(|m| m.protocol == MethodProtocol::Server)
    }

    /// The method for transport `name`.
    pub fn method(&self, name: &str) -> Option<&PtMethod> {
        self.methods.methods.iter().find(|m| m.name == name)
    }

    /// A connector dialing through client method `name`.
    pub fn connector(&self, name: &str) -> Option<PtConnector> {
        self.method(name).and_then(PtConnector::for_method)
    }

    /// The most recent `STATUS` lines (at most [`MAX_STATUS_HISTORY`]), oldest first.
    pub fn statuses(&self) -> Vec<PtStatus> {
        lock(&self.shared).statuses.iter().cloned().collect()
    }

    /// `(IMPLEMENTATION, VERSION)` from the latest `STATUS TYPE=version` line.
    pub fn implementation(&self) -> Option<(String, String)> {
        lock(&self.shared).implementation.clone()
    }

    /// The first protocol failure after configuration (tor would consider the PT broken).
    pub fn protocol_failure(&self) -> Option<String> {
        lock(&self.shared).failure.clone()
    }

    /// True once the PT closed its stdout (it exited or is exiting).
    pub fn stdout_closed(&self) -> bool {
        lock(&self.shared).stdout_closed
    }

    /// Stops the PT (item H-7): close stdin, wait `grace`; send SIGTERM, wait `grace`; then
    /// SIGKILL. Returns the exit status.
    pub async fn stop(mut self, grace: Duration) -> Result<ExitStatus, HostError> {
        drop(self.stdin.take());
        if let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
            tracing::debug!(pt = %self.name, "PT exited after stdin was closed");
            return Ok(status?);
        }
        match send_signal(self.pid, libc::SIGTERM) {
            Ok(()) => {
                if let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
                    tracing::debug!(pt = %self.name, "PT exited after SIGTERM");
                    return Ok(status?);
                }
            }
            Err(e) => tracing::debug!(pt = %self.name, "SIGTERM failed: {e}"),
        }
        tracing::warn!(pt = %self.name, "PT ignored stdin close and SIGTERM; killing it");
        self.child.kill().await?;
        Ok(self.child.wait().await?)
    }
}

// ---------------------------------------------------------------------------------------------
// Dialing through a client method (spec §3.2, §3.3)
// ---------------------------------------------------------------------------------------------

/// A [`Connector`] that opens connections through one client method of a managed PT.
#[derive(Debug, Clone)]
pub struct PtConnector {
    name: String,
    socks4: bool,
    addr: SocketAddr,
    handshake_timeout: Duration,
}

impl PtConnector {
    /// A connector for a client method; `None` for a server method.
    pub fn for_method(method: &PtMethod) -> Option<Self> {
        let socks4 = match method.protocol {
            MethodProtocol::Socks4 => true,
            MethodProtocol::Socks5 => false,
            MethodProtocol::Server => return None,
        };
        Some(PtConnector {
            name: method.name.clone(),
            socks4,
            addr: method.addr,
            handshake_timeout: SOCKS_HANDSHAKE_TIMEOUT,
        })
    }

    /// Replaces the SOCKS handshake deadline (default [`SOCKS_HANDSHAKE_TIMEOUT`]).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The PT's SOCKS address.
    pub fn socks_addr(&self) -> SocketAddr {
        self.addr
    }
}

fn socks_error(pt: &str, e: ClientError) -> TransportError {
    match e {
        ClientError::Refused(reply) => {
            let kind = match reply {
                Reply::ConnectionRefused => io::ErrorKind::ConnectionRefused,
                Reply::NetworkUnreachable => io::ErrorKind::NetworkUnreachable,
                Reply::HostUnreachable => io::ErrorKind::HostUnreachable,
                Reply::TtlExpired => io::ErrorKind::TimedOut,
                _ => io::ErrorKind::Other,
            };
            TransportError::Io(io::Error::new(
                kind,
                format!("PT {pt}: SOCKS reply: {}", reply.describe()),
            ))
        }
        ClientError::Rejected4(code) => TransportError::Io(io::Error::other(format!(
            "PT {pt}: SOCKS4 request rejected (code {code:#04x})"
        ))),
        ClientError::AuthRefused => {
            TransportError::BadSettings(format!("PT {pt} refused the transport arguments"))
        }
        ClientError::Unencodable(what) => TransportError::BadSettings(format!("PT {pt}: {what}")),
        ClientError::NoMethod => {
            TransportError::Protocol(format!("PT {pt} accepted no offered SOCKS method"))
        }
        other => TransportError::Protocol(format!("PT {pt}: {other}")),
    }
}

async fn socks_handshake(
    pt: &str,
    socks4: bool,
    s: &mut TcpStream,
    args: &str,
    dest: &Target,
) -> Result<(), TransportError> {
    let result = if socks4 {
        // Tor sends the whole argument string as the SOCKS4 userid (spec §3.3).
        client::dial_v4(s, args.as_bytes(), dest).await
    } else {
        client::dial_v5_with_args(s, args.as_bytes(), dest).await
    };
    match result {
        Ok(()) => Ok(()),
        Err(client::DialError::Io(e)) => Err(TransportError::Io(e)),
        Err(client::DialError::Socks(e)) => Err(socks_error(pt, e)),
        // Tor would go on without the arguments; they are the transport's keys, so fail closed.
        Err(client::DialError::CredentialsNotAsked) => Err(TransportError::Protocol(format!(
            "PT {pt} chose no authentication; arguments cannot be sent"
        ))),
    }
}

impl Connector for PtConnector {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_bound(&self) -> bool {
        false
    }

    fn connect(
        &self,
        settings: &Args,
        dest: Option<Target>,
    ) -> BoxFuture<'static, Result<Conn, TransportError>> {
        let args = settings.encode_client();
        let this = self.clone();
        Box::pin(async move {
            let dest = dest.ok_or_else(|| {
                TransportError::BadSettings(format!(
                    "PT {}: a destination (the bridge address) is required",
                    this.name
                ))
            })?;
            if !this.socks4 && args.len() > 510 {
                return Err(TransportError::BadSettings(format!(
                    "PT {}: arguments are {} bytes escaped, SOCKS5 carries at most 510",
                    this.name,
                    args.len()
                )));
            }
            tracing::debug!(transport = %this.name, dest = %sensitive(&dest), "connecting through managed PT");
            let handshake = async {
                let mut s = TcpStream::connect(this.addr).await?;
                socks_handshake(&this.name, this.socks4, &mut s, &args, &dest).await?;
                Ok::<_, TransportError>(s)
            };
            let stream = tokio::time::timeout(this.handshake_timeout, handshake)
                .await
                .map_err(|_| {
                    TransportError::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "PT {}: SOCKS handshake timed out after {:?}",
                            this.name, this.handshake_timeout
                        ),
                    ))
                })??;
            Ok(Box::new(stream) as Conn)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use hex_literal::hex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn env_map(env: &[(String, OsString)]) -> Vec<(&str, &str)> {
        env.iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect()
    }

    fn server_config(transports: Vec<ServerTransportSpec>, ext: Option<SocketAddr>) -> HostConfig {
        HostConfig::new(
            "/usr/bin/pt",
            HostRole::Server {
                transports,
                orport: Some("127.0.0.1:9001".parse().unwrap()),
                extorport: ext,
                cookie_file: ext.map(|_| PathBuf::from("/var/lib/tor/extended_orport_auth_cookie")),
            },
            "/var/lib/tor/pt_state/",
        )
    }

    #[test]
    fn h1_client_env_exactly_like_tor() {
        let role = HostRole::Client {
            transports: vec!["obfs3".into(), "obfs4".into()],
            proxy: None,
        };
        let env = build_env(&HostConfig::new(
            "/usr/bin/pt",
            role,
            "/var/lib/tor/pt_state/",
        ));
        assert_eq!(
            env_map(&env),
            [
                ("TOR_PT_MANAGED_TRANSPORT_VER", "1"),
                ("TOR_PT_STATE_LOCATION", "/var/lib/tor/pt_state/"),
                ("TOR_PT_EXIT_ON_STDIN_CLOSE", "1"),
                ("TOR_PT_CLIENT_TRANSPORTS", "obfs3,obfs4"),
            ]
        );
    }

    #[test]
    fn h1_client_env_passes_proxy_and_extra_env_last() {
        let role = HostRole::Client {
            transports: vec!["obfs4".into()],
            proxy: Some("socks5://127.0.0.1:8001".into()),
        };
        let mut config = HostConfig::new("/usr/bin/pt", role, "/s");
        config
            .extra_env
            .push(("TOR_PT_OUTBOUND_BIND_ADDRESS_V6".into(), "[::1]".into()));
        let env = build_env(&config);
        let map = env_map(&env);
        assert_eq!(map[4], ("TOR_PT_PROXY", "socks5://127.0.0.1:8001"));
        assert_eq!(
            map.last(),
            Some(&("TOR_PT_OUTBOUND_BIND_ADDRESS_V6", "[::1]"))
        );
    }

    #[test]
    fn h1_server_env_matches_tor_observed_values() {
        let transports = vec![
            ServerTransportSpec {
                name: "dummy".into(),
                bind: "0.0.0.0:0".parse().unwrap(),
                options: Args::new()
                    .with("shared-secret", "a;b:c\\d")
                    .with("key2", "x=y"),
            },
            ServerTransportSpec {
                name: "other".into(),
                bind: "[::1]:4443".parse().unwrap(),
                options: Args::new(),
            },
        ];
        let env = build_env(&server_config(transports, None));
        assert_eq!(
            env_map(&env),
            [
                ("TOR_PT_MANAGED_TRANSPORT_VER", "1"),
                ("TOR_PT_STATE_LOCATION", "/var/lib/tor/pt_state/"),
                ("TOR_PT_EXIT_ON_STDIN_CLOSE", "1"),
                ("TOR_PT_SERVER_TRANSPORTS", "dummy,other"),
                ("TOR_PT_SERVER_BINDADDR", "dummy-0.0.0.0:0,other-[::1]:4443"),
                (
                    "TOR_PT_SERVER_TRANSPORT_OPTIONS",
                    "dummy:shared-secret=a\\;b\\:c\\\\d;dummy:key2=x=y"
                ),
                ("TOR_PT_ORPORT", "127.0.0.1:9001"),
                ("TOR_PT_EXTENDED_SERVER_PORT", ""),
            ]
        );
    }

    #[test]
    fn h1_server_env_with_extorport_and_no_options() {
        let t = vec![ServerTransportSpec {
            name: "obfs4".into(),
            bind: "127.0.0.1:0".parse().unwrap(),
            options: Args::new(),
        }];
        let env = build_env(&server_config(t, Some("127.0.0.1:9002".parse().unwrap())));
        let map = env_map(&env);
        assert!(
            !map.iter()
                .any(|(k, _)| *k == "TOR_PT_SERVER_TRANSPORT_OPTIONS")
        );
        assert!(map.contains(&("TOR_PT_EXTENDED_SERVER_PORT", "127.0.0.1:9002")));
        assert!(map.contains(&(
            "TOR_PT_AUTH_COOKIE_FILE",
            "/var/lib/tor/extended_orport_auth_cookie"
        )));
    }

    #[test]
    fn h1_server_options_round_trip_through_goptlib_parser() {
        let transports = vec![
            ServerTransportSpec {
                name: "trebuchet".into(),
                bind: "127.0.0.1:1984".parse().unwrap(),
                options: Args::new()
                    .with("secret", "nou")
                    .with("cache", "/tmp/c")
                    .with("k:1=", "v:=;\\"),
            },
            ServerTransportSpec {
                name: "ballista".into(),
                bind: "127.0.0.1:4891".parse().unwrap(),
                options: Args::new().with("secret", "yes"),
            },
        ];
        let encoded = encode_server_options(&transports);
        let parsed = crate::env::parse_server_options(&encoded).unwrap();
        assert_eq!(parsed["trebuchet"], transports[0].options);
        assert_eq!(parsed["ballista"], transports[1].options);
        assert_eq!(
            encode_server_options(&transports[1..]),
            "ballista:secret=yes"
        );
    }

    fn client(transports: &[&str], proxy: bool) -> HostParser {
        HostParser::client(
            &transports.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            proxy,
        )
    }

    fn server(transports: &[&str]) -> HostParser {
        HostParser::server(&transports.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn run(p: &mut HostParser, lines: &[&str]) -> Result<PtMethods, HostError> {
        for line in lines {
            if let HostEvent::Done(m) = p.feed(line)? {
                return Ok(m);
            }
        }
        panic!("no DONE")
    }

    #[test]
    fn s7_11_spec_client_session() {
        let mut p = client(&["obfs3", "obfs4"], true);
        let m = run(
            &mut p,
            &[
                "VERSION 1",
                "PROXY DONE",
                "CMETHOD obfs3 socks5 127.0.0.1:32525",
                "CMETHOD obfs4 socks5 127.0.0.1:37347",
                "CMETHODS DONE",
            ],
        )
        .unwrap();
        assert_eq!(m.methods.len(), 2);
        assert_eq!(m.methods[1].addr, "127.0.0.1:37347".parse().unwrap());
        assert_eq!(m.methods[1].protocol, MethodProtocol::Socks5);
        assert!(m.errors.is_empty() && m.missing.is_empty());
        assert!(p.is_done());
    }

    #[test]
    fn s7_11_spec_server_session() {
        let mut p = server(&["obfs3", "obfs4"]);
        let m = run(
            &mut p,
            &[
                "VERSION 1",
                "SMETHOD obfs3 198.51.100.1:1984",
                "SMETHOD obfs4 198.51.100.1:43734 ARGS:cert=HszPy3vWfjsESCEOo9ZBkRv6zQ/1mGHzc8arF0y2SpwFr3WhsMu8rK0zyaoyERfbz3ddFw,iat-mode=0",
                "SMETHODS DONE",
            ],
        )
        .unwrap();
        assert_eq!(m.methods[0].args, Args::new());
        assert_eq!(m.methods[1].args.get("iat-mode"), Some("0"));
        assert_eq!(m.methods[1].protocol, MethodProtocol::Server);
    }

    #[test]
    fn s7_11_lyrebird_session_status_before_methods() {
        let mut p = client(&["meek_lite"], false);
        assert_eq!(p.feed("VERSION 1").unwrap(), HostEvent::Version);
        let HostEvent::Status(kv) = p
            .feed(r#"STATUS TYPE=version IMPLEMENTATION="lyrebird" VERSION="devel""#)
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(kv[1], ("IMPLEMENTATION".into(), "lyrebird".into()));
        let m = run(
            &mut p,
            &["CMETHOD meek_lite socks5 127.0.0.1:41373", "CMETHODS DONE"],
        )
        .unwrap();
        assert_eq!(m.methods[0].name, "meek_lite");
    }

    #[test]
    fn h3_version_must_be_exactly_1() {
        for bad in ["VERSION 1 ", "VERSION 2", "VERSION", "VERSION 1,2"] {
            let mut p = client(&["x"], false);
            assert!(
                matches!(p.feed(bad), Err(HostError::UnsupportedVersion(_))),
                "{bad:?}"
            );
        }
        let mut p = client(&["x"], false);
        assert_eq!(p.feed("VERSION 1\r").unwrap(), HostEvent::Version);
    }

    #[test]
    fn h3_second_version_is_a_violation() {
        let mut p = client(&["x"], false);
        p.feed("VERSION 1").unwrap();
        assert!(matches!(
            p.feed("VERSION 1"),
            Err(HostError::Unexpected { .. })
        ));
        // A failed parser stays failed.
        assert!(p.feed("CMETHODS DONE").is_err());
    }

    #[test]
    fn h3_version_error_env_error_proxy_error_are_fatal_with_message() {
        let mut p = client(&["x"], false);
        assert!(
            matches!(p.feed("VERSION-ERROR no-version"), Err(HostError::VersionError(m)) if m == "no-version")
        );
        let mut p = client(&["x"], false);
        assert!(
            matches!(p.feed("ENV-ERROR no TOR_PT_MANAGED_TRANSPORT_VER environment variable"),
            Err(HostError::EnvError(m)) if m == "no TOR_PT_MANAGED_TRANSPORT_VER environment variable")
        );
        // E-14: after VERSION tor loses the message; we keep it.
        let mut p = client(&["x"], false);
        p.feed("VERSION 1").unwrap();
        assert!(matches!(p.feed("ENV-ERROR late"), Err(HostError::EnvError(m)) if m == "late"));
        let mut p = client(&["x"], true);
        p.feed("VERSION 1").unwrap();
        assert!(
            matches!(p.feed("PROXY-ERROR SOCKS 4 upstream proxies unsupported"),
            Err(HostError::ProxyError(m)) if m == "SOCKS 4 upstream proxies unsupported")
        );
    }

    #[test]
    fn o7_method_lines_only_between_version_and_done() {
        let mut p = client(&["dummy"], false);
        assert!(matches!(
            p.feed("CMETHOD dummy socks5 127.0.0.1:43753"),
            Err(HostError::Unexpected { .. })
        ));
        let mut p = client(&["dummy"], false);
        assert!(matches!(
            p.feed("CMETHODS DONE"),
            Err(HostError::Unexpected { .. })
        ));
        let mut p = client(&["dummy"], false);
        run(
            &mut p,
            &[
                "VERSION 1",
                "CMETHOD dummy socks5 127.0.0.1:43753",
                "CMETHODS DONE",
            ],
        )
        .unwrap();
        assert!(matches!(
            p.feed("CMETHOD dummy socks5 127.0.0.1:43754"),
            Err(HostError::Unexpected { .. })
        ));
        let mut p = client(&["dummy"], false);
        run(&mut p, &["VERSION 1", "CMETHODS DONE"]).unwrap();
        assert!(matches!(
            p.feed("CMETHODS DONE"),
            Err(HostError::Unexpected { .. })
        ));
        // After DONE, LOG/STATUS/unknown lines are still fine.
        let mut p = client(&["dummy"], false);
        run(&mut p, &["VERSION 1", "CMETHODS DONE"]).unwrap();
        assert!(matches!(
            p.feed("LOG SEVERITY=notice MESSAGE=\"hi\""),
            Ok(HostEvent::Log(Severity::Notice, _))
        ));
        assert!(matches!(
            p.feed("STATUS TRANSPORT=dummy CONNECT=Success"),
            Ok(HostEvent::Status(_))
        ));
        assert!(matches!(p.feed("FROBNICATE"), Ok(HostEvent::Ignored(_))));
    }

    #[test]
    fn o7_wrong_mode_methods_are_violations() {
        let mut p = client(&["x"], false);
        p.feed("VERSION 1").unwrap();
        assert!(matches!(
            p.feed("SMETHOD x 127.0.0.1:1"),
            Err(HostError::Unexpected { .. })
        ));
        let mut p = client(&["x"], false);
        p.feed("VERSION 1").unwrap();
        assert!(matches!(
            p.feed("SMETHODS DONE"),
            Err(HostError::Unexpected { .. })
        ));
        let mut p = server(&["x"]);
        p.feed("VERSION 1").unwrap();
        assert!(matches!(
            p.feed("CMETHOD x socks5 127.0.0.1:1"),
            Err(HostError::Unexpected { .. })
        ));
        let mut p = server(&["x"]);
        p.feed("VERSION 1").unwrap();
        assert!(matches!(
            p.feed("CMETHOD-ERROR x nope"),
            Err(HostError::Unexpected { .. })
        ));
    }

    #[test]
    fn h3_malformed_method_line_is_fatal() {
        for bad in [
            "CMETHOD dummy socks5 localhost:1080",
            "CMETHOD dummy http 127.0.0.1:1",
            "CMETHOD 4x socks5 127.0.0.1:1",
            "CMETHOD dummy socks5",
        ] {
            let mut p = client(&["dummy"], false);
            p.feed("VERSION 1").unwrap();
            assert!(
                matches!(
                    p.feed(bad),
                    Err(HostError::MalformedLine(LineError {
                        keyword: "CMETHOD",
                        ..
                    }))
                ),
                "{bad}"
            );
        }
        let mut p = server(&["t"]);
        p.feed("VERSION 1").unwrap();
        assert!(matches!(
            p.feed("SMETHOD t 198.51.100.1:19999 ARGS:iat-mode=fo=o"),
            Err(HostError::MalformedLine(_))
        ));
    }

    #[test]
    fn h4_method_error_is_per_transport_and_missing_reported() {
        let mut p = client(&["dummy", "other", "third"], false);
        let m = run(
            &mut p,
            &[
                "VERSION 1",
                "CMETHOD-ERROR other not here",
                "CMETHOD dummy socks5 127.0.0.1:43753",
                "CMETHODS DONE",
            ],
        )
        .unwrap();
        assert_eq!(m.methods.len(), 1);
        assert_eq!(
            m.errors,
            [MethodError {
                transport: "other".into(),
                message: "not here".into()
            }]
        );
        assert_eq!(m.missing, ["other", "third"]);
        let mut p = server(&["trebuchet"]);
        let m = run(
            &mut p,
            &[
                "VERSION 1",
                "SMETHOD-ERROR trebuchet no cows available",
                "SMETHODS DONE",
            ],
        )
        .unwrap();
        assert_eq!(m.errors[0].message, "no cows available");
        assert_eq!(m.missing, ["trebuchet"]);
    }

    #[test]
    fn h4_unrequested_and_repeated_methods() {
        let mut p = client(&["a"], false);
        let m = run(
            &mut p,
            &[
                "VERSION 1",
                "CMETHOD a socks4 127.0.0.1:1",
                "CMETHOD a socks5 127.0.0.1:2",
                "CMETHOD b socks5 127.0.0.1:3",
                "CMETHODS DONE",
            ],
        )
        .unwrap();
        // Tor registers unrequested transports and skips repeated names.
        assert_eq!(
            m.methods
                .iter()
                .map(|m| (m.name.as_str(), m.addr.port()))
                .collect::<Vec<_>>(),
            [("a", 1), ("b", 3)]
        );
        assert_eq!(m.methods[0].protocol, MethodProtocol::Socks4);
    }

    #[test]
    fn h5_proxy_done_required_iff_proxy_passed() {
        let mut p = client(&["x"], true);
        let r = run(
            &mut p,
            &["VERSION 1", "CMETHOD x socks5 127.0.0.1:1", "CMETHODS DONE"],
        );
        assert!(matches!(r, Err(HostError::ProxyNotConfirmed)));
        // Without a proxy PROXY DONE is logged and ignored (tor observed).
        let mut p = client(&["x"], false);
        p.feed("VERSION 1").unwrap();
        assert!(matches!(p.feed("PROXY DONE"), Ok(HostEvent::Ignored(_))));
        assert!(run(&mut p, &["CMETHODS DONE"]).is_ok());
        // Before VERSION it is a violation.
        let mut p = client(&["x"], true);
        assert!(matches!(
            p.feed("PROXY DONE"),
            Err(HostError::Unexpected { .. })
        ));
    }

    #[test]
    fn q5_malformed_log_and_status_only_warn() {
        let mut p = client(&["dummy"], false);
        for line in [
            "LOG SEVERITY=notice MESSAGE=two words",
            "LOG SEVERITY=loud MESSAGE=\"bad severity\"",
            "LOG SEVERITY=notice",
            r#"LOG SEVERITY=notice MESSAGE="bad escape \?""#,
            r#"LOG SEVERITY=debug MESSAGE="\a""#,
            "STATUS keyless",
        ] {
            assert!(matches!(p.feed(line), Ok(HostEvent::Warning(_))), "{line}");
        }
        p.feed("VERSION 1").unwrap();
        assert_eq!(
            p.feed(
                r#"LOG SEVERITY=notice MESSAGE="octal: \042q\042 bs=\134 nl=\012 e=\303\251 end""#
            )
            .unwrap(),
            HostEvent::Log(Severity::Notice, "octal: \"q\" bs=\\ nl=\n e=é end".into())
        );
        assert_eq!(
            p.feed(r#"LOG SEVERITY=notice MESSAGE="c-style: \"q\" bs=\\ tab=\t hex=\x41""#)
                .unwrap(),
            HostEvent::Log(Severity::Notice, "c-style: \"q\" bs=\\ tab=\t hex=A".into())
        );
        assert_eq!(
            p.feed("LOG SEVERITY=warning MESSAGE=unquoted").unwrap(),
            HostEvent::Log(Severity::Warning, "unquoted".into())
        );
        let HostEvent::Status(kv) = p
            .feed(r#"STATUS TRANSPORT=dummy CONNECT=Success ERRSTR="none at all""#)
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(kv[2].1, "none at all");
        let HostEvent::Status(kv) = p.feed(r#"STATUS ADDRESS=198.51.100.222:2222 CONNECT=Failed FINGERPRINT=X ERRSTR="Connection refused""#).unwrap() else {
            panic!()
        };
        assert_eq!(kv[3].1, "Connection refused");
        assert!(
            run(
                &mut p,
                &["CMETHOD dummy socks5 127.0.0.1:43753", "CMETHODS DONE"]
            )
            .is_ok()
        );
    }

    #[test]
    fn o5_unknown_keywords_ignored_in_every_state() {
        let mut p = client(&["x"], false);
        assert!(matches!(
            p.feed("FROBNICATE whatever"),
            Ok(HostEvent::Ignored(_))
        ));
        assert!(matches!(
            p.feed("\u{fffd}\u{fffd} junk"),
            Ok(HostEvent::Ignored(_))
        ));
        assert!(matches!(p.feed(""), Ok(HostEvent::Ignored(_))));
        p.feed("VERSION 1").unwrap();
        assert!(matches!(
            p.feed("CMETHODS NOT-DONE"),
            Ok(HostEvent::Ignored(_))
        ));
        assert!(run(&mut p, &["CMETHODS DONE\r"]).is_ok());
    }

    #[tokio::test]
    async fn h2_bounded_reader_handles_crlf_eof_and_long_lines() {
        let mut input: Vec<u8> = b"VERSION 1\r\nshort\n".to_vec();
        input.extend(vec![b'a'; 20]);
        input.extend(b"\nlast");
        let mut r = BufReader::with_capacity(4, &input[..]);
        let mut buf = Vec::new();
        assert!(matches!(
            read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
            LineRead::Line
        ));
        assert_eq!(buf, b"VERSION 1");
        assert!(matches!(
            read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
            LineRead::Line
        ));
        assert_eq!(buf, b"short");
        assert!(matches!(
            read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
            LineRead::TooLong { rest_pending: true }
        ));
        discard_line(&mut r).await.unwrap();
        assert!(matches!(
            read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
            LineRead::Line
        ));
        assert_eq!(buf, b"last");
        assert!(matches!(
            read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
            LineRead::Eof
        ));
        // Exactly at the limit, with CRLF: accepted; one over: rejected without pending rest.
        let mut r = BufReader::new(&b"0123456789\r\n01234567890\n"[..]);
        assert!(matches!(
            read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
            LineRead::Line
        ));
        assert!(matches!(
            read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
            LineRead::TooLong {
                rest_pending: false
            }
        ));
        assert!(matches!(
            read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
            LineRead::Eof
        ));
    }

    /// A one-shot fake PT SOCKS port: answers with `replies` in turn, one per client message of
    /// the given lengths, and returns everything the client sent.
    async fn fake_socks(script: Vec<(usize, Vec<u8>)>) -> (SocketAddr, JoinHandle<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut seen = Vec::new();
            for (len, reply) in script {
                let mut msg = vec![0u8; len];
                s.read_exact(&mut msg).await.unwrap();
                seen.extend(msg);
                s.write_all(&reply).await.unwrap();
            }
            seen
        });
        (addr, task)
    }

    fn connector(addr: SocketAddr, protocol: MethodProtocol) -> PtConnector {
        PtConnector::for_method(&PtMethod {
            name: "dummy".into(),
            protocol,
            addr,
            args: Args::new(),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn s3_2_socks5_with_args_like_tor() {
        let args = Args::new()
            .with("cert", "A".repeat(300))
            .with("iat-mode", "0");
        let encoded = args.encode_client();
        let (addr, seen) = fake_socks(vec![
            (4, hex!("05 02").to_vec()),
            (2 + 255 + 1 + (encoded.len() - 255), hex!("01 00").to_vec()),
            (10, hex!("05 00 00 01 00000000 0000").to_vec()),
        ])
        .await;
        let dest = Target::parse("127.0.0.2:4444").unwrap();
        let _conn = connector(addr, MethodProtocol::Socks5)
            .connect(&args, Some(dest))
            .await
            .unwrap();
        let seen = seen.await.unwrap();
        assert_eq!(seen[..4], hex!("05 02 00 02"));
        assert_eq!(seen[4..6], [1, 255]);
        assert_eq!(&seen[6..261], &encoded.as_bytes()[..255]);
        assert_eq!(usize::from(seen[261]), encoded.len() - 255);
        assert_eq!(seen[seen.len() - 10..], hex!("05 01 00 01 7f000002 115c"));
    }

    #[tokio::test]
    async fn s3_2_socks5_without_args_and_refusal_text() {
        let (addr, seen) = fake_socks(vec![
            (3, hex!("05 00").to_vec()),
            (10, hex!("05 05 00 01 00000000 0000").to_vec()),
        ])
        .await;
        let dest = Target::parse("127.0.0.2:4444").unwrap();
        let err = connector(addr, MethodProtocol::Socks5)
            .connect(&Args::new(), Some(dest))
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("connection refused"), "{err}");
        assert!(
            matches!(&err, TransportError::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused)
        );
        assert_eq!(
            seen.await.unwrap(),
            hex!("05 01 00 05 01 00 01 7f000002 115c")
        );
    }

    #[tokio::test]
    async fn s3_3_socks4_whole_args_in_userid() {
        let args = Args::new()
            .with("k1", "v;1")
            .with("k2", "back\\slash")
            .with("k3", "x=y")
            .with("cert", "A".repeat(260));
        let encoded = args.encode_client();
        let (addr, seen) = fake_socks(vec![(
            8 + encoded.len() + 1,
            hex!("00 5a 0000 00000000").to_vec(),
        )])
        .await;
        let dest = Target::parse("127.0.0.2:4444").unwrap();
        connector(addr, MethodProtocol::Socks4)
            .connect(&args, Some(dest))
            .await
            .unwrap();
        let seen = seen.await.unwrap();
        assert_eq!(seen[..8], hex!("04 01 115c 7f000002"));
        assert_eq!(&seen[8..seen.len() - 1], encoded.as_bytes());
        assert!(encoded.starts_with("k1=v\\;1;k2=back\\\\slash;k3=x=y;cert=AAA"));
    }

    #[tokio::test]
    async fn connector_requires_destination_and_bounded_handshake() {
        let (addr, _seen) = fake_socks(vec![(3, Vec::new()), (1, Vec::new())]).await;
        let c = connector(addr, MethodProtocol::Socks5);
        assert!(matches!(
            c.connect(&Args::new(), None).await,
            Err(TransportError::BadSettings(_))
        ));
        let c = c.with_handshake_timeout(Duration::from_millis(200));
        let err = c
            .connect(&Args::new(), Some(Target::parse("127.0.0.1:1").unwrap()))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&err, TransportError::Io(e) if e.kind() == io::ErrorKind::TimedOut),
            "{err}"
        );
        let server = PtMethod {
            name: "s".into(),
            protocol: MethodProtocol::Server,
            addr,
            args: Args::new(),
        };
        assert!(PtConnector::for_method(&server).is_none());
    }
}
