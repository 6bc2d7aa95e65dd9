//! Hostile input: errors or ignores, never panics, memory stays bounded.

use hex_literal::hex;
use proptest::prelude::*;

use crate::kcp::segment::{CMD_ACK, CMD_PUSH, CMD_WASK, CMD_WINS};
use crate::kcp::{Kcp, KcpConfig, KcpError, SegmentHeader, fuzz_input};

const CONV: u32 = 0x0a0b_0c0d;

fn seg(cmd: u8, sn: u32, una: u32, wnd: u16, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    SegmentHeader {
        conv: CONV,
        cmd,
        frg: 0,
        wnd,
        ts: 7,
        sn,
        una,
        len: data.len() as u32,
    }
    .encode(&mut v);
    v.extend_from_slice(data);
    v
}

fn config() -> KcpConfig {
    KcpConfig {
        max_recv_bytes: 32 << 10,
        max_send_bytes: 32 << 10,
        ..KcpConfig::default()
    }
}

#[test]
fn kcp_hostile_malformed_datagrams() {
    let mut k = Kcp::new(CONV, config());
    for n in 0..24 {
        assert_eq!(k.input(&vec![0; n], 0), Err(KcpError::TooShort(n)));
    }
    // len overflow, including u32::MAX.
    let mut d = seg(CMD_PUSH, 0, 0, 10, b"abc");
    d[20..24].copy_from_slice(&4u32.to_le_bytes());
    assert_eq!(
        k.input(&d, 0),
        Err(KcpError::LenOverflow {
            len: 4,
            remaining: 3
        })
    );
    d[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(k.input(&d, 0), Err(KcpError::LenOverflow { .. })));
    // Bad commands (0xf1 is kcp-go's FEC data flag).
    for cmd in [0u8, 80, 85, 0xf1, 0xff] {
        let e = k.input(&seg(cmd, 0, 0, 10, b""), 0).unwrap_err();
        assert_eq!(e, KcpError::BadCommand(cmd));
        assert_eq!(e.kind(), "bad_cmd");
    }
    let mut other = seg(CMD_PUSH, 0, 0, 10, b"x");
    other[0] ^= 1;
    assert_eq!(k.input(&other, 0).unwrap_err().kind(), "wrong_conv");
    assert_eq!(k.readable(), 0);
    assert_eq!(k.stats().datagrams_rejected, 24 + 2 + 5 + 1);
    assert_eq!(k.stats().segments_received, 0);
}

#[test]
fn kcp_hostile_partial_application_like_kcp_go() {
    // A good segment, then a bad one: the first stays applied, the rest is ignored.
    let mut k = Kcp::new(CONV, config());
    let mut d = seg(CMD_PUSH, 0, 0, 10, b"good");
    d.extend(seg(0x99, 1, 0, 10, b""));
    d.extend(seg(CMD_PUSH, 1, 0, 10, b"never"));
    assert_eq!(k.input(&d, 0), Err(KcpError::BadCommand(0x99)));
    assert_eq!(k.readable(), 4);
    // Fewer than 24 trailing bytes are ignored silently.
    let mut d = seg(CMD_PUSH, 1, 0, 10, b"more");
    d.extend_from_slice(&hex!("0d0c0b0a 51 00"));
    assert_eq!(k.input(&d, 0), Ok(()));
    assert_eq!(k.readable(), 8);
}

#[test]
fn kcp_hostile_sequence_numbers_and_windows() {
    let mut k = Kcp::new(CONV, config());
    // sn far outside the window: ignored, not acknowledged.
    for sn in [65535u32, 65536, 1 << 31, (1 << 31) + 65534] {
        k.input(&seg(CMD_PUSH, sn, 0, u16::MAX, b"zz"), 0).unwrap();
    }
    assert_eq!(k.stats().out_of_window_segments, 4);
    // Below rcv_nxt (wrapped): treated as an old duplicate, acknowledged, not stored.
    k.input(&seg(CMD_PUSH, u32::MAX, 0, u16::MAX, b"zz"), 0)
        .unwrap();
    assert_eq!(k.readable(), 0);
    assert_eq!(k.recv_memory(), 0);
    // ACK / una for sequence numbers never sent: no effect.
    k.send(b"payload");
    k.update(1);
    while k.poll_transmit().is_some() {}
    for una in [5u32, 1 << 31, u32::MAX] {
        k.input(&seg(CMD_ACK, una, 0, u16::MAX, b""), 2).unwrap();
    }
    assert_eq!(k.waitsnd(), 1);
    // A far una acknowledges everything in flight (the peer lies only about its own data).
    k.input(&seg(CMD_WINS, 0, 1 << 30, u16::MAX, b""), 3)
        .unwrap();
    assert_eq!(k.waitsnd(), 0);
    assert_eq!(k.send_memory(), 0);
    // Huge and zero windows.
    k.input(&seg(CMD_WASK, 0, 0, 0, b""), 4).unwrap();
    assert_eq!(k.send_capacity(), 0, "peer window 0");
    k.input(&seg(CMD_WINS, 0, 0, u16::MAX, b""), 4).unwrap();
    assert_eq!(k.send_capacity(), 32 << 10);
}

#[test]
fn kcp_hostile_out_of_order_flood_is_bounded() {
    // Fill the whole 65535-segment window with out-of-order data, never the missing sn 0.
    let mut k = Kcp::new(CONV, config());
    let payload = [0x42u8; 1376];
    let mut stored = 0;
    for sn in 1..65535u32 {
        k.input(&seg(CMD_PUSH, sn, 0, u16::MAX, &payload), 0)
            .unwrap();
        assert!(k.recv_memory() <= 32 << 10);
        stored = stored.max(k.rcv_buf.len());
    }
    assert!(stored < 32, "stored {stored}");
    assert!(k.stats().no_room_segments > 65000);
    // The missing segment is still taken, and the stream moves on.
    k.input(&seg(CMD_PUSH, 0, 0, u16::MAX, &payload), 0)
        .unwrap();
    assert!(k.readable() > 1376);
    // Not stored means not acknowledged: the ACK list only has what was kept.
    assert!(k.acklist.len() <= stored + 1);
    // Empty segments flood: bounded by the per-segment charge.
    let mut k = Kcp::new(CONV, config());
    let mut d = Vec::new();
    for sn in 1..60u32 {
        d.extend(seg(CMD_PUSH, sn, 0, 1, b""));
    }
    for _ in 0..2000 {
        k.input(&d, 0).unwrap();
    }
    assert!(k.recv_memory() <= 32 << 10);
    assert!(k.acklist.len() <= crate::kcp::MAX_PENDING_ACKS);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn kcp_hostile_arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..4096)) {
        fuzz_input(&data);
    }

    #[test]
    fn kcp_hostile_well_formed_headers_with_random_fields(
        segs in prop::collection::vec((80u8..86, any::<u32>(), any::<u32>(), any::<u16>(), 0usize..1500), 1..40)
    ) {
        let mut k = Kcp::new(CONV, config());
        let mut now = 0u32;
        for (cmd, sn, una, wnd, len) in segs {
            let sn = if sn % 2 == 0 { sn % 200 } else { sn };
            let _ = k.input(&seg(cmd, sn, una, wnd, &vec![1; len]), now);
            now = now.wrapping_add(7);
            k.update(now);
            while let Some(d) = k.poll_transmit() {
                prop_assert!(d.len() <= 1400);
            }
            prop_assert!(k.recv_memory() <= (32 << 10) + 1500 + 32);
        }
    }
}
