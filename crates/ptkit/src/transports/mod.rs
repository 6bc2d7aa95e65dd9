//! The transports this binary offers.

use std::sync::Arc;

use ptkit_core::Registry;

pub mod plain;
pub mod quic;
pub mod websocket;

/// Every transport ptkit ships, for managed mode and the CLI.
pub fn registry() -> Registry {
    Registry::new()
        .with_client(Arc::new(plain::Plain))
        .with_server(Arc::new(plain::Plain))
        .with_client(Arc::new(websocket::WebSocketClient::new()))
        .with_server(Arc::new(websocket::WebSocketServerAcme))
        .with_client(Arc::new(quic::QuicClient::default()))
        .with_server(Arc::new(quic::QuicServer::default()))
        // Server only: Snowflake clients are the official WebRTC client and proxies (the
        // `snowflake-server` name adds the Go flags and ACME on top of this).
        .with_server(Arc::new(ptkit_snowflake::SnowflakeServer::new()))
}
