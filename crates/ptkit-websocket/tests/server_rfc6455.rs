//! Our server against hand-made frames over TCP: the proposal's vectors, RFC 6455 edge cases
//! and the close code each violation produces.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use hex_literal::hex;
use ptkit_core::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn opts(pairs: &[(&str, &str)]) -> Args {
    pairs.iter().map(|(k, v)| (*k, *v)).collect()
}

/// Proposal "The base64 subprotocol": one text frame `0x81 0x08 "SGVsbG8="`. Our echo answers
/// with exactly that frame (servers do not mask).
#[tokio::test]
async fn proposal_base64_hello_single_frame() {
    bounded(async {
        let srv = echo_server(Args::new()).await;
        let mut c = raw_ws(srv.addr, true).await;
        assert!(
            c.response
                .to_ascii_lowercase()
                .contains("sec-websocket-protocol: base64")
        );
        c.send(&masked(true, 1, b"SGVsbG8=")).await;
        let f = c.frame().await.unwrap();
        let mut wire = vec![0x81, 0x08];
        wire.extend_from_slice(&f.payload);
        assert_eq!(wire, b"\x81\x08SGVsbG8=");
        assert!(f.fin && !f.masked);
    })
    .await;
}

/// Proposal: the same message in two frames, `0x01 0x02 "SG"` then `0x81 0x06 "VsbG8="`
/// (the proposal prints "sbG8=", dropping the "V"; see `proto` tests).
#[tokio::test]
async fn proposal_base64_hello_two_frames() {
    bounded(async {
        let srv = echo_server(Args::new()).await;
        let mut c = raw_ws(srv.addr, true).await;
        let mut wire = masked(false, 1, b"SG");
        wire.extend(masked(true, 0, b"VsbG8="));
        c.send(&wire).await;
        let f = c.frame().await.unwrap();
        assert_eq!((f.opcode, f.payload.as_slice()), (1, &b"SGVsbG8="[..]));
    })
    .await;
}

/// Proposal: the masked example with key 0x12345678.
///
/// Erratum: the proposal prints the second byte as `0x18`, which is "not masked, length 24";
/// with the mask bit and length 8 it must be `0x88`. With `0x88` the frame is "Hello"; the
/// printed `0x18` makes it an unmasked client frame, which a server must refuse with 1002.
#[tokio::test]
async fn proposal_masked_example_and_its_erratum() {
    bounded(async {
        let srv = echo_server(Args::new()).await;
        let mut c = raw_ws(srv.addr, true).await;
        c.send(&hex!("81 88 12 34 56 78 41 73 00 0b 70 73 6e 45"))
            .await;
        let f = c.frame().await.unwrap();
        assert_eq!(f.payload, b"SGVsbG8=");
        // Our own encoder produces the same bytes.
        assert_eq!(
            masked(true, 1, b"SGVsbG8="),
            hex!("81 88 12 34 56 78 41 73 00 0b 70 73 6e 45")
        );

        let mut c = raw_ws(srv.addr, true).await;
        let mut printed = hex!("81 18 12 34 56 78 41 73 00 0b 70 73 6e 45").to_vec();
        printed.extend_from_slice(&[0; 16]);
        c.send(&printed).await;
        assert_eq!(c.close_code().await, 1002);
    })
    .await;
}

/// Proposal: binary frames (opcode 2) carry the bytes; boundaries are meaningless.
#[tokio::test]
async fn proposal_binary_stream_reassembly() {
    bounded(async {
        let srv = echo_server(Args::new()).await;
        let mut c = raw_ws(srv.addr, false).await;
        let mut wire = masked(false, 2, b"abc");
        wire.extend(masked(false, 0, b""));
        wire.extend(masked(true, 9, b"ping-in-between"));
        wire.extend(masked(true, 0, b"def"));
        c.send(&wire).await;
        // One Pong for the Ping, and the data "abcdef".
        let mut got = Vec::new();
        let mut pongs = 0;
        while got.len() < 6 {
            let f = c.frame().await.unwrap();
            match f.opcode {
                10 => {
                    assert_eq!(f.payload, b"ping-in-between");
                    pongs += 1;
                }
                2 => got.extend(f.payload),
                o => panic!("opcode {o}"),
            }
        }
        assert_eq!(got, b"abcdef");
        raw_roundtrip(&mut c, b"after").await;
        assert_eq!(pongs, 1);
    })
    .await;
}

/// Proposal "SHOULD respond to Ping frames with a single Pong frame".
#[tokio::test]
async fn proposal_each_ping_one_pong() {
    bounded(async {
        let srv = echo_server(Args::new()).await;
        let mut c = raw_ws(srv.addr, false).await;
        for i in 0..3u8 {
            c.send(&masked(true, 9, &[i; 5])).await;
            let f = c.frame().await.unwrap();
            assert_eq!((f.opcode, f.payload), (10, vec![i; 5]));
        }
        // No extra Pong is pending: the next frame is the echo.
        raw_roundtrip(&mut c, b"x").await;
    })
    .await;
}

async fn expect_close(options: Args, base64: bool, wire: Vec<u8>, code: u16) {
    let srv = echo_server(options).await;
    let mut c = raw_ws(srv.addr, base64).await;
    c.send(&wire).await;
    assert_eq!(c.close_code().await, code, "wire {wire:02x?}");
    c.expect_eof().await;
}

/// RFC 6455 §5.1: a server MUST close on an unmasked client frame (1002).
#[tokio::test]
async fn rfc6455_5_1_unmasked_client_frame_1002() {
    bounded(expect_close(
        Args::new(),
        false,
        frame(true, 0, 2, None, b"hi"),
        1002,
    ))
    .await;
}

/// RFC 6455 §5.2: non-zero reserved bits without an extension → 1002.
#[tokio::test]
async fn rfc6455_5_2_reserved_bits_1002() {
    for rsv in [1, 2, 4] {
        bounded(expect_close(
            Args::new(),
            false,
            frame(true, rsv, 2, Some([1, 2, 3, 4]), b"hi"),
            1002,
        ))
        .await;
    }
}

/// RFC 6455 §5.2: reserved opcodes 3-7 and 11-15 → 1002.
#[tokio::test]
async fn rfc6455_5_2_reserved_opcodes_1002() {
    for op in [3, 7, 11, 15] {
        bounded(expect_close(
            Args::new(),
            false,
            masked(true, op, b""),
            1002,
        ))
        .await;
    }
}

/// RFC 6455 §5.4: a continuation frame with no message started → 1002.
#[tokio::test]
async fn rfc6455_5_4_continuation_without_start_1002() {
    bounded(expect_close(
        Args::new(),
        false,
        masked(true, 0, b"x"),
        1002,
    ))
    .await;
}

/// RFC 6455 §5.4: a new data frame while a fragmented message is open → 1002.
#[tokio::test]
async fn rfc6455_5_4_new_message_inside_fragmented_1002() {
    let mut wire = masked(false, 2, b"a");
    wire.extend(masked(true, 2, b"b"));
    bounded(expect_close(Args::new(), false, wire, 1002)).await;
}

/// RFC 6455 §5.5: control frames must not be fragmented → 1002.
#[tokio::test]
async fn rfc6455_5_5_fragmented_control_frame_1002() {
    bounded(expect_close(
        Args::new(),
        false,
        masked(false, 9, b"p"),
        1002,
    ))
    .await;
}

/// RFC 6455 §5.5: control frame payloads are at most 125 bytes → 1002.
#[tokio::test]
async fn rfc6455_5_5_control_payload_over_125_1002() {
    bounded(expect_close(
        Args::new(),
        false,
        masked(true, 9, &[0; 126]),
        1002,
    ))
    .await;
}

/// RFC 6455 §7.4: close codes that must not appear on the wire (1005, 1006, 1015, < 1000,
/// 1016-2999, ≥ 5000) and a 1-byte close payload → 1002.
#[tokio::test]
async fn rfc6455_7_4_invalid_close_codes_1002() {
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        bounded(expect_close(
            Args::new(),
            false,
            masked(true, 8, &close_payload(code, "")),
            1002,
        ))
        .await;
    }
    bounded(expect_close(
        Args::new(),
        false,
        masked(true, 8, &[3]),
        1002,
    ))
    .await;
}

/// RFC 6455 §5.5.1 / §7.1: a Close is answered with a Close carrying the same code, then
/// the server closes TCP; valid application codes are accepted.
#[tokio::test]
async fn rfc6455_7_1_close_handshake_echoes_code() {
    for code in [1000u16, 1001, 3000, 4999] {
        bounded(expect_close(
            Args::new(),
            false,
            masked(true, 8, &close_payload(code, "bye")),
            code,
        ))
        .await;
    }
    // An empty close is answered with an empty close.
    bounded(expect_close(Args::new(), false, masked(true, 8, b""), 1005)).await;
}

/// RFC 6455 §8.1: invalid UTF-8 in a text message → 1007 (even under base64).
#[tokio::test]
async fn rfc6455_8_1_invalid_utf8_text_1007() {
    bounded(expect_close(
        Args::new(),
        true,
        masked(true, 1, b"SGVs\xff\xfe"),
        1007,
    ))
    .await;
}

/// Proposal: text without the base64 subprotocol MUST close (we use 1003, unsupported data).
#[tokio::test]
async fn proposal_text_without_base64_1003() {
    bounded(expect_close(
        Args::new(),
        false,
        masked(true, 1, b"SGVsbG8="),
        1003,
    ))
    .await;
}

/// Proposal: a text message that cannot be decoded as base64 MUST close (1007).
#[tokio::test]
async fn proposal_bad_base64_1007() {
    for bad in [&b"SGVs bG8="[..], b"SG==SGVs", b"S", b"SGVsbG8=\n"] {
        bounded(expect_close(Args::new(), true, masked(true, 1, bad), 1007)).await;
    }
    // Padding at the end of a frame that is not the end of the message.
    let mut wire = masked(false, 1, b"SGU=");
    wire.extend(masked(true, 0, b"SGVs"));
    bounded(expect_close(Args::new(), true, wire, 1007)).await;
}

/// Proposal: frame above the limit → close 1009 (limit 1500, the minimum).
#[tokio::test]
async fn proposal_oversize_frame_1009() {
    let o = opts(&[("max-message", "1500")]);
    bounded(expect_close(
        o.clone(),
        false,
        masked(true, 2, &[7; 1501]),
        1009,
    ))
    .await;
    // Exactly the limit passes.
    bounded(async {
        let srv = echo_server(o).await;
        let mut c = raw_ws(srv.addr, false).await;
        raw_roundtrip(&mut c, &[7; 1500]).await;
    })
    .await;
}

/// Proposal: "the sum of the length of already-buffered data and the length of the next
/// frame exceeds the limit" → 1009 (tokio-websockets reports this one without a close frame;
/// our adapter sends it).
#[tokio::test]
async fn proposal_oversize_reassembled_message_1009() {
    let mut wire = masked(false, 2, &[1; 1000]);
    wire.extend(masked(true, 0, &[2; 501]));
    bounded(expect_close(
        opts(&[("max-message", "1500")]),
        false,
        wire,
        1009,
    ))
    .await;
}

/// In base64 mode the limit is on decoded bytes: 1500 bytes as 2000 characters of text pass,
/// in one frame or fragmented; 1501 bytes (2004 characters) close with 1009.
#[tokio::test]
async fn proposal_base64_limit_on_decoded_size_1009() {
    let o = opts(&[("max-message", "1500")]);
    let ok = ptkit_websocket::proto::encode_base64(&[9; 1500]);
    assert_eq!(ok.len(), 2000);
    bounded(async {
        let srv = echo_server(o.clone()).await;
        let mut c = raw_ws(srv.addr, true).await;
        c.send(&masked(true, 1, ok.as_bytes())).await;
        let echoed = c.data(2000).await;
        assert_eq!(echoed, ok.as_bytes());
        let (a, b) = ok.as_bytes().split_at(999);
        let mut wire = masked(false, 1, a);
        wire.extend(masked(true, 0, b));
        c.send(&wire).await;
        assert_eq!(c.data(2000).await, ok.as_bytes());
    })
    .await;
    let big = ptkit_websocket::proto::encode_base64(&[9; 1501]);
    bounded(expect_close(
        o.clone(),
        true,
        masked(true, 1, big.as_bytes()),
        1009,
    ))
    .await;
    // A binary message on a base64 connection is held to the decoded limit too.
    bounded(expect_close(o, true, masked(true, 2, &[0; 1501]), 1009)).await;
}

/// RFC 6455 §4.2.2 / §4.4: version other than 13 → 426 with `Sec-WebSocket-Version: 13`.
#[tokio::test]
async fn rfc6455_4_4_version_8_gets_426() {
    bounded(async {
        let srv = echo_server(Args::new()).await;
        let c = raw_request(srv.addr, "/", "Sec-WebSocket-Version: 8\r\n").await;
        let r = c.response.to_ascii_lowercase();
        assert!(r.starts_with("http/1.1 426"), "{r}");
        assert!(r.contains("sec-websocket-version: 13"), "{r}");
        let c = raw_request(srv.addr, "/", "").await;
        assert!(c.response.starts_with("HTTP/1.1 426"), "{}", c.response);
    })
    .await;
}

/// A configured path upgrades only that path (404 elsewhere); the default is any path.
#[tokio::test]
async fn server_path_option_404() {
    bounded(async {
        let srv = echo_server(opts(&[("path", "/ws")])).await;
        let v13 = "Sec-WebSocket-Version: 13\r\n";
        let c = raw_request(srv.addr, "/other", v13).await;
        assert!(c.response.starts_with("HTTP/1.1 404"), "{}", c.response);
        let c = raw_request(srv.addr, "/ws?client_ip=192.0.2.2", v13).await;
        assert!(c.response.starts_with("HTTP/1.1 101"), "{}", c.response);
        let srv = echo_server(Args::new()).await;
        let c = raw_request(srv.addr, "/any/thing", v13).await;
        assert!(c.response.starts_with("HTTP/1.1 101"), "{}", c.response);
    })
    .await;
}

/// Client address: `client_ip` (Snowflake rule, port 1), forwarding headers only from a
/// trusted proxy, else the TCP peer.
#[tokio::test]
async fn server_client_addr_sources() {
    bounded(async {
        let v13 = "Sec-WebSocket-Version: 13\r\n";
        let mut srv = echo_server(Args::new()).await;
        let _c = raw_request(srv.addr, "/?client_ip=192.0.2.2", v13).await;
        let m = srv.metas.recv().await.unwrap();
        assert_eq!(m.client_addr, Some("192.0.2.2:1".parse().unwrap()));
        let _c = raw_request(srv.addr, "/?client_ip=2001%3Adb8%3A%3A1", v13).await;
        let m = srv.metas.recv().await.unwrap();
        assert_eq!(m.client_addr, Some("[2001:db8::1]:1".parse().unwrap()));
        let c = raw_request(
            srv.addr,
            "/?client_ip=0.0.0.0",
            "Sec-WebSocket-Version: 13\r\nX-Forwarded-For: 203.0.113.5\r\n",
        )
        .await;
        let m = srv.metas.recv().await.unwrap();
        assert_eq!(m.client_addr, Some(c.tcp.local_addr().unwrap()));

        let mut srv = echo_server(opts(&[("trusted-proxies", "127.0.0.0/8")])).await;
        let _c = raw_request(
            srv.addr,
            "/",
            "Sec-WebSocket-Version: 13\r\nX-Forwarded-For: 203.0.113.5, 127.0.0.9\r\n",
        )
        .await;
        let m = srv.metas.recv().await.unwrap();
        assert_eq!(m.client_addr, Some("203.0.113.5:1".parse().unwrap()));
        let _c = raw_request(
            srv.addr,
            "/",
            "Sec-WebSocket-Version: 13\r\nForwarded: for=\"[2001:db8::7]:4711\"\r\n",
        )
        .await;
        let m = srv.metas.recv().await.unwrap();
        assert_eq!(m.client_addr, Some("[2001:db8::7]:4711".parse().unwrap()));

        let mut srv = echo_server(opts(&[("client-ip", "0")])).await;
        let c = raw_request(srv.addr, "/?client_ip=192.0.2.2", v13).await;
        let m = srv.metas.recv().await.unwrap();
        assert_eq!(m.client_addr, Some(c.tcp.local_addr().unwrap()));
    })
    .await;
}

/// Slowloris: a client dribbling its headers is cut off after the handshake timeout, and the
/// request head is capped (431 above `max-header-bytes`).
#[tokio::test]
async fn server_slow_headers_and_header_cap() {
    bounded(async {
        let srv = echo_server(opts(&[("handshake-timeout", "1")])).await;
        let mut tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        let start = Instant::now();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let (mut rd, mut wr) = tcp.into_split();
        let dribble = tokio::spawn(async move {
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if wr.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return;
                }
            }
        });
        let mut b = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut b))
            .await
            .expect("slow client never cut off");
        let took = start.elapsed();
        dribble.abort();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "cut off after {took:?}"
        );
        assert!(!String::from_utf8_lossy(&b).contains(" 101 "));

        let big = format!(
            "Sec-WebSocket-Version: 13\r\nX-Big: {}\r\n",
            "a".repeat(20_000)
        );
        let mut tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        let req = format!("GET / HTTP/1.1\r\nHost: x\r\n{big}\r\n");
        let _ = tcp.write_all(req.as_bytes()).await;
        let mut b = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut b)).await;
        let text = String::from_utf8_lossy(&b);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 431"),
            "{text}"
        );
        assert!(!text.contains(" 101 "));
    })
    .await;
}

/// Each kind of bad input closes THAT connection with its code while a concurrent good
/// connection keeps echoing.
#[tokio::test]
async fn isolation_bad_input_closes_only_that_connection() {
    bounded(async {
        let srv = echo_server(opts(&[("max-message", "1500"), ("handshake-timeout", "1")])).await;
        let mut good = raw_ws(srv.addr, false).await;
        raw_roundtrip(&mut good, b"start").await;
        let cases: Vec<(&str, bool, Vec<u8>, u16)> = vec![
            ("unmasked", false, frame(true, 0, 2, None, b"x"), 1002),
            ("text without base64", false, masked(true, 1, b"SGk="), 1003),
            ("bad base64", true, masked(true, 1, b"!!!!"), 1007),
            ("oversize", false, masked(true, 2, &[0; 2000]), 1009),
        ];
        for (what, b64, wire, code) in cases {
            let mut bad = raw_ws(srv.addr, b64).await;
            bad.send(&wire).await;
            assert_eq!(bad.close_code().await, code, "{what}");
            raw_roundtrip(&mut good, what.as_bytes()).await;
        }
        // Broken handshake: garbage instead of HTTP.
        let mut tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        tcp.write_all(b"\x16\x03\x01 not http\r\n\r\n")
            .await
            .unwrap();
        let mut b = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut b)).await;
        assert!(!String::from_utf8_lossy(&b).contains(" 101 "));
        raw_roundtrip(&mut good, b"after garbage").await;
        // Slow headers: cut off after 1 s; the good connection is unaffected meanwhile.
        let mut slow = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        let start = Instant::now();
        slow.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        raw_roundtrip(&mut good, b"while slow").await;
        let mut b = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut b))
            .await
            .expect("slow client not cut off");
        assert!(start.elapsed() >= Duration::from_millis(900));
        assert!(!String::from_utf8_lossy(&b).contains(" 101 "));
        raw_roundtrip(&mut good, b"end").await;
    })
    .await;
}

/// A peer that floods Pings and never reads gets backpressure: the server stops reading
/// once its Pongs cannot be written, instead of queueing Pongs without bound.
#[tokio::test]
async fn ping_flood_without_reading_is_backpressured() {
    bounded(async {
        let srv = echo_server(Args::new()).await;
        let c = raw_ws(srv.addr, false).await;
        let (_rd, mut wr) = c.tcp.into_split();
        let ping = masked(true, 9, &[0x55; 125]);
        let batch: Vec<u8> = ping
            .iter()
            .copied()
            .cycle()
            .take(ping.len() * 512)
            .collect();
        let mut written = 0usize;
        let mut blocked = false;
        while written < 256 * 1024 * 1024 {
            match tokio::time::timeout(Duration::from_secs(2), wr.write_all(&batch)).await {
                Ok(Ok(())) => written += batch.len(),
                Ok(Err(e)) => panic!("write failed: {e}"),
                Err(_) => {
                    blocked = true;
                    break;
                }
            }
        }
        assert!(blocked, "server kept reading {written} bytes of pings");
        // Another connection is unaffected.
        let mut good = raw_ws(srv.addr, false).await;
        raw_roundtrip(&mut good, b"still fine").await;
    })
    .await;
}
