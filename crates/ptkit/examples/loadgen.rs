//! `loadgen`: the load generator behind `scripts/bench.sh`.
//!
//! `loadgen server --listen ADDR` answers one command per connection:
//!
//! * `U` + u64 (big-endian) N: read and discard exactly N bytes, reply with the 8-byte count,
//!   close. (No half-close is needed, so it works through proxies that tear down both
//!   directions at the first EOF, as obfs4proxy does.)
//! * `D` + u64 N: write N bytes, close.
//! * `P`: echo everything until EOF (used for connection-setup latency).
//!
//! `loadgen client --target ADDR [--socks ADDR [--socks-args 'k=v;k=v']] --mode up|down|setup`
//! measures throughput (MiB/s over `--bytes` split across `--conns` parallel connections,
//! clock started once every connection is established) or connection setup (TCP connect
//! start → first echoed byte through the whole path, over `--count` sequential connections)
//! and prints one `key=value` line.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use ptkit::demo::socks5_connect;
use ptkit_core::{Args, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Parser, Debug)]
#[command(name = "loadgen", about = "ptkit benchmark load generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the U/D/P protocol; prints `listen=ADDR` once bound.
    Server {
        /// Address to listen on (port 0 picks one).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Exit after this many seconds.
        #[arg(long, default_value_t = 3600)]
        max_secs: u64,
        /// Exit after accepting this many connections.
        #[arg(long, default_value_t = 1_000_000)]
        max_conns: u64,
        /// Per-read/write idle timeout in seconds for each connection.
        #[arg(long, default_value_t = 60)]
        idle_secs: u64,
    },
    /// Measure throughput or connection setup against a `loadgen server`.
    Client {
        /// The loadgen server (or, with --socks, the SOCKS CONNECT target).
        #[arg(long)]
        target: String,
        /// Go through this SOCKS5 proxy.
        #[arg(long)]
        socks: Option<SocketAddr>,
        /// Per-connection PT arguments for the SOCKS handshake (`k=v;k=v`).
        #[arg(long, default_value = "")]
        socks_args: String,
        /// What to measure.
        #[arg(long, value_enum)]
        mode: Mode,
        /// Total bytes for up/down (split across --conns).
        #[arg(long, default_value_t = 1 << 30)]
        bytes: u64,
        /// Parallel connections for up/down.
        #[arg(long, default_value_t = 1)]
        conns: u64,
        /// Sequential connections timed for setup.
        #[arg(long, default_value_t = 200)]
        count: usize,
        /// Untimed setup connections made first.
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        /// Write/read buffer size in bytes.
        #[arg(long, default_value_t = 256 * 1024)]
        buf: usize,
        /// Give up after this many seconds in total.
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
        /// Label echoed into the output line.
        #[arg(long, default_value = "-")]
        label: String,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Up,
    Down,
    Setup,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Up => "up",
            Mode::Down => "down",
            Mode::Setup => "setup",
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Server {
                listen,
                max_secs,
                max_conns,
                idle_secs,
            } => {
                server(
                    listen,
                    Duration::from_secs(max_secs),
                    max_conns,
                    Duration::from_secs(idle_secs),
                )
                .await
            }
            Command::Client {
                target,
                socks,
                socks_args,
                mode,
                bytes,
                conns,
                count,
                warmup,
                buf,
                timeout_secs,
                label,
            } => {
                let path = Path::new(&target, socks, &socks_args)?;
                let opts = ClientOpts {
                    mode,
                    bytes,
                    conns: conns.max(1),
                    count: count.max(1),
                    warmup,
                    buf: buf.max(1),
                    label,
                };
                match timeout(Duration::from_secs(timeout_secs), client(path, opts)).await {
                    Ok(r) => r,
                    Err(_) => bail!("timed out after {timeout_secs} s"),
                }
            }
        }
    });
    runtime.shutdown_background();
    if let Err(e) = result {
        eprintln!("loadgen: {e:#}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// Server

async fn server(
    listen: SocketAddr,
    max_time: Duration,
    max_conns: u64,
    idle: Duration,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listen={}", listener.local_addr()?)?;
        out.flush()?;
    }
    let deadline = tokio::time::Instant::now() + max_time;
    let mut accepted = 0u64;
    while accepted < max_conns {
        let (stream, _) = match tokio::time::timeout_at(deadline, listener.accept()).await {
            Err(_) => break,
            Ok(Err(e)) => {
                eprintln!("loadgen server: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Ok(Ok(s)) => s,
        };
        accepted += 1;
        tokio::spawn(async move {
            if let Err(e) = serve_one(stream, idle).await {
                eprintln!("loadgen server: connection: {e:#}");
            }
        });
    }
    Ok(())
}

/// Runs `fut` with the idle timeout, turning expiry into an error.
async fn idle_bound<T>(
    idle: Duration,
    fut: impl Future<Output = std::io::Result<T>>,
) -> anyhow::Result<T> {
    match timeout(idle, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => bail!("idle for {idle:?}"),
    }
}

async fn serve_one(mut s: TcpStream, idle: Duration) -> anyhow::Result<()> {
    s.set_nodelay(true)?;
    let mut cmd = [0u8; 1];
    idle_bound(idle, s.read_exact(&mut cmd)).await?;
    let mut buf = vec![0u8; 256 * 1024];
    match cmd[0] {
        b'U' => {
            let mut len = [0u8; 8];
            idle_bound(idle, s.read_exact(&mut len)).await?;
            let want = u64::from_be_bytes(len);
            let mut got = 0u64;
            while got < want {
                let cap = (want - got).min(buf.len() as u64) as usize;
                let n = idle_bound(idle, s.read(&mut buf[..cap])).await?;
                if n == 0 {
                    bail!("EOF after {got} of {want} bytes");
                }
                got += n as u64;
            }
            idle_bound(idle, s.write_all(&got.to_be_bytes())).await?;
            idle_bound(idle, s.flush()).await?;
            // Wait for the client to close first so our close never resets the reply.
            let _ = timeout(idle, s.read(&mut buf)).await;
        }
        b'D' => {
            let mut len = [0u8; 8];
            idle_bound(idle, s.read_exact(&mut len)).await?;
            let want = u64::from_be_bytes(len);
            pattern(&mut buf);
            let mut sent = 0u64;
            while sent < want {
                let n = (want - sent).min(buf.len() as u64) as usize;
                idle_bound(idle, s.write_all(&buf[..n])).await?;
                sent += n as u64;
            }
            idle_bound(idle, s.flush()).await?;
            let _ = timeout(idle, s.read(&mut buf)).await;
        }
        b'P' => loop {
            let n = idle_bound(idle, s.read(&mut buf)).await?;
            if n == 0 {
                break;
            }
            idle_bound(idle, s.write_all(&buf[..n])).await?;
        },
        other => bail!("unknown command byte {other:#04x}"),
    }
    Ok(())
}

fn pattern(buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(17) as u8;
    }
}

// ---------------------------------------------------------------------------------------------
// Client

#[derive(Clone, Debug)]
struct Path {
    direct: Option<SocketAddr>,
    socks: Option<(SocketAddr, Target, Args)>,
}

impl Path {
    fn new(target: &str, socks: Option<SocketAddr>, socks_args: &str) -> anyhow::Result<Self> {
        let t = Target::parse(target).with_context(|| format!("--target {target:?}"))?;
        match socks {
            Some(proxy) => {
                let args = Args::parse_client(socks_args.as_bytes())
                    .with_context(|| format!("--socks-args {socks_args:?}"))?;
                Ok(Path {
                    direct: None,
                    socks: Some((proxy, t, args)),
                })
            }
            None => {
                let addr = t
                    .socket_addr()
                    .with_context(|| format!("--target {target:?} must be an IP:port"))?;
                Ok(Path {
                    direct: Some(addr),
                    socks: None,
                })
            }
        }
    }

    async fn connect(&self) -> anyhow::Result<TcpStream> {
        if let Some((proxy, target, args)) = &self.socks {
            return socks5_connect(*proxy, target, args).await;
        }
        let addr = self.direct.context("no target")?;
        let s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        s.set_nodelay(true)?;
        Ok(s)
    }
}

#[derive(Debug)]
struct ClientOpts {
    mode: Mode,
    bytes: u64,
    conns: u64,
    count: usize,
    warmup: usize,
    buf: usize,
    label: String,
}

async fn client(path: Path, o: ClientOpts) -> anyhow::Result<()> {
    let line = match o.mode {
        Mode::Up | Mode::Down => {
            let mut streams = Vec::new();
            for _ in 0..o.conns {
                streams.push(path.connect().await?);
            }
            let per = o.bytes / o.conns;
            let start = Instant::now();
            let mut tasks = Vec::new();
            for (i, s) in streams.into_iter().enumerate() {
                let n = if i as u64 == o.conns - 1 {
                    o.bytes - per * (o.conns - 1)
                } else {
                    per
                };
                let buf = o.buf;
                tasks.push(tokio::spawn(async move {
                    match o.mode {
                        Mode::Up => upload(s, n, buf).await,
                        _ => download(s, n, buf).await,
                    }
                }));
            }
            for t in tasks {
                t.await??;
            }
            let secs = start.elapsed().as_secs_f64();
            format!(
                "label={} mode={} bytes={} conns={} secs={:.4} mib_s={:.1}",
                o.label,
                o.mode.name(),
                o.bytes,
                o.conns,
                secs,
                o.bytes as f64 / MIB / secs
            )
        }
        Mode::Setup => {
            let mut samples = Vec::with_capacity(o.count);
            for i in 0..(o.warmup + o.count) {
                let start = Instant::now();
                let mut s = path.connect().await?;
                s.write_all(b"Px").await?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await?;
                let elapsed = start.elapsed();
                if b[0] != b'x' {
                    bail!("echo returned {:#04x}", b[0]);
                }
                drop(s);
                if i >= o.warmup {
                    samples.push(elapsed);
                }
            }
            samples.sort();
            let q = |p: f64| {
                let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
                samples[idx.min(samples.len() - 1)].as_secs_f64() * 1e3
            };
            format!(
                "label={} mode=setup count={} median_ms={:.3} p90_ms={:.3} min_ms={:.3} max_ms={:.3}",
                o.label,
                samples.len(),
                q(0.5),
                q(0.9),
                q(0.0),
                q(1.0)
            )
        }
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

async fn upload(mut s: TcpStream, n: u64, bufsize: usize) -> anyhow::Result<()> {
    let mut head = [0u8; 9];
    head[0] = b'U';
    head[1..].copy_from_slice(&n.to_be_bytes());
    s.write_all(&head).await?;
    let mut buf = vec![0u8; bufsize];
    pattern(&mut buf);
    let mut sent = 0u64;
    while sent < n {
        let k = (n - sent).min(buf.len() as u64) as usize;
        s.write_all(&buf[..k]).await?;
        sent += k as u64;
    }
    s.flush().await?;
    let mut reply = [0u8; 8];
    s.read_exact(&mut reply)
        .await
        .context("reading the server's byte count")?;
    let got = u64::from_be_bytes(reply);
    if got != n {
        bail!("server counted {got} of {n} bytes");
    }
    Ok(())
}

async fn download(mut s: TcpStream, n: u64, bufsize: usize) -> anyhow::Result<()> {
    let mut head = [0u8; 9];
    head[0] = b'D';
    head[1..].copy_from_slice(&n.to_be_bytes());
    s.write_all(&head).await?;
    let mut buf = vec![0u8; bufsize];
    let mut got = 0u64;
    while got < n {
        let k = s.read(&mut buf).await?;
        if k == 0 {
            bail!("EOF after {got} of {n} bytes");
        }
        got += k as u64;
    }
    Ok(())
}
