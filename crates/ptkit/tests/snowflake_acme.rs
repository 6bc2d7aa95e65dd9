//! `snowflake-server`'s certificates against Debian's real Pebble, each test inside its own
//! network namespace so that ports 80 and 443 are real and nothing outside is disturbed.
//!
//! Each test re-executes this test binary under `unshare -n` (root only) with just itself
//! selected; inside, it brings `lo` up, starts pebble-challtestsrv (DNS only: every name →
//! 127.0.0.1) and pebble (validating HTTP-01 on port 80 and TLS-ALPN-01 on port 443), and
//! runs `snowflake-server` (a symlink to the built `ptkit`) in managed mode with hand-set
//! `TOR_PT_*` variables and `--acme-hostnames`. A case passes when a TLS client with SNI
//! `snow.example.com`, trusting only Pebble's issuing root, completes a handshake on the
//! WebSocket port, and the certificate cache is private.
//!
//! Not root, no `unshare`, or no pebble: a SKIP line, or a failure under `CI=true`.
//!
//! ```text
//! cargo test -p ptkit --test snowflake_acme          # as root; about 10 s
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ptkit_core::Conn;
use ptkit_websocket::tls::{RustlsConnector, TlsConnect, client_config, server_name};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, Command};
use tokio::time::timeout;

/// Set in the re-executed test process, which runs inside the namespace.
const IN_NETNS: &str = "PTKIT_SNOWFLAKE_ACME_IN_NETNS";
/// The name certified in every case (challtestsrv resolves it to 127.0.0.1).
const NAME: &str = "snow.example.com";
/// Fixed ports are fine: each namespace is private.
const ACME_PORT: u16 = 14000;
const MANAGEMENT_PORT: u16 = 15000;
const DNS_PORT: u16 = 8053;
const CHALLTEST_PORT: u16 = 8055;
/// Bound for one step (a process starting, a certificate being issued).
const STEP: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Running inside a network namespace
// ---------------------------------------------------------------------------------------

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(bin).is_file()))
        .unwrap_or(false)
}

/// Why this test cannot run here, if it cannot.
fn missing_prerequisite(needs_pebble: bool) -> Option<String> {
    let uid = std::process::Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("needs root for a network namespace".into());
    }
    let mut bins = vec!["unshare", "ip"];
    if needs_pebble {
        bins.extend(["pebble", "pebble-challtestsrv"]);
    }
    let missing: Vec<&str> = bins.into_iter().filter(|b| !on_path(b)).collect();
    if !missing.is_empty() {
        return Some(format!(
            "{missing:?} not installed (apt-get install pebble util-linux iproute2)"
        ));
    }
    None
}

/// Runs `body` in a fresh network namespace: in the parent test process, re-executes this
/// test alone under `unshare -n` and checks that it ran and passed; in the child, brings
/// `lo` up and runs `body` on a tokio runtime.
fn in_netns<F, Fut>(test: &str, needs_pebble: bool, body: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    if std::env::var_os(IN_NETNS).is_some() {
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(up.success(), "ip link set lo up failed");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let started = Instant::now();
            timeout(Duration::from_secs(150), body())
                .await
                .expect("test took longer than 150 s");
            eprintln!("{test}: took {:.1} s", started.elapsed().as_secs_f64());
        });
        return;
    }
    if let Some(why) = missing_prerequisite(needs_pebble) {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: {why}, and CI=true");
        }
        eprintln!("SKIP {test}: {why}");
        return;
    }
    let out = std::process::Command::new("unshare")
        .arg("-n")
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(IN_NETNS, "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- {test} in a network namespace\n{stdout}\n{stderr}");
    assert!(out.status.success(), "{test} failed in its namespace");
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{test} did not run in its namespace"
    );
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

async fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + STEP;
    while TcpStream::connect(loopback(port)).await.is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn listening(port: u16) -> bool {
    TcpStream::connect(loopback(port)).await.is_ok()
}

/// A TLS handshake to 127.0.0.1:`port` with SNI `name`, trusting only `ca_pem`.
async fn tls_handshake(port: u16, name: &str, ca_pem: &Path) -> Result<Conn, String> {
    let config = client_config(Some(ca_pem))?;
    let tcp = TcpStream::connect(loopback(port))
        .await
        .map_err(|e| e.to_string())?;
    timeout(
        Duration::from_secs(10),
        RustlsConnector::new(config).connect(server_name(name)?, Box::new(tcp)),
    )
    .await
    .map_err(|_| "TLS handshake timed out".to_owned())?
    .map_err(|e| e.to_string())
}

/// One HTTP/1.1 request on 127.0.0.1:`port`; returns the whole response.
async fn http(port: u16, request: &str) -> String {
    let mut tcp = TcpStream::connect(loopback(port)).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    timeout(Duration::from_secs(10), tcp.read_to_end(&mut response))
        .await
        .expect("no HTTP response")
        .unwrap();
    String::from_utf8(response).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

// ---------------------------------------------------------------------------------------
// Pebble
// ---------------------------------------------------------------------------------------

/// pebble + pebble-challtestsrv (killed on drop). Pebble validates HTTP-01 on port 80 and
/// TLS-ALPN-01 on `tls_port`; its own HTTPS uses a throwaway self-signed certificate.
struct Pebble {
    dir: tempfile::TempDir,
    ca_pem: PathBuf,
    _children: Vec<Child>,
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
        let config = dir.path().join("pebble-config.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"pebble":{{"listenAddress":"127.0.0.1:{ACME_PORT}","managementListenAddress":"127.0.0.1:{MANAGEMENT_PORT}","certificate":"{}","privateKey":"{}","httpPort":80,"tlsPort":{tls_port},"ocspResponderURL":"","externalAccountBindingRequired":false}}}}"#,
                ca_pem.display(),
                key.display(),
            ),
        )
        .unwrap();
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let challtest = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{DNS_PORT}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{CHALLTEST_PORT}")])
            .stdin(Stdio::null())
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        wait_for_port(CHALLTEST_PORT, "pebble-challtestsrv").await;
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config)
            .args(["-dnsserver", &format!("127.0.0.1:{DNS_PORT}")])
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
        wait_for_port(ACME_PORT, "pebble").await;
        wait_for_port(MANAGEMENT_PORT, "pebble management").await;
        Pebble {
            ca_pem,
            dir,
            _children: vec![challtest, pebble],
        }
    }

    /// Pebble's issuing root (new on every start), from its management interface, written
    /// to a PEM file.
    async fn issuing_root(&self) -> PathBuf {
        let mut tls = tls_handshake(MANAGEMENT_PORT, "127.0.0.1", &self.ca_pem)
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
        let path = self.dir.path().join("issuing-root.pem");
        std::fs::write(&path, &text[begin..]).unwrap();
        path
    }

    fn log(&self) -> String {
        ["pebble.log", "pebble.err"]
            .iter()
            .map(|n| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default())
            .collect()
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
// snowflake-server in managed mode
// ---------------------------------------------------------------------------------------

/// `snowflake-server` launched as tor would (stdin held open; killed on drop).
struct SnowflakeServer {
    child: Child,
    _stdin: ChildStdin,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    state: PathBuf,
    _dir: tempfile::TempDir,
    _orport: TcpListener,
}

impl SnowflakeServer {
    /// `bindaddr`: TOR_PT_SERVER_BINDADDR's address; `extra`: flags after the ACME ones.
    async fn start(bindaddr: &str, ca_pem: Option<&Path>, extra: &[&str]) -> SnowflakeServer {
        let dir = tempfile::tempdir().unwrap();
        // The drop-in name: ptkit dispatches on its program name.
        let exe = dir.path().join("snowflake-server");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ptkit"), &exe).unwrap();
        let state = dir.path().join("pt_state");
        // Stands in for tor's ORPort (no stream is opened in these tests).
        let orport = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut command = Command::new(&exe);
        command
            .args(["--acme-hostnames", NAME, "--acme-email", "ops@example.com"])
            .args([
                "--acme-directory",
                &format!("https://127.0.0.1:{ACME_PORT}/dir"),
            ]);
        if let Some(ca) = ca_pem {
            command.arg("--acme-ca").arg(ca);
        }
        let mut child = command
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TOR_PT_MANAGED_TRANSPORT_VER", "1")
            .env("TOR_PT_SERVER_TRANSPORTS", "snowflake")
            .env("TOR_PT_SERVER_BINDADDR", format!("snowflake-{bindaddr}"))
            .env("TOR_PT_ORPORT", orport.local_addr().unwrap().to_string())
            .env("TOR_PT_STATE_LOCATION", &state)
            .env("TOR_PT_EXIT_ON_STDIN_CLOSE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let collect = |stream: Box<dyn tokio::io::AsyncRead + Send + Unpin>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = lines.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(stream).lines();
                while let Ok(Some(line)) = r.next_line().await {
                    sink.lock().unwrap().push(line);
                }
            });
            lines
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        let server = SnowflakeServer {
            _stdin: child.stdin.take().unwrap(),
            child,
            stdout,
            stderr,
            state,
            _dir: dir,
            _orport: orport,
        };
        server.wait_stdout("SMETHODS DONE").await;
        server
    }

    async fn wait_stdout(&self, needle: &str) -> String {
        wait_line(&self.stdout, needle, "stdout").await
    }

    async fn wait_log(&self, needle: &str) -> String {
        wait_line(&self.stderr, needle, "log").await
    }

    fn logged(&self, needle: &str) -> bool {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    fn cache(&self) -> PathBuf {
        self.state.join("snowflake-certificate-cache")
    }

    /// Waits until a client trusting `root` completes a handshake with SNI [`NAME`] on
    /// `port`, i.e. Pebble issued the certificate and the server serves it.
    async fn wait_certificate(&self, port: u16, root: &Path) {
        let deadline = Instant::now() + STEP;
        loop {
            match tls_handshake(port, NAME, root).await {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("no certificate for {NAME} on :{port} within {STEP:?}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// The cache is private: directories 0700, files 0600, the certificate for [`NAME`].
    fn assert_private_cache(&self) {
        let cache = self.cache();
        let (cert, key) = ptkit_tls::cached_cert_paths(&cache, NAME);
        for dir in [
            cache.clone(),
            cache.join("accounts"),
            cache.join("certs"),
            cert.parent().unwrap().to_path_buf(),
        ] {
            assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        }
        for file in [cert, key] {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        for account in std::fs::read_dir(cache.join("accounts")).unwrap() {
            assert_eq!(mode(&account.unwrap().path()), 0o600);
        }
    }

    /// Waits for the process to exit; its code.
    async fn exit_code(&mut self) -> Option<i32> {
        timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("snowflake-server did not exit")
            .unwrap()
            .code()
    }
}

impl Drop for SnowflakeServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- snowflake-server stdout");
            for l in self.stdout.lock().unwrap().iter() {
                eprintln!("{l}");
            }
            eprintln!("--- snowflake-server log");
            for l in self.stderr.lock().unwrap().iter() {
                eprintln!("{l}");
            }
        }
    }
}

async fn wait_line(lines: &Mutex<Vec<String>>, needle: &str, what: &str) -> String {
    let found = timeout(STEP, async {
        loop {
            let hit = lines
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
            "no {what} line with {needle:?}: {:#?}",
            lines.lock().unwrap()
        )
    })
}

const SMETHOD_8443: &str =
    "SMETHOD snowflake 127.0.0.1:8443 ARGS:hostname=snow.example.com,tls=yes";

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// Case A: `--acme-challenge tls-alpn-01` with the WebSocket on 8443: the validation can
/// only be answered by the extra listener on 127.0.0.1:443 (nothing listens on 80).
#[test]
fn tls_alpn01_is_answered_on_the_extra_443_listener() {
    in_netns(
        "tls_alpn01_is_answered_on_the_extra_443_listener",
        true,
        || async {
            let pebble = Pebble::start(443).await;
            let server = SnowflakeServer::start(
                "127.0.0.1:8443",
                Some(&pebble.ca_pem),
                &["--acme-challenge", "tls-alpn-01"],
            )
            .await;
            assert!(server.stdout_lines().iter().any(|l| l == SMETHOD_8443));
            server
                .wait_log("ACME TLS-ALPN-01 listener on 127.0.0.1:443")
                .await;
            assert!(!listening(80).await, "no HTTP-01 listener when forced");
            let root = pebble.issuing_root().await;
            server.wait_certificate(8443, &root).await;
            assert!(server.logged("answering the ACME tls-alpn-01 challenge"));
            assert!(!server.logged("http-01 challenge"));
            server.assert_private_cache();
            // The extra listener answers only ACME: a normal client gets no handshake.
            assert!(tls_handshake(443, NAME, &root).await.is_err());
            // Pebble validated the challenge (on 443: nothing else answers TLS-ALPN-01).
            assert!(
                pebble.log().contains("set VALID by completed challenge"),
                "{}",
                pebble.log()
            );
        },
    );
}

/// Case B: `--acme-challenge http-01`: answered on 127.0.0.1:80, no listener on 443; the
/// port-80 server redirects like Go's autocert.
#[test]
fn http01_is_answered_on_port_80() {
    in_netns("http01_is_answered_on_port_80", true, || async {
        let pebble = Pebble::start(443).await;
        let server = SnowflakeServer::start(
            "127.0.0.1:8443",
            Some(&pebble.ca_pem),
            &["--acme-challenge", "http-01"],
        )
        .await;
        assert!(server.stdout_lines().iter().any(|l| l == SMETHOD_8443));
        server
            .wait_log("ACME HTTP-01 listener on 127.0.0.1:80")
            .await;
        assert!(!listening(443).await, "no TLS-ALPN-01 listener when forced");
        let root = pebble.issuing_root().await;
        server.wait_certificate(8443, &root).await;
        assert!(server.logged("answering the ACME http-01 challenge"));
        assert!(!server.logged("tls-alpn-01 challenge"));
        server.assert_private_cache();

        // Go autocert's HTTPHandler(nil) for everything that is not a challenge.
        let get = http(
            80,
            "GET /a/b?c=d HTTP/1.1\r\nHost: snow.example.com:80\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(get.starts_with("HTTP/1.1 302"), "{get}");
        assert!(
            get.to_ascii_lowercase()
                .contains("location: https://snow.example.com:443/a/b?c=d\r\n"),
            "{get}"
        );
        let post = http(
            80,
            "POST / HTTP/1.1\r\nHost: snow.example.com\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(post.starts_with("HTTP/1.1 400"), "{post}");
        assert!(post.ends_with("\r\n\r\nUse HTTPS\n"), "{post}");
        let unknown = http(
            80,
            "GET /.well-known/acme-challenge/nope HTTP/1.1\r\nHost: snow.example.com\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    });
}

/// The default (no `--acme-challenge`): both listeners, and TLS-ALPN-01 preferred.
#[test]
fn default_opens_both_and_prefers_tls_alpn01() {
    in_netns(
        "default_opens_both_and_prefers_tls_alpn01",
        true,
        || async {
            let pebble = Pebble::start(443).await;
            let server = SnowflakeServer::start("127.0.0.1:8443", Some(&pebble.ca_pem), &[]).await;
            assert!(server.stdout_lines().iter().any(|l| l == SMETHOD_8443));
            assert!(listening(80).await && listening(443).await);
            let root = pebble.issuing_root().await;
            server.wait_certificate(8443, &root).await;
            assert!(server.logged("answering the ACME tls-alpn-01 challenge"));
            assert!(!server.logged("http-01 challenge"));
            server.assert_private_cache();
        },
    );
}

/// The default falls back to HTTP-01 when the TLS-ALPN-01 validation fails (here Pebble
/// validates TLS-ALPN-01 on port 444, where nothing listens).
#[test]
fn default_falls_back_to_http01_when_tls_alpn01_fails() {
    in_netns(
        "default_falls_back_to_http01_when_tls_alpn01_fails",
        true,
        || async {
            let pebble = Pebble::start(444).await;
            let server = SnowflakeServer::start("127.0.0.1:8443", Some(&pebble.ca_pem), &[]).await;
            let root = pebble.issuing_root().await;
            server.wait_certificate(8443, &root).await;
            assert!(server.logged("answering the ACME tls-alpn-01 challenge"));
            assert!(server.logged("validation failed; trying http-01"));
            assert!(server.logged("answering the ACME http-01 challenge"));
            server.assert_private_cache();
        },
    );
}

/// With the WebSocket itself on :443 there is no extra listener: the WebSocket listener
/// answers the `acme-tls/1` validation.
#[test]
fn listen_on_443_needs_no_extra_listener() {
    in_netns("listen_on_443_needs_no_extra_listener", true, || async {
        let pebble = Pebble::start(443).await;
        let server = SnowflakeServer::start(
            "127.0.0.1:443",
            Some(&pebble.ca_pem),
            &["--acme-challenge", "tls-alpn-01"],
        )
        .await;
        assert!(
            server
                .stdout_lines()
                .iter()
                .any(|l| l
                    == "SMETHOD snowflake 127.0.0.1:443 ARGS:hostname=snow.example.com,tls=yes")
        );
        let root = pebble.issuing_root().await;
        server.wait_certificate(443, &root).await;
        assert!(!server.logged("ACME TLS-ALPN-01 listener on"));
        assert!(server.logged("answering the ACME tls-alpn-01 challenge"));
        server.assert_private_cache();
    });
}

/// Case C: something else holds 127.0.0.1:443: a one-line SMETHOD-ERROR naming port 443
/// and the setcap fix, and exit code 1 (nothing listens). No ACME server is contacted.
#[test]
fn port_443_taken_is_a_clear_smethod_error_and_exit_1() {
    in_netns(
        "port_443_taken_is_a_clear_smethod_error_and_exit_1",
        false,
        || async {
            let _holder = TcpListener::bind("127.0.0.1:443").await.unwrap();
            let mut server = SnowflakeServer::start("127.0.0.1:8443", None, &[]).await;
            let line = server.wait_stdout("SMETHOD-ERROR").await;
            assert!(line.starts_with("SMETHOD-ERROR snowflake "), "{line}");
            assert!(line.contains("127.0.0.1:443"), "{line}");
            assert!(line.contains("address already in use"), "{line}");
            assert!(
                line.contains("setcap 'cap_net_bind_service=+ep' /"),
                "{line}"
            );
            assert!(
                !server
                    .stdout_lines()
                    .iter()
                    .any(|l| l.starts_with("SMETHOD snowflake")),
                "{:?}",
                server.stdout_lines()
            );
            assert_eq!(server.exit_code().await, Some(1));
            assert!(!listening(8443).await && !listening(80).await);
        },
    );
}

/// Go 2.5.1: port 80 unavailable → `SMETHOD-ERROR snowflake HTTP-01 ACME listener: <err>`
/// and the bind address is skipped (here the only one, so the process exits 1).
#[test]
fn port_80_taken_skips_the_bind_address_like_go() {
    in_netns(
        "port_80_taken_skips_the_bind_address_like_go",
        false,
        || async {
            let _holder = TcpListener::bind("127.0.0.1:80").await.unwrap();
            let mut server = SnowflakeServer::start("127.0.0.1:8443", None, &[]).await;
            let line = server.wait_stdout("SMETHOD-ERROR").await;
            assert_eq!(
                line,
                "SMETHOD-ERROR snowflake HTTP-01 ACME listener: listen tcp 127.0.0.1:80: bind: address already in use"
            );
            assert_eq!(server.exit_code().await, Some(1));
            assert!(!listening(8443).await && !listening(443).await);
        },
    );
}
