//! ACME against Debian's real Pebble and pebble-challtestsrv, offline on 127.0.0.1.
//!
//! pebble-challtestsrv only answers DNS (every name → 127.0.0.1); its own challenge servers
//! are disabled so that *our* code answers HTTP-01 and TLS-ALPN-01. Pebble's HTTPS listener
//! uses a certificate from a throwaway CA generated here (the Debian package ships none),
//! trusted through `AcmeConfig::extra_root_pem`.
//!
//! Without `pebble` on PATH these tests print a SKIP line, or fail when `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ptkit_core::shutdown::Shutdown;
use ptkit_tls::{
    Acceptor, AcmeConfig, AcmeManager, CertInfo, Challenge, ClientRoots, HotResolver,
    cached_cert_paths, client_config, serve_http01,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Bound for a whole test.
const TEST_TIMEOUT: Duration = Duration::from_secs(150);

/// Returns false (after printing SKIP) when Pebble is missing and CI is not set.
fn pebble_available(test: &str) -> bool {
    let found = ["pebble", "pebble-challtestsrv"].iter().all(|bin| {
        std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(bin).is_file()))
            .unwrap_or(false)
    });
    if found {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("pebble / pebble-challtestsrv not installed (apt-get install pebble) and CI=true");
    }
    eprintln!("SKIP {test}: pebble not installed (apt-get install pebble)");
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

async fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(loopback(port)).await.is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running pebble + pebble-challtestsrv pair (killed on drop).
struct Pebble {
    dir: tempfile::TempDir,
    directory_url: String,
    management_port: u16,
    /// The test CA that signed Pebble's HTTPS certificate (PEM file).
    ca_pem: PathBuf,
    /// Where pebble validates HTTP-01 and TLS-ALPN-01: our listeners.
    http_listener: Option<TcpListener>,
    tls_listener: Option<TcpListener>,
    _children: Vec<Child>,
}

impl Pebble {
    /// `validity`: Pebble's certificateValidityPeriod in seconds (None: its default).
    async fn start(validity: Option<u64>) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        // Pebble's HTTPS certificate from a throwaway CA.
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ptkit pebble test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), leaf_key.serialize_pem()).unwrap();

        // Our challenge listeners, bound before Pebble learns their ports.
        let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (acme_port, management_port) = (free_port(), free_port());
        let (dns_port, challtest_port) = (free_port(), free_port());
        let mut pebble = serde_json::json!({
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": dir.path().join("cert.pem"),
            "privateKey": dir.path().join("key.pem"),
            "httpPort": http_listener.local_addr().unwrap().port(),
            "tlsPort": tls_listener.local_addr().unwrap().port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        });
        if let Some(seconds) = validity {
            pebble["certificateValidityPeriod"] = seconds.into();
        }
        let config = dir.path().join("pebble-config.json");
        std::fs::write(
            &config,
            serde_json::to_vec_pretty(&serde_json::json!({ "pebble": pebble })).unwrap(),
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
        let server = Command::new("pebble")
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
            http_listener: Some(http_listener),
            tls_listener: Some(tls_listener),
            dir,
            _children: vec![challtest, server],
        }
    }

    fn acme_config(&self, name: &str, cache: &Path, challenge: Challenge) -> AcmeConfig {
        let mut config = AcmeConfig::new(vec![name.to_owned()], cache);
        config.directory_url = self.directory_url.clone();
        config.extra_root_pem = Some(self.ca_pem.clone());
        config.email = Some("ops@example.com".into());
        config.challenge = challenge;
        config.order_timeout = Duration::from_secs(60);
        config
    }

    /// Pebble's issuing root (regenerated on every start), from its management interface.
    async fn issuing_root(&self) -> CertificateDer<'static> {
        let tls = client_config(ClientRoots::empty().with_pem_file(&self.ca_pem)).unwrap();
        let tcp = TcpStream::connect(loopback(self.management_port))
            .await
            .unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut stream = TlsConnector::from(tls).connect(name, tcp).await.unwrap();
        stream
            .write_all(b"GET /roots/0 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        // Go closes without close_notify: keep what was read before the error.
        let _ = stream.read_to_end(&mut response).await;
        let text = String::from_utf8(response).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        CertificateDer::from_pem_slice(text.as_bytes()).unwrap()
    }

    /// Serves HTTP-01 on the port Pebble validates.
    fn serve_http01(&mut self, manager: &AcmeManager, shutdown: &Shutdown) {
        let listener = self.http_listener.take().unwrap();
        tokio::spawn(serve_http01(
            listener,
            manager.http01_responder(),
            shutdown.clone(),
        ));
    }

    /// The TLS echo server (which also answers TLS-ALPN-01) on the port Pebble validates.
    fn serve_tls(&mut self, resolver: Arc<HotResolver>) -> u16 {
        let listener = self.tls_listener.take().unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(echo_server(listener, resolver));
        port
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in ["pebble.log", "pebble.err", "challtestsrv.log"] {
                let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
                eprintln!("--- {name}\n{text}");
            }
        }
    }
}

async fn echo_server(listener: TcpListener, resolver: Arc<HotResolver>) {
    let acceptor = Acceptor::new(resolver, &[b"http/1.1"]).unwrap();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(Ok(Some(mut tls))) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let mut buf = [0u8; 1024];
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tls.write_all(&buf[..n]).await.is_err() || tls.flush().await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// A TLS client trusting only `root`, with SNI `name`.
async fn connect(port: u16, name: &str, root: &CertificateDer<'static>) -> TlsStream<TcpStream> {
    try_connect(port, name, root).await.unwrap()
}

async fn try_connect(
    port: u16,
    name: &str,
    root: &CertificateDer<'static>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tls = client_config(ClientRoots::empty().with_der(root.clone())).unwrap();
    let tcp = TcpStream::connect(loopback(port)).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        TlsConnector::from(tls).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("handshake timed out"))?
}

fn peer_serial(stream: &TlsStream<TcpStream>) -> String {
    let certs = stream.get_ref().1.peer_certificates().unwrap();
    CertInfo::parse(&certs[0]).unwrap().serial_hex()
}

async fn echo(stream: &mut TlsStream<TcpStream>, message: &[u8]) {
    stream.write_all(message).await.unwrap();
    let mut got = vec![0u8; message.len()];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, message);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn assert_private_cache(cache: &Path, name: &str) {
    let (cert, key) = cached_cert_paths(cache, name);
    for dir in [
        cache.to_path_buf(),
        cache.join("certs"),
        cache.join("accounts"),
        cert.parent().unwrap().to_path_buf(),
    ] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    for file in [cert, key] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    let accounts: Vec<_> = std::fs::read_dir(cache.join("accounts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(accounts.len(), 1);
    assert_eq!(mode(&accounts[0]), 0o600);
}

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    let started = Instant::now();
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out");
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pebble_http01_issues_certificate_served_with_sni() {
    if !pebble_available("pebble_http01_issues_certificate_served_with_sni") {
        return;
    }
    bounded(async {
        let mut pebble = Pebble::start(None).await;
        let cache = tempfile::tempdir().unwrap();
        let cache_dir = cache.path().join("acme");
        let name = "http01.example.com";
        let resolver = Arc::new(HotResolver::new());
        let manager = AcmeManager::new(
            pebble.acme_config(name, &cache_dir, Challenge::Http01),
            resolver.clone(),
        )
        .unwrap();
        let shutdown = Shutdown::new();
        pebble.serve_http01(&manager, &shutdown);
        manager.ensure().await.unwrap();
        assert_eq!(manager.orders_completed(), 1);
        assert!(manager.http01_responder().is_empty());
        assert_private_cache(&cache_dir, name);

        let port = pebble.serve_tls(resolver);
        let root = pebble.issuing_root().await;
        // The chain verifies against Pebble's issuing root, with SNI.
        let mut stream = connect(port, name, &root).await;
        echo(&mut stream, b"hello over pebble's certificate").await;
        // No SNI (an IP address as server name): ACME names are not served.
        assert!(try_connect(port, "127.0.0.1", &root).await.is_err());
        // An unknown name gets nothing either.
        assert!(try_connect(port, "other.example.com", &root).await.is_err());
        shutdown.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pebble_tls_alpn01_issues_certificate() {
    if !pebble_available("pebble_tls_alpn01_issues_certificate") {
        return;
    }
    bounded(async {
        let mut pebble = Pebble::start(None).await;
        let cache = tempfile::tempdir().unwrap();
        let name = "alpn.example.com";
        let resolver = Arc::new(HotResolver::new());
        let manager = AcmeManager::new(
            pebble.acme_config(name, cache.path(), Challenge::TlsAlpn01),
            resolver.clone(),
        )
        .unwrap();
        // The same listener answers validation (acme-tls/1) and normal clients.
        let port = pebble.serve_tls(resolver.clone());
        manager.ensure().await.unwrap();
        assert_eq!(manager.orders_completed(), 1);
        assert!(!resolver.has_challenge(name));
        assert_private_cache(cache.path(), name);

        let root = pebble.issuing_root().await;
        let mut stream = connect(port, name, &root).await;
        echo(&mut stream, b"tls-alpn-01").await;
        assert_eq!(
            stream.get_ref().1.alpn_protocol(),
            None,
            "client offered no ALPN"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pebble_cache_reused_on_restart_without_contacting_acme() {
    if !pebble_available("pebble_cache_reused_on_restart_without_contacting_acme") {
        return;
    }
    bounded(async {
        let mut pebble = Pebble::start(None).await;
        let cache = tempfile::tempdir().unwrap();
        let name = "cached.example.com";
        let first_resolver = Arc::new(HotResolver::new());
        let first = AcmeManager::new(
            pebble.acme_config(name, cache.path(), Challenge::TlsAlpn01),
            first_resolver.clone(),
        )
        .unwrap();
        pebble.serve_tls(first_resolver.clone());
        first.ensure().await.unwrap();
        assert_eq!(first.orders_completed(), 1);
        let serial = CertInfo::of(&first_resolver.get(name).unwrap())
            .unwrap()
            .serial_hex();
        drop(first);

        // "Restart" against a directory where nothing listens: any ACME contact fails.
        let dead_port = free_port();
        let resolver = Arc::new(HotResolver::new());
        let mut config = pebble.acme_config(name, cache.path(), Challenge::TlsAlpn01);
        config.directory_url = format!("https://127.0.0.1:{dead_port}/dir");
        let restarted = AcmeManager::new(config, resolver.clone()).unwrap();
        restarted.ensure().await.unwrap();
        assert_eq!(restarted.orders_completed(), 0);
        let reloaded = CertInfo::of(&resolver.get(name).unwrap())
            .unwrap()
            .serial_hex();
        assert_eq!(reloaded, serial);

        // The cached account is reused too: a forced re-order against the same Pebble
        // does not register a new account.
        let account_dir = cache.path().join("accounts");
        let account_file = std::fs::read_dir(&account_dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let account_before = std::fs::read(&account_file).unwrap();
        std::fs::remove_dir_all(cache.path().join("certs").join(name)).unwrap();
        let again = AcmeManager::new(
            pebble.acme_config(name, cache.path(), Challenge::TlsAlpn01),
            first_resolver.clone(),
        )
        .unwrap();
        again.ensure().await.unwrap();
        assert_eq!(again.orders_completed(), 1);
        assert_eq!(std::fs::read(&account_file).unwrap(), account_before);
        assert_eq!(std::fs::read_dir(&account_dir).unwrap().count(), 1);
        assert_private_cache(cache.path(), name);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pebble_renewal_hot_swaps_while_connection_stays_open() {
    if !pebble_available("pebble_renewal_hot_swaps_while_connection_stays_open") {
        return;
    }
    bounded(async {
        // 12-second certificates: renewal is due when a third (4 s) is left.
        let mut pebble = Pebble::start(Some(12)).await;
        let cache = tempfile::tempdir().unwrap();
        let name = "renew.example.com";
        let resolver = Arc::new(HotResolver::new());
        let mut config = pebble.acme_config(name, cache.path(), Challenge::Http01);
        config.check_interval = Duration::from_secs(1);
        let manager = AcmeManager::new(config, resolver.clone()).unwrap();
        let shutdown = Shutdown::new();
        pebble.serve_http01(&manager, &shutdown);
        let port = pebble.serve_tls(resolver.clone());
        let mut installed = manager.subscribe();

        manager.ensure().await.unwrap();
        let first = installed.borrow_and_update().to_owned();
        let root = pebble.issuing_root().await;
        let mut open = connect(port, name, &root).await;
        let old_serial = peer_serial(&open);
        echo(&mut open, b"before the swap").await;

        manager.spawn_renewal(&shutdown);
        tokio::time::timeout(Duration::from_secs(60), installed.changed())
            .await
            .expect("no renewal within 60 s")
            .unwrap();
        assert!(*installed.borrow() > first);
        assert!(manager.orders_completed() >= 2);
        let (cert_path, _) = cached_cert_paths(cache.path(), name);
        let cached = CertificateDer::pem_file_iter(&cert_path)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_ne!(CertInfo::parse(&cached).unwrap().serial_hex(), old_serial);

        // The connection opened before the swap still carries data…
        echo(&mut open, b"after the swap").await;
        assert_eq!(peer_serial(&open), old_serial);
        // …and a new handshake gets the renewed certificate.
        let mut fresh = connect(port, name, &root).await;
        assert_ne!(peer_serial(&fresh), old_serial);
        echo(&mut fresh, b"new certificate").await;
        echo(&mut open, b"old connection still fine").await;
        shutdown.stop_accepting();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pebble_two_managers_on_one_cache_order_once() {
    if !pebble_available("pebble_two_managers_on_one_cache_order_once") {
        return;
    }
    bounded(async {
        let mut pebble = Pebble::start(None).await;
        let cache = tempfile::tempdir().unwrap();
        let name = "locked.example.com";
        // Two managers (as two processes would be) share the cache and the validation port.
        let resolver = Arc::new(HotResolver::new());
        let one = AcmeManager::new(
            pebble.acme_config(name, cache.path(), Challenge::TlsAlpn01),
            resolver.clone(),
        )
        .unwrap();
        let two = AcmeManager::new(
            pebble.acme_config(name, cache.path(), Challenge::TlsAlpn01),
            resolver.clone(),
        )
        .unwrap();
        pebble.serve_tls(resolver.clone());
        let (a, b) = tokio::join!(one.ensure(), two.ensure());
        a.unwrap();
        b.unwrap();
        // The cache lock made the second one load what the first one ordered.
        assert_eq!(one.orders_completed() + two.orders_completed(), 1);
        assert!(resolver.get(name).is_some());
    })
    .await;
}
