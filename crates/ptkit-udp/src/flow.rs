//! The async drivers of `transparent-UDP` and `STUN` modes: a client that turns each local
//! UDP peer into one transport connection, and a server that turns each transport connection
//! back into a UDP socket towards its target. The byte work is [`crate::framing`]'s.
//!
//! Client state per local peer (keyed by source address), after spec §1.3.4 Table 1, with
//! one deliberate improvement: datagrams that arrive while the transport connection is being
//! opened are queued (up to `udp-queue`) instead of dropped. A peer is removed when its
//! connection fails or closes, on a framing error, or after `udp-idle-timeout` without a
//! datagram in either direction. Server (Table 2): one UDP socket per transport connection,
//! connected to the target, closed with it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ptkit_core::shutdown::Shutdown;
use ptkit_core::{Args, Conn, Connector, StatsCounter, Target, TransportListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::framing::{Decoder, Framing, UdpOptions};

/// Live counters of one UDP front end or server (datagrams, not bytes: bytes go to the
/// transport's [`StatsCounter`]).
#[derive(Debug, Default)]
pub struct UdpCounters {
    /// Datagrams carried towards the transport server (client) or the target (server).
    pub up: AtomicU64,
    /// Datagrams carried back.
    pub down: AtomicU64,
    /// Datagrams dropped: queue full, peer table full, not STUN in STUN mode, no
    /// permission (TURN), or the socket would block.
    pub dropped: AtomicU64,
    /// Peers (client) or connections (server) open now.
    pub open: AtomicU64,
}

impl UdpCounters {
    fn drop_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Hands one datagram that came out of the transport to its destination.
pub type Deliver = Arc<dyn Fn(Vec<u8>) + Send + Sync>;

/// Most framed bytes written to the transport in one write (several queued datagrams are
/// coalesced up to this).
const WRITE_BATCH: usize = 32 * 1024;

/// Moves datagrams between `rx` and `conn` until the connection ends, a framing error, `rx`
/// closes, or `idle` passes with no datagram either way. `client` picks the direction the
/// byte counters use.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn pump(
    conn: Conn,
    mut rx: mpsc::Receiver<Vec<u8>>,
    deliver: Deliver,
    framing: Framing,
    opts: &UdpOptions,
    stats: &StatsCounter,
    counters: &UdpCounters,
    client: bool,
) {
    let (mut r, mut w) = tokio::io::split(conn);
    let base = Instant::now();
    let last = AtomicU64::new(0);
    let touch = || last.store(base.elapsed().as_millis() as u64, Ordering::Relaxed);
    let writer = async {
        let mut out = Vec::with_capacity(WRITE_BATCH);
        while let Some(d) = rx.recv().await {
            out.clear();
            framing.encode(&d, &mut out);
            let mut n = 1u64;
            while out.len() < WRITE_BATCH {
                match rx.try_recv() {
                    Ok(d) => {
                        framing.encode(&d, &mut out);
                        n += 1;
                    }
                    Err(_) => break,
                }
            }
            if w.write_all(&out).await.is_err() || w.flush().await.is_err() {
                return "write failed";
            }
            touch();
            let bytes = out.len() as u64;
            if client {
                stats.add_up(bytes);
                counters.up.fetch_add(n, Ordering::Relaxed);
            } else {
                stats.add_down(bytes);
                counters.down.fetch_add(n, Ordering::Relaxed);
            }
        }
        "closed locally"
    };
    let reader = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut dec = Decoder::new(framing, opts.max_datagram);
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) => return "closed by peer",
                Ok(n) => n,
                Err(_) => return "read failed",
            };
            if client {
                stats.add_down(n as u64);
            } else {
                stats.add_up(n as u64);
            }
            dec.push(&buf[..n]);
            loop {
                match dec.next_datagram() {
                    Ok(Some(d)) => {
                        touch();
                        if client {
                            counters.down.fetch_add(1, Ordering::Relaxed);
                        } else {
                            counters.up.fetch_add(1, Ordering::Relaxed);
                        }
                        deliver(d);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        stats.fail(e.kind());
                        return "framing error";
                    }
                }
            }
        }
    };
    let idle = async {
        loop {
            let seen = Duration::from_millis(last.load(Ordering::Relaxed));
            let deadline = base + seen + opts.idle_timeout;
            if Instant::now() >= deadline {
                return "idle";
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    };
    let why = tokio::select! {
        w = writer => w,
        r = reader => r,
        i = idle => i,
    };
    debug!("UDP flow ended: {why}");
}

/// Where a client-side flow opens its transport connections: `connector.connect(settings,
/// dest)`.
#[derive(Clone)]
pub struct TransportPath {
    /// The transport's connector.
    pub connector: Arc<dyn Connector>,
    /// Per-connection settings.
    pub settings: Args,
    /// The destination passed to the connector (for bound transports: the server).
    pub dest: Option<Target>,
}

impl std::fmt::Debug for TransportPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportPath")
            .field("transport", &self.connector.name())
            .field("dest", &self.dest)
            .finish()
    }
}

type PeerMap = Arc<Mutex<std::collections::HashMap<SocketAddr, (mpsc::Sender<Vec<u8>>, u64)>>>;

/// The client of `transparent-UDP` / `STUN` mode: serves `socket` until the shutdown stops
/// accepting. Each local peer gets one connection through `path`; `opts.framing` is the wire format (use [`Framing::Stun`] for STUN mode).
pub fn serve_client(
    socket: UdpSocket,
    path: TransportPath,
    opts: UdpOptions,
    stats: Arc<StatsCounter>,
    shutdown: Shutdown,
) -> Arc<UdpCounters> {
    let counters = Arc::new(UdpCounters::default());
    let socket = Arc::new(socket);
    let peers: PeerMap = Arc::default();
    let sd = shutdown.clone();
    let c = counters.clone();
    shutdown.spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut generation = 0u64;
        loop {
            let (n, src) = tokio::select! {
                _ = sd.accepting_stopped() => return,
                r = socket.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(e) => {
                        debug!("UDP receive failed: {e}");
                        continue;
                    }
                },
            };
            let d = &buf[..n];
            if !opts.framing.accepts(d) {
                c.drop_one();
                continue;
            }
            let tx = {
                let Ok(mut map) = peers.lock() else { return };
                match map.get(&src) {
                    Some((tx, _)) => tx.clone(),
                    None if map.len() >= opts.max_peers => {
                        c.drop_one();
                        continue;
                    }
                    None => {
                        generation += 1;
                        let (tx, rx) = mpsc::channel(opts.queue);
                        map.insert(src, (tx.clone(), generation));
                        let s2 = socket.clone();
                        let c2 = c.clone();
                        let deliver: Deliver = Arc::new(move |d: Vec<u8>| {
                            if s2.try_send_to(&d, src).is_err() {
                                c2.drop_one();
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
                        let (peers, gen_) = (peers.clone(), generation);
                        sd.spawn(async move {
                            flow.await;
                            if let Ok(mut map) = peers.lock()
                                && map.get(&src).is_some_and(|(_, g)| *g == gen_)
                            {
                                map.remove(&src);
                            }
                        });
                        tx
                    }
                }
            };
            if tx.try_send(d.to_vec()).is_err() {
                c.drop_one();
            }
        }
    });
    counters
}

/// Opens one transport connection and pumps a flow over it (client side).
pub(crate) async fn flow_task(
    path: TransportPath,
    rx: mpsc::Receiver<Vec<u8>>,
    deliver: Deliver,
    opts: UdpOptions,
    stats: Arc<StatsCounter>,
    counters: Arc<UdpCounters>,
) {
    let _open = stats.open();
    counters.open.fetch_add(1, Ordering::Relaxed);
    let connector = &path.connector;
    let conn = tokio::time::timeout(
        opts.connect_timeout,
        connector.connect(&path.settings, path.dest.clone()),
    )
    .await;
    match conn {
        Ok(Ok(conn)) => {
            pump(
                conn,
                rx,
                deliver,
                opts.framing,
                &opts,
                &stats,
                &counters,
                true,
            )
            .await;
        }
        Ok(Err(e)) => {
            stats.fail(e.kind());
            warn!("{} connection for a UDP peer failed: {e}", connector.name());
        }
        Err(_) => {
            stats.fail("connect_timeout");
            warn!("{} connection for a UDP peer timed out", connector.name());
        }
    }
    counters.open.fetch_sub(1, Ordering::Relaxed);
}

/// The server of `transparent-UDP` / `STUN` mode: each connection accepted on `listener`
/// gets its own UDP socket connected to `target`; datagrams go both ways (only towards the
/// target with [`Framing::Shapeshifter`]). At most `opts.max_peers` connections at once;
/// handshakes get `handshake_timeout`.
pub fn serve_server(
    mut listener: Box<dyn TransportListener>,
    target: Target,
    opts: UdpOptions,
    stats: Arc<StatsCounter>,
    shutdown: Shutdown,
    handshake_timeout: Duration,
) -> Arc<UdpCounters> {
    let counters = Arc::new(UdpCounters::default());
    let permits = Arc::new(tokio::sync::Semaphore::new(opts.max_peers.max(1)));
    let sd = shutdown.clone();
    let c = counters.clone();
    shutdown.spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let pending = tokio::select! {
                _ = sd.accepting_stopped() => return,
                r = listener.accept() => r,
            };
            let pending = match pending {
                Ok(p) => p,
                Err(e) => {
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (stats, opts, target, c) = (stats.clone(), opts.clone(), target.clone(), c.clone());
            sd.spawn(async move {
                let _permit = permit;
                let _open = stats.open();
                let accepted = match tokio::time::timeout(handshake_timeout, pending).await {
                    Ok(Ok(a)) => a,
                    Ok(Err(e)) => {
                        stats.fail(e.kind());
                        info!("transport handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        stats.fail("handshake_timeout");
                        return;
                    }
                };
                let udp = match connect_udp(&target).await {
                    Ok(u) => Arc::new(u),
                    Err(e) => {
                        stats.fail("upstream");
                        warn!("cannot open the UDP target: {e}");
                        return;
                    }
                };
                c.open.fetch_add(1, Ordering::Relaxed);
                serve_connection(accepted.conn, udp, &opts, &stats, &c).await;
                c.open.fetch_sub(1, Ordering::Relaxed);
            });
        }
    });
    counters
}

/// Binds an ephemeral UDP socket and connects it to `target` (first resolved address).
pub async fn connect_udp(target: &Target) -> std::io::Result<UdpSocket> {
    let addr = match target.socket_addr() {
        Some(a) => a,
        None => tokio::net::lookup_host(target.to_string())
            .await?
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?,
    };
    let local: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(local).await?;
    s.connect(addr).await?;
    Ok(s)
}

/// One server-side connection: frames → `udp`, `udp` replies → frames.
pub(crate) async fn serve_connection(
    conn: Conn,
    udp: Arc<UdpSocket>,
    opts: &UdpOptions,
    stats: &StatsCounter,
    counters: &UdpCounters,
) {
    let (tx, rx) = mpsc::channel(opts.queue);
    let u2 = udp.clone();
    let deliver: Deliver = Arc::new(move |d: Vec<u8>| {
        let _ = u2.try_send(&d);
    });
    let replies = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match udp.recv(&mut buf).await {
                Ok(n) if opts.framing.two_way() && opts.framing.accepts(&buf[..n]) => {
                    if tx.try_send(buf[..n].to_vec()).is_err() {
                        counters.drop_one();
                    }
                }
                Ok(_) => counters.drop_one(),
                // ECONNREFUSED after an ICMP unreachable: keep going.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    tokio::select! {
        _ = pump(conn, rx, deliver, opts.framing, opts, stats, counters, false) => {}
        _ = replies => {}
    }
}
