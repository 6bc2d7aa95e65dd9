//! `ptkit tunnel server|client` as real processes: an aggregator with a static certificate,
//! HMAC shared-secret authentication and a forward policy allowing one local TCP echo; a
//! client forwarding a local port through the tunnel carries data byte-exact; a client
//! with the wrong secret exits non-zero with a one-line reason on stderr. Every wait is
//! bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ptkit");
/// Bound for any single step (process start, tunnel up, exit).
const STEP: Duration = Duration::from_secs(30);

/// Kills the child on drop (a failing assertion must not leak processes).
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts ptkit with `args` and `RUST_LOG=rust_log`.
    fn spawn(args: &[&str], rust_log: &str) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("NO_COLOR", "1")
            .env_remove("SSLKEYLOGFILE")
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ptkit");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a stderr line containing `needle`; returns it.
    fn wait_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no stderr line containing {needle:?} within {STEP:?}; got:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits (bounded) for the process to exit; returns its status and all of stderr.
    fn wait_exit(&mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + STEP;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {STEP:?}; stderr so far:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // The reader thread ends at EOF, which follows the exit.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(l);
        }
        (status, self.seen.join("\n"))
    }

    fn terminate(&mut self) {
        let st = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill(1)");
        assert!(st.success());
    }
}

/// The address after `marker` in a log line, up to the next space.
fn addr_after(line: &str, marker: &str) -> SocketAddr {
    let rest = &line[line.find(marker).expect("marker") + marker.len()..];
    let word = rest.split_whitespace().next().unwrap();
    word.parse()
        .unwrap_or_else(|e| panic!("bad address {word:?} in {line:?}: {e}"))
}

/// A TCP echo server on loopback (threads; lives as long as the test process).
fn echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let _ = std::io::copy(&mut s, &mut w);
                let _ = w.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
}

/// Sends `payload` through `forward` and reads the echo, retrying the connection until the
/// tunnel is up (bounded).
fn round_trip(forward: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + STEP;
    loop {
        match try_round_trip(forward, payload) {
            Ok(got) if !got.is_empty() => return got,
            r => {
                assert!(
                    Instant::now() < deadline,
                    "no echo through the tunnel within {STEP:?}: {r:?}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn try_round_trip(forward: SocketAddr, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&forward, STEP)?;
    s.set_read_timeout(Some(STEP))?;
    s.set_write_timeout(Some(STEP))?;
    let mut r = s.try_clone()?;
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        r.read_to_end(&mut got).map(|_| got)
    });
    s.write_all(payload)?;
    s.shutdown(std::net::Shutdown::Write)?;
    reader.join().unwrap()
}

#[test]
fn tunnel_cli_forwards_byte_exact_and_refuses_a_wrong_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert_pem, key_pem) = ptkit_tls::self_signed(&["aggregator.test".into()]).unwrap();
    let (cert, key, secret, wrong) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("secret"),
        dir.path().join("wrong-secret"),
    );
    write(&cert, cert_pem.as_bytes());
    write(&key, key_pem.as_bytes());
    write(&secret, b"correct horse battery staple 0123456789\n");
    write(&wrong, b"incorrect donkey battery staple 9876543210\n");
    let target = echo();
    let allow = target.to_string();
    let p = |p: &Path| p.to_str().unwrap().to_owned();

    let mut server = Proc::spawn(
        &[
            "tunnel",
            "server",
            "--listen",
            "127.0.0.1:0",
            "--cert",
            &p(&cert),
            "--key",
            &p(&key),
            "--secret-file",
            &p(&secret),
            "--allow",
            &allow,
            "--handshake-timeout",
            "10",
        ],
        "info",
    );
    let line = server.wait_line("tunnel aggregator on udp ");
    let driver = addr_after(&line, "on udp ").to_string();

    // A client forwarding an ephemeral local port to the echo through the tunnel.
    let forward_arg = format!("127.0.0.1:0={target}");
    let client_args = |secret: &str| {
        vec![
            "tunnel".to_owned(),
            "client".into(),
            "--driver".into(),
            driver.clone(),
            "--san".into(),
            "aggregator.test".into(),
            "--authority".into(),
            p(&cert),
            "--secret-file".into(),
            secret.to_owned(),
            "--name".into(),
            "edge-1".into(),
            "--forward".into(),
            forward_arg.clone(),
            "--max-backoff".into(),
            "1".into(),
        ]
    };
    let good: Vec<String> = client_args(&p(&secret));
    let mut client = Proc::spawn(&good.iter().map(String::as_str).collect::<Vec<_>>(), "info");
    let line = client.wait_line("through the tunnel");
    let forward = addr_after(&line, "forwarding ");

    // 1 MiB of non-repeating bytes, then a second stream, both byte-exact.
    let payload: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let got = round_trip(forward, &payload);
    assert_eq!(got.len(), payload.len());
    assert!(got == payload, "echo through the tunnel differs");
    let small = b"hello through ptkit tunnel\n".repeat(100);
    assert_eq!(round_trip(forward, &small), small);
    server.wait_line("tunnel up");

    // The wrong secret: a fatal error, a non-zero exit, one clear line on stderr (logs off,
    // so the line is all there is).
    let bad: Vec<String> = client_args(&p(&wrong));
    let mut bad_client = Proc::spawn(&bad.iter().map(String::as_str).collect::<Vec<_>>(), "off");
    let (status, stderr) = bad_client.wait_exit();
    assert!(!status.success(), "wrong secret exited {status}: {stderr}");
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got:\n{stderr}"
    );
    assert!(
        lines[0].starts_with("ptkit tunnel client: ")
            && lines[0].contains("refused")
            && lines[0].contains("wrong shared secret"),
        "unclear reason: {stderr}"
    );
    server.wait_line("client refused");

    // The good tunnel still works after the refusal; SIGTERM ends both with exit 0.
    assert_eq!(round_trip(forward, &small), small);
    // One SIGTERM each: ptkit's lifecycle exits at once on SIGTERM.
    client.terminate();
    let (status, stderr) = client.wait_exit();
    assert!(status.success(), "client after SIGTERM: {status}\n{stderr}");
    server.terminate();
    let (status, stderr) = server.wait_exit();
    assert!(status.success(), "server after SIGTERM: {status}\n{stderr}");
}
