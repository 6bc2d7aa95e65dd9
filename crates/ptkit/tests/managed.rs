//! The `ptkit` binary in Tor managed mode, driven as tor drives it: environment in, protocol
//! lines out, SOCKS and ExtORPort on loopback. Item IDs refer to shared/specs/pt1-extorport.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ptkit_core::{Args, Target};
use ptkit_tor::extorport::{self, COOKIE_HEADER, Cookie, ExtOrMeta};
use ptkit_tor::lines::{HostLine, parse_host_line};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, Command};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

struct Pt {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl Pt {
    fn spawn(env: &[(&str, &str)]) -> Pt {
        Pt::spawn_args(env, &[])
    }

    fn spawn_args(env: &[(&str, &str)], args: &[&str]) -> Pt {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ptkit"));
        cmd.args(args);
        cmd.env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        let reader = tokio::spawn(async move {
            let mut r = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = r.next_line().await {
                l2.lock().unwrap().push(line);
            }
        });
        Pt {
            child,
            stdin,
            lines,
            reader: Some(reader),
        }
    }

    async fn wait_line(&self, pred: impl Fn(&str) -> bool) -> String {
        timeout(T, async {
            loop {
                if let Some(l) = self.lines.lock().unwrap().iter().find(|l| pred(l)) {
                    return l.clone();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no such line; got {:?}", self.lines.lock().unwrap()))
    }

    /// Waits for exit and for stdout to reach EOF, so `all_lines` is complete.
    async fn exit_code(&mut self) -> i32 {
        let code = timeout(T, self.child.wait())
            .await
            .expect("ptkit did not exit")
            .unwrap()
            .code()
            .unwrap_or(-1);
        if let Some(r) = self.reader.take() {
            timeout(T, r).await.expect("stdout not closed").unwrap();
        }
        code
    }

    fn all_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.id().unwrap() as i32;
        std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
    }
}

/// Every stdout line must be a pure-ASCII protocol line (items O-2, O-6, O-10).
fn assert_protocol_only(lines: &[String]) {
    for l in lines {
        assert!(
            l.bytes().all(|b| (0x20..0x7f).contains(&b)),
            "non-ASCII stdout line {l:?}"
        );
        let parsed =
            parse_host_line(l).unwrap_or_else(|e| panic!("unparseable stdout line {l:?}: {e}"));
        assert!(
            !matches!(parsed, HostLine::Unknown(_)),
            "unknown stdout line {l:?}"
        );
    }
}

async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

fn method_addr(line: &str) -> SocketAddr {
    line.split(' ').find_map(|t| t.parse().ok()).unwrap()
}

async fn roundtrip(mut s: TcpStream, n: usize) {
    let data: Vec<u8> = (0..n).map(|i| (i * 7 % 256) as u8).collect();
    let (mut r, mut w) = s.split();
    let (_, got) = tokio::join!(
        async {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        },
        async {
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            got
        }
    );
    assert_eq!(got.len(), data.len());
    assert!(got == data, "echoed bytes differ");
}

fn client_env(state: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("TOR_PT_MANAGED_TRANSPORT_VER", "1".into()),
        (
            "TOR_PT_STATE_LOCATION",
            state.join("pt_state/").display().to_string(),
        ),
        ("TOR_PT_EXIT_ON_STDIN_CLOSE", "1".into()),
        ("TOR_PT_CLIENT_TRANSPORTS", "obfs9,plain".into()),
    ]
}

fn refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn e1_e2_e3_env_errors_are_reported_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s").display().to_string();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("TOR_PT_CLIENT_TRANSPORTS", "plain")],
            "ENV-ERROR no TOR_PT_MANAGED_TRANSPORT_VER environment variable",
        ),
        (
            vec![
                ("TOR_PT_MANAGED_TRANSPORT_VER", ""),
                ("TOR_PT_CLIENT_TRANSPORTS", "plain"),
            ],
            "ENV-ERROR no TOR_PT_MANAGED_TRANSPORT_VER environment variable",
        ),
        (
            vec![("TOR_PT_MANAGED_TRANSPORT_VER", "2")],
            "VERSION-ERROR no-version",
        ),
        (
            vec![
                ("TOR_PT_MANAGED_TRANSPORT_VER", "1"),
                ("TOR_PT_CLIENT_TRANSPORTS", "plain"),
            ],
            "ENV-ERROR no TOR_PT_STATE_LOCATION environment variable",
        ),
        (
            vec![
                ("TOR_PT_MANAGED_TRANSPORT_VER", "1"),
                ("TOR_PT_STATE_LOCATION", &state),
                ("TOR_PT_SERVER_TRANSPORTS", "plain"),
                ("TOR_PT_SERVER_BINDADDR", "plain-127.0.0.1"),
                ("TOR_PT_ORPORT", "127.0.0.1:9"),
            ],
            "ENV-ERROR TOR_PT_SERVER_BINDADDR: \"plain-127.0.0.1\": missing port",
        ),
    ];
    for (env, want) in cases {
        // A variable set to the empty string counts as missing (E-3), so test that too.
        let mut pt = Pt::spawn(&env);
        assert_eq!(pt.exit_code().await, 1, "{want}");
        let lines = pt.all_lines();
        assert_eq!(lines.first().map(String::as_str), Some(want));
        assert!(
            !lines.iter().any(|l| l == "VERSION 1"),
            "no VERSION after an error: {lines:?}"
        );
        assert_protocol_only(&lines);
    }
}

#[tokio::test]
async fn e6_o1_client_announces_known_methods_and_creates_state_dir_0700() {
    let dir = tempfile::tempdir().unwrap();
    let env = client_env(dir.path());
    let mut pt = Pt::spawn(&refs(&env));
    pt.wait_line(|l| l == "CMETHODS DONE").await;
    let lines = pt.all_lines();
    // E-5: the unknown obfs9 is skipped without CMETHOD-ERROR.
    assert_eq!(lines[0], "VERSION 1");
    assert!(
        lines.iter().all(|l| !l.starts_with("CMETHOD-ERROR")),
        "{lines:?}"
    );
    let cmethods: Vec<_> = lines.iter().filter(|l| l.starts_with("CMETHOD ")).collect();
    assert_eq!(cmethods.len(), 1);
    assert!(method_addr(cmethods[0]).ip().is_loopback());
    assert_protocol_only(&lines);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("pt_state"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    // L-1: closing stdin with TOR_PT_EXIT_ON_STDIN_CLOSE=1 exits cleanly.
    drop(pt.stdin.take());
    assert_eq!(pt.exit_code().await, 0);
}

/// Sends each message after the previous reply arrived (tor never pipelines), then returns
/// everything the server sent until it closed.
async fn socks_steps(addr: SocketAddr, steps: &[(&[u8], usize)]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut got = Vec::new();
    for (msg, reply_len) in steps {
        s.write_all(msg).await.unwrap();
        let mut r = vec![0u8; *reply_len];
        s.read_exact(&mut r).await.unwrap();
        got.extend(r);
    }
    let mut rest = Vec::new();
    let _ = timeout(Duration::from_secs(7), s.read_to_end(&mut rest))
        .await
        .expect("server kept a bad connection open");
    got.extend(rest);
    got
}

async fn socks_exchange(addr: SocketAddr, send: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(send).await.unwrap();
    let mut got = Vec::new();
    let _ = timeout(Duration::from_secs(7), s.read_to_end(&mut got))
        .await
        .expect("server kept a bad connection open");
    got
}

#[tokio::test]
async fn s_bad_socks_input_gets_the_right_reply_and_good_connections_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let env = client_env(dir.path());
    let pt = Pt::spawn(&refs(&env));
    let socks = method_addr(&pt.wait_line(|l| l.starts_with("CMETHOD plain")).await);
    let echo = echo_server().await;
    // Not SOCKS: closed without a reply.
    assert_eq!(socks_exchange(socks, b"GET / HTTP/1.1\r\n\r\n").await, b"");
    // No acceptable method.
    assert_eq!(socks_exchange(socks, &[5, 1, 1]).await, [5, 0xff]);
    // Bad argument escape (S-3): trailing backslash.
    let mut auth = vec![1, 6];
    auth.extend(b"k=abc\\");
    auth.extend([1, 0]);
    assert_eq!(
        socks_steps(socks, &[(&[5, 1, 2], 2), (&auth, 0)]).await,
        [5, 2, 1, 1]
    );
    // S-5: pipelining the request behind the greeting is refused.
    assert_eq!(
        socks_exchange(socks, &[5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80]).await,
        b""
    );
    // BIND is not supported (S-4).
    assert_eq!(socks_exchange(socks, &[5, 1, 0]).await, [5, 0]);
    let mut s = TcpStream::connect(socks).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut b = [0u8; 2];
    s.read_exact(&mut b).await.unwrap();
    s.write_all(&[5, 2, 0, 1, 127, 0, 0, 1, 0, 80])
        .await
        .unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, [5, 7, 0, 1, 0, 0, 0, 0, 0, 0]);
    // Oversized SOCKS4 userid: rejected, bounded.
    let mut big = vec![4, 1, 0, 80, 127, 0, 0, 1];
    big.extend(vec![b'a'; 8192]);
    let r = socks_exchange(socks, &big).await;
    assert!(r.is_empty() || r[1] == 0x5b, "{r:?}");
    // Connection refused maps to REP 05 (S-7, §3.4).
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut req = vec![5, 1, 0];
    req.extend([5, 1, 0, 1, 127, 0, 0, 1]);
    req.extend(closed.port().to_be_bytes());
    let mut s = TcpStream::connect(socks).await.unwrap();
    s.write_all(&req[..3]).await.unwrap();
    s.read_exact(&mut b).await.unwrap();
    s.write_all(&req[3..]).await.unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, [5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
    // Slowloris: a client that never finishes is cut after the handshake timeout.
    let mut slow = TcpStream::connect(socks).await.unwrap();
    slow.write_all(&[5]).await.unwrap();
    let mut sink = Vec::new();
    let cut = timeout(Duration::from_secs(8), slow.read_to_end(&mut sink)).await;
    assert!(cut.is_ok(), "slow handshake was not cut");
    // And the process still serves a good connection, with args, byte-exact.
    let args = Args::new().with("k1", "v;1").with("k2", "x=y");
    let s = ptkit::demo::socks5_connect(socks, &Target::from_socket_addr(echo), &args)
        .await
        .unwrap();
    roundtrip(s, 1 << 20).await;
    assert_protocol_only(&pt.all_lines());
}

#[tokio::test]
async fn l7_l9_tor_pt_proxy_socks5_socks4a_http_and_bad_schemes() {
    let echo = echo_server().await;
    for scheme in ["socks5", "socks4a", "http"] {
        let (proxy, seen) = test_proxy(scheme).await;
        let dir = tempfile::tempdir().unwrap();
        let mut env = client_env(dir.path());
        env.push(("TOR_PT_PROXY", format!("{scheme}://{proxy}")));
        let pt = Pt::spawn(&refs(&env));
        let socks = method_addr(&pt.wait_line(|l| l.starts_with("CMETHOD plain")).await);
        let lines = pt.all_lines();
        let v = lines.iter().position(|l| l == "VERSION 1").unwrap();
        let p = lines.iter().position(|l| l == "PROXY DONE").unwrap();
        let c = lines
            .iter()
            .position(|l| l.starts_with("CMETHOD "))
            .unwrap();
        assert!(
            v < p && p < c,
            "PROXY DONE between VERSION and CMETHOD: {lines:?}"
        );
        let s = ptkit::demo::socks5_connect(socks, &Target::from_socket_addr(echo), &Args::new())
            .await
            .unwrap();
        roundtrip(s, 100_000).await;
        // L-8: the connection really went through the proxy.
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            [echo.to_string()],
            "{scheme}"
        );
    }
    for bad in [
        "ftp://127.0.0.1:21",
        "socks5://127.0.0.1",
        "socks5://user@127.0.0.1:1080",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut env = client_env(dir.path());
        env.push(("TOR_PT_PROXY", bad.to_owned()));
        let mut pt = Pt::spawn(&refs(&env));
        assert_eq!(pt.exit_code().await, 1, "{bad}");
        let lines = pt.all_lines();
        assert_eq!(lines[0], "VERSION 1");
        assert!(
            lines.iter().any(|l| l.starts_with("PROXY-ERROR ")),
            "{bad}: {lines:?}"
        );
        assert!(
            !lines.iter().any(|l| l.starts_with("CMETHOD")),
            "{bad}: {lines:?}"
        );
    }
}

/// A tiny upstream proxy that records the targets it was asked for.
async fn test_proxy(scheme: &'static str) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let seen = seen2.clone();
            tokio::spawn(async move {
                let target = if scheme == "http" {
                    let mut head = Vec::new();
                    let mut b = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        s.read_exact(&mut b).await.unwrap();
                        head.push(b[0]);
                    }
                    let text = String::from_utf8(head).unwrap();
                    assert!(text.starts_with("CONNECT "), "{text}");
                    text.split(' ').nth(1).unwrap().to_owned()
                } else {
                    let req = ptkit_tor::socks_front::read_request(&mut s, &Default::default())
                        .await
                        .unwrap();
                    let want = if scheme == "socks5" {
                        ptkit_tor::socks::server::Version::V5
                    } else {
                        ptkit_tor::socks::server::Version::V4
                    };
                    assert_eq!(req.version, want);
                    req.target.to_string()
                };
                seen.lock().unwrap().push(target.clone());
                let mut up = TcpStream::connect(&target).await.unwrap();
                let ok: Vec<u8> = match scheme {
                    "http" => b"HTTP/1.1 200 Connection established\r\n\r\n".to_vec(),
                    "socks5" => vec![5, 0, 0, 1, 0, 0, 0, 0, 0, 0],
                    _ => vec![0, 0x5a, 0, 0, 0, 0, 0, 0],
                };
                s.write_all(&ok).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
            });
        }
    });
    (addr, seen)
}

/// An ExtORPort served by ptkit's own server core (item H-10), recording the metadata.
async fn fake_extorport(
    cookie: [u8; 32],
    target: SocketAddr,
) -> (SocketAddr, Arc<Mutex<Vec<ExtOrMeta>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let log = log2.clone();
            tokio::spawn(async move {
                let Ok(meta) = extorport::accept(&mut s, Cookie(cookie)).await else {
                    return;
                };
                log.lock().unwrap().push(meta);
                let mut up = TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
            });
        }
    });
    (addr, log)
}

fn write_cookie(path: &Path, secret: [u8; 32]) {
    let mut f = COOKIE_HEADER.to_vec();
    f.extend(secret);
    std::fs::write(path, f).unwrap();
}

#[tokio::test]
async fn x2_x3_server_reports_useraddr_and_transport_and_rereads_the_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_server().await;
    let secret = [9u8; 32];
    let (ext, log) = fake_extorport(secret, echo).await;
    let cookie = dir.path().join("cookie");
    write_cookie(&cookie, [1u8; 32]); // wrong at first
    let state = dir.path().join("state").display().to_string();
    let ext_s = ext.to_string();
    let cookie_s = cookie.display().to_string();
    let env = vec![
        ("TOR_PT_MANAGED_TRANSPORT_VER", "1"),
        ("TOR_PT_STATE_LOCATION", state.as_str()),
        ("TOR_PT_SERVER_TRANSPORTS", "plain,obfs9"),
        (
            "TOR_PT_SERVER_BINDADDR",
            "plain-127.0.0.1:0,obfs9-127.0.0.1:0",
        ),
        ("TOR_PT_ORPORT", "127.0.0.1:9"),
        ("TOR_PT_EXTENDED_SERVER_PORT", ext_s.as_str()),
        ("TOR_PT_AUTH_COOKIE_FILE", cookie_s.as_str()),
    ];
    let pt = Pt::spawn(&env);
    let line = pt.wait_line(|l| l.starts_with("SMETHOD plain")).await;
    assert_eq!(
        line.split(' ').count(),
        3,
        "plain advertises no ARGS: {line}"
    );
    pt.wait_line(|l| l == "SMETHODS DONE").await;
    let server = method_addr(&line);
    // Wrong cookie: the PT detects tor's hash mismatch and closes the client.
    let mut bad = TcpStream::connect(server).await.unwrap();
    bad.write_all(b"hello").await.unwrap();
    let mut got = Vec::new();
    timeout(T, bad.read_to_end(&mut got)).await.unwrap().ok();
    assert!(got.is_empty());
    assert!(
        log.lock().unwrap().is_empty(),
        "no metadata may follow a failed auth"
    );
    // the cookie is re-read per connection, so fixing the file fixes the next one.
    write_cookie(&cookie, secret);
    let good = TcpStream::connect(server).await.unwrap();
    let client_port = good.local_addr().unwrap().port();
    roundtrip(good, 300_000).await;
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 1);
    assert_eq!(
        log[0].useraddr,
        Some(SocketAddr::from(([127, 0, 0, 1], client_port))),
        "USERADDR"
    );
    assert_eq!(log[0].transport.as_deref(), Some("plain"), "TRANSPORT");
    assert_protocol_only(&pt.all_lines());
}

#[tokio::test]
async fn l2_l3_sigint_drains_and_sigterm_exits() {
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_server().await;
    let mut env = client_env(dir.path());
    env.retain(|(k, _)| *k != "TOR_PT_EXIT_ON_STDIN_CLOSE");
    let mut pt = Pt::spawn(&refs(&env));
    let socks = method_addr(&pt.wait_line(|l| l.starts_with("CMETHOD plain")).await);
    let mut open =
        ptkit::demo::socks5_connect(socks, &Target::from_socket_addr(echo), &Args::new())
            .await
            .unwrap();
    pt.signal(libc::SIGINT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // L-3: no new connections, but the open one still works.
    assert!(
        TcpStream::connect(socks).await.is_err()
            || ptkit::demo::socks5_connect(socks, &Target::from_socket_addr(echo), &Args::new())
                .await
                .is_err()
    );
    open.write_all(b"still here").await.unwrap();
    let mut b = [0u8; 10];
    open.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"still here");
    assert!(
        pt.child.try_wait().unwrap().is_none(),
        "exited before draining"
    );
    // Closing the last connection lets the drain finish and the process exit 0.
    drop(open);
    assert_eq!(pt.exit_code().await, 0);

    let mut pt = Pt::spawn(&refs(&env));
    let socks = method_addr(&pt.wait_line(|l| l.starts_with("CMETHOD plain")).await);
    let _open = ptkit::demo::socks5_connect(socks, &Target::from_socket_addr(echo), &Args::new())
        .await
        .unwrap();
    pt.signal(libc::SIGTERM);
    assert_eq!(
        pt.exit_code().await,
        0,
        "SIGTERM exits at once even with a connection open"
    );

    let mut pt = Pt::spawn(&refs(&env));
    let socks = method_addr(&pt.wait_line(|l| l.starts_with("CMETHOD plain")).await);
    let _open = ptkit::demo::socks5_connect(socks, &Target::from_socket_addr(echo), &Args::new())
        .await
        .unwrap();
    pt.signal(libc::SIGINT);
    tokio::time::sleep(Duration::from_millis(200)).await;
    pt.signal(libc::SIGINT);
    assert_eq!(pt.exit_code().await, 0, "second SIGINT exits at once");
}

#[tokio::test]
async fn sigusr1_reports_stats_as_status_lines() {
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_server().await;
    let env = client_env(dir.path());
    let pt = Pt::spawn(&refs(&env));
    let socks = method_addr(&pt.wait_line(|l| l.starts_with("CMETHOD plain")).await);
    let s = ptkit::demo::socks5_connect(socks, &Target::from_socket_addr(echo), &Args::new())
        .await
        .unwrap();
    roundtrip(s, 12345).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    pt.signal(libc::SIGUSR1);
    let line = pt
        .wait_line(|l| l.starts_with("STATUS TRANSPORT=plain TYPE=\"stats\""))
        .await;
    assert!(
        line.contains("BYTES_UP=\"12345\"") && line.contains("BYTES_DOWN=\"12345\""),
        "{line}"
    );
    assert!(line.contains("CONNECTIONS_TOTAL=\"1\""), "{line}");
    assert_protocol_only(&pt.all_lines());
}

#[tokio::test]
async fn metrics_endpoint_reports_managed_mode_counters() {
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_server().await;
    let env = client_env(dir.path());
    let pt = Pt::spawn_args(&refs(&env), &["--metrics", "127.0.0.1:0"]);
    let socks = method_addr(&pt.wait_line(|l| l.starts_with("CMETHOD plain")).await);
    let line = pt.wait_line(|l| l.contains("metrics on http://")).await;
    let metrics: SocketAddr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let s = ptkit::demo::socks5_connect(socks, &Target::from_socket_addr(echo), &Args::new())
        .await
        .unwrap();
    roundtrip(s, 4321).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = TcpStream::connect(metrics).await.unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    timeout(T, c.read_to_string(&mut body))
        .await
        .unwrap()
        .unwrap();
    assert!(
        body.contains("ptkit_bytes_up_total{transport=\"plain\"} 4321"),
        "{body}"
    );
    assert!(
        body.contains("ptkit_connections_total{transport=\"plain\"} 1"),
        "{body}"
    );
    assert_protocol_only(&pt.all_lines());
}
