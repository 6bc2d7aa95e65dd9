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

impl Stats {
    /// The snapshot as one line of JSON (the schema every adapter exports).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// One exported series: name, Prometheus type, help text, and how to read it.
type Series = (&'static str, &'static str, &'static str, fn(&Stats) -> u64);

/// Renders snapshots in the Prometheus text exposition format (version 0.0.4). Labels are
/// only the transport name and the error kind: never addresses (cardinality and privacy).
pub fn prometheus_text(all: &[Stats]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let metrics: [Series; 5] = [
        (
            "ptkit_connections_open",
            "gauge",
            "Connections relaying right now.",
            |s| s.connections_open,
        ),
        (
            "ptkit_connections_total",
            "counter",
            "Connections accepted or dialled since start.",
            |s| s.connections_total,
        ),
        (
            "ptkit_connections_failed_total",
            "counter",
            "Connections that failed before relaying.",
            |s| s.connections_failed,
        ),
        (
            "ptkit_bytes_up_total",
            "counter",
            "Bytes relayed from the application to the network side.",
            |s| s.bytes_up,
        ),
        (
            "ptkit_bytes_down_total",
            "counter",
            "Bytes relayed from the network to the application side.",
            |s| s.bytes_down,
        ),
    ];
    for (name, kind, help, get) in metrics {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in all {
            let _ = writeln!(
                out,
                "{name}{{transport=\"{}\"}} {}",
                escape_label(&s.transport),
                get(s)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP ptkit_errors_total Failures by kind.\n# TYPE ptkit_errors_total counter"
    );
    for s in all {
        for (kind, n) in &s.errors {
            let _ = writeln!(
                out,
                "ptkit_errors_total{{transport=\"{}\",kind=\"{}\"}} {n}",
                escape_label(&s.transport),
                escape_label(kind)
            );
        }
    }
    out
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
    fn prometheus_text_has_every_series_and_escapes_labels() {
        let c = StatsCounter::new("we\"ird\\");
        c.fail("dial");
        c.add_up(7);
        let text = prometheus_text(&[c.snapshot(), StatsCounter::new("plain").snapshot()]);
        assert!(
            text.contains("# TYPE ptkit_connections_open gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("ptkit_bytes_up_total{transport=\"we\\\"ird\\\\\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("ptkit_errors_total{transport=\"we\\\"ird\\\\\",kind=\"dial\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ptkit_connections_total{transport=\"plain\"} 0\n"),
            "{text}"
        );
        // Every sample line is `name{labels} value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<u64>().is_ok(), "{line}");
        }
    }

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
