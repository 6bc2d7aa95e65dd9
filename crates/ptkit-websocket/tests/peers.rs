//! Real peers: Debian's `websockify` (server, our client connects) and Python `websockets`
//! (client requesting `base64`, against our server). A missing peer fails under `CI=true`,
//! otherwise the test prints SKIP and passes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ptkit_core::{Args, ClientConfig, ClientTransport, Target};
use ptkit_websocket::WebSocketClient;
use tokio::net::TcpListener;
use tokio::process::Command;

fn have(program: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A plain TCP echo server.
async fn tcp_echo() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// (a) websockify 0.10 (RFC 6455 only, binary, rejects text, no base64) as the server in
/// front of a TCP echo; our client sends 1 MiB and reads it back byte-exact.
#[tokio::test]
async fn peer_websockify_server_our_client_1mib() {
    if !have("websockify") {
        missing_peer("websockify (apt-get install -y websockify)");
        return;
    }
    bounded(async {
        let echo = tcp_echo().await;
        let port = free_port();
        let mut child = Command::new("websockify")
            .arg(format!("127.0.0.1:{port}"))
            .arg(echo.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let ws_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut up = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(ws_addr).await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(up, "websockify did not start");
        let c = WebSocketClient::new()
            .connector(&ClientConfig::default())
            .unwrap();
        let conn = c
            .connect(&Args::new(), Some(Target::from_socket_addr(ws_addr)))
            .await
            .unwrap();
        let data = Arc::new(pattern(1 << 20, 42));
        let got = write_and_read(conn, data.clone(), 16 * 1024).await;
        assert!(got == *data, "websockify round trip differs");
        // websockify has no base64 subprotocol since 0.9; 0.10 answers a client offering only
        // `base64` with 400, which our client reports with the status.
        let err = c
            .connect(
                &Args::new().with("base64", "1"),
                Some(Target::from_socket_addr(ws_addr)),
            )
            .await
            .err()
            .expect("websockify cannot do base64");
        assert!(
            err.to_string().contains("400") || err.to_string().contains("base64"),
            "{err}"
        );
        let _ = child.start_kill();
        let _ = child.wait().await;
    })
    .await;
}

const PY_CLIENT: &str = r#"
import asyncio, base64, hashlib, random, sys
import websockets

async def main(uri):
    data = random.Random(1).randbytes(1 << 20)
    async with websockets.connect(uri, subprotocols=["base64"], max_size=1 << 20,
                                  compression=None) as ws:
        assert ws.subprotocol == "base64", ws.subprotocol
        async def send():
            for i in range(0, len(data), 40000):
                await ws.send(base64.b64encode(data[i:i + 40000]).decode())
        got = bytearray()
        async def recv():
            while len(got) < len(data):
                m = await ws.recv()
                assert isinstance(m, str), type(m)
                got.extend(base64.b64decode(m, validate=True))
        await asyncio.wait_for(asyncio.gather(send(), recv()), 30)
        assert bytes(got) == data, "mismatch"
        pong = await ws.ping(b"hi")
        await asyncio.wait_for(pong, 10)
    print("OK", hashlib.sha256(data).hexdigest())

asyncio.run(main(sys.argv[1]))
"#;

/// (b) Python `websockets` requesting `base64` against our server: 1 MiB as base64 text
/// messages, echoed byte-exact; a Ping is answered.
#[tokio::test]
async fn peer_python_websockets_base64_client_our_server() {
    // Debian's interpreter sees Debian's python3-websockets; a pyenv `python3` first on PATH
    // would not.
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let has_module = std::process::Command::new(python)
        .args(["-c", "import websockets"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !has_module {
        missing_peer("python3 websockets (apt-get install -y python3-websockets)");
        return;
    }
    bounded(async {
        let mut srv = echo_server(Args::new()).await;
        let out = tokio::time::timeout(
            Duration::from_secs(50),
            Command::new(python)
                .args(["-c", PY_CLIENT, &format!("ws://{}/", srv.addr)])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("python client hung")
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.starts_with("OK "),
            "python client failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta = srv.metas.recv().await.unwrap();
        assert!(meta.client_addr.unwrap().ip().is_loopback());
        let end = srv.errors.recv().await.unwrap();
        assert_eq!(end, "eof");
    })
    .await;
}
