//! `-mode transparent-UDP` and `-mode STUN` through real dispatchers (client and server,
//! in-process) over `plain` and `websocket`: many peers, both directions, byte-exact;
//! shapeshifter's one-way little-endian framing; bad `udp-*` options. Spec §1.3.4.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod udp_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ptkit_udp::stun::{self, Builder, Class, Message, attr, method};
use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;
use udp_support::{Dispatcher, ask, echo, pair};

/// `peers` local sockets, each exchanging `n` datagrams of varied sizes with the echo target,
/// concurrently; every answer must be byte-exact and come back `copies` times.
async fn many_peers(client: SocketAddr, peers: usize, n: usize, copies: usize) {
    let mut tasks = Vec::new();
    for p in 0..peers {
        tasks.push(tokio::spawn(async move {
            let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut buf = vec![0u8; 65536];
            for i in 0..n {
                let size = [1, 17, 1200, 1472, 8000, 65000][(i + p) % 6];
                let d: Vec<u8> = (0..size).map(|k| (k * 31 + i * 7 + p) as u8).collect();
                let got = ask(&s, client, &d).await;
                assert_eq!(got, d, "peer {p} datagram {i}");
                for _ in 1..copies {
                    let (m, _) =
                        tokio::time::timeout(Duration::from_secs(5), s.recv_from(&mut buf))
                            .await
                            .expect("copy missing")
                            .unwrap();
                    assert_eq!(&buf[..m], &d[..]);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_3_4_transparent_udp_plain_many_peers_both_directions() {
    // Two answers per datagram: the server side relays whatever the target sends back.
    let target = echo(2).await;
    let (_s, c, client) = pair("plain", "transparent-UDP", target, None, None).await;
    assert!(
        c.out
            .text()
            .contains("CMETHOD plain transparent-UDP 127.0.0.1:")
    );
    many_peers(client, 32, 12, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_3_4_transparent_udp_websocket() {
    let target = echo(1).await;
    let (_s, _c, client) = pair("websocket", "transparent-UDP", target, None, None).await;
    many_peers(client, 8, 6, 1).await;
}

/// A STUN Binding server as the target (the STUN flavour: raw STUN over the transport).
async fn stun_target() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let a = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut t = ptkit_udp::TurnServer::new(ptkit_udp::TurnConfig::default(), 7, Instant::now());
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            for o in t.handle(from, &buf[..n], Instant::now()) {
                if let ptkit_udp::turn::Output::Reply(b) = o {
                    let _ = s.send_to(&b, from).await;
                }
            }
        }
    });
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_3_4_stun_mode_plain_binding_requests() {
    let target = stun_target().await;
    let (_s, c, client) = pair("plain", "STUN", target, None, None).await;
    assert!(c.out.text().contains("CMETHOD plain STUN 127.0.0.1:"));
    let mut tasks = Vec::new();
    for p in 0..16u8 {
        tasks.push(tokio::spawn(async move {
            let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            for i in 0..8u8 {
                let txid = [p, i, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
                let req = Builder::new(method::BINDING, Class::Request, txid)
                    .attr(attr::SOFTWARE, &vec![b'x'; usize::from(i) * 3])
                    .finish(None, true);
                let r = Message::parse(&ask(&s, client, &req).await).unwrap();
                assert_eq!(
                    (r.method, r.class, r.transaction_id),
                    (method::BINDING, Class::Success, txid)
                );
                // The mapped address is the server side's UDP socket (the transport's exit).
                assert!(r.xor_address(attr::XOR_MAPPED_ADDRESS).unwrap().is_some());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Non-STUN datagrams are not carried in STUN mode.
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(b"definitely not a STUN message", client)
        .await
        .unwrap();
    let mut buf = [0u8; 100];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.recv_from(&mut buf))
            .await
            .is_err()
    );
    let _ = stun::MAGIC_COOKIE;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shapeshifter_one_way_little_endian_compat() {
    // The target records what arrives; the server must not answer through the transport.
    let target = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let taddr = target.local_addr().unwrap().to_string();
    let server = Dispatcher::start(&[
        "-ptversion",
        "3.0",
        "-server",
        "-transports",
        "plain",
        "-bindaddr",
        "plain-127.0.0.1:0",
        "-target",
        &taddr,
        "-mode",
        "transparent-UDP",
        "-options",
        r#"{"udp-framing":"shapeshifter"}"#,
    ]);
    let saddr = server.addr("SMETHOD", "plain").await;
    // A shapeshifter-dispatcher client: `[6 0]` then 6 bytes (issue #31), in separate writes.
    let mut tcp = tokio::net::TcpStream::connect(saddr).await.unwrap();
    tcp.write_all(&[6, 0]).await.unwrap();
    tcp.write_all(b"abcdef").await.unwrap();
    tcp.write_all(&[3, 0, b'x', b'y', b'z']).await.unwrap();
    let mut buf = [0u8; 100];
    let (n, from) = target.recv_from(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"abcdef");
    let (n, _) = target.recv_from(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"xyz");
    // A reply is dropped by the server: nothing comes back on the TCP stream.
    target.send_to(b"reply", from).await.unwrap();
    let mut rbuf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_millis(300),
        tokio::io::AsyncReadExt::read(&mut tcp, &mut rbuf),
    )
    .await;
    assert!(read.is_err(), "one-way: no reply expected, got {read:?}");
    // And the client side speaks it too, end to end.
    let echo_t = echo(1).await;
    let (_s, _c, client) = pair(
        "plain",
        "transparent-UDP",
        echo_t,
        Some(r#"{"udp-framing":"shapeshifter"}"#),
        Some(r#"{"udp-framing":"shapeshifter"}"#),
    )
    .await;
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(b"one way", client).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.recv_from(&mut buf))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_options_are_validated() {
    let c = Dispatcher::start(&[
        "-ptversion",
        "3.0",
        "-client",
        "-transports",
        "plain",
        "-target",
        "127.0.0.1:1",
        "-mode",
        "transparent-UDP",
        "-options",
        r#"{"udp-max-peers":"0"}"#,
    ]);
    // PT 2.x/3.0: *-ERROR lines go to stderr (§1.3.2).
    let _ = c.line("CMETHODS DONE").await;
    let e = c.err.text();
    assert!(
        e.starts_with("CMETHOD-ERROR plain ") && e.contains("udp-max-peers"),
        "{e}"
    );
    let c = Dispatcher::start(&[
        "-ptversion",
        "3.0",
        "-client",
        "-transports",
        "plain",
        "-target",
        "127.0.0.1:1",
        "-mode",
        "STUN",
        "-options",
        r#"{"udp-framing":"shapeshifter"}"#,
    ]);
    let _ = c.line("CMETHODS DONE").await;
    assert!(
        c.err.text().contains("CMETHOD-ERROR plain"),
        "{}",
        c.err.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_peers_are_closed_and_peer_table_is_bounded() {
    let target = echo(1).await;
    let (_s, _c, client) = pair(
        "plain",
        "transparent-UDP",
        target,
        None,
        Some(r#"{"udp-max-peers":"2","udp-idle-timeout":"1"}"#),
    )
    .await;
    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let third = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(ask(&a, client, b"a").await, b"a");
    assert_eq!(ask(&b, client, b"b").await, b"b");
    // Table full: the third peer gets nothing.
    third.send_to(b"c", client).await.unwrap();
    let mut buf = [0u8; 8];
    assert!(
        tokio::time::timeout(Duration::from_millis(400), third.recv_from(&mut buf))
            .await
            .is_err()
    );
    // After the idle timeout the slots free up.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(ask(&third, client, b"c").await, b"c");
}
