//! The one statistics schema every driver exports (STATUS lines, IPC JSON, Prometheus).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// A snapshot of one transport's counters.
///
/// "Up" is the direction from the application (tor, a SOCKS client) towards the network peer;
/// "down" is the way back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Transport name.
    pub transport: String,
    /// Connections relaying right now.
    pub connections_open: u64,
    /// Connections accepted or dialled since start.
    pub connections_total: u64,
    /// Connections that failed before relaying (handshake, dial or upstream errors).
    pub connections_failed: u64,
    /// Payload bytes relayed from the application side to the network side.
    pub bytes_up: u64,
    /// Payload bytes relayed from the network side to the application side.
    pub bytes_down: u64,
    /// Failures by kind (a short stable label such as `socks_malformed` or `dial_refused`).
    pub errors: BTreeMap<String, u64>,
}

/// Live counters behind a [`Stats`] snapshot; cheap to update from many tasks.
#[derive(Debug, Default)]
pub struct StatsCounter {
    transport: String,
    open: AtomicU64,
    total: AtomicU64,
    failed: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
    // Few distinct kinds and only on failure paths, so a mutex is fine here.
    errors: Mutex<BTreeMap<&'static str, u64>>,
}

impl StatsCounter {
    /// Counters for `transport`.
    pub fn new(transport: impl Into<String>) -> Self {
        StatsCounter {
            transport: transport.into(),
            ..Default::default()
        }
    }

    /// Counts a new connection; the guard marks it closed when dropped.
    pub fn open(&self) -> OpenGuard<'_> {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard { counter: self }
    }

    /// Counts a failed connection under `kind`.
    pub fn fail(&self, kind: &'static str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(kind).or_default() += 1;
        }
    }

    /// Adds relayed bytes towards the network.
    pub fn add_up(&self, n: u64) {
        self.up.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds relayed bytes towards the application.
    pub fn add_down(&self, n: u64) {
        self.down.fetch_add(n, Ordering::Relaxed);
    }

    /// A consistent-enough copy of the counters.
    pub fn snapshot(&self) -> Stats {
        let errors = self
            .errors
            .lock()
            .map(|e| e.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
            .unwrap_or_default();
        Stats {
            transport: self.transport.clone(),
            connections_open: self.open.load(Ordering::Relaxed),
            connections_total: self.total.load(Ordering::Relaxed),
            connections_failed: self.failed.load(Ordering::Relaxed),
            bytes_up: self.up.load(Ordering::Relaxed),
            bytes_down: self.down.load(Ordering::Relaxed),
            errors,
        }
    }
}

/// Marks a connection open for as long as it lives.
#[derive(Debug)]
pub struct OpenGuard<'a> {
    counter: &'a StatsCounter,
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.counter.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn counts_and_serializes() {
        let c = StatsCounter::new("plain");
        {
            let _g = c.open();
            c.add_up(10);
            c.add_down(20);
            assert_eq!(c.snapshot().connections_open, 1);
        }
        c.fail("dial_refused");
        let s = c.snapshot();
        assert_eq!(
            (
                s.connections_open,
                s.connections_total,
                s.connections_failed
            ),
            (0, 1, 1)
        );
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"transport":"plain","connections_open":0,"connections_total":1,"connections_failed":1,"bytes_up":10,"bytes_down":20,"errors":{"dial_refused":1}}"#
        );
    }
}
