//! Datagrams per second and added latency of the UDP path (transparent-UDP client → a
//! plain TCP transport → transparent-UDP server → UDP echo) against direct UDP to the same
//! echo, on loopback.
//!
//! `cargo run --release -p ptkit-udp --example udp_bench [-- SIZE PEERS SECONDS]`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ptkit_core::shutdown::Shutdown;
use ptkit_core::{
    Accepted, Args, BoxFuture, ClientMeta, Conn, Connector, Pending, StatsCounter, Target,
    TransportError, TransportListener,
};
use ptkit_udp::{TransportPath, UdpOptions, serve_client, serve_server};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

struct Plain;

impl Connector for Plain {
    fn name(&self) -> &str {
        "plain"
    }
    fn is_bound(&self) -> bool {
        true
    }
    fn connect(
        &self,
        _: &Args,
        dest: Option<Target>,
    ) -> BoxFuture<'static, Result<Conn, TransportError>> {
        Box::pin(async move {
            let s = TcpStream::connect(dest.unwrap().to_string()).await?;
            s.set_nodelay(true)?;
            Ok(Box::new(s) as Conn)
        })
    }
}

struct PlainListener(TcpListener);

impl TransportListener for PlainListener {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
    fn accept(&mut self) -> BoxFuture<'_, std::io::Result<Pending>> {
        Box::pin(async move {
            let (s, _) = self.0.accept().await?;
            s.set_nodelay(true)?;
            let p: Pending = Box::pin(async move {
                Ok(Accepted {
                    conn: Box::new(s),
                    meta: ClientMeta::default(),
                })
            });
            Ok(p)
        })
    }
}

async fn echo() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let a = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(&buf[..n], from).await;
        }
    });
    a
}

/// Median and p99 round trip of `n` ping-pongs.
async fn latency(to: SocketAddr, size: usize, n: usize) -> (Duration, Duration) {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let d = vec![7u8; size];
    let mut buf = vec![0u8; 65536];
    // Warm up (opens the transport connection).
    for _ in 0..20 {
        s.send_to(&d, to).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(1), s.recv_from(&mut buf)).await;
    }
    let mut rtts = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.send_to(&d, to).await.unwrap();
        if tokio::time::timeout(Duration::from_secs(1), s.recv_from(&mut buf))
            .await
            .is_ok()
        {
            rtts.push(t.elapsed());
        }
    }
    rtts.sort();
    (rtts[rtts.len() / 2], rtts[rtts.len() * 99 / 100])
}

/// Echoed datagrams per second with `peers` sockets each keeping a window of 32 in flight.
async fn rate(to: SocketAddr, size: usize, peers: usize, secs: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..peers {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let d = vec![1u8; size];
            let mut buf = vec![0u8; 65536];
            let mut inflight = 0;
            while Instant::now() < end {
                while inflight < 32 {
                    s.send_to(&d, to).await.unwrap();
                    inflight += 1;
                }
                match tokio::time::timeout(Duration::from_millis(50), s.recv_from(&mut buf)).await {
                    Ok(_) => {
                        inflight -= 1;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => inflight = 0, // lost: refill the window
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / secs as f64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let size = args.first().copied().unwrap_or(1200);
    let peers = args.get(1).copied().unwrap_or(4);
    let secs = args.get(2).copied().unwrap_or(3) as u64;
    let target = echo().await;
    let sd = Shutdown::new();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = tcp.local_addr().unwrap();
    let stats = Arc::new(StatsCounter::new("plain"));
    serve_server(
        Box::new(PlainListener(tcp)),
        Target::from_socket_addr(target),
        UdpOptions::default(),
        stats.clone(),
        sd.clone(),
        Duration::from_secs(5),
    );
    let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let via = front.local_addr().unwrap();
    let path = TransportPath {
        connector: Arc::new(Plain),
        settings: Args::new(),
        dest: Some(Target::from_socket_addr(server)),
    };
    let counters = serve_client(front, path, UdpOptions::default(), stats, sd.clone());

    println!("datagram size {size} B, {peers} peers x 32 in flight, {secs} s per rate run");
    let (d50, d99) = latency(target, size, 2000).await;
    let (u50, u99) = latency(via, size, 2000).await;
    println!("round trip direct UDP:        p50 {d50:?}  p99 {d99:?}");
    println!("round trip via transparent-UDP over plain: p50 {u50:?}  p99 {u99:?}");
    println!("added latency (p50): {:?}", u50.saturating_sub(d50));
    let rd = rate(target, size, peers, secs).await;
    let ru = rate(via, size, peers, secs).await;
    println!("echoed datagrams/s direct UDP: {rd:.0}");
    println!(
        "echoed datagrams/s via transparent-UDP over plain: {ru:.0} ({:.0}% of direct)",
        ru / rd * 100.0
    );
    println!(
        "client drops (queue full / would block): {}",
        counters.dropped.load(Ordering::Relaxed)
    );
}
