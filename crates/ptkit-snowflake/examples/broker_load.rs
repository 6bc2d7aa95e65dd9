//! Broker load benchmark: matches per second and broker RSS with 1,000 polling proxies.
//!
//! The broker runs in a child process (this program re-executed), so its RSS is its own; the
//! parent plays the proxies and clients over HTTP on loopback. Bounded in count and time.
//!
//! ```text
//! cargo run --release -p ptkit-snowflake --example broker_load -- [PROXIES] [SECONDS] [CLIENT_TASKS]
//! ```
//! Defaults: 1000 proxies, 10 seconds of client load, 200 concurrent client tasks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ptkit_core::shutdown::Shutdown;
use ptkit_snowflake::broker::http_client::BrokerConnection;
use ptkit_snowflake::broker::messages::{self, ClientResponse, Nat, ProxyResponse};
use ptkit_snowflake::broker::{BrokerConfig, start};

const CHILD_ENV: &str = "BROKER_LOAD_CHILD";

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A realistic SDP size (the 2.5.1 client's offers are about 1 KiB).
fn sdp(tag: &str) -> String {
    let filler = "a=candidate:1 1 udp 2130706431 10.77.0.1 40000 typ host\\r\\n".repeat(12);
    format!("{{\"type\":\"offer\",\"sdp\":\"v=0\\r\\n{filler}a=tag:{tag}\\r\\n\"}}")
}

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let proxies: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000)
        .min(10_000);
    let seconds: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10)
        .min(120);
    let client_tasks: usize = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200)
        .min(5000);

    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line.trim().parse().unwrap();
    let pid = child.id();
    let rss_idle = rss_kib(pid);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let polls = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for p in 0..proxies {
            let (stop, polls) = (stop.clone(), polls.clone());
            tasks.push(tokio::spawn(async move {
                let mut conn = BrokerConnection::connect(addr).await.unwrap();
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    let sid = format!("p{p}-{round}");
                    let body = messages::encode_proxy_poll(
                        &sid,
                        "standalone",
                        Nat::Unrestricted,
                        0,
                        Some("127.0.0.1$"),
                    );
                    let Ok(r) = conn.post("/proxy", body).await else {
                        break;
                    };
                    polls.fetch_add(1, Ordering::Relaxed);
                    if let Ok(ProxyResponse::Match { offer, .. }) =
                        messages::decode_proxy_response(&r.body)
                    {
                        let answer = offer.replace("\"offer\"", "\"answer\"");
                        let _ = conn
                            .post("/answer", messages::encode_proxy_answer(&sid, &answer))
                            .await;
                    }
                }
            }));
        }
        // Let every proxy settle into its long poll, then measure the broker holding them.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss_polling = rss_kib(pid);

        let matched = Arc::new(AtomicU64::new(0));
        let denied = Arc::new(AtomicU64::new(0));
        let client_stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let mut clients = Vec::new();
        for c in 0..client_tasks {
            let (matched, denied, client_stop) =
                (matched.clone(), denied.clone(), client_stop.clone());
            clients.push(tokio::spawn(async move {
                let mut conn = BrokerConnection::connect(addr).await.unwrap();
                let mut n = 0u64;
                while !client_stop.load(Ordering::Relaxed) {
                    n += 1;
                    let offer = sdp(&format!("{c}-{n}"));
                    let body = messages::encode_client_poll(&offer, Nat::Unknown, "");
                    let Ok(r) = conn.post("/client", body).await else {
                        break;
                    };
                    match messages::decode_client_response(&r.body) {
                        Ok(ClientResponse::Answer(a)) => {
                            assert_eq!(
                                a,
                                offer.replace("\"offer\"", "\"answer\""),
                                "misdelivered answer"
                            );
                            matched.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            denied.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        let mut rss_peak = 0;
        while start.elapsed() < Duration::from_secs(seconds) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            rss_peak = rss_peak.max(rss_kib(pid));
        }
        client_stop.store(true, Ordering::Relaxed);
        for c in clients {
            let _ = c.await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        let m = matched.load(Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.abort();
        }
        println!("proxies polling:            {proxies}");
        println!("client tasks:               {client_tasks}");
        println!("load time:                  {elapsed:.1} s");
        println!("matches (offer→answer):     {m}");
        println!("matches per second:         {:.0}", m as f64 / elapsed);
        println!(
            "clients denied/timed out:   {}",
            denied.load(Ordering::Relaxed)
        );
        println!("broker RSS idle:            {} KiB", rss_idle);
        println!("broker RSS, proxies held:   {} KiB", rss_polling);
        println!("broker RSS peak under load: {} KiB", rss_peak);
    });
    let _ = child.kill();
    let _ = child.wait();
}

fn child() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let shutdown = Shutdown::new();
        let mut config = BrokerConfig::new("127.0.0.1:0".parse().unwrap());
        config.settings.allowed_relay_pattern = "127.0.0.1$".into();
        let running = start(config, &shutdown).await.unwrap();
        println!("{}", running.local_addr());
        // The parent kills us; never outlive it for long.
        tokio::time::sleep(Duration::from_secs(300)).await;
    });
}
