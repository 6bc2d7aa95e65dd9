//! The whole server data path in-process: the turbotunnel test client → WebSocket → token,
//! ClientID, encapsulation → KCP → smux → ptkit-core's server loop → a TCP echo upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ptkit_core::net::{DirectDialer, TcpUpstream};
use ptkit_core::server::{ServerLimits, proxy};
use ptkit_core::shutdown::Shutdown;
use ptkit_core::{Args, ServerConfig, ServerTransport, StatsCounter, Target};
use ptkit_snowflake::SnowflakeServer;
use ptkit_snowflake::client::{ClientOptions, TurbotunnelClient};
use ptkit_snowflake::turbotunnel::TOKEN;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

struct Running {
    url: String,
    stats: Arc<StatsCounter>,
    server: SnowflakeServer,
    _shutdown: Shutdown,
}

async fn start_server(upstream: SocketAddr) -> Running {
    let server = SnowflakeServer::new().allow_port_zero();
    let listener = server
        .listen(ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            options: Args::new(),
            state_dir: None,
        })
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    assert_eq!(listener.client_args().get("tls"), Some("no"));
    let stats = Arc::new(StatsCounter::new("snowflake"));
    let shutdown = Shutdown::new();
    let upstream = Arc::new(TcpUpstream {
        target: Target::from_socket_addr(upstream),
        dialer: DirectDialer::default(),
    });
    proxy(
        listener,
        upstream,
        stats.clone(),
        shutdown.clone(),
        ServerLimits::default(),
    );
    Running {
        url: format!("ws://{addr}/any/path?client_ip=192.0.2.7"),
        stats,
        server,
        _shutdown: shutdown,
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_through_the_whole_stack() {
    let up = echo_server().await;
    let srv = start_server(up).await;
    let client = TurbotunnelClient::connect(ClientOptions {
        url: srv.url.clone(),
        ca_file: None,
        client_id: None,
    })
    .await
    .unwrap();
    let mut s = client.open_stream().unwrap();
    s.write_all(b"HELLO-SNOWFLAKE").await.unwrap();
    let mut got = [0u8; 15];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut got))
        .await
        .expect("echo within 10 s")
        .unwrap();
    assert_eq!(&got, b"HELLO-SNOWFLAKE");
    assert_eq!(srv.stats.snapshot().connections_total, 1);
    let m = srv.server.metrics();
    assert_eq!(
        m.sessions_total.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        m.streams_with_client_ip
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// Moves `len` bytes through one stream both ways at once and checks them.
async fn transfer(client: &TurbotunnelClient, len: usize, seed: u8) {
    let s = client.open_stream().unwrap();
    let (mut r, mut w) = tokio::io::split(s);
    let data = pattern(len, seed);
    let send = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&send).await.unwrap();
        w
    });
    let mut got = vec![0u8; len];
    tokio::time::timeout(Duration::from_secs(60), r.read_exact(&mut got))
        .await
        .expect("transfer within 60 s")
        .unwrap();
    assert!(got == data, "echoed bytes differ");
    drop(writer.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabytes_byte_exact_and_several_streams() {
    let up = echo_server().await;
    let srv = start_server(up).await;
    let client = TurbotunnelClient::connect(ClientOptions {
        url: srv.url.clone(),
        ca_file: None,
        client_id: None,
    })
    .await
    .unwrap();
    transfer(&client, 4 << 20, 1).await;
    let c = &client;
    tokio::join!(
        transfer(c, 300_000, 2),
        transfer(c, 300_000, 3),
        transfer(c, 1000, 4)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_websockets_mid_transfer_keeps_the_session() {
    let up = echo_server().await;
    let srv = start_server(up).await;
    let client = Arc::new(
        TurbotunnelClient::connect(ClientOptions {
            url: srv.url.clone(),
            ca_file: None,
            client_id: None,
        })
        .await
        .unwrap(),
    );
    let len = 2 << 20;
    let s = client.open_stream().unwrap();
    let (mut r, mut w) = tokio::io::split(s);
    let data = pattern(len, 9);
    let send = data.clone();
    // The proxy goes away three times mid-transfer; packets queue on the client and KCP
    // retransmits what was in flight once the next WebSocket (same ClientID) is up.
    let switcher = client.clone();
    let writer = tokio::spawn(async move {
        for (i, chunk) in send.chunks(64 * 1024).enumerate() {
            w.write_all(chunk).await.unwrap();
            if i % 8 == 4 && i < 28 {
                switcher.drop_carrier();
                tokio::time::sleep(Duration::from_millis(300)).await;
                switcher.switch_carrier().await.unwrap();
            }
        }
        w
    });
    let mut got = vec![0u8; len];
    tokio::time::timeout(Duration::from_secs(60), r.read_exact(&mut got))
        .await
        .expect("transfer within 60 s despite switches")
        .unwrap();
    assert!(got == data, "bytes differ after proxy switches");
    drop(writer.await.unwrap());
    let m = srv.server.metrics();
    assert_eq!(
        m.sessions_total.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        m.websockets_total
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_websockets_are_closed_and_others_keep_working() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let up = echo_server().await;
    let srv = start_server(up).await;
    // Wrong token: closed.
    let (mut ws, _) = tokio_tungstenite::connect_async(srv.url.as_str())
        .await
        .unwrap();
    ws.send(Message::binary(vec![0x16, 3, 1, 0, 0, 0, 0, 0, 1]))
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(m) = ws.next().await {
            if m.is_err() || matches!(m, Ok(Message::Close(_))) {
                return;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "a bad token must close the WebSocket");
    // A 4-byte prefix after a good preamble: closed.
    let (mut ws, _) = tokio_tungstenite::connect_async(srv.url.as_str())
        .await
        .unwrap();
    let mut bad = TOKEN.to_vec();
    bad.extend_from_slice(&[1; 8]);
    bad.extend_from_slice(&[0xc0, 0x80, 0x80, 0x80]);
    ws.send(Message::binary(bad)).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(m) = ws.next().await {
            if m.is_err() || matches!(m, Ok(Message::Close(_))) {
                return;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "a malformed prefix must close the WebSocket");
    // Garbage datagrams for a new ClientID start no session.
    let (mut ws, _) = tokio_tungstenite::connect_async(srv.url.as_str())
        .await
        .unwrap();
    let mut junk = TOKEN.to_vec();
    junk.extend_from_slice(&[2; 8]);
    junk.extend_from_slice(&[0x85, 1, 2, 3, 4, 5]);
    ws.send(Message::binary(junk)).await.unwrap();
    // Meanwhile a real client works.
    let client = TurbotunnelClient::connect(ClientOptions {
        url: srv.url.clone(),
        ca_file: None,
        client_id: None,
    })
    .await
    .unwrap();
    transfer(&client, 100_000, 5).await;
    let m = srv.server.metrics();
    assert!(
        m.failures().get("bad_token").copied().unwrap_or(0) >= 1,
        "{:?}",
        m.failures()
    );
    assert!(
        m.packets_rejected
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    assert_eq!(
        m.sessions_total.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// One KCP segment: conv, PUSH, sn, carrying `data`.
fn push(conv: u32, sn: u32, data: &[u8]) -> Vec<u8> {
    let mut seg = Vec::new();
    seg.extend_from_slice(&conv.to_le_bytes());
    seg.extend_from_slice(&[81, 0, 0xff, 0xff]);
    seg.extend_from_slice(&0u32.to_le_bytes()); // ts
    seg.extend_from_slice(&sn.to_le_bytes());
    seg.extend_from_slice(&0u32.to_le_bytes()); // una
    seg.extend_from_slice(&(data.len() as u32).to_le_bytes());
    seg.extend_from_slice(data);
    let mut framed = bytes::BytesMut::new();
    ptkit_snowflake::encapsulation::encode_data(&seg, &mut framed).unwrap();
    framed.to_vec()
}

async fn metric_reaches(read: impl Fn() -> u64, want: u64) -> bool {
    for _ in 0..200 {
        if read() == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// kcp-go's listener rules: a new conv with sn 0 for a known ClientID replaces its session; a
/// new conv with any other sn is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_conv_with_sn_zero_replaces_the_session() {
    use futures_util::SinkExt;
    use std::sync::atomic::Ordering::Relaxed;
    use tokio_tungstenite::tungstenite::Message;
    let up = echo_server().await;
    let srv = start_server(up).await;
    let m = srv.server.metrics();
    let (mut ws, _) = tokio_tungstenite::connect_async(srv.url.as_str())
        .await
        .unwrap();
    let mut pre = TOKEN.to_vec();
    pre.extend_from_slice(&[7; 8]);
    ws.send(Message::binary(pre)).await.unwrap();
    let syn = [2u8, 0, 0, 0, 3, 0, 0, 0];
    ws.send(Message::binary(push(0xaaaa, 0, &syn)))
        .await
        .unwrap();
    assert!(metric_reaches(|| m.sessions_total.load(Relaxed), 1).await);
    assert!(metric_reaches(|| m.streams_total.load(Relaxed), 1).await);
    // Another conv, sn 5: ignored, the session stays.
    ws.send(Message::binary(push(0xbbbb, 5, &syn)))
        .await
        .unwrap();
    assert!(metric_reaches(|| m.packets_rejected.load(Relaxed), 1).await);
    assert_eq!(m.sessions_total.load(Relaxed), 1);
    // Another conv, sn 0: a new session replaces the old one.
    ws.send(Message::binary(push(0xbbbb, 0, &syn)))
        .await
        .unwrap();
    assert!(metric_reaches(|| m.sessions_total.load(Relaxed), 2).await);
    assert!(metric_reaches(|| m.sessions_open.load(Relaxed), 1).await);
    assert!(metric_reaches(|| m.streams_total.load(Relaxed), 2).await);
}
