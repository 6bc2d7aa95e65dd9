//! Broker metrics (spec §3.8), sans-IO: counters updated by the rendezvous, rendered as the
//! Go broker's 24-hour metrics log and as Prometheus text in the `snowflake_` namespace.
//!
//! The log's counts are rounded up to a multiple of 8 as the Go broker does, so that exact
//! numbers of clients cannot be read from published statistics; the Prometheus
//! `rounded_*` counters are rounded the same way.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use super::messages::{KNOWN_PROXY_TYPES, Nat};

/// Most distinct proxy addresses remembered per metrics interval (across all proxy types);
/// further new addresses are not counted, so memory stays bounded under address churn.
pub const DEFAULT_MAX_TRACKED_IPS: usize = 1_000_000;

/// Rounds a count up to a multiple of 8 (the Go broker's `binCount`).
pub fn bin_count(n: u64) -> u64 {
    n.div_ceil(8).saturating_mul(8)
}

/// How a client poll ended, for `rounded_client_poll_total{status}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientOutcomeLabel {
    /// No proxy was available.
    Denied,
    /// An answer was delivered.
    Matched,
    /// The proxy did not answer in time.
    Timeout,
}

impl ClientOutcomeLabel {
    fn as_str(self) -> &'static str {
        match self {
            ClientOutcomeLabel::Denied => "denied",
            ClientOutcomeLabel::Matched => "matched",
            ClientOutcomeLabel::Timeout => "timeout",
        }
    }
}

/// All counters. Interval counters are reset by [`MetricsState::render_log`]; Prometheus
/// counters only grow.
#[derive(Debug)]
pub struct MetricsState {
    max_tracked_ips: usize,
    tracked_ips: usize,
    // Per interval.
    ips_by_type: HashMap<&'static str, HashSet<IpAddr>>,
    ips_by_nat: HashMap<Nat, HashSet<IpAddr>>,
    countries: HashMap<[u8; 2], u64>,
    idle: u64,
    denied: u64,
    restricted_denied: u64,
    unrestricted_denied: u64,
    matched: u64,
    with_relay_url: u64,
    without_relay_url: u64,
    rejected_relay_url: u64,
    // Prometheus (cumulative).
    prom_proxy_total: BTreeMap<(&'static str, Nat, [u8; 2]), u64>,
    prom_proxy_poll: BTreeMap<(Nat, &'static str), u64>,
    prom_client_poll: BTreeMap<(Nat, &'static str), u64>,
    prom_with_relay: BTreeMap<(Nat, &'static str), u64>,
    prom_without_relay: BTreeMap<(Nat, &'static str), u64>,
    prom_rejected_relay: BTreeMap<(Nat, &'static str), u64>,
}

impl Default for MetricsState {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_TRACKED_IPS)
    }
}

impl MetricsState {
    /// Fresh counters remembering at most `max_tracked_ips` addresses per interval.
    pub fn new(max_tracked_ips: usize) -> Self {
        MetricsState {
            max_tracked_ips,
            tracked_ips: 0,
            ips_by_type: HashMap::new(),
            ips_by_nat: HashMap::new(),
            countries: HashMap::new(),
            idle: 0,
            denied: 0,
            restricted_denied: 0,
            unrestricted_denied: 0,
            matched: 0,
            with_relay_url: 0,
            without_relay_url: 0,
            rejected_relay_url: 0,
            prom_proxy_total: BTreeMap::new(),
            prom_proxy_poll: BTreeMap::new(),
            prom_client_poll: BTreeMap::new(),
            prom_with_relay: BTreeMap::new(),
            prom_without_relay: BTreeMap::new(),
            prom_rejected_relay: BTreeMap::new(),
        }
    }

    /// A proxy poll arrived (before the relay-pattern check).
    pub fn proxy_poll_seen(&mut self, nat: Nat, proxy_type: &'static str, has_pattern: bool) {
        if has_pattern {
            self.with_relay_url += 1;
            *self.prom_with_relay.entry((nat, proxy_type)).or_default() += 1;
        } else {
            self.without_relay_url += 1;
            *self
                .prom_without_relay
                .entry((nat, proxy_type))
                .or_default() += 1;
        }
    }

    /// A proxy poll was refused for its relay pattern.
    pub fn proxy_rejected_relay(&mut self, nat: Nat, proxy_type: &'static str) {
        self.rejected_relay_url += 1;
        *self
            .prom_rejected_relay
            .entry((nat, proxy_type))
            .or_default() += 1;
    }

    /// A proxy's address, counted once per proxy type per interval; `country` is `None`
    /// without a geoip database.
    pub fn proxy_address(
        &mut self,
        ip: IpAddr,
        proxy_type: &'static str,
        nat: Nat,
        country: Option<[u8; 2]>,
    ) {
        let ip = ip.to_canonical();
        let set = self.ips_by_type.entry(proxy_type).or_default();
        if set.contains(&ip) || self.tracked_ips >= self.max_tracked_ips {
            return;
        }
        set.insert(ip);
        self.tracked_ips += 1;
        self.ips_by_nat.entry(nat).or_default().insert(ip);
        if let Some(cc) = country {
            *self.countries.entry(cc).or_default() += 1;
            *self
                .prom_proxy_total
                .entry((proxy_type, nat, cc))
                .or_default() += 1;
        }
    }

    /// A proxy poll ended without a client.
    pub fn proxy_idle(&mut self, nat: Nat) {
        self.idle += 1;
        *self.prom_proxy_poll.entry((nat, "idle")).or_default() += 1;
    }

    /// A proxy poll ended with a client.
    pub fn proxy_matched(&mut self, nat: Nat) {
        *self.prom_proxy_poll.entry((nat, "matched")).or_default() += 1;
    }

    /// A client poll ended.
    pub fn client(&mut self, nat: Nat, outcome: ClientOutcomeLabel) {
        match outcome {
            ClientOutcomeLabel::Denied => {
                self.denied += 1;
                if nat == Nat::Unrestricted {
                    self.unrestricted_denied += 1;
                } else {
                    self.restricted_denied += 1;
                }
            }
            ClientOutcomeLabel::Matched => self.matched += 1,
            ClientOutcomeLabel::Timeout => {}
        }
        *self
            .prom_client_poll
            .entry((nat, outcome.as_str()))
            .or_default() += 1;
    }

    /// Renders the metrics log block for the interval ending at `end` (lasting
    /// `interval_secs`), in the Go broker's format, and starts a new interval.
    pub fn render_log(&mut self, end: SystemTime, interval_secs: u64) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "snowflake-stats-end {} ({interval_secs} s)",
            format_utc(end)
        );
        let mut countries: Vec<_> = self.countries.iter().collect();
        // Most proxies first; equal counts by country code.
        countries.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let list: Vec<String> = countries
            .iter()
            .map(|(cc, n)| format!("{}={n}", String::from_utf8_lossy(&cc[..])))
            .collect();
        let _ = writeln!(out, "snowflake-ips {}", list.join(","));
        let mut total = 0;
        for t in KNOWN_PROXY_TYPES {
            let n = self.ips_by_type.get(t).map_or(0, HashSet::len);
            total += n;
            let _ = writeln!(out, "snowflake-ips-{t} {n}");
        }
        total += self.ips_by_type.get("unknown").map_or(0, HashSet::len);
        let _ = writeln!(out, "snowflake-ips-total {total}");
        let _ = writeln!(out, "snowflake-idle-count {}", bin_count(self.idle));
        let _ = writeln!(
            out,
            "snowflake-proxy-poll-with-relay-url-count {}",
            bin_count(self.with_relay_url)
        );
        let _ = writeln!(
            out,
            "snowflake-proxy-poll-without-relay-url-count {}",
            bin_count(self.without_relay_url)
        );
        let _ = writeln!(
            out,
            "snowflake-proxy-rejected-for-relay-url-count {}",
            bin_count(self.rejected_relay_url)
        );
        let _ = writeln!(out, "client-denied-count {}", bin_count(self.denied));
        let _ = writeln!(
            out,
            "client-restricted-denied-count {}",
            bin_count(self.restricted_denied)
        );
        let _ = writeln!(
            out,
            "client-unrestricted-denied-count {}",
            bin_count(self.unrestricted_denied)
        );
        let _ = writeln!(
            out,
            "client-snowflake-match-count {}",
            bin_count(self.matched)
        );
        for nat in [Nat::Restricted, Nat::Unrestricted, Nat::Unknown] {
            let n = self.ips_by_nat.get(&nat).map_or(0, HashSet::len);
            let _ = writeln!(out, "snowflake-ips-nat-{} {n}", nat.as_str());
        }
        self.reset_interval();
        out
    }

    fn reset_interval(&mut self) {
        self.tracked_ips = 0;
        self.ips_by_type.clear();
        self.ips_by_nat.clear();
        self.countries.clear();
        self.idle = 0;
        self.denied = 0;
        self.restricted_denied = 0;
        self.unrestricted_denied = 0;
        self.matched = 0;
        self.with_relay_url = 0;
        self.without_relay_url = 0;
        self.rejected_relay_url = 0;
    }

    /// Renders Prometheus text (format 0.0.4). `available` counts waiting proxies by
    /// (NAT, type).
    pub fn render_prometheus(&self, available: &BTreeMap<(Nat, &'static str), u64>) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "available_proxies",
            "The number of currently available snowflake proxies",
            "gauge",
        );
        for ((nat, t), n) in available {
            let _ = writeln!(
                out,
                "snowflake_available_proxies{{nat=\"{}\",type=\"{t}\"}} {n}",
                nat.as_str()
            );
        }
        header(
            &mut out,
            "proxy_total",
            "The number of unique snowflake IPs",
            "counter",
        );
        for ((t, nat, cc), n) in &self.prom_proxy_total {
            let _ = writeln!(
                out,
                "snowflake_proxy_total{{cc=\"{}\",nat=\"{}\",type=\"{t}\"}} {n}",
                escape_label(&String::from_utf8_lossy(&cc[..])),
                nat.as_str()
            );
        }
        rounded(
            &mut out,
            "rounded_client_poll_total",
            "The number of snowflake client polls, rounded up to a multiple of 8",
            "status",
            &self.prom_client_poll,
        );
        rounded(
            &mut out,
            "rounded_proxy_poll_total",
            "The number of snowflake proxy polls, rounded up to a multiple of 8",
            "status",
            &self.prom_proxy_poll,
        );
        rounded(
            &mut out,
            "rounded_proxy_poll_with_relay_url_extension_total",
            "The number of snowflake proxy polls with Relay URL Extension, rounded up to a multiple of 8",
            "type",
            &self.prom_with_relay,
        );
        rounded(
            &mut out,
            "rounded_proxy_poll_without_relay_url_extension_total",
            "The number of snowflake proxy polls without Relay URL Extension, rounded up to a multiple of 8",
            "type",
            &self.prom_without_relay,
        );
        rounded(
            &mut out,
            "rounded_proxy_poll_rejected_relay_url_extension_total",
            "The number of snowflake proxy polls rejected by Relay URL Extension, rounded up to a multiple of 8",
            "type",
            &self.prom_rejected_relay,
        );
        out
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP snowflake_{name} {help}");
    let _ = writeln!(out, "# TYPE snowflake_{name} {kind}");
}

fn rounded(
    out: &mut String,
    name: &str,
    help: &str,
    second_label: &str,
    series: &BTreeMap<(Nat, &'static str), u64>,
) {
    header(out, name, help, "counter");
    for ((nat, second), n) in series {
        let _ = writeln!(
            out,
            "snowflake_{name}{{nat=\"{}\",{second_label}=\"{second}\"}} {}",
            nat.as_str(),
            bin_count(*n)
        );
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Formats a time as `YYYY-MM-DD HH:MM:SS` in UTC (Go's `2006-01-02 15:04:05`).
pub fn format_utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}
