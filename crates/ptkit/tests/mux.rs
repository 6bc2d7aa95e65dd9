//! Bound → free (`ptkit_mux`) over real ptkit transports: 100 parallel streams to 100
//! different destinations (IPv4, IPv6 and names) through ONE `plain` and ONE `websocket`
//! connection, byte-exact; policy refusals with their exact SOCKS reply codes; free → bound
//! by pinning.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ptkit_core::shutdown::Shutdown;
use ptkit_core::{
    Args, BoxFuture, ClientConfig, Conn, Connector, Pinned, ServerConfig, StatsCounter, Target,
    TransportError,
};
use ptkit_mux::client::serve_socks;
use ptkit_mux::{MuxClientConfig, MuxConnector, MuxServer, MuxServerConfig, Policy};
use ptkit_tor::socks::client::connect_v5;
use ptkit_tor::socks_front::SocksLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(60);
const STREAMS: usize = 100;
const PER_STREAM: usize = 64 * 1024;

/// Counts transport connections, to prove every stream shares one.
struct Counting {
    inner: Arc<dyn Connector>,
    dials: Arc<AtomicUsize>,
}

impl Connector for Counting {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn is_bound(&self) -> bool {
        true
    }
    fn connect(
        &self,
        s: &Args,
        d: Option<Target>,
    ) -> BoxFuture<'static, Result<Conn, TransportError>> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        self.inner.connect(s, d)
    }
}

/// A destination that first sends its 4-byte index, then echoes.
async fn destination(bind: &str, index: u32) -> SocketAddr {
    let l = TcpListener::bind(bind).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                s.write_all(&index.to_be_bytes()).await.unwrap();
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// SOCKS5 CONNECT through `socks`; returns the reply code and the stream.
async fn socks_connect(socks: SocketAddr, target: &Target) -> (u8, TcpStream) {
    let mut s = TcpStream::connect(socks).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.unwrap();
    assert_eq!(m, [5, 0]);
    s.write_all(&connect_v5(target).unwrap()).await.unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).await.unwrap();
    (reply[1], s)
}

fn pattern(seed: usize) -> Vec<u8> {
    (0..PER_STREAM)
        .map(|i| (i.wrapping_mul(7) ^ seed.wrapping_mul(131)) as u8)
        .collect()
}

struct Setup {
    socks: SocketAddr,
    dials: Arc<AtomicUsize>,
    server_stats: Arc<StatsCounter>,
    _shutdown: Shutdown,
}

/// A mux server behind `transport`'s server and a mux SOCKS client over its client.
async fn setup(transport: &str, policy: Policy, pin: Option<Target>) -> Setup {
    let registry = ptkit::transports::registry();
    let shutdown = Shutdown::new();
    let listener = registry
        .server(transport)
        .unwrap()
        .listen(ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            options: Args::new(),
            state_dir: None,
        })
        .await
        .unwrap();
    let server_addr = listener.local_addr().unwrap();
    let server_stats = Arc::new(StatsCounter::new("mux"));
    let server = MuxServer::new(
        MuxServerConfig {
            policy,
            ..MuxServerConfig::default()
        },
        server_stats.clone(),
    );
    server.serve_listener(listener, shutdown.clone());

    let inner = registry
        .client(transport)
        .unwrap()
        .connector(&ClientConfig::default())
        .unwrap();
    let dials = Arc::new(AtomicUsize::new(0));
    let mut settings = Args::new();
    if transport == "websocket" {
        settings.push("url", format!("ws://{server_addr}/"));
    }
    let mux = MuxConnector::new(
        Arc::new(Counting {
            inner,
            dials: dials.clone(),
        }),
        MuxClientConfig {
            settings,
            server: Some(Target::from_socket_addr(server_addr)),
            ..MuxClientConfig::default()
        },
    );
    let connector: Arc<dyn Connector> = match pin {
        Some(dest) => Arc::new(Pinned::new(Arc::new(mux), Args::new(), Some(dest))),
        None => Arc::new(mux),
    };
    let socks = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let socks_addr = socks.local_addr().unwrap();
    serve_socks(
        socks,
        connector,
        Arc::new(StatsCounter::new("mux-socks")),
        shutdown.clone(),
        SocksLimits::default(),
    );
    Setup {
        socks: socks_addr,
        dials,
        server_stats,
        _shutdown: shutdown,
    }
}

async fn hundred_streams(transport: &str) {
    // 100 destinations: a third IPv4, a third IPv6, a third by name ("localhost").
    let mut targets = Vec::new();
    for i in 0..STREAMS {
        let (bind, host) = match i % 3 {
            0 => ("127.0.0.1:0", None),
            1 => ("[::1]:0", None),
            _ => ("127.0.0.1:0", Some("localhost")),
        };
        let addr = destination(bind, i as u32).await;
        let target = match host {
            Some(h) => Target::parse(&format!("{h}:{}", addr.port())).unwrap(),
            None => Target::from_socket_addr(addr),
        };
        targets.push(target);
    }
    let policy = Policy::parse(&["127.0.0.1/32", "[::1]/128", "localhost"]).unwrap();
    let s = setup(transport, policy, None).await;
    let started = std::time::Instant::now();
    let tasks: Vec<_> = targets
        .into_iter()
        .enumerate()
        .map(|(i, target)| {
            let socks = s.socks;
            tokio::spawn(async move {
                let (rep, mut conn) = socks_connect(socks, &target).await;
                assert_eq!(rep, 0, "stream {i} to {target} refused");
                let mut id = [0u8; 4];
                conn.read_exact(&mut id).await.unwrap();
                assert_eq!(
                    u32::from_be_bytes(id),
                    i as u32,
                    "stream {i} reached the wrong destination"
                );
                let data = pattern(i);
                let (mut r, mut w) = conn.split();
                let mut back = vec![0u8; data.len()];
                let (wr, rd) = tokio::join!(w.write_all(&data), r.read_exact(&mut back));
                wr.unwrap();
                rd.unwrap();
                assert!(back == data, "stream {i}: echoed bytes differ");
            })
        })
        .collect();
    for t in tasks {
        timeout(T, t).await.expect("stream timed out").unwrap();
    }
    eprintln!(
        "{transport}: {STREAMS} streams x {PER_STREAM} B in {:?}",
        started.elapsed()
    );
    assert_eq!(
        s.dials.load(Ordering::SeqCst),
        1,
        "all streams share one transport connection"
    );
    let st = s.server_stats.snapshot();
    assert_eq!(st.connections_total, STREAMS as u64);
    assert_eq!(st.connections_failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bound_to_free_100_parallel_streams_over_one_plain_connection() {
    hundred_streams("plain").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bound_to_free_100_parallel_streams_over_one_websocket_connection() {
    hundred_streams("websocket").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_refusals_come_back_as_exact_socks_replies() {
    let open = destination("127.0.0.1:0", 42).await;
    // A port that refuses: bind, note, drop.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let policy = Policy::parse(&["127.0.0.0/8", "example.com:443"]).unwrap();
    let s = setup("plain", policy, None).await;
    let cases = [
        (Target::from_socket_addr(open), 0x00, "allowed address"),
        (
            Target::parse(&format!("localhost:{}", open.port())).unwrap(),
            0x00,
            "name resolved into an allowed CIDR",
        ),
        (
            Target::parse("10.1.2.3:80").unwrap(),
            0x02,
            "address outside every rule",
        ),
        (
            Target::parse("[2001:db8::1]:80").unwrap(),
            0x02,
            "IPv6 outside every rule",
        ),
        (
            Target::parse("no-such-host.invalid:80").unwrap(),
            0x04,
            "name that does not resolve",
        ),
        (
            Target::from_socket_addr(closed),
            0x05,
            "allowed but refusing",
        ),
    ];
    for (target, want, what) in cases {
        let (rep, _) = timeout(T, socks_connect(s.socks, &target)).await.unwrap();
        assert_eq!(rep, want, "{what}: {target}");
    }
    // The default policy denies everything, even loopback.
    let d = setup("plain", Policy::default(), None).await;
    let (rep, _) = socks_connect(d.socks, &Target::from_socket_addr(open)).await;
    assert_eq!(rep, 0x02);
    assert_eq!(
        d.server_stats.snapshot().errors.get("not_allowed"),
        Some(&1)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn free_to_bound_by_pinning_a_destination() {
    let pinned = destination("127.0.0.1:0", 7).await;
    let s = setup(
        "plain",
        Policy::parse(&["127.0.0.1/32"]).unwrap(),
        Some(Target::from_socket_addr(pinned)),
    )
    .await;
    // Whatever the SOCKS client asks for, the stream goes to the pinned destination.
    for asked in ["192.0.2.1:80", "example.com:443"] {
        let (rep, mut c) = socks_connect(s.socks, &Target::parse(asked).unwrap()).await;
        assert_eq!(rep, 0);
        let mut id = [0u8; 4];
        c.read_exact(&mut id).await.unwrap();
        assert_eq!(u32::from_be_bytes(id), 7);
    }
}
