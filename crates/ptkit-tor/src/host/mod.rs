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
//! [`SupervisedPt`] relaunches a PT that exits with exponential back-off, except after
//! `ENV-ERROR`/`VERSION-ERROR`/`PROXY-ERROR` (item H-8). The Extended ORPort *server* a host
//! needs for server PTs is [`crate::extorport::accept`] (item H-10).

use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use ptkit_core::Args;
use ptkit_core::args::escape_into;

use crate::lines::{LineError, MAX_LINE_LEN};

/// Startup timeout used when none is configured (Arti's value; tor has none, item O-9).
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Deadline for the whole SOCKS handshake with a PT's client method.
pub const SOCKS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// How many `STATUS` lines a [`ManagedPt`] remembers (oldest dropped first).
pub const MAX_STATUS_HISTORY: usize = 64;

/// How long to wait for the exit status of a PT that closed stdout during startup before
/// killing it.
const EARLY_EXIT_WAIT: Duration = Duration::from_millis(500);

mod connector;
mod parser;
mod process;
mod reading;
mod supervise;

pub use connector::*;
pub use parser::*;
pub use process::*;
use reading::*;
pub use supervise::*;

// Configuration and environment (H-1)

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

// Errors

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
    /// True when the PT itself declared the configuration unusable (`VERSION-ERROR`,
    /// `ENV-ERROR`, `PROXY-ERROR`) or refused the proxy: relaunching cannot help (item H-8,
    /// tor's rule).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            HostError::VersionError(_)
                | HostError::UnsupportedVersion(_)
                | HostError::EnvError(_)
                | HostError::ProxyError(_)
                | HostError::ProxyNotConfirmed
        )
    }

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

#[cfg(test)]
mod tests;
