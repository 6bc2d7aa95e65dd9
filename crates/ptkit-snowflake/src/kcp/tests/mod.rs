//! KCP tests: spec vectors, a simulated lossy network, interop with the `kcp` crate (an ikcp
//! translation), hostile input.
//!
//! The network simulation is deterministic: a seeded PRNG decides loss, duplication and
//! delay; time is a `u32` millisecond counter that jumps to the next event (no sleeps).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod hostile;
mod interop;
mod sim;
mod vectors;

use std::collections::VecDeque;

use bytes::Bytes;

use super::{Kcp, KcpConfig};

/// xorshift64* — small, seedable, good enough for loss decisions.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }
    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (n > 0).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// True with probability `permille`/1000.
    pub(super) fn chance(&mut self, permille: u32) -> bool {
        self.below(1000) < u64::from(permille)
    }
    pub(super) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Impairments of one direction of the simulated network.
#[derive(Debug, Clone, Copy)]
pub(super) struct LinkParams {
    pub(super) loss_permille: u32,
    pub(super) dup_permille: u32,
    pub(super) delay_ms: u32,
    /// Extra random delay 0..=jitter, which also reorders.
    pub(super) jitter_ms: u32,
}

/// One direction of the network: datagrams in flight with their delivery time.
pub(super) struct Link {
    params: LinkParams,
    rng: Rng,
    in_flight: Vec<(u32, u64, Bytes)>,
    seq: u64,
}

impl Link {
    pub(super) fn new(params: LinkParams, seed: u64) -> Link {
        Link {
            params,
            rng: Rng::new(seed),
            in_flight: Vec::new(),
            seq: 0,
        }
    }
    pub(super) fn push(&mut self, now: u32, d: Bytes) {
        if self.rng.chance(self.params.loss_permille) {
            return;
        }
        let copies = if self.rng.chance(self.params.dup_permille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = self.rng.below(u64::from(self.params.jitter_ms) + 1) as u32;
            let at = now.wrapping_add(self.params.delay_ms + jitter);
            self.seq += 1;
            self.in_flight.push((at, self.seq, d.clone()));
        }
    }
    /// Datagrams due at `now`, in delivery order.
    pub(super) fn due(&mut self, now: u32) -> Vec<Bytes> {
        let mut due: Vec<_> = Vec::new();
        self.in_flight.retain(|(at, seq, d)| {
            if (now.wrapping_sub(*at) as i32) >= 0 {
                due.push((*at, *seq, d.clone()));
                false
            } else {
                true
            }
        });
        due.sort_by_key(|(at, seq, _)| (at.wrapping_sub(now) as i32, *seq));
        due.into_iter().map(|(_, _, d)| d).collect()
    }
    pub(super) fn next_at(&self, now: u32) -> Option<u32> {
        self.in_flight
            .iter()
            .map(|(at, _, _)| *at)
            .min_by_key(|at| at.wrapping_sub(now) as i32)
    }
}

/// A KCP endpoint the simulation can drive: ours or the `kcp` crate's.
pub(super) trait Endpoint {
    fn input(&mut self, d: &[u8], now: u32);
    fn update(&mut self, now: u32);
    /// Absolute time of the next update.
    fn next_update(&self, now: u32) -> u32;
    fn poll(&mut self) -> Option<Bytes>;
    fn send(&mut self, data: &[u8]) -> usize;
    fn recv(&mut self, out: &mut Vec<u8>, max: usize) -> usize;
}

/// Our engine, checking its memory bounds after every call.
pub(super) struct Ours {
    pub(super) kcp: Kcp,
    max_recv: usize,
    max_send: usize,
}

impl Ours {
    pub(super) fn new(conv: u32, config: KcpConfig) -> Ours {
        Ours {
            max_recv: config.max_recv_bytes,
            max_send: config.max_send_bytes,
            kcp: Kcp::new(conv, config),
        }
    }
    fn check_bounds(&self) {
        // One in-order segment may go over when nothing is queued (see `parse_data`).
        assert!(
            self.kcp.recv_memory() <= self.max_recv + 1500 + super::engine::SEG_COST,
            "recv memory {} over bound {}",
            self.kcp.recv_memory(),
            self.max_recv
        );
        assert!(self.kcp.send_memory() <= self.max_send);
        assert!(self.kcp.rcv_buf.len() <= 65535 && self.kcp.rcv_queue.len() <= 65535);
    }
}

impl Endpoint for Ours {
    fn input(&mut self, d: &[u8], now: u32) {
        self.kcp.input(d, now).unwrap();
        self.check_bounds();
    }
    fn update(&mut self, now: u32) {
        self.kcp.update(now);
    }
    fn next_update(&self, now: u32) -> u32 {
        self.kcp.check(now)
    }
    fn poll(&mut self) -> Option<Bytes> {
        let d = self.kcp.poll_transmit()?;
        assert!(d.len() <= 1400, "datagram of {} bytes", d.len());
        Some(d)
    }
    fn send(&mut self, data: &[u8]) -> usize {
        let cap = self.kcp.send_capacity();
        let n = self.kcp.send(data);
        assert!(n <= cap);
        self.check_bounds();
        n
    }
    fn recv(&mut self, out: &mut Vec<u8>, max: usize) -> usize {
        let before = self.kcp.readable();
        let n = self.kcp.recv(out, max);
        assert_eq!(n, before.min(max));
        self.check_bounds();
        n
    }
}

/// When an endpoint's application reads.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reader {
    /// Largest read.
    pub(super) max_read: usize,
    /// Out of every `period_ms`, the application does not read during the first `pause_ms`.
    pub(super) period_ms: u32,
    pub(super) pause_ms: u32,
}

impl Reader {
    pub(super) const EAGER: Reader = Reader {
        max_read: 1 << 20,
        period_ms: 1,
        pause_ms: 0,
    };
    fn reads_at(&self, t: u32) -> bool {
        t % self.period_ms.max(1) >= self.pause_ms
    }
}

/// One side of a transfer.
pub(super) struct Side<'a> {
    pub(super) ep: &'a mut dyn Endpoint,
    pub(super) to_send: &'a [u8],
    pub(super) write_chunk: usize,
    pub(super) reader: Reader,
    pub(super) received: Vec<u8>,
    sent: usize,
}

impl<'a> Side<'a> {
    pub(super) fn new(ep: &'a mut dyn Endpoint, to_send: &'a [u8], write_chunk: usize) -> Self {
        Side {
            ep,
            to_send,
            write_chunk: write_chunk.max(1),
            reader: Reader::EAGER,
            received: Vec::new(),
            sent: 0,
        }
    }
    fn app(&mut self, now: u32, t: u32) {
        while self.sent < self.to_send.len() {
            let end = (self.sent + self.write_chunk).min(self.to_send.len());
            let n = self.ep.send(&self.to_send[self.sent..end]);
            self.sent += n;
            if n == 0 {
                break;
            }
        }
        if self.reader.reads_at(t) {
            while self.ep.recv(&mut self.received, self.reader.max_read) > 0 {}
        }
        let _ = now;
    }
}

/// Runs both sides until each has received everything the other sent, or `limit_ms` of
/// simulated time passed. Returns the simulated time used.
pub(super) fn run<'x>(
    a: &mut Side<'x>,
    b: &mut Side<'x>,
    ab: &mut Link,
    ba: &mut Link,
    start: u32,
    limit_ms: u32,
) -> u32 {
    let mut now = start;
    let mut steps = 0u64;
    loop {
        let t = now.wrapping_sub(start);
        for d in ab.due(now) {
            b.ep.input(&d, now);
        }
        for d in ba.due(now) {
            a.ep.input(&d, now);
        }
        a.app(now, t);
        b.app(now, t);
        for (side, link) in [(&mut *a, &mut *ab), (&mut *b, &mut *ba)] {
            if (side.ep.next_update(now).wrapping_sub(now) as i32) <= 0 {
                side.ep.update(now);
            }
            while let Some(d) = side.ep.poll() {
                link.push(now, d);
            }
        }
        if a.received.len() == b.to_send.len() && b.received.len() == a.to_send.len() {
            return t;
        }
        if t > limit_ms {
            return t;
        }
        steps += 1;
        assert!(steps < 50_000_000, "simulation does not progress");
        let mut next = a.ep.next_update(now);
        for cand in [
            Some(b.ep.next_update(now)),
            ab.next_at(now),
            ba.next_at(now),
        ]
        .into_iter()
        .flatten()
        {
            if (cand.wrapping_sub(next) as i32) < 0 {
                next = cand;
            }
        }
        // Paused readers need the clock to move to the end of their pause.
        next = if (next.wrapping_sub(now) as i32) <= 0 {
            now.wrapping_add(1)
        } else {
            next
        };
        let max_step = if a.reader.pause_ms > 0 || b.reader.pause_ms > 0 {
            50
        } else {
            u32::MAX
        };
        now = if next.wrapping_sub(now) > max_step {
            now.wrapping_add(max_step)
        } else {
            next
        };
    }
}

/// Drains an endpoint's datagrams.
pub(super) fn drain(ep: &mut dyn Endpoint) -> VecDeque<Bytes> {
    std::iter::from_fn(|| ep.poll()).collect()
}
