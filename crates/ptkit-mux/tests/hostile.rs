//! A mux server fed hostile stream headers over a real session: each gets its documented
//! reply (or is closed), nothing is dialled, and the session and its other streams survive.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use hex_literal::hex;
use ptkit_core::StatsCounter;
use ptkit_core::shutdown::Shutdown;
use ptkit_mux::session::default_smux_config;
use ptkit_mux::{MuxServer, MuxServerConfig, MuxSession, Policy};
use ptkit_snowflake::smux::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

async fn server(policy: Policy, header_timeout: Duration) -> (MuxSession, Arc<StatsCounter>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let stats = Arc::new(StatsCounter::new("mux"));
    let server = MuxServer::new(
        MuxServerConfig {
            policy,
            header_timeout,
            ..MuxServerConfig::default()
        },
        stats.clone(),
    );
    tokio::spawn(async move { server.serve_conn(Box::new(b), Shutdown::new()).await });
    let (client, _) = MuxSession::start(Box::new(a), Role::Client, default_smux_config());
    (client, stats)
}

/// Sends `bytes` on a new stream; returns what came back before EOF.
async fn exchange(session: &MuxSession, bytes: &[u8]) -> Vec<u8> {
    let mut s = session.open_stream().unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    timeout(T, s.read_to_end(&mut out)).await.unwrap().unwrap();
    out
}

#[tokio::test]
async fn hostile_headers_get_their_reply_and_nothing_is_dialled() {
    // A listener that must never see a connection.
    let trap = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = trap.local_addr().unwrap().port().to_be_bytes();
    let (session, stats) = server(Policy::allow_all(), T).await;
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (hex!("02 00 01 7f000001").to_vec(), hex!("01 01").to_vec()), // version 2
        (hex!("01 07 01 7f000001").to_vec(), hex!("01 01").to_vec()), // reserved
        (hex!("01 00 02 7f000001").to_vec(), hex!("01 08").to_vec()), // atyp 2
        (hex!("01 00 03 00").to_vec(), hex!("01 01").to_vec()),       // empty name
        (
            [&hex!("01 00 03 04 61 0a 62 63")[..], &port].concat(),
            hex!("01 01").to_vec(),
        ), // LF in name
        (
            hex!("01 00 01 7f000001 0000").to_vec(),
            hex!("01 01").to_vec(),
        ), // port 0
        ([&[0xffu8; 300][..]].concat(), hex!("01 01").to_vec()),      // junk
    ];
    for (bytes, want) in cases {
        assert_eq!(exchange(&session, &bytes).await, want, "{bytes:02x?}");
    }
    // The session is still usable, and nothing reached the trap.
    assert!(session.ended().is_none());
    assert!(
        timeout(Duration::from_millis(200), trap.accept())
            .await
            .is_err()
    );
    assert_eq!(stats.snapshot().connections_failed, 7);
}

#[tokio::test]
async fn truncated_header_times_out_without_a_reply() {
    let (session, stats) = server(Policy::allow_all(), Duration::from_millis(300)).await;
    let mut s = session.open_stream().unwrap();
    s.write_all(&hex!("01 00 03 ff 61 62")).await.unwrap();
    let mut out = Vec::new();
    timeout(T, s.read_to_end(&mut out)).await.unwrap().unwrap();
    assert!(out.is_empty());
    assert_eq!(stats.snapshot().errors.get("header_timeout"), Some(&1));
}

#[tokio::test]
async fn smux_garbage_ends_only_that_session() {
    let (mut a, b) = tokio::io::duplex(4096);
    let server = MuxServer::new(
        MuxServerConfig {
            policy: Policy::allow_all(),
            ..MuxServerConfig::default()
        },
        Arc::new(StatsCounter::new("mux")),
    );
    let task = tokio::spawn(async move { server.serve_conn(Box::new(b), Shutdown::new()).await });
    // smux version 9: a session error, the server closes the connection.
    a.write_all(&hex!("09 01 0000 03000000")).await.unwrap();
    let mut rest = Vec::new();
    timeout(T, a.read_to_end(&mut rest)).await.unwrap().unwrap();
    timeout(T, task).await.unwrap().unwrap();
}
