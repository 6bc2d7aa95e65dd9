//! Two of our engines over a simulated lossy, duplicating, reordering network; timers.

use proptest::prelude::*;

use super::{Endpoint, Link, LinkParams, Ours, Reader, Rng, Side, drain, run};
use crate::kcp::segment::{CMD_PUSH, CMD_WASK, CMD_WINS};
use crate::kcp::{Kcp, KcpConfig, first_segment};

/// Start near the top of the clock so every run crosses the u32 wrap.
const START: u32 = u32::MAX - 20_000;

fn small(max_recv: usize, max_send: usize) -> KcpConfig {
    KcpConfig {
        max_recv_bytes: max_recv,
        max_send_bytes: max_send,
        ..KcpConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn kcp_lossy_transfer_both_ways_is_exact(
        seed in any::<u64>(),
        a_len in 0usize..120_000,
        b_len in 0usize..60_000,
        loss in 0u32..250,
        dup in 0u32..150,
        jitter in 0u32..80,
        a_chunk in 1usize..5_000,
        b_chunk in 1usize..3_000,
        max_recv in prop::sample::select(vec![8usize << 10, 64 << 10, 2 << 20]),
        max_send in prop::sample::select(vec![4usize << 10, 256 << 10, 2 << 20]),
        slow_reader in any::<bool>(),
    ) {
        let mut rng = Rng::new(seed);
        let a_data = rng.bytes(a_len);
        let b_data = rng.bytes(b_len);
        let params = LinkParams { loss_permille: loss, dup_permille: dup, delay_ms: 20, jitter_ms: jitter };
        let mut ab = Link::new(params, seed ^ 1);
        let mut ba = Link::new(params, seed ^ 2);
        let mut ea = Ours::new(7, small(max_recv, max_send));
        let mut eb = Ours::new(7, small(max_recv, max_send));
        let mut a = Side::new(&mut ea, &a_data, a_chunk);
        let mut b = Side::new(&mut eb, &b_data, b_chunk);
        if slow_reader {
            b.reader = Reader { max_read: 700, period_ms: 3_000, pause_ms: 2_000 };
        }
        let t = run(&mut a, &mut b, &mut ab, &mut ba, START, 1_200_000);
        prop_assert!(a.received == b_data, "a got {} of {} bytes after {t} ms", a.received.len(), b_data.len());
        prop_assert!(b.received == a_data, "b got {} of {} bytes after {t} ms", b.received.len(), a_data.len());
        drop((a, b));
        // A peer starts with kcp-go's assumed window of 32 segments; a receive bound below
        // that drops (without ACK) what does not fit, and a paused reader can then push a
        // segment to 20 transmissions. With room for 32 segments, nothing is ever dropped.
        if max_recv >= 64 << 10 {
            prop_assert!(!ea.kcp.is_dead() && !eb.kcp.is_dead());
        }
    }
}

/// Times at which the PUSH with `sn` left, driving the engine at its own check() times
/// with nothing ever acknowledged.
fn transmissions(config: KcpConfig, count: usize) -> (Vec<u32>, Kcp) {
    let mut kcp = Kcp::new(1, config);
    assert_eq!(kcp.send(b"hello"), 5);
    let mut now = START;
    let mut times = Vec::new();
    let mut dead_after = None;
    while times.len() < count {
        now = kcp.check(now);
        kcp.update(now);
        while let Some(d) = kcp.poll_transmit() {
            let h = first_segment(&d).unwrap();
            if h.cmd == CMD_PUSH && h.sn == 0 {
                times.push(now);
                assert_eq!(h.ts, now);
                if kcp.is_dead() && dead_after.is_none() {
                    dead_after = Some(times.len());
                }
            }
        }
    }
    (times, kcp)
}

fn gaps(times: &[u32]) -> Vec<u32> {
    times.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect()
}

#[test]
fn kcp_rto_grows_linearly_without_acks() {
    let (times, _) = transmissions(KcpConfig::default(), 6);
    // Spec §2.5 / §8: 200, 400, 600, 800 ... ms (nodelay 0: rto += rx_rto each timeout).
    assert_eq!(gaps(&times), [200, 400, 600, 800, 1000]);
    let (times, _) = transmissions(
        KcpConfig {
            nodelay: true,
            ..KcpConfig::default()
        },
        4,
    );
    assert_eq!(gaps(&times), [200, 300, 400]);
}

#[test]
fn kcp_dead_link_after_twenty_transmissions() {
    // kcp-go: `segment.xmit >= dead_link` marks the link dead, so the 20th transmission
    // (the 19th retransmission) does it.
    let (_, kcp) = transmissions(KcpConfig::default(), 19);
    assert!(!kcp.is_dead());
    let (times, kcp) = transmissions(KcpConfig::default(), 20);
    assert!(kcp.is_dead());
    assert_eq!(kcp.stats().lost_segments, 19);
    assert_eq!(kcp.stats().retransmitted_segments, 19);
    // 200 + 400 + ... + 19*200 ms
    assert_eq!(times[19].wrapping_sub(times[0]), 200 * (19 * 20 / 2));
}

#[test]
fn kcp_check_is_the_next_deadline() {
    let mut kcp = Kcp::new(1, KcpConfig::default());
    assert_eq!(kcp.check(100), 100, "before the first update");
    kcp.update(100);
    assert_eq!(kcp.check(100), 5_100, "idle");
    kcp.send(b"x");
    assert_eq!(
        kcp.check(101),
        101,
        "new data goes out at once, like kcp-go's Write"
    );
    kcp.update(101);
    assert_eq!(kcp.check(102), 301, "retransmission timeout");
    let mut peer = Kcp::new(1, KcpConfig::default());
    peer.update(115);
    for d in drain_kcp(&mut kcp) {
        peer.input(&d, 120).unwrap();
    }
    assert_eq!(peer.check(120), 125, "ACKs wait for the next 10 ms tick");
}

fn drain_kcp(kcp: &mut Kcp) -> Vec<bytes::Bytes> {
    std::iter::from_fn(|| kcp.poll_transmit()).collect()
}

#[test]
fn kcp_window_closes_probes_and_reopens() {
    // The receiver's byte bound closes its window; the sender stops, probes with WASK after
    // 7 s, gets WINS; when the receiver reads, it announces the reopened window itself.
    let mut a = Ours::new(9, small(1 << 20, 1 << 20));
    let mut b = Ours::new(9, small(64 << 10, 1 << 20));
    let data = Rng::new(5).bytes(500_000);
    let accepted = a.send(&data);
    assert!(accepted > 400_000);
    let mut now = 0u32;
    let (mut wask, mut wins, mut min_wnd) = (0, 0, u16::MAX);
    for _ in 0..2_000 {
        now += 10;
        a.update(now);
        b.update(now);
        for d in drain(&mut a) {
            if first_segment(&d).is_some_and(|h| h.cmd == CMD_WASK) {
                wask += 1;
            }
            b.input(&d, now);
        }
        for d in drain(&mut b) {
            let h = first_segment(&d).unwrap();
            min_wnd = min_wnd.min(h.wnd);
            if h.cmd == CMD_WINS {
                wins += 1;
            }
            a.input(&d, now);
        }
    }
    assert_eq!(min_wnd, 0);
    assert!(wask >= 1 && wins >= 1, "wask {wask} wins {wins}");
    assert!(b.kcp.readable() <= 64 << 10);
    assert_eq!(b.kcp.stats().no_room_segments, 0);
    assert!(!a.kcp.is_dead());
    // Now read everything.
    let mut got = Vec::new();
    for _ in 0..20_000 {
        now += 10;
        b.recv(&mut got, usize::MAX);
        a.update(now);
        b.update(now);
        for d in drain(&mut a) {
            b.input(&d, now);
        }
        for d in drain(&mut b) {
            a.input(&d, now);
        }
        if a.kcp.waitsnd() == 0 && got.len() == accepted {
            break;
        }
    }
    assert_eq!(got, data[..accepted]);
    assert_eq!(a.kcp.waitsnd(), 0);
    assert!(!a.kcp.is_dead());
}
