//! Per-ClientID outgoing packet queues (spec §2.4): every WebSocket attached to a ClientID
//! pulls from the same bounded queue, so a client that switches proxies finds its pending
//! packets waiting; a queue unused for a while expires and ends the writers still attached.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::turbotunnel::ClientId;

/// Packets held per ClientID before new ones are dropped (KCP retransmits them).
pub const DEFAULT_QUEUE_PACKETS: usize = 512;
/// A queue unused (no packet queued or taken, no writer attached) this long is removed.
pub const DEFAULT_QUEUE_EXPIRY: Duration = Duration::from_secs(60);
/// How often expired queues are swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// One ClientID's outgoing packets.
#[derive(Debug)]
pub struct SendQueue {
    packets: Mutex<VecDeque<Bytes>>,
    capacity: usize,
    notify: Notify,
    closed: AtomicBool,
    /// Milliseconds since the map's epoch of the last use.
    last_used: AtomicU64,
    epoch: Instant,
}

impl SendQueue {
    fn new(capacity: usize, epoch: Instant) -> Self {
        let q = SendQueue {
            packets: Mutex::new(VecDeque::new()),
            capacity,
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            last_used: AtomicU64::new(0),
            epoch,
        };
        q.touch();
        q
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_used.store(ms, Ordering::Relaxed);
    }

    /// Queues a packet; false when the queue is full or closed (the packet is dropped).
    pub fn push(&self, packet: Bytes) -> bool {
        self.touch();
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        let Ok(mut q) = self.packets.lock() else {
            return false;
        };
        if q.len() >= self.capacity {
            return false;
        }
        q.push_back(packet);
        drop(q);
        self.notify.notify_one();
        true
    }

    /// The next packet, waiting for one; None once the queue has expired or was closed.
    pub async fn pop(&self) -> Option<Bytes> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(p) = self.try_pop() {
                return Some(p);
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            notified.await;
        }
    }

    /// The next packet if one is queued.
    pub fn try_pop(&self) -> Option<Bytes> {
        self.touch();
        let (p, more) = {
            let mut q = self.packets.lock().ok()?;
            let p = q.pop_front();
            (p, !q.is_empty())
        };
        // Another writer may be waiting and more packets are queued: one lock per packet.
        if p.is_some() && more {
            self.notify.notify_one();
        }
        p
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.packets.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// Whether no packet waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends every writer waiting on this queue and drops what it held.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Ok(mut q) = self.packets.lock() {
            q.clear();
        }
        self.notify.notify_waiters();
        // A writer between `enable` and `await` holds no waiter slot yet; a permit wakes it.
        self.notify.notify_one();
    }

    /// Whether the queue was closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn idle_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_used.load(Ordering::Relaxed)))
    }
}

/// ClientID → outgoing queue, with expiry.
#[derive(Debug)]
pub struct ClientMap {
    queues: Mutex<HashMap<ClientId, Arc<SendQueue>>>,
    capacity: usize,
    expiry: Duration,
    epoch: Instant,
    dropped: AtomicU64,
}

impl ClientMap {
    /// A map whose queues hold `capacity` packets and expire after `expiry` unused.
    pub fn new(capacity: usize, expiry: Duration) -> Self {
        ClientMap {
            queues: Mutex::new(HashMap::new()),
            capacity,
            expiry,
            epoch: Instant::now(),
            dropped: AtomicU64::new(0),
        }
    }

    /// The queue for `id`, created on first use.
    pub fn queue(&self, id: ClientId) -> Arc<SendQueue> {
        let Ok(mut map) = self.queues.lock() else {
            // A poisoned map can only follow a panic elsewhere; hand out a closed queue.
            let q = SendQueue::new(0, self.epoch);
            q.close();
            return Arc::new(q);
        };
        let q = map
            .entry(id)
            .or_insert_with(|| Arc::new(SendQueue::new(self.capacity, self.epoch)))
            .clone();
        q.touch();
        q
    }

    /// Queues `packet` for `id`; false (and counted) when it was dropped.
    pub fn send(&self, id: ClientId, packet: Bytes) -> bool {
        let ok = self.queue(id).push(packet);
        if !ok {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Removes and closes queues unused for longer than the expiry; returns how many.
    pub fn sweep(&self) -> usize {
        let Ok(mut map) = self.queues.lock() else {
            return 0;
        };
        let before = map.len();
        map.retain(|_, q| {
            let keep = q.idle_for() < self.expiry;
            if !keep {
                q.close();
            }
            keep
        });
        before - map.len()
    }

    /// Queues held.
    pub fn len(&self) -> usize {
        self.queues.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether no queue is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Packets dropped because a queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn id(n: u8) -> ClientId {
        ClientId([n; 8])
    }

    #[tokio::test]
    async fn bounded_and_drops_when_full() {
        let m = ClientMap::new(3, DEFAULT_QUEUE_EXPIRY);
        for i in 0..5u8 {
            let ok = m.send(id(1), Bytes::from(vec![i]));
            assert_eq!(ok, i < 3);
        }
        assert_eq!(m.dropped(), 2);
        let q = m.queue(id(1));
        for i in 0..3u8 {
            assert_eq!(q.pop().await, Some(Bytes::from(vec![i])));
        }
        assert!(q.try_pop().is_none());
    }

    #[tokio::test]
    async fn two_writers_share_one_queue() {
        let m = Arc::new(ClientMap::new(512, DEFAULT_QUEUE_EXPIRY));
        let q1 = m.queue(id(2));
        let q2 = m.queue(id(2));
        let w1 = tokio::spawn(async move {
            let mut n = 0;
            while q1.pop().await.is_some() {
                n += 1;
            }
            n
        });
        let w2 = tokio::spawn(async move {
            let mut n = 0;
            while q2.pop().await.is_some() {
                n += 1;
            }
            n
        });
        for i in 0..200u32 {
            while !m.send(id(2), Bytes::from(i.to_be_bytes().to_vec())) {
                tokio::task::yield_now().await;
            }
        }
        while !m.queue(id(2)).is_empty() {
            tokio::task::yield_now().await;
        }
        m.queue(id(2)).close();
        let (a, b) = (w1.await.unwrap(), w2.await.unwrap());
        assert_eq!(a + b, 200);
    }

    #[tokio::test]
    async fn expiry_closes_attached_writers() {
        let m = Arc::new(ClientMap::new(8, Duration::from_millis(50)));
        let q = m.queue(id(3));
        let writer = tokio::spawn(async move { q.pop().await });
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(m.sweep(), 1);
        assert_eq!(writer.await.unwrap(), None);
        assert!(m.is_empty());
        // A new send after expiry makes a fresh queue.
        assert!(m.send(id(3), Bytes::from_static(b"x")));
        assert_eq!(m.len(), 1);
        assert_eq!(m.sweep(), 0);
    }
}
