//! The application IPC adapter (`ptkit_ipc::adapter`): external PT binaries behind the same
//! `ClientTransport` / `ServerTransport` traits as in-process transports, chosen by
//! configuration. Drives Debian's obfs4proxy (PT 1.0, both roles) and the ptkit binary in
//! every IPC version (1, 2.0, 2.1, 2.2, 3.0), with data round trips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ptkit_core::net::{DirectDialer, TcpUpstream};
use ptkit_core::server::{ServerLimits, ServerManager, proxy};
use ptkit_core::shutdown::Shutdown;
use ptkit_core::{
    Args, ClientConfig, ClientTransport, ServerConfig, ServerTransport, StatsCounter, Target,
};
use ptkit_ipc::adapter::{
    AdapterError, ExternalClient, ExternalConfig, ExternalPt, ExternalServerTransport, LaunchRole,
    MethodKind, TransportSpec, client_transport, server_transport,
};
use ptkit_ipc::version::PtVersion;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(20);
const N: usize = 256 * 1024;
const PTKIT: &str = env!("CARGO_BIN_EXE_ptkit");
const VERSIONS: &[PtVersion] = &[
    PtVersion::V1,
    PtVersion::V2_0,
    PtVersion::V2_1,
    PtVersion::V2_2,
    PtVersion::V3_0,
];

/// An echo server; returns its address.
async fn echo() -> SocketAddr {
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

fn pattern(seed: u8) -> Vec<u8> {
    (0..N)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// One connection through `client`'s connector to `dest`, N bytes echoed byte-exact.
async fn round_trip(client: &dyn ClientTransport, settings: &Args, dest: Option<Target>, seed: u8) {
    let connector = client.connector(&ClientConfig::default()).unwrap();
    let mut conn = timeout(T, connector.connect(settings, dest))
        .await
        .expect("connect timed out")
        .expect("connect failed");
    let data = pattern(seed);
    let (mut r, mut w) = tokio::io::split(&mut conn);
    let writer = async {
        w.write_all(&data).await.unwrap();
        w.flush().await.unwrap();
    };
    let mut back = vec![0u8; N];
    let reader = r.read_exact(&mut back);
    timeout(T, async { tokio::join!(writer, reader) })
        .await
        .expect("round trip timed out")
        .1
        .unwrap();
    assert!(back == data, "echoed bytes differ");
}

/// Serves `server` on loopback, forwarding to `target`, as any driver serves a transport.
async fn serve(
    server: &dyn ServerTransport,
    target: SocketAddr,
    state: &Path,
) -> (SocketAddr, Args, ServerManager) {
    let listener = timeout(
        T,
        server.listen(ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            options: Args::new(),
            state_dir: Some(state.to_path_buf()),
        }),
    )
    .await
    .expect("listen timed out")
    .expect("listen failed");
    let addr = listener.local_addr().unwrap();
    let args = listener.client_args();
    let manager = proxy(
        listener,
        Arc::new(TcpUpstream {
            target: Target::from_socket_addr(target),
            dialer: DirectDialer::default(),
        }),
        Arc::new(StatsCounter::new(server.name())),
        Shutdown::new(),
        ServerLimits::default(),
    );
    (addr, args, manager)
}

fn obfs4proxy() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/obfs4proxy");
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "obfs4proxy is required when CI=true (apt-get install obfs4proxy)"
    );
    eprintln!("skipping: /usr/bin/obfs4proxy is not installed");
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn obfs4proxy_pt1_both_roles_through_the_traits() {
    let Some(bin) = obfs4proxy() else { return };
    let dir = tempfile::tempdir().unwrap();
    let echo = echo().await;

    // Server role through ServerTransport: the app serves it with ptkit_core::server::proxy.
    let server = ExternalServerTransport::new(ExternalConfig::new(
        &bin,
        PtVersion::V1,
        "obfs4",
        dir.path().join("server"),
    ));
    let (addr, args, manager) = serve(&server, echo, &dir.path().join("server")).await;
    assert!(args.get("cert").is_some(), "obfs4 SMETHOD ARGS carry cert");
    assert_eq!(args.get("iat-mode"), Some("0"));

    // Client role through ClientTransport; bridge args as per-connection settings.
    let client = ExternalClient::launch(&ExternalConfig::new(
        &bin,
        PtVersion::V1,
        "obfs4",
        dir.path().join("client"),
    ))
    .await
    .unwrap();
    for seed in 0..3 {
        round_trip(&*client, &args, Some(Target::from_socket_addr(addr)), seed).await;
    }
    // Wrong cert: the obfs4 handshake fails, the connect reports it.
    let mut bad = Args::new();
    bad.push(
        "cert",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
    bad.push("iat-mode", "0");
    let c = client.connector(&ClientConfig::default()).unwrap();
    let r = timeout(T, c.connect(&bad, Some(Target::from_socket_addr(addr)))).await;
    let failed = match r {
        Err(_) => true,
        Ok(Err(_)) => true,
        Ok(Ok(mut conn)) => {
            // obfs4proxy may report success before its handshake; then no data comes back.
            let _ = conn.write_all(b"x").await;
            let mut b = [0u8; 1];
            !matches!(
                timeout(Duration::from_secs(5), conn.read(&mut b)).await,
                Ok(Ok(1))
            )
        }
    };
    assert!(failed, "a wrong obfs4 cert must not reach the echo server");
    let pid = client.pid().await.unwrap();
    client.stop(Duration::from_secs(2)).await;
    assert!(client.pid().await.is_none());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true),
        "obfs4proxy client still running after stop"
    );
    manager.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn obfs4proxy_server_forwarding_to_a_fixed_target() {
    let Some(bin) = obfs4proxy() else { return };
    let dir = tempfile::tempdir().unwrap();
    let echo = echo().await;
    let server = ExternalPt::launch(
        &ExternalConfig::new(&bin, PtVersion::V1, "obfs4", dir.path().join("s")),
        LaunchRole::Server {
            bind: "127.0.0.1:0".parse().unwrap(),
            target: Target::from_socket_addr(echo),
        },
    )
    .await
    .unwrap();
    let m = server.method().unwrap().clone();
    assert_eq!(m.kind, MethodKind::Server);
    let client = ExternalClient::launch(&ExternalConfig::new(
        &bin,
        PtVersion::V1,
        "obfs4",
        dir.path().join("c"),
    ))
    .await
    .unwrap();
    round_trip(&*client, &m.args, Some(Target::from_socket_addr(m.addr)), 7).await;
    client.stop(Duration::from_secs(2)).await;
    server.stop(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ptkit_binary_in_every_ipc_version_both_roles() {
    let echo = echo().await;
    for &version in VERSIONS {
        let dir = tempfile::tempdir().unwrap();
        let server = ExternalServerTransport::new(ExternalConfig::new(
            PTKIT,
            version,
            "plain",
            dir.path().join("s"),
        ));
        let (addr, _args, manager) = serve(&server, echo, &dir.path().join("s")).await;
        let client = ExternalClient::launch(&ExternalConfig::new(
            PTKIT,
            version,
            "plain",
            dir.path().join("c"),
        ))
        .await
        .unwrap_or_else(|e| panic!("{version}: {e}"));
        for seed in 0..2 {
            round_trip(
                &*client,
                &Args::new(),
                Some(Target::from_socket_addr(addr)),
                seed,
            )
            .await;
        }
        client.stop(Duration::from_secs(2)).await;
        manager.stop(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ptkit_websocket_with_json_settings_and_bound_destination() {
    // 2.x/3.0 children get per-connection settings as the 0x09 JSON block; the websocket
    // client needs its url there. Under 3.0 also a bound request ([::0]:0).
    let echo = echo().await;
    for version in [PtVersion::V2_1, PtVersion::V2_2, PtVersion::V3_0] {
        let dir = tempfile::tempdir().unwrap();
        let server = ExternalServerTransport::new(ExternalConfig::new(
            PTKIT,
            version,
            "websocket",
            dir.path().join("s"),
        ));
        let (addr, _, manager) = serve(&server, echo, &dir.path().join("s")).await;
        let mut cfg = ExternalConfig::new(PTKIT, version, "websocket", dir.path().join("c"));
        cfg.server = Some(Target::from_socket_addr(addr));
        let client = ExternalClient::launch(&cfg).await.unwrap();
        let mut settings = Args::new();
        settings.push("url", format!("ws://{addr}/"));
        round_trip(&*client, &settings, Some(Target::from_socket_addr(addr)), 3).await;
        if version == PtVersion::V3_0 {
            // No destination: the bound request [::0]:0 goes to the client's -target.
            round_trip(&*client, &settings, None, 4).await;
        }
        client.stop(Duration::from_secs(2)).await;
        manager.stop(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn configuration_alone_switches_in_process_and_external() {
    // The same application code, three configurations: built-in plain, ptkit as a 3.0
    // child, ptkit as a PT 1.0 child.
    let builtin = ptkit::transports::registry();
    let echo = echo().await;
    for json in [
        r#"{"transport":"plain"}"#.to_owned(),
        format!(r#"{{"transport":"plain","exec":"{PTKIT}","ptversion":"3.0"}}"#),
        format!(r#"{{"transport":"plain","exec":"{PTKIT}","ptversion":"1"}}"#),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = TransportSpec::from_json(&json).unwrap();
        spec.state = Some(dir.path().join("state"));
        let server = server_transport(&spec, &builtin).unwrap();
        let (addr, _, manager) = serve(&*server, echo, &dir.path().join("state")).await;
        let client = client_transport(&spec, &builtin).await.unwrap();
        round_trip(
            &*client,
            &Args::new(),
            Some(Target::from_socket_addr(addr)),
            9,
        )
        .await;
        manager.stop(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn launch_failures_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    // A transport the child does not have.
    for version in [PtVersion::V1, PtVersion::V2_2] {
        let e = ExternalClient::launch(&ExternalConfig::new(
            PTKIT,
            version,
            "nosuch",
            dir.path().join("x"),
        ))
        .await
        .unwrap_err();
        assert!(
            matches!(e, AdapterError::MethodMissing(_) | AdapterError::Host(_)),
            "{version}: {e:?}"
        );
    }
    // A bad option value: ENV-ERROR on stderr and exit 64 under 2.2.
    let mut cfg = ExternalConfig::new(PTKIT, PtVersion::V2_2, "plain", dir.path().join("y"));
    cfg.proxy = Some("gopher://nowhere".into());
    let e = ExternalClient::launch(&cfg).await.unwrap_err();
    assert!(
        matches!(e, AdapterError::ProxyError(_) | AdapterError::EnvError(_)),
        "{e:?}"
    );
    // A program that does not exist.
    let e = ExternalClient::launch(&ExternalConfig::new(
        "/nonexistent/pt",
        PtVersion::V3_0,
        "plain",
        dir.path().join("z"),
    ))
    .await
    .unwrap_err();
    assert_eq!(e.kind(), "io");
}
