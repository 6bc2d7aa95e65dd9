//! `idle_tunnels`: opens many tunnels, proves each one reaches the target, then holds them
//! idle so `scripts/bench-websocket.sh` can read the server's memory per idle tunnel.
//!
//! Two ways in, both ending at a `loadgen server` (its `P` echo command):
//!
//! * `--url ws://HOST:PORT/PATH`: a minimal WebSocket client speaking to a WebSocket server
//!   (`ptkit server websocket`, websockify) directly: raw HTTP/1.1 upgrade bytes, check for
//!   `101`, then one masked binary frame `Px` and wait for the echoed `x`, which only
//!   arrives once the server has dialled its target and relays.
//! * `--socks ADDR --target ADDR [--socks-args 'k=v;k=v']`: SOCKS5 CONNECT through a PT
//!   client (obfs4proxy, `ptkit client …`), then `Px` and the echoed `x` in the clear.
//!
//! `--no-echo` skips the echo (for comparing what carrying one byte costs); without it, a
//! tunnel counts only once the echo has come back.
//!
//! After every tunnel is open it prints one `open=N failed=K secs=S` line on stdout and
//! holds the connections, sending nothing, for `--hold-secs` (or until killed).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use ptkit::demo::socks5_connect;
use ptkit_core::{Args, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::timeout;

#[derive(Parser, Debug)]
#[command(name = "idle_tunnels", about = "hold many idle tunnels open")]
struct Cli {
    /// WebSocket server URL (ws:// only): connect to it directly.
    #[arg(long, conflicts_with = "socks")]
    url: Option<String>,
    /// Go through this SOCKS5 proxy instead (needs --target).
    #[arg(long, requires = "target")]
    socks: Option<SocketAddr>,
    /// The SOCKS CONNECT target.
    #[arg(long)]
    target: Option<String>,
    /// Per-connection PT arguments for the SOCKS handshake (`k=v;k=v`).
    #[arg(long, default_value = "")]
    socks_args: String,
    /// Tunnels to open.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Tunnels being set up at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds allowed for one tunnel's setup.
    #[arg(long, default_value_t = 20)]
    setup_secs: u64,
    /// Seconds allowed for opening all of them.
    #[arg(long, default_value_t = 120)]
    open_secs: u64,
    /// Seconds to hold the tunnels once open, then exit.
    #[arg(long, default_value_t = 300)]
    hold_secs: u64,
    /// Skip the one-byte echo (ws: stop after the 101; the tunnel then carried no data).
    #[arg(long)]
    no_echo: bool,
}

/// Where each tunnel goes.
#[derive(Debug, Clone)]
enum Way {
    Ws {
        addr: SocketAddr,
        host: String,
        path: String,
    },
    Socks {
        proxy: SocketAddr,
        target: Target,
        args: Args,
    },
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("idle_tunnels: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(run(cli));
    runtime.shutdown_background();
    if let Err(e) = result {
        eprintln!("idle_tunnels: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let way = match (&cli.url, cli.socks) {
        (Some(url), None) => parse_ws_url(url)?,
        (None, Some(proxy)) => {
            let t = cli.target.as_deref().context("--socks needs --target")?;
            Way::Socks {
                proxy,
                target: Target::parse(t).with_context(|| format!("--target {t:?}"))?,
                args: Args::parse_client(cli.socks_args.as_bytes())
                    .with_context(|| format!("--socks-args {:?}", cli.socks_args))?,
            }
        }
        _ => bail!("give exactly one of --url or --socks"),
    };
    let way = Arc::new(way);
    let gate = Arc::new(Semaphore::new(cli.concurrency.max(1)));
    let per = Duration::from_secs(cli.setup_secs);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(cli.count);
    for _ in 0..cli.count {
        let way = way.clone();
        let gate = gate.clone();
        let echo = !cli.no_echo;
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            match timeout(per, open(&way, echo)).await {
                Ok(r) => r,
                Err(_) => bail!("setup took longer than {per:?}"),
            }
        }));
    }
    let mut held = Vec::with_capacity(cli.count);
    let mut failed = 0usize;
    let mut first_error = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(cli.open_secs);
    for t in tasks {
        match tokio::time::timeout_at(deadline, t).await {
            Ok(Ok(Ok(s))) => held.push(s),
            Ok(Ok(Err(e))) => {
                failed += 1;
                first_error.get_or_insert(format!("{e:#}"));
            }
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(format!("task: {e}"));
            }
            Err(_) => {
                failed += 1;
                first_error.get_or_insert("gave up: --open-secs elapsed".to_owned());
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if let Some(e) = &first_error {
        eprintln!("idle_tunnels: {failed} tunnel(s) failed; first: {e}");
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "open={} failed={failed} secs={secs:.2}", held.len())?;
        out.flush()?;
    }
    if held.is_empty() {
        bail!("no tunnel opened");
    }
    tokio::time::sleep(Duration::from_secs(cli.hold_secs)).await;
    drop(held);
    Ok(())
}

fn parse_ws_url(url: &str) -> anyhow::Result<Way> {
    let rest = url
        .strip_prefix("ws://")
        .with_context(|| format!("--url {url:?}: only ws:// is supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority
        .parse()
        .with_context(|| format!("--url {url:?}: the authority must be IP:port"))?;
    Ok(Way::Ws {
        addr,
        host: authority.to_owned(),
        path: path.to_owned(),
    })
}

/// Opens one tunnel and, with `echo`, checks that it reaches the echoing target.
async fn open(way: &Way, echo: bool) -> anyhow::Result<TcpStream> {
    match way {
        Way::Ws { addr, host, path } => {
            let mut s = TcpStream::connect(addr)
                .await
                .with_context(|| format!("connect {addr}"))?;
            s.set_nodelay(true)?;
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await?;
            let mut head = Vec::with_capacity(512);
            let mut b = [0u8; 512];
            let body_start = loop {
                let n = s.read(&mut b).await?;
                if n == 0 {
                    bail!("EOF during the upgrade answer");
                }
                head.extend_from_slice(&b[..n]);
                if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                if head.len() > 16 * 1024 {
                    bail!("upgrade answer too long");
                }
            };
            if !head.starts_with(b"HTTP/1.1 101") {
                let line = head.split(|&c| c == b'\r').next().unwrap_or_default();
                bail!("upgrade refused: {}", String::from_utf8_lossy(line));
            }
            if !echo {
                return Ok(s);
            }
            // One masked binary frame carrying "Px" (mask key 1,2,3,4).
            let mask = [1u8, 2, 3, 4];
            let payload = b"Px";
            let mut frame = vec![0x82, 0x80 | payload.len() as u8];
            frame.extend_from_slice(&mask);
            frame.extend(payload.iter().enumerate().map(|(i, c)| c ^ mask[i % 4]));
            s.write_all(&frame).await?;
            // Expect an unmasked binary frame carrying "x" (one frame; payload < 126 bytes).
            let mut got: Vec<u8> = head[body_start..].to_vec();
            loop {
                if got.len() >= 2 {
                    let len = usize::from(got[1] & 0x7f);
                    if got[1] & 0x80 != 0 || len >= 126 {
                        bail!("unexpected frame header {:02x} {:02x}", got[0], got[1]);
                    }
                    if got.len() >= 2 + len {
                        if got[0] & 0x0f != 0x2 || &got[2..2 + len] != b"x" {
                            bail!("unexpected echo frame {:02x?}", &got[..2 + len]);
                        }
                        break;
                    }
                }
                let n = s.read(&mut b).await?;
                if n == 0 {
                    bail!("EOF before the echo");
                }
                got.extend_from_slice(&b[..n]);
            }
            Ok(s)
        }
        Way::Socks {
            proxy,
            target,
            args,
        } => {
            let mut s = socks5_connect(*proxy, target, args).await?;
            if !echo {
                return Ok(s);
            }
            s.write_all(b"Px").await?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await?;
            if b[0] != b'x' {
                bail!("echo returned {:#04x}", b[0]);
            }
            Ok(s)
        }
    }
}
