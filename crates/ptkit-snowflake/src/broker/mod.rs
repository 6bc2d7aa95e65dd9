//! The Snowflake broker: rendezvous between clients and proxies (spec §3), a drop-in for the
//! Go broker of snowflake 2.5.1.
//!
//! Layers, from the wire inwards:
//!
//! * [`server`]: listener, TLS, metrics log, reload ([`start`] is the entry point).
//! * [`http`]: routes, CORS, body limits and status codes exactly as the Go broker.
//! * [`rendezvous`]: the bounded long-poll matching of proxies and clients ([`Broker`]).
//! * Sans-IO cores, testable with byte vectors: [`messages`] (client, proxy and answer
//!   codecs), [`amp`] (AMP path and armor), [`bridges`] (bridge list), [`pattern`] (relay
//!   host patterns), [`matching`] (NAT-aware queues), [`metrics`] (log and Prometheus text),
//!   [`geoip`] (tor's geoip files).
//!
//! Start one in-process:
//!
//! ```no_run
//! # async fn run() -> Result<(), ptkit_snowflake::broker::BrokerError> {
//! use ptkit_snowflake::broker::{BrokerConfig, start};
//! let shutdown = ptkit_core::shutdown::Shutdown::new();
//! let mut config = BrokerConfig::new("127.0.0.1:0".parse().unwrap());
//! config.settings.allowed_relay_pattern = "127.0.0.1$".into();
//! config.settings.allow_unknown_nat_pairing = true;
//! let running = start(config, &shutdown).await?;
//! println!("broker at http://{}/", running.local_addr());
//! # Ok(()) }
//! ```

pub mod amp;
pub mod bridges;
mod error;
pub mod geoip;
pub mod http;
pub mod http_client;
pub mod matching;
pub mod messages;
pub mod metrics;
pub mod pattern;
pub mod rendezvous;
pub mod server;

#[cfg(test)]
mod tests;

pub use error::{BrokerError, MessageError};
pub use rendezvous::{Broker, BrokerLimits, BrokerSettings, ClientOutcome, ProxyOutcome};
pub use server::{
    BrokerConfig, MetricsLog, RunningBroker, load_bridge_list, load_geoip, reload, start,
};

/// Runs every parser of untrusted broker input over `data` (the fuzz target
/// `broker_messages`): client polls (both forms), proxy polls, answers, responses, AMP paths
/// and armor, bridge lists, relay patterns and geoip lines. Checks round trips where the
/// codec has an encoder; panics only on a bug.
pub fn fuzz_messages(data: &[u8]) {
    let _ = messages::decode_client_poll(data, Some("unknown"));
    let _ = messages::decode_client_poll_v1(data);
    let _ = messages::decode_client_response(data);
    let _ = messages::decode_proxy_response(data);
    let _ = bridges::BridgeList::parse(data);
    let _ = geoip::GeoIp::parse(data, data);
    if let Ok(poll) = messages::decode_proxy_poll(data) {
        let again = messages::encode_proxy_poll(
            &poll.sid,
            poll.proxy_type,
            poll.nat,
            poll.clients,
            poll.accepted_relay_pattern.as_deref(),
        );
        assert_eq!(messages::decode_proxy_poll(&again).ok(), Some(poll));
    }
    if let Ok(answer) = messages::decode_proxy_answer(data) {
        let again = messages::encode_proxy_answer(&answer.sid, &answer.answer);
        assert_eq!(messages::decode_proxy_answer(&again).ok(), Some(answer));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = amp::decode_path(text);
        let p = pattern::RelayPattern::new(text);
        assert!(p.is_superset_of(&p));
        let policy = pattern::RelayPolicy::new(text, text);
        let _ = policy.accepts(Some(text));
    }
    let _ = amp::armor_decode(data);
    let armored = amp::armor_encode(data);
    assert_eq!(
        amp::armor_decode(armored.as_bytes()).ok().as_deref(),
        Some(data)
    );
    let path = amp::encode_path(data, b"cachebrkr");
    assert_eq!(amp::decode_path(&path).ok().as_deref(), Some(data));
}
