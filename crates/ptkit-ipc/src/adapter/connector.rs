//! Dialling through a 2.x/3.0 child's SOCKS5 method, with per-connection settings sent as
//! the JSON parameter block (`0x09`), the drafts' `0x80`, or PT 1.0 arguments (`0x02`).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ptkit_core::{Args, BoxFuture, Conn, Connector, Target, TransportError};
use ptkit_tor::socks::client::{self, ClientError};
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::socks_auth::{
    BOUND_CONNECT_REQUEST, METHOD_JSON_LEGACY, METHOD_JSON_PARAMETER_BLOCK, METHOD_NO_AUTH,
    METHOD_USERNAME_PASSWORD, REP_INVALID_VALUES, REP_JSON_ERROR, REP_TIMEOUT, REP_TOO_LARGE,
    encode_block,
};

/// Deadline for the whole SOCKS exchange with the child.
pub const SOCKS_TIMEOUT: Duration = Duration::from_secs(30);

/// How per-connection settings travel to a 2.x/3.0 child (§1.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SettingsMethod {
    /// `0x09`, u32 big-endian length + JSON (Draft 3 → 3.0; the default).
    #[default]
    JsonBlock,
    /// `0x80` with Draft 2's length prefix.
    Legacy,
    /// `0x02`, PT 1.0 `k=v;…` arguments in RFC 1929 fields.
    Pt1Args,
}

impl SettingsMethod {
    fn byte(self) -> u8 {
        match self {
            SettingsMethod::JsonBlock => METHOD_JSON_PARAMETER_BLOCK,
            SettingsMethod::Legacy => METHOD_JSON_LEGACY,
            SettingsMethod::Pt1Args => METHOD_USERNAME_PASSWORD,
        }
    }
}

/// A [`Connector`] through one SOCKS5 method of a 2.x/3.0 child.
///
/// `dest` passes through as the CONNECT destination; `None` sends the bound-transport
/// destination `[::0]:0` (§1.2), which the child replaces with its own target or server.
#[derive(Debug, Clone)]
pub struct IpcConnector {
    name: String,
    addr: SocketAddr,
    method: SettingsMethod,
    timeout: Duration,
}

/// The JSON object for `settings` (string values).
pub fn settings_json(settings: &Args) -> Vec<u8> {
    let map: Map<String, Value> = settings
        .iter()
        .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
        .collect();
    Value::Object(map).to_string().into_bytes()
}

fn settings_error(name: &str, rep: u8) -> Option<TransportError> {
    let what = match rep {
        REP_TOO_LARGE => "settings too large (0x10)",
        REP_TIMEOUT => "timeout reading settings (0x11)",
        REP_JSON_ERROR => "settings are not valid JSON (0x12)",
        REP_INVALID_VALUES => "invalid settings (0x13)",
        _ => return None,
    };
    Some(TransportError::BadSettings(format!("PT {name}: {what}")))
}

impl IpcConnector {
    /// A connector for the SOCKS5 listener `addr` of transport `name`.
    pub fn new(name: &str, addr: SocketAddr, method: SettingsMethod) -> Self {
        IpcConnector {
            name: name.to_owned(),
            addr,
            method,
            timeout: SOCKS_TIMEOUT,
        }
    }

    /// The child's SOCKS address.
    pub fn socks_addr(&self) -> SocketAddr {
        self.addr
    }

    async fn handshake(
        &self,
        s: &mut TcpStream,
        settings: &Args,
        dest: Option<&Target>,
    ) -> Result<(), TransportError> {
        let proto = |m: &str| TransportError::Protocol(format!("PT {}: {m}", self.name));
        let offer = if settings.is_empty() {
            METHOD_NO_AUTH
        } else {
            self.method.byte()
        };
        s.write_all(&[5, 1, offer]).await?;
        let mut choice = [0u8; 2];
        s.read_exact(&mut choice).await?;
        if choice != [5, offer] {
            return Err(proto(&format!(
                "SOCKS server chose {:#04x}, we offered only {offer:#04x}",
                choice[1]
            )));
        }
        match offer {
            METHOD_JSON_PARAMETER_BLOCK | METHOD_JSON_LEGACY => {
                let block = encode_block(&settings_json(settings))
                    .ok_or_else(|| TransportError::BadSettings("settings too large".into()))?;
                s.write_all(&block).await?;
            }
            METHOD_USERNAME_PASSWORD => {
                let args = settings.encode_client();
                let (user, pass) = client::split_args(args.as_bytes())
                    .map_err(|e| TransportError::BadSettings(e.to_string()))?;
                let msg = client::userpass(&user, &pass)
                    .map_err(|e| TransportError::BadSettings(e.to_string()))?;
                s.write_all(&msg).await?;
                let mut status = [0u8; 2];
                s.read_exact(&mut status).await?;
                client::parse_auth(status).map_err(|_| {
                    TransportError::BadSettings(format!("PT {} refused the arguments", self.name))
                })?;
            }
            _ => {}
        }
        let request = match dest {
            Some(t) => {
                client::connect_v5(t).map_err(|e| TransportError::BadSettings(e.to_string()))?
            }
            None => BOUND_CONNECT_REQUEST.to_vec(),
        };
        s.write_all(&request).await?;
        let mut head = [0u8; 5];
        s.read_exact(&mut head).await?;
        if head[0] == 5
            && let Some(e) = settings_error(&self.name, head[1])
        {
            return Err(e);
        }
        let len = client::reply_v5_len(head).map_err(|_| proto("malformed SOCKS reply"))?;
        let mut rest = vec![0u8; len - 5];
        s.read_exact(&mut rest).await?;
        match client::parse_reply_v5(head) {
            Ok(()) => Ok(()),
            Err(ClientError::Refused(r)) => Err(TransportError::Io(io::Error::new(
                match r {
                    ptkit_tor::socks::Reply::ConnectionRefused => io::ErrorKind::ConnectionRefused,
                    ptkit_tor::socks::Reply::HostUnreachable => io::ErrorKind::HostUnreachable,
                    ptkit_tor::socks::Reply::NetworkUnreachable => {
                        io::ErrorKind::NetworkUnreachable
                    }
                    ptkit_tor::socks::Reply::TtlExpired => io::ErrorKind::TimedOut,
                    _ => io::ErrorKind::Other,
                },
                format!("PT {}: SOCKS reply: {}", self.name, r.describe()),
            ))),
            Err(_) => Err(proto("malformed SOCKS reply")),
        }
    }
}

impl Connector for IpcConnector {
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
        let this = self.clone();
        let settings = settings.clone();
        Box::pin(async move {
            let work = async {
                let mut s = TcpStream::connect(this.addr).await?;
                s.set_nodelay(true)?;
                this.handshake(&mut s, &settings, dest.as_ref()).await?;
                Ok::<_, TransportError>(s)
            };
            let s = tokio::time::timeout(this.timeout, work)
                .await
                .map_err(|_| {
                    TransportError::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("PT {}: SOCKS handshake timed out", this.name),
                    ))
                })??;
            Ok(Box::new(s) as Conn)
        })
    }
}
