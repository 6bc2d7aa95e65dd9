//! Counters of the Snowflake server, rendered as Prometheus text beside the shared stats.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Server-wide counters (all monotonic except the `_open` gauges).
#[derive(Debug, Default)]
pub struct Metrics {
    /// WebSockets that sent a valid token and ClientID.
    pub websockets_total: AtomicU64,
    /// KCP sessions started.
    pub sessions_total: AtomicU64,
    /// KCP sessions alive now.
    pub sessions_open: AtomicU64,
    /// smux streams opened by clients.
    pub streams_total: AtomicU64,
    /// Of those, streams whose client address was known (the 24 h `client_ip` log line).
    pub streams_with_client_ip: AtomicU64,
    /// Datagrams dropped because a session's inbound queue was full or sessions were at
    /// their limit.
    pub inbound_drops: AtomicU64,
    /// Datagrams dropped because a ClientID's outgoing queue was full.
    pub outbound_drops: AtomicU64,
    /// Datagrams that were not KCP or named a conv that could not start a session.
    pub packets_rejected: AtomicU64,
    /// KCP segments retransmitted (added when a session ends).
    pub kcp_retransmissions: AtomicU64,
    failures: Mutex<BTreeMap<&'static str, u64>>,
    ends: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Counts a failed WebSocket or stream handshake of `kind`.
    pub fn handshake_failure(&self, kind: &'static str) {
        if let Ok(mut m) = self.failures.lock() {
            *m.entry(kind).or_default() += 1;
        }
    }

    /// Counts a session that ended for `reason`.
    pub fn session_end(&self, reason: &'static str) {
        if let Ok(mut m) = self.ends.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    /// Handshake failures by kind.
    pub fn failures(&self) -> BTreeMap<&'static str, u64> {
        self.failures.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// The counters in Prometheus text exposition format, names prefixed `ptkit_snowflake_`.
    pub fn prometheus_text(&self) -> String {
        let mut s = String::new();
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP ptkit_snowflake_{name} {help}");
            let _ = writeln!(s, "# TYPE ptkit_snowflake_{name} {kind}");
            let _ = writeln!(s, "ptkit_snowflake_{name} {v}");
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        one(
            "websockets_total",
            "counter",
            "WebSockets with a valid turbotunnel preamble.",
            get(&self.websockets_total),
        );
        one(
            "sessions_total",
            "counter",
            "KCP sessions started.",
            get(&self.sessions_total),
        );
        one(
            "sessions_open",
            "gauge",
            "KCP sessions alive.",
            get(&self.sessions_open),
        );
        one(
            "streams_total",
            "counter",
            "smux streams opened by clients.",
            get(&self.streams_total),
        );
        one(
            "streams_with_client_ip_total",
            "counter",
            "smux streams whose client address was known.",
            get(&self.streams_with_client_ip),
        );
        one(
            "inbound_drops_total",
            "counter",
            "Client datagrams dropped (queue full or session limit).",
            get(&self.inbound_drops),
        );
        one(
            "outbound_drops_total",
            "counter",
            "Datagrams to clients dropped (queue full).",
            get(&self.outbound_drops),
        );
        one(
            "packets_rejected_total",
            "counter",
            "Datagrams that could not be routed to a session.",
            get(&self.packets_rejected),
        );
        one(
            "kcp_retransmissions_total",
            "counter",
            "KCP segments retransmitted by ended sessions.",
            get(&self.kcp_retransmissions),
        );
        let _ = writeln!(
            s,
            "# HELP ptkit_snowflake_handshake_failures_total WebSocket and stream handshakes that failed, by kind."
        );
        let _ = writeln!(s, "# TYPE ptkit_snowflake_handshake_failures_total counter");
        for (k, v) in self.failures() {
            let _ = writeln!(
                s,
                "ptkit_snowflake_handshake_failures_total{{kind=\"{k}\"}} {v}"
            );
        }
        let _ = writeln!(
            s,
            "# HELP ptkit_snowflake_session_ends_total Sessions that ended, by reason."
        );
        let _ = writeln!(s, "# TYPE ptkit_snowflake_session_ends_total counter");
        if let Ok(m) = self.ends.lock() {
            for (k, v) in m.iter() {
                let _ = writeln!(
                    s,
                    "ptkit_snowflake_session_ends_total{{reason=\"{k}\"}} {v}"
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn renders_every_counter_with_labels() {
        let m = Metrics::default();
        m.sessions_total.fetch_add(3, Ordering::Relaxed);
        m.handshake_failure("bad_token");
        m.handshake_failure("bad_token");
        m.session_end("dead_link");
        let t = m.prometheus_text();
        assert!(t.contains("ptkit_snowflake_sessions_total 3\n"), "{t}");
        assert!(t.contains("ptkit_snowflake_handshake_failures_total{kind=\"bad_token\"} 2\n"));
        assert!(t.contains("ptkit_snowflake_session_ends_total{reason=\"dead_link\"} 1\n"));
        assert_eq!(t.lines().filter(|l| l.starts_with("# TYPE")).count(), 11);
    }
}
