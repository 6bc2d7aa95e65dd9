//! The one shutdown primitive: stop accepting, drain, then cut what is left.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Two-stage shutdown shared by every listener and connection task.
///
/// `stop_accepting` ends accept loops (the first SIGINT); `abort` also ends relaying
/// connections (a second SIGINT, SIGTERM, or stdin close). Tasks spawned through
/// [`Shutdown::spawn`] are tracked so [`Shutdown::drained`] can wait for them.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    accepting: CancellationToken,
    running: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    /// A fresh shutdown handle.
    pub fn new() -> Self {
        let running = CancellationToken::new();
        // Aborting also stops accepting.
        let accepting = running.child_token();
        Shutdown {
            accepting,
            running,
            tracker: TaskTracker::new(),
        }
    }

    /// Stop accepting new connections; existing ones keep going.
    pub fn stop_accepting(&self) {
        self.accepting.cancel();
    }

    /// Stop everything now.
    pub fn abort(&self) {
        self.running.cancel();
    }

    /// Resolves when accept loops should stop.
    pub fn accepting_stopped(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.accepting.cancelled()
    }

    /// Resolves when connections should be cut.
    pub fn aborted(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.running.cancelled()
    }

    /// True once [`Shutdown::stop_accepting`] or [`Shutdown::abort`] was called.
    pub fn is_stopping(&self) -> bool {
        self.accepting.is_cancelled()
    }

    /// Spawns a tracked task that is dropped when the shutdown aborts.
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let running = self.running.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = running.cancelled() => {}
                _ = fut => {}
            }
        });
    }

    /// Waits until every tracked task has finished (call after stopping), at most `limit`.
    /// Returns true when everything finished in time.
    pub async fn drained(&self, limit: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_ok()
    }

    /// Number of tracked tasks still running.
    pub fn tasks(&self) -> usize {
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stop_accepting_leaves_tasks_and_abort_cuts_them() {
        let s = Shutdown::new();
        s.spawn(std::future::pending());
        s.stop_accepting();
        assert!(s.is_stopping());
        assert!(!s.drained(Duration::from_secs(1)).await);
        assert_eq!(s.tasks(), 1);
        s.abort();
        assert!(s.drained(Duration::from_secs(1)).await);
    }
}
