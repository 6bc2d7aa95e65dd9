//! Vectors and unit tests for the broker's sans-IO cores and the rendezvous (spec §3).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Written the way code outside the crate must (the settings are #[non_exhaustive]).
#![allow(clippy::field_reassign_with_default)]

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;

use super::amp::{armor_decode, armor_encode, decode_path, encode_path};
use super::bridges::BridgeList;
use super::geoip::GeoIp;
use super::matching::Pools;
use super::messages::*;
use super::metrics::{ClientOutcomeLabel, MetricsState, bin_count, format_utc};
use super::pattern::{RelayPattern, RelayPolicy};
use super::rendezvous::{Broker, BrokerLimits, BrokerSettings, ClientOutcome, ProxyOutcome};
use super::{MessageError, fuzz_messages};

const FP: &str = "2B280B23E1107BB62ABFC40DDCC8824814F80A72";
const OFFER: &str = "{\"type\":\"offer\",\"sdp\":\"v=0\\r\\no=- 1 2 IN IP4 0.0.0.0\\r\\na=end-of-candidates\\r\\n\"}";

// ---- §3.1 client poll -------------------------------------------------------------------

#[test]
fn spec_3_1_client_poll_v1() {
    let body = format!(
        "1.0\n{{\"offer\":{},\"nat\":\"unknown\",\"fingerprint\":\"{FP}\"}}",
        serde_json::to_string(OFFER).unwrap()
    );
    let p = decode_client_poll(body.as_bytes(), None).unwrap();
    assert_eq!(p.form, ClientForm::V1);
    assert_eq!(p.offer, OFFER, "SDP passes through verbatim");
    assert_eq!(p.nat, Nat::Unknown);
    assert_eq!(p.fingerprint.to_hex(), FP);
    // The encoder produces what the decoder reads.
    let again = encode_client_poll(OFFER, Nat::Restricted, FP);
    let q = decode_client_poll(&again, None).unwrap();
    assert_eq!((q.offer.as_str(), q.nat), (OFFER, Nat::Restricted));
}

#[test]
fn spec_3_1_client_poll_defaults_and_errors() {
    let ok = |b: &str| decode_client_poll(b.as_bytes(), None);
    let err = |b: &str| ok(b).unwrap_err().to_string();
    // Empty nat and fingerprint mean unknown and the default bridge.
    let p = ok("1.0\n{\"offer\":\"o\",\"nat\":\"\",\"fingerprint\":\"\"}").unwrap();
    assert_eq!((p.nat, p.fingerprint.to_hex().as_str()), (Nat::Unknown, FP));
    let p = ok("1.0\n{\"offer\":\"o\"}").unwrap();
    assert_eq!(p.fingerprint, Fingerprint::default_bridge());
    // Go matches field names case-insensitively; null leaves a string empty.
    let p = ok("1.0\n{\"Offer\":\"o\",\"NAT\":\"unrestricted\",\"fingerprint\":null}").unwrap();
    assert_eq!((p.offer.as_str(), p.nat), ("o", Nat::Unrestricted));
    // A 32-byte (ed25519) fingerprint, lower case.
    let fp64 = "ab".repeat(32);
    let p = ok(&format!(
        "1.0\n{{\"offer\":\"o\",\"fingerprint\":\"{fp64}\"}}"
    ))
    .unwrap();
    assert_eq!(p.fingerprint.as_bytes(), [0xab; 32]);
    // Error texts are the Go broker's.
    assert_eq!(err("no version line"), "unsupported message version");
    assert_eq!(err("2.0\n{\"offer\":\"o\"}"), "unsupported message version");
    assert_eq!(
        err("1.0 \n{\"offer\":\"o\"}"),
        "unsupported message version"
    );
    assert_eq!(err("1.0\n{\"offer\":\"\"}"), "no supplied offer");
    assert_eq!(err("1.0\n{}"), "no supplied offer");
    assert_eq!(
        err("1.0\n{\"offer\":\"o\",\"fingerprint\":\"zz\"}"),
        "cannot decode fingerprint"
    );
    assert_eq!(
        err(&format!(
            "1.0\n{{\"offer\":\"o\",\"fingerprint\":\"{}\"}}",
            &FP[..38]
        )),
        "cannot decode fingerprint"
    );
    assert_eq!(
        err("1.0\n{\"offer\":\"o\",\"nat\":\"open\"}"),
        "invalid NAT type"
    );
    assert!(matches!(ok("1.0\n{\"offer\":"), Err(MessageError::Json(_))));
    assert!(matches!(ok("1.0\n[1]"), Err(MessageError::Json(_))));
    assert!(matches!(
        ok("1.0\n{\"offer\":7}"),
        Err(MessageError::Json(_))
    ));
    assert_eq!(MessageError::UnsupportedVersion.kind(), "unsupported");
    assert_eq!(MessageError::NoOffer.kind(), "malformed");
}

#[test]
fn spec_3_1_legacy_raw_offer() {
    let p = decode_client_poll(OFFER.as_bytes(), Some("restricted")).unwrap();
    assert_eq!(p.form, ClientForm::Legacy);
    assert_eq!(p.offer, OFFER);
    assert_eq!(p.nat, Nat::Restricted);
    assert_eq!(p.fingerprint, Fingerprint::default_bridge());
    let p = decode_client_poll(OFFER.as_bytes(), None).unwrap();
    assert_eq!(p.nat, Nat::Unknown);
    assert_eq!(
        decode_client_poll(OFFER.as_bytes(), Some("bogus")),
        Err(MessageError::BadNat)
    );
}

#[test]
fn spec_3_1_client_responses() {
    assert_eq!(
        encode_client_response(&ClientResponse::Answer("{\"type\":\"answer\"}".into())),
        br#"{"answer":"{\"type\":\"answer\"}"}"#
    );
    assert_eq!(
        encode_client_response(&ClientResponse::Error(ERR_NO_PROXIES.into())),
        br#"{"error":"no snowflake proxies currently available"}"#
    );
    assert_eq!(
        encode_client_response(&ClientResponse::Error(ERR_TIMED_OUT.into())),
        br#"{"error":"timed out waiting for answer!"}"#
    );
    assert!(
        decode_client_response(b"{}").is_err(),
        "both fields empty is an error"
    );
    assert_eq!(
        decode_client_response(br#"{"answer":"a"}"#).unwrap(),
        ClientResponse::Answer("a".into())
    );
}

// ---- §3.2 proxy poll ---------------------------------------------------------------------

#[test]
fn spec_3_2_proxy_poll() {
    let body = br#"{"Sid":"neTrgpTxJIEuozW2KrC0XQ","Version":"1.3","Type":"standalone","NAT":"unknown","Clients":0,"AcceptedRelayPattern":"127.0.0.1$"}"#;
    let p = decode_proxy_poll(body).unwrap();
    assert_eq!(
        p,
        ProxyPoll {
            sid: "neTrgpTxJIEuozW2KrC0XQ".into(),
            proxy_type: "standalone",
            nat: Nat::Unknown,
            clients: 0,
            accepted_relay_pattern: Some("127.0.0.1$".into()),
        }
    );
    assert_eq!(
        decode_proxy_poll(&encode_proxy_poll(
            &p.sid,
            "standalone",
            Nat::Unknown,
            0,
            Some("127.0.0.1$")
        ))
        .unwrap(),
        p
    );
    // Legacy proxy: no pattern; an empty pattern is still a pattern.
    let legacy = decode_proxy_poll(
        br#"{"Sid":"s","Version":"1.2","Type":"webext","NAT":"restricted","Clients":16}"#,
    )
    .unwrap();
    assert_eq!(legacy.accepted_relay_pattern, None);
    assert_eq!(
        (legacy.proxy_type, legacy.nat, legacy.clients),
        ("webext", Nat::Restricted, 16)
    );
    let empty =
        decode_proxy_poll(br#"{"Sid":"s","Version":"1","AcceptedRelayPattern":""}"#).unwrap();
    assert_eq!(empty.accepted_relay_pattern.as_deref(), Some(""));
    // Unknown types are counted as unknown, not rejected; odd NAT words are unknown.
    let odd = decode_proxy_poll(
        br#"{"sid":"s","version":"1.0","type":"my-app","nat":"open","clients":-3}"#,
    )
    .unwrap();
    assert_eq!(
        (odd.proxy_type, odd.nat, odd.clients),
        ("unknown", Nat::Unknown, 0)
    );
    // Rejections (HTTP 400).
    let e = |b: &[u8]| decode_proxy_poll(b).unwrap_err();
    assert_eq!(
        e(br#"{"Sid":"s","Version":"2.0"}"#),
        MessageError::UnknownVersion
    );
    assert_eq!(e(br#"{"Sid":"s"}"#), MessageError::UnknownVersion);
    assert_eq!(e(br#"{"Sid":"","Version":"1.3"}"#), MessageError::NoSid);
    assert!(matches!(
        e(br#"{"Sid":"s","Version":"1.3","Clients":"3"}"#),
        MessageError::Json(_)
    ));
    assert!(matches!(
        e(br#"{"Sid":"s","Version":"1.3","Clients":1.5}"#),
        MessageError::Json(_)
    ));
    assert!(matches!(
        e(br#"{"Sid":"s","Version":"1.3","AcceptedRelayPattern":5}"#),
        MessageError::Json(_)
    ));
    assert!(matches!(e(b"nope"), MessageError::Json(_)));
}

#[test]
fn spec_3_2_proxy_responses_exact_bytes() {
    assert_eq!(
        encode_proxy_response(&ProxyResponse::NoMatch),
        br#"{"Status":"no match"}"#
    );
    assert_eq!(
        encode_proxy_response(&ProxyResponse::IncorrectRelayPattern),
        br#"{"Status":"incorrect relay pattern"}"#
    );
    let m = ProxyResponse::Match {
        offer: OFFER.into(),
        nat: Nat::Unknown,
        relay_url: "wss://snowflake.torproject.net/".into(),
    };
    let bytes = encode_proxy_response(&m);
    let expected = format!(
        "{{\"Status\":\"client match\",\"Offer\":{},\"NAT\":\"unknown\",\"RelayURL\":\"wss://snowflake.torproject.net/\"}}",
        serde_json::to_string(OFFER).unwrap()
    );
    assert_eq!(String::from_utf8(bytes.clone()).unwrap(), expected);
    assert_eq!(
        decode_proxy_response(&bytes).unwrap(),
        m,
        "the offer survives verbatim"
    );
    // What the 2.5.1 proxy treats as errors.
    assert!(decode_proxy_response(br#"{"Status":"client match","Offer":""}"#).is_err());
    assert!(decode_proxy_response(br#"{"Status":"weird"}"#).is_err());
}

// ---- §3.3 answer -------------------------------------------------------------------------

#[test]
fn spec_3_3_answer() {
    let a = decode_proxy_answer(
        br#"{"Version":"1.3","Sid":"abc","Answer":"{\"type\":\"answer\",\"sdp\":\"v=0\\r\\n\"}"}"#,
    )
    .unwrap();
    assert_eq!(a.sid, "abc");
    assert_eq!(a.answer, "{\"type\":\"answer\",\"sdp\":\"v=0\\r\\n\"}");
    assert_eq!(
        decode_proxy_answer(&encode_proxy_answer("abc", &a.answer)).unwrap(),
        a
    );
    let e = |b: &[u8]| decode_proxy_answer(b).unwrap_err();
    assert_eq!(
        e(br#"{"Version":"1.3","Sid":"","Answer":"x"}"#),
        MessageError::NoSidOrAnswer
    );
    assert_eq!(
        e(br#"{"Version":"1.3","Sid":"s","Answer":""}"#),
        MessageError::NoSidOrAnswer
    );
    assert_eq!(
        e(br#"{"Version":"0.9","Sid":"s","Answer":"x"}"#),
        MessageError::UnknownVersion
    );
    assert_eq!(encode_answer_response(true), br#"{"Status":"success"}"#);
    assert_eq!(
        encode_answer_response(false),
        br#"{"Status":"client gone"}"#
    );
}

// ---- §3.5 relay patterns -----------------------------------------------------------------

#[test]
fn spec_3_5_relay_pattern_superset() {
    // (proxy pattern, broker pattern, accepted)
    let cases = [
        (
            "snowflake.torproject.net$",
            "snowflake.torproject.net$",
            true,
        ),
        ("torproject.net$", "snowflake.torproject.net$", true),
        ("net$", "snowflake.torproject.net$", true),
        ("$", "snowflake.torproject.net$", true),
        ("", "snowflake.torproject.net$", true),
        ("snowflake.torproject.net$", "torproject.net$", false),
        ("other.net$", "snowflake.torproject.net$", false),
        (
            "^snowflake.torproject.net$",
            "snowflake.torproject.net$",
            false,
        ),
        (
            "^snowflake.torproject.net$",
            "^snowflake.torproject.net$",
            true,
        ),
        (
            "snowflake.torproject.net$",
            "^snowflake.torproject.net$",
            true,
        ),
        ("torproject.net$", "^snowflake.torproject.net$", true),
        ("^torproject.net$", "^snowflake.torproject.net$", false),
        ("127.0.0.1$", "127.0.0.1$", true),
        ("localhost$", "127.0.0.1$", false),
        // No broker pattern: every non-empty proxy pattern is rejected (Go behaviour).
        ("snowflake.torproject.net$", "", false),
        ("127.0.0.1$", "", false),
        ("$", "", true),
    ];
    for (proxy, broker, accepted) in cases {
        assert_eq!(
            RelayPattern::new(proxy).is_superset_of(&RelayPattern::new(broker)),
            accepted,
            "proxy {proxy:?} vs broker {broker:?}"
        );
        assert_eq!(RelayPolicy::new(broker, "").accepts(Some(proxy)), accepted);
    }
    // Legacy proxies are judged by the default pattern.
    assert!(
        RelayPolicy::new("snowflake.torproject.net$", "snowflake.torproject.net$").accepts(None)
    );
    // An empty default pattern (the default) covers every host, so legacy proxies pass.
    assert!(RelayPolicy::new("snowflake.torproject.net$", "").accepts(None));
    assert!(!RelayPolicy::new("snowflake.torproject.net$", "^other$").accepts(None));
    assert!(RelayPattern::new("torproject.net$").matches("snowflake.torproject.net"));
    assert!(!RelayPattern::new("^torproject.net$").matches("snowflake.torproject.net"));
}

// ---- §3.5 bridge list --------------------------------------------------------------------

#[test]
fn spec_3_5_bridge_list() {
    let fp32 = "0123456789abcdef".repeat(4);
    let file = format!(
        "{{\"displayName\":\"lab\",\"webSocketAddress\":\"ws://127.0.0.1:8000/\",\"fingerprint\":\"{}\"}}\r\n\n\
         {{\"displayName\":\"ed\", \"webSocketAddress\":\"wss://relay.example/\", \"fingerprint\":\"{fp32}\"}}\n",
        "AB".repeat(20)
    );
    let list = BridgeList::parse(file.as_bytes()).unwrap();
    assert_eq!(list.len(), 2);
    let lab = list
        .get(&Fingerprint::from_hex(&"ab".repeat(20)).unwrap())
        .unwrap();
    assert_eq!(lab.websocket_address, "ws://127.0.0.1:8000/");
    assert_eq!(lab.display_name, "lab");
    assert_eq!(
        list.get(&Fingerprint::from_hex(&fp32).unwrap())
            .unwrap()
            .websocket_address,
        "wss://relay.example/"
    );
    // Loading a list replaces the default entry.
    assert!(list.get(&Fingerprint::default_bridge()).is_none());
    let default = BridgeList::default();
    assert_eq!(
        default
            .get(&Fingerprint::default_bridge())
            .unwrap()
            .websocket_address,
        "wss://snowflake.torproject.net/"
    );
    // Any bad line rejects the whole file, naming the line.
    let good = format!(
        "{{\"displayName\":\"a\",\"webSocketAddress\":\"wss://a/\",\"fingerprint\":\"{FP}\"}}\n"
    );
    for (bad, why) in [
        (
            format!(
                "{{\"displayName\":\"a\",\"webSocketAddress\":\"wss://a/\",\"fingerprint\":\"{FP}\",\"extra\":1}}"
            ),
            "unknown key",
        ),
        (
            format!(
                "{{\"name\":\"a\",\"webSocketAddress\":\"wss://a/\",\"fingerprint\":\"{FP}\"}}"
            ),
            "unknown key",
        ),
        (
            "{\"displayName\":\"a\",\"webSocketAddress\":\"wss://a/\",\"fingerprint\":\"1234\"}"
                .into(),
            "fingerprint",
        ),
        (
            "{\"displayName\":\"a\",\"webSocketAddress\":\"wss://a/\"}".into(),
            "fingerprint",
        ),
        (
            format!(
                "{{\"displayName\":1,\"webSocketAddress\":\"wss://a/\",\"fingerprint\":\"{FP}\"}}"
            ),
            "not a string",
        ),
        ("[1,2]".into(), "not a JSON object"),
        ("{".into(), "EOF"),
    ] {
        let e = BridgeList::parse(format!("{good}{bad}\n").as_bytes()).unwrap_err();
        assert_eq!(e.line, 2, "{bad}");
        assert!(e.detail.contains(why), "{bad}: {}", e.detail);
    }
    // Go matches keys case-insensitively.
    assert!(BridgeList::parse(format!("{{\"DisplayName\":\"a\",\"WebSocketAddress\":\"wss://a/\",\"Fingerprint\":\"{FP}\"}}").as_bytes()).is_ok());
}

// ---- AMP ---------------------------------------------------------------------------------

#[test]
fn amp_path_vectors() {
    let message = encode_client_poll("o", Nat::Unknown, FP);
    let path = encode_path(&message, &[0u8; 9]);
    assert!(path.starts_with("0AAAAAAAAAAAA/"));
    assert_eq!(decode_path(&path).unwrap(), message);
    // Padding segments before the last slash are ignored.
    assert_eq!(decode_path("0x/y/z/aGVsbG8").unwrap(), b"hello");
    assert_eq!(decode_path("0/aGVsbG8").unwrap(), b"hello");
    for bad in ["", "1abc/aGVsbG8", "0noslash", "0x/aGVsbG8=", "0x/!!!"] {
        assert_eq!(decode_path(bad), Err(MessageError::BadAmpPath), "{bad:?}");
    }
}

#[test]
fn amp_armor_round_trip_and_shape() {
    for len in [
        0usize, 1, 2, 3, 23, 24, 25, 100, 1000, 24_575, 24_576, 100_000,
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let armored = armor_encode(&data);
        assert!(armored.starts_with("<!doctype html>\n<html amp>\n"));
        assert!(armored.ends_with("</body>\n</html>"));
        for line in armored
            .lines()
            .filter(|l| !l.starts_with('<') && !l.contains('{'))
        {
            assert!(line.len() <= 32, "chunk {line:?}");
        }
        for element in armored.split("<pre>").skip(1) {
            let text = element.split("</pre>").next().unwrap();
            assert!(text.len() < 32 * 1024, "element under the AMP size limit");
        }
        assert_eq!(armor_decode(armored.as_bytes()).unwrap(), data, "len {len}");
    }
    assert_eq!(
        armor_encode(b"hi"),
        format!(
            "{}<pre>\n0aGk=\n</pre>\n</body>\n</html>",
            armor_encode(b"").split("<pre>").next().unwrap()
        )
    );
    // Whitespace and attributes do not matter; structure does.
    assert_eq!(
        armor_decode(b"<html><PRE class=x>0a G\n k=</pre></html>").unwrap(),
        b"hi"
    );
    assert_eq!(
        armor_decode(b"<pre>0aG</pre>junk<pre>k=</pre>").unwrap(),
        b"hi"
    );
    for bad in [
        &b"<pre>0aGk="[..],
        b"<pre><pre>0aGk=</pre></pre>",
        b"</pre>",
        b"<pre>1aGk=</pre>",
        b"<pre>0a!k=</pre>",
        b"<pre></pre>",
        b"<pre",
    ] {
        assert!(
            armor_decode(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

proptest! {
    #[test]
    fn amp_armor_round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000)) {
        prop_assert_eq!(armor_decode(armor_encode(&data).as_bytes()).unwrap(), data.clone());
        prop_assert_eq!(decode_path(&encode_path(&data, b"123456789")).unwrap(), data);
    }

    #[test]
    fn fuzz_entry_point_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzz_messages(&data);
    }
}

#[test]
fn fuzz_entry_point_seeds() {
    let seeds: Vec<Vec<u8>> = vec![
        encode_client_poll(OFFER, Nat::Unknown, FP),
        encode_proxy_poll("sid", "standalone", Nat::Restricted, 8, Some("x$")),
        encode_proxy_poll("sid", "x", Nat::Unknown, 0, None),
        encode_proxy_answer("sid", "a"),
        armor_encode(b"{\"answer\":\"x\"}").into_bytes(),
        b"0abc/aGVsbG8".to_vec(),
        b"1,2,US\n3,4,DE".to_vec(),
        Vec::new(),
    ];
    for s in seeds {
        fuzz_messages(&s);
    }
}

// ---- §3.4 matching -----------------------------------------------------------------------

#[test]
fn spec_3_4_nat_rules() {
    // (proxy NAT, client NAT, matched by Go, matched with unknown pairing)
    use Nat::*;
    let cases = [
        (Unrestricted, Unknown, true, true),
        (Unrestricted, Restricted, true, true),
        (Unrestricted, Unrestricted, false, false),
        (Restricted, Unrestricted, true, true),
        (Restricted, Restricted, false, false),
        (Restricted, Unknown, false, false),
        (Unknown, Unrestricted, true, true),
        (Unknown, Restricted, false, false),
        (Unknown, Unknown, false, true),
    ];
    for (proxy, client, go, lab) in cases {
        for (allow, expected) in [(false, go), (true, lab)] {
            let mut pools = Pools::new();
            pools.push(1, proxy, 0, ());
            assert_eq!(
                pools.pop_for(client, allow).is_some(),
                expected,
                "proxy {proxy:?} client {client:?} allow {allow}"
            );
        }
    }
}

#[test]
fn spec_3_4_fewest_clients_first() {
    let mut pools = Pools::new();
    pools.push(1, Nat::Unrestricted, 16, "busy");
    pools.push(2, Nat::Unrestricted, 0, "idle-a");
    pools.push(3, Nat::Unrestricted, 8, "some");
    pools.push(4, Nat::Unrestricted, 0, "idle-b");
    let order: Vec<_> =
        std::iter::from_fn(|| pools.pop_for(Nat::Restricted, false).map(|(_, v)| v)).collect();
    assert_eq!(order, ["idle-a", "idle-b", "some", "busy"]);
    // Unrestricted clients draw from restricted and unknown proxies together.
    pools.push(5, Nat::Restricted, 8, "r8");
    pools.push(6, Nat::Unknown, 0, "u0");
    assert_eq!(pools.pop_for(Nat::Unrestricted, false).unwrap().1, "u0");
    assert_eq!(pools.remove(5), Some("r8"));
    assert!(pools.is_empty());
    // With unknown pairing, an unrestricted proxy is still preferred.
    pools.push(7, Nat::Unknown, 0, "unknown");
    pools.push(8, Nat::Unrestricted, 24, "unrestricted");
    assert_eq!(pools.pop_for(Nat::Unknown, true).unwrap().1, "unrestricted");
    assert_eq!(pools.pop_for(Nat::Unknown, true).unwrap().1, "unknown");
}

// ---- metrics and geoip -------------------------------------------------------------------

#[test]
fn spec_3_8_metrics_log() {
    assert_eq!(
        [0, 1, 7, 8, 9, 16, 17].map(bin_count),
        [0, 8, 8, 8, 16, 16, 24]
    );
    assert_eq!(format_utc(UNIX_EPOCH), "1970-01-01 00:00:00");
    assert_eq!(
        format_utc(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        "2023-11-14 22:13:20"
    );
    assert_eq!(
        format_utc(UNIX_EPOCH + Duration::from_secs(951_782_400)),
        "2000-02-29 00:00:00"
    );
    let mut m = MetricsState::new(10);
    let ip = |s: &str| s.parse().unwrap();
    m.proxy_poll_seen(Nat::Unknown, "standalone", true);
    m.proxy_address(ip("192.0.2.1"), "standalone", Nat::Unknown, Some(*b"DE"));
    m.proxy_address(ip("192.0.2.1"), "standalone", Nat::Unknown, Some(*b"DE"));
    m.proxy_address(
        ip("::ffff:192.0.2.2"),
        "standalone",
        Nat::Restricted,
        Some(*b"US"),
    );
    m.proxy_address(ip("192.0.2.3"), "webext", Nat::Unrestricted, Some(*b"US"));
    m.proxy_idle(Nat::Unknown);
    m.client(Nat::Unknown, ClientOutcomeLabel::Denied);
    m.client(Nat::Unrestricted, ClientOutcomeLabel::Denied);
    m.client(Nat::Unknown, ClientOutcomeLabel::Matched);
    let log = m.render_log(UNIX_EPOCH + Duration::from_secs(1_700_000_000), 86_400);
    let expected = "snowflake-stats-end 2023-11-14 22:13:20 (86400 s)\n\
        snowflake-ips US=2,DE=1\n\
        snowflake-ips-badge 0\nsnowflake-ips-iptproxy 0\nsnowflake-ips-standalone 2\nsnowflake-ips-webext 1\n\
        snowflake-ips-total 3\n\
        snowflake-idle-count 8\n\
        snowflake-proxy-poll-with-relay-url-count 8\n\
        snowflake-proxy-poll-without-relay-url-count 0\n\
        snowflake-proxy-rejected-for-relay-url-count 0\n\
        client-denied-count 8\n\
        client-restricted-denied-count 8\n\
        client-unrestricted-denied-count 8\n\
        client-snowflake-match-count 8\n\
        snowflake-ips-nat-restricted 1\n\
        snowflake-ips-nat-unrestricted 1\n\
        snowflake-ips-nat-unknown 1\n";
    assert_eq!(log, expected);
    // A new interval starts empty; Prometheus counters keep growing, rounded up to 8.
    let next = m.render_log(UNIX_EPOCH, 86_400);
    assert!(next.contains("snowflake-ips \n") && next.contains("client-denied-count 0\n"));
    let prom = m.render_prometheus(&Default::default());
    assert!(
        prom.contains("snowflake_rounded_client_poll_total{nat=\"unknown\",status=\"denied\"} 8\n")
    );
    assert!(
        prom.contains(
            "snowflake_proxy_total{cc=\"US\",nat=\"restricted\",type=\"standalone\"} 1\n"
        )
    );
    assert!(prom.contains("# TYPE snowflake_available_proxies gauge\n"));
}

#[test]
fn metrics_address_tracking_is_bounded() {
    let mut m = MetricsState::new(3);
    for i in 0..10u8 {
        m.proxy_address(
            std::net::IpAddr::from([192, 0, 2, i]),
            "standalone",
            Nat::Unknown,
            None,
        );
    }
    let log = m.render_log(UNIX_EPOCH, 1);
    assert!(log.contains("snowflake-ips-total 3\n"), "{log}");
}

#[test]
fn geoip_lookup() {
    let v4 = b"# comment\n16777216,16777471,AU\n16777472,16778239,CN\n3232235520,3232301055,??\n";
    let v6 = b"2001:db8::,2001:db8::ffff,NL\n2600::,2600:ffff:ffff:ffff:ffff:ffff:ffff:ffff,US\n";
    let g = GeoIp::parse(v4, v6).unwrap();
    let c = |s: &str| g.country(s.parse().unwrap());
    assert_eq!(c("1.0.0.0"), *b"AU");
    assert_eq!(c("1.0.0.255"), *b"AU");
    assert_eq!(c("1.0.1.0"), *b"CN");
    assert_eq!(c("1.0.4.0"), *b"??");
    assert_eq!(c("0.255.255.255"), *b"??");
    assert_eq!(c("::ffff:1.0.0.1"), *b"AU");
    assert_eq!(c("2001:db8::1"), *b"NL");
    assert_eq!(c("2001:db8::1:0"), *b"??");
    assert_eq!(c("2600:1::1"), *b"US");
    assert_eq!(g.len(), (3, 2));
    for (bad, line) in [
        (&b"1,2\n"[..], 1),
        (b"x,2,US\n", 1),
        (b"#\n5,4,US\n", 2),
        (b"1,2,USA\n", 1),
    ] {
        let (is_v6, e) = GeoIp::parse(bad, b"").unwrap_err();
        assert!(!is_v6);
        assert_eq!(e.line, line);
    }
}

#[test]
fn geoip_real_files_when_installed() {
    let (v4, v6) = ("/usr/share/tor/geoip", "/usr/share/tor/geoip6");
    let (Ok(a), Ok(b)) = (std::fs::read(v4), std::fs::read(v6)) else {
        return; // tor-geoipdb not installed
    };
    let g = GeoIp::parse(&a, &b).unwrap();
    let (n4, n6) = g.len();
    assert!(n4 > 100_000 && n6 > 50_000);
    assert_eq!(g.country("127.0.0.1".parse().unwrap()), *b"??");
}

// ---- rendezvous (paused clock) -----------------------------------------------------------

fn broker(allow_unknown: bool, limits: BrokerLimits) -> Arc<Broker> {
    let mut settings = BrokerSettings::default();
    settings.allowed_relay_pattern = "127.0.0.1$".into();
    settings.allow_unknown_nat_pairing = allow_unknown;
    settings.limits = limits;
    Arc::new(Broker::new(settings))
}

fn proxy(sid: &str, nat: Nat) -> ProxyPoll {
    decode_proxy_poll(&encode_proxy_poll(
        sid,
        "standalone",
        nat,
        0,
        Some("127.0.0.1$"),
    ))
    .unwrap()
}

fn client(offer: &str, nat: Nat) -> ClientPoll {
    decode_client_poll(&encode_client_poll(offer, nat, ""), None).unwrap()
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn rendezvous_match_answer_and_cleanup() {
    let b = broker(false, BrokerLimits::default());
    let b2 = b.clone();
    let p = tokio::spawn(async move { b2.proxy_poll(proxy("s1", Nat::Unrestricted), None).await });
    settle().await;
    assert_eq!(b.waiting_proxies(), 1);
    assert!(b.debug_text().starts_with("current snowflakes available: 1\n\tstandalone proxies: 1\n\tunknown proxies: 0\nNAT Types available:"));
    let b3 = b.clone();
    let c = tokio::spawn(async move { b3.client_poll(client(OFFER, Nat::Unknown)).await });
    let ProxyOutcome::Response(ProxyResponse::Match {
        offer,
        nat,
        relay_url,
    }) = p.await.unwrap()
    else {
        panic!("expected a match")
    };
    assert_eq!(
        (offer.as_str(), nat, relay_url.as_str()),
        (OFFER, Nat::Unknown, "wss://snowflake.torproject.net/")
    );
    settle().await;
    assert_eq!(
        (
            b.waiting_proxies(),
            b.waiting_clients(),
            b.pending_answers()
        ),
        (0, 1, 1)
    );
    assert!(b.proxy_answer("s1", "ANSWER".into()));
    assert_eq!(c.await.unwrap(), ClientOutcome::Answer("ANSWER".into()));
    assert!(
        !b.proxy_answer("s1", "again".into()),
        "a second answer finds the client gone"
    );
    assert_eq!(
        (
            b.waiting_proxies(),
            b.waiting_clients(),
            b.pending_answers()
        ),
        (0, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn rendezvous_timeouts() {
    let b = broker(false, BrokerLimits::default());
    // No proxy: denied at once.
    assert_eq!(
        b.client_poll(client("o", Nat::Unknown)).await,
        ClientOutcome::NoProxies
    );
    // A proxy with no client: "no match" after 10 s, and nothing left behind.
    let start = tokio::time::Instant::now();
    assert_eq!(
        b.proxy_poll(proxy("idle", Nat::Unrestricted), None).await,
        ProxyOutcome::Response(ProxyResponse::NoMatch)
    );
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert_eq!(b.waiting_proxies(), 0);
    // A proxy that never answers: the client times out after 10 s; a late answer is refused.
    let b2 = b.clone();
    let p =
        tokio::spawn(async move { b2.proxy_poll(proxy("late", Nat::Unrestricted), None).await });
    settle().await;
    let start = tokio::time::Instant::now();
    assert_eq!(
        b.client_poll(client("o", Nat::Restricted)).await,
        ClientOutcome::TimedOut
    );
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert!(matches!(
        p.await.unwrap(),
        ProxyOutcome::Response(ProxyResponse::Match { .. })
    ));
    assert!(!b.proxy_answer("late", "a".into()));
    assert_eq!(
        (
            b.waiting_proxies(),
            b.waiting_clients(),
            b.pending_answers()
        ),
        (0, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn rendezvous_nat_unknown_pairing_flag() {
    for allow in [false, true] {
        let b = broker(allow, BrokerLimits::default());
        let b2 = b.clone();
        let p = tokio::spawn(async move { b2.proxy_poll(proxy("u", Nat::Unknown), None).await });
        settle().await;
        let got = b.client_poll(client("o", Nat::Unknown));
        if allow {
            let b3 = b.clone();
            let answer = tokio::spawn(async move {
                settle().await;
                b3.proxy_answer("u", "a".into())
            });
            assert_eq!(got.await, ClientOutcome::Answer("a".into()));
            assert!(answer.await.unwrap());
        } else {
            assert_eq!(got.await, ClientOutcome::NoProxies);
        }
        p.abort();
        let _ = p.await;
        assert_eq!(b.waiting_proxies(), 0, "an aborted poll cleans up");
    }
}

#[tokio::test(start_paused = true)]
async fn rendezvous_limits_and_rejections() {
    let mut limits = BrokerLimits::default();
    limits.max_waiting_proxies = 2;
    limits.max_waiting_clients = 1;
    let b = broker(false, limits);
    let mut polls = Vec::new();
    for sid in ["a", "b"] {
        let b2 = b.clone();
        polls.push(tokio::spawn(async move {
            b2.proxy_poll(proxy(sid, Nat::Unrestricted), None).await
        }));
    }
    settle().await;
    assert_eq!(b.waiting_proxies(), 2);
    // A third proxy is turned away at once; a reused session id is refused.
    assert_eq!(
        b.proxy_poll(proxy("c", Nat::Unrestricted), None).await,
        ProxyOutcome::Response(ProxyResponse::NoMatch)
    );
    assert_eq!(
        b.proxy_poll(proxy("a", Nat::Unrestricted), None).await,
        ProxyOutcome::DuplicateSid
    );
    // Narrow relay patterns are refused.
    let narrow = decode_proxy_poll(&encode_proxy_poll(
        "n",
        "standalone",
        Nat::Unknown,
        0,
        Some("^other$"),
    ))
    .unwrap();
    assert_eq!(
        b.proxy_poll(narrow, None).await,
        ProxyOutcome::Response(ProxyResponse::IncorrectRelayPattern)
    );
    // Unknown bridge.
    let mut unknown = client("o", Nat::Unknown);
    unknown.fingerprint = Fingerprint::from_hex(&"00".repeat(20)).unwrap();
    assert_eq!(b.client_poll(unknown).await, ClientOutcome::UnknownBridge);
    // One client may wait; the second is told the broker is overloaded.
    let b2 = b.clone();
    let first = tokio::spawn(async move { b2.client_poll(client("1", Nat::Unknown)).await });
    settle().await;
    assert_eq!(
        b.client_poll(client("2", Nat::Unknown)).await,
        ClientOutcome::Overloaded
    );
    assert_eq!(first.await.unwrap(), ClientOutcome::TimedOut);
    for p in polls {
        let _ = p.await;
    }
    assert_eq!(
        (
            b.waiting_proxies(),
            b.waiting_clients(),
            b.pending_answers()
        ),
        (0, 0, 0)
    );
    let prom = b.prometheus_text();
    assert!(prom.contains("snowflake_rounded_proxy_poll_rejected_relay_url_extension_total{nat=\"unknown\",type=\"standalone\"} 8"));
}
