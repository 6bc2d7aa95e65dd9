//! `ptkit demo`: both ends of a `plain` tunnel on loopback carrying a real, verified transfer
//! — and the small load-generation helpers the benchmark reuses.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ptkit_core::net::{DirectDialer, TcpUpstream, bind_tcp};
use ptkit_core::server::{ServerLimits, proxy};
use ptkit_core::shutdown::Shutdown;
use ptkit_core::{Args, ServerConfig, ServerTransport, StatsCounter, Target};
use ptkit_tor::socks::client;
use ptkit_tor::socks_front::{self, SocksLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::transports::plain::{Plain, PlainConnector};

const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// Starts a TCP echo server on loopback; returns its address.
pub async fn echo_server(shutdown: &Shutdown) -> anyhow::Result<SocketAddr> {
    let listener = bind_tcp(LOOPBACK)?;
    let addr = listener.local_addr()?;
    let sd = shutdown.clone();
    shutdown.spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            sd.spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Ok(addr)
}

/// Opens a SOCKS5 connection through `proxy` to `target`, with PT arguments if non-empty.
pub async fn socks5_connect(
    proxy: SocketAddr,
    target: &Target,
    args: &Args,
) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(proxy)
        .await
        .context("connect to SOCKS port")?;
    s.set_nodelay(true)?;
    client::dial_v5_with_args(&mut s, args.encode_client().as_bytes(), target).await?;
    Ok(s)
}

/// Sends `bytes` of a deterministic pattern through `stream` to an echo and checks every
/// byte that comes back. Returns the elapsed time.
pub async fn echo_transfer(stream: TcpStream, bytes: u64) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        while sent < bytes {
            let n = (bytes - sent).min(buf.len() as u64) as usize;
            fill(&mut buf[..n], sent);
            w.write_all(&buf[..n]).await?;
            sent += n as u64;
        }
        w.shutdown().await?;
        Ok::<_, std::io::Error>(())
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        fill(&mut want[..n], got);
        if buf[..n] != want[..n] {
            bail!("corrupted byte within offset {got}..{}", got + n as u64);
        }
        got += n as u64;
    }
    writer.await??;
    if got != bytes {
        bail!("echo returned {got} of {bytes} bytes");
    }
    Ok(start.elapsed())
}

fn fill(buf: &mut [u8], offset: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        let x = offset + i as u64;
        *b = (x ^ (x >> 8) ^ (x >> 16)).wrapping_mul(31) as u8;
    }
}

/// A running loopback tunnel: echo ← plain server ← plain client (SOCKS).
#[derive(Debug)]
pub struct Tunnel {
    /// The client's SOCKS port.
    pub socks: SocketAddr,
    /// The plain server.
    pub server: SocketAddr,
    /// The echo target behind the server.
    pub target: SocketAddr,
    /// Stops everything.
    pub shutdown: Shutdown,
}

/// Starts the whole tunnel in this process.
pub async fn start_tunnel() -> anyhow::Result<Tunnel> {
    let shutdown = Shutdown::new();
    let target = echo_server(&shutdown).await?;
    let listener = Plain
        .listen(ServerConfig {
            listen: LOOPBACK,
            options: Args::new(),
            state_dir: None,
        })
        .await?;
    let server = listener.local_addr()?;
    let upstream = Arc::new(TcpUpstream {
        target: Target::from_socket_addr(target),
        dialer: DirectDialer::default(),
    });
    proxy(
        listener,
        upstream,
        Arc::new(StatsCounter::new("plain")),
        shutdown.clone(),
        ServerLimits::default(),
    );
    let socks_listener = bind_tcp(LOOPBACK)?;
    let socks = socks_listener.local_addr()?;
    let connector = Arc::new(PlainConnector::fixed(
        Target::from_socket_addr(server),
        Arc::new(DirectDialer::default()),
    ));
    socks_front::serve(
        socks_listener,
        connector,
        Arc::new(StatsCounter::new("plain")),
        shutdown.clone(),
        SocksLimits::default(),
    );
    Ok(Tunnel {
        socks,
        server,
        target,
        shutdown,
    })
}

/// Runs the demo and prints what happened and what to try next.
pub async fn run(mebibytes: u64) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    let t = start_tunnel().await?;
    writeln!(out, "ptkit demo: a `plain` tunnel on loopback")?;
    writeln!(out, "  echo target     {}", t.target)?;
    writeln!(
        out,
        "  plain server    {}  (forwards to the echo target)",
        t.server
    )?;
    writeln!(
        out,
        "  plain client    {}  (SOCKS5; every connection goes to the server)",
        t.socks
    )?;
    let mut setups = Vec::new();
    for _ in 0..50 {
        let start = Instant::now();
        let mut s =
            socks5_connect(t.socks, &Target::from_socket_addr(t.server), &Args::new()).await?;
        s.write_all(b"x").await?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await?;
        setups.push(start.elapsed());
    }
    setups.sort();
    let median = setups[setups.len() / 2];
    let bytes = mebibytes * 1024 * 1024;
    let stream = socks5_connect(t.socks, &Target::from_socket_addr(t.server), &Args::new()).await?;
    let elapsed = echo_transfer(stream, bytes).await?;
    let rate = (2 * bytes) as f64 / elapsed.as_secs_f64() / (1024.0 * 1024.0);
    writeln!(
        out,
        "  connect + first byte through the tunnel: median {:.3} ms over 50",
        median.as_secs_f64() * 1e3
    )?;
    writeln!(
        out,
        "  echoed {mebibytes} MiB through the tunnel and checked every byte: {:.2} s, {rate:.0} MiB/s (both directions)",
        elapsed.as_secs_f64()
    )?;
    writeln!(out, "\nTry next:")?;
    writeln!(
        out,
        "  ptkit server plain --listen 127.0.0.1:4000 --target 127.0.0.1:8000   # in one shell"
    )?;
    writeln!(
        out,
        "  ptkit client plain --listen 127.0.0.1:1080 --server 127.0.0.1:4000   # in another"
    )?;
    writeln!(
        out,
        "  python3 -m http.server 8000 --bind 127.0.0.1 &  curl --socks5 127.0.0.1:1080 http://127.0.0.1:8000/"
    )?;
    writeln!(
        out,
        "  the same over WebSocket: `ptkit server websocket ...` and `ptkit client websocket --url ws://127.0.0.1:4000/`"
    )?;
    writeln!(
        out,
        "  or put it behind tor: see README.md, \"Using ptkit with tor\"."
    )?;
    t.shutdown.abort();
    Ok(())
}
