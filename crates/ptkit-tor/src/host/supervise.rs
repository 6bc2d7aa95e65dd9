//! Keeping a PT running (item H-8): relaunch after an unexpected exit with exponential
//! back-off, but never after the PT said its configuration is unusable.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ptkit_core::{Args, BoxFuture, Conn, Connector, Target, TransportError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;

/// How to relaunch.
#[derive(Debug, Clone)]
pub struct RelaunchPolicy {
    /// Wait before the first relaunch.
    pub initial_backoff: Duration,
    /// Longest wait between relaunches.
    pub max_backoff: Duration,
    /// A PT that ran at least this long gets the initial back-off again.
    pub stable_after: Duration,
}

impl Default for RelaunchPolicy {
    fn default() -> Self {
        RelaunchPolicy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    methods: Option<PtMethods>,
    launches: u32,
    gave_up: Option<String>,
}

/// A PT kept alive by relaunching; connectors follow it to its new addresses.
#[derive(Debug)]
pub struct SupervisedPt {
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<Duration>>,
    task: Option<JoinHandle<()>>,
}

fn lock(s: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

impl SupervisedPt {
    /// Launches the PT; the first launch must succeed, later exits are relaunched.
    pub async fn start(
        config: HostConfig,
        policy: RelaunchPolicy,
    ) -> Result<SupervisedPt, HostError> {
        let pt = ManagedPt::launch(config.clone()).await?;
        let state = Arc::new(Mutex::new(State {
            methods: Some(pt.methods().clone()),
            launches: 1,
            gave_up: None,
        }));
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run(pt, config, policy, state.clone(), stop_rx));
        Ok(SupervisedPt {
            state,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// How many times the PT was launched successfully.
    pub fn launches(&self) -> u32 {
        lock(&self.state).launches
    }

    /// The current methods, or `None` while relaunching or after giving up.
    pub fn methods(&self) -> Option<PtMethods> {
        lock(&self.state).methods.clone()
    }

    /// Why relaunching stopped for good, if it did.
    pub fn gave_up(&self) -> Option<String> {
        lock(&self.state).gave_up.clone()
    }

    /// A connector for client method `name` that always dials the PT's current address.
    pub fn connector(&self, name: &str) -> SupervisedConnector {
        SupervisedConnector {
            name: name.to_owned(),
            state: self.state.clone(),
        }
    }

    /// Stops the PT (stdin, SIGTERM, SIGKILL with `grace` between) and the supervision.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(grace);
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SupervisedPt {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn run(
    mut pt: ManagedPt,
    config: HostConfig,
    policy: RelaunchPolicy,
    state: Arc<Mutex<State>>,
    mut stop: oneshot::Receiver<Duration>,
) {
    let mut backoff = policy.initial_backoff;
    let mut started = Instant::now();
    loop {
        tokio::select! {
            grace = &mut stop => {
                let _ = pt.stop(grace.unwrap_or(Duration::from_secs(5))).await;
                lock(&state).methods = None;
                return;
            }
            status = pt.wait_exit() => {
                lock(&state).methods = None;
                tracing::warn!(pt = ?config.program, "managed PT exited ({}); relaunching", match status {
                    Ok(s) => s.to_string(),
                    Err(e) => e.to_string(),
                });
            }
        }
        if started.elapsed() >= policy.stable_after {
            backoff = policy.initial_backoff;
        }
        loop {
            tokio::select! {
                grace = &mut stop => { let _ = grace; return; }
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(policy.max_backoff);
            match ManagedPt::launch(config.clone()).await {
                Ok(new) => {
                    let mut s = lock(&state);
                    s.methods = Some(new.methods().clone());
                    s.launches += 1;
                    drop(s);
                    pt = new;
                    started = Instant::now();
                    break;
                }
                Err(e) if e.is_final() => {
                    tracing::error!(pt = ?config.program, "managed PT refused its configuration; not relaunching: {e}");
                    lock(&state).gave_up = Some(e.to_string());
                    return;
                }
                Err(e) => tracing::warn!(pt = ?config.program, "relaunch failed: {e}"),
            }
        }
    }
}

/// Dials through the supervised PT's current address for one client method.
#[derive(Debug, Clone)]
pub struct SupervisedConnector {
    name: String,
    state: Arc<Mutex<State>>,
}

impl Connector for SupervisedConnector {
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
        let method = lock(&self.state)
            .methods
            .as_ref()
            .and_then(|m| m.methods.iter().find(|x| x.name == self.name).cloned());
        let connector = method.as_ref().and_then(PtConnector::for_method);
        let name = self.name.clone();
        match connector {
            Some(c) => c.connect(settings, dest),
            None => Box::pin(async move {
                Err(TransportError::Io(io::Error::new(
                    io::ErrorKind::NotConnected,
                    format!("PT method {name} is not running (relaunching or given up)"),
                )))
            }),
        }
    }
}
