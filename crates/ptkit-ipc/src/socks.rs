//! The dispatcher's SOCKS port under 2.x/3.0: `ptkit_tor`'s SOCKS handshake and relay, with
//! one difference — the greeting may arrive in the same write as the settings that follow
//! it. The WIP says the client uses "type 0x80 (private method), followed by connection
//! settings serialized to UTF-8 JSON", which a client can read as "send both at once"; a
//! client offering only `0x09` knows the server's only acceptable answer.
//!
//! So the greeting is read exactly (`05`, count, methods: at most 257 bytes) and answered;
//! when the method selected is a settings method (`0x09`, `0x80`) whatever already follows is
//! left in the socket for the settings reader, which bounds it ([`crate::socks_auth`]'s size
//! limit) like any other settings; the whole handshake stays under
//! `SocksLimits::handshake_timeout`. For `0x02` and `0x00` the PT 1.0 rule stays: bytes
//! before our reply are a pipelining error. PT 1.0 (no settings methods) uses
//! `ptkit_tor::socks_front` unchanged.

use std::sync::Arc;
use std::time::Duration;

use ptkit_core::redact::sensitive;
use ptkit_core::relay::relay_streams;
use ptkit_core::shutdown::Shutdown;
use ptkit_core::{Connector, StatsCounter, TransportError};
use ptkit_tor::socks::Reply;
use ptkit_tor::socks::server::{ErrorKind, Handshake, reply_for};
use ptkit_tor::socks_front::{self, SocksFrontError, SocksLimits, drive_handshake};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::socks_auth::{METHOD_JSON_LEGACY, METHOD_JSON_PARAMETER_BLOCK};

/// Accepts SOCKS clients on `listener` until `shutdown` stops accepting.
pub fn serve(
    listener: TcpListener,
    connector: Arc<dyn Connector>,
    stats: Arc<StatsCounter>,
    shutdown: Shutdown,
    limits: SocksLimits,
) {
    if limits.methods.is_none() {
        return socks_front::serve(listener, connector, stats, shutdown, limits);
    }
    let max = limits.max_connections;
    ptkit_core::net::serve_tcp(listener, shutdown, max, "SOCKS", move |stream, peer| {
        debug!("SOCKS connection from {}", sensitive(peer));
        serve_connection(stream, connector.clone(), stats.clone(), limits.clone())
    });
}

/// Reads the SOCKS5 greeting exactly and answers it (see the module docs). Anything that is
/// not SOCKS5 is left unread for the ordinary handshake.
async fn greeting(stream: &mut TcpStream, hs: &mut Handshake) -> Result<(), SocksFrontError> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 || first[0] != 5 {
        return Ok(());
    }
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await?;
    let mut msg = vec![0u8; 2 + usize::from(head[1])];
    msg[..2].copy_from_slice(&head);
    stream.read_exact(&mut msg[2..]).await?;
    let action = match hs.step(&msg) {
        Ok(a) => a,
        Err(e) => {
            if !e.reply.is_empty() {
                let _ = stream.write_all(&e.reply).await;
            }
            return Err(e.kind.into());
        }
    };
    let settings = matches!(
        action.reply.get(1),
        Some(&(METHOD_JSON_PARAMETER_BLOCK | METHOD_JSON_LEGACY))
    );
    if !settings {
        // Already-received bytes before our reply: the PT 1.0 pipelining rule.
        let mut b = [0u8; 1];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::ZERO, stream.peek(&mut b)).await
            && n > 0
        {
            return Err(ErrorKind::Pipelined.into());
        }
    }
    stream.write_all(&action.reply).await?;
    Ok(())
}

fn reply_code(e: &TransportError) -> Reply {
    match e {
        TransportError::Io(io) => Reply::from_io_error(io),
        _ => Reply::GeneralFailure,
    }
}

/// Serves one accepted SOCKS client to completion (as `socks_front::serve_connection`).
async fn serve_connection(
    mut stream: TcpStream,
    connector: Arc<dyn Connector>,
    stats: Arc<StatsCounter>,
    limits: SocksLimits,
) {
    let _open = stats.open();
    let mut hs = limits.handshake();
    let handshake = async {
        greeting(&mut stream, &mut hs).await?;
        drive_handshake(&mut stream, &mut hs, &limits).await
    };
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
