//! The TURN front end (RFC 5766) of the dispatcher's client in transparent-UDP mode
//! (`udp-turn-users`): our own client through it over `plain`, error codes on the wire, and
//! Debian coturn's `turnutils_uclient` allocating through it and exchanging datagrams with
//! `turnutils_peer` across the transport.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod udp_support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use ptkit_udp::stun::{Builder, Class, Message, attr, channel_data, long_term_key, method};
use tokio::net::UdpSocket;
use udp_support::{echo, pair, skip};

const TURN_OPTS: &str = r#"{"udp-turn-users":"user:pass","udp-turn-realm":"ptkit.test"}"#;

async fn call(s: &UdpSocket, to: SocketAddr, req: &[u8]) -> Message {
    let mut buf = vec![0u8; 65536];
    s.send_to(req, to).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), s.recv_from(&mut buf))
        .await
        .expect("no TURN answer")
        .unwrap();
    Message::parse(&buf[..n]).unwrap()
}

fn code(m: &Message) -> u16 {
    m.error_code().unwrap().map(|c| c.0).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_front_end_over_plain_send_data_channels_and_errors() {
    let peer = echo(1).await;
    let (_s, _c, turn) = pair("plain", "transparent-UDP", peer, None, Some(TURN_OPTS)).await;
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut n = 0u8;
    let mut tx = || {
        n += 1;
        [n; 12]
    };
    // Unauthenticated Allocate: 401 with REALM and NONCE.
    let r = call(
        &s,
        turn,
        &Builder::new(method::ALLOCATE, Class::Request, tx())
            .attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .finish(None, true),
    )
    .await;
    assert_eq!(code(&r), 401);
    assert_eq!(r.text(attr::REALM, 763).unwrap(), Some("ptkit.test"));
    let nonce = r.text(attr::NONCE, 763).unwrap().unwrap().to_owned();
    let key = long_term_key("user", "ptkit.test", "pass");
    let signed = |m: u16, id: [u8; 12], nonce: &str, f: &dyn Fn(Builder) -> Builder| {
        f(Builder::new(m, Class::Request, id)
            .attr(attr::USERNAME, b"user")
            .attr(attr::REALM, b"ptkit.test")
            .attr(attr::NONCE, nonce.as_bytes()))
        .finish(Some(&key), true)
    };
    // 437 before any allocation; 438 with a made-up nonce; 401 with a wrong password.
    let r = call(&s, turn, &signed(method::REFRESH, tx(), &nonce, &|b| b)).await;
    assert_eq!(code(&r), 437);
    let r = call(
        &s,
        turn,
        &signed(method::ALLOCATE, tx(), "stale", &|b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        }),
    )
    .await;
    assert_eq!(code(&r), 438);
    let bad_key = long_term_key("user", "ptkit.test", "wrong");
    let wrong = Builder::new(method::ALLOCATE, Class::Request, tx())
        .attr(attr::USERNAME, b"user")
        .attr(attr::REALM, b"ptkit.test")
        .attr(attr::NONCE, nonce.as_bytes())
        .attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .finish(Some(&bad_key), true);
    assert_eq!(code(&call(&s, turn, &wrong).await), 401);
    // 400: Allocate without REQUESTED-TRANSPORT; a broken length field.
    let r = call(&s, turn, &signed(method::ALLOCATE, tx(), &nonce, &|b| b)).await;
    assert_eq!(code(&r), 400);
    let mut broken = signed(method::ALLOCATE, tx(), &nonce, &|b| b);
    broken[3] = broken[3].wrapping_add(4);
    assert_eq!(code(&call(&s, turn, &broken).await), 400);
    // The allocation.
    let r = call(
        &s,
        turn,
        &signed(method::ALLOCATE, tx(), &nonce, &|b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        }),
    )
    .await;
    assert_eq!(r.class, Class::Success, "{:?}", r.error_code());
    assert!(r.verify_integrity(&key));
    assert!(r.xor_address(attr::XOR_RELAYED_ADDRESS).unwrap().is_some());
    assert_eq!(
        r.xor_address(attr::XOR_MAPPED_ADDRESS).unwrap(),
        Some(s.local_addr().unwrap())
    );
    // Permission, then Send → the echo peer → Data indication.
    let r = call(
        &s,
        turn,
        &signed(method::CREATE_PERMISSION, tx(), &nonce, &|b| {
            b.xor_address(attr::XOR_PEER_ADDRESS, peer)
        }),
    )
    .await;
    assert_eq!(r.class, Class::Success);
    for i in 0..20u8 {
        let data = vec![i; 100 + usize::from(i) * 50];
        let send = Builder::new(method::SEND, Class::Indication, tx())
            .xor_address(attr::XOR_PEER_ADDRESS, peer)
            .attr(attr::DATA, &data)
            .finish(None, false);
        let d = call(&s, turn, &send).await;
        assert_eq!((d.method, d.class), (method::DATA, Class::Indication));
        assert_eq!(d.xor_address(attr::XOR_PEER_ADDRESS).unwrap(), Some(peer));
        assert_eq!(d.get(attr::DATA), Some(&data[..]));
    }
    // A channel: ChannelData both ways.
    let r = call(
        &s,
        turn,
        &signed(method::CHANNEL_BIND, tx(), &nonce, &|b| {
            b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x10, 0, 0])
                .xor_address(attr::XOR_PEER_ADDRESS, peer)
        }),
    )
    .await;
    assert_eq!(r.class, Class::Success);
    let mut buf = vec![0u8; 65536];
    for i in 0..20u8 {
        s.send_to(&channel_data(0x4010, &[i; 33]), turn)
            .await
            .unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), s.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], &channel_data(0x4010, &[i; 33])[..]);
    }
    // Refresh to 0 deletes; then 437.
    let r = call(
        &s,
        turn,
        &signed(method::REFRESH, tx(), &nonce, &|b| {
            b.u32_attr(attr::LIFETIME, 0)
        }),
    )
    .await;
    assert_eq!(r.class, Class::Success);
    let r = call(
        &s,
        turn,
        &signed(method::CREATE_PERMISSION, tx(), &nonce, &|b| {
            b.xor_address(attr::XOR_PEER_ADDRESS, peer)
        }),
    )
    .await;
    assert_eq!(code(&r), 437);
}

fn have(bin: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// coturn's `turnutils_uclient` through ptkit's TURN front end, `turnutils_peer` as the
/// echo peer behind a `plain` transport server. Both the channel (default) and the Send
/// indication (`-s`) paths. Needs Debian's `coturn` package.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_uclient_through_turn_front_end() {
    if !have("turnutils_uclient") || !have("turnutils_peer") {
        return skip(
            "coturn (turnutils_uclient, turnutils_peer) not installed: apt-get install coturn",
        );
    }
    let peer_port = free_udp_port();
    let mut peer = tokio::process::Command::new("turnutils_peer")
        .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let peer_addr: SocketAddr = format!("127.0.0.1:{peer_port}").parse().unwrap();
    let (_s, _c, turn) = pair("plain", "transparent-UDP", peer_addr, None, Some(TURN_OPTS)).await;
    for extra in [&[][..], &["-s"][..]] {
        let port = turn.port().to_string();
        let pport = peer_port.to_string();
        let mut args = vec![
            "-u",
            "user",
            "-w",
            "pass",
            "-p",
            &port,
            "-e",
            "127.0.0.1",
            "-r",
            &pport,
            "-c",
            "-n",
            "50",
            "-l",
            "200",
            "-z",
            "5",
        ];
        args.extend_from_slice(extra);
        args.push("127.0.0.1");
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new("turnutils_uclient")
                .args(&args)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("uclient hung")
        .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "uclient {extra:?} failed:\n{text}");
        // The summary lines: `tot_send_msgs=50, tot_recv_msgs=N` and `Total lost packets L`.
        let last = |key: &str| -> Option<u64> {
            let at = text.rfind(key)? + key.len();
            text[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        let (sent, recv) = (last("tot_send_msgs="), last("tot_recv_msgs="));
        let lost = last("Total lost packets ");
        eprintln!("uclient {extra:?}: sent {sent:?} received {recv:?} lost {lost:?}");
        if std::env::var("UCLIENT_DUMP").is_ok() {
            eprintln!("{text}");
        }
        assert_eq!(sent, Some(50), "{text}");
        // UDP on loopback through two relays: allow one datagram in 50 (uclient's own
        // end-of-run race), never more.
        assert!(recv.is_some_and(|r| r >= 49), "uclient {extra:?}:\n{text}");
        assert!(lost.is_some_and(|l| l <= 1), "uclient {extra:?}:\n{text}");
    }
    let _ = peer.kill().await;
}
