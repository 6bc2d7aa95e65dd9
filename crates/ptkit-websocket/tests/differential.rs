//! tokio-tungstenite as an independent implementation: client against our server, server
//! against our client, binary and base64.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use ptkit_core::{Args, ClientConfig, ClientTransport};
use ptkit_websocket::WebSocketClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message as TMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

async fn tclient(
    addr: std::net::SocketAddr,
    base64: bool,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("ws://{addr}/").into_client_request().unwrap();
    if base64 {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("base64"));
    }
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    let proto = resp.headers().get("sec-websocket-protocol");
    if base64 {
        assert_eq!(proto.unwrap(), "base64");
    } else {
        assert!(proto.is_none());
    }
    ws
}

/// tungstenite client → our server, binary messages of many sizes up to the limit.
#[tokio::test]
async fn tungstenite_client_binary_against_our_server() {
    bounded(async {
        let srv = echo_server(Args::new()).await;
        let mut ws = tclient(srv.addr, false).await;
        let mut sent = Vec::new();
        for (i, size) in [1usize, 125, 126, 65535, 65536, 3, 40_000]
            .iter()
            .enumerate()
        {
            let data = pattern(*size, i as u64);
            sent.extend_from_slice(&data);
            ws.send(TMessage::Binary(Bytes::from(data))).await.unwrap();
        }
        let mut got = Vec::new();
        while got.len() < sent.len() {
            match ws.next().await.unwrap().unwrap() {
                TMessage::Binary(b) => got.extend_from_slice(&b),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, sent);
        ws.close(None).await.unwrap();
        // The close handshake completes: tungstenite sees the end of the stream.
        let end = tokio::time::timeout(STEP, async {
            while let Some(m) = ws.next().await {
                if m.is_err() {
                    break;
                }
            }
        })
        .await;
        assert!(end.is_ok());
    })
    .await;
}

/// tungstenite client requesting `base64` → our server: text messages both ways, each one
/// standalone base64 of its bytes (proposal, "The base64 subprotocol").
#[tokio::test]
async fn tungstenite_client_base64_subprotocol_against_our_server() {
    bounded(async {
        let srv = echo_server(Args::new()).await;
        let mut ws = tclient(srv.addr, true).await;
        let data = pattern(200_000, 7);
        for chunk in data.chunks(30_001) {
            ws.send(TMessage::text(B64.encode(chunk))).await.unwrap();
        }
        let mut got = Vec::new();
        while got.len() < data.len() {
            match ws.next().await.unwrap().unwrap() {
                TMessage::Text(t) => got.extend(B64.decode(t.as_str()).unwrap()),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, data);
    })
    .await;
}

/// Proposal: each Ping gets exactly one Pong; tungstenite observes it.
#[tokio::test]
async fn tungstenite_ping_gets_one_pong() {
    bounded(async {
        let srv = echo_server(Args::new()).await;
        let mut ws = tclient(srv.addr, false).await;
        ws.send(TMessage::Ping(Bytes::from_static(b"hi")))
            .await
            .unwrap();
        ws.send(TMessage::Binary(Bytes::from_static(b"x")))
            .await
            .unwrap();
        let m = ws.next().await.unwrap().unwrap();
        assert_eq!(m, TMessage::Pong(Bytes::from_static(b"hi")));
        let m = ws.next().await.unwrap().unwrap();
        assert_eq!(m, TMessage::Binary(Bytes::from_static(b"x")));
    })
    .await;
}

/// A tungstenite echo server; `base64` selects the subprotocol when offered. Text messages
/// are echoed as they are (each is standalone base64); it asserts it never gets text on a
/// binary connection.
async fn tserver(
    base64: bool,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let (tcp, _) = l.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let cb = move |req: &Request,
                               mut resp: Response|
                      -> Result<Response, ErrorResponse> {
                    let offered = req
                        .headers()
                        .get("sec-websocket-protocol")
                        .map(|v| v.to_str().unwrap().contains("base64"))
                        .unwrap_or(false);
                    if base64 && offered {
                        resp.headers_mut()
                            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("base64"));
                    }
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, cb).await else {
                    return;
                };
                while let Some(m) = ws.next().await {
                    match m {
                        Ok(TMessage::Binary(b)) => {
                            let _ = tx.send("binary".into());
                            if ws.send(TMessage::Binary(b)).await.is_err() {
                                return;
                            }
                        }
                        Ok(TMessage::Text(t)) => {
                            let _ = tx.send("text".into());
                            assert!(base64, "text on a binary connection");
                            if ws.send(TMessage::Text(t)).await.is_err() {
                                return;
                            }
                        }
                        Ok(TMessage::Close(c)) => {
                            let _ = tx.send(format!("close {c:?}"));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let _ = tx.send(format!("error {e}"));
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, task, rx)
}

fn connector() -> Arc<dyn ptkit_core::Connector> {
    WebSocketClient::new()
        .connector(&ClientConfig::default())
        .unwrap()
}

/// Our client → tungstenite server, binary: 256 KiB in uneven writes, byte-exact; the
/// server saw only (masked — tungstenite refuses unmasked) binary messages; our shutdown
/// sends Close 1000.
#[tokio::test]
async fn tungstenite_server_against_our_client_binary() {
    bounded(async {
        let (addr, task, mut seen) = tserver(false).await;
        let c = connector();
        let conn = c
            .connect(
                &Args::new().with("url", format!("ws://{addr}/path?q=1")),
                None,
            )
            .await
            .unwrap();
        let data = Arc::new(pattern(256 * 1024, 3));
        let (mut r, mut w) = tokio::io::split(conn);
        let d = data.clone();
        let writer = async move {
            let mut off = 0;
            let mut step = 1;
            while off < d.len() {
                let end = (off + step).min(d.len());
                w.write_all(&d[off..end]).await.unwrap();
                w.flush().await.unwrap();
                off = end;
                step = step * 3 + 7;
            }
            w
        };
        let reader = async move {
            let mut out = vec![0u8; data.len()];
            r.read_exact(&mut out).await.unwrap();
            assert_eq!(out, *data);
            r
        };
        let (mut w, mut r) = tokio::join!(writer, reader);
        w.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let n = tokio::time::timeout(STEP, r.read_to_end(&mut rest))
            .await
            .unwrap();
        assert!(n.is_ok() && rest.is_empty());
        let mut kinds = Vec::new();
        while let Ok(Some(k)) = tokio::time::timeout(Duration::from_millis(500), seen.recv()).await
        {
            kinds.push(k);
        }
        assert!(
            kinds
                .iter()
                .all(|k| k == "binary" || k.starts_with("close")),
            "{kinds:?}"
        );
        assert!(kinds.iter().any(|k| k.contains("Normal")), "{kinds:?}");
        task.abort();
    })
    .await;
}

/// Our client with `base64=1` → tungstenite server selecting base64: only text messages
/// travel, byte-exact after decoding.
#[tokio::test]
async fn tungstenite_server_against_our_client_base64() {
    bounded(async {
        let (addr, task, mut seen) = tserver(true).await;
        let conn = connector()
            .connect(
                &Args::new()
                    .with("url", format!("ws://{addr}/"))
                    .with("base64", "1"),
                None,
            )
            .await
            .unwrap();
        let data = Arc::new(pattern(300_000, 5));
        let got = write_and_read(conn, data.clone(), 70_000).await;
        assert_eq!(got, *data);
        let first = seen.recv().await.unwrap();
        assert_eq!(first, "text");
        task.abort();
    })
    .await;
}

/// Our client requires the base64 subprotocol it asked for.
#[tokio::test]
async fn our_client_fails_when_base64_not_selected() {
    bounded(async {
        let (addr, task, _seen) = tserver(false).await;
        let err = connector()
            .connect(
                &Args::new()
                    .with("url", format!("ws://{addr}/"))
                    .with("base64", "1"),
                None,
            )
            .await
            .err()
            .expect("must fail");
        assert!(err.to_string().contains("base64"), "{err}");
        task.abort();
    })
    .await;
}

/// A tungstenite server that pings our client gets one Pong per Ping while our client is
/// reading.
#[tokio::test]
async fn our_client_answers_server_pings() {
    bounded(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = l.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            for i in 0..3u8 {
                ws.send(TMessage::Ping(Bytes::from(vec![i]))).await.unwrap();
                match ws.next().await.unwrap().unwrap() {
                    TMessage::Pong(p) => assert_eq!(p.as_ref(), &[i]),
                    other => panic!("unexpected {other:?}"),
                }
            }
            ws.send(TMessage::Binary(Bytes::from_static(b"done")))
                .await
                .unwrap();
            ws
        });
        let mut conn = connector()
            .connect(
                &Args::new(),
                Some(ptkit_core::Target::from_socket_addr(addr)),
            )
            .await
            .unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"done");
        let _ws = server.await.unwrap();
    })
    .await;
}
