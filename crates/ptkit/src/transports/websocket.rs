//! `websocket` in the binary: the transport from `ptkit-websocket`, plus automatic
//! certificates from `ptkit-tls`'s option handling, so the same `acme-*` keys work in a torrc
//! (`ServerTransportOptions websocket acme-hostnames=…`) and on the command line.

use ptkit_core::{
    Args, BoxFuture, ServerConfig, ServerTransport, TransportError, TransportListener,
};
use ptkit_tls::options::{split_acme, start_acme};
use ptkit_websocket::WebSocketServer;

pub use ptkit_websocket::{NAME, WebSocketClient};

/// The `websocket` server with ACME support.
#[derive(Debug, Default, Clone, Copy)]
pub struct WebSocketServerAcme;

impl ServerTransport for WebSocketServerAcme {
    fn name(&self) -> &str {
        NAME
    }

    fn generate_config(&self) -> Result<(Args, Args), TransportError> {
        WebSocketServer::new().generate_config()
    }

    fn listen(
        &self,
        config: ServerConfig,
    ) -> BoxFuture<'static, Result<Box<dyn TransportListener>, TransportError>> {
        Box::pin(async move {
            let (acme, rest) = split_acme(&config.options)?;
            let config = ServerConfig {
                options: rest,
                ..config
            };
            match acme {
                None => WebSocketServer::new().listen(config).await,
                Some(acme) => {
                    let state = config.state_dir.clone().ok_or_else(|| {
                        TransportError::BadSettings(
                            "ACME needs a state directory for its cache".into(),
                        )
                    })?;
                    let acceptor = start_acme(acme, state.join("websocket-acme")).await?;
                    WebSocketServer::with_acceptor(acceptor)
                        .listen(config)
                        .await
                }
            }
        })
    }
}
