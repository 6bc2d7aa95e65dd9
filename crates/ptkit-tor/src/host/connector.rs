//! Dialing through a PT's client method (spec §3.2, §3.3).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ptkit_core::redact::sensitive;
use ptkit_core::{Args, BoxFuture, Conn, Connector, Target, TransportError};
use tokio::net::TcpStream;

use crate::socks::Reply;
use crate::socks::client::{self, ClientError};

use super::*;

/// A [`Connector`] that opens connections through one client method of a managed PT.
#[derive(Debug, Clone)]
pub struct PtConnector {
    name: String,
    socks4: bool,
    addr: SocketAddr,
    handshake_timeout: Duration,
}

impl PtConnector {
    /// A connector for a client method; `None` for a server method.
    pub fn for_method(method: &PtMethod) -> Option<Self> {
        let socks4 = match method.protocol {
            MethodProtocol::Socks4 => true,
            MethodProtocol::Socks5 => false,
            MethodProtocol::Server => return None,
        };
        Some(PtConnector {
            name: method.name.clone(),
            socks4,
            addr: method.addr,
            handshake_timeout: SOCKS_HANDSHAKE_TIMEOUT,
        })
    }

    /// Replaces the SOCKS handshake deadline (default [`SOCKS_HANDSHAKE_TIMEOUT`]).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The PT's SOCKS address.
    pub fn socks_addr(&self) -> SocketAddr {
        self.addr
    }
}

pub(super) fn socks_error(pt: &str, e: ClientError) -> TransportError {
    match e {
        ClientError::Refused(reply) => {
            let kind = match reply {
                Reply::ConnectionRefused => io::ErrorKind::ConnectionRefused,
                Reply::NetworkUnreachable => io::ErrorKind::NetworkUnreachable,
                Reply::HostUnreachable => io::ErrorKind::HostUnreachable,
                Reply::TtlExpired => io::ErrorKind::TimedOut,
                _ => io::ErrorKind::Other,
            };
            TransportError::Io(io::Error::new(
                kind,
                format!("PT {pt}: SOCKS reply: {}", reply.describe()),
            ))
        }
        ClientError::Rejected4(code) => TransportError::Io(io::Error::other(format!(
            "PT {pt}: SOCKS4 request rejected (code {code:#04x})"
        ))),
        ClientError::AuthRefused => {
            TransportError::BadSettings(format!("PT {pt} refused the transport arguments"))
        }
        ClientError::Unencodable(what) => TransportError::BadSettings(format!("PT {pt}: {what}")),
        ClientError::NoMethod => {
            TransportError::Protocol(format!("PT {pt} accepted no offered SOCKS method"))
        }
        other => TransportError::Protocol(format!("PT {pt}: {other}")),
    }
}

pub(super) async fn socks_handshake(
    pt: &str,
    socks4: bool,
    s: &mut TcpStream,
    args: &str,
    dest: &Target,
) -> Result<(), TransportError> {
    let result = if socks4 {
        // Tor sends the whole argument string as the SOCKS4 userid (spec §3.3).
        client::dial_v4(s, args.as_bytes(), dest).await
    } else {
        client::dial_v5_with_args(s, args.as_bytes(), dest).await
    };
    match result {
        Ok(()) => Ok(()),
        Err(client::DialError::Io(e)) => Err(TransportError::Io(e)),
        Err(client::DialError::Socks(e)) => Err(socks_error(pt, e)),
        // Tor would go on without the arguments; they are the transport's keys, so fail closed.
        Err(client::DialError::CredentialsNotAsked) => Err(TransportError::Protocol(format!(
            "PT {pt} chose no authentication; arguments cannot be sent"
        ))),
    }
}

impl Connector for PtConnector {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_bound(&self) -> bool {
        false
    }

    fn connect(
        &self,
        settings: &Args,
        dest: Option<Target>,
    ) -> BoxFuture<'static, Result<Conn, TransportError>> {
        let args = settings.encode_client();
        let this = self.clone();
        Box::pin(async move {
            let dest = dest.ok_or_else(|| {
                TransportError::BadSettings(format!(
                    "PT {}: a destination (the bridge address) is required",
                    this.name
                ))
            })?;
            if !this.socks4 && args.len() > 510 {
                return Err(TransportError::BadSettings(format!(
                    "PT {}: arguments are {} bytes escaped, SOCKS5 carries at most 510",
                    this.name,
                    args.len()
                )));
            }
            tracing::debug!(transport = %this.name, dest = %sensitive(&dest), "connecting through managed PT");
            let handshake = async {
                let mut s = TcpStream::connect(this.addr).await?;
                socks_handshake(&this.name, this.socks4, &mut s, &args, &dest).await?;
                Ok::<_, TransportError>(s)
            };
            let stream = tokio::time::timeout(this.handshake_timeout, handshake)
                .await
                .map_err(|_| {
                    TransportError::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "PT {}: SOCKS handshake timed out after {:?}",
                            this.name, this.handshake_timeout
                        ),
                    ))
                })??;
            Ok(Box::new(stream) as Conn)
        })
    }
}
