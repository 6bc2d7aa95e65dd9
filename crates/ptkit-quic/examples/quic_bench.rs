//! `quic_bench`: QUIC tunnel numbers for docs/BENCHMARKS.md, all in one process on loopback.
//!
//! * throughput, 1 and 16 streams, client → sink, vs raw TCP and vs the websocket transport
//!   (ws://, through ptkit's own server driver), MiB/s over `--bytes` (split across streams);
//! * tunnel setup: QUIC handshake + HMAC authentication, `--setup-count` sequential tunnels,
//!   median and p90;
//! * memory per idle tunnel: process RSS growth over `--tunnels` idle authenticated tunnels,
//!   divided by their number. Both ends live in this process, so the figure covers the
//!   client's and the aggregator's state together.
//!
//! `cargo run --release -p ptkit-quic --example quic_bench -- --bytes 1073741824`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ptkit_core::net::{DirectDialer, TcpUpstream};
use ptkit_core::server::{ServerLimits, proxy};
use ptkit_core::shutdown::Shutdown;
use ptkit_core::{
    Args, ClientConfig, ClientTransport, ServerConfig, ServerTransport, StatsCounter, Target,
};
use ptkit_quic::auth::{HmacAuth, HmacClient};
use ptkit_quic::client::{ClientOptions, Tunnel, TunnelClient};
use ptkit_quic::proto::{ALPN_TUNNEL, TcpTarget};
use ptkit_quic::routing::{AggregatorRouter, AllowRule, ForwardPolicy};
use ptkit_quic::server::{ServerOptions, TunnelServer};
use ptkit_quic::tls::{ClientTls, ServerTls, ServerTrust, cert_sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: f64 = 1024.0 * 1024.0;
const SECRET: &[u8] = b"benchmark secret 0123456789";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap())
        .unwrap_or(default)
}

/// Reads a u64 N, then exactly N bytes, then replies with the count (no half-close needed,
/// so transports that close both directions at EOF measure the same way).
async fn sink() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut want = [0u8; 8];
                if s.read_exact(&mut want).await.is_err() {
                    return;
                }
                let want = u64::from_be_bytes(want);
                let mut buf = vec![0u8; 256 * 1024];
                let mut n = 0u64;
                while n < want {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k as u64,
                    }
                }
                let _ = s.write_all(&n.to_be_bytes()).await;
                let _ = s.flush().await;
                let mut rest = [0u8; 1];
                let _ = s.read(&mut rest).await;
            });
        }
    });
    addr
}

async fn push<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, bytes: u64) {
    let buf = vec![0x5au8; 256 * 1024];
    s.write_all(&bytes.to_be_bytes()).await.unwrap();
    let mut left = bytes;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..k]).await.unwrap();
        left -= k as u64;
    }
    s.flush().await.unwrap();
    let mut c = [0u8; 8];
    s.read_exact(&mut c).await.unwrap();
    assert_eq!(u64::from_be_bytes(c), bytes, "sink count");
}

async fn measure<F, Fut, S>(label: &str, streams: u64, bytes: u64, open: F) -> f64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut conns = Vec::new();
    for _ in 0..streams {
        conns.push(open().await);
    }
    let start = Instant::now();
    let per = bytes / streams;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|c| tokio::spawn(push(c, per)))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mibs = (per * streams) as f64 / MIB / start.elapsed().as_secs_f64();
    println!("throughput path={label} streams={streams} mib_per_s={mibs:.0}");
    mibs
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4
}

#[tokio::main]
async fn main() {
    let bytes = arg("--bytes", 1 << 30);
    let setup_count = arg("--setup-count", 200);
    let tunnels = arg("--tunnels", 1000);
    let target = sink().await;
    let sd = Shutdown::new();

    // Aggregator: HMAC auth, forward to the sink only.
    let (key, _, _) = ptkit_tls::self_signed(&["bench.invalid".into()]).unwrap();
    let pin = cert_sha256(&key.cert[0]);
    let stls = ServerTls::with_key(key, ALPN_TUNNEL);
    let policy = ForwardPolicy::deny_all().allow(AllowRule::parse(&target.to_string()).unwrap());
    let router = AggregatorRouter::new(policy, Arc::new(StatsCounter::new("t")), sd.clone());
    let mut sopts = ServerOptions::default();
    sopts.knobs.max_streams = 1024;
    sopts.handshake_timeout = Duration::from_secs(60);
    let server = TunnelServer::start(
        "127.0.0.1:0".parse().unwrap(),
        &stls,
        sopts,
        Arc::new(HmacAuth::shared(SECRET.to_vec()).unwrap()),
        Arc::new(router),
        sd.clone(),
    )
    .unwrap();
    let saddr = server.local_addr().unwrap();
    let ctls = ClientTls {
        trust: ServerTrust::Pin(vec![pin]),
        client_cert: None,
        alpn: ALPN_TUNNEL.to_vec(),
    };
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let mk = |name: String| {
        TunnelClient::with_endpoint(
            endpoint.clone(),
            saddr,
            "bench.invalid",
            &ctls,
            Arc::new(HmacClient::new(name, SECRET.to_vec()).unwrap()),
            ClientOptions {
                connect_timeout: Duration::from_secs(60),
                ..ClientOptions::default()
            },
        )
        .unwrap()
    };
    let tunnel: Tunnel = mk("bench".into()).connect().await.unwrap();
    let tt = TcpTarget::parse(&target.to_string()).unwrap();

    // websocket transport through ptkit's server driver.
    let ws = ptkit_websocket::WebSocketServer::new()
        .listen(ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            options: Args::new(),
            state_dir: None,
        })
        .await
        .unwrap();
    let ws_addr = ws.local_addr().unwrap();
    let _ws_mgr = proxy(
        ws,
        Arc::new(TcpUpstream {
            target: Target::from_socket_addr(target),
            dialer: DirectDialer::default(),
        }),
        Arc::new(StatsCounter::new("ws")),
        sd.clone(),
        ServerLimits::default(),
    );
    let ws_conn = ptkit_websocket::WebSocketClient::new()
        .connector(&ClientConfig::default())
        .unwrap();
    let ws_args = Args::new().with("url", format!("ws://{ws_addr}/"));

    for streams in [1u64, 16] {
        measure("raw-tcp", streams, bytes, || async {
            TcpStream::connect(target).await.unwrap()
        })
        .await;
        measure("quic-tunnel", streams, bytes, || async {
            tunnel.forward(tt.clone()).await.unwrap()
        })
        .await;
        measure("websocket", streams, bytes, || async {
            ws_conn.connect(&ws_args, None).await.unwrap()
        })
        .await;
    }

    // Setup time.
    let mut times = Vec::new();
    for i in 0..setup_count {
        let c = mk(format!("setup{i}"));
        let t0 = Instant::now();
        let t = c.connect().await.unwrap();
        times.push(t0.elapsed());
        t.conn.close(0u32.into(), b"");
    }
    times.sort();
    let p = |q: f64| times[((times.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1000.0;
    println!(
        "setup tunnels={setup_count} median_ms={:.3} p90_ms={:.3}",
        p(0.5),
        p(0.9)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Idle tunnels.
    let before = rss_kib();
    let mut idle = Vec::new();
    for chunk in 0..tunnels.div_ceil(50) {
        let batch: Vec<_> = (0..50.min(tunnels - chunk * 50))
            .map(|i| {
                let c = mk(format!("idle{chunk}-{i}"));
                tokio::spawn(async move { c.connect().await.unwrap() })
            })
            .collect();
        for b in batch {
            idle.push(b.await.unwrap());
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib();
    assert_eq!(server.manager().len() as u64, tunnels + 1);
    println!(
        "idle tunnels={tunnels} rss_before_kib={before} rss_after_kib={after} kib_per_tunnel_both_ends={:.1}",
        (after.saturating_sub(before)) as f64 / tunnels as f64
    );
    drop(idle);
}
