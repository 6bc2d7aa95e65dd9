//! Host side (`ptkit_tor::host`) against real peers: obfs4proxy as server and client,
//! snowflake-client, and fake PTs written as shell scripts. Item IDs refer to
//! `shared/specs/pt1-extorport.md` §6.3.
//!
//! A missing peer binary fails the test when `CI=true`, otherwise the test prints a skip line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ptkit_core::{Args, Connector, Target};
use ptkit_tor::host::{
    HostConfig, HostError, HostRole, ManagedPt, MethodProtocol, ServerTransportSpec,
};
use ptkit_tor::lines::LineError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const OBFS4PROXY: &str = "/usr/bin/obfs4proxy";
const SNOWFLAKE_CLIENT: &str = "/usr/bin/snowflake-client";
const GRACE: Duration = Duration::from_secs(3);
const TEST_BOUND: Duration = Duration::from_secs(90);

/// The peer's path, or `None` (after a skip line) when it is not installed outside CI.
fn peer(path: &str) -> Option<PathBuf> {
    let p = PathBuf::from(path);
    if p.exists() {
        return Some(p);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("required peer {path} is not installed (CI=true)");
    }
    eprintln!("SKIP: {path} is not installed");
    None
}

fn process_gone(pid: u32) -> bool {
    // A zombie still has a /proc entry, so this also proves the child was reaped.
    !Path::new(&format!("/proc/{pid}")).exists()
}

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn stop_within_grace(pt: ManagedPt, what: &str) {
    let pid = pt.pid();
    let started = Instant::now();
    let status = pt.stop(GRACE).await.unwrap();
    let took = started.elapsed();
    assert!(
        took < GRACE * 2 + Duration::from_secs(1),
        "{what} took {took:?} to stop"
    );
    assert_ne!(
        status.signal(),
        Some(libc::SIGKILL),
        "{what} had to be killed: {status}"
    );
    assert!(
        process_gone(pid),
        "{what} (pid {pid}) still present after stop"
    );
}

/// (a) obfs4proxy server + obfs4proxy client, 1 MiB round trip through a local echo server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_h7_obfs4proxy_server_and_client_round_trip() {
    let Some(obfs4proxy) = peer(OBFS4PROXY) else {
        return;
    };
    tokio::time::timeout(TEST_BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let echo = echo_server().await;

        let server_role = HostRole::Server {
            transports: vec![ServerTransportSpec {
                name: "obfs4".into(),
                bind: "127.0.0.1:0".parse().unwrap(),
                options: Args::new(),
            }],
            orport: Some(echo),
            extorport: None,
            cookie_file: None,
        };
        let server = ManagedPt::launch(HostConfig::new(
            &obfs4proxy,
            server_role,
            dir.path().join("server-state"),
        ))
        .await
        .unwrap();
        let smethod = server.method("obfs4").expect("SMETHOD obfs4").clone();
        assert_eq!(smethod.protocol, MethodProtocol::Server);
        assert_eq!(server.server_methods().count(), 1);
        assert!(server.methods().missing.is_empty());
        assert!(
            smethod.addr.ip().is_loopback() && smethod.addr.port() != 0,
            "{}",
            smethod.addr
        );
        let cert = smethod
            .args
            .get("cert")
            .expect("cert in SMETHOD ARGS")
            .to_owned();
        assert_eq!(smethod.args.get("iat-mode"), Some("0"));

        let client_role = HostRole::Client {
            transports: vec!["obfs4".into()],
            proxy: None,
        };
        let client = ManagedPt::launch(HostConfig::new(
            &obfs4proxy,
            client_role,
            dir.path().join("client-state"),
        ))
        .await
        .unwrap();
        let cmethod = client.method("obfs4").expect("CMETHOD obfs4");
        assert_eq!(cmethod.protocol, MethodProtocol::Socks5);
        assert_eq!(client.client_methods().count(), 1);
        let connector = client.connector("obfs4").unwrap();
        assert_eq!(connector.name(), "obfs4");

        let settings = Args::new().with("cert", cert).with("iat-mode", "0");
        let conn = connector
            .connect(&settings, Some(Target::from_socket_addr(smethod.addr)))
            .await
            .unwrap();
        let (mut r, mut w) = tokio::io::split(conn);

        let mut data = vec![0u8; 1 << 20];
        aws_lc_rs::rand::fill(&mut data).unwrap();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w.flush().await.unwrap();
            w
        });
        let mut back = vec![0u8; data.len()];
        r.read_exact(&mut back).await.unwrap();
        assert!(back == data, "echo through obfs4 differs");
        let w = writer.await.unwrap();
        drop(r.unsplit(w));

        stop_within_grace(client, "obfs4proxy client").await;
        stop_within_grace(server, "obfs4proxy server").await;
    })
    .await
    .expect("test exceeded its time bound");
}

/// (b) snowflake-client reports a loopback SOCKS5 client method.
#[tokio::test]
async fn h3_snowflake_client_reports_socks5_cmethod() {
    let Some(snowflake) = peer(SNOWFLAKE_CLIENT) else {
        return;
    };
    tokio::time::timeout(TEST_BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let role = HostRole::Client {
            transports: vec!["snowflake".into()],
            proxy: None,
        };
        let pt = ManagedPt::launch(HostConfig::new(&snowflake, role, dir.path().join("state")))
            .await
            .unwrap();
        let m = pt.method("snowflake").expect("CMETHOD snowflake");
        assert_eq!(m.protocol, MethodProtocol::Socks5);
        assert!(m.addr.ip().is_loopback(), "{}", m.addr);
        assert!(pt.methods().errors.is_empty() && pt.methods().missing.is_empty());
        assert!(pt.connector("snowflake").is_some());
        stop_within_grace(pt, "snowflake-client").await;
    })
    .await
    .expect("test exceeded its time bound");
}

/// A fake PT: `/bin/sh script pidfile`; the script first records its pid.
struct FakePt {
    dir: tempfile::TempDir,
}

impl FakePt {
    fn new() -> Self {
        FakePt {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Config running `body` (after the pid is recorded) with a short startup timeout.
    fn config(&self, name: &str, body: &str, timeout: Duration) -> (HostConfig, PathBuf) {
        let script = self.dir.path().join(format!("{name}.sh"));
        let pidfile = self.dir.path().join(format!("{name}.pid"));
        std::fs::write(&script, format!("echo $$ > \"$1\"\n{body}\n")).unwrap();
        let role = HostRole::Client {
            transports: vec!["x".into()],
            proxy: None,
        };
        // Run through /bin/sh rather than exec'ing the fresh file (avoids ETXTBSY races).
        let mut config = HostConfig::new("/bin/sh", role, self.dir.path().join("state"));
        config.args = vec![
            script.to_string_lossy().into_owned(),
            pidfile.to_string_lossy().into_owned(),
        ];
        config.startup_timeout = timeout;
        (config, pidfile)
    }

    fn pid(pidfile: &Path) -> u32 {
        std::fs::read_to_string(pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

/// Blocks on stdin without spawning children, exits when the host closes it.
const WAIT_STDIN: &str = "while read -r _; do :; done";

async fn expect_failure(fake: &FakePt, name: &str, body: &str, timeout: Duration) -> HostError {
    let (config, pidfile) = fake.config(name, body, timeout);
    let err = ManagedPt::launch(config).await.expect_err(name);
    let pid = FakePt::pid(&pidfile);
    assert!(
        process_gone(pid),
        "{name}: fake PT (pid {pid}) still exists after a failed launch"
    );
    err
}

/// (c) fake PTs printing garbage: exact error variants, no process left behind.
#[tokio::test]
async fn h3_h6_fake_pt_failures_leave_no_process() {
    tokio::time::timeout(TEST_BOUND, async {
        let fake = FakePt::new();
        let short = Duration::from_secs(5);

        let err = expect_failure(&fake, "version2", &format!("echo 'VERSION 2'\n{WAIT_STDIN}"), short).await;
        assert!(matches!(&err, HostError::UnsupportedVersion(v) if v == "2"), "{err:?}");

        let err = expect_failure(
            &fake,
            "hostname",
            &format!("echo 'VERSION 1'\necho 'CMETHOD x socks5 localhost:1080'\n{WAIT_STDIN}"),
            short,
        )
        .await;
        assert!(matches!(&err, HostError::MalformedLine(LineError { keyword: "CMETHOD", .. })), "{err:?}");

        let started = Instant::now();
        let err = expect_failure(&fake, "silent", WAIT_STDIN, Duration::from_millis(300)).await;
        assert!(matches!(&err, HostError::StartupTimeout(d) if *d == Duration::from_millis(300)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));

        let err = expect_failure(&fake, "version-error", &format!("echo 'VERSION-ERROR no-version'\n{WAIT_STDIN}"), short).await;
        assert!(matches!(&err, HostError::VersionError(m) if m == "no-version"), "{err:?}");

        let err = expect_failure(&fake, "env-error", "echo 'ENV-ERROR no TOR_PT_STATE_LOCATION'\nexit 1", short).await;
        assert!(matches!(&err, HostError::EnvError(m) if m == "no TOR_PT_STATE_LOCATION"), "{err:?}");

        let err = expect_failure(&fake, "exits", "echo 'VERSION 1'\nexit 3", short).await;
        assert!(matches!(&err, HostError::ExitedEarly { status: Some(s) } if s.code() == Some(3)), "{err:?}");

        let err = expect_failure(
            &fake,
            "too-long",
            &format!("echo 'VERSION 1'\nhead -c 70000 /dev/zero | tr '\\000' a\necho\n{WAIT_STDIN}"),
            short,
        )
        .await;
        assert!(matches!(&err, HostError::LineTooLong), "{err:?}");

        let (mut config, pidfile) =
            fake.config("no-proxy-done", &format!("echo 'VERSION 1'\necho 'CMETHOD x socks5 127.0.0.1:1080'\necho 'CMETHODS DONE'\n{WAIT_STDIN}"), short);
        config.role = HostRole::Client { transports: vec!["x".into()], proxy: Some("socks5://127.0.0.1:1".into()) };
        let err = ManagedPt::launch(config).await.expect_err("no PROXY DONE");
        assert!(matches!(&err, HostError::ProxyNotConfirmed), "{err:?}");
        assert!(process_gone(FakePt::pid(&pidfile)));
    })
    .await
    .expect("test exceeded its time bound");
}

/// (c) garbage that tor tolerates must not fail the launch (items Q-5, H-2, O-5).
#[tokio::test]
async fn q5_h2_fake_pt_tolerated_garbage_succeeds() {
    tokio::time::timeout(TEST_BOUND, async {
        let fake = FakePt::new();
        let short = Duration::from_secs(5);
        let cases = [
            (
                "bad-log-escape",
                concat!(
                    "echo 'VERSION 1'\n",
                    "printf '%s\\n' 'LOG SEVERITY=notice MESSAGE=\"bad escape \\?\"'\n",
                    "echo 'LOG SEVERITY=notice MESSAGE=two words'\n",
                    "echo 'STATUS keyless'\n",
                    "echo 'CMETHOD x socks5 127.0.0.1:1080'\n",
                    "echo 'CMETHODS DONE'\n",
                ),
            ),
            (
                "binary-junk",
                concat!(
                    "printf '\\377\\376\\200\\201 junk \\303\\n'\n",
                    "printf 'VERSION 1\\r\\n'\n",
                    "printf 'LOG SEVERITY=info MESSAGE=\"caf\\303\\251 \\377\"\\n'\n",
                    "printf 'STATUS TRANSPORT=x TYPE=version IMPLEMENTATION=\"fakept\" VERSION=\"0.0.1\"\\n'\n",
                    "printf 'CMETHOD x socks5 127.0.0.1:1080\\r\\n'\n",
                    "printf 'CMETHODS DONE\\r\\n'\n",
                    "printf 'CMETHOD x socks5 127.0.0.1:1081\\n'\n",
                ),
            ),
        ];
        for (name, body) in cases {
            let (config, pidfile) = fake.config(name, &format!("{body}{WAIT_STDIN}"), short);
            let pt = ManagedPt::launch(config).await.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(pt.pid(), FakePt::pid(&pidfile));
            let m = pt.method("x").unwrap();
            assert_eq!(m.addr, "127.0.0.1:1080".parse().unwrap());
            assert!(pt.methods().missing.is_empty());
            if name == "binary-junk" {
                assert_eq!(pt.implementation(), Some(("fakept".into(), "0.0.1".into())));
                assert_eq!(pt.statuses()[0].transport.as_deref(), Some("x"));
                // The CMETHOD after DONE is recorded as a protocol failure (item O-7).
                let deadline = Instant::now() + Duration::from_secs(5);
                while pt.protocol_failure().is_none() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                assert!(pt.protocol_failure().is_some());
            }
            stop_within_grace(pt, name).await;
        }
    })
    .await
    .expect("test exceeded its time bound");
}

/// H-7: a PT that ignores stdin close and SIGTERM is killed after two grace periods.
#[tokio::test]
async fn h7_stop_escalates_to_sigterm_then_sigkill() {
    tokio::time::timeout(TEST_BOUND, async {
        let fake = FakePt::new();
        let grace = Duration::from_millis(300);
        let ready =
            "echo 'VERSION 1'\necho 'CMETHOD x socks5 127.0.0.1:1080'\necho 'CMETHODS DONE'\n";
        // Exits on SIGTERM (default action) but ignores stdin EOF.
        let (config, _) = fake.config(
            "term",
            &format!("{ready}while :; do sleep 0.05; done"),
            Duration::from_secs(5),
        );
        let pt = ManagedPt::launch(config).await.unwrap();
        let pid = pt.pid();
        let started = Instant::now();
        let status = pt.stop(grace).await.unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
        assert!(
            started.elapsed() >= grace && started.elapsed() < grace * 2 + Duration::from_secs(1)
        );
        assert!(process_gone(pid));
        // Ignores SIGTERM too.
        let (config, _) = fake.config(
            "kill",
            &format!("trap '' TERM\n{ready}while :; do sleep 0.05; done"),
            Duration::from_secs(5),
        );
        let pt = ManagedPt::launch(config).await.unwrap();
        let pid = pt.pid();
        let started = Instant::now();
        let status = pt.stop(grace).await.unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
        assert!(
            started.elapsed() >= grace * 2
                && started.elapsed() < grace * 2 + Duration::from_secs(2)
        );
        assert!(process_gone(pid));
    })
    .await
    .expect("test exceeded its time bound");
}

/// H-8: a PT that exits by itself is relaunched with back-off and connectors follow it; a
/// relaunch that answers ENV-ERROR ends the supervision for good.
#[tokio::test]
async fn h8_relaunch_with_backoff_then_give_up_on_env_error() {
    use ptkit_tor::host::{HostConfig, HostRole, RelaunchPolicy, SupervisedPt};
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("launches");
    let script = dir.path().join("flaky.sh");
    // Launches 1-3 configure a method and exit after 200 ms; launch 4 reports ENV-ERROR.
    std::fs::write(
        &script,
        format!(
            "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}\n\
             if [ $n -ge 4 ]; then echo 'ENV-ERROR state dir gone'; exit 1; fi\n\
             echo 'VERSION 1'; echo 'CMETHOD flaky socks5 127.0.0.1:'$((20000+n)); echo 'CMETHODS DONE'\n\
             sleep 0.2\n",
            c = counter.display()
        ),
    )
    .unwrap();
    let mut config = HostConfig::new(
        "/bin/sh",
        HostRole::Client {
            transports: vec!["flaky".into()],
            proxy: None,
        },
        dir.path().join("state"),
    );
    config.args = vec![script.display().to_string()];
    let policy = RelaunchPolicy {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        stable_after: Duration::from_secs(60),
    };
    let started = std::time::Instant::now();
    let pt = SupervisedPt::start(config, policy).await.unwrap();
    let first = pt.methods().unwrap().methods[0].addr.port();
    assert_eq!(first, 20001);
    tokio::time::timeout(Duration::from_secs(10), async {
        while pt.gave_up().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("supervisor never gave up");
    assert_eq!(pt.launches(), 3, "three good launches before the ENV-ERROR");
    assert!(pt.gave_up().unwrap().contains("state dir gone"));
    // Back-off 50 + 100 + 200 ms plus three 200 ms runs: at least 0.9 s.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let launches_then = std::fs::read_to_string(&counter).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap(),
        launches_then,
        "no relaunch after ENV-ERROR"
    );
    assert!(pt.methods().is_none());
    let err =
        ptkit_core::Connector::connect(&pt.connector("flaky"), &ptkit_core::Args::new(), None)
            .await;
    assert!(err.is_err());
    pt.stop(Duration::from_millis(100)).await;
}
