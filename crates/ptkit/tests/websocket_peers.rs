//! The `ptkit` binary's websocket transport against real peers, on 127.0.0.1 only:
//!
//! * Debian's headless **chromium** as the WebSocket client of `ptkit server websocket`
//!   (the flash-proxy case: a browser tab carrying the bytes), driven over the DevTools
//!   protocol on `--remote-debugging-pipe`; binary messages and the `base64` subprotocol;
//! * **pebble** + pebble-challtestsrv issuing the `wss` certificate over TLS-ALPN-01 on the
//!   server's own port, then `ptkit client websocket` carrying 1 MiB through SOCKS5, and the
//!   certificate reused from `--state-dir` after a restart with no ACME server left;
//! * a static self-signed certificate with `--tls-cert`/`--tls-key`, a `--base64` client,
//!   and a client trusting the wrong CA, which must be refused without harming the server.
//!
//! A missing peer fails the test under `CI=true`; otherwise the test prints SKIP and passes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ptkit_core::{Args, Conn, Target};
use ptkit_websocket::tls::{RustlsConnector, TlsConnect, client_config, server_name};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::timeout;

/// Bound for one step (a handshake, a DevTools call, a process starting).
const STEP: Duration = Duration::from_secs(30);
/// Bytes pushed through each SOCKS tunnel.
const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(bin).is_file()))
        .unwrap_or(false)
}

/// True when every program in `bins` is installed. Otherwise panics under `CI=true`, or
/// prints a SKIP line and returns false.
fn peers_available(test: &str, bins: &[&str], install: &str) -> bool {
    let missing: Vec<&str> = bins.iter().copied().filter(|b| !on_path(b)).collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {missing:?} not installed ({install}) and CI=true");
    }
    eprintln!("SKIP {test}: {missing:?} not installed ({install})");
    false
}

/// Runs a whole test with a deadline and prints its duration.
async fn bounded<F: Future<Output = ()>>(limit: Duration, test: F) {
    let started = Instant::now();
    timeout(limit, test)
        .await
        .unwrap_or_else(|_| panic!("test took longer than {limit:?}"));
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + STEP;
    while TcpStream::connect(loopback(port)).await.is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP echo server that also records, per connection, every byte it received.
struct Echo {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Echo {
    async fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let rec = received.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let rec = rec.clone();
                let index = {
                    let mut all = rec.lock().unwrap();
                    all.push(Vec::new());
                    all.len() - 1
                };
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        rec.lock().unwrap()[index].extend_from_slice(&buf[..n]);
                        if tcp.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Echo { addr, received }
    }

    fn connection(&self, index: usize) -> Vec<u8> {
        self.received
            .lock()
            .unwrap()
            .get(index)
            .cloned()
            .unwrap_or_else(|| panic!("the echo saw no connection #{index}"))
    }
}

/// A `ptkit` process (killed on drop) whose stderr log is collected; the log is printed when
/// the test panics.
struct Ptkit {
    name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Ptkit {
    fn spawn(name: &str, args: &[String]) -> Ptkit {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ptkit"))
            .args(args)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        tokio::spawn(async move {
            let mut r = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = r.next_line().await {
                l2.lock().unwrap().push(line);
            }
        });
        Ptkit {
            name: name.to_owned(),
            child,
            lines,
        }
    }

    /// The address logged after `marker` ("server on ", "SOCKS5 on "): the process is
    /// listening once it is logged.
    async fn logged_addr(&self, marker: &str) -> SocketAddr {
        let found = timeout(STEP, async {
            loop {
                let hit = self.lines.lock().unwrap().iter().find_map(|l| {
                    let rest = &l[l.find(marker)? + marker.len()..];
                    let end = rest.find([',', ' ', ';']).unwrap_or(rest.len());
                    rest[..end].parse::<SocketAddr>().ok()
                });
                if let Some(a) = hit {
                    return a;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "{} logged no {marker:?} line: {:#?}",
                self.name,
                self.lines.lock().unwrap()
            )
        })
    }

    /// The first log line containing `needle` (waits for it).
    async fn wait_line(&self, needle: &str) -> String {
        let found = timeout(STEP, async {
            loop {
                let hit = self
                    .lines
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|l| l.contains(needle))
                    .cloned();
                if let Some(l) = hit {
                    return l;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "{} logged no line with {needle:?}: {:#?}",
                self.name,
                self.lines.lock().unwrap()
            )
        })
    }

    /// Log lines containing `needle`.
    fn count_lines(&self, needle: &str) -> usize {
        let lines = self.lines.lock().unwrap();
        lines.iter().filter(|l| l.contains(needle)).count()
    }

    /// SIGTERM, then the exit status (0 expected).
    async fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id().unwrap();
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        timeout(STEP, self.child.wait())
            .await
            .expect("ptkit did not exit on SIGTERM")
            .unwrap()
            .code()
    }
}

impl Drop for Ptkit {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} log", self.name);
            for l in self.lines.lock().unwrap().iter() {
                eprintln!("{l}");
            }
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Starts `ptkit client websocket` with `extra` flags; returns it and its SOCKS address.
async fn start_client(name: &str, extra: &[String]) -> (Ptkit, SocketAddr) {
    let mut args = strings(&["client", "websocket", "--listen", "127.0.0.1:0"]);
    args.extend_from_slice(extra);
    let client = Ptkit::spawn(name, &args);
    let socks = client.logged_addr("SOCKS5 on ").await;
    (client, socks)
}

/// 1 MiB of pseudo-random bytes through the SOCKS port to the echo and back, compared byte
/// for byte. The write side is shut down only after every byte is back: WebSocket has no
/// half-close (a shutdown sends Close, which ends the tunnel both ways), so
/// `ptkit::demo::echo_transfer`, which half-closes first, does not fit here.
async fn push_mib(socks: SocketAddr, via: &str) {
    // The client is pinned to its --server; the SOCKS target is not used for routing.
    let target = Target::parse("127.0.0.1:9").unwrap();
    let stream = timeout(
        STEP,
        ptkit::demo::socks5_connect(socks, &target, &Args::new()),
    )
    .await
    .unwrap_or_else(|_| panic!("SOCKS connect via {via} timed out"))
    .unwrap_or_else(|e| panic!("SOCKS connect via {via}: {e:#}"));
    let started = Instant::now();
    let data = Arc::new(content(u32::from(socks.port()), &[MIB as usize]));
    let (mut r, mut w) = stream.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w
    });
    let mut got = vec![0u8; data.len()];
    timeout(Duration::from_secs(60), r.read_exact(&mut got))
        .await
        .unwrap_or_else(|_| panic!("1 MiB via {via} timed out"))
        .unwrap_or_else(|e| panic!("1 MiB via {via}: {e}"));
    let mut w = writer.await.unwrap();
    assert_same_bytes(via, &got, &data);
    eprintln!(
        "1 MiB via {via}: {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    // Then the tunnel ends cleanly: our shutdown becomes a Close, and the read side ends.
    w.shutdown().await.unwrap();
    let mut rest = Vec::new();
    timeout(STEP, r.read_to_end(&mut rest))
        .await
        .unwrap_or_else(|_| panic!("the tunnel via {via} did not end after shutdown"))
        .unwrap_or_else(|e| panic!("end of tunnel via {via}: {e}"));
    assert!(rest.is_empty(), "{} unexpected bytes via {via}", rest.len());
}

/// A raw SOCKS5 CONNECT (no authentication); returns the reply's REP byte.
async fn socks5_rep(socks: SocketAddr) -> u8 {
    let mut s = TcpStream::connect(socks).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut method = [0u8; 2];
    s.read_exact(&mut method).await.unwrap();
    assert_eq!(method, [5, 0], "SOCKS method selection");
    s.write_all(&[5, 1, 0, 1, 127, 0, 0, 1, 0, 9])
        .await
        .unwrap();
    let mut reply = [0u8; 10];
    timeout(STEP, s.read_exact(&mut reply))
        .await
        .expect("no SOCKS reply")
        .unwrap();
    assert_eq!(reply[0], 5, "SOCKS reply version");
    reply[1]
}

/// A TLS handshake to 127.0.0.1:`port` with SNI `name`, trusting only `ca_pem`.
async fn tls_handshake(port: u16, name: &str, ca_pem: &Path) -> Result<Conn, String> {
    let config = client_config(Some(ca_pem))?;
    let tcp = TcpStream::connect(loopback(port))
        .await
        .map_err(|e| e.to_string())?;
    let io: Conn = Box::new(tcp);
    timeout(
        Duration::from_secs(10),
        RustlsConnector::new(config).connect(server_name(name)?, io),
    )
    .await
    .map_err(|_| "TLS handshake timed out".to_owned())?
    .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------
// Chromium over the DevTools protocol (pipe transport)
// ---------------------------------------------------------------------------------------

/// Headless chromium with `--remote-debugging-pipe`: it reads DevTools commands on fd 3 and
/// writes answers on fd 4, NUL-terminated JSON. A shell wires our stdin/stdout pipes to
/// those descriptors before exec'ing chromium. Chromium runs in its own process group, which
/// is killed on drop (the browser and its renderers, nothing else).
struct Chromium {
    child: Child,
    pgid: u32,
    commands: ChildStdin,
    answers: BufReader<ChildStdout>,
    next_id: u64,
    session: Option<String>,
    log: PathBuf,
    _profile: tempfile::TempDir,
}

impl Chromium {
    async fn launch() -> Chromium {
        let profile = tempfile::tempdir().unwrap();
        let log = profile.path().join("chromium.log");
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null"#)
            .arg("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-pipe",
            ])
            .arg(format!(
                "--user-data-dir={}",
                profile.path().join("profile").display()
            ))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pgid = child.id().unwrap();
        let commands = child.stdin.take().unwrap();
        let answers = BufReader::new(child.stdout.take().unwrap());
        Chromium {
            child,
            pgid,
            commands,
            answers,
            next_id: 0,
            session: None,
            log,
            _profile: profile,
        }
    }

    /// Sends one command and returns its answer (raw JSON), skipping events.
    async fn call(&mut self, method: &str, params: &str) -> String {
        self.next_id += 1;
        let id = self.next_id;
        let session = match &self.session {
            Some(s) => format!(r#","sessionId":{}"#, json_string(s)),
            None => String::new(),
        };
        let command = format!(r#"{{"id":{id},"method":"{method}","params":{params}{session}}}"#);
        self.commands.write_all(command.as_bytes()).await.unwrap();
        self.commands.write_all(b"\0").await.unwrap();
        self.commands.flush().await.unwrap();
        let prefix = format!(r#"{{"id":{id},"#);
        let answer = timeout(Duration::from_secs(60), async {
            loop {
                let mut message = Vec::new();
                let n = self.answers.read_until(0, &mut message).await.unwrap();
                assert!(n > 0, "chromium closed the DevTools pipe");
                message.pop_if(|b| *b == 0);
                let text = String::from_utf8(message).unwrap();
                if text.starts_with(&prefix) {
                    return text;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no DevTools answer to {method} in 60 s"));
        assert!(
            !answer.starts_with(&format!(r#"{prefix}"error""#)),
            "{method} failed: {answer}"
        );
        answer
    }

    /// Opens a blank tab and attaches to it; later commands go to that tab.
    async fn open_tab(&mut self) {
        let created = self
            .call("Target.createTarget", r#"{"url":"about:blank"}"#)
            .await;
        let target = json_str_field(&created, "targetId").expect("no targetId");
        let attached = self
            .call(
                "Target.attachToTarget",
                &format!(r#"{{"targetId":{},"flatten":true}}"#, json_string(&target)),
            )
            .await;
        self.session = Some(json_str_field(&attached, "sessionId").expect("no sessionId"));
    }

    /// Evaluates `expression` (a promise of a string) in the tab and returns the string.
    async fn evaluate(&mut self, expression: &str) -> String {
        let answer = self
            .call(
                "Runtime.evaluate",
                &format!(
                    r#"{{"expression":{},"awaitPromise":true,"returnByValue":true}}"#,
                    json_string(expression)
                ),
            )
            .await;
        assert!(
            !answer.contains(r#""exceptionDetails""#),
            "the page threw: {}",
            answer.chars().take(2000).collect::<String>()
        );
        json_str_field(&answer, "value").unwrap_or_else(|| {
            panic!(
                "no string value: {}",
                answer.chars().take(2000).collect::<String>()
            )
        })
    }

    async fn close(mut self) {
        self.session = None;
        let _ = self.call("Browser.close", "{}").await;
        let _ = timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // The whole process group we created: the browser and its helpers.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.pgid)])
            .stderr(Stdio::null())
            .status();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- chromium log (last lines, newest first)");
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The first `"key":"…"` string in Chromium's compact JSON. Only used for values without
/// escapes (ids, and the test's own `[0-9a-z|,]` results); an escape is refused.
fn json_str_field(json: &str, key: &str) -> Option<String> {
    let marker = format!(r#""{key}":""#);
    let start = json.find(&marker)? + marker.len();
    let len = json[start..].find('"')?;
    let value = &json[start..start + len];
    assert!(!value.ends_with('\\'), "escaped string in {key}");
    Some(value.to_owned())
}

/// The deterministic content shared with the page: one LCG stream over all messages.
struct Lcg(u32);

impl Lcg {
    fn next_byte(&mut self) -> u8 {
        self.0 = self.0.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (self.0 >> 24) as u8
    }
}

fn content(seed: u32, sizes: &[usize]) -> Vec<u8> {
    let mut lcg = Lcg(seed);
    let total: usize = sizes.iter().sum();
    (0..total).map(|_| lcg.next_byte()).collect()
}

/// `count` message sizes: the WebSocket length-encoding edges first, then pseudo-random
/// sizes in 1..=`max`.
fn sizes(count: usize, max: usize, seed: u32) -> Vec<usize> {
    let mut out: Vec<usize> = [1, 2, 3, 125, 126, 127, 1000, max]
        .into_iter()
        .filter(|n| *n <= max)
        .collect();
    let mut lcg = Lcg(seed);
    while out.len() < count {
        let r = u32::from_be_bytes([0, lcg.next_byte(), lcg.next_byte(), lcg.next_byte()]);
        out.push(1 + r as usize % max);
    }
    out
}

/// The page's side: opens `url` (with `protocol` unless empty), sends the messages (as
/// base64 text when `protocol` is "base64"), collects the echo until every byte is back,
/// closes, and resolves to `protocol|kinds|closeCode|count|hex of the echoed bytes`.
const PAGE_SCRIPT: &str = r#"
(async () => {
  const url = __URL__, protocol = __PROTOCOL__, sizes = __SIZES__;
  let seed = __SEED__ >>> 0;
  const next = () => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return seed >>> 24; };
  const total = sizes.reduce((a, b) => a + b, 0);
  const sent = new Uint8Array(total);
  for (let i = 0; i < total; i++) sent[i] = next();
  const toBase64 = (bytes) => {
    let s = "";
    for (let i = 0; i < bytes.length; i += 8192)
      s += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
    return btoa(s);
  };
  const ws = protocol ? new WebSocket(url, protocol) : new WebSocket(url);
  ws.binaryType = "arraybuffer";
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error("websocket failed to open"));
  });
  const got = new Uint8Array(total);
  let n = 0;
  const kinds = new Set();
  const echoed = new Promise((resolve, reject) => {
    ws.onmessage = (e) => {
      let bytes;
      if (typeof e.data === "string") {
        kinds.add("text");
        bytes = Uint8Array.from(atob(e.data), (c) => c.charCodeAt(0));
      } else {
        kinds.add("binary");
        bytes = new Uint8Array(e.data);
      }
      if (n + bytes.length > total) {
        reject(new Error("echo longer than sent: " + (n + bytes.length)));
        return;
      }
      got.set(bytes, n);
      n += bytes.length;
      if (n === total) resolve();
    };
    ws.onclose = (e) => reject(new Error("closed after " + n + " bytes, code " + e.code));
    ws.onerror = () => reject(new Error("websocket error after " + n + " bytes"));
  });
  let offset = 0;
  for (const size of sizes) {
    const m = sent.subarray(offset, offset + size);
    offset += size;
    ws.send(protocol === "base64" ? toBase64(m) : m);
  }
  await echoed;
  const closed = new Promise((resolve) => { ws.onclose = (e) => resolve(e.code); });
  ws.onerror = null;
  ws.close(1000);
  const code = await Promise.race([closed, new Promise((r) => setTimeout(() => r(-1), 5000))]);
  const hex = Array.from(got, (b) => (b < 16 ? "0" : "") + b.toString(16)).join("");
  return [ws.protocol, [...kinds].sort().join(","), code, n, hex].join("|");
})()
"#;

fn page_script(url: &str, protocol: &str, seed: u32, sizes: &[usize]) -> String {
    let list: Vec<String> = sizes.iter().map(ToString::to_string).collect();
    PAGE_SCRIPT
        .replace("__URL__", &json_string(url))
        .replace("__PROTOCOL__", &json_string(protocol))
        .replace("__SIZES__", &format!("[{}]", list.join(",")))
        .replace("__SEED__", &seed.to_string())
}

fn from_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd hex length");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// Asserts two byte strings are equal, naming the first difference.
fn assert_same_bytes(what: &str, got: &[u8], want: &[u8]) {
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {i} of {}", want.len());
    }
    assert_eq!(got.len(), want.len(), "{what}: length");
}

struct PageResult {
    protocol: String,
    kinds: String,
    close_code: i64,
    echoed: Vec<u8>,
}

fn parse_page_result(value: &str) -> PageResult {
    let parts: Vec<&str> = value.split('|').collect();
    assert_eq!(
        parts.len(),
        5,
        "page result {:?}",
        &value[..value.len().min(200)]
    );
    let echoed = from_hex(parts[4]);
    assert_eq!(parts[3].parse::<usize>().unwrap(), echoed.len());
    PageResult {
        protocol: parts[0].to_owned(),
        kinds: parts[1].to_owned(),
        close_code: parts[2].parse().unwrap(),
        echoed,
    }
}

// ---------------------------------------------------------------------------------------
// Pebble
// ---------------------------------------------------------------------------------------

/// pebble + pebble-challtestsrv on loopback (killed on drop). challtestsrv only answers DNS
/// (every name → 127.0.0.1); pebble validates TLS-ALPN-01 on `tls_port`. Pebble's own HTTPS
/// uses a throwaway self-signed certificate, `ca_pem`.
struct Pebble {
    dir: tempfile::TempDir,
    directory_url: String,
    management_port: u16,
    ca_pem: PathBuf,
    children: Vec<Child>,
}

impl Pebble {
    async fn start(tls_port: u16) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let (_, cert_pem, key_pem) = ptkit_tls::self_signed(&names).unwrap();
        let ca_pem = dir.path().join("pebble-https.pem");
        std::fs::write(&ca_pem, &cert_pem).unwrap();
        let key = dir.path().join("pebble-https.key");
        std::fs::write(&key, &key_pem).unwrap();
        let (acme_port, management_port) = (free_port(), free_port());
        let (dns_port, challtest_port, http_port) = (free_port(), free_port(), free_port());
        let config = dir.path().join("pebble-config.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"pebble":{{"listenAddress":"127.0.0.1:{acme_port}","managementListenAddress":"127.0.0.1:{management_port}","certificate":{},"privateKey":{},"httpPort":{http_port},"tlsPort":{tls_port},"ocspResponderURL":"","externalAccountBindingRequired":false}}}}"#,
                json_string(&ca_pem.display().to_string()),
                json_string(&key.display().to_string()),
            ),
        )
        .unwrap();
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let challtest = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{challtest_port}")])
            .stdin(Stdio::null())
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        wait_for_port(challtest_port, "pebble-challtestsrv").await;
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_VA_ALWAYS_VALID", "0")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        wait_for_port(acme_port, "pebble").await;
        wait_for_port(management_port, "pebble management").await;
        Pebble {
            directory_url: format!("https://127.0.0.1:{acme_port}/dir"),
            management_port,
            ca_pem,
            dir,
            children: vec![challtest, pebble],
        }
    }

    /// Pebble's issuing root (new on every start) from its management interface, as PEM.
    async fn issuing_root_pem(&self) -> String {
        let mut tls = tls_handshake(self.management_port, "127.0.0.1", &self.ca_pem)
            .await
            .unwrap();
        tls.write_all(b"GET /roots/0 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        // Go closes without close_notify: keep what was read before the error.
        let _ = timeout(STEP, tls.read_to_end(&mut response)).await;
        let text = String::from_utf8(response).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        let begin = text.find("-----BEGIN CERTIFICATE-----").expect("no PEM");
        text[begin..].to_owned()
    }

    async fn stop(mut self) {
        for child in &mut self.children {
            child.kill().await.unwrap();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in ["pebble.log", "pebble.err", "challtestsrv.err"] {
                let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
                eprintln!("--- {name}\n{text}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_binary_messages_through_ptkit_websocket_server() {
    let test = "chromium_binary_messages_through_ptkit_websocket_server";
    if !peers_available(test, &["chromium"], "apt-get install -y chromium") {
        return;
    }
    bounded(Duration::from_secs(180), async {
        let echo = Echo::start().await;
        let state = tempfile::tempdir().unwrap();
        let server = Ptkit::spawn(
            "server",
            &[
                "server".into(),
                "websocket".into(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--target".into(),
                echo.addr.to_string(),
                "--state-dir".into(),
                state.path().display().to_string(),
            ],
        );
        let addr = server.logged_addr("server on ").await;
        let url = format!("ws://{addr}/");

        let mut browser = Chromium::launch().await;
        browser.open_tab().await;

        // 64 binary messages, 1 byte … 60 KiB.
        let binary_sizes = sizes(64, 60 * 1024, 7);
        let binary_seed = 0x5eed_0001;
        let want = content(binary_seed, &binary_sizes);
        let value = browser
            .evaluate(&page_script(&url, "", binary_seed, &binary_sizes))
            .await;
        let page = parse_page_result(&value);
        assert_eq!(page.protocol, "", "no subprotocol was asked for");
        assert_eq!(
            page.kinds, "binary",
            "the server answered binary with binary"
        );
        assert_eq!(page.close_code, 1000, "clean close");
        assert_same_bytes("chromium → ptkit → echo", &echo.connection(0), &want);
        assert_same_bytes("echo → ptkit → chromium", &page.echoed, &want);
        eprintln!(
            "binary: {} messages, {} bytes each way",
            binary_sizes.len(),
            want.len()
        );

        // The base64 subprotocol: text messages both ways, 1 byte … 40 KiB decoded.
        let text_sizes = sizes(16, 40 * 1024, 11);
        let text_seed = 0x5eed_0002;
        let want = content(text_seed, &text_sizes);
        let value = browser
            .evaluate(&page_script(&url, "base64", text_seed, &text_sizes))
            .await;
        let page = parse_page_result(&value);
        assert_eq!(page.protocol, "base64", "the server selected base64");
        assert_eq!(page.kinds, "text", "base64 answers are text messages");
        assert_eq!(page.close_code, 1000, "clean close");
        assert_same_bytes("chromium base64 → echo", &echo.connection(1), &want);
        assert_same_bytes("echo → chromium base64", &page.echoed, &want);
        eprintln!(
            "base64: {} messages, {} bytes each way",
            text_sizes.len(),
            want.len()
        );
        browser.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_acme_from_pebble_end_to_end() {
    let test = "wss_with_acme_from_pebble_end_to_end";
    if !peers_available(
        test,
        &["pebble", "pebble-challtestsrv"],
        "apt-get install -y pebble",
    ) {
        return;
    }
    bounded(Duration::from_secs(180), async {
        let echo = Echo::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let port = free_port();
        let pebble = Pebble::start(port).await;
        let acme_ca = pebble.ca_pem.display().to_string();
        let server_args = |directory: &str| -> Vec<String> {
            vec![
                "server".into(),
                "websocket".into(),
                "--listen".into(),
                loopback(port).to_string(),
                "--target".into(),
                echo.addr.to_string(),
                "--acme-hostnames".into(),
                "ws.test".into(),
                "--acme-email".into(),
                "ops@example.com".into(),
                "--acme-directory".into(),
                directory.to_owned(),
                "--acme-ca".into(),
                acme_ca.clone(),
                "--state-dir".into(),
                state.display().to_string(),
            ]
        };
        let mut server = Ptkit::spawn("server", &server_args(&pebble.directory_url));
        server.logged_addr("server on ").await;

        let root = tmp.path().join("pebble-root.pem");
        std::fs::write(&root, pebble.issuing_root_pem().await).unwrap();
        let issued = Instant::now();
        let deadline = issued + Duration::from_secs(90);
        loop {
            match tls_handshake(port, "ws.test", &root).await {
                Ok(_) => break,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "no certificate for ws.test after 90 s: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!(
            "certificate issued within {:.1} s",
            issued.elapsed().as_secs_f64()
        );
        server.wait_line("installed ACME certificate").await;
        assert_eq!(server.count_lines("installed ACME certificate"), 1);
        assert_eq!(server.count_lines("registered ACME account"), 1);
        let (cert_file, _) = ptkit_tls::cached_cert_paths(&state.join("websocket-acme"), "ws.test");
        let cached = std::fs::read(&cert_file).unwrap();

        let (_client, socks) = start_client(
            "client",
            &[
                "--url".into(),
                format!("wss://ws.test:{port}/"),
                "--server".into(),
                loopback(port).to_string(),
                "--ca-file".into(),
                root.display().to_string(),
            ],
        )
        .await;
        push_mib(socks, "wss with pebble's certificate").await;

        // Restart with no ACME server anywhere: the certificate must come from the cache.
        assert_eq!(server.terminate().await, Some(0), "clean exit on SIGTERM");
        drop(server);
        pebble.stop().await;
        let dead = format!("https://127.0.0.1:{}/dir", free_port());
        let restarted = Ptkit::spawn("restarted server", &server_args(&dead));
        restarted.logged_addr("server on ").await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match tls_handshake(port, "ws.test", &root).await {
                Ok(_) => break,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "the cached certificate was not served after the restart: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        push_mib(socks, "wss after restart (cached certificate)").await;
        assert_eq!(
            std::fs::read(&cert_file).unwrap(),
            cached,
            "the cached certificate was replaced"
        );
        // No order was attempted (one against the dead directory would have failed).
        for needle in ["ACME", "registered"] {
            assert_eq!(
                restarted.count_lines(needle),
                0,
                "the restarted server contacted ACME"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_static_cert_and_base64_through_binary() {
    bounded(Duration::from_secs(120), async {
        let echo = Echo::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = tmp.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let names = vec!["ws.test".to_owned()];
        let (_, cert_pem, key_pem) = ptkit_tls::self_signed(&names).unwrap();
        let cert = write("cert.pem", &cert_pem);
        let key = write("key.pem", &key_pem);
        // Another self-signed certificate for the same name: the wrong CA.
        let (_, wrong_pem, _) = ptkit_tls::self_signed(&names).unwrap();
        let wrong = write("wrong.pem", &wrong_pem);

        let server = Ptkit::spawn(
            "server",
            &[
                "server".into(),
                "websocket".into(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--target".into(),
                echo.addr.to_string(),
                "--tls-cert".into(),
                cert,
                "--tls-key".into(),
                key,
                "--state-dir".into(),
                tmp.path().join("state").display().to_string(),
            ],
        );
        let addr = server.logged_addr("server on ").await;
        let client_flags = |ca: &str| -> Vec<String> {
            vec![
                "--url".into(),
                format!("wss://ws.test:{}/", addr.port()),
                "--server".into(),
                addr.to_string(),
                "--ca-file".into(),
                ca.to_owned(),
                "--base64".into(),
            ]
        };
        let (_good, good_socks) = start_client(
            "client",
            &client_flags(&tmp.path().join("cert.pem").display().to_string()),
        )
        .await;
        push_mib(good_socks, "wss base64 (static certificate)").await;

        let (bad, bad_socks) = start_client("wrong-CA client", &client_flags(&wrong)).await;
        let rep = socks5_rep(bad_socks).await;
        assert_ne!(rep, 0, "a client trusting the wrong CA must not connect");
        let why = bad.wait_line("invalid peer certificate").await;
        eprintln!("wrong CA: SOCKS REP {rep:#04x}; client log: {why}");

        // The server still serves the next good client.
        push_mib(good_socks, "wss base64 after the refused client").await;
        assert_eq!(
            echo.received.lock().unwrap().len(),
            2,
            "two tunnels reached the echo"
        );
    })
    .await;
}
