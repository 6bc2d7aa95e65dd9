//! The process driver: launch, startup deadline, stop ladder (items H-6, H-7, H-9).

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ptkit_core::redact::sensitive;
use tokio::io::{AsyncBufRead, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;

use crate::lines::{MAX_LINE_LEN, Severity};

use super::*;

/// One `STATUS` line a PT printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtStatus {
    /// The `TRANSPORT` value, if the line had one.
    pub transport: Option<String>,
    /// All pairs in order (including `TRANSPORT`).
    pub values: Vec<(String, String)>,
}

#[derive(Debug, Default)]
pub(super) struct Shared {
    statuses: VecDeque<PtStatus>,
    implementation: Option<(String, String)>,
    failure: Option<String>,
    stdout_closed: bool,
}

pub(super) fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Aborts the task when dropped.
#[derive(Debug)]
pub(super) struct TaskGuard(JoinHandle<()>);

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

pub(super) fn program_name(program: &Path) -> String {
    program
        .file_name()
        .unwrap_or(program.as_os_str())
        .to_string_lossy()
        .into_owned()
}

/// Logs or records what a line meant (both during startup and afterwards).
pub(super) fn dispatch(pt: &str, event: &HostEvent, shared: &Mutex<Shared>) {
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
pub(super) async fn configure<R: AsyncBufRead + Unpin>(
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
pub(super) async fn watch_stdout<R: AsyncBufRead + Unpin>(
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
pub(super) async fn watch_stderr<R: AsyncBufRead + Unpin>(pt: String, mut stderr: R) {
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
pub(super) fn send_signal(pid: u32, sig: libc::c_int) -> io::Result<()> {
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

    /// Waits until the PT exits by itself (cancel-safe).
    pub async fn wait_exit(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
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
