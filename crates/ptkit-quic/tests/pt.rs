#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! The `quic` pluggable transport through ptkit's own server driver: the pinned certificate
//! is created once in the state directory and reused, its pin is the client argument, a
//! wrong or missing pin fails, and many SOCKS-like connections share one QUIC connection.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use ptkit_core::net::{DirectDialer, TcpUpstream};
use ptkit_core::server::{ServerLimits, proxy};
use ptkit_core::shutdown::Shutdown;
use ptkit_core::{
    Args, ClientConfig, ClientTransport, ServerConfig, ServerTransport, StatsCounter, Target,
};
use ptkit_quic::pt::{CERT_FILE, KEY_FILE, PIN_ARG, QuicClient, QuicServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_transport_pins_the_state_dir_certificate() {
    let echo = echo_server().await;
    let state = tempfile::tempdir().unwrap();
    let config = || ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        options: Args::new(),
        state_dir: Some(state.path().to_path_buf()),
    };
    let listener = QuicServer::default().listen(config()).await.unwrap();
    let args = listener.client_args();
    let pin = args.get(PIN_ARG).unwrap().to_owned();
    assert_eq!(pin.len(), 64);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(state.path().join(KEY_FILE))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert!(state.path().join(CERT_FILE).exists());
    // A restart reuses the key: same pin.
    let again = QuicServer::default().listen(config()).await.unwrap();
    assert_eq!(again.client_args().get(PIN_ARG), Some(pin.as_str()));
    drop(again);

    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(StatsCounter::new("quic"));
    let sd = Shutdown::new();
    let upstream = Arc::new(TcpUpstream {
        target: Target::from_socket_addr(echo),
        dialer: DirectDialer::default(),
    });
    let _mgr = proxy(
        listener,
        upstream,
        stats.clone(),
        sd.clone(),
        ServerLimits::default(),
    );

    let connector = QuicClient::default()
        .connector(&ClientConfig::default())
        .unwrap();
    let dest = Some(Target::from_socket_addr(addr));
    let mut tasks = Vec::new();
    for i in 0..20u64 {
        let c = connector.clone();
        let settings = args.clone();
        let dest = dest.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = c.connect(&settings, dest).await.unwrap();
            let data = pattern(i, 200_000);
            assert!(echo_round(&mut conn, &data).await == data);
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(stats.snapshot().connections_total, 20);

    // Wrong pin and missing pin fail cleanly.
    let wrong = Args::new().with(PIN_ARG, "00".repeat(32));
    let other = QuicClient::default()
        .connector(&ClientConfig::default())
        .unwrap();
    let err = match other.connect(&wrong, dest.clone()).await {
        Ok(_) => panic!("a wrong pin must not connect"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("certificate") || err.contains("handshake"),
        "{err}"
    );
    let err = match other.connect(&Args::new(), dest).await {
        Ok(_) => panic!("no pin must not connect"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(PIN_ARG), "{err}");
}
