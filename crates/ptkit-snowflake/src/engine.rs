//! The turbotunnel engine: WebSockets in, smux streams out.
//!
//! Each WebSocket is read as one byte stream: token, ClientID, then encapsulated KCP
//! datagrams, which go to the KCP session of that ClientID (created from its first
//! datagram, replaced when a new conv arrives with sn 0 — kcp-go's listener rules). A
//! session's datagrams go into the ClientID's outgoing queue, which every WebSocket of that
//! ClientID drains, so a client that switches proxies carries on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ptkit_core::redact::sensitive;
use ptkit_core::{Accepted, ClientMeta, Conn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::client_map::{ClientMap, DEFAULT_QUEUE_EXPIRY, DEFAULT_QUEUE_PACKETS, SWEEP_INTERVAL};
use crate::encapsulation::{Decoder, encode_data};
use crate::kcp::first_segment;
use crate::metrics::Metrics;
use crate::session::{SessionConfig, SessionIo, SmuxStream, new_session};
use crate::smux::Role;
use crate::turbotunnel::{
    CLIENT_ID_RING_CAPACITY, ClientId, ClientIdRing, Preamble, PreambleReader,
};

/// Resource limits of one engine; every one is a knob.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// KCP and smux settings for each session.
    pub session: SessionConfig,
    /// Datagrams waiting for one session before more are dropped (Go: 512 shared).
    pub inbound_packets: usize,
    /// Packets waiting in one ClientID's outgoing queue (Go: 512).
    pub outbound_packets: usize,
    /// An outgoing queue unused this long expires (Go: 1 min).
    pub queue_expiry: Duration,
    /// Most concurrent sessions; datagrams that would start more are dropped.
    pub max_sessions: usize,
    /// Streams waiting for the server loop to take them (Go: 65 534).
    pub accept_backlog: usize,
    /// Largest datagram accepted from a client.
    pub max_packet: usize,
    /// Time a WebSocket has to send the token and ClientID.
    pub preamble_timeout: Duration,
    /// Bytes in one WebSocket message we send (Go's adapter: 2048).
    pub max_message: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            session: SessionConfig::default(),
            inbound_packets: 512,
            outbound_packets: DEFAULT_QUEUE_PACKETS,
            queue_expiry: DEFAULT_QUEUE_EXPIRY,
            max_sessions: 65_536,
            accept_backlog: 65_534,
            max_packet: crate::encapsulation::DEFAULT_MAX_PACKET,
            preamble_timeout: Duration::from_secs(30),
            max_message: 2048,
        }
    }
}

struct Slot {
    conv: u32,
    generation: u64,
    inbound: mpsc::Sender<Bytes>,
}

/// One KCP engine (`num-turbotunnel` of them per listener in Go; one suffices here).
pub struct Engine {
    config: EngineConfig,
    sessions: Mutex<HashMap<ClientId, Slot>>,
    addrs: Mutex<ClientIdRing>,
    client_map: Arc<ClientMap>,
    accept_tx: mpsc::Sender<Accepted>,
    generation: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Engine {
    /// A new engine and the receiver of the streams its clients open. Spawns the queue
    /// sweeper, which stops when the engine is dropped.
    pub fn new(
        config: EngineConfig,
        metrics: Arc<Metrics>,
    ) -> (Arc<Engine>, mpsc::Receiver<Accepted>) {
        let (accept_tx, accept_rx) = mpsc::channel(config.accept_backlog.max(1));
        let engine = Arc::new(Engine {
            client_map: Arc::new(ClientMap::new(config.outbound_packets, config.queue_expiry)),
            config,
            sessions: Mutex::new(HashMap::new()),
            addrs: Mutex::new(ClientIdRing::new(CLIENT_ID_RING_CAPACITY)),
            accept_tx,
            generation: AtomicU64::new(0),
            metrics,
        });
        let weak = Arc::downgrade(&engine);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(e) = weak.upgrade() else { return };
                let n = e.client_map.sweep();
                if n > 0 {
                    debug!(expired = n, "expired client queues");
                }
            }
        });
        (engine, accept_rx)
    }

    /// The metrics this engine updates.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Live sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Serves one upgraded WebSocket until it ends.
    pub async fn serve_websocket(self: Arc<Self>, ws: Conn, client: Option<SocketAddr>) {
        let (mut rd, mut wr) = tokio::io::split(ws);
        let mut buf = vec![0u8; 4096];
        let mut pre = PreambleReader::new();
        // Token and ClientID first; a stream that ends before is an unused proxy connection.
        let first = tokio::time::timeout(self.config.preamble_timeout, async {
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return Err(pre.started()),
                    Ok(n) => n,
                };
                match pre.push(&buf[..n]) {
                    Preamble::Incomplete => continue,
                    Preamble::BadToken => return Err(true),
                    Preamble::Ready { client_id, used } => return Ok((client_id, used, n)),
                }
            }
        })
        .await;
        let (client_id, used, n) = match first {
            Ok(Ok(v)) => v,
            Ok(Err(started)) => {
                if started {
                    self.metrics.handshake_failure("bad_token");
                    debug!("closing a WebSocket that did not start with the turbotunnel token");
                }
                return;
            }
            Err(_) => {
                self.metrics.handshake_failure("preamble_timeout");
                return;
            }
        };
        self.metrics
            .websockets_total
            .fetch_add(1, Ordering::Relaxed);
        if let Ok(mut ring) = self.addrs.lock() {
            ring.set(client_id, client);
        }
        debug!(client_id = %client_id, client = ?client.map(sensitive), "turbotunnel WebSocket");
        let queue = self.client_map.queue(client_id);
        let max_message = self.config.max_message;
        let writer_queue = queue.clone();
        let writer = async move {
            let mut out = BytesMut::with_capacity(max_message);
            while let Some(p) = writer_queue.pop().await {
                out.clear();
                if encode_data(&p, &mut out).is_err() {
                    continue;
                }
                // Coalesce what is already queued into one message, up to the limit.
                while out.len() < max_message {
                    let Some(next) = writer_queue.try_pop() else {
                        break;
                    };
                    let before = out.len();
                    if encode_data(&next, &mut out).is_err() {
                        continue;
                    }
                    if out.len() > max_message {
                        let tail = out.split_off(before);
                        wr.write_all(&out).await?;
                        out = tail;
                    }
                }
                wr.write_all(&out).await?;
                wr.flush().await?;
            }
            let _ = wr.shutdown().await;
            Ok::<(), std::io::Error>(())
        };
        let me = self.clone();
        let reader = async move {
            let mut dec = Decoder::new(me.config.max_packet);
            let mut input = |p: Bytes| me.input(client_id, p);
            if dec.push(&buf[used..n], &mut input).is_err() {
                return;
            }
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if let Err(e) = dec.push(&buf[..n], &mut input) {
                    me.metrics.handshake_failure(e.kind());
                    debug!(client_id = %client_id, "dropping WebSocket: {e}");
                    break;
                }
            }
        };
        // Reading and writing end together: a reader at EOF stops the writer, a failed
        // writer ends the connection.
        tokio::select! {
            _ = reader => {}
            _ = writer => {}
        }
    }

    /// Routes one datagram from `id` to its KCP session (kcp-go listener rules).
    fn input(self: &Arc<Self>, id: ClientId, packet: Bytes) {
        let Some(head) = first_segment(&packet) else {
            self.metrics
                .packets_rejected
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Ok(mut sessions) = self.sessions.lock() else {
            return;
        };
        match sessions.get(&id) {
            Some(slot) if slot.conv == head.conv => {
                if slot.inbound.try_send(packet).is_err() {
                    self.metrics.inbound_drops.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            Some(_) if head.sn != 0 => {
                self.metrics
                    .packets_rejected
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
            // A new conv with sn 0 replaces the old session (its channel closes).
            Some(_) => {
                sessions.remove(&id);
            }
            None => {
                if sessions.len() >= self.config.max_sessions {
                    self.metrics.inbound_drops.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.config.inbound_packets.max(1));
        let _ = tx.try_send(packet);
        sessions.insert(
            id,
            Slot {
                conv: head.conv,
                generation,
                inbound: tx,
            },
        );
        drop(sessions);
        self.metrics.sessions_total.fetch_add(1, Ordering::Relaxed);
        self.metrics.sessions_open.fetch_add(1, Ordering::Relaxed);
        let client = self.addrs.lock().ok().and_then(|r| r.get(&id));
        let driver = new_session(head.conv, Role::Server, &self.config.session);
        let io = Arc::new(EngineIo {
            engine: self.clone(),
            id,
            client,
        });
        let me = self.clone();
        tokio::spawn(async move {
            let (end, counters) = driver.run(rx, io).await;
            me.metrics
                .kcp_retransmissions
                .fetch_add(counters.retransmissions, Ordering::Relaxed);
            me.metrics.sessions_open.fetch_sub(1, Ordering::Relaxed);
            me.metrics.session_end(end.label());
            if let Ok(mut s) = me.sessions.lock()
                && s.get(&id).is_some_and(|slot| slot.generation == generation)
            {
                s.remove(&id);
            }
            debug!(client_id = %id, reason = end.label(), "session ended");
        });
        info!(client_id = %id, "new turbotunnel session");
    }
}

struct EngineIo {
    engine: Arc<Engine>,
    id: ClientId,
    client: Option<SocketAddr>,
}

impl SessionIo for EngineIo {
    fn transmit(&self, datagram: Bytes) -> bool {
        let ok = self.engine.client_map.send(self.id, datagram);
        if !ok {
            self.engine
                .metrics
                .outbound_drops
                .fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    fn opened(&self, stream: SmuxStream) {
        self.engine
            .metrics
            .streams_total
            .fetch_add(1, Ordering::Relaxed);
        if self.client.is_some() {
            self.engine
                .metrics
                .streams_with_client_ip
                .fetch_add(1, Ordering::Relaxed);
        }
        let accepted = Accepted {
            conn: Box::new(stream),
            meta: ClientMeta {
                client_addr: self.client,
            },
        };
        if self.engine.accept_tx.try_send(accepted).is_err() {
            // Backlog full: dropping the stream sends FIN.
            self.engine.metrics.handshake_failure("accept_backlog_full");
        }
    }
}
