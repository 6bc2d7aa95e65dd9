//! The [`TunnelManager`]: live tunnels by authenticated identity, with events.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

/// One authenticated tunnel as the server sees it.
#[derive(Debug)]
pub struct TunnelContext {
    /// Unique per process.
    pub id: u64,
    /// The authenticated identity.
    pub identity: String,
    /// The client's address (scrub it in logs).
    pub remote: SocketAddr,
    /// The QUIC connection.
    pub conn: quinn::Connection,
    /// Ports this tunnel currently exposes (reverse routing).
    pub exposures: AtomicUsize,
}

/// What happened to tunnels.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TunnelEvent {
    /// A QUIC handshake completed; authentication starts.
    Connected {
        /// The client's address.
        remote: SocketAddr,
    },
    /// Authentication succeeded.
    Authenticated {
        /// The tunnel id.
        id: u64,
        /// The identity.
        identity: String,
        /// The client's address.
        remote: SocketAddr,
    },
    /// A client was refused (TLS, authentication, deadline) or failed before authenticating.
    Refused {
        /// The client's address.
        remote: SocketAddr,
        /// Stable label of the reason (`RefusalCode::label`, `timeout`, `tls`, ...).
        kind: String,
        /// Human-readable reason.
        reason: String,
    },
    /// An authenticated tunnel closed.
    Closed {
        /// The tunnel id.
        id: u64,
        /// The identity.
        identity: String,
        /// Why.
        reason: String,
    },
}

/// Tracks live tunnels; several tunnels may share an identity (the newest wins lookups).
#[derive(Debug)]
pub struct TunnelManager {
    tunnels: Mutex<HashMap<String, Vec<Arc<TunnelContext>>>>,
    events: broadcast::Sender<TunnelEvent>,
    next_id: AtomicU64,
}

impl Default for TunnelManager {
    fn default() -> Self {
        Self::new()
    }
}

impl TunnelManager {
    /// Events are buffered up to this many per slow subscriber (older ones are dropped).
    pub const EVENT_BUFFER: usize = 1024;

    /// An empty manager.
    pub fn new() -> Self {
        TunnelManager {
            tunnels: Mutex::new(HashMap::new()),
            events: broadcast::channel(Self::EVENT_BUFFER).0,
            next_id: AtomicU64::new(1),
        }
    }

    /// Receives events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<TunnelEvent> {
        self.events.subscribe()
    }

    pub(crate) fn emit(&self, e: TunnelEvent) {
        let _ = self.events.send(e);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Arc<TunnelContext>>>> {
        self.tunnels.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn register(
        &self,
        identity: String,
        remote: SocketAddr,
        conn: quinn::Connection,
    ) -> Arc<TunnelContext> {
        let ctx = Arc::new(TunnelContext {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            identity: identity.clone(),
            remote,
            conn,
            exposures: AtomicUsize::new(0),
        });
        self.lock()
            .entry(identity.clone())
            .or_default()
            .push(ctx.clone());
        self.emit(TunnelEvent::Authenticated {
            id: ctx.id,
            identity,
            remote,
        });
        ctx
    }

    pub(crate) fn unregister(&self, ctx: &TunnelContext, reason: String) {
        let mut map = self.lock();
        if let Some(list) = map.get_mut(&ctx.identity) {
            list.retain(|t| t.id != ctx.id);
            if list.is_empty() {
                map.remove(&ctx.identity);
            }
        }
        drop(map);
        self.emit(TunnelEvent::Closed {
            id: ctx.id,
            identity: ctx.identity.clone(),
            reason,
        });
    }

    /// The newest live tunnel of `identity`.
    pub fn get(&self, identity: &str) -> Option<Arc<TunnelContext>> {
        self.lock().get(identity).and_then(|l| l.last().cloned())
    }

    /// Number of live authenticated tunnels.
    pub fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// True when no tunnel is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Identities with at least one live tunnel, sorted.
    pub fn identities(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// Every live tunnel.
    pub fn all(&self) -> Vec<Arc<TunnelContext>> {
        self.lock().values().flatten().cloned().collect()
    }
}
