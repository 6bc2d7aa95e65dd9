#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Tunnels end to end on loopback: authentication accepted and refused, routing refusals,
//! forward and reverse routing, 100 clients, an aggregator restart, a lossy relay.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ptkit_core::StatsCounter;
use ptkit_core::shutdown::Shutdown;
use ptkit_quic::Error;
use ptkit_quic::auth::{HmacAuth, HmacClient, MtlsAuth, MtlsClient, NoAuth};
use ptkit_quic::client::{ClientEvent, ClientRunner};
use ptkit_quic::manager::TunnelEvent;
use ptkit_quic::proto::{RefusalCode, TcpTarget};
use ptkit_quic::routing::{AllowRule, ForwardPolicy, LocalServices};
use ptkit_quic::server::ServerOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const SECRET: &[u8] = b"correct horse battery staple";

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn allow(target: SocketAddr) -> ForwardPolicy {
    ForwardPolicy::deny_all().allow(AllowRule::parse(&target.to_string()).unwrap())
}

async fn next_refusal(rx: &mut tokio::sync::broadcast::Receiver<TunnelEvent>) -> (String, String) {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap()
        {
            TunnelEvent::Refused { kind, reason, .. } => return (kind, reason),
            _ => continue,
        }
    }
}

#[tokio::test]
async fn hmac_accepts_right_secret_and_refuses_wrong_one() {
    let pki = Pki::new();
    let echo = echo_server().await;
    let sd = Shutdown::new();
    let server = start_server(
        local(),
        &pki.server_tls(false),
        ServerOptions::default(),
        Arc::new(HmacAuth::shared(SECRET.to_vec()).unwrap()),
        router(allow(echo), &sd, false),
        &sd,
    );
    let mut events = server.manager().subscribe();
    let addr = server.local_addr().unwrap();

    let good = client(
        addr,
        &pki.client_tls(None),
        Arc::new(HmacClient::new("alice", SECRET.to_vec()).unwrap()),
    );
    let tunnel = good.connect().await.unwrap();
    assert_eq!(tunnel.identity, "alice");
    let mut s = tunnel.forward(echo.into_target()).await.unwrap();
    assert_eq!(
        echo_round(&mut s, b"hello through hmac").await,
        b"hello through hmac"
    );
    assert_eq!(server.manager().identities(), vec!["alice".to_string()]);

    let bad = client(
        addr,
        &pki.client_tls(None),
        Arc::new(HmacClient::new("mallory", b"wrong secret, same length!!".to_vec()).unwrap()),
    );
    let err = bad.connect().await.unwrap_err();
    match &err {
        Error::Refused { code, reason } => {
            assert_eq!(*code, RefusalCode::BadCredentials);
            assert!(reason.contains("wrong shared secret"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(err.is_fatal());
    let (kind, reason) = next_refusal(&mut events).await;
    assert_eq!(kind, "bad_credentials");
    assert!(reason.contains("wrong shared secret"));

    // A client offering another method is told which one the server wants.
    let mtls = client(addr, &pki.client_tls(None), Arc::new(MtlsClient::default()));
    match mtls.connect().await.unwrap_err() {
        Error::Refused { code, reason } => {
            assert_eq!(code, RefusalCode::MethodNotAllowed);
            assert!(reason.contains("hmac"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    server.stop(Duration::from_millis(10)).await;
}

trait IntoTarget {
    fn into_target(self) -> TcpTarget;
}
impl IntoTarget for SocketAddr {
    fn into_target(self) -> TcpTarget {
        TcpTarget::parse(&self.to_string()).unwrap()
    }
}

#[tokio::test]
async fn mtls_accepts_ca_signed_and_refuses_unknown_and_expired() {
    let pki = Pki::new();
    let other_ca = Pki::new();
    let echo = echo_server().await;
    let sd = Shutdown::new();
    let server = start_server(
        local(),
        &pki.server_tls(true),
        ServerOptions::default(),
        Arc::new(MtlsAuth),
        router(allow(echo), &sd, false),
        &sd,
    );
    let mut events = server.manager().subscribe();
    let addr = server.local_addr().unwrap();

    // Accepted, with the claimed name checked against the certificate.
    let good_cert = pki.leaf(&["client1.test"], false);
    let c = client(
        addr,
        &pki.client_tls(Some(good_cert.clone())),
        Arc::new(MtlsClient {
            name: "client1.test".into(),
        }),
    );
    let t = c.connect().await.unwrap();
    assert_eq!(t.identity, "client1.test");
    let mut s = t.forward(echo.into_target()).await.unwrap();
    assert_eq!(echo_round(&mut s, b"mtls").await, b"mtls");

    // Claiming a name the certificate does not carry is refused.
    let c = client(
        addr,
        &pki.client_tls(Some(good_cert.clone())),
        Arc::new(MtlsClient {
            name: "admin.test".into(),
        }),
    );
    match c.connect().await.unwrap_err() {
        Error::Refused { code, reason } => {
            assert_eq!(code, RefusalCode::BadCredentials);
            assert!(
                reason.contains("not valid for the claimed name"),
                "{reason}"
            );
        }
        other => panic!("expected refusal, got {other:?}"),
    }
    let _ = next_refusal(&mut events).await;

    // No name claimed: identity is the certificate hash.
    let c = client(
        addr,
        &pki.client_tls(Some(good_cert)),
        Arc::new(MtlsClient::default()),
    );
    // Kept alive until the end: the manager counts it below.
    let t2 = c.connect().await.unwrap();
    assert!(t2.identity.starts_with("cert-sha256:"));

    // Unknown CA, expired certificate, and no certificate all fail in TLS.
    for (label, cert) in [
        ("unknown CA", Some(other_ca.leaf(&["client1.test"], false))),
        ("expired", Some(pki.leaf(&["client1.test"], true))),
        ("none", None),
    ] {
        let c = client(addr, &pki.client_tls(cert), Arc::new(MtlsClient::default()));
        let err = c.connect().await.expect_err(label);
        assert!(err.is_fatal(), "{label}: {err:?} should be fatal");
        let (kind, reason) = next_refusal(&mut events).await;
        assert_ne!(kind, "timeout", "{label}");
        let expect: &[&str] = match label {
            // Both test CAs have an empty subject, so webpki may find the "issuer" and
            // then fail its signature: either way the certificate is rejected.
            "unknown CA" => &["UnknownIssuer", "BadSignature"],
            "expired" => &["expired"],
            _ => &["ertificate"],
        };
        assert!(
            expect.iter().any(|e| reason.contains(e)),
            "{label}: server said {reason}"
        );
    }
    assert_eq!(server.manager().len(), 2);
    drop((t, t2));
    server.stop(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn slow_handshake_hits_the_deadline() {
    let pki = Pki::new();
    let sd = Shutdown::new();
    let options = ServerOptions {
        handshake_timeout: Duration::from_millis(300),
        ..ServerOptions::default()
    };
    let server = start_server(
        local(),
        &pki.server_tls(false),
        options,
        Arc::new(HmacAuth::shared(SECRET.to_vec()).unwrap()),
        router(ForwardPolicy::deny_all(), &sd, false),
        &sd,
    );
    let mut events = server.manager().subscribe();
    // A QUIC client that completes TLS but never authenticates.
    let tls = pki.client_tls(None);
    let endpoint = quinn::Endpoint::client(local()).unwrap();
    let conn = endpoint
        .connect_with(
            tls.quinn_config(&Default::default()).unwrap(),
            server.local_addr().unwrap(),
            "aggregator.test",
        )
        .unwrap()
        .await
        .unwrap();
    let start = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .unwrap();
    let elapsed = start.elapsed();
    match closed {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(u64::from(c.error_code), ptkit_quic::CLOSE_AUTH_TIMEOUT);
            assert_eq!(&c.reason[..], b"authentication deadline exceeded");
        }
        other => panic!("unexpected close {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(next_refusal(&mut events).await.0, "timeout");
    assert!(server.manager().is_empty());
}

#[tokio::test]
async fn forward_policy_refusals_are_clear() {
    let pki = Pki::new();
    let echo = echo_server().await;
    let sd = Shutdown::new();
    let policy = ForwardPolicy::deny_all()
        .allow(AllowRule::parse(&format!("alice@{echo}")).unwrap())
        .allow(AllowRule::parse("127.0.0.1:1").unwrap());
    let server = start_server(
        local(),
        &pki.server_tls(false),
        ServerOptions::default(),
        Arc::new(HmacAuth::shared(SECRET.to_vec()).unwrap()),
        router(policy, &sd, false),
        &sd,
    );
    let addr = server.local_addr().unwrap();
    let bob = client(
        addr,
        &pki.client_tls(None),
        Arc::new(HmacClient::new("bob", SECRET.to_vec()).unwrap()),
    )
    .connect()
    .await
    .unwrap();
    let alice = client(
        addr,
        &pki.client_tls(None),
        Arc::new(HmacClient::new("alice", SECRET.to_vec()).unwrap()),
    )
    .connect()
    .await
    .unwrap();
    // Rule for alice only.
    match bob.forward(echo.into_target()).await.unwrap_err() {
        Error::Refused { code, reason } => {
            assert_eq!(code, RefusalCode::Policy);
            assert!(reason.contains("policy does not allow"), "{reason}");
        }
        e => panic!("{e:?}"),
    }
    // Default deny.
    match alice
        .forward(TcpTarget::parse("10.1.2.3:22").unwrap())
        .await
        .unwrap_err()
    {
        Error::Refused { code, .. } => assert_eq!(code, RefusalCode::Policy),
        e => panic!("{e:?}"),
    }
    // Allowed but down.
    match alice
        .forward(TcpTarget::parse("127.0.0.1:1").unwrap())
        .await
        .unwrap_err()
    {
        Error::Refused { code, .. } => assert_eq!(code, RefusalCode::Unreachable),
        e => panic!("{e:?}"),
    }
    // Reverse routing disabled here.
    match alice.expose("web").await.unwrap_err() {
        Error::Refused { code, .. } => assert_eq!(code, RefusalCode::UnknownRoute),
        e => panic!("{e:?}"),
    }
    let mut s = alice.forward(echo.into_target()).await.unwrap();
    assert_eq!(echo_round(&mut s, b"allowed").await, b"allowed");
}

#[tokio::test]
async fn reverse_routing_exposes_a_port_per_service() {
    let pki = Pki::new();
    let echo = echo_server().await;
    let sd = Shutdown::new();
    let server = start_server(
        local(),
        &pki.server_tls(false),
        ServerOptions::default(),
        Arc::new(HmacAuth::shared(SECRET.to_vec()).unwrap()),
        router(ForwardPolicy::deny_all(), &sd, true),
        &sd,
    );
    let c = client(
        server.local_addr().unwrap(),
        &pki.client_tls(None),
        Arc::new(HmacClient::new("edge1", SECRET.to_vec()).unwrap()),
    );
    let stats = Arc::new(StatsCounter::new("client"));
    let services = LocalServices::new(
        vec![
            ("echo".into(), ptkit_core::Target::from_socket_addr(echo)),
            (
                "down".into(),
                ptkit_core::Target::parse("127.0.0.1:1").unwrap(),
            ),
        ],
        stats.clone(),
    );
    let runner =
        ClientRunner::new(c, stats).expose(vec!["echo".into(), "down".into()], Arc::new(services));
    let mut ev = runner.subscribe();
    let csd = Shutdown::new();
    let task = tokio::spawn(runner.run(csd.clone()));
    let mut ports = std::collections::HashMap::new();
    while ports.len() < 2 {
        if let ClientEvent::Exposed { name, port } =
            tokio::time::timeout(Duration::from_secs(5), ev.recv())
                .await
                .unwrap()
                .unwrap()
        {
            ports.insert(name, port);
        }
    }
    assert_ne!(ports["echo"], ports["down"]);
    // Several connections to the exposed port travel down the tunnel to the local service.
    for i in 0..5u64 {
        let mut tcp = TcpStream::connect(("127.0.0.1", ports["echo"]))
            .await
            .unwrap();
        let data = pattern(i, 100_000);
        assert_eq!(echo_round(&mut tcp, &data).await, data);
    }
    // The other service is down: the connection is closed, nothing hangs.
    let mut tcp = TcpStream::connect(("127.0.0.1", ports["down"]))
        .await
        .unwrap();
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut b))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    csd.abort();
    assert!(task.await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_clients_with_many_streams_are_byte_exact() {
    let pki = Pki::new();
    let echo = echo_server().await;
    let sd = Shutdown::new();
    // 100 simultaneous handshakes of an unoptimised build on a shared 2-core machine take
    // seconds: the deadlines here are generous, the point is correctness under load.
    let slow = ServerOptions {
        handshake_timeout: Duration::from_secs(60),
        ..ServerOptions::default()
    };
    let server = start_server(
        local(),
        &pki.server_tls(false),
        slow,
        Arc::new(HmacAuth::shared(SECRET.to_vec()).unwrap()),
        router(allow(echo), &sd, false),
        &sd,
    );
    let addr = server.local_addr().unwrap();
    let tls = pki.client_tls(None);
    let endpoint = quinn::Endpoint::client(local()).unwrap();
    let mut tasks = Vec::new();
    for c in 0..100u64 {
        let tls = tls.clone();
        let endpoint = endpoint.clone();
        tasks.push(tokio::spawn(async move {
            let cl = ptkit_quic::client::TunnelClient::with_endpoint(
                endpoint,
                addr,
                "aggregator.test",
                &tls,
                Arc::new(HmacClient::new(format!("client{c}"), SECRET.to_vec()).unwrap()),
                ptkit_quic::client::ClientOptions {
                    connect_timeout: Duration::from_secs(60),
                    ..Default::default()
                },
            )
            .unwrap();
            let t = cl.connect().await.unwrap();
            let mut streams = Vec::new();
            for s in 0..8u64 {
                let t = t.clone();
                streams.push(tokio::spawn(async move {
                    let data = pattern(c * 1000 + s, 16 * 1024 + (s as usize) * 997);
                    let mut st = t.forward(echo.into_target()).await.unwrap();
                    let back = echo_round(&mut st, &data).await;
                    assert!(back == data, "client {c} stream {s} corrupted");
                }));
            }
            for s in streams {
                s.await.unwrap();
            }
            t
        }));
    }
    let mut tunnels = Vec::new();
    for t in tasks {
        tunnels.push(t.await.unwrap());
    }
    assert_eq!(server.manager().len(), 100);
    assert_eq!(server.manager().identities().len(), 100);
    drop(tunnels);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reconnect_after_the_aggregator_restarts() {
    let pki = Pki::new();
    let echo = echo_server().await;
    let sd1 = Shutdown::new();
    let auth = Arc::new(HmacAuth::shared(SECRET.to_vec()).unwrap());
    let server = start_server(
        local(),
        &pki.server_tls(false),
        ServerOptions::default(),
        auth.clone(),
        router(allow(echo), &sd1, false),
        &sd1,
    );
    let addr = server.local_addr().unwrap();
    // Five clients, each with a local forward port.
    let mut ports = Vec::new();
    let mut events = Vec::new();
    let csd = Shutdown::new();
    for i in 0..5 {
        let c = client(
            addr,
            &pki.client_tls(None),
            Arc::new(HmacClient::new(format!("c{i}"), SECRET.to_vec()).unwrap()),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        ports.push(l.local_addr().unwrap());
        let r =
            ClientRunner::new(c, Arc::new(StatsCounter::new("c"))).forward(l, echo.into_target());
        events.push(r.subscribe());
        tokio::spawn(r.run(csd.clone()));
    }
    async fn through(p: SocketAddr, seed: u64) {
        let mut tcp = TcpStream::connect(p).await.unwrap();
        let data = pattern(seed, 50_000);
        assert_eq!(echo_round(&mut tcp, &data).await, data);
    }
    for (i, p) in ports.iter().enumerate() {
        through(*p, i as u64).await;
    }
    // Restart the aggregator on the same port.
    server.stop(Duration::from_millis(0)).await;
    drop(server);
    for ev in &mut events {
        loop {
            if let ClientEvent::Disconnected { .. } =
                tokio::time::timeout(Duration::from_secs(10), ev.recv())
                    .await
                    .unwrap()
                    .unwrap()
            {
                break;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sd2 = Shutdown::new();
    let server2 = start_server(
        addr,
        &pki.server_tls(false),
        ServerOptions::default(),
        auth,
        router(allow(echo), &sd2, false),
        &sd2,
    );
    for ev in &mut events {
        loop {
            if let ClientEvent::Connected { .. } =
                tokio::time::timeout(Duration::from_secs(10), ev.recv())
                    .await
                    .unwrap()
                    .unwrap()
            {
                break;
            }
        }
    }
    assert_eq!(server2.manager().len(), 5);
    for (i, p) in ports.iter().enumerate() {
        through(*p, 100 + i as u64).await;
    }
    csd.abort();
}

/// A UDP relay between client and server that drops 5% of datagrams and holds back every
/// seventh one to deliver it after the next (reordering).
async fn lossy_relay(server: SocketAddr) -> SocketAddr {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(server).await.unwrap();
    let addr = front.local_addr().unwrap();
    let client_addr = Arc::new(tokio::sync::Mutex::new(None::<SocketAddr>));
    let (f, b, ca) = (front.clone(), back.clone(), client_addr.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        let mut n_pkt = 0u64;
        let mut held: Option<Vec<u8>> = None;
        loop {
            let (n, from) = f.recv_from(&mut buf).await.unwrap();
            *ca.lock().await = Some(from);
            n_pkt += 1;
            if pattern(n_pkt, 1)[0] < 13 {
                continue; // ~5% loss
            }
            if n_pkt.is_multiple_of(7) && held.is_none() {
                held = Some(buf[..n].to_vec());
                continue;
            }
            let _ = b.send(&buf[..n]).await;
            if let Some(h) = held.take() {
                let _ = b.send(&h).await;
            }
        }
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        let mut n_pkt = 0u64;
        let mut held: Option<Vec<u8>> = None;
        loop {
            let n = back.recv(&mut buf).await.unwrap();
            n_pkt += 1;
            let Some(to) = *client_addr.lock().await else {
                continue;
            };
            if pattern(n_pkt + 77, 1)[0] < 13 {
                continue;
            }
            if n_pkt.is_multiple_of(5) && held.is_none() {
                held = Some(buf[..n].to_vec());
                continue;
            }
            let _ = front.send_to(&buf[..n], to).await;
            if let Some(h) = held.take() {
                let _ = front.send_to(&h, to).await;
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_through_a_lossy_reordering_relay() {
    let pki = Pki::new();
    let echo = echo_server().await;
    let sd = Shutdown::new();
    let server = start_server(
        local(),
        &pki.server_tls(false),
        ServerOptions::default(),
        Arc::new(NoAuth),
        router(allow(echo), &sd, false),
        &sd,
    );
    let relay = lossy_relay(server.local_addr().unwrap()).await;
    let t = client(relay, &pki.client_tls(None), Arc::new(NoAuth))
        .connect()
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for s in 0..4u64 {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let data = pattern(s, 1 << 20);
            let mut st = t.forward(echo.into_target()).await.unwrap();
            let back = echo_round(&mut st, &data).await;
            assert!(back == data, "stream {s} corrupted");
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .unwrap()
            .unwrap();
    }
    let stats = t.conn.stats();
    assert!(
        stats.path.lost_packets > 0,
        "the relay should have caused losses"
    );
}

#[tokio::test]
async fn fatal_refusal_stops_the_runner_with_an_error() {
    let pki = Pki::new();
    let sd = Shutdown::new();
    let server = start_server(
        local(),
        &pki.server_tls(false),
        ServerOptions::default(),
        Arc::new(HmacAuth::shared(SECRET.to_vec()).unwrap()),
        router(ForwardPolicy::deny_all(), &sd, false),
        &sd,
    );
    let c = client(
        server.local_addr().unwrap(),
        &pki.client_tls(None),
        Arc::new(HmacClient::new("x", b"0123456789abcdef-wrong".to_vec()).unwrap()),
    );
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        ClientRunner::new(c, Arc::new(StatsCounter::new("c"))).run(Shutdown::new()),
    )
    .await
    .unwrap();
    assert!(
        matches!(
            r,
            Err(Error::Refused {
                code: RefusalCode::BadCredentials,
                ..
            })
        ),
        "{r:?}"
    );
}

#[tokio::test]
async fn unreachable_aggregator_is_retried_not_fatal() {
    let pki = Pki::new();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    drop(sock);
    let mut c = client(addr, &pki.client_tls(None), Arc::new(NoAuth));
    let _ = &mut c;
    let runner = ClientRunner::new(c, Arc::new(StatsCounter::new("c")));
    let mut ev = runner.subscribe();
    let sd = Shutdown::new();
    let task = tokio::spawn(runner.run(sd.clone()));
    match tokio::time::timeout(Duration::from_secs(15), ev.recv())
        .await
        .unwrap()
        .unwrap()
    {
        ClientEvent::Disconnected { retry_in, .. } => {
            assert!(retry_in <= Duration::from_millis(500))
        }
        e => panic!("{e:?}"),
    }
    sd.abort();
    assert!(task.await.unwrap().is_ok());
    let _ = AsyncWriteExt::flush(&mut tokio::io::sink()).await;
}
