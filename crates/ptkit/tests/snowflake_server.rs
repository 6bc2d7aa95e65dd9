//! `snowflake-server` as tor runs it: the Go program's flags and stdout lines, the
//! orport-srcaddr option, and a turbotunnel session through the real process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ptkit_snowflake::client::{ClientOptions, TurbotunnelClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    lines: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ptkit snowflake-server ARGS` with a managed-mode environment and reads stdout up
/// to `SMETHODS DONE` (or EOF).
fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
    let state = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ptkit"));
    cmd.arg("snowflake-server")
        .args(args)
        .env("TOR_PT_MANAGED_TRANSPORT_VER", "1")
        .env("TOR_PT_SERVER_TRANSPORTS", "snowflake")
        .env("TOR_PT_STATE_LOCATION", state.path().join("pt_state"))
        .env("TOR_PT_EXIT_ON_STDIN_CLOSE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for line in out.lines() {
        let line = line.unwrap();
        let done = line == "SMETHODS DONE";
        lines.push(line);
        if done {
            break;
        }
    }
    std::mem::forget(state);
    Server { child, lines }
}

#[test]
fn go_flag_forms_and_smethod_line() {
    let port = free_port().to_string();
    let bind = format!("snowflake-127.0.0.1:{port}");
    for flag in ["-disable-tls", "--disable-tls", "-disable-tls=true"] {
        let s = start(
            &[flag, "-unsafe-logging"],
            &[
                ("TOR_PT_SERVER_BINDADDR", &bind),
                ("TOR_PT_ORPORT", "127.0.0.1:9"),
            ],
        );
        assert_eq!(s.lines[0], "VERSION 1", "{flag}: {:?}", s.lines);
        assert!(
            s.lines
                .contains(&format!("SMETHOD snowflake 127.0.0.1:{port} ARGS:tls=no")),
            "{flag}: {:?}",
            s.lines
        );
    }
}

#[test]
fn port_zero_is_refused_with_the_go_text_and_exit_1() {
    let mut s = start(
        &["-disable-tls"],
        &[
            ("TOR_PT_SERVER_BINDADDR", "snowflake-127.0.0.1:0"),
            ("TOR_PT_ORPORT", "127.0.0.1:9"),
        ],
    );
    assert!(
        s.lines.contains(
            &"SMETHOD-ERROR snowflake cannot listen on port 0; configure a port using ServerTransportListenAddr"
                .to_owned()
        ),
        "{:?}",
        s.lines
    );
    let status = wait_exit(&mut s.child);
    assert_eq!(status, Some(1), "nothing listens, so the server exits 1");
}

fn wait_exit(child: &mut Child) -> Option<i32> {
    for _ in 0..100 {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn no_certificates_is_a_fatal_error_before_any_pt_line() {
    let mut s = start(
        &[],
        &[
            ("TOR_PT_SERVER_BINDADDR", "snowflake-127.0.0.1:1"),
            ("TOR_PT_ORPORT", "127.0.0.1:9"),
        ],
    );
    assert!(s.lines.is_empty(), "no protocol line at all: {:?}", s.lines);
    assert_eq!(wait_exit(&mut s.child), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut s.child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("--acme-hostnames option is required"), "{err}");
}

#[test]
fn version_and_usage_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_ptkit"))
        .args(["snowflake-server", "-version"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("snowflake-server "));
    let out = Command::new(env!("CARGO_BIN_EXE_ptkit"))
        .args(["snowflake-server", "-no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "usage errors never touch stdout");
}

/// A TCP echo server that records each connection's source address.
async fn recording_echo() -> (std::net::SocketAddr, Arc<Mutex<Vec<IpAddr>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, peer)) = l.accept().await else {
                return;
            };
            s2.lock().unwrap().push(peer.ip());
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orport_srcaddr_spreads_connections_over_the_range() {
    let (echo, seen) = recording_echo().await;
    let port = free_port();
    let bind = format!("snowflake-127.0.0.1:{port}");
    let orport = echo.to_string();
    let _server = start(
        &["-disable-tls"],
        &[
            ("TOR_PT_SERVER_BINDADDR", &bind),
            ("TOR_PT_ORPORT", &orport),
            (
                "TOR_PT_SERVER_TRANSPORT_OPTIONS",
                "snowflake:orport-srcaddr=127.0.0.0/8;snowflake:num-turbotunnel=2",
            ),
        ],
    );
    let client = TurbotunnelClient::connect(ClientOptions {
        url: format!("ws://127.0.0.1:{port}/?client_ip=192.0.2.9"),
        ca_file: None,
        client_id: None,
    })
    .await
    .unwrap();
    for i in 0..8u8 {
        let mut s = client.open_stream().unwrap();
        s.write_all(&[i; 100]).await.unwrap();
        let mut back = [0u8; 100];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, [i; 100]);
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 8);
    assert!(seen.iter().all(|ip| ip.is_loopback()), "{seen:?}");
    let distinct: HashSet<_> = seen.iter().collect();
    assert!(
        distinct.len() > 1,
        "random sources in 127.0.0.0/8: {seen:?}"
    );
}
