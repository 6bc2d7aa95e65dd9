//! The client role's SOCKS port: handshake (sans-IO core in [`crate::socks::server`]), open
//! the transport connection, reply, relay.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ptkit_core::redact::sensitive;
use ptkit_core::relay::{RelayConfig, relay_streams};
use ptkit_core::shutdown::Shutdown;
use ptkit_core::{Connector, StatsCounter, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::socks::Reply;
use crate::socks::server::{ErrorKind, Handshake, MethodSet, Request, reply_for};

/// Limits of the SOCKS port.
#[derive(Debug, Clone)]
pub struct SocksLimits {
    /// Time for the whole SOCKS handshake (item S-1).
    pub handshake_timeout: Duration,
    /// Time for the transport to connect before the client gets a failure reply.
    pub connect_timeout: Duration,
    /// Most bytes buffered during the handshake (the largest legal message is ~2 KiB).
    pub max_handshake_bytes: usize,
    /// Most connections at once; further accepts wait.
    pub max_connections: usize,
    /// Relay buffers.
    pub relay: RelayConfig,
    /// SOCKS5 methods offered; `None` is PT 1.0's `0x02`/`0x00` ([`Handshake::new`]). Set
    /// it to add e.g. PT 2.x settings methods (`ptkit_ipc::socks_auth::methods()`).
    pub methods: Option<MethodSet>,
}

impl SocksLimits {
    /// A fresh handshake with the configured methods.
    pub fn handshake(&self) -> Handshake {
        match &self.methods {
            Some(m) => Handshake::with_methods(m.clone()),
            None => Handshake::new(),
        }
    }
}

impl Default for SocksLimits {
    fn default() -> Self {
        SocksLimits {
            handshake_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(60),
            max_handshake_bytes: 4096,
            max_connections: 16 * 1024,
            relay: RelayConfig::default(),
            methods: None,
        }
    }
}

/// Why one SOCKS connection failed before relaying.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocksFrontError {
    /// The handshake was malformed or unsupported.
    #[error(transparent)]
    Handshake(#[from] ErrorKind),
    /// The client took too long.
    #[error("SOCKS handshake timed out")]
    Timeout,
    /// Reading or writing the client socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads and answers a SOCKS handshake on `stream` with the methods in `limits`; returns the
/// request once complete. Failure replies are sent before returning an error.
pub async fn read_request(
    stream: &mut TcpStream,
    limits: &SocksLimits,
) -> Result<Request, SocksFrontError> {
    let mut hs = limits.handshake();
    drive_handshake(stream, &mut hs, limits).await
}

/// Runs `hs` over `stream` until it returns a request. Failure replies are sent before
/// returning an error; on a timeout around this call, send [`Handshake::timed_out`]'s reply.
pub async fn drive_handshake(
    stream: &mut TcpStream,
    hs: &mut Handshake,
    limits: &SocksLimits,
) -> Result<Request, SocksFrontError> {
    let mut buf = BytesMut::with_capacity(512);
    loop {
        if buf.len() >= limits.max_handshake_bytes {
            return Err(ErrorKind::TooLong.into());
        }
        let n = stream.read_buf(&mut buf).await?;
        if n == 0 {
            return Err(ErrorKind::Eof.into());
        }
        loop {
            match hs.step(&buf) {
                Ok(action) if action.drain == 0 && action.finished.is_none() => break,
                Ok(action) => {
                    let _ = buf.split_to(action.drain);
                    if !action.reply.is_empty() {
                        stream.write_all(&action.reply).await?;
                    }
                    if let Some(request) = action.finished {
                        return Ok(request);
                    }
                }
                Err(e) => {
                    if !e.reply.is_empty() {
                        let _ = stream.write_all(&e.reply).await;
                    }
                    return Err(e.kind.into());
                }
            }
        }
    }
}

fn reply_code(e: &TransportError) -> Reply {
    match e {
        TransportError::Io(io) => Reply::from_io_error(io),
        _ => Reply::GeneralFailure,
    }
}

/// Serves one accepted SOCKS client to completion.
pub async fn serve_connection(
    mut stream: TcpStream,
    connector: Arc<dyn Connector>,
    stats: Arc<StatsCounter>,
    limits: SocksLimits,
) {
    let _open = stats.open();
    let mut hs = limits.handshake();
    let handshake = drive_handshake(&mut stream, &mut hs, &limits);
    let request = match tokio::time::timeout(limits.handshake_timeout, handshake).await {
        Ok(Ok(r)) => r,
        Ok(Err(SocksFrontError::Handshake(kind))) => {
            stats.fail(kind.label());
            info!("SOCKS handshake failed: {kind}");
            return;
        }
        Ok(Err(e)) => {
            stats.fail("socks_io");
            debug!("SOCKS handshake failed: {e}");
            return;
        }
        Err(_) => {
            stats.fail("socks_timeout");
            info!("SOCKS handshake timed out");
            let reply = hs.timed_out();
            if !reply.is_empty() {
                let _ = stream.write_all(&reply).await;
            }
            return;
        }
    };
    let connecting = connector.connect(&request.args, Some(request.target.clone()));
    let outcome = match tokio::time::timeout(limits.connect_timeout, connecting).await {
        Ok(r) => r,
        Err(_) => Err(TransportError::Io(std::io::ErrorKind::TimedOut.into())),
    };
    let mut remote = match outcome {
        Ok(c) => c,
        Err(e) => {
            let code = reply_code(&e);
            stats.fail(match e {
                TransportError::Io(_) => "dial",
                _ => e.kind(),
            });
            warn!(
                "{} connection to {} failed: {e}",
                connector.name(),
                sensitive(&request.target)
            );
            let _ = stream.write_all(&reply_for(&request, code)).await;
            return;
        }
    };
    // Item S-7: success only once the transport connection exists.
    if stream
        .write_all(&reply_for(&request, Reply::Succeeded))
        .await
        .is_err()
    {
        return;
    }
    match relay_streams(&mut stream, &mut *remote, &limits.relay, Some(&stats)).await {
        Ok(t) => debug!(up = t.up, down = t.down, "SOCKS connection closed"),
        Err(e) => debug!("SOCKS connection ended with error: {e}"),
    }
}

/// Accepts SOCKS clients on `listener` until `shutdown` stops accepting.
pub fn serve(
    listener: TcpListener,
    connector: Arc<dyn Connector>,
    stats: Arc<StatsCounter>,
    shutdown: Shutdown,
    limits: SocksLimits,
) {
    let max = limits.max_connections;
    ptkit_core::net::serve_tcp(listener, shutdown, max, "SOCKS", move |stream, peer| {
        debug!("SOCKS connection from {}", sensitive(peer));
        serve_connection(stream, connector.clone(), stats.clone(), limits.clone())
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::socks::server::{SubNegotiation, SubStep};
    use ptkit_core::transport::{BoxFuture, Conn};
    use ptkit_core::{Args, Target};
    use std::sync::Mutex;

    /// A stand-in for PT 2.x settings: one length byte, then `k=v` PT 1.0 arguments.
    struct LenPrefixed;

    impl SubNegotiation for LenPrefixed {
        fn step(&mut self, input: &[u8]) -> SubStep {
            let Some((&len, rest)) = input.split_first() else {
                return SubStep::Need { drain: 0 };
            };
            let len = usize::from(len);
            if rest.len() < len {
                return SubStep::Need { drain: 0 };
            }
            match Args::parse_client(&rest[..len]) {
                Ok(args) => SubStep::Done {
                    drain: 1 + len,
                    reply: Vec::new(),
                    args,
                },
                Err(e) => SubStep::Failed {
                    reply: vec![5, 0x12, 0, 1, 0, 0, 0, 0, 0, 0],
                    kind: ErrorKind::SubNegotiation {
                        label: "test",
                        message: e.to_string(),
                    },
                },
            }
        }
    }

    struct Recorder(Mutex<Vec<(Args, Option<Target>)>>);

    impl Connector for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }
        fn is_bound(&self) -> bool {
            false
        }
        fn connect(
            &self,
            settings: &Args,
            dest: Option<Target>,
        ) -> BoxFuture<'static, Result<Conn, TransportError>> {
            self.0.lock().unwrap().push((settings.clone(), dest));
            Box::pin(async {
                let (a, _b) = tokio::io::duplex(64);
                Ok(Box::new(a) as Conn)
            })
        }
    }

    #[tokio::test]
    async fn serve_with_extra_method_passes_settings_to_connector() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
        let shutdown = Shutdown::new();
        let limits = SocksLimits {
            methods: Some(MethodSet::pt1().with_method(0x09, || Box::new(LenPrefixed))),
            ..SocksLimits::default()
        };
        serve(
            listener,
            recorder.clone(),
            Arc::new(StatsCounter::new("recorder")),
            shutdown.clone(),
            limits,
        );
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(&[5, 2, 0, 9]).await.unwrap();
        let mut sel = [0u8; 2];
        c.read_exact(&mut sel).await.unwrap();
        assert_eq!(sel, [5, 9]);
        let mut rest = vec![3];
        rest.extend(b"k=v");
        rest.extend([5, 1, 0, 1, 127, 0, 0, 1, 0x23, 0x5a]);
        c.write_all(&rest).await.unwrap();
        let mut reply = [0u8; 10];
        c.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, [5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        let calls = recorder.0.lock().unwrap().clone();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].0.get("k"), Some("v"));
        assert_eq!(calls[0].1.as_ref().unwrap().to_string(), "127.0.0.1:9050");
        shutdown.abort();
    }
}
