//! Property tests: byte-exact round trips under random fragmentation, at the write level
//! (our client → our server) and at the frame level (hand-made frames → our server).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use proptest::prelude::*;
use ptkit_core::{Args, ClientConfig, ClientTransport, Target};
use ptkit_websocket::WebSocketClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Random write sizes (some over the message limit), both framings, a small limit.
    #[test]
    fn proposal_stream_roundtrip_random_writes(
        data in proptest::collection::vec(any::<u8>(), 0..20_000),
        sizes in proptest::collection::vec(1usize..4000, 1..20),
        base64 in any::<bool>(),
    ) {
        rt().block_on(bounded(async {
            let srv = echo_server(Args::new().with("max-message", "1500")).await;
            let config = ClientConfig {
                options: Args::new().with("max-message", "1500"),
                ..Default::default()
            };
            let c = WebSocketClient::new().connector(&config).unwrap();
            let conn = c
                .connect(
                    &Args::new().with("base64", if base64 { "1" } else { "0" }),
                    Some(Target::from_socket_addr(srv.addr)),
                )
                .await
                .unwrap();
            let (mut r, mut w) = tokio::io::split(conn);
            let want = data.clone();
            let writer = async move {
                let mut off = 0;
                let mut i = 0;
                while off < data.len() {
                    let end = (off + sizes[i % sizes.len()]).min(data.len());
                    w.write_all(&data[off..end]).await.unwrap();
                    if i % 3 == 0 {
                        w.flush().await.unwrap();
                    }
                    off = end;
                    i += 1;
                }
                w.flush().await.unwrap();
                w
            };
            let reader = async move {
                let mut out = vec![0u8; want.len()];
                r.read_exact(&mut out).await.unwrap();
                assert_eq!(out, want);
            };
            let _ = tokio::join!(writer, reader);
        }));
    }

    /// Proposal: a base64 message may be split into frames anywhere (padding only at the
    /// end of the message), with Pings between the fragments; the server decodes the message
    /// and its answer is one base64 text message per echo write.
    #[test]
    fn proposal_base64_random_frame_fragmentation(
        data in proptest::collection::vec(any::<u8>(), 1..1500),
        cuts in proptest::collection::vec(0usize..2000, 0..6),
        pings in proptest::collection::vec(any::<bool>(), 6),
    ) {
        rt().block_on(bounded(async {
            let srv = echo_server(Args::new().with("max-message", "1500")).await;
            let mut c = raw_ws(srv.addr, true).await;
            let text = ptkit_websocket::proto::encode_base64(&data);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|x| x % (text.len() + 1)).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut bounds = vec![0];
            bounds.extend(cuts.into_iter().filter(|&x| x > 0 && x < text.len()));
            bounds.push(text.len());
            let mut wire = Vec::new();
            let n = bounds.len() - 1;
            for i in 0..n {
                let opcode = if i == 0 { 1 } else { 0 };
                wire.extend(masked(i + 1 == n, opcode, &text.as_bytes()[bounds[i]..bounds[i + 1]]));
                if pings[i % pings.len()] && i + 1 < n {
                    wire.extend(masked(true, 9, b"p"));
                }
            }
            c.send(&wire).await;
            let mut got = Vec::new();
            while got.len() < data.len() {
                let f = c.frame().await.unwrap();
                match f.opcode {
                    1 => got.extend(ptkit_websocket::proto::decode_base64(&f.payload, 1500).unwrap()),
                    10 => assert_eq!(f.payload, b"p"),
                    o => panic!("opcode {o}"),
                }
            }
            assert_eq!(got, data);
        }));
    }
}

/// The client's limit caps what one write sends: a 5000-byte write goes out as 1500 + …
#[tokio::test]
async fn proposal_one_write_one_message_within_limit() {
    bounded(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            use futures_util::StreamExt;
            let (tcp, _) = l.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let mut sizes = Vec::new();
            let mut total = 0;
            while total < 5000 {
                let m = ws.next().await.unwrap().unwrap();
                total += m.len();
                sizes.push(m.len());
            }
            sizes
        });
        let config = ClientConfig {
            options: Args::new().with("max-message", "1500"),
            ..Default::default()
        };
        let c = WebSocketClient::new().connector(&config).unwrap();
        let mut conn = c
            .connect(&Args::new(), Some(Target::from_socket_addr(addr)))
            .await
            .unwrap();
        let n = conn.write(&[1u8; 5000]).await.unwrap();
        assert_eq!(n, 1500);
        conn.write_all(&[1u8; 3500]).await.unwrap();
        conn.flush().await.unwrap();
        let sizes = server.await.unwrap();
        assert_eq!(sizes, vec![1500, 1500, 1500, 500]);
    })
    .await;
}
