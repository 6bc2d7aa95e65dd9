#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use crate::lines::Severity;
use hex_literal::hex;
use ptkit_core::{Connector, Target, TransportError};
use tokio::io::BufReader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

fn env_map(env: &[(String, OsString)]) -> Vec<(&str, &str)> {
    env.iter()
        .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
        .collect()
}

fn server_config(transports: Vec<ServerTransportSpec>, ext: Option<SocketAddr>) -> HostConfig {
    HostConfig::new(
        "/usr/bin/pt",
        HostRole::Server {
            transports,
            orport: Some("127.0.0.1:9001".parse().unwrap()),
            extorport: ext,
            cookie_file: ext.map(|_| PathBuf::from("/var/lib/tor/extended_orport_auth_cookie")),
        },
        "/var/lib/tor/pt_state/",
    )
}

#[test]
fn h1_client_env_exactly_like_tor() {
    let role = HostRole::Client {
        transports: vec!["obfs3".into(), "obfs4".into()],
        proxy: None,
    };
    let env = build_env(&HostConfig::new(
        "/usr/bin/pt",
        role,
        "/var/lib/tor/pt_state/",
    ));
    assert_eq!(
        env_map(&env),
        [
            ("TOR_PT_MANAGED_TRANSPORT_VER", "1"),
            ("TOR_PT_STATE_LOCATION", "/var/lib/tor/pt_state/"),
            ("TOR_PT_EXIT_ON_STDIN_CLOSE", "1"),
            ("TOR_PT_CLIENT_TRANSPORTS", "obfs3,obfs4"),
        ]
    );
}

#[test]
fn h1_client_env_passes_proxy_and_extra_env_last() {
    let role = HostRole::Client {
        transports: vec!["obfs4".into()],
        proxy: Some("socks5://127.0.0.1:8001".into()),
    };
    let mut config = HostConfig::new("/usr/bin/pt", role, "/s");
    config
        .extra_env
        .push(("TOR_PT_OUTBOUND_BIND_ADDRESS_V6".into(), "[::1]".into()));
    let env = build_env(&config);
    let map = env_map(&env);
    assert_eq!(map[4], ("TOR_PT_PROXY", "socks5://127.0.0.1:8001"));
    assert_eq!(
        map.last(),
        Some(&("TOR_PT_OUTBOUND_BIND_ADDRESS_V6", "[::1]"))
    );
}

#[test]
fn h1_server_env_matches_tor_observed_values() {
    let transports = vec![
        ServerTransportSpec {
            name: "dummy".into(),
            bind: "0.0.0.0:0".parse().unwrap(),
            options: Args::new()
                .with("shared-secret", "a;b:c\\d")
                .with("key2", "x=y"),
        },
        ServerTransportSpec {
            name: "other".into(),
            bind: "[::1]:4443".parse().unwrap(),
            options: Args::new(),
        },
    ];
    let env = build_env(&server_config(transports, None));
    assert_eq!(
        env_map(&env),
        [
            ("TOR_PT_MANAGED_TRANSPORT_VER", "1"),
            ("TOR_PT_STATE_LOCATION", "/var/lib/tor/pt_state/"),
            ("TOR_PT_EXIT_ON_STDIN_CLOSE", "1"),
            ("TOR_PT_SERVER_TRANSPORTS", "dummy,other"),
            ("TOR_PT_SERVER_BINDADDR", "dummy-0.0.0.0:0,other-[::1]:4443"),
            (
                "TOR_PT_SERVER_TRANSPORT_OPTIONS",
                "dummy:shared-secret=a\\;b\\:c\\\\d;dummy:key2=x=y"
            ),
            ("TOR_PT_ORPORT", "127.0.0.1:9001"),
            ("TOR_PT_EXTENDED_SERVER_PORT", ""),
        ]
    );
}

#[test]
fn h1_server_env_with_extorport_and_no_options() {
    let t = vec![ServerTransportSpec {
        name: "obfs4".into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        options: Args::new(),
    }];
    let env = build_env(&server_config(t, Some("127.0.0.1:9002".parse().unwrap())));
    let map = env_map(&env);
    assert!(
        !map.iter()
            .any(|(k, _)| *k == "TOR_PT_SERVER_TRANSPORT_OPTIONS")
    );
    assert!(map.contains(&("TOR_PT_EXTENDED_SERVER_PORT", "127.0.0.1:9002")));
    assert!(map.contains(&(
        "TOR_PT_AUTH_COOKIE_FILE",
        "/var/lib/tor/extended_orport_auth_cookie"
    )));
}

#[test]
fn h1_server_options_round_trip_through_goptlib_parser() {
    let transports = vec![
        ServerTransportSpec {
            name: "trebuchet".into(),
            bind: "127.0.0.1:1984".parse().unwrap(),
            options: Args::new()
                .with("secret", "nou")
                .with("cache", "/tmp/c")
                .with("k:1=", "v:=;\\"),
        },
        ServerTransportSpec {
            name: "ballista".into(),
            bind: "127.0.0.1:4891".parse().unwrap(),
            options: Args::new().with("secret", "yes"),
        },
    ];
    let encoded = encode_server_options(&transports);
    let parsed = crate::env::parse_server_options(&encoded).unwrap();
    assert_eq!(parsed["trebuchet"], transports[0].options);
    assert_eq!(parsed["ballista"], transports[1].options);
    assert_eq!(
        encode_server_options(&transports[1..]),
        "ballista:secret=yes"
    );
}

fn client(transports: &[&str], proxy: bool) -> HostParser {
    HostParser::client(
        &transports.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        proxy,
    )
}

fn server(transports: &[&str]) -> HostParser {
    HostParser::server(&transports.iter().map(|s| s.to_string()).collect::<Vec<_>>())
}

fn run(p: &mut HostParser, lines: &[&str]) -> Result<PtMethods, HostError> {
    for line in lines {
        if let HostEvent::Done(m) = p.feed(line)? {
            return Ok(m);
        }
    }
    panic!("no DONE")
}

#[test]
fn s7_11_spec_client_session() {
    let mut p = client(&["obfs3", "obfs4"], true);
    let m = run(
        &mut p,
        &[
            "VERSION 1",
            "PROXY DONE",
            "CMETHOD obfs3 socks5 127.0.0.1:32525",
            "CMETHOD obfs4 socks5 127.0.0.1:37347",
            "CMETHODS DONE",
        ],
    )
    .unwrap();
    assert_eq!(m.methods.len(), 2);
    assert_eq!(m.methods[1].addr, "127.0.0.1:37347".parse().unwrap());
    assert_eq!(m.methods[1].protocol, MethodProtocol::Socks5);
    assert!(m.errors.is_empty() && m.missing.is_empty());
    assert!(p.is_done());
}

#[test]
fn s7_11_spec_server_session() {
    let mut p = server(&["obfs3", "obfs4"]);
    let m = run(
            &mut p,
            &[
                "VERSION 1",
                "SMETHOD obfs3 198.51.100.1:1984",
                "SMETHOD obfs4 198.51.100.1:43734 ARGS:cert=HszPy3vWfjsESCEOo9ZBkRv6zQ/1mGHzc8arF0y2SpwFr3WhsMu8rK0zyaoyERfbz3ddFw,iat-mode=0",
                "SMETHODS DONE",
            ],
        )
        .unwrap();
    assert_eq!(m.methods[0].args, Args::new());
    assert_eq!(m.methods[1].args.get("iat-mode"), Some("0"));
    assert_eq!(m.methods[1].protocol, MethodProtocol::Server);
}

#[test]
fn s7_11_lyrebird_session_status_before_methods() {
    let mut p = client(&["meek_lite"], false);
    assert_eq!(p.feed("VERSION 1").unwrap(), HostEvent::Version);
    let HostEvent::Status(kv) = p
        .feed(r#"STATUS TYPE=version IMPLEMENTATION="lyrebird" VERSION="devel""#)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(kv[1], ("IMPLEMENTATION".into(), "lyrebird".into()));
    let m = run(
        &mut p,
        &["CMETHOD meek_lite socks5 127.0.0.1:41373", "CMETHODS DONE"],
    )
    .unwrap();
    assert_eq!(m.methods[0].name, "meek_lite");
}

#[test]
fn h3_version_must_be_exactly_1() {
    for bad in ["VERSION 1 ", "VERSION 2", "VERSION", "VERSION 1,2"] {
        let mut p = client(&["x"], false);
        assert!(
            matches!(p.feed(bad), Err(HostError::UnsupportedVersion(_))),
            "{bad:?}"
        );
    }
    let mut p = client(&["x"], false);
    assert_eq!(p.feed("VERSION 1\r").unwrap(), HostEvent::Version);
}

#[test]
fn h3_second_version_is_a_violation() {
    let mut p = client(&["x"], false);
    p.feed("VERSION 1").unwrap();
    assert!(matches!(
        p.feed("VERSION 1"),
        Err(HostError::Unexpected { .. })
    ));
    // A failed parser stays failed.
    assert!(p.feed("CMETHODS DONE").is_err());
}

#[test]
fn h3_version_error_env_error_proxy_error_are_fatal_with_message() {
    let mut p = client(&["x"], false);
    assert!(
        matches!(p.feed("VERSION-ERROR no-version"), Err(HostError::VersionError(m)) if m == "no-version")
    );
    let mut p = client(&["x"], false);
    assert!(
        matches!(p.feed("ENV-ERROR no TOR_PT_MANAGED_TRANSPORT_VER environment variable"),
            Err(HostError::EnvError(m)) if m == "no TOR_PT_MANAGED_TRANSPORT_VER environment variable")
    );
    // E-14: after VERSION tor loses the message; we keep it.
    let mut p = client(&["x"], false);
    p.feed("VERSION 1").unwrap();
    assert!(matches!(p.feed("ENV-ERROR late"), Err(HostError::EnvError(m)) if m == "late"));
    let mut p = client(&["x"], true);
    p.feed("VERSION 1").unwrap();
    assert!(
        matches!(p.feed("PROXY-ERROR SOCKS 4 upstream proxies unsupported"),
            Err(HostError::ProxyError(m)) if m == "SOCKS 4 upstream proxies unsupported")
    );
}

#[test]
fn o7_method_lines_only_between_version_and_done() {
    let mut p = client(&["dummy"], false);
    assert!(matches!(
        p.feed("CMETHOD dummy socks5 127.0.0.1:43753"),
        Err(HostError::Unexpected { .. })
    ));
    let mut p = client(&["dummy"], false);
    assert!(matches!(
        p.feed("CMETHODS DONE"),
        Err(HostError::Unexpected { .. })
    ));
    let mut p = client(&["dummy"], false);
    run(
        &mut p,
        &[
            "VERSION 1",
            "CMETHOD dummy socks5 127.0.0.1:43753",
            "CMETHODS DONE",
        ],
    )
    .unwrap();
    assert!(matches!(
        p.feed("CMETHOD dummy socks5 127.0.0.1:43754"),
        Err(HostError::Unexpected { .. })
    ));
    let mut p = client(&["dummy"], false);
    run(&mut p, &["VERSION 1", "CMETHODS DONE"]).unwrap();
    assert!(matches!(
        p.feed("CMETHODS DONE"),
        Err(HostError::Unexpected { .. })
    ));
    // After DONE, LOG/STATUS/unknown lines are still fine.
    let mut p = client(&["dummy"], false);
    run(&mut p, &["VERSION 1", "CMETHODS DONE"]).unwrap();
    assert!(matches!(
        p.feed("LOG SEVERITY=notice MESSAGE=\"hi\""),
        Ok(HostEvent::Log(Severity::Notice, _))
    ));
    assert!(matches!(
        p.feed("STATUS TRANSPORT=dummy CONNECT=Success"),
        Ok(HostEvent::Status(_))
    ));
    assert!(matches!(p.feed("FROBNICATE"), Ok(HostEvent::Ignored(_))));
}

#[test]
fn o7_wrong_mode_methods_are_violations() {
    let mut p = client(&["x"], false);
    p.feed("VERSION 1").unwrap();
    assert!(matches!(
        p.feed("SMETHOD x 127.0.0.1:1"),
        Err(HostError::Unexpected { .. })
    ));
    let mut p = client(&["x"], false);
    p.feed("VERSION 1").unwrap();
    assert!(matches!(
        p.feed("SMETHODS DONE"),
        Err(HostError::Unexpected { .. })
    ));
    let mut p = server(&["x"]);
    p.feed("VERSION 1").unwrap();
    assert!(matches!(
        p.feed("CMETHOD x socks5 127.0.0.1:1"),
        Err(HostError::Unexpected { .. })
    ));
    let mut p = server(&["x"]);
    p.feed("VERSION 1").unwrap();
    assert!(matches!(
        p.feed("CMETHOD-ERROR x nope"),
        Err(HostError::Unexpected { .. })
    ));
}

#[test]
fn h3_malformed_method_line_is_fatal() {
    for bad in [
        "CMETHOD dummy socks5 localhost:1080",
        "CMETHOD dummy http 127.0.0.1:1",
        "CMETHOD 4x socks5 127.0.0.1:1",
        "CMETHOD dummy socks5",
    ] {
        let mut p = client(&["dummy"], false);
        p.feed("VERSION 1").unwrap();
        assert!(
            matches!(
                p.feed(bad),
                Err(HostError::MalformedLine(LineError {
                    keyword: "CMETHOD",
                    ..
                }))
            ),
            "{bad}"
        );
    }
    let mut p = server(&["t"]);
    p.feed("VERSION 1").unwrap();
    assert!(matches!(
        p.feed("SMETHOD t 198.51.100.1:19999 ARGS:iat-mode=fo=o"),
        Err(HostError::MalformedLine(_))
    ));
}

#[test]
fn h4_method_error_is_per_transport_and_missing_reported() {
    let mut p = client(&["dummy", "other", "third"], false);
    let m = run(
        &mut p,
        &[
            "VERSION 1",
            "CMETHOD-ERROR other not here",
            "CMETHOD dummy socks5 127.0.0.1:43753",
            "CMETHODS DONE",
        ],
    )
    .unwrap();
    assert_eq!(m.methods.len(), 1);
    assert_eq!(
        m.errors,
        [MethodError {
            transport: "other".into(),
            message: "not here".into()
        }]
    );
    assert_eq!(m.missing, ["other", "third"]);
    let mut p = server(&["trebuchet"]);
    let m = run(
        &mut p,
        &[
            "VERSION 1",
            "SMETHOD-ERROR trebuchet no cows available",
            "SMETHODS DONE",
        ],
    )
    .unwrap();
    assert_eq!(m.errors[0].message, "no cows available");
    assert_eq!(m.missing, ["trebuchet"]);
}

#[test]
fn h4_unrequested_and_repeated_methods() {
    let mut p = client(&["a"], false);
    let m = run(
        &mut p,
        &[
            "VERSION 1",
            "CMETHOD a socks4 127.0.0.1:1",
            "CMETHOD a socks5 127.0.0.1:2",
            "CMETHOD b socks5 127.0.0.1:3",
            "CMETHODS DONE",
        ],
    )
    .unwrap();
    // Tor registers unrequested transports and skips repeated names.
    assert_eq!(
        m.methods
            .iter()
            .map(|m| (m.name.as_str(), m.addr.port()))
            .collect::<Vec<_>>(),
        [("a", 1), ("b", 3)]
    );
    assert_eq!(m.methods[0].protocol, MethodProtocol::Socks4);
}

#[test]
fn h5_proxy_done_required_iff_proxy_passed() {
    let mut p = client(&["x"], true);
    let r = run(
        &mut p,
        &["VERSION 1", "CMETHOD x socks5 127.0.0.1:1", "CMETHODS DONE"],
    );
    assert!(matches!(r, Err(HostError::ProxyNotConfirmed)));
    // Without a proxy PROXY DONE is logged and ignored (tor observed).
    let mut p = client(&["x"], false);
    p.feed("VERSION 1").unwrap();
    assert!(matches!(p.feed("PROXY DONE"), Ok(HostEvent::Ignored(_))));
    assert!(run(&mut p, &["CMETHODS DONE"]).is_ok());
    // Before VERSION it is a violation.
    let mut p = client(&["x"], true);
    assert!(matches!(
        p.feed("PROXY DONE"),
        Err(HostError::Unexpected { .. })
    ));
}

#[test]
fn q5_malformed_log_and_status_only_warn() {
    let mut p = client(&["dummy"], false);
    for line in [
        "LOG SEVERITY=notice MESSAGE=two words",
        "LOG SEVERITY=loud MESSAGE=\"bad severity\"",
        "LOG SEVERITY=notice",
        r#"LOG SEVERITY=notice MESSAGE="bad escape \?""#,
        r#"LOG SEVERITY=debug MESSAGE="\a""#,
        "STATUS keyless",
    ] {
        assert!(matches!(p.feed(line), Ok(HostEvent::Warning(_))), "{line}");
    }
    p.feed("VERSION 1").unwrap();
    assert_eq!(
        p.feed(r#"LOG SEVERITY=notice MESSAGE="octal: \042q\042 bs=\134 nl=\012 e=\303\251 end""#)
            .unwrap(),
        HostEvent::Log(Severity::Notice, "octal: \"q\" bs=\\ nl=\n e=é end".into())
    );
    assert_eq!(
        p.feed(r#"LOG SEVERITY=notice MESSAGE="c-style: \"q\" bs=\\ tab=\t hex=\x41""#)
            .unwrap(),
        HostEvent::Log(Severity::Notice, "c-style: \"q\" bs=\\ tab=\t hex=A".into())
    );
    assert_eq!(
        p.feed("LOG SEVERITY=warning MESSAGE=unquoted").unwrap(),
        HostEvent::Log(Severity::Warning, "unquoted".into())
    );
    let HostEvent::Status(kv) = p
        .feed(r#"STATUS TRANSPORT=dummy CONNECT=Success ERRSTR="none at all""#)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(kv[2].1, "none at all");
    let HostEvent::Status(kv) = p.feed(r#"STATUS ADDRESS=198.51.100.222:2222 CONNECT=Failed FINGERPRINT=X ERRSTR="Connection refused""#).unwrap() else {
            panic!()
        };
    assert_eq!(kv[3].1, "Connection refused");
    assert!(
        run(
            &mut p,
            &["CMETHOD dummy socks5 127.0.0.1:43753", "CMETHODS DONE"]
        )
        .is_ok()
    );
}

#[test]
fn o5_unknown_keywords_ignored_in_every_state() {
    let mut p = client(&["x"], false);
    assert!(matches!(
        p.feed("FROBNICATE whatever"),
        Ok(HostEvent::Ignored(_))
    ));
    assert!(matches!(
        p.feed("\u{fffd}\u{fffd} junk"),
        Ok(HostEvent::Ignored(_))
    ));
    assert!(matches!(p.feed(""), Ok(HostEvent::Ignored(_))));
    p.feed("VERSION 1").unwrap();
    assert!(matches!(
        p.feed("CMETHODS NOT-DONE"),
        Ok(HostEvent::Ignored(_))
    ));
    assert!(run(&mut p, &["CMETHODS DONE\r"]).is_ok());
}

#[tokio::test]
async fn h2_bounded_reader_handles_crlf_eof_and_long_lines() {
    let mut input: Vec<u8> = b"VERSION 1\r\nshort\n".to_vec();
    input.extend(vec![b'a'; 20]);
    input.extend(b"\nlast");
    let mut r = BufReader::with_capacity(4, &input[..]);
    let mut buf = Vec::new();
    assert!(matches!(
        read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
        LineRead::Line
    ));
    assert_eq!(buf, b"VERSION 1");
    assert!(matches!(
        read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
        LineRead::Line
    ));
    assert_eq!(buf, b"short");
    assert!(matches!(
        read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
        LineRead::TooLong { rest_pending: true }
    ));
    discard_line(&mut r).await.unwrap();
    assert!(matches!(
        read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
        LineRead::Line
    ));
    assert_eq!(buf, b"last");
    assert!(matches!(
        read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
        LineRead::Eof
    ));
    // Exactly at the limit, with CRLF: accepted; one over: rejected without pending rest.
    let mut r = BufReader::new(&b"0123456789\r\n01234567890\n"[..]);
    assert!(matches!(
        read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
        LineRead::Line
    ));
    assert!(matches!(
        read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
        LineRead::TooLong {
            rest_pending: false
        }
    ));
    assert!(matches!(
        read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
        LineRead::Eof
    ));
}

/// A one-shot fake PT SOCKS port: answers with `replies` in turn, one per client message of
/// the given lengths, and returns everything the client sent.
async fn fake_socks(script: Vec<(usize, Vec<u8>)>) -> (SocketAddr, JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut seen = Vec::new();
        for (len, reply) in script {
            let mut msg = vec![0u8; len];
            s.read_exact(&mut msg).await.unwrap();
            seen.extend(msg);
            s.write_all(&reply).await.unwrap();
        }
        seen
    });
    (addr, task)
}

fn connector(addr: SocketAddr, protocol: MethodProtocol) -> PtConnector {
    PtConnector::for_method(&PtMethod {
        name: "dummy".into(),
        protocol,
        addr,
        args: Args::new(),
    })
    .unwrap()
}

#[tokio::test]
async fn s3_2_socks5_with_args_like_tor() {
    let args = Args::new()
        .with("cert", "A".repeat(300))
        .with("iat-mode", "0");
    let encoded = args.encode_client();
    let (addr, seen) = fake_socks(vec![
        (4, hex!("05 02").to_vec()),
        (2 + 255 + 1 + (encoded.len() - 255), hex!("01 00").to_vec()),
        (10, hex!("05 00 00 01 00000000 0000").to_vec()),
    ])
    .await;
    let dest = Target::parse("127.0.0.2:4444").unwrap();
    let _conn = connector(addr, MethodProtocol::Socks5)
        .connect(&args, Some(dest))
        .await
        .unwrap();
    let seen = seen.await.unwrap();
    assert_eq!(seen[..4], hex!("05 02 00 02"));
    assert_eq!(seen[4..6], [1, 255]);
    assert_eq!(&seen[6..261], &encoded.as_bytes()[..255]);
    assert_eq!(usize::from(seen[261]), encoded.len() - 255);
    assert_eq!(seen[seen.len() - 10..], hex!("05 01 00 01 7f000002 115c"));
}

#[tokio::test]
async fn s3_2_socks5_without_args_and_refusal_text() {
    let (addr, seen) = fake_socks(vec![
        (3, hex!("05 00").to_vec()),
        (10, hex!("05 05 00 01 00000000 0000").to_vec()),
    ])
    .await;
    let dest = Target::parse("127.0.0.2:4444").unwrap();
    let err = connector(addr, MethodProtocol::Socks5)
        .connect(&Args::new(), Some(dest))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("connection refused"), "{err}");
    assert!(matches!(&err, TransportError::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused));
    assert_eq!(
        seen.await.unwrap(),
        hex!("05 01 00 05 01 00 01 7f000002 115c")
    );
}

#[tokio::test]
async fn s3_3_socks4_whole_args_in_userid() {
    let args = Args::new()
        .with("k1", "v;1")
        .with("k2", "back\\slash")
        .with("k3", "x=y")
        .with("cert", "A".repeat(260));
    let encoded = args.encode_client();
    let (addr, seen) = fake_socks(vec![(
        8 + encoded.len() + 1,
        hex!("00 5a 0000 00000000").to_vec(),
    )])
    .await;
    let dest = Target::parse("127.0.0.2:4444").unwrap();
    connector(addr, MethodProtocol::Socks4)
        .connect(&args, Some(dest))
        .await
        .unwrap();
    let seen = seen.await.unwrap();
    assert_eq!(seen[..8], hex!("04 01 115c 7f000002"));
    assert_eq!(&seen[8..seen.len() - 1], encoded.as_bytes());
    assert!(encoded.starts_with("k1=v\\;1;k2=back\\\\slash;k3=x=y;cert=AAA"));
}

#[tokio::test]
async fn connector_requires_destination_and_bounded_handshake() {
    let (addr, _seen) = fake_socks(vec![(3, Vec::new()), (1, Vec::new())]).await;
    let c = connector(addr, MethodProtocol::Socks5);
    assert!(matches!(
        c.connect(&Args::new(), None).await,
        Err(TransportError::BadSettings(_))
    ));
    let c = c.with_handshake_timeout(Duration::from_millis(200));
    let err = c
        .connect(&Args::new(), Some(Target::parse("127.0.0.1:1").unwrap()))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, TransportError::Io(e) if e.kind() == io::ErrorKind::TimedOut),
        "{err}"
    );
    let server = PtMethod {
        name: "s".into(),
        protocol: MethodProtocol::Server,
        addr,
        args: Args::new(),
    };
    assert!(PtConnector::for_method(&server).is_none());
}
