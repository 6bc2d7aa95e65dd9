//! Spec §5.2: bytes captured from the real snowflake 2.5.1 client (upstream), and downstream
//! bytes the real client accepted. The leading encapsulation prefix byte of each chunk is
//! left out: these are the KCP datagrams inside.

use hex_literal::hex;

use crate::kcp::segment::{CMD_ACK, CMD_PUSH};
use crate::kcp::{Kcp, KcpConfig, SegmentHeader, first_segment};

/// WS msg 3: PUSH sn=0 carrying smux SYN sid=3.
const UP_SYN: [u8; 32] =
    hex!("3c3f06eb 51 00 ffff 46040000 00000000 00000000 08000000 02000000 03000000");
/// WS msg 4: PUSH sn=1 carrying smux PSH sid=3 "HELLO-SNOWFLAKE".
const UP_PSH: [u8; 47] = hex!(
    "3c3f06eb 51 00 ffff 46040000 01000000 00000000 17000000"
    "02 02 0f00 03000000 48454c4c4f2d534e4f57464c414b45"
);
const SMUX_SYN: [u8; 8] = hex!("02 00 0000 03000000");
const SMUX_PSH: [u8; 23] = hex!("02 02 0f00 03000000 48454c4c4f2d534e4f57464c414b45");

/// WS msg 5: both segments again in one datagram, with the fresh ts 1294.
fn up_retransmission() -> Vec<u8> {
    let mut d = Vec::new();
    for seg in [&UP_SYN[..], &UP_PSH[..]] {
        let mut s = seg.to_vec();
        s[8..12].copy_from_slice(&1294u32.to_le_bytes());
        d.extend_from_slice(&s);
    }
    assert_eq!(d.len(), 79);
    d
}

/// kcp-go's exact window arithmetic (`rcv_wnd - len(rcv_queue)`) holds when the byte bound
/// is large enough not to bind.
fn unbounded() -> KcpConfig {
    KcpConfig {
        max_recv_bytes: 1 << 30,
        ..KcpConfig::default()
    }
}

/// All segments of all pending datagrams.
fn emitted(kcp: &mut Kcp) -> Vec<(SegmentHeader, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(d) = kcp.poll_transmit() {
        assert!(d.len() <= 1400);
        let mut rest = &d[..];
        while let Some(h) = first_segment(rest) {
            let len = h.len as usize;
            out.push((h, rest[24..24 + len].to_vec()));
            rest = &rest[24 + len..];
        }
        assert!(rest.is_empty());
    }
    out
}

#[test]
fn kcp_spec_5_2_upstream_server_side() {
    let first = first_segment(&UP_SYN).unwrap();
    assert_eq!(first.conv, 0xeb06_3f3c);
    assert_eq!(
        (first.cmd, first.wnd, first.ts, first.sn, first.len),
        (CMD_PUSH, 0xffff, 1094, 0, 8)
    );
    let mut server = Kcp::new(first.conv, unbounded());
    let now = 50_000;

    server.input(&UP_SYN, now).unwrap();
    assert_eq!(server.readable(), 8);
    server.update(now);
    let acks = emitted(&mut server);
    assert_eq!(acks.len(), 1);
    let (ack, data) = &acks[0];
    assert!(data.is_empty());
    // cmd 82, echo of ts, sn, una = rcv_nxt, wnd = 65535 - len(rcv_queue) (1 unread segment).
    let want = SegmentHeader {
        conv: 0xeb06_3f3c,
        cmd: CMD_ACK,
        frg: 0,
        wnd: 65534,
        ts: 1094,
        sn: 0,
        una: 1,
        len: 0,
    };
    assert_eq!(*ack, want);
    let mut wire = Vec::new();
    want.encode(&mut wire);
    assert_eq!(
        wire,
        hex!("3c3f06eb 52 00 feff 46040000 00000000 01000000 00000000")
    );

    let mut got = Vec::new();
    assert_eq!(server.recv(&mut got, 1 << 16), 8);
    assert_eq!(got, SMUX_SYN);

    server.input(&UP_PSH, now + 5).unwrap();
    server.update(now + 10);
    let acks = emitted(&mut server);
    assert_eq!(acks.len(), 1);
    assert_eq!(
        acks[0].0,
        SegmentHeader {
            wnd: 65534,
            sn: 1,
            una: 2,
            ..want
        }
    );
    got.clear();
    assert_eq!(server.recv(&mut got, 1 << 16), 23);
    assert_eq!(got, SMUX_PSH);

    // The duplicate retransmission is ignored (nothing new to read), and re-acknowledged:
    // kcp-go sends only ACKs at or above rcv_nxt plus the last one, so one ACK for sn=1.
    let before = server.stats();
    server.input(&up_retransmission(), now + 300).unwrap();
    assert_eq!(server.readable(), 0);
    assert_eq!(
        server.stats().duplicate_segments,
        before.duplicate_segments + 2
    );
    server.update(now + 300);
    let acks = emitted(&mut server);
    assert_eq!(acks.len(), 1);
    assert_eq!(
        acks[0].0,
        SegmentHeader {
            wnd: 65535,
            ts: 1294,
            sn: 1,
            una: 2,
            ..want
        }
    );
    assert_eq!(server.stats().datagrams_rejected, 0);
}

#[test]
fn kcp_spec_5_2_default_config_bounds_the_window() {
    let mut server = Kcp::new(0xeb06_3f3c, KcpConfig::default());
    server.input(&UP_SYN, 1).unwrap();
    server.update(1);
    let acks = emitted(&mut server);
    // min(65535 - 1, (2 MiB - (8 + 32)) / (1376 + 32)) = 1489.
    assert_eq!(acks[0].0.wnd, 1489);
    assert_eq!((acks[0].0.sn, acks[0].0.una, acks[0].0.ts), (0, 1, 1094));
}

/// Run C downstream: ACK for the client's sn=0 and the server's first PUSH.
const DOWN_ACK: [u8; 24] = hex!("6fd96abf 52 00 ffff 45040000 00000000 01000000 00000000");
const DOWN_PUSH: [u8; 52] = hex!(
    "6fd96abf 51 00 ffff d92e0000 00000000 02000000 1c000000"
    "02 02 1400 03000000 4543484f3a48454c4c4f2d534e4f57464c414b45"
);

#[test]
fn kcp_spec_5_2_downstream_client_side() {
    assert_eq!(&DOWN_PUSH[24 + 8..], b"ECHO:HELLO-SNOWFLAKE");
    let conv = 0xbf6a_d96f;
    let mut client = Kcp::new(conv, unbounded());
    // The client's own two segments (SYN, then PSH), flushed separately as in run C.
    assert_eq!(client.send(&SMUX_SYN), 8);
    client.update(1093);
    assert_eq!(client.send(&SMUX_PSH), 23);
    client.update(1094);
    let sent = emitted(&mut client);
    assert_eq!(
        sent.iter().map(|(h, _)| (h.cmd, h.sn)).collect::<Vec<_>>(),
        [(CMD_PUSH, 0), (CMD_PUSH, 1)]
    );
    assert_eq!(client.waitsnd(), 2);

    client.input(&DOWN_ACK, 1200).unwrap();
    // sn 0 acknowledged (kept, marked, until una passes it) ...
    assert_eq!(client.send_memory(), 23);
    client.input(&DOWN_PUSH, 1210).unwrap();
    // ... una=2 acknowledges everything.
    assert_eq!(client.waitsnd(), 0);
    // The window slid, so kcp-go flushes inside Input: the reply the real client sent, an ACK
    // sn=0 una=1 echoing ts 11993, goes out at once (wnd: one segment still unread).
    let out = emitted(&mut client);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].0,
        SegmentHeader {
            conv,
            cmd: CMD_ACK,
            frg: 0,
            wnd: 65534,
            ts: 11993,
            sn: 0,
            una: 1,
            len: 0
        }
    );
    let mut got = Vec::new();
    assert_eq!(client.recv(&mut got, 1 << 16), 28);
    assert_eq!(got, DOWN_PUSH[24..]);
    client.update(1220);
    assert!(emitted(&mut client).is_empty());
    // smux then answers with its UPD, which goes out as PUSH sn=2.
    client.send(&hex!("02 04 0800 03000000 14000000 00001000"));
    client.update(1221);
    let out = emitted(&mut client);
    assert_eq!(
        (out[0].0.cmd, out[0].0.sn, out[0].0.una, out[0].0.len),
        (CMD_PUSH, 2, 1, 16)
    );
}

#[test]
fn kcp_stream_mode_coalesces_and_packs_datagrams() {
    let mut k = Kcp::new(1, KcpConfig::default());
    // Small writes before a flush share one segment (kcp.go: KCP.Send, stream mode).
    for _ in 0..3 {
        assert_eq!(k.send(b"ab"), 2);
    }
    assert_eq!(k.waitsnd(), 1);
    // A large write is cut at the MSS (1400 - 24), topping up the last segment first.
    assert_eq!(k.send(&[7u8; 5000]), 5000);
    assert_eq!(k.waitsnd(), 4);
    k.update(0);
    let mut sizes = Vec::new();
    while let Some(d) = k.poll_transmit() {
        assert!(d.len() <= 1400);
        sizes.push(d.len());
    }
    // 5006 bytes = 1376 + 1376 + 1376 + 878: a full segment fills a datagram exactly.
    assert_eq!(sizes, [1400, 1400, 1400, 878 + 24]);

    // Many ACKs share datagrams: 58 headers (1392 bytes) per 1400-byte datagram.
    let mut peer = Kcp::new(1, KcpConfig::default());
    let mut d = Vec::new();
    for sn in (0..100u32).rev() {
        SegmentHeader {
            conv: 1,
            cmd: CMD_PUSH,
            wnd: 100,
            sn,
            ..SegmentHeader::default()
        }
        .encode(&mut d);
        if d.len() > 1300 {
            peer.input(&d, 0).unwrap();
            d.clear();
        }
    }
    peer.input(&d, 0).unwrap();
    // Only ACKs at or above rcv_nxt (100 after all arrived) and the last are sent: 1.
    peer.update(1);
    assert_eq!(emitted(&mut peer).len(), 1);
    // Out of order with a gap: every ACK is at or above rcv_nxt = 0.
    let mut peer = Kcp::new(1, KcpConfig::default());
    for sn in 1..=100u32 {
        let mut d = Vec::new();
        SegmentHeader {
            conv: 1,
            cmd: CMD_PUSH,
            wnd: 100,
            sn,
            ..SegmentHeader::default()
        }
        .encode(&mut d);
        peer.input(&d, 0).unwrap();
    }
    peer.update(1);
    let mut sizes = Vec::new();
    while let Some(d) = peer.poll_transmit() {
        sizes.push(d.len());
    }
    assert_eq!(sizes, [58 * 24, 42 * 24]);
}
