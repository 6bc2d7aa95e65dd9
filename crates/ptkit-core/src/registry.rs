//! The set of transports a driver can offer, looked up by name.

use std::sync::Arc;

use crate::transport::{ClientTransport, ServerTransport};

/// Transports known to a binary.
#[derive(Clone, Default)]
pub struct Registry {
    clients: Vec<Arc<dyn ClientTransport>>,
    servers: Vec<Arc<dyn ServerTransport>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field(
                "clients",
                &self
                    .clients
                    .iter()
                    .map(|c| c.name().to_owned())
                    .collect::<Vec<_>>(),
            )
            .field(
                "servers",
                &self
                    .servers
                    .iter()
                    .map(|s| s.name().to_owned())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a client transport.
    pub fn with_client(mut self, t: Arc<dyn ClientTransport>) -> Self {
        self.clients.push(t);
        self
    }

    /// Adds a server transport.
    pub fn with_server(mut self, t: Arc<dyn ServerTransport>) -> Self {
        self.servers.push(t);
        self
    }

    /// The client transport called `name`.
    pub fn client(&self, name: &str) -> Option<Arc<dyn ClientTransport>> {
        self.clients.iter().find(|t| t.name() == name).cloned()
    }

    /// The server transport called `name`.
    pub fn server(&self, name: &str) -> Option<Arc<dyn ServerTransport>> {
        self.servers.iter().find(|t| t.name() == name).cloned()
    }

    /// Names of all client transports.
    pub fn client_names(&self) -> Vec<String> {
        self.clients.iter().map(|t| t.name().to_owned()).collect()
    }

    /// Names of all server transports.
    pub fn server_names(&self) -> Vec<String> {
        self.servers.iter().map(|t| t.name().to_owned()).collect()
    }
}
