//! # ptkit
//!
//! The `ptkit` binary's library half: the transports it ships and the pieces of its command
//! line that tests reuse. See the workspace README for operating it.

pub mod demo;
pub mod goflags;
pub mod metrics;
pub mod mux_cli;
pub mod snowflake_broker;
pub mod snowflake_server;
pub mod transports;
pub mod tunnel_cli;
pub mod turbotunnel_load;
