//! The 2.x/3.0 child process: spawn with flags, read its configuration under a deadline,
//! keep draining its output, stop it with the stdin → SIGTERM → SIGKILL ladder.

use std::collections::VecDeque;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;

use crate::lines::MAX_LINE_LEN;
use crate::version::PtVersion;

use super::lines::{IpcHostEvent, IpcHostParser, LaunchRole, Method, build_args};
use super::{AdapterError, ExternalConfig};

/// Error lines from stderr kept for the launch error (oldest dropped first).
const MAX_STDERR_LINES: usize = 16;
/// How long to wait for the exit status of a child that closed stdout during startup.
const EARLY_EXIT_WAIT: Duration = Duration::from_millis(500);

/// Aborts the task when dropped.
#[derive(Debug)]
struct TaskGuard(JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum LineRead {
    Text(String),
    TooLong,
    Eof,
}

/// Reads one line of at most [`MAX_LINE_LEN`] bytes (a longer one is drained and reported).
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<LineRead> {
    let mut buf = Vec::new();
    let n = (&mut *r)
        .take(MAX_LINE_LEN as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(LineRead::Eof);
    }
    if buf.last() != Some(&b'\n') && buf.len() > MAX_LINE_LEN {
        // Drain the rest of the over-long line.
        let mut sink = Vec::new();
        loop {
            sink.clear();
            let m = (&mut *r)
                .take(64 * 1024)
                .read_until(b'\n', &mut sink)
                .await?;
            if m == 0 || sink.last() == Some(&b'\n') {
                break;
            }
        }
        return Ok(LineRead::TooLong);
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(LineRead::Text(String::from_utf8_lossy(&buf).into_owned()))
}

/// A running 2.x/3.0 child whose methods are configured. Dropping it kills the process.
#[derive(Debug)]
pub struct IpcPt {
    child: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    methods: Vec<Method>,
    _stdout: TaskGuard,
    _stderr: TaskGuard,
}

/// Sends `sig` to our own, not yet reaped child.
#[allow(unsafe_code)]
fn send_signal(pid: u32, sig: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: kill(2) takes two integers and touches none of our memory. The pid is that of a
    // child we spawned and have not reaped (we signal only after `wait` timed out, and tokio
    // reaps only through our `Child`), so it cannot belong to another process.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn stderr_error(lines: &Mutex<VecDeque<String>>) -> Option<String> {
    let l = lines.lock().ok()?;
    l.iter()
        .rev()
        .find(|x| x.contains("-ERROR"))
        .or_else(|| l.back())
        .cloned()
}

impl IpcPt {
    /// Spawns the child with the flags of `version`, and returns once it printed
    /// `*METHODS DONE`; on any failure the child is killed and reaped first.
    pub async fn launch(
        config: &ExternalConfig,
        version: PtVersion,
        role: LaunchRole,
    ) -> Result<IpcPt, AdapterError> {
        let state = std::path::absolute(&config.state_dir)?;
        let mut cmd = Command::new(&config.program);
        cmd.args(&config.args);
        cmd.args(build_args(
            version,
            &config.transport,
            &role,
            &state,
            &config.options,
            config.proxy.as_deref(),
        ));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TOR_PT_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(config.extra_env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| AdapterError::Spawn {
            program: config.program.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        let name = config.transport.clone();
        let stdin = child.stdin.take();
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill().await;
            return Err(AdapterError::Io(io::Error::other("child pipes missing")));
        };
        let errors: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let errs = errors.clone();
        let pt = name.clone();
        let stderr_task = TaskGuard(tokio::spawn(async move {
            let mut r = BufReader::new(stderr);
            loop {
                match read_line(&mut r).await {
                    Ok(LineRead::Text(l)) => {
                        tracing::debug!(pt, "stderr: {l}");
                        if let Ok(mut e) = errs.lock() {
                            if e.len() >= MAX_STDERR_LINES {
                                e.pop_front();
                            }
                            e.push_back(l);
                        }
                    }
                    Ok(LineRead::TooLong) => {}
                    Ok(LineRead::Eof) | Err(_) => return,
                }
            }
        }));
        let mut stdout = BufReader::new(stdout);
        let mut parser = IpcHostParser::new(version, matches!(role, LaunchRole::Server { .. }));
        let configure = async {
            loop {
                match read_line(&mut stdout).await? {
                    LineRead::Eof => return Ok(None),
                    LineRead::TooLong => return Err(AdapterError::LineTooLong),
                    LineRead::Text(l) => {
                        tracing::trace!(pt = %name, "stdout: {l}");
                        match parser.feed(&l)? {
                            IpcHostEvent::Done(m) => return Ok(Some(m)),
                            IpcHostEvent::MethodError(t, m) => {
                                tracing::warn!(pt = %name, transport = %t, "method error: {m}")
                            }
                            IpcHostEvent::Log(m) => tracing::info!(pt = %name, "{m}"),
                            _ => {}
                        }
                    }
                }
            }
        };
        let outcome = tokio::time::timeout(config.startup_timeout, configure).await;
        let failure = match outcome {
            Ok(Ok(Some(methods))) => {
                let pt = name.clone();
                let stdout_task = TaskGuard(tokio::spawn(async move {
                    loop {
                        match read_line(&mut stdout).await {
                            Ok(LineRead::Text(l)) => match parser.feed(&l) {
                                Ok(IpcHostEvent::Log(m)) => tracing::info!(pt, "{m}"),
                                Ok(_) => {}
                                Err(e) => tracing::warn!(pt, "after configuration: {e}"),
                            },
                            Ok(LineRead::TooLong) => {
                                tracing::warn!(pt, "dropped an over-long line")
                            }
                            Ok(LineRead::Eof) | Err(_) => return,
                        }
                    }
                }));
                return Ok(IpcPt {
                    child,
                    stdin,
                    pid,
                    methods,
                    _stdout: stdout_task,
                    _stderr: stderr_task,
                });
            }
            Ok(Ok(None)) => {
                drop(stdin);
                let status = match tokio::time::timeout(EARLY_EXIT_WAIT, child.wait()).await {
                    Ok(Ok(s)) => Some(s),
                    _ => {
                        let _ = child.kill().await;
                        None
                    }
                };
                // Let the stderr reader catch the error line before it is dropped.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let message = stderr_error(&errors);
                return Err(AdapterError::from_exit(status, message));
            }
            Ok(Err(e)) => e,
            Err(_) => AdapterError::StartupTimeout(config.startup_timeout),
        };
        drop(stdin);
        let _ = child.kill().await;
        Err(failure)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The methods printed before `*METHODS DONE`.
    pub fn methods(&self) -> &[Method] {
        &self.methods
    }

    /// Stops the child: close stdin, wait `grace`; SIGTERM, wait `grace`; SIGKILL.
    pub async fn stop(mut self, grace: Duration) -> Result<ExitStatus, AdapterError> {
        drop(self.stdin.take());
        if let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
            return Ok(status?);
        }
        if send_signal(self.pid, libc::SIGTERM).is_ok()
            && let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await
        {
            return Ok(status?);
        }
        self.child.kill().await?;
        Ok(self.child.wait().await?)
    }
}
