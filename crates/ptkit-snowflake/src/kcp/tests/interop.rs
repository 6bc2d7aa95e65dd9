//! Differential/interop test against the `kcp` crate 0.6.0, a translation of the C ikcp.
//!
//! The `kcp` crate is configured as close to Snowflake's kcp-go settings as it allows:
//! stream mode, `set_wndsize(65535, 65535)`, `set_nodelay(false, 10, 0, true)` (10 ms
//! interval, no fast resend, no congestion window), MTU 1400, dead link 20.
//!
//! Where ikcp (the `kcp` crate) and kcp-go 5.6.1 differ, ours follows kcp-go:
//! * timeouts: ikcp doubles the RTO (`rto += max(rto, rx_rto)`) and adds `rx_rto / 8` to the
//!   first one; kcp-go grows it linearly (`rto += rx_rto`) with no extra (observed 200, 400,
//!   600 ms from the real client);
//! * ACKs: ikcp sends every pending ACK; kcp-go sends only those at or above `rcv_nxt` plus
//!   the last one;
//! * fast ACK counting: ikcp counts skips once per datagram (highest ACK); kcp-go per ACK, and
//!   kcp-go also retransmits early (any skipped segment, in a flush with no new data) even
//!   with fast resend off;
//! * ikcp takes the RTT from its last `update` time, kcp-go from the clock at input;
//! * kcp-go flushes inside `Input` when `una` advanced; ikcp waits for the next update.
//!
//! None of these change the wire format, so each side must deliver the other's bytes exactly.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;

use bytes::Bytes;
use proptest::prelude::*;

use super::{Endpoint, Link, LinkParams, Ours, Rng, Side, run};
use crate::kcp::{KcpConfig, KcpStats};

#[derive(Clone, Default)]
struct Wire(Rc<RefCell<VecDeque<Bytes>>>);

impl io::Write for Wire {
    /// ikcp writes each datagram with one `write_all`, hence one `write` here.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().push_back(Bytes::copy_from_slice(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Ikcp {
    kcp: kcp::Kcp<Wire>,
    wire: Wire,
    buf: Vec<u8>,
}

impl Ikcp {
    fn new(conv: u32) -> Ikcp {
        let wire = Wire::default();
        let mut kcp = kcp::Kcp::new_stream(conv, wire.clone());
        kcp.set_wndsize(65535, 65535);
        kcp.set_nodelay(false, 10, 0, true);
        kcp.set_mtu(1400).unwrap();
        kcp.set_maximum_resend_times(20);
        Ikcp {
            kcp,
            wire,
            buf: vec![0; 1 << 16],
        }
    }
}

impl Endpoint for Ikcp {
    fn input(&mut self, d: &[u8], _now: u32) {
        self.kcp.input(d).unwrap();
    }
    fn update(&mut self, now: u32) {
        self.kcp.update(now).unwrap();
    }
    fn next_update(&self, now: u32) -> u32 {
        now.wrapping_add(self.kcp.check(now))
    }
    fn poll(&mut self) -> Option<Bytes> {
        let d = self.wire.0.borrow_mut().pop_front()?;
        assert!(d.len() <= 1400);
        Some(d)
    }
    fn send(&mut self, data: &[u8]) -> usize {
        // ikcp has no byte bound; keep its queue modest like kcp-go's Write does.
        if self.kcp.wait_snd() >= 512 {
            return 0;
        }
        let n = data.len().min(64 * self.kcp.mss());
        self.kcp.send(&data[..n]).unwrap()
    }
    fn recv(&mut self, out: &mut Vec<u8>, max: usize) -> usize {
        let mut total = 0;
        while total < max {
            match self.kcp.recv(&mut self.buf) {
                Ok(n) => {
                    out.extend_from_slice(&self.buf[..n]);
                    total += n;
                }
                Err(_) => break,
            }
        }
        total
    }
}

fn transfer(
    seed: u64,
    a_len: usize,
    b_len: usize,
    params: LinkParams,
    max_recv: usize,
) -> KcpStats {
    let mut rng = Rng::new(seed);
    let ours_data = rng.bytes(a_len);
    let theirs_data = rng.bytes(b_len);
    let config = KcpConfig {
        max_recv_bytes: max_recv,
        ..KcpConfig::default()
    };
    let mut ours = Ours::new(0xbf6a_d96f, config);
    let mut theirs = Ikcp::new(0xbf6a_d96f);
    let mut ab = Link::new(params, seed ^ 3);
    let mut ba = Link::new(params, seed ^ 4);
    let mut a = Side::new(&mut ours, &ours_data, 4_000);
    let mut b = Side::new(&mut theirs, &theirs_data, 3_000);
    // ikcp's clock arithmetic is not wrap-safe in debug builds, so start low.
    let t = run(&mut a, &mut b, &mut ab, &mut ba, 1_000, 3_000_000);
    assert!(
        a.received == theirs_data,
        "ours got {} of {} after {t} ms",
        a.received.len(),
        b_len
    );
    assert!(
        b.received == ours_data,
        "ikcp got {} of {} after {t} ms",
        b.received.len(),
        a_len
    );
    drop((a, b));
    let stats = ours.kcp.stats();
    assert!(!ours.kcp.is_dead());
    assert_eq!(stats.datagrams_rejected, 0);
    stats
}

#[test]
fn kcp_interop_ikcp_clean_link() {
    let params = LinkParams {
        loss_permille: 0,
        dup_permille: 0,
        delay_ms: 30,
        jitter_ms: 0,
    };
    let stats = transfer(1, 300_000, 200_000, params, 2 << 20);
    assert_eq!(stats.retransmitted_segments, 0);
}

#[test]
fn kcp_interop_ikcp_lossy_link() {
    let params = LinkParams {
        loss_permille: 100,
        dup_permille: 50,
        delay_ms: 40,
        jitter_ms: 30,
    };
    let stats = transfer(2, 200_000, 150_000, params, 2 << 20);
    assert!(
        stats.retransmitted_segments > 10 && stats.duplicate_segments > 0,
        "{stats:?}"
    );
    // A smaller receive bound: our window shrinks (to ~186 segments), ikcp must honour it.
    // (Below ikcp's initial 128-segment assumption, what it sends first would be dropped and
    // ikcp's doubling backoff would stall the test; kcp-go starts at 32 and backs off linearly.)
    let _ = transfer(3, 300_000, 100_000, params, 256 << 10);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn kcp_interop_ikcp_random(
        seed in any::<u64>(),
        a_len in 0usize..80_000,
        b_len in 0usize..80_000,
        loss in 0u32..200,
        dup in 0u32..100,
        jitter in 0u32..60,
    ) {
        let params = LinkParams { loss_permille: loss, dup_permille: dup, delay_ms: 25, jitter_ms: jitter };
        let _ = transfer(seed, a_len, b_len, params, 2 << 20);
    }
}
