//! # ptkit-core
//!
//! The vocabulary every ptkit transport and driver shares:
//!
//! - [`transport`]: the PT 2.0 abstract interfaces as traits — [`ClientTransport`] yields
//!   named [`Connector`]s, [`ServerTransport`] binds [`TransportListener`]s, and an
//!   [`Upstream`] is where a server sends de-obfuscated streams;
//! - [`args`]: the escaped `k=v` codec of Tor's SOCKS arguments and `SMETHOD ARGS:`;
//! - [`relay`]: the one bidirectional copy (half-close, bounded buffers, live counters);
//! - [`shutdown`]: the one two-stage shutdown (stop accepting, then abort);
//! - [`stats`]: the one statistics schema;
//! - [`server`]: accept → handshake → upstream → relay, with a [`server::ServerManager`];
//! - [`net`]: direct TCP dialing with outbound bind addresses, fixed TCP upstreams;
//! - [`redact`]: scrubbing of addresses and secrets in logs.
//!
//! Nothing here knows about Tor; `ptkit-tor` drives these traits from Tor's managed mode.

pub mod args;
pub mod net;
pub mod reader;
pub mod redact;
pub mod registry;
pub mod relay;
pub mod server;
pub mod shutdown;
pub mod source;
#[cfg(target_os = "linux")]
pub mod splice;
pub mod stats;
pub mod target;
pub mod transport;

pub use args::Args;
pub use registry::Registry;
pub use stats::{Stats, StatsCounter};
pub use target::{Host, Target};
pub use transport::{
    Accepted, BoxFuture, ClientConfig, ClientMeta, ClientTransport, Conn, Connector, Dialer,
    Pending, Pinned, ServerConfig, ServerTransport, TransportError, TransportListener, Upstream,
};
