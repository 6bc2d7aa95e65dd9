//! # ptkit-quic
//!
//! Authenticated, encrypted QUIC tunnels between one **aggregator** (server) and a dynamic
//! set of **clients**, in the spirit of Microsoft's snocat but production-minded, plus the
//! `quic` pluggable transport built on them. The wire protocol is in `docs/quic-tunnel.md`.
//!
//! - [`proto`]: sans-IO codecs for the per-stream header, its reply and the authentication
//!   messages, every length bounded; [`proto::fuzz_decoders`] is the fuzz entry point.
//! - [`auth`]: [`auth::AuthenticationHandler`] / [`auth::AuthenticationClient`] on the first
//!   stream; shipped: mutual TLS ([`auth::MtlsAuth`]), HMAC challenge-response
//!   ([`auth::HmacAuth`]) and none ([`auth::NoAuth`], the pluggable transport).
//! - [`routing`]: [`routing::Router`] (aggregator) and [`routing::RoutingClient`] (client);
//!   shipped: forward routing by a default-deny [`routing::ForwardPolicy`] and reverse
//!   routing through exposed ports ([`routing::AggregatorRouter`], [`routing::LocalServices`]).
//! - [`manager::TunnelManager`]: live tunnels by identity, with events.
//! - [`server::TunnelServer`]: bounded concurrency, handshake deadline, graceful stop.
//! - [`client`]: one tunnel, or a [`client::ClientRunner`] that reconnects with backoff and
//!   jitter.
//! - [`pt`]: the `quic` transport (pinned self-signed certificate, one QUIC connection per
//!   bridge, one stream per SOCKS connection).
//!
//! Threat model and limits: the aggregator authenticates every client before it may open a
//! stream; forward targets are denied unless a rule allows them; exposed ports bind to
//! loopback unless configured; a client only connects reverse streams to services it named
//! itself. Every window, count and timeout is a field of [`tls::Knobs`],
//! [`server::ServerOptions`] or [`client::ClientOptions`].

pub mod auth;
pub mod client;
pub mod error;
pub mod manager;
pub mod proto;
pub mod pt;
pub mod routing;
pub mod server;
pub mod stream;
pub mod tls;

pub use error::{Error, Result};
/// Re-exported so users can name certificate resolvers without depending on rustls.
pub use rustls;

/// QUIC application close code: authentication refused (the reason is the close reason).
pub const CLOSE_AUTH_REFUSED: u64 = 0x1001;
/// QUIC application close code: the handshake deadline passed before authentication.
pub const CLOSE_AUTH_TIMEOUT: u64 = 0x1002;
/// QUIC application close code: the aggregator is shutting down.
pub const CLOSE_SHUTDOWN: u64 = 0x1003;
