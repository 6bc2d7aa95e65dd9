//! Streams per second through the bound→free mux: one transport connection (`plain`-like:
//! loopback TCP), a mux server with an allow rule for loopback, and C concurrent workers
//! each opening streams that carry a small request/response to an echo destination.
//!
//! ```text
//! cargo run --release -p ptkit-mux --example mux_bench -- [STREAMS] [CONCURRENCY] [BYTES]
//! ```
//! Defaults: 20000 streams, 64 concurrent, 64 bytes each way. Prints streams/s and the
//! median and 99th-percentile stream setup time (open → server reply), plus the same
//! request done with a fresh direct TCP connection for reference.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ptkit_core::net::DirectDialer;
use ptkit_core::shutdown::Shutdown;
use ptkit_core::{Args, BoxFuture, Conn, Connector, StatsCounter, Target, TransportError};
use ptkit_mux::{MuxClientConfig, MuxConnector, MuxServer, MuxServerConfig, Policy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A bound connector dialling one TCP address (the `plain` transport's client).
struct Tcp(std::net::SocketAddr);

impl Connector for Tcp {
    fn name(&self) -> &str {
        "tcp"
    }
    fn is_bound(&self) -> bool {
        true
    }
    fn connect(
        &self,
        _: &Args,
        _: Option<Target>,
    ) -> BoxFuture<'static, Result<Conn, TransportError>> {
        let a = self.0;
        Box::pin(async move {
            let s = TcpStream::connect(a).await?;
            s.set_nodelay(true)?;
            Ok(Box::new(s) as Conn)
        })
    }
}

async fn echo() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    a
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

#[tokio::main]
async fn main() {
    let argv: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let streams = argv.first().copied().unwrap_or(20_000);
    let conc = argv.get(1).copied().unwrap_or(64);
    let bytes = argv.get(2).copied().unwrap_or(64);
    let dest = echo().await;

    // Mux server on a plain TCP listener.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = l.local_addr().unwrap();
    let server = MuxServer::new(
        MuxServerConfig {
            policy: Policy::parse(&["127.0.0.1/32"]).unwrap(),
            dialer: DirectDialer::default(),
            ..MuxServerConfig::default()
        },
        Arc::new(StatsCounter::new("mux")),
    );
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            let server = server.clone();
            tokio::spawn(async move { server.serve_conn(Box::new(s), Shutdown::new()).await });
        }
    });
    let mux = MuxConnector::new(Arc::new(Tcp(server_addr)), MuxClientConfig::default());
    mux.session().await.unwrap();

    for (label, direct) in [("mux", false), ("direct TCP", true)] {
        let started = Instant::now();
        let per = streams / conc;
        let tasks: Vec<_> = (0..conc)
            .map(|_| {
                let mux = mux.clone();
                tokio::spawn(async move {
                    let mut setups = Vec::with_capacity(per);
                    let data = vec![7u8; bytes];
                    let mut back = vec![0u8; bytes];
                    for _ in 0..per {
                        let t0 = Instant::now();
                        let mut c: Conn = if direct {
                            let s = TcpStream::connect(dest).await.unwrap();
                            s.set_nodelay(true).unwrap();
                            Box::new(s)
                        } else {
                            mux.open(Target::from_socket_addr(dest)).await.unwrap()
                        };
                        setups.push(t0.elapsed());
                        c.write_all(&data).await.unwrap();
                        c.read_exact(&mut back).await.unwrap();
                    }
                    setups
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let secs = started.elapsed().as_secs_f64();
        let n = all.len();
        println!(
            "{label}: {n} streams, {conc} concurrent, {bytes} B each way: {:.0} streams/s; setup p50 {:?} p99 {:?}",
            n as f64 / secs,
            pct(&mut all, 0.5),
            pct(&mut all, 0.99)
        );
    }
}
