//! The Snowflake broker: rendezvous between clients and proxies (spec §3).
