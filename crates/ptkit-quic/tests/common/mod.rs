#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::new_without_default,
    dead_code,
    missing_docs
)]
//! Shared helpers: certificates, an echo server, a server/client pair.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ptkit_core::StatsCounter;
use ptkit_core::shutdown::Shutdown;
use ptkit_quic::auth::{AuthenticationClient, AuthenticationHandler};
use ptkit_quic::client::{ClientOptions, TunnelClient};
use ptkit_quic::proto::ALPN_TUNNEL;
use ptkit_quic::routing::{AggregatorRouter, ForwardPolicy, ReverseConfig};
use ptkit_quic::server::{ServerOptions, TunnelServer};
use ptkit_quic::tls::{ClientTls, ServerTls, ServerTrust};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_pem: PathBuf,
    pub server_key: Arc<CertifiedKey>,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, cert.pem()).unwrap();
        let issuer = Issuer::new(params, key);
        let mut pki = Pki {
            dir,
            ca_pem,
            server_key: ptkit_tls::self_signed(&["x".into()]).unwrap().0,
            issuer,
        };
        pki.server_key = pki.leaf(&["aggregator.test"], false);
        pki
    }

    /// A leaf signed by this CA for `names`; `expired` puts not_after in the past.
    pub fn leaf(&self, names: &[&str], expired: bool) -> Arc<CertifiedKey> {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ptkit_tls::certified_key_from_pem(
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
            std::path::Path::new("test"),
        )
        .unwrap()
    }

    pub fn server_tls(&self, mtls: bool) -> ServerTls {
        let mut t = ServerTls::with_key(self.server_key.clone(), ALPN_TUNNEL);
        if mtls {
            t.client_ca = Some(self.ca_pem.clone());
        }
        t
    }

    pub fn client_tls(&self, client_cert: Option<Arc<CertifiedKey>>) -> ClientTls {
        ClientTls {
            trust: ServerTrust::Roots(ptkit_tls::ClientRoots::empty().with_pem_file(&self.ca_pem)),
            client_cert,
            alpn: ALPN_TUNNEL.to_vec(),
        }
    }
}

pub async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

pub fn router(policy: ForwardPolicy, shutdown: &Shutdown, reverse: bool) -> AggregatorRouter {
    let mut r = AggregatorRouter::new(
        policy,
        Arc::new(StatsCounter::new("tunnel")),
        shutdown.clone(),
    );
    if reverse {
        r.reverse = Some(ReverseConfig {
            ports: 0..=0,
            ..ReverseConfig::default()
        });
    }
    r
}

pub fn start_server(
    listen: SocketAddr,
    tls: &ServerTls,
    options: ServerOptions,
    auth: Arc<dyn AuthenticationHandler>,
    router: AggregatorRouter,
    shutdown: &Shutdown,
) -> TunnelServer {
    TunnelServer::start(
        listen,
        tls,
        options,
        auth,
        Arc::new(router),
        shutdown.clone(),
    )
    .unwrap()
}

pub fn client(
    server: SocketAddr,
    tls: &ClientTls,
    auth: Arc<dyn AuthenticationClient>,
) -> TunnelClient {
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(5),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..ClientOptions::default()
    };
    TunnelClient::new(
        "127.0.0.1:0".parse().unwrap(),
        server,
        "aggregator.test",
        tls,
        auth,
        options,
    )
    .unwrap()
}

/// Sends `data` over `s` and reads back the same number of bytes (echo).
pub async fn echo_round<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    data: &[u8],
) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(s);
    let write = async {
        w.write_all(data).await.unwrap();
        w.flush().await.unwrap();
    };
    let mut back = vec![0u8; data.len()];
    let read = async {
        r.read_exact(&mut back).await.unwrap();
    };
    tokio::join!(write, read);
    back
}

pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
