//! The long-poll rendezvous: proxies wait for a client's offer, clients wait for the proxy's
//! answer (spec §3.4, §3.9). One mutex guards the waiting proxies and the matches awaiting an
//! answer; every wait is bounded in time, and the number of waiters in count.
//!
//! Cleanup does not depend on the HTTP layer behaving: each waiter holds a guard that, when
//! its future is dropped (timeout, closed connection, shutdown), removes what it left behind.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

use super::bridges::BridgeList;
use super::geoip::GeoIp;
use super::matching::{Pools, Ticket};
use super::messages::{ClientPoll, Nat, ProxyPoll, ProxyResponse};
use super::metrics::{ClientOutcomeLabel, MetricsState};
use super::pattern::RelayPolicy;

/// Limits and timers of a broker. Every field is a documented knob; the defaults follow the
/// Go broker where it has a value.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BrokerLimits {
    /// How long a proxy poll is held waiting for a client (Go: 10 s; the 2.5.1 proxy gives up
    /// after 30 s).
    pub proxy_timeout: Duration,
    /// How long a matched client waits for the proxy's answer (Go: 10 s; the 2.5.1 client
    /// gives up after 15 s).
    pub client_timeout: Duration,
    /// Largest request body read (Go: 100 000 bytes); larger bodies get 400.
    pub max_body: usize,
    /// Most proxies waiting at once; further polls get `no match` at once.
    pub max_waiting_proxies: usize,
    /// Most clients waiting for an answer at once; further clients get an error at once.
    pub max_waiting_clients: usize,
    /// Most HTTP connections served at once; further connections wait to be accepted.
    pub max_connections: usize,
    /// Time allowed to read a request's headers (and for a TLS handshake).
    pub header_timeout: Duration,
    /// Time allowed to read a request body.
    pub body_timeout: Duration,
    /// Largest HTTP/1 read buffer (bounds header and URL size; the AMP path lives in the URL).
    pub max_header_buf: usize,
    /// Distinct proxy addresses remembered per metrics interval.
    pub max_tracked_ips: usize,
    /// How often the metrics log is written (Go: 24 h).
    pub metrics_interval: Duration,
}

impl Default for BrokerLimits {
    fn default() -> Self {
        BrokerLimits {
            proxy_timeout: Duration::from_secs(10),
            client_timeout: Duration::from_secs(10),
            max_body: 100_000,
            max_waiting_proxies: 100_000,
            max_waiting_clients: 20_000,
            max_connections: 16 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_header_buf: 256 * 1024,
            max_tracked_ips: super::metrics::DEFAULT_MAX_TRACKED_IPS,
            metrics_interval: Duration::from_secs(24 * 3600),
        }
    }
}

/// Matching policy and where the reloadable files are.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct BrokerSettings {
    /// `--allowed-relay-pattern`.
    pub allowed_relay_pattern: String,
    /// `--default-relay-pattern` (assumed for proxies that send no pattern).
    pub default_relay_pattern: String,
    /// `--allow-unknown-nat-pairing`.
    pub allow_unknown_nat_pairing: bool,
    /// `--bridge-list-path` (`None`: the built-in default bridge).
    pub bridge_list_path: Option<PathBuf>,
    /// The IPv4 and IPv6 geoip files (`None`: no country counts).
    pub geoip_paths: Option<(PathBuf, PathBuf)>,
    /// Limits and timers.
    pub limits: BrokerLimits,
}

/// What a client poll came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOutcome {
    /// The proxy's answer.
    Answer(String),
    /// No proxy was available for the client's NAT type.
    NoProxies,
    /// The matched proxy did not answer in time.
    TimedOut,
    /// The client's bridge fingerprint is not in the bridge list (Go: HTTP 500).
    UnknownBridge,
    /// Too many clients are already waiting.
    Overloaded,
}

/// What a proxy poll came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyOutcome {
    /// The response to send.
    Response(ProxyResponse),
    /// Another poll with the same session id is active (HTTP 400).
    DuplicateSid,
}

struct Offer {
    sdp: String,
    nat: Nat,
    relay_url: String,
}

struct WaitingProxy {
    sid: String,
    proxy_type: &'static str,
    offer_tx: oneshot::Sender<Offer>,
}

struct Matched {
    ticket: Ticket,
    answer_tx: oneshot::Sender<String>,
}

#[derive(Default)]
struct State {
    pools: Pools<WaitingProxy>,
    /// Session id → ticket, for proxies still waiting.
    waiting_sids: HashMap<String, Ticket>,
    /// Session id → the client waiting for that proxy's answer.
    matched: HashMap<String, Matched>,
    waiting_clients: usize,
    next_ticket: Ticket,
}

/// The broker: matching state, bridge list, geoip and metrics. Cheap to share in an `Arc`.
pub struct Broker {
    settings: BrokerSettings,
    relay_policy: RelayPolicy,
    state: Mutex<State>,
    bridges: RwLock<Arc<BridgeList>>,
    geoip: RwLock<Option<Arc<GeoIp>>>,
    metrics: Mutex<MetricsState>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("waiting_proxies", &self.waiting_proxies())
            .field("waiting_clients", &self.waiting_clients())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Broker {
    /// A broker with the built-in bridge list and no geoip database; install others with
    /// [`Broker::set_bridges`] and [`Broker::set_geoip`] (or [`super::reload`]).
    pub fn new(settings: BrokerSettings) -> Broker {
        let relay_policy = RelayPolicy::new(
            &settings.allowed_relay_pattern,
            &settings.default_relay_pattern,
        );
        let metrics = MetricsState::new(settings.limits.max_tracked_ips);
        Broker {
            settings,
            relay_policy,
            state: Mutex::new(State::default()),
            bridges: RwLock::new(Arc::new(BridgeList::default())),
            geoip: RwLock::new(None),
            metrics: Mutex::new(metrics),
        }
    }

    /// The settings the broker was built with.
    pub fn settings(&self) -> &BrokerSettings {
        &self.settings
    }

    /// Replaces the bridge list.
    pub fn set_bridges(&self, bridges: BridgeList) {
        *self.bridges.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(bridges);
    }

    /// The current bridge list.
    pub fn bridges(&self) -> Arc<BridgeList> {
        self.bridges
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces (or removes) the geoip database.
    pub fn set_geoip(&self, geoip: Option<GeoIp>) {
        *self.geoip.write().unwrap_or_else(PoisonError::into_inner) = geoip.map(Arc::new);
    }

    fn geoip(&self) -> Option<Arc<GeoIp>> {
        self.geoip
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Proxies currently waiting for a client.
    pub fn waiting_proxies(&self) -> usize {
        lock(&self.state).pools.len()
    }

    /// Clients currently waiting for an answer.
    pub fn waiting_clients(&self) -> usize {
        lock(&self.state).waiting_clients
    }

    /// Matches whose answer has not arrived yet.
    pub fn pending_answers(&self) -> usize {
        lock(&self.state).matched.len()
    }

    /// Handles a proxy poll from `remote`: checks its relay pattern, counts it, and holds it
    /// up to [`BrokerLimits::proxy_timeout`] waiting for a client.
    pub async fn proxy_poll(&self, poll: ProxyPoll, remote: Option<IpAddr>) -> ProxyOutcome {
        let nat = poll.nat;
        let pattern = poll.accepted_relay_pattern.as_deref();
        {
            let mut m = lock(&self.metrics);
            m.proxy_poll_seen(nat, poll.proxy_type, pattern.is_some());
            if !self.relay_policy.accepts(pattern) {
                m.proxy_rejected_relay(nat, poll.proxy_type);
                return ProxyOutcome::Response(ProxyResponse::IncorrectRelayPattern);
            }
        }
        if let Some(ip) = remote {
            let country = self.geoip().map(|g| g.country(ip));
            lock(&self.metrics).proxy_address(ip, poll.proxy_type, nat, country);
        }
        let (offer_tx, offer_rx) = oneshot::channel();
        let ticket = {
            let mut state = lock(&self.state);
            if state.waiting_sids.contains_key(&poll.sid) || state.matched.contains_key(&poll.sid) {
                return ProxyOutcome::DuplicateSid;
            }
            if state.pools.len() >= self.settings.limits.max_waiting_proxies {
                drop(state);
                lock(&self.metrics).proxy_idle(nat);
                return ProxyOutcome::Response(ProxyResponse::NoMatch);
            }
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            state.waiting_sids.insert(poll.sid.clone(), ticket);
            state.pools.push(
                ticket,
                nat,
                poll.clients,
                WaitingProxy {
                    sid: poll.sid.clone(),
                    proxy_type: poll.proxy_type,
                    offer_tx,
                },
            );
            ticket
        };
        let guard = ProxyGuard {
            broker: self,
            ticket,
            sid: &poll.sid,
        };
        let mut offer_rx = offer_rx;
        let offer =
            match tokio::time::timeout(self.settings.limits.proxy_timeout, &mut offer_rx).await {
                Ok(Ok(offer)) => Some(offer),
                Ok(Err(_)) => None,
                Err(_) => {
                    // A client may have taken this proxy just now: offers are sent under the lock,
                    // so after taking it the offer is either in the channel or never coming.
                    guard.withdraw();
                    offer_rx.try_recv().ok()
                }
            };
        drop(guard);
        let mut m = lock(&self.metrics);
        match offer {
            Some(offer) => {
                m.proxy_matched(nat);
                ProxyOutcome::Response(ProxyResponse::Match {
                    offer: offer.sdp,
                    nat: offer.nat,
                    relay_url: offer.relay_url,
                })
            }
            None => {
                m.proxy_idle(nat);
                ProxyOutcome::Response(ProxyResponse::NoMatch)
            }
        }
    }

    /// Handles a client poll: picks a proxy for the client's NAT type, hands it the offer, and
    /// waits up to [`BrokerLimits::client_timeout`] for the answer.
    pub async fn client_poll(&self, poll: ClientPoll) -> ClientOutcome {
        let Some(relay_url) = self
            .bridges()
            .get(&poll.fingerprint)
            .map(|b| b.websocket_address.clone())
        else {
            return ClientOutcome::UnknownBridge;
        };
        let nat = poll.nat;
        let (answer_tx, answer_rx) = oneshot::channel();
        let (sid, ticket) = {
            let mut state = lock(&self.state);
            if state.waiting_clients >= self.settings.limits.max_waiting_clients {
                return ClientOutcome::Overloaded;
            }
            let mut offer = Offer {
                sdp: poll.offer,
                nat,
                relay_url,
            };
            let matched = loop {
                let Some((ticket, proxy)) = state
                    .pools
                    .pop_for(nat, self.settings.allow_unknown_nat_pairing)
                else {
                    break None;
                };
                state.waiting_sids.remove(&proxy.sid);
                match proxy.offer_tx.send(offer) {
                    Ok(()) => break Some((proxy.sid, ticket)),
                    // The proxy's poll ended between its timeout and its cleanup: next one.
                    Err(back) => offer = back,
                }
            };
            let Some((sid, ticket)) = matched else {
                drop(state);
                lock(&self.metrics).client(nat, ClientOutcomeLabel::Denied);
                return ClientOutcome::NoProxies;
            };
            state
                .matched
                .insert(sid.clone(), Matched { ticket, answer_tx });
            state.waiting_clients += 1;
            (sid, ticket)
        };
        let _guard = ClientGuard {
            broker: self,
            sid: &sid,
            ticket,
        };
        let outcome =
            match tokio::time::timeout(self.settings.limits.client_timeout, answer_rx).await {
                Ok(Ok(answer)) => ClientOutcome::Answer(answer),
                Ok(Err(_)) | Err(_) => ClientOutcome::TimedOut,
            };
        let label = match outcome {
            ClientOutcome::Answer(_) => ClientOutcomeLabel::Matched,
            _ => ClientOutcomeLabel::Timeout,
        };
        lock(&self.metrics).client(nat, label);
        outcome
    }

    /// Handles a proxy's answer: hands it to the client matched with session `sid`. Returns
    /// false when no client waits for it (`client gone`).
    pub fn proxy_answer(&self, sid: &str, answer: String) -> bool {
        let matched = lock(&self.state).matched.remove(sid);
        match matched {
            Some(m) => m.answer_tx.send(answer).is_ok(),
            None => false,
        }
    }

    /// Waiting proxies by (NAT, type), for `/prometheus`.
    pub fn available_by_label(&self) -> BTreeMap<(Nat, &'static str), u64> {
        let state = lock(&self.state);
        let mut out = BTreeMap::new();
        for (nat, proxy) in state.pools.iter() {
            *out.entry((nat, proxy.proxy_type)).or_default() += 1;
        }
        out
    }

    /// The `/debug` text: proxies known to the broker by type and NAT type.
    pub fn debug_text(&self) -> String {
        use std::fmt::Write as _;
        let state = lock(&self.state);
        let mut by_type: BTreeMap<&str, usize> = BTreeMap::new();
        let mut by_nat: HashMap<Nat, usize> = HashMap::new();
        for (nat, proxy) in state.pools.iter() {
            *by_type.entry(proxy.proxy_type).or_default() += 1;
            *by_nat.entry(nat).or_default() += 1;
        }
        let total = state.pools.len() + state.matched.len();
        drop(state);
        let mut s = format!("current snowflakes available: {total}\n");
        let unknown = by_type.remove("unknown").unwrap_or(0);
        for (t, n) in by_type {
            let _ = writeln!(s, "\t{t} proxies: {n}");
        }
        let _ = write!(s, "\tunknown proxies: {unknown}");
        s.push_str("\nNAT Types available:");
        for nat in [Nat::Restricted, Nat::Unrestricted, Nat::Unknown] {
            let _ = write!(
                s,
                "\n\t{}: {}",
                nat.as_str(),
                by_nat.get(&nat).copied().unwrap_or(0)
            );
        }
        s
    }

    /// Prometheus text of all counters.
    pub fn prometheus_text(&self) -> String {
        let available = self.available_by_label();
        lock(&self.metrics).render_prometheus(&available)
    }

    /// The metrics log block for the interval ending now, starting a new interval.
    pub fn take_metrics_log(&self) -> String {
        let secs = self.settings.limits.metrics_interval.as_secs();
        lock(&self.metrics).render_log(SystemTime::now(), secs)
    }
}

/// Removes a waiting proxy when its poll ends, however it ends.
struct ProxyGuard<'a> {
    broker: &'a Broker,
    ticket: Ticket,
    sid: &'a str,
}

impl ProxyGuard<'_> {
    fn withdraw(&self) {
        let mut state = lock(&self.broker.state);
        if state.pools.remove(self.ticket).is_some() {
            state.waiting_sids.remove(self.sid);
        }
    }
}

impl Drop for ProxyGuard<'_> {
    fn drop(&mut self) {
        self.withdraw();
    }
}

/// Forgets a client's match when its poll ends, however it ends.
struct ClientGuard<'a> {
    broker: &'a Broker,
    sid: &'a str,
    ticket: Ticket,
}

impl Drop for ClientGuard<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.broker.state);
        if state
            .matched
            .get(self.sid)
            .is_some_and(|m| m.ticket == self.ticket)
        {
            state.matched.remove(self.sid);
        }
        state.waiting_clients = state.waiting_clients.saturating_sub(1);
    }
}
