//! The TURN front end's driver: a UDP socket speaking TURN to local applications
//! ([`crate::turn::TurnServer`] decides), and one transport connection per (allocation,
//! peer), framed as in `transparent-UDP` mode. The transport server is a `transparent-UDP`
//! server: it sends each connection's datagrams to its own `-target`, so with a bound
//! transport every peer address maps onto that target, and replies come back attributed to
//! the peer the client named.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ptkit_core::StatsCounter;
use ptkit_core::shutdown::Shutdown;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::flow::{Deliver, TransportPath, UdpCounters, flow_task};
use crate::framing::UdpOptions;
use crate::turn::{Output, TurnConfig, TurnServer};

type Flows = HashMap<(SocketAddr, SocketAddr), (mpsc::Sender<Vec<u8>>, u64)>;

/// Serves TURN on `socket` until the shutdown stops accepting. Peer flows open through
/// `path`; `opts` bounds them (`max_peers` counts
/// (allocation, peer) flows).
pub fn serve_turn(
    socket: UdpSocket,
    path: TransportPath,
    cfg: TurnConfig,
    opts: UdpOptions,
    stats: Arc<StatsCounter>,
    shutdown: Shutdown,
) -> Arc<UdpCounters> {
    let counters = Arc::new(UdpCounters::default());
    let mut seed = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut seed);
    let state = Arc::new(Mutex::new(TurnServer::new(
        cfg,
        u64::from_be_bytes(seed),
        Instant::now(),
    )));
    let socket = Arc::new(socket);
    let flows: Arc<Mutex<Flows>> = Arc::default();
    let sd = shutdown.clone();
    let c = counters.clone();
    shutdown.spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut generation = 0u64;
        loop {
            let (n, src) = tokio::select! {
                _ = sd.accepting_stopped() => return,
                _ = tick.tick() => {
                    let closed = match state.lock() {
                        Ok(mut s) => s.expire(Instant::now()),
                        Err(_) => return,
                    };
                    close(&flows, &closed);
                    continue;
                }
                r = socket.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(_) => continue,
                },
            };
            let outputs = match state.lock() {
                Ok(mut s) => s.handle(src, &buf[..n], Instant::now()),
                Err(_) => return,
            };
            for o in outputs {
                match o {
                    Output::Reply(b) => {
                        let _ = socket.send_to(&b, src).await;
                    }
                    Output::Closed { .. } => close(&flows, std::slice::from_ref(&o)),
                    Output::ToPeer { client, peer, data } => {
                        let Ok(mut map) = flows.lock() else { return };
                        let tx = match map.get(&(client, peer)) {
                            Some((tx, _)) => tx.clone(),
                            None if map.len() >= opts.max_peers => {
                                c.dropped.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            None => {
                                generation += 1;
                                let (tx, rx) = mpsc::channel(opts.queue);
                                map.insert((client, peer), (tx.clone(), generation));
                                let (s2, st2, c2) = (socket.clone(), state.clone(), c.clone());
                                let deliver: Deliver = Arc::new(move |d: Vec<u8>| {
                                    let out = st2.lock().ok().and_then(|s| {
                                        s.from_peer(client, peer, &d, Instant::now())
                                    });
                                    match out {
                                        Some(b) if s2.try_send_to(&b, client).is_ok() => {}
                                        _ => {
                                            c2.dropped.fetch_add(1, Ordering::Relaxed);
                                        }
                                    }
                                });
                                let flow = flow_task(
                                    path.clone(),
                                    rx,
                                    deliver,
                                    opts.clone(),
                                    stats.clone(),
                                    c.clone(),
                                );
                                let (flows, g) = (flows.clone(), generation);
                                sd.spawn(async move {
                                    flow.await;
                                    if let Ok(mut map) = flows.lock()
                                        && map.get(&(client, peer)).is_some_and(|(_, x)| *x == g)
                                    {
                                        map.remove(&(client, peer));
                                    }
                                });
                                tx
                            }
                        };
                        if tx.try_send(data).is_err() {
                            c.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    });
    counters
}

/// Drops the flows of closed allocations (their tasks end when the sender goes).
fn close(flows: &Mutex<Flows>, closed: &[Output]) {
    if closed.is_empty() {
        return;
    }
    if let Ok(mut map) = flows.lock() {
        for o in closed {
            if let Output::Closed { client } = o {
                map.retain(|(c, _), _| c != client);
            }
        }
    }
}
