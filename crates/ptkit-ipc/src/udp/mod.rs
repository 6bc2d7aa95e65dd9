//! `-mode transparent-UDP` and `-mode STUN` (spec §1.3.4) in the dispatcher, on top of
//! `ptkit-udp`: the client binds a UDP socket on `-proxylistenaddr` and carries each local
//! peer over its own transport connection; the server turns each transport connection into
//! UDP towards `-target`. `udp-*` keys of a transport's options are the UDP layer's knobs
//! (they are taken out before the transport sees the options); see `docs/udp.md`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ptkit_core::shutdown::Shutdown;
use ptkit_core::{Args, Connector, StatsCounter, Target, TransportListener};
use ptkit_udp::{Framing, TransportPath, TurnConfig, UdpOptions};

use crate::flags::Mode;

/// True for the two UDP modes.
pub fn is_udp(mode: Mode) -> bool {
    matches!(mode, Mode::TransparentUdp | Mode::Stun)
}

/// Splits `udp-*` knobs out of `args` and fixes the framing for `mode` (STUN mode always
/// uses STUN framing; TURN only exists in transparent-UDP mode).
pub fn split_options(mode: Mode, args: &Args) -> Result<(UdpOptions, Args), String> {
    let (mut o, rest) = UdpOptions::split(args).map_err(|e| e.to_string())?;
    if mode == Mode::Stun {
        if o.framing != Framing::BigEndian || o.turn_users.is_some() {
            return Err("udp-framing and udp-turn-users do not apply to -mode STUN".into());
        }
        o.framing = Framing::Stun;
    }
    if o.turn_users.as_ref().is_some_and(|u| u.is_empty()) {
        return Err("udp-turn-users needs at least one user".into());
    }
    Ok((o, rest))
}

/// Starts the client side on `listen`: plain datagrams, or TURN when `opts.turn_users` is
/// set. Returns the bound address for the `CMETHOD` line.
pub fn start_client(
    listen: SocketAddr,
    connector: Arc<dyn Connector>,
    settings: Args,
    dest: Option<Target>,
    opts: UdpOptions,
    stats: Arc<StatsCounter>,
    shutdown: Shutdown,
) -> Result<SocketAddr, String> {
    let std_socket =
        std::net::UdpSocket::bind(listen).map_err(|e| format!("cannot listen: {e}"))?;
    let addr = std_socket
        .local_addr()
        .map_err(|e| format!("cannot listen: {e}"))?;
    std_socket
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen: {e}"))?;
    let socket =
        tokio::net::UdpSocket::from_std(std_socket).map_err(|e| format!("cannot listen: {e}"))?;
    let path = TransportPath {
        connector,
        settings,
        dest,
    };
    match opts.turn_users.clone() {
        Some(users) => {
            let cfg = TurnConfig {
                realm: opts.turn_realm.clone(),
                users,
                relay_ip: addr.ip(),
                ..TurnConfig::default()
            };
            ptkit_udp::serve_turn(socket, path, cfg, opts, stats, shutdown);
        }
        None => {
            ptkit_udp::serve_client(socket, path, opts, stats, shutdown);
        }
    }
    Ok(addr)
}

/// Starts the server side: every connection accepted on `listener` becomes UDP to `target`.
pub fn start_server(
    listener: Box<dyn TransportListener>,
    target: Target,
    opts: UdpOptions,
    stats: Arc<StatsCounter>,
    shutdown: Shutdown,
) {
    ptkit_udp::serve_server(
        listener,
        target,
        opts,
        stats,
        shutdown,
        Duration::from_secs(30),
    );
}
