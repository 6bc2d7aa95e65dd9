//! `ptkit turbotunnel`: a load tester for Snowflake servers. It speaks turbotunnel (token,
//! ClientID, KCP, smux) over WebSockets straight to a server, with no WebRTC or proxy, and
//! can switch WebSockets mid-session as a client does when its proxy goes away.
//!
//! The server's upstream must be `examples/loadgen server` (its `U`/`D`/`P` commands), as in
//! `scripts/bench-snowflake.sh`. One `key=value` result line goes to stdout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ptkit_snowflake::client::{ClientOptions, TurbotunnelClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// What each session does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Send bytes to the upstream (`U`), which acknowledges the count.
    Up,
    /// Receive bytes from the upstream (`D`).
    Down,
    /// Round trips of 64 bytes (`P`): latency percentiles.
    Rtt,
    /// Open the sessions, one round trip each, then hold them idle for --hold seconds.
    Idle,
}

/// Options of `ptkit turbotunnel`.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// The server's WebSocket URL (ws:// or wss://); add ?client_ip=… to test USERADDR.
    #[arg(long)]
    pub url: String,
    /// Concurrent sessions (each its own ClientID, KCP session and WebSocket).
    #[arg(long, default_value_t = 1)]
    pub sessions: usize,
    /// What the sessions do.
    #[arg(long, value_enum, default_value = "rtt")]
    pub mode: Mode,
    /// up/down: bytes in all, split evenly across sessions.
    #[arg(long, default_value_t = 64 << 20)]
    pub bytes: u64,
    /// rtt: round trips per session.
    #[arg(long, default_value_t = 50)]
    pub round_trips: usize,
    /// rtt: pause between a session's round trips (ms), for latency at a steady rate
    /// rather than at saturation.
    #[arg(long, default_value_t = 0)]
    pub interval_ms: u64,
    /// idle: seconds to hold the sessions open after they are all up.
    #[arg(long, default_value_t = 10)]
    pub hold: u64,
    /// Replace each session's WebSocket this often (seconds), as after a proxy failure.
    #[arg(long)]
    pub switch_every: Option<f64>,
    /// Sessions being set up at once.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// PEM CA to trust for wss.
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

struct Outcome {
    bytes: u64,
    rtts: Vec<Duration>,
}

async fn one_session(
    args: Arc<LoadArgs>,
    per_session: u64,
    gate: Arc<Semaphore>,
    ready: Arc<tokio::sync::Barrier>,
) -> anyhow::Result<Outcome> {
    let permit = gate.acquire().await?;
    let client = Arc::new(
        TurbotunnelClient::connect(ClientOptions {
            url: args.url.clone(),
            ca_file: args.ca_file.clone(),
            client_id: None,
        })
        .await
        .context("WebSocket connect")?,
    );
    let mut stream = client.open_stream()?;
    drop(permit);
    let switcher = args.switch_every.map(|secs| {
        let c = client.clone();
        tokio::spawn(async move {
            let period = Duration::from_secs_f64(secs.max(0.05));
            loop {
                tokio::time::sleep(period).await;
                if c.switch_carrier().await.is_err() {
                    return;
                }
            }
        })
    });
    let mut rtts = Vec::new();
    let mut bytes = 0;
    let mut buf = vec![0u8; 64 * 1024];
    match args.mode {
        Mode::Up => {
            ready.wait().await;
            stream.write_all(b"U").await?;
            stream.write_all(&per_session.to_be_bytes()).await?;
            let mut left = per_session;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                stream.write_all(&buf[..n]).await?;
                left -= n as u64;
            }
            let mut ack = [0u8; 8];
            stream.read_exact(&mut ack).await?;
            if u64::from_be_bytes(ack) != per_session {
                bail!(
                    "upstream counted {} of {per_session} bytes",
                    u64::from_be_bytes(ack)
                );
            }
            bytes = per_session;
        }
        Mode::Down => {
            ready.wait().await;
            stream.write_all(b"D").await?;
            stream.write_all(&per_session.to_be_bytes()).await?;
            while bytes < per_session {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    bail!("EOF after {bytes} of {per_session} bytes");
                }
                bytes += n as u64;
            }
        }
        Mode::Rtt | Mode::Idle => {
            stream.write_all(b"P").await?;
            let trips = if args.mode == Mode::Rtt {
                args.round_trips
            } else {
                1
            };
            let mut msg = [0u8; 64];
            // Warm-up round trip: the first one includes the upstream dial.
            stream.write_all(&msg).await?;
            stream.read_exact(&mut msg).await?;
            ready.wait().await;
            for i in 0..trips {
                if i > 0 && args.interval_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
                }
                let t = Instant::now();
                stream.write_all(&msg).await?;
                stream.read_exact(&mut msg).await?;
                rtts.push(t.elapsed());
            }
            if args.mode == Mode::Idle {
                tokio::time::sleep(Duration::from_secs(args.hold)).await;
                // Still alive after the hold: one more round trip.
                stream.write_all(&msg).await?;
                stream.read_exact(&mut msg).await?;
            }
        }
    }
    if let Some(s) = switcher {
        s.abort();
    }
    Ok(Outcome { bytes, rtts })
}

/// Result lines go to stdout, flushed at once (scripts wait for `ready`).
fn emit(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Runs the load and prints one result line; the exit code is 1 if any session failed.
pub async fn run(args: LoadArgs) -> anyhow::Result<i32> {
    if args.sessions == 0 {
        bail!("--sessions must be at least 1");
    }
    let args = Arc::new(args);
    let per_session = args.bytes / args.sessions as u64;
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    // Everyone starts measuring together, once every session is up.
    let ready = Arc::new(tokio::sync::Barrier::new(args.sessions + 1));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.sessions);
    for _ in 0..args.sessions {
        tasks.push(tokio::spawn(one_session(
            args.clone(),
            per_session,
            gate.clone(),
            ready.clone(),
        )));
    }
    let deadline = Duration::from_secs(args.timeout);
    let waited = tokio::time::timeout(deadline, ready.wait()).await;
    let setup = started.elapsed();
    if waited.is_err() {
        bail!("sessions not all up within {}s", args.timeout);
    }
    if args.mode == Mode::Idle {
        emit(&format!(
            "ready sessions={} setup_s={:.2}",
            args.sessions,
            setup.as_secs_f64()
        ));
    }
    let t0 = Instant::now();
    let mut bytes = 0u64;
    let mut rtts = Vec::new();
    let mut failures = 0usize;
    let mut first_error = None;
    for t in tasks {
        match tokio::time::timeout(deadline, t).await {
            Ok(Ok(Ok(o))) => {
                bytes += o.bytes;
                rtts.extend(o.rtts);
            }
            Ok(Ok(Err(e))) => {
                failures += 1;
                first_error.get_or_insert(format!("{e:#}"));
            }
            _ => {
                failures += 1;
                first_error.get_or_insert("timed out".into());
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    rtts.sort();
    emit(&format!(
        "mode={:?} sessions={} setup_s={:.2} bytes={} secs={:.3} mib_s={:.1} rtt_p50_ms={:.2} rtt_p99_ms={:.2} failures={}",
        args.mode,
        args.sessions,
        setup.as_secs_f64(),
        bytes,
        secs,
        bytes as f64 / secs / (1024.0 * 1024.0),
        percentile(&rtts, 0.5),
        percentile(&rtts, 0.99),
        failures
    ));
    if let Some(e) = first_error {
        eprintln!("ptkit turbotunnel: first failure: {e}");
    }
    Ok(if failures > 0 { 1 } else { 0 })
}
