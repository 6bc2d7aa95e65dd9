//! The transports this binary offers.

use std::sync::Arc;

use ptkit_core::Registry;

pub mod plain;
pub mod websocket;

/// Every transport ptkit ships, for managed mode and the CLI.
pub fn registry() -> Registry {
    Registry::new()
        .with_client(Arc::new(plain::Plain))
        .with_server(Arc::new(plain::Plain))
        .with_client(Arc::new(websocket::WebSocketClient::new()))
        .with_server(Arc::new(websocket::WebSocketServerAcme))
}
