//! Rough throughput of the turbotunnel data path against the Go reference peer
//! (`tests/go-turbotunnel`, kcp-go 5.6.1 + smux 1.5.16 + gorilla/websocket 1.5.0):
//! one stream echoes N MiB (default 64) through a TCP echo upstream, in four pairings:
//!
//! * (a) our client → our server
//! * (b) our client → Go server
//! * (c) Go client  → Go server
//! * (d) Go client  → our server
//!
//! Each server runs in its own process (ours is this example re-run as `serve-ours`), so
//! its CPU seconds can be read from `/proc/<pid>/stat`. The time is from opening the
//! stream (or, for the Go client, from starting its WebSocket dial) to the last echoed byte.
//!
//! ```text
//! cargo run --release -p ptkit-snowflake --example go_peer_bench -- [MiB] [rounds]
//! ```
//!
//! The Go peer comes from `PTKIT_GO_PEER`, or is built with `scripts/build-go-peer.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ptkit_core::net::{DirectDialer, TcpUpstream};
use ptkit_core::server::{ServerLimits, proxy};
use ptkit_core::shutdown::Shutdown;
use ptkit_core::{Args, ServerConfig, ServerTransport, StatsCounter, Target};
use ptkit_snowflake::SnowflakeServer;
use ptkit_snowflake::client::{ClientOptions, TurbotunnelClient};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

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

/// Child mode: our SnowflakeServer on 127.0.0.1:0 proxying to `upstream`; prints the port.
async fn serve_ours(upstream: SocketAddr) {
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
    let shutdown = Shutdown::new();
    let upstream = Arc::new(TcpUpstream {
        target: Target::from_socket_addr(upstream),
        dialer: DirectDialer::default(),
    });
    proxy(
        listener,
        upstream,
        Arc::new(StatsCounter::new("snowflake")),
        shutdown.clone(),
        ServerLimits::default(),
    );
    println!("LISTEN {addr}");
    // Runs until the parent kills it.
    std::future::pending::<()>().await;
}

/// User + system CPU seconds of a process so far (USER_HZ is 100 on Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After "pid (comm) ": state is field 3, utime 14, stime 15 → indices 11, 12.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

struct Server {
    url: String,
    child: Child,
}

async fn spawn_server(mut cmd: Command) -> Server {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("server starts")
        .unwrap()
        .expect("server prints LISTEN");
    let addr = line
        .strip_prefix("LISTEN ")
        .expect("LISTEN line")
        .to_string();
    Server {
        url: format!("ws://{addr}/?client_ip=192.0.2.9"),
        child,
    }
}

async fn our_server(upstream: SocketAddr) -> Server {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.arg("serve-ours").arg(upstream.to_string());
    spawn_server(cmd).await
}

async fn go_server(peer: &Path, upstream: SocketAddr) -> Server {
    let mut cmd = Command::new(peer);
    cmd.args(["server", "-listen", "127.0.0.1:0", "-upstream"])
        .arg(upstream.to_string());
    spawn_server(cmd).await
}

fn pattern(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// Our client: one stream, `len` bytes written and read back at once; seconds taken.
async fn our_client(url: &str, data: &Arc<Vec<u8>>) -> f64 {
    let client = TurbotunnelClient::connect(ClientOptions {
        url: url.to_string(),
        ca_file: None,
        client_id: None,
    })
    .await
    .unwrap();
    let start = Instant::now();
    let s = client.open_stream().unwrap();
    let (mut r, mut w) = tokio::io::split(s);
    let send = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&send).await.unwrap();
        w
    });
    let mut got = vec![0u8; data.len()];
    tokio::time::timeout(Duration::from_secs(600), r.read_exact(&mut got))
        .await
        .expect("echo within 600 s")
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert!(got == **data, "echoed bytes differ");
    drop(writer.await.unwrap());
    secs
}

/// The Go client: its own "OK <secs>" (dial included).
async fn go_client(peer: &Path, url: &str, len: usize) -> f64 {
    let out = Command::new(peer)
        .args(["client", "-url", url, "-timeout", "600s", "-echo-bytes"])
        .arg(len.to_string())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "Go client failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .trim()
        .strip_prefix("OK ")
        .and_then(|s| s.parse().ok())
        .expect("OK <secs>")
}

fn go_peer() -> PathBuf {
    if let Some(p) = std::env::var_os("PTKIT_GO_PEER") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::env::temp_dir().join("ptkit-go-turbotunnel");
    let status = std::process::Command::new("bash")
        .arg(root.join("scripts/build-go-peer.sh"))
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "scripts/build-go-peer.sh failed");
    out
}

async fn bench(mib: usize, rounds: usize) {
    let peer = go_peer();
    let up = echo_server().await;
    let len = mib << 20;
    let data = Arc::new(pattern(len));
    println!(
        "{mib} MiB echoed on one stream; best and median of {rounds}; server CPU = user+sys of the server process"
    );
    println!(
        "{:<28} {:>9} {:>9} {:>10} {:>13}",
        "pairing", "best s", "median s", "MiB/s", "server CPU s"
    );
    for (name, go_srv, go_cli) in [
        ("(a) our client → our server", false, false),
        ("(b) our client → Go server", true, false),
        ("(c) Go client  → Go server", true, true),
        ("(d) Go client  → our server", false, true),
    ] {
        let mut times = Vec::new();
        let mut cpus = Vec::new();
        for _ in 0..rounds {
            let mut srv = if go_srv {
                go_server(&peer, up).await
            } else {
                our_server(up).await
            };
            let pid = srv.child.id().unwrap();
            let cpu0 = cpu_seconds(pid).unwrap_or(0.0);
            let secs = if go_cli {
                go_client(&peer, &srv.url, len).await
            } else {
                our_client(&srv.url, &data).await
            };
            // Let the server finish its teardown work (FINs, ACKs) before reading its CPU.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let cpu = cpu_seconds(pid).map(|c| c - cpu0);
            let _ = srv.child.kill().await;
            times.push(secs);
            cpus.extend(cpu);
        }
        times.sort_by(f64::total_cmp);
        cpus.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let cpu = cpus
            .get(cpus.len() / 2)
            .map_or("n/a".to_string(), |c| format!("{c:.2}"));
        println!(
            "{name:<28} {:>9.2} {median:>9.2} {:>10.1} {cpu:>13}",
            times[0],
            mib as f64 / median
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if args.first().map(String::as_str) == Some("serve-ours") {
        let upstream: SocketAddr = args[1].parse().unwrap();
        rt.block_on(serve_ours(upstream));
        return;
    }
    let mib = args.first().and_then(|a| a.parse().ok()).unwrap_or(64);
    let rounds = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    rt.block_on(bench(mib, rounds));
}
