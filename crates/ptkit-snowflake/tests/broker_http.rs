//! The broker over real HTTP: every endpoint's status codes, error texts, CORS and bodies
//! (spec §3), the bridge list reload, and the AMP endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, StatusCode};
use ptkit_core::shutdown::Shutdown;
use ptkit_snowflake::broker::amp;
use ptkit_snowflake::broker::http_client::{BrokerConnection, BrokerReply, request};
use ptkit_snowflake::broker::messages::{self, Nat};
use ptkit_snowflake::broker::{BrokerConfig, MetricsLog, RunningBroker, start};

const FP: &str = "2B280B23E1107BB62ABFC40DDCC8824814F80A72";
const LAB_FP: &str = "ABCDEF0123456789ABCDEF0123456789ABCDEF01";

async fn broker(tweak: impl FnOnce(&mut BrokerConfig)) -> (RunningBroker, Shutdown) {
    let shutdown = Shutdown::new();
    let mut config = BrokerConfig::new("127.0.0.1:0".parse().unwrap());
    config.settings.allowed_relay_pattern = "127.0.0.1$".into();
    config.settings.limits.client_timeout = Duration::from_millis(500);
    config.settings.limits.proxy_timeout = Duration::from_secs(5);
    tweak(&mut config);
    let running = start(config, &shutdown).await.unwrap();
    (running, shutdown)
}

async fn post(addr: SocketAddr, path: &str, body: impl Into<bytes::Bytes>) -> BrokerReply {
    request(addr, Method::POST, path, &[], body).await.unwrap()
}

fn assert_cors(r: &BrokerReply) {
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    assert_eq!(
        r.headers["access-control-allow-headers"],
        "Origin, X-Session-ID"
    );
}

/// Starts a proxy poll in the background and waits until the broker holds it.
async fn waiting_proxy(
    b: &RunningBroker,
    sid: &str,
    nat: Nat,
) -> tokio::task::JoinHandle<BrokerReply> {
    let before = b.broker.waiting_proxies();
    let addr = b.local_addr();
    let body = messages::encode_proxy_poll(sid, "standalone", nat, 0, Some("127.0.0.1$"));
    let h = tokio::spawn(async move { post(addr, "/proxy", body).await });
    while b.broker.waiting_proxies() == before {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h
}

#[tokio::test]
async fn broker_spec_3_cors_options_robots_and_not_found() {
    let (b, _sd) = broker(|_| {}).await;
    let addr = b.local_addr();
    for path in [
        "/proxy",
        "/client",
        "/answer",
        "/debug",
        "/metrics",
        "/amp/client/0x/abc",
    ] {
        let r = request(addr, Method::OPTIONS, path, &[], "").await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(r.body.is_empty(), "{path}");
        assert_cors(&r);
    }
    let r = request(addr, Method::GET, "/robots.txt", &[], "")
        .await
        .unwrap();
    assert_eq!(
        (r.status, &r.body[..]),
        (StatusCode::OK, &b"User-agent: *\nDisallow: /\n"[..])
    );
    assert!(!r.headers.contains_key("access-control-allow-origin"));
    let r = request(addr, Method::GET, "/nope", &[], "").await.unwrap();
    assert_eq!(
        (r.status, &r.body[..]),
        (StatusCode::NOT_FOUND, &b"404 page not found\n"[..])
    );
    // No metrics log configured: 404, with CORS.
    let r = request(addr, Method::GET, "/metrics", &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_cors(&r);
    let r = request(addr, Method::GET, "/debug", &[], "").await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.starts_with(b"current snowflakes available: 0\n"));
    let r = request(addr, Method::GET, "/prometheus", &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        std::str::from_utf8(&r.body)
            .unwrap()
            .contains("# TYPE snowflake_available_proxies gauge")
    );
}

#[tokio::test]
async fn broker_spec_3_1_client_responses_over_http() {
    let (b, _sd) = broker(|_| {}).await;
    let addr = b.local_addr();
    // No proxy: 200 with the Go error text.
    let r = post(
        addr,
        "/client",
        messages::encode_client_poll("o", Nat::Unknown, FP),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        &r.body[..],
        br#"{"error":"no snowflake proxies currently available"}"#
    );
    assert_cors(&r);
    // Decode errors: 200 with the error text.
    for (body, text) in [
        (&b"hello"[..], "unsupported message version"),
        (b"1.0\n{\"offer\":\"\"}", "no supplied offer"),
        (b"1.0\n{\"offer\":\"o\",\"nat\":\"x\"}", "invalid NAT type"),
        (
            b"1.0\n{\"offer\":\"o\",\"fingerprint\":\"12\"}",
            "cannot decode fingerprint",
        ),
    ] {
        let r = post(addr, "/client", body.to_vec()).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            messages::decode_client_response(&r.body).unwrap(),
            messages::ClientResponse::Error(text.into())
        );
    }
    // Unknown bridge: HTTP 500 (Go quirk).
    let r = post(
        addr,
        "/client",
        messages::encode_client_poll("o", Nat::Unknown, LAB_FP),
    )
    .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    // Body over 100 000 bytes: 400.
    let mut big = b"1.0\n{\"offer\":\"".to_vec();
    big.resize(100_001, b'a');
    assert_eq!(
        post(addr, "/client", big).await.status,
        StatusCode::BAD_REQUEST
    );
    // Matched, answered: the answer verbatim.
    let p = waiting_proxy(&b, "sid-1", Nat::Unrestricted).await;
    let offer = "{\"type\":\"offer\",\"sdp\":\"v=0\\r\\na=end-of-candidates\\r\\n\"}";
    let c = tokio::spawn(async move {
        post(
            addr,
            "/client",
            messages::encode_client_poll(offer, Nat::Restricted, ""),
        )
        .await
    });
    let pr = p.await.unwrap();
    assert_eq!(pr.status, StatusCode::OK);
    let messages::ProxyResponse::Match {
        offer: got,
        nat,
        relay_url,
    } = messages::decode_proxy_response(&pr.body).unwrap()
    else {
        panic!("no match: {:?}", pr.body)
    };
    assert_eq!(
        (got.as_str(), nat, relay_url.as_str()),
        (offer, Nat::Restricted, "wss://snowflake.torproject.net/")
    );
    let answer = "{\"type\":\"answer\",\"sdp\":\"v=0\\r\\n\"}";
    let r = post(
        addr,
        "/answer",
        messages::encode_proxy_answer("sid-1", answer),
    )
    .await;
    assert_eq!(&r.body[..], br#"{"Status":"success"}"#);
    let r = c.await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        messages::decode_client_response(&r.body).unwrap(),
        messages::ClientResponse::Answer(answer.into())
    );
    // Matched, never answered: the timeout text; the late answer finds the client gone.
    let p = waiting_proxy(&b, "sid-2", Nat::Unrestricted).await;
    let r = post(
        addr,
        "/client",
        messages::encode_client_poll("o", Nat::Unknown, ""),
    )
    .await;
    assert_eq!(&r.body[..], br#"{"error":"timed out waiting for answer!"}"#);
    let _ = p.await;
    let r = post(
        addr,
        "/answer",
        messages::encode_proxy_answer("sid-2", "late"),
    )
    .await;
    assert_eq!(
        (r.status, &r.body[..]),
        (StatusCode::OK, &br#"{"Status":"client gone"}"#[..])
    );
}

#[tokio::test]
async fn broker_spec_3_1_legacy_client_status_codes() {
    let (b, _sd) = broker(|_| {}).await;
    let addr = b.local_addr();
    let offer = "{\"type\":\"offer\",\"sdp\":\"v=0\"}";
    let legacy = |nat: &'static str| async move {
        request(
            addr,
            Method::POST,
            "/client",
            &[("Snowflake-NAT-Type", nat)],
            offer,
        )
        .await
        .unwrap()
    };
    assert_eq!(
        legacy("unknown").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(legacy("sideways").await.status, StatusCode::BAD_REQUEST);
    let p = waiting_proxy(&b, "legacy-1", Nat::Unrestricted).await;
    let r = legacy("restricted").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    let _ = p.await;
    let p = waiting_proxy(&b, "legacy-2", Nat::Unrestricted).await;
    let c = tokio::spawn(legacy("unknown"));
    let pr = p.await.unwrap();
    assert!(pr.body.starts_with(br#"{"Status":"client match""#));
    post(
        addr,
        "/answer",
        messages::encode_proxy_answer("legacy-2", "RAW-ANSWER"),
    )
    .await;
    let r = c.await.unwrap();
    assert_eq!(
        (r.status, &r.body[..]),
        (StatusCode::OK, &b"RAW-ANSWER"[..])
    );
}

#[tokio::test]
async fn broker_spec_3_2_proxy_and_answer_errors_over_http() {
    let (b, _sd) = broker(|c| c.settings.limits.proxy_timeout = Duration::from_millis(200)).await;
    let addr = b.local_addr();
    for bad in [
        &b"not json"[..],
        b"{\"Sid\":\"s\",\"Version\":\"2.0\"}",
        b"{\"Version\":\"1.3\"}",
        b"",
    ] {
        let r = post(addr, "/proxy", bad.to_vec()).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
        assert!(r.body.is_empty());
        assert_cors(&r);
    }
    let r = post(addr, "/proxy", vec![b' '; 100_001]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // A narrower pattern than the broker's.
    let r = post(
        addr,
        "/proxy",
        messages::encode_proxy_poll("n", "standalone", Nat::Unknown, 0, Some("example.org$")),
    )
    .await;
    assert_eq!(
        (r.status, &r.body[..]),
        (
            StatusCode::OK,
            &br#"{"Status":"incorrect relay pattern"}"#[..]
        )
    );
    // Nobody comes: no match after the poll time.
    let r = post(
        addr,
        "/proxy",
        messages::encode_proxy_poll("idle", "standalone", Nat::Unknown, 0, Some("127.0.0.1$")),
    )
    .await;
    assert_eq!(
        (r.status, &r.body[..]),
        (StatusCode::OK, &br#"{"Status":"no match"}"#[..])
    );
    for bad in [
        &b"{}"[..],
        b"{\"Version\":\"1.3\",\"Sid\":\"s\"}",
        b"{\"Version\":\"3\",\"Sid\":\"s\",\"Answer\":\"a\"}",
        b"[]",
    ] {
        let r = post(addr, "/answer", bad.to_vec()).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let r = post(
        addr,
        "/answer",
        messages::encode_proxy_answer("nobody", "a"),
    )
    .await;
    assert_eq!(&r.body[..], br#"{"Status":"client gone"}"#);
}

#[tokio::test]
async fn broker_amp_client_endpoint() {
    let (b, _sd) = broker(|c| c.settings.allow_unknown_nat_pairing = true).await;
    let addr = b.local_addr();
    let get =
        |path: String| async move { request(addr, Method::GET, &path, &[], "").await.unwrap() };
    let path = amp::encode_path(
        &messages::encode_client_poll("o", Nat::Unknown, FP),
        b"123456789",
    );
    let r = get(format!("/amp/client/{path}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "text/html");
    assert_eq!(r.headers["cache-control"], "max-age=15");
    assert_cors(&r);
    let inner = amp::armor_decode(&r.body).unwrap();
    assert_eq!(
        &inner[..],
        br#"{"error":"no snowflake proxies currently available"}"#
    );
    let r = get("/amp/client/1bad/xyz".into()).await;
    assert_eq!(
        &amp::armor_decode(&r.body).unwrap()[..],
        br#"{"error":"cannot decode URL path"}"#
    );
    // A match through the AMP endpoint.
    let p = waiting_proxy(&b, "amp-1", Nat::Unknown).await;
    let c = tokio::spawn(get(format!("/amp/client/{path}")));
    let _ = p.await.unwrap();
    post(addr, "/answer", messages::encode_proxy_answer("amp-1", "A")).await;
    let r = c.await.unwrap();
    assert_eq!(
        &amp::armor_decode(&r.body).unwrap()[..],
        br#"{"answer":"A"}"#
    );
}

#[tokio::test]
async fn broker_bridge_list_replaces_default_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("bridges.jsonl");
    let line = |url: &str| {
        format!(
            "{{\"displayName\":\"lab\",\"webSocketAddress\":\"{url}\",\"fingerprint\":\"{LAB_FP}\"}}\n"
        )
    };
    std::fs::write(&list, line("ws://127.0.0.1:8000/")).unwrap();
    let metrics = dir.path().join("metrics.log");
    let (b, _sd) = broker(|c| {
        c.settings.bridge_list_path = Some(list.clone());
        c.metrics_log = MetricsLog::File(metrics.clone());
    })
    .await;
    let addr = b.local_addr();
    // The default bridge is gone: 500, as the Go broker.
    let r = post(
        addr,
        "/client",
        messages::encode_client_poll("o", Nat::Unknown, ""),
    )
    .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    let relay_for = |sid: &'static str| {
        let b = &b;
        async move {
            let p = waiting_proxy(b, sid, Nat::Unrestricted).await;
            let c = tokio::spawn(post(
                addr,
                "/client",
                messages::encode_client_poll("o", Nat::Unknown, LAB_FP),
            ));
            let r = messages::decode_proxy_response(&p.await.unwrap().body).unwrap();
            post(addr, "/answer", messages::encode_proxy_answer(sid, "a")).await;
            c.await.unwrap();
            match r {
                messages::ProxyResponse::Match { relay_url, .. } => relay_url,
                other => panic!("{other:?}"),
            }
        }
    };
    assert_eq!(relay_for("r1").await, "ws://127.0.0.1:8000/");
    std::fs::write(&list, line("ws://127.0.0.1:9000/")).unwrap();
    b.reload().await.unwrap();
    assert_eq!(relay_for("r2").await, "ws://127.0.0.1:9000/");
    // A bad file is refused and the old list stays.
    std::fs::write(&list, format!("{}{{\"bogus\":1}}\n", line("ws://x/"))).unwrap();
    let e = b.reload().await.unwrap_err();
    assert!(e.to_string().contains("line 2"), "{e}");
    assert_eq!(e.kind(), "malformed");
    assert_eq!(relay_for("r3").await, "ws://127.0.0.1:9000/");
    // The metrics log file exists from the start and is served on /metrics.
    std::fs::write(&metrics, b.broker.take_metrics_log()).unwrap();
    let r = request(addr, Method::GET, "/metrics", &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(text.starts_with("snowflake-stats-end "), "{text}");
    assert!(text.contains("client-snowflake-match-count 8\n"), "{text}");
}

#[tokio::test]
async fn broker_start_rejects_a_bad_bridge_list() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("bridges.jsonl");
    std::fs::write(
        &list,
        "{\"displayName\":\"a\",\"webSocketAddress\":\"wss://a/\",\"fingerprint\":\"00\"}\n",
    )
    .unwrap();
    let shutdown = Shutdown::new();
    let mut config = BrokerConfig::new("127.0.0.1:0".parse().unwrap());
    config.settings.bridge_list_path = Some(list);
    let e = start(config, &shutdown).await.unwrap_err();
    assert!(e.to_string().contains("fingerprint"), "{e}");
}

#[tokio::test]
async fn broker_keep_alive_connection_serves_many_requests() {
    let (b, _sd) = broker(|_| {}).await;
    let mut conn = BrokerConnection::connect(b.local_addr()).await.unwrap();
    for _ in 0..20 {
        let r = conn
            .post(
                "/client",
                messages::encode_client_poll("o", Nat::Unknown, ""),
            )
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
    }
}
