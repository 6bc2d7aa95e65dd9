//! The `ptkit` binary as a PT 2.x/3.0 dispatcher (and PT 1.0 through the same flags), driven
//! as a parent drives it: flags in, protocol lines out. Section numbers refer to
//! shared/specs/pt2-websocket-quic.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ptkit_ipc::flags::Mode;
use ptkit_tor::lines::{HostLine, is_transport_name, parse_host_line};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);
const VERSIONS: &[&str] = &["1", "2.0", "2.1", "2.2", "3.0"];
const TRANSPORTS: &[&str] = &["plain", "websocket", "quic"];
const N: usize = 100 * 1024;

type Lines = Arc<Mutex<Vec<String>>>;

fn collect(r: impl AsyncRead + Unpin + Send + 'static) -> (Lines, JoinHandle<()>) {
    let lines: Lines = Arc::default();
    let l2 = lines.clone();
    let task = tokio::spawn(async move {
        let mut r = BufReader::new(r).lines();
        while let Ok(Some(line)) = r.next_line().await {
            l2.lock().unwrap().push(line);
        }
    });
    (lines, task)
}

struct Pt {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Lines,
    err: Lines,
    readers: Vec<JoinHandle<()>>,
}

impl Pt {
    fn spawn(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Pt {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ptkit"));
        cmd.env_clear()
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take();
        let (out, r1) = collect(child.stdout.take().unwrap());
        let (err, r2) = collect(child.stderr.take().unwrap());
        Pt {
            child,
            stdin,
            out,
            err,
            readers: vec![r1, r2],
        }
    }

    async fn wait_line(&self, pred: impl Fn(&str) -> bool) -> String {
        timeout(T, async {
            loop {
                if let Some(l) = self.out.lock().unwrap().iter().find(|l| pred(l)) {
                    return l.clone();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no such line; stdout {:?} stderr {:?}",
                self.out.lock().unwrap(),
                self.err.lock().unwrap()
            )
        })
    }

    /// Waits for exit and for both pipes to reach EOF, so the line lists are complete.
    async fn exit_code(&mut self) -> i32 {
        let code = timeout(T, self.child.wait())
            .await
            .expect("ptkit did not exit")
            .unwrap()
            .code()
            .unwrap_or(-1);
        for r in self.readers.drain(..) {
            timeout(T, r).await.expect("pipe not closed").unwrap();
        }
        code
    }

    fn stdout(&self) -> Vec<String> {
        self.out.lock().unwrap().clone()
    }

    fn stderr(&self) -> Vec<String> {
        self.err.lock().unwrap().clone()
    }

    async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    fn terminate(&self) {
        let pid = self.child.id().unwrap();
        std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap();
    }
}

/// Stdout carries nothing but parseable protocol lines (§1.3.2).
fn assert_protocol_only(lines: &[String]) {
    for l in lines {
        assert!(
            l.bytes().all(|b| (0x20..0x7f).contains(&b)),
            "non-ASCII stdout line {l:?}"
        );
        // PT 2.x CMETHOD carries the proxy mode where PT 1.0 has socks5 (§1.3.2).
        if let ["CMETHOD", name, mode, addr] = l.split(' ').collect::<Vec<_>>()[..] {
            assert!(is_transport_name(name), "bad CMETHOD {l:?}");
            assert!(Mode::parse(mode).is_some(), "bad CMETHOD mode {l:?}");
            assert!(addr.parse::<SocketAddr>().is_ok(), "bad CMETHOD {l:?}");
            continue;
        }
        // Our answers and 2.2 LOG lines (docs/IPC.md), parsed by ptkit-ipc.
        if l.starts_with("STATS [") || l.starts_with("LOG ") && !l.starts_with("LOG SEVERITY=") {
            assert!(
                matches!(
                    ptkit_ipc::lines::parse(l),
                    Ok(Some(
                        ptkit_ipc::lines::IpcLine::Stats(_) | ptkit_ipc::lines::IpcLine::Log(..)
                    ))
                ),
                "bad stdout line {l:?}"
            );
            continue;
        }
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

/// The value of `key` in the `SMETHOD t … ARGS:` line `pt` printed, if any.
fn smethod_arg(pt: &Pt, t: &str, key: &str) -> Option<String> {
    let line = pt
        .stdout()
        .into_iter()
        .find(|l| l.starts_with(&format!("SMETHOD {t} ")))?;
    let args = line.split(" ARGS:").nth(1)?;
    args.split(',')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
}

fn method_addr(line: &str) -> SocketAddr {
    line.split(' ').find_map(|t| t.parse().ok()).unwrap()
}

/// Sends 100 KB and reads the echo back byte for byte before closing (WebSocket has no
/// half-close, so the test does not rely on one).
async fn roundtrip(mut s: TcpStream, label: &str) {
    let data: Vec<u8> = (0..N).map(|i| (i * 7 % 251) as u8).collect();
    let (mut r, mut w) = s.split();
    let mut got = vec![0u8; N];
    let (wrote, read) = timeout(T, async {
        tokio::join!(w.write_all(&data), r.read_exact(&mut got))
    })
    .await
    .unwrap_or_else(|_| panic!("{label}: round trip timed out"));
    wrote.unwrap();
    read.unwrap_or_else(|e| panic!("{label}: echo cut short: {e}"));
    assert!(got == data, "{label}: echoed bytes differ");
}

/// How a SOCKS client hands per-connection settings over (§1.3.3).
#[derive(Clone, Copy)]
enum Settings<'a> {
    /// No settings: method 0x00.
    None,
    /// PT 1.0: `k=v;…` in the RFC 1929 username (method 0x02).
    Pt1(&'a str),
    /// 2.0 WIP/Draft 1: method 0x80, unframed JSON.
    X80(&'a str),
    /// 2.0 Draft 3 … 3.0: method 0x09, u32 big-endian length + JSON.
    X09(&'a str),
}

/// SOCKS5 CONNECT to `dest` through `socks`, handing `settings` over first.
async fn socks_connect(socks: SocketAddr, dest: SocketAddr, settings: Settings<'_>) -> TcpStream {
    let mut s = timeout(T, TcpStream::connect(socks))
        .await
        .unwrap()
        .unwrap();
    let mut reply = [0u8; 2];
    let method = match settings {
        Settings::None => 0,
        Settings::Pt1(_) => 2,
        Settings::X80(_) => 0x80,
        Settings::X09(_) => 9,
    };
    s.write_all(&[5, 1, method]).await.unwrap();
    s.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply, [5, method]);
    match settings {
        Settings::None => {}
        Settings::Pt1(args) => {
            let mut auth = vec![1, args.len() as u8];
            auth.extend(args.as_bytes());
            auth.extend([1, 0]);
            s.write_all(&auth).await.unwrap();
            s.read_exact(&mut reply).await.unwrap();
            assert_eq!(reply, [1, 0]);
        }
        Settings::X80(json) => s.write_all(json.as_bytes()).await.unwrap(),
        Settings::X09(json) => {
            let mut block = (json.len() as u32).to_be_bytes().to_vec();
            block.extend(json.as_bytes());
            s.write_all(&block).await.unwrap();
        }
    }
    let SocketAddr::V4(v4) = dest else {
        panic!("IPv4 expected")
    };
    let mut req = vec![5, 1, 0, 1];
    req.extend(v4.ip().octets());
    req.extend(v4.port().to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut rep = [0u8; 10];
    timeout(T, s.read_exact(&mut rep)).await.unwrap().unwrap();
    assert_eq!(rep[..2], [5, 0], "SOCKS CONNECT refused: {rep:?}");
    s
}

/// Starts `-server -transports t` forwarding to `target`; returns it and its SMETHOD address.
async fn server(v: &str, t: &str, target: SocketAddr, cwd: &Path) -> (Pt, SocketAddr) {
    let bind = format!("{t}-127.0.0.1:0");
    let target = target.to_string();
    let pt = Pt::spawn(
        &[
            "-ptversion",
            v,
            "-server",
            "-transports",
            t,
            "-bindaddr",
            &bind,
            "-target",
            &target,
        ],
        &[],
        cwd,
    );
    let line = pt
        .wait_line(|l| l.starts_with(&format!("SMETHOD {t} ")))
        .await;
    pt.wait_line(|l| l == "SMETHODS DONE").await;
    (pt, method_addr(&line))
}

#[tokio::test]
async fn s1_3_every_version_and_transport_full_cycle_socks5() {
    for v in VERSIONS {
        for t in TRANSPORTS {
            let dir = tempfile::tempdir().unwrap();
            let echo = echo_server().await;
            let (mut srv, srv_addr) = server(v, t, echo, dir.path()).await;
            let cli_dir = dir.path().join("client");
            std::fs::create_dir(&cli_dir).unwrap();
            let mut cli = Pt::spawn(
                &[
                    "-ptversion",
                    v,
                    "-client",
                    "-transports",
                    t,
                    "-mode",
                    "socks5",
                ],
                &[],
                &cli_dir,
            );
            let cm = cli
                .wait_line(|l| l.starts_with(&format!("CMETHOD {t} socks5 ")))
                .await;
            cli.wait_line(|l| l == "CMETHODS DONE").await;
            // Per-connection settings in each version's method (websocket: its URL path;
            // plain takes none).
            // quic: the certificate pin the server advertised in its SMETHOD ARGS.
            let ws = *t == "websocket";
            let pin = smethod_arg(&srv, t, "cert-sha256");
            let (pt1, json) = match (*t, &pin) {
                ("websocket", _) => ("path=/".to_owned(), r#"{"path":"/"}"#.to_owned()),
                ("quic", Some(p)) => (
                    format!("cert-sha256={p}"),
                    format!(r#"{{"cert-sha256":"{p}"}}"#),
                ),
                _ => (String::new(), "{}".to_owned()),
            };
            let settings = match *v {
                "1" if ws || pin.is_some() => Settings::Pt1(&pt1),
                "1" => Settings::None,
                "2.0" => Settings::X80(&json),
                _ => Settings::X09(&json),
            };
            let s = socks_connect(method_addr(&cm), srv_addr, settings).await;
            roundtrip(s, &format!("v{v} {t}")).await;

            for pt in [&mut srv, &mut cli] {
                pt.terminate();
                assert_eq!(pt.exit_code().await, 0, "v{v} {t}: SIGTERM exit");
                let out = pt.stdout();
                assert_protocol_only(&out);
                assert_eq!(out.len(), 3, "v{v} {t}: {out:?}");
                assert_eq!(out[0], format!("VERSION {v}"));
                assert!(pt.stderr().is_empty(), "v{v} {t}: {:?}", pt.stderr());
            }
        }
    }
}

#[tokio::test]
async fn s1_3_1_transparent_tcp_round_trip_for_every_transport() {
    for t in TRANSPORTS {
        let dir = tempfile::tempdir().unwrap();
        let echo = echo_server().await;
        let (mut srv, srv_addr) = server("2.2", t, echo, dir.path()).await;
        let target = srv_addr.to_string();
        let mut args = vec![
            "-ptversion",
            "2.2",
            "-client",
            "-transport",
            t,
            "-mode",
            "transparent-TCP",
            "-target",
            &target,
            "-proxylistenaddr",
            "127.0.0.1:0",
            "-exit-on-stdin-close",
        ];
        // 2.2 JSON options become each connection's settings in transparent mode.
        let quic_opts = smethod_arg(&srv, t, "cert-sha256")
            .map(|p| format!(r#"{{"cert-sha256":"{p}"}}"#))
            .unwrap_or_default();
        if *t == "websocket" {
            args.extend(["-options", r#"{"path":"/"}"#]);
        } else if !quic_opts.is_empty() {
            args.extend(["-options", quic_opts.as_str()]);
        }
        let mut cli = Pt::spawn(&args, &[], dir.path());
        let cm = cli
            .wait_line(|l| l.starts_with(&format!("CMETHOD {t} transparent-TCP ")))
            .await;
        for _ in 0..2 {
            let s = TcpStream::connect(method_addr(&cm)).await.unwrap();
            roundtrip(s, t).await;
        }
        // -exit-on-stdin-close: closing stdin ends the dispatcher cleanly.
        drop(cli.stdin.take());
        assert_eq!(cli.exit_code().await, 0);
        assert_protocol_only(&cli.stdout());
        assert_eq!(
            cli.stdout().last().map(String::as_str),
            Some("CMETHODS DONE")
        );
        assert!(cli.stderr().is_empty(), "{:?}", cli.stderr());
        srv.terminate();
        assert_eq!(srv.exit_code().await, 0);
    }
}

#[tokio::test]
async fn s1_3_1_env_fallback_before_3_0_only() {
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_server().await.to_string();
    let env = [
        ("TOR_PT_SERVER_TRANSPORTS", "plain"),
        ("TOR_PT_SERVER_BINDADDR", "plain-127.0.0.1:0"),
        ("TOR_PT_ORPORT", echo.as_str()),
    ];
    let srv = Pt::spawn(&["-ptversion", "2.1", "-server"], &env, dir.path());
    srv.wait_line(|l| l.starts_with("SMETHOD plain 127.0.0.1:"))
        .await;
    let mut srv3 = Pt::spawn(&["-ptversion", "3.0", "-server"], &env, dir.path());
    assert_eq!(srv3.exit_code().await, 64);
    assert!(srv3.stdout().is_empty());
    assert_eq!(srv3.stderr().len(), 1);
    assert!(srv3.stderr()[0].starts_with("ENV-ERROR "));
}

#[tokio::test]
async fn sigint_drains_open_connections_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_server().await;
    let (mut srv, srv_addr) = server("3.0", "plain", echo, dir.path()).await;
    let target = srv_addr.to_string();
    let mut cli = Pt::spawn(
        &[
            "-ptversion",
            "3.0",
            "-transport",
            "plain",
            "-mode",
            "transparent-TCP",
            "-target",
            &target,
        ],
        &[],
        dir.path(),
    );
    let cm = cli
        .wait_line(|l| l.starts_with("CMETHOD plain transparent-TCP "))
        .await;
    let mut open = TcpStream::connect(method_addr(&cm)).await.unwrap();
    open.write_all(b"ping").await.unwrap();
    let mut b = [0u8; 4];
    timeout(T, open.read_exact(&mut b)).await.unwrap().unwrap();
    let pid = cli.child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Still running while the connection is open, and the connection still works.
    assert!(cli.child.try_wait().unwrap().is_none());
    open.write_all(b"pong").await.unwrap();
    timeout(T, open.read_exact(&mut b)).await.unwrap().unwrap();
    assert_eq!(&b, b"pong");
    drop(open);
    assert_eq!(cli.exit_code().await, 0);
    assert!(cli.stderr().is_empty(), "{:?}", cli.stderr());
    srv.terminate();
    assert_eq!(srv.exit_code().await, 0);
}

#[tokio::test]
async fn s1_3_3_settings_methods_by_version() {
    let dir = tempfile::tempdir().unwrap();
    // Greeting, its reply, then the rest (clients do not pipeline the greeting).
    let exchange = |socks: SocketAddr, bytes: Vec<u8>| async move {
        let mut s = TcpStream::connect(socks).await.unwrap();
        s.write_all(&bytes[..3]).await.unwrap();
        let mut got = vec![0u8; 2];
        timeout(T, s.read_exact(&mut got)).await.unwrap().unwrap();
        if got[1] == 0xff {
            return got;
        }
        s.write_all(&bytes[3..]).await.unwrap();
        timeout(T, s.read_to_end(&mut got)).await.unwrap().unwrap();
        got
    };
    // PT 1.0 offers no settings method.
    let v1 = Pt::spawn(
        &["-ptversion", "1", "-transports", "plain"],
        &[],
        dir.path(),
    );
    let socks = method_addr(&v1.wait_line(|l| l.starts_with("CMETHOD plain ")).await);
    assert_eq!(exchange(socks, vec![5, 1, 9]).await, [5, 0xff]);
    // 2.2: 0x09 with malformed JSON gets REP 0x12.
    let v22 = Pt::spawn(
        &["-ptversion", "2.2", "-transports", "plain"],
        &[],
        dir.path(),
    );
    let socks = method_addr(&v22.wait_line(|l| l.starts_with("CMETHOD plain ")).await);
    let mut bytes = vec![5, 1, 9, 0, 0, 0, 3];
    bytes.extend(b"{x}");
    let got = exchange(socks, bytes).await;
    assert_eq!(got.get(..4), Some(&[5, 9, 5, 0x12][..]), "{got:?}");
    // The settings reach the transport: a websocket path it refuses fails the CONNECT.
    let ws = Pt::spawn(
        &["-ptversion", "3.0", "-transports", "websocket"],
        &[],
        dir.path(),
    );
    let socks = method_addr(&ws.wait_line(|l| l.starts_with("CMETHOD websocket ")).await);
    let json = br#"{"path":"no-slash"}"#;
    let mut bytes = vec![5, 1, 9];
    bytes.extend((json.len() as u32).to_be_bytes());
    bytes.extend(json);
    bytes.extend([5, 1, 0, 1, 127, 0, 0, 1, 0, 9]);
    let got = exchange(socks, bytes).await;
    assert_eq!(got.get(..3), Some(&[5, 9, 5][..]), "{got:?}");
    assert_ne!(got[3], 0, "{got:?}");
}

#[tokio::test]
async fn s1_3_1_state_dir_relative_to_cwd_created_0700() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut pt = Pt::spawn(
        &[
            "-ptversion",
            "3.0",
            "-transports",
            "plain",
            "-state",
            "st/pt",
            "-exit-on-stdin-close",
        ],
        &[],
        dir.path(),
    );
    pt.wait_line(|l| l == "CMETHODS DONE").await;
    let meta = std::fs::metadata(dir.path().join("st/pt")).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    drop(pt.stdin.take());
    assert_eq!(pt.exit_code().await, 0);
    assert_protocol_only(&pt.stdout());
}

#[tokio::test]
async fn s1_3_2_bad_input_gives_one_line_and_the_sysexits_code() {
    let big = format!(r#"{{"k":"{}"}}"#, "a".repeat(70 * 1024));
    // (arguments, environment, stream (true = stderr), line prefix, exit code)
    #[allow(clippy::type_complexity)]
    let cases: Vec<(Vec<&str>, Vec<(&str, &str)>, bool, &str, i32)> = vec![
        (
            vec!["-ptversion", "9", "-transports", "plain"],
            vec![],
            true,
            "VERSION-ERROR no-version",
            78,
        ),
        (
            vec!["-ptversion", "2.2,9", "-transports", "plain", "-bogus"],
            vec![],
            true,
            "ENV-ERROR flag provided but not defined",
            64,
        ),
        (
            vec!["-transports", "plain"],
            vec![("TOR_PT_MANAGED_TRANSPORT_VER", "9")],
            true,
            "VERSION-ERROR no-version",
            78,
        ),
        // An offer that can only come from a PT 1.0 parent: PT 1.0 reporting.
        (
            vec!["-transports", "plain"],
            vec![("TOR_PT_MANAGED_TRANSPORT_VER", "1.5")],
            false,
            "VERSION-ERROR no-version",
            1,
        ),
        (
            vec![
                "-ptversion",
                "2.2",
                "-client",
                "-server",
                "-transports",
                "plain",
            ],
            vec![],
            true,
            "ENV-ERROR -client and -server cannot be used together",
            64,
        ),
        (
            vec![
                "-ptversion",
                "2.2",
                "-transports",
                "plain",
                "-transport",
                "plain",
            ],
            vec![],
            true,
            "ENV-ERROR -transports and -transport cannot be used together",
            64,
        ),
        (
            vec!["-ptversion", "3.0", "-server", "-transports", "plain"],
            vec![],
            true,
            "ENV-ERROR missing -bindaddr",
            64,
        ),
        (
            vec!["-ptversion", "2.2", "-transports", "plain", "-mode", "udp"],
            vec![],
            true,
            "ENV-ERROR invalid value \"udp\" for flag -mode",
            64,
        ),
        (
            vec![
                "-ptversion",
                "2.2",
                "-transports",
                "plain",
                "-mode",
                "transparent-UDP",
            ],
            vec![],
            true,
            "ENV-ERROR missing -target (required with -mode transparent-UDP)",
            64,
        ),
        (
            vec!["-ptversion", "3.0", "-transports", "plain", "-mode", "stun"],
            vec![],
            true,
            "ENV-ERROR missing -target (required with -mode STUN)",
            64,
        ),
        (
            vec![
                "-ptversion",
                "2.2",
                "-transports",
                "plain",
                "-mode",
                "transparent-TCP",
            ],
            vec![],
            true,
            "ENV-ERROR missing -target",
            64,
        ),
        (
            vec![
                "-ptversion",
                "2.2",
                "-transports",
                "plain",
                "-options",
                "{bad",
            ],
            vec![],
            true,
            "ENV-ERROR options are not valid JSON",
            64,
        ),
        (
            vec![
                "-ptversion",
                "2.2",
                "-transports",
                "plain",
                "-options",
                "[1]",
            ],
            vec![],
            true,
            "ENV-ERROR options JSON must be an object",
            64,
        ),
        (
            vec![
                "-ptversion",
                "2.2",
                "-transports",
                "plain",
                "-options",
                &big,
            ],
            vec![],
            true,
            "ENV-ERROR options longer than",
            64,
        ),
        (
            vec!["-ptversion", "1", "-transports", "plain", "-mode", "udp"],
            vec![],
            false,
            "ENV-ERROR invalid value",
            1,
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (args, env, on_stderr, prefix, code) in cases {
        let mut pt = Pt::spawn(&args, &env, dir.path());
        assert_eq!(pt.exit_code().await, code, "{args:?}");
        let (out, err) = (pt.stdout(), pt.stderr());
        assert_protocol_only(&out);
        let (line_stream, other) = if on_stderr {
            (&err, &out)
        } else {
            (&out, &err)
        };
        assert_eq!(line_stream.len(), 1, "{args:?}: {line_stream:?}");
        assert!(
            line_stream[0].starts_with(prefix),
            "{args:?}: {line_stream:?}"
        );
        assert!(other.is_empty(), "{args:?}: {other:?}");
    }
}

#[tokio::test]
async fn s1_3_2_proxy_error_after_version_and_proxy_done() {
    let dir = tempfile::tempdir().unwrap();
    let mut pt = Pt::spawn(
        &[
            "-ptversion",
            "2.2",
            "-transports",
            "plain",
            "-proxy",
            "ftp://127.0.0.1:1",
        ],
        &[],
        dir.path(),
    );
    assert_eq!(pt.exit_code().await, 69);
    assert_eq!(pt.stdout(), ["VERSION 2.2"]);
    assert_eq!(pt.stderr().len(), 1);
    assert!(
        pt.stderr()[0].starts_with("PROXY-ERROR "),
        "{:?}",
        pt.stderr()
    );

    let mut pt = Pt::spawn(
        &[
            "-ptversion",
            "3.0",
            "-transports",
            "plain",
            "-proxy",
            "socks5://127.0.0.1:1",
            "-exit-on-stdin-close",
        ],
        &[],
        dir.path(),
    );
    pt.wait_line(|l| l == "CMETHODS DONE").await;
    drop(pt.stdin.take());
    assert_eq!(pt.exit_code().await, 0);
    assert_protocol_only(&pt.stdout());
    assert_eq!(pt.stdout()[..2], ["VERSION 3.0", "PROXY DONE"]);
}

/// Stdin requests (docs/IPC.md): `STATS` is answered on stdout with the stats schema; bad
/// signal lines get one `-ERROR` line on stderr and the dispatcher keeps serving.
#[tokio::test]
async fn stdin_stats_request_and_signal_errors() {
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_server().await;
    let (mut srv, srv_addr) = server("3.0", "plain", echo, dir.path()).await;
    let target = srv_addr.to_string();
    let mut cli = Pt::spawn(
        &[
            "-ptversion",
            "3.0",
            "-transport",
            "plain",
            "-mode",
            "transparent-TCP",
            "-target",
            &target,
            "-exit-on-stdin-close",
        ],
        &[],
        dir.path(),
    );
    let cm = cli
        .wait_line(|l| l.starts_with("CMETHOD plain transparent-TCP "))
        .await;
    roundtrip(TcpStream::connect(method_addr(&cm)).await.unwrap(), "stats").await;
    let oversized = format!("SMESSAGE plain {}", "QUFB".repeat(6000));
    for bad in [
        "SMESSAGE nope aGk=",
        "SMESSAGE plain aGk=",
        "SMESSAGE plain aGk",
        "CMESSAGE plain aGk=",
        "STATS nope",
        oversized.as_str(),
        "SOMETHING-NEW ignored",
    ] {
        cli.send(bad).await;
    }
    cli.send("STATS").await;
    let stats = cli.wait_line(|l| l.starts_with("STATS [")).await;
    assert_eq!(
        stats,
        format!(
            r#"STATS [{{"transport":"plain","connections_open":0,"connections_total":1,"connections_failed":0,"bytes_up":{N},"bytes_down":{N},"errors":{{}}}}]"#
        )
    );
    srv.send("STATS plain").await;
    let s = srv.wait_line(|l| l.starts_with("STATS [")).await;
    assert!(s.contains(r#""connections_total":1"#), "{s}");
    drop(cli.stdin.take());
    assert_eq!(cli.exit_code().await, 0);
    assert_protocol_only(&cli.stdout());
    assert_eq!(
        cli.stderr(),
        [
            "SMESSAGE-ERROR unknown transport \"nope\"",
            "SMESSAGE-ERROR transport \"plain\" has no signals channel",
            "SMESSAGE-ERROR SMESSAGE: payload is not base64",
            "CMESSAGE-ERROR a client reads SMESSAGE lines, not CMESSAGE",
            "STATS-ERROR unknown transport \"nope\"",
            "SMESSAGE-ERROR SMESSAGE line or payload too long",
        ]
    );
    srv.terminate();
    assert_eq!(srv.exit_code().await, 0);
}

/// `-ipcLogLevel`: LOG lines at or above the level, in the negotiated version's syntax, on
/// stdout after VERSION; none by default.
#[tokio::test]
async fn ipc_log_level_filters_log_lines_in_both_syntaxes() {
    let dir = tempfile::tempdir().unwrap();
    for (v, level, want) in [
        ("2.2", None, None),
        ("2.2", Some("WARN"), None),
        ("3.0", Some("info"), Some("LOG INFO exiting: stdin closed")),
        ("2.2", Some("DEBUG"), Some("LOG INFO exiting: stdin closed")),
        (
            "1",
            Some("INFO"),
            Some("LOG SEVERITY=info MESSAGE=\"exiting: stdin closed\""),
        ),
    ] {
        let mut args = vec![
            "-ptversion",
            v,
            "-transport",
            "plain",
            "-exit-on-stdin-close",
        ];
        if let Some(l) = level {
            args.extend(["-ipcLogLevel", l]);
        }
        let mut pt = Pt::spawn(&args, &[], dir.path());
        pt.wait_line(|l| l == "CMETHODS DONE").await;
        drop(pt.stdin.take());
        assert_eq!(pt.exit_code().await, 0);
        let out = pt.stdout();
        assert_protocol_only(&out);
        assert_eq!(out[0], format!("VERSION {v}"));
        let logs: Vec<&String> = out.iter().filter(|l| l.starts_with("LOG ")).collect();
        match want {
            None => assert!(logs.is_empty(), "{v} {level:?}: {out:?}"),
            Some(w) => assert!(logs.iter().any(|l| *l == w), "{v} {level:?}: {out:?}"),
        }
        assert!(pt.stderr().is_empty());
    }
}

/// `-metrics ADDR` works in dispatcher mode: Prometheus text and the JSON schema.
#[tokio::test]
async fn metrics_flag_in_ipc_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mut pt = Pt::spawn(
        &[
            "-ptversion",
            "2.2",
            "-transport",
            "plain",
            "-metrics",
            "127.0.0.1:0",
            "-ipcLogLevel",
            "INFO",
            "-exit-on-stdin-close",
        ],
        &[],
        dir.path(),
    );
    let line = pt
        .wait_line(|l| l.starts_with("LOG INFO metrics on http://"))
        .await;
    let addr: SocketAddr = line
        .trim_start_matches("LOG INFO metrics on http://")
        .trim_end_matches("/metrics")
        .parse()
        .unwrap();
    let get = |path: &'static str| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut body = String::new();
        timeout(T, s.read_to_string(&mut body))
            .await
            .unwrap()
            .unwrap();
        body
    };
    assert!(get("/metrics").await.contains("transport=\"plain\""));
    assert!(get("/stats").await.contains(r#""transport":"plain""#));
    drop(pt.stdin.take());
    assert_eq!(pt.exit_code().await, 0);
    assert_protocol_only(&pt.stdout());
    assert_eq!(pt.stdout()[0], "VERSION 2.2");
    // A bad address is one ENV-ERROR before anything else.
    let mut bad = Pt::spawn(
        &[
            "-ptversion",
            "2.2",
            "-transport",
            "plain",
            "-metrics",
            "nope",
        ],
        &[],
        dir.path(),
    );
    assert_eq!(bad.exit_code().await, 64);
    assert!(bad.stdout().is_empty());
    assert!(bad.stderr()[0].starts_with("ENV-ERROR invalid value \"nope\" for flag -metrics"));
}

/// Decision (docs/IPC.md): a SOCKS5 greeting and the 0x09/0x80 settings may come in one write
/// (the WIP: "0x80 … followed by connection settings"); bounded by the settings limit and the
/// handshake timeout. Greeting + CONNECT with 0x00 stays a pipelining error.
#[tokio::test]
async fn s1_3_3_greeting_and_settings_in_one_write() {
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_server().await;
    let pt = Pt::spawn(
        &["-ptversion", "2.2", "-transport", "plain"],
        &[],
        dir.path(),
    );
    let socks = method_addr(&pt.wait_line(|l| l.starts_with("CMETHOD plain ")).await);
    let SocketAddr::V4(v4) = echo else { panic!() };
    let mut connect = vec![5, 1, 0, 1];
    connect.extend(v4.ip().octets());
    connect.extend(v4.port().to_be_bytes());
    for (greeting, settings) in [
        (vec![5u8, 1, 9], [&[0u8, 0, 0, 2][..], b"{}"].concat()),
        (vec![5, 2, 0, 9], vec![0, 0, 0, 0]),
        (vec![5, 1, 0x80], b"{\"a\":\"}\"}".to_vec()),
    ] {
        let mut s = TcpStream::connect(socks).await.unwrap();
        let all = [greeting.clone(), settings, connect.clone()].concat();
        s.write_all(&all).await.unwrap();
        let mut rep = [0u8; 12];
        timeout(T, s.read_exact(&mut rep)).await.unwrap().unwrap();
        assert_eq!(
            rep[..4],
            [5, greeting[2..].iter().copied().max().unwrap(), 5, 0],
            "{greeting:?}"
        );
        roundtrip(s, "one write").await;
    }
    // 0x00: greeting and CONNECT in one write is still refused (closed, maybe reset).
    let mut s = TcpStream::connect(socks).await.unwrap();
    s.write_all(&[&[5u8, 1, 0][..], &connect].concat())
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = timeout(T, s.read_to_end(&mut got)).await.unwrap();
    assert!(read.is_err() || !got.starts_with(&[5, 0, 5, 0]), "{got:?}");
}

/// The 2016 draft's configuration: `generate-config` emits the client and server objects,
/// `--config` runs each; the client is bound to the server (SOCKS destination `[::0]:0`), and
/// state goes to the current directory.
#[tokio::test]
async fn config_json_and_generate_config_full_cycle() {
    for t in TRANSPORTS {
        let dir = tempfile::tempdir().unwrap();
        let echo = echo_server().await;
        let generated = std::process::Command::new(env!("CARGO_BIN_EXE_ptkit"))
            .args(["generate-config", t, "--server", "127.0.0.1:1"])
            .args(["--target", &echo.to_string()])
            .output()
            .unwrap();
        assert!(generated.status.success(), "{generated:?}");
        // {"client": {…}, "server": {…}}, pretty-printed, keys sorted.
        let text = String::from_utf8(generated.stdout).unwrap();
        let (client, server) = text.split_once("\"server\": ").unwrap();
        let client = client
            .trim_start_matches(['{', '\n', ' '])
            .trim_start_matches("\"client\": ")
            .trim_end_matches([',', '\n', ' ']);
        let server = server.trim_end_matches(['}', '\n', ' ']).to_owned() + "}";
        assert!(
            client.contains(&format!("\"transport\": \"{t}\"")),
            "{text}"
        );
        assert!(client.contains("\"host\": \"127.0.0.1\""), "{text}");
        assert!(server.contains("\"role\": \"server\""), "{text}");
        assert!(
            server.contains(&format!("\"target\": \"{echo}\"")),
            "{text}"
        );
        let server = server.replace("\"127.0.0.1:1\"", "\"127.0.0.1:0\"");
        let mut srv = Pt::spawn(&["--config", &server], &[], dir.path());
        let sm = srv
            .wait_line(|l| l.starts_with(&format!("SMETHOD {t} ")))
            .await;
        let port = method_addr(&sm).port();
        let client = client.replace("\"port\": \"1\"", &format!("\"port\": {port}"));
        let mut cli = Pt::spawn(&["--config", &client], &[], dir.path());
        let cm = cli
            .wait_line(|l| l.starts_with(&format!("CMETHOD {t} socks5 ")))
            .await;
        // Bound destination [::0]:0: the connection goes to the configured server.
        let mut s = TcpStream::connect(method_addr(&cm)).await.unwrap();
        s.write_all(&[5, 1, 0]).await.unwrap();
        let mut r = [0u8; 2];
        s.read_exact(&mut r).await.unwrap();
        assert_eq!(r, [5, 0]);
        s.write_all(&ptkit_ipc::socks_auth::BOUND_CONNECT_REQUEST)
            .await
            .unwrap();
        let mut rep = [0u8; 10];
        timeout(T, s.read_exact(&mut rep)).await.unwrap().unwrap();
        assert_eq!(rep[..2], [5, 0], "{t}: {rep:?}");
        roundtrip(s, &format!("--config {t}")).await;
        for pt in [&mut srv, &mut cli] {
            pt.terminate();
            assert_eq!(pt.exit_code().await, 0);
            assert_protocol_only(&pt.stdout());
            assert_eq!(pt.stdout()[0], "VERSION 2.0");
            assert!(pt.stderr().is_empty(), "{:?}", pt.stderr());
        }
    }
    // Bad configurations: one ENV-ERROR on stderr, exit 64, nothing on stdout.
    let dir = tempfile::tempdir().unwrap();
    for (args, prefix) in [
        (
            vec!["--config", "{"],
            "ENV-ERROR configuration is not valid JSON",
        ),
        (
            vec!["--config", r#"{"transport":"plain","x":1}"#],
            "ENV-ERROR unknown configuration key",
        ),
        (
            vec!["--config", r#"{"transport":"plain","role":"server"}"#],
            "ENV-ERROR a server configuration needs",
        ),
        (vec!["--config"], "ENV-ERROR usage: ptkit --config JSON"),
    ] {
        let mut pt = Pt::spawn(&args, &[], dir.path());
        assert_eq!(pt.exit_code().await, 64, "{args:?}");
        assert!(pt.stdout().is_empty(), "{args:?}");
        assert_eq!(pt.stderr().len(), 1, "{args:?}: {:?}", pt.stderr());
        assert!(
            pt.stderr()[0].starts_with(prefix),
            "{args:?}: {:?}",
            pt.stderr()
        );
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_ptkit"))
        .args(["generate-config", "nope"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(64));
    assert!(bad.stdout.is_empty());
}
