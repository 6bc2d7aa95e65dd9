//! Test helpers: an echo server on our transport, a raw RFC 6455 client speaking hand-made
//! frames, and peer-availability handling.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ptkit_core::{Args, ClientMeta, ServerConfig, ServerTransport};
use ptkit_websocket::WebSocketServer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Upper bound for any single step of a test.
pub const STEP: Duration = Duration::from_secs(10);

/// Runs `fut` with a deadline.
pub async fn bounded<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .expect("test took too long")
}

/// A running echo server on our transport.
pub struct EchoServer {
    pub addr: SocketAddr,
    pub metas: mpsc::UnboundedReceiver<ClientMeta>,
    pub errors: mpsc::UnboundedReceiver<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Echoes everything read back to the stream, flushing after each chunk; returns the error
/// that ended it (as text) or "eof".
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> String {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => {
                let _ = s.shutdown().await;
                return "eof".into();
            }
            Ok(n) => {
                if let Err(e) = s.write_all(&buf[..n]).await {
                    return e.to_string();
                }
                if let Err(e) = s.flush().await {
                    return e.to_string();
                }
            }
            Err(e) => return e.to_string(),
        }
    }
}

/// Starts an echo server with `options` on 127.0.0.1.
pub async fn echo_server(options: Args) -> EchoServer {
    echo_server_with(WebSocketServer::new(), options).await
}

/// Starts an echo server from a given server object.
pub async fn echo_server_with(server: WebSocketServer, options: Args) -> EchoServer {
    let mut listener = server
        .listen(ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            options,
            state_dir: None,
        })
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (mtx, metas) = mpsc::unbounded_channel();
    let (etx, errors) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let Ok(pending) = listener.accept().await else {
                return;
            };
            let mtx = mtx.clone();
            let etx = etx.clone();
            tokio::spawn(async move {
                match pending.await {
                    Ok(acc) => {
                        let _ = mtx.send(acc.meta);
                        let end = echo(acc.conn).await;
                        let _ = etx.send(end);
                    }
                    Err(e) => {
                        let _ = etx.send(format!("handshake: {e}"));
                    }
                }
            });
        }
    });
    EchoServer {
        addr,
        metas,
        errors,
        task,
    }
}

/// Encodes one frame. `mask` None → unmasked. `rsv` goes into bits 4..6 of byte 0.
pub fn frame(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0xf)];
    let m = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(m | len as u8);
    } else if len <= 0xffff {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked frame with a fixed key (tests only).
pub fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(fin, 0, opcode, Some([0x12, 0x34, 0x56, 0x78]), payload)
}

/// A close frame payload.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// A hand-driven WebSocket client on raw TCP.
pub struct RawClient {
    pub tcp: TcpStream,
    pub buf: Vec<u8>,
    pub response: String,
}

/// Sends an upgrade request (`extra` header lines end with `\r\n`) and reads the head of the
/// answer. Returns the client whatever the status.
pub async fn raw_request(addr: SocketAddr, target: &str, extra: &str) -> RawClient {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let head_end = tokio::time::timeout(STEP, async {
        loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return p + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "server closed before answering: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("no HTTP answer");
    let response = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    RawClient { tcp, buf, response }
}

/// Opens a websocket with version 13 (and `base64` when asked); asserts a 101.
pub async fn raw_ws(addr: SocketAddr, base64: bool) -> RawClient {
    let extra = if base64 {
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: base64\r\n"
    } else {
        "Sec-WebSocket-Version: 13\r\n"
    };
    let c = raw_request(addr, "/", extra).await;
    assert!(
        c.response.starts_with("HTTP/1.1 101"),
        "no upgrade: {}",
        c.response
    );
    assert!(
        c.response
            .to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{}",
        c.response
    );
    c
}

/// A frame read from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub key: Option<[u8; 4]>,
    pub payload: Vec<u8>,
}

impl RawClient {
    pub async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }

    async fn fill(&mut self, n: usize) -> bool {
        while self.buf.len() < n {
            let mut chunk = vec![0u8; 64 * 1024];
            let r = tokio::time::timeout(STEP, self.tcp.read(&mut chunk))
                .await
                .expect("timed out waiting for the server");
            match r {
                Ok(0) | Err(_) => return false,
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
            }
        }
        true
    }

    /// Next frame, or None at EOF.
    pub async fn frame(&mut self) -> Option<Frame> {
        if !self.fill(2).await {
            return None;
        }
        let b0 = self.buf[0];
        let b1 = self.buf[1];
        let mut len = usize::from(b1 & 0x7f);
        let mut off = 2;
        if len == 126 {
            assert!(self.fill(4).await);
            len = usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
            off = 4;
        } else if len == 127 {
            assert!(self.fill(10).await);
            len = u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize;
            off = 10;
        }
        let masked = b1 & 0x80 != 0;
        let key_off = off;
        if masked {
            off += 4;
        }
        if !self.fill(off + len).await {
            return None;
        }
        let mut payload = self.buf[off..off + len].to_vec();
        let key: Option<[u8; 4]> =
            masked.then(|| self.buf[key_off..key_off + 4].try_into().unwrap());
        if let Some(k) = key {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= k[i % 4];
            }
        }
        self.buf.drain(..off + len);
        Some(Frame {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 7,
            opcode: b0 & 0xf,
            masked,
            key,
            payload,
        })
    }

    /// Reads frames until a Close; returns its code (1005 if empty). Panics at EOF first.
    pub async fn close_code(&mut self) -> u16 {
        loop {
            let f = self
                .frame()
                .await
                .expect("connection ended without a close frame");
            if f.opcode == 8 {
                if f.payload.len() >= 2 {
                    return u16::from_be_bytes([f.payload[0], f.payload[1]]);
                }
                return 1005;
            }
        }
    }

    /// Reads data frames until `n` payload bytes arrived; returns them.
    pub async fn data(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < n {
            let f = self.frame().await.expect("EOF while waiting for data");
            assert!(!f.masked, "server frames must not be masked");
            match f.opcode {
                0..=2 => out.extend_from_slice(&f.payload),
                9 | 10 => {}
                8 => panic!("unexpected close {:?}", f.payload),
                o => panic!("unexpected opcode {o}"),
            }
        }
        out
    }

    /// Asserts the TCP connection gets closed by the server within the step timeout.
    pub async fn expect_eof(&mut self) {
        loop {
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(STEP, self.tcp.read(&mut chunk))
                .await
                .expect("server did not close")
            {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

/// Echo round trip on a raw binary connection: proves the connection still works.
pub async fn raw_roundtrip(c: &mut RawClient, data: &[u8]) {
    c.send(&masked(true, 2, data)).await;
    assert_eq!(c.data(data.len()).await, data);
}

/// A peer program is missing: fail under CI=true, else print SKIP.
pub fn missing_peer(what: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("required peer missing under CI=true: {what}");
    }
    eprintln!("SKIP: {what}");
}

/// Deterministic pseudo-random bytes.
pub fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Writes all of `data` while reading the same amount back; returns what was read.
pub async fn write_and_read<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    data: Arc<Vec<u8>>,
    chunk: usize,
) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(s);
    let d = data.clone();
    let writer = async move {
        for c in d.chunks(chunk.max(1)) {
            w.write_all(c).await.unwrap();
        }
        w.flush().await.unwrap();
        w
    };
    let reader = async move {
        let mut out = vec![0u8; data.len()];
        r.read_exact(&mut out).await.unwrap();
        out
    };
    let (_w, out) = tokio::join!(writer, reader);
    out
}
