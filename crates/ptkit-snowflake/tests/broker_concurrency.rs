//! 1,000 proxies polling and 1,000 clients arriving against the real HTTP server: every
//! client gets exactly one response, which is its own proxy's answer or a correct error;
//! no answer reaches the wrong client; nothing is left behind afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use ptkit_core::shutdown::Shutdown;
use ptkit_snowflake::broker::http_client::BrokerConnection;
use ptkit_snowflake::broker::messages::{self, ClientResponse, Nat, ProxyResponse};
use ptkit_snowflake::broker::{BrokerConfig, start};

const PROXIES: usize = 1000;
const CLIENTS: usize = 1000;

fn answer_for(offer: &str) -> String {
    format!("{{\"type\":\"answer\",\"sdp\":\"for {offer}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_thousand_proxies_thousand_clients() {
    let shutdown = Shutdown::new();
    let mut config = BrokerConfig::new("127.0.0.1:0".parse().unwrap());
    config.settings.allowed_relay_pattern = "127.0.0.1$".into();
    config.settings.limits.proxy_timeout = Duration::from_secs(3);
    config.settings.limits.client_timeout = Duration::from_secs(10);
    let running = start(config, &shutdown).await.unwrap();
    let addr = running.local_addr();
    let broker = running.broker.clone();
    let stop = Arc::new(AtomicBool::new(false));

    // Proxies: poll, answer every match with an answer derived from the offer, poll again.
    let mut proxies = Vec::new();
    for p in 0..PROXIES {
        let stop = stop.clone();
        proxies.push(tokio::spawn(async move {
            let mut conn = BrokerConnection::connect(addr).await.unwrap();
            let mut delivered = Vec::new();
            for round in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let sid = format!("p{p}r{round}");
                // Half the proxies unrestricted, half restricted: the NAT rules are exercised.
                let nat = if p % 2 == 0 {
                    Nat::Unrestricted
                } else {
                    Nat::Restricted
                };
                let body = messages::encode_proxy_poll(
                    &sid,
                    "standalone",
                    nat,
                    (p % 3) as u32 * 8,
                    Some("127.0.0.1$"),
                );
                let r = conn.post("/proxy", body).await.unwrap();
                assert_eq!(r.status, StatusCode::OK);
                match messages::decode_proxy_response(&r.body).unwrap() {
                    ProxyResponse::NoMatch => {}
                    ProxyResponse::Match {
                        offer,
                        nat,
                        relay_url,
                    } => {
                        // Unrestricted proxies serve restricted/unknown clients and vice versa.
                        assert_eq!(nat == Nat::Unrestricted, p % 2 == 1, "NAT rule broken");
                        assert!(offer.contains(&format!("nat {}", nat.as_str())));
                        assert_eq!(relay_url, "wss://snowflake.torproject.net/");
                        let r = conn
                            .post(
                                "/answer",
                                messages::encode_proxy_answer(&sid, &answer_for(&offer)),
                            )
                            .await
                            .unwrap();
                        if &r.body[..] == br#"{"Status":"success"}"# {
                            delivered.push(offer);
                        } else {
                            assert_eq!(&r.body[..], br#"{"Status":"client gone"}"#);
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            delivered
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while broker.waiting_proxies() < PROXIES {
        assert!(
            Instant::now() < deadline,
            "only {} proxies waiting",
            broker.waiting_proxies()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Clients: all at once, each with its own offer.
    let started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        clients.push(tokio::spawn(async move {
            let nat = if c % 2 == 0 {
                Nat::Unknown
            } else {
                Nat::Unrestricted
            };
            let offer = format!(
                "{{\"type\":\"offer\",\"sdp\":\"client {c} nat {}\"}}",
                nat.as_str()
            );
            let mut conn = BrokerConnection::connect(addr).await.unwrap();
            let r = conn
                .post("/client", messages::encode_client_poll(&offer, nat, ""))
                .await
                .unwrap();
            assert_eq!(r.status, StatusCode::OK);
            (offer, messages::decode_client_response(&r.body).unwrap())
        }));
    }
    let mut answered = HashSet::new();
    let mut errors = 0;
    for c in clients {
        let (offer, response) = c.await.unwrap();
        match response {
            ClientResponse::Answer(a) => {
                assert_eq!(a, answer_for(&offer), "an answer reached the wrong client");
                assert!(answered.insert(offer), "two answers for one client");
            }
            ClientResponse::Error(e) => {
                assert!(
                    e == messages::ERR_NO_PROXIES || e == messages::ERR_TIMED_OUT,
                    "unexpected error {e:?}"
                );
                errors += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(
        answered.len() + errors,
        CLIENTS,
        "every client got exactly one response"
    );
    // With 1,000 proxies waiting for 1,000 clients, nearly all must be matched.
    assert!(
        answered.len() >= CLIENTS * 95 / 100,
        "only {} of {CLIENTS} answered",
        answered.len()
    );

    stop.store(true, Ordering::Relaxed);
    let mut delivered = HashSet::new();
    for p in proxies {
        for offer in p.await.unwrap() {
            assert!(delivered.insert(offer), "one offer delivered twice");
        }
    }
    assert_eq!(
        delivered, answered,
        "the proxies' successes are exactly the clients' answers"
    );
    assert_eq!(broker.waiting_proxies(), 0);
    assert_eq!(broker.waiting_clients(), 0);
    assert_eq!(broker.pending_answers(), 0);
    eprintln!(
        "{} of {CLIENTS} clients answered, {errors} errors, in {elapsed:?}",
        answered.len()
    );
    shutdown.abort();
    assert!(
        shutdown.drained(Duration::from_secs(5)).await,
        "server tasks ended"
    );
}
