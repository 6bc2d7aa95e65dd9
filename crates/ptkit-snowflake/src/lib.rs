//! Snowflake for ptkit: a server that the official snowflake 2.5.1 client and proxy use
//! unmodified, and a broker.
//!
//! The bytes a Snowflake server receives on one WebSocket are layered (see
//! `specs/snowflake.md` §0):
//!
//! ```text
//! WebSocket messages (boundaries carry no meaning)            -> byte stream
//!   8-byte token | 8-byte ClientID | encapsulated packets ...  (turbotunnel, encapsulation)
//!     each data packet is one KCP datagram                      (kcp)
//!       the KCP stream carries smux v2 frames                   (smux)
//!         one smux stream per client connection              -> one ExtORPort connection
//! ```
//!
//! Every wire format here is a sans-IO module (bytes in, events and bytes out, time passed
//! in); the async driver around them is thin.

pub mod broker;
pub mod client;
pub mod client_map;
pub mod encapsulation;
pub mod engine;
pub mod kcp;
pub mod metrics;
pub mod server;
pub mod session;
pub mod smux;
pub mod srcaddr;
pub mod turbotunnel;

pub use server::{NAME, SnowflakeServer};
