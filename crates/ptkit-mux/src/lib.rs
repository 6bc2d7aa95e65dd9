//! # ptkit-mux
//!
//! The PT 2.0 *bound → free* adapter (spec `pt2-websocket-quic.md` §1.2, §6 row 4): many
//! streams, each naming its own destination, multiplexed over **one** connection of any
//! bound transport (`plain`, `websocket`, an external PT through `ptkit-ipc`'s adapter…).
//! Both ends need it; `docs/mux.md` is the wire and operator description.
//!
//! - [`header`]: the sans-IO, versioned stream header (destination request, SOCKS reply);
//! - [`policy`]: the server's destination policy (default deny; hosts, ports, CIDRs);
//! - [`session`]: the async driver of the sans-IO smux v2 core of `ptkit-snowflake` over any
//!   [`ptkit_core::Conn`], with [`session::MuxStream`] as `AsyncRead + AsyncWrite`;
//! - [`client`]: [`client::MuxConnector`], a *free* [`ptkit_core::Connector`] on top of a
//!   bound one, and a SOCKS5 front end that answers with the server's exact reply code;
//! - [`server`]: accepts transport connections and serves their streams under the policy.
//!
//! Free → bound (pinning one destination) is [`ptkit_core::Pinned`] around a
//! [`client::MuxConnector`].

pub mod client;
pub mod header;
pub mod policy;
pub mod server;
pub mod session;

pub use client::{MuxClientConfig, MuxConnector};
pub use header::{HeaderError, MuxReply, MuxRequest};
pub use policy::{Policy, PolicyError};
pub use server::{MuxServer, MuxServerConfig};
pub use session::{MuxSession, MuxStream};
