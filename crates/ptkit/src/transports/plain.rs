//! `plain`: the reference transport. It hides nothing: the client opens one TCP connection to
//! the server per stream and the server forwards the bytes unchanged. Use it to test a
//! deployment end to end, to measure the cost of the framework itself, and as the template
//! for new transports — never to evade a censor.

use std::io;
use std::sync::Arc;

use ptkit_core::net::{DirectDialer, bind_tcp};
use ptkit_core::{
    Accepted, Args, BoxFuture, ClientConfig, ClientMeta, ClientTransport, Conn, Connector, Dialer,
    Pending, ServerConfig, ServerTransport, Target, TransportError, TransportListener,
};
use tokio::net::TcpListener;

/// The transport name.
pub const NAME: &str = "plain";

/// Both halves of `plain`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

/// Dials the server named by the SOCKS target (Tor style), or a fixed server.
#[derive(Debug, Clone)]
pub struct PlainConnector {
    dialer: Arc<dyn Dialer>,
    server: Option<Target>,
}

impl PlainConnector {
    /// A connector that always dials `server`, whatever the SOCKS target says (standalone
    /// client with `--server`).
    pub fn fixed(server: Target, dialer: Arc<dyn Dialer>) -> Self {
        PlainConnector {
            dialer,
            server: Some(server),
        }
    }
}

impl Connector for PlainConnector {
    fn name(&self) -> &str {
        NAME
    }

    fn is_bound(&self) -> bool {
        // The server decides where streams go; the SOCKS target only names the server.
        true
    }

    fn connect(
        &self,
        _settings: &Args,
        dest: Option<Target>,
    ) -> BoxFuture<'static, Result<Conn, TransportError>> {
        let target = self.server.clone().or(dest);
        let dialer = self.dialer.clone();
        Box::pin(async move {
            let target = target.ok_or_else(|| {
                TransportError::BadSettings("plain needs the server's address".into())
            })?;
            Ok(dialer.dial(target).await?)
        })
    }
}

impl ClientTransport for Plain {
    fn name(&self) -> &str {
        NAME
    }

    fn connector(&self, config: &ClientConfig) -> Result<Arc<dyn Connector>, TransportError> {
        let dialer = config
            .dialer
            .clone()
            .unwrap_or_else(|| Arc::new(DirectDialer::default()));
        Ok(Arc::new(PlainConnector {
            dialer,
            server: None,
        }))
    }
}

/// The server side: every accepted TCP connection is already the stream.
#[derive(Debug)]
pub struct PlainListener {
    listener: TcpListener,
}

impl TransportListener for PlainListener {
    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    fn accept(&mut self) -> BoxFuture<'_, io::Result<Pending>> {
        Box::pin(async move {
            let (stream, peer) = self.listener.accept().await?;
            stream.set_nodelay(true)?;
            let pending: Pending = Box::pin(async move {
                Ok(Accepted {
                    conn: Box::new(stream) as Conn,
                    meta: ClientMeta {
                        client_addr: Some(peer),
                    },
                })
            });
            Ok(pending)
        })
    }
}

impl ServerTransport for Plain {
    fn name(&self) -> &str {
        NAME
    }

    fn generate_config(&self) -> Result<(Args, Args), TransportError> {
        Ok((Args::new(), Args::new()))
    }

    fn listen(
        &self,
        config: ServerConfig,
    ) -> BoxFuture<'static, Result<Box<dyn TransportListener>, TransportError>> {
        Box::pin(async move {
            let listener = bind_tcp(config.listen)?;
            Ok(Box::new(PlainListener { listener }) as Box<dyn TransportListener>)
        })
    }
}
