//! Our client: redirects, the dialer, `wss` with `front=`, our client against our server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use ptkit_core::net::DirectDialer;
use ptkit_core::{
    Args, BoxFuture, ClientConfig, ClientTransport, Conn, Connector, Dialer, Target,
    TransportListener,
};
use ptkit_websocket::{WebSocketClient, WebSocketServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn connector() -> Arc<dyn Connector> {
    WebSocketClient::new()
        .connector(&ClientConfig::default())
        .unwrap()
}

/// A server that answers every request with `answer` and closes.
async fn fake_http(answer: &'static str) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut b = [0u8; 4096];
                let _ = tcp.read(&mut b).await;
                let _ = tcp.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

/// Proposal: "A client MUST NOT proceed after receiving any HTTP response status code other
/// than 101 ... MUST NOT follow redirections such as 301." The error names the status; a
/// concurrent connection to a real server keeps working.
#[tokio::test]
async fn proposal_client_never_follows_redirect() {
    bounded(async {
        let srv = echo_server(Args::new()).await;
        let good = connector()
            .connect(&Args::new(), Some(Target::from_socket_addr(srv.addr)))
            .await
            .unwrap();
        let data = Arc::new(pattern(1000, 1));
        let (mut r, mut w) = tokio::io::split(good);
        w.write_all(&data[..500]).await.unwrap();
        w.flush().await.unwrap();

        for (answer, code) in [
            (
                "HTTP/1.1 301 Moved Permanently\r\nLocation: ws://127.0.0.1:1/\r\nContent-Length: 0\r\n\r\n",
                "301",
            ),
            ("HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n", "302"),
            ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "200"),
            ("HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n\r\n", "426"),
        ] {
            let addr = fake_http(answer).await;
            let err = connector()
                .connect(&Args::new(), Some(Target::from_socket_addr(addr)))
                .await
                .err()
                .expect("must fail");
            assert!(err.to_string().contains(code), "{err}");
        }
        // A 101 with a wrong accept key also fails.
        let addr = fake_http(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
        )
        .await;
        assert!(
            connector()
                .connect(&Args::new(), Some(Target::from_socket_addr(addr)))
                .await
                .is_err()
        );
        // An endless HTTP answer is cut at 16 KiB.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = l.accept().await.unwrap();
            let mut b = [0u8; 4096];
            let _ = tcp.read(&mut b).await;
            let _ = tcp.write_all(b"HTTP/1.1 101 Switching Protocols\r\n").await;
            for _ in 0..1000 {
                if tcp.write_all(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n").await.is_err() {
                    return;
                }
            }
        });
        assert!(
            connector()
                .connect(&Args::new(), Some(Target::from_socket_addr(addr)))
                .await
                .is_err()
        );

        w.write_all(&data[500..]).await.unwrap();
        w.flush().await.unwrap();
        let mut out = vec![0u8; 1000];
        r.read_exact(&mut out).await.unwrap();
        assert_eq!(out, *data);
    })
    .await;
}

#[derive(Debug)]
struct CountingDialer {
    to: std::net::SocketAddr,
    dials: Arc<AtomicUsize>,
    targets: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Dialer for CountingDialer {
    fn dial(&self, target: Target) -> BoxFuture<'static, io::Result<Conn>> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        self.targets.lock().unwrap().push(target.to_string());
        let to = self.to;
        Box::pin(async move {
            let c = DirectDialer::default().connect_addr(to).await?;
            Ok(Box::new(c) as Conn)
        })
    }
}

/// The client dials through `ClientConfig::dialer` (so TOR_PT_PROXY applies), to the SOCKS
/// target when there is one, else to the URL's host.
#[tokio::test]
async fn client_dials_through_configured_dialer() {
    bounded(async {
        let srv = echo_server(Args::new()).await;
        let dials = Arc::new(AtomicUsize::new(0));
        let targets = Arc::new(std::sync::Mutex::new(Vec::new()));
        let config = ClientConfig {
            dialer: Some(Arc::new(CountingDialer {
                to: srv.addr,
                dials: dials.clone(),
                targets: targets.clone(),
            })),
            ..Default::default()
        };
        let c = WebSocketClient::new().connector(&config).unwrap();
        let mut conn = c
            .connect(
                &Args::new(),
                Some(Target::parse("bridge.example:8080").unwrap()),
            )
            .await
            .unwrap();
        conn.write_all(b"hello").await.unwrap();
        conn.flush().await.unwrap();
        let mut b = [0u8; 5];
        conn.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"hello");
        let _conn2 = c
            .connect(&Args::new().with("url", "ws://named.example:81/p"), None)
            .await
            .unwrap();
        assert_eq!(dials.load(Ordering::SeqCst), 2);
        assert_eq!(
            *targets.lock().unwrap(),
            vec![
                "bridge.example:8080".to_string(),
                "named.example:81".to_string()
            ]
        );
    })
    .await;
}

struct Pki {
    _dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

/// A CA and a leaf certificate for `names`, as PEM files.
fn pki(names: &[&str]) -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("ca.pem"), ca.pem()).unwrap();
    std::fs::write(p("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(p("key.pem"), leaf_key.serialize_pem()).unwrap();
    Pki {
        ca: p("ca.pem"),
        cert: p("cert.pem"),
        key: p("key.pem"),
        _dir: dir,
    }
}

/// `wss`: the server serves TLS from PEM files; `front=` sets the SNI and the verified name
/// while the URL host (only in the Host header) can be anything; without `front` the URL
/// host must match the certificate.
#[tokio::test]
async fn wss_with_front_sets_sni_and_verified_name() {
    bounded(async {
        let pki = pki(&["front.example"]);
        let opts: Args = [
            ("tls-cert", pki.cert.to_str().unwrap()),
            ("tls-key", pki.key.to_str().unwrap()),
            ("path", "/ws"),
        ]
        .into_iter()
        .collect();
        let srv = echo_server(opts.clone()).await;
        let config = ClientConfig {
            options: Args::new().with("ca-file", pki.ca.to_str().unwrap()),
            ..Default::default()
        };
        let c = WebSocketClient::new().connector(&config).unwrap();
        let dest = Some(Target::from_socket_addr(srv.addr));
        let conn = c
            .connect(
                &Args::new()
                    .with("url", "wss://hidden.example/ws")
                    .with("front", "front.example"),
                dest.clone(),
            )
            .await
            .unwrap();
        let data = Arc::new(pattern(100_000, 9));
        assert_eq!(write_and_read(conn, data.clone(), 4096).await, *data);
        // Same over base64.
        let conn = c
            .connect(
                &Args::new()
                    .with("url", "wss://front.example/ws")
                    .with("base64", "1"),
                dest.clone(),
            )
            .await
            .unwrap();
        assert_eq!(write_and_read(conn, data.clone(), 10_000).await, *data);
        // Without front, the URL host is the verified name: hidden.example does not match.
        let err = c
            .connect(
                &Args::new().with("url", "wss://hidden.example/ws"),
                dest.clone(),
            )
            .await
            .err()
            .expect("must fail");
        assert!(err.to_string().contains("TLS"), "{err}");
        // front= with plain ws is refused.
        assert!(
            c.connect(
                &Args::new()
                    .with("url", "ws://hidden.example/ws")
                    .with("front", "front.example"),
                dest.clone(),
            )
            .await
            .is_err()
        );
        // SMETHOD args advertise path and tls.
        let listener = WebSocketServer::new()
            .bind(
                "127.0.0.1:0".parse().unwrap(),
                ptkit_websocket::ServerOptions::from_args(&opts).unwrap(),
            )
            .unwrap();
        assert_eq!(listener.client_args().encode_smethod(), "path=/ws,tls=1");
    })
    .await;
}

/// Server options are validated and unknown keys refused; `url` is advertised.
#[tokio::test]
async fn server_options_validation_and_client_args() {
    use ptkit_websocket::ServerOptions;
    for bad in [
        ("max-message", "1499"),
        ("max-message", "x"),
        ("path", "ws"),
        ("path", "/a b"),
        ("url", "http://x/"),
        ("url", "ws://a,b/"),
        ("trusted-proxies", "nonsense"),
        ("client-ip", "maybe"),
        ("handshake-timeout", "0"),
        ("max-header-bytes", "100"),
        ("colour", "blue"),
        ("tls-cert", "/x"),
    ] {
        assert!(
            ServerOptions::from_args(&Args::new().with(bad.0, bad.1)).is_err(),
            "{bad:?}"
        );
    }
    let o = ServerOptions::from_args(
        &Args::new()
            .with("url", "wss://example.com/ws")
            .with("path", "/ws")
            .with("max-message", "1500"),
    )
    .unwrap();
    assert_eq!(o.max_message, 1500);
    assert_eq!(
        o.client_args(true).encode_smethod(),
        "url=wss://example.com/ws"
    );
    let mut l = WebSocketServer::new()
        .bind("127.0.0.1:0".parse().unwrap(), o)
        .unwrap();
    assert!(l.local_addr().is_ok());
    // accept returns right after TCP accept; the handshake runs in the Pending future.
    let addr = l.local_addr().unwrap();
    let _tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let pending = tokio::time::timeout(STEP, l.accept())
        .await
        .unwrap()
        .unwrap();
    drop(pending);
}

/// Our client against our server, both framings, 1 MiB byte-exact.
#[tokio::test]
async fn our_client_against_our_server_1mib() {
    bounded(async {
        let srv = echo_server(Args::new()).await;
        for base64 in ["0", "1"] {
            let conn = connector()
                .connect(
                    &Args::new().with("base64", base64),
                    Some(Target::from_socket_addr(srv.addr)),
                )
                .await
                .unwrap();
            let data = Arc::new(pattern(1 << 20, 11));
            assert_eq!(write_and_read(conn, data.clone(), 32 * 1024).await, *data);
        }
    })
    .await;
}

/// End to end through ptkit-core's relay on both sides (app TCP ⇄ relay ⇄ our client ⇄ our
/// server ⇄ `server::proxy` relay ⇄ TCP echo). Small writes arrive without any explicit
/// flush (the relay flushes when idle), bulk data is byte-exact, and an application EOF
/// ends the tunnel cleanly.
#[tokio::test]
async fn relay_end_to_end_flush_and_close() {
    use ptkit_core::net::TcpUpstream;
    use ptkit_core::relay::{RelayConfig, relay};
    use ptkit_core::server::{ServerLimits, proxy};
    use ptkit_core::shutdown::Shutdown;
    use ptkit_core::{ServerConfig, ServerTransport, StatsCounter};
    bounded(async {
        // Upstream TCP echo.
        let echo_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo_l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut tcp, _) = echo_l.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = tcp.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        let listener = WebSocketServer::new()
            .listen(ServerConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                options: Args::new(),
                state_dir: None,
            })
            .await
            .unwrap();
        let ws_addr = listener.local_addr().unwrap();
        let stats = Arc::new(StatsCounter::new("websocket"));
        let manager = proxy(
            listener,
            Arc::new(TcpUpstream {
                target: Target::from_socket_addr(echo_addr),
                dialer: DirectDialer::default(),
            }),
            stats.clone(),
            Shutdown::new(),
            ServerLimits::default(),
        );
        // Client side: an app socket relayed into our connector.
        let app_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app_addr = app_l.local_addr().unwrap();
        let client_side = tokio::spawn(async move {
            let (mut app, _) = app_l.accept().await.unwrap();
            let mut conn = connector()
                .connect(&Args::new(), Some(Target::from_socket_addr(ws_addr)))
                .await
                .unwrap();
            relay(&mut app, &mut conn, &RelayConfig::default(), None).await
        });
        let mut app = tokio::net::TcpStream::connect(app_addr).await.unwrap();
        for word in [&b"a"[..], b"bc", b"hello"] {
            app.write_all(word).await.unwrap();
            let mut b = vec![0u8; word.len()];
            tokio::time::timeout(STEP, app.read_exact(&mut b))
                .await
                .expect("small write stuck in a buffer")
                .unwrap();
            assert_eq!(b, word);
        }
        let data = Arc::new(pattern(512 * 1024, 13));
        let (mut r, mut w) = app.into_split();
        let d = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&d).await.unwrap();
            w
        });
        let mut out = vec![0u8; data.len()];
        r.read_exact(&mut out).await.unwrap();
        assert!(out == *data);
        let mut w = writer.await.unwrap();
        w.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(STEP, r.read_to_end(&mut rest))
            .await
            .expect("tunnel did not close after app EOF")
            .unwrap();
        assert!(rest.is_empty());
        let totals = tokio::time::timeout(STEP, client_side)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(totals.up, 8 + 512 * 1024);
        manager.stop(std::time::Duration::from_secs(1)).await;
        assert_eq!(stats.snapshot().connections_total, 1);
    })
    .await;
}

/// RFC 6455 §5.3 / proposal: every client frame is masked, with a fresh key per frame.
#[tokio::test]
async fn rfc6455_5_3_client_masks_every_frame_with_fresh_keys() {
    bounded(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut tcp, _) = l.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                tcp.read_exact(&mut b).await.unwrap();
                head.push(b[0]);
            }
            let text = String::from_utf8(head).unwrap();
            let key = text
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap()
                .trim()
                .to_owned();
            let accept = ptkit_websocket::handshake::accept_key(key.as_bytes());
            tcp.write_all(
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            let mut raw = RawClient {
                tcp,
                buf: Vec::new(),
                response: String::new(),
            };
            let mut frames = Vec::new();
            for _ in 0..8 {
                let f = raw.frame().await.unwrap();
                assert!(f.masked, "unmasked client frame");
                assert_eq!((f.opcode, f.fin), (2, true));
                frames.push(f);
            }
            frames
        });
        let mut conn = connector()
            .connect(&Args::new(), Some(Target::from_socket_addr(addr)))
            .await
            .unwrap();
        for i in 0..8u8 {
            conn.write_all(&[i; 4]).await.unwrap();
            conn.flush().await.unwrap();
        }
        let frames = server.await.unwrap();
        let mut keys = std::collections::HashSet::new();
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(f.payload, vec![i as u8; 4]);
            keys.insert(f.key.unwrap());
        }
        assert_eq!(keys.len(), 8, "masking keys repeat");
    })
    .await;
}
