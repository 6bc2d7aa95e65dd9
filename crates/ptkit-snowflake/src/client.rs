//! A turbotunnel test client: token, ClientID, KCP and smux over a WebSocket, straight to a
//! Snowflake server without WebRTC or a proxy. It exists to load-test the server and to
//! switch "proxies" (WebSockets) mid-session; it is a tool, not a Snowflake client.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ptkit_core::{Args, ClientConfig, ClientTransport, Conn, Connector};
use ptkit_websocket::WebSocketClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client_map::{ClientMap, SendQueue};
use crate::encapsulation::{Decoder, encode_data};
use crate::session::{SessionConfig, SessionDriver, SessionIo, SmuxStream, new_session};
use crate::smux::{Role, SmuxConfig};
use crate::turbotunnel::{ClientId, TOKEN};

/// How the client reaches the server.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `ws://` or `wss://` URL of the server (a `client_ip` query is passed through).
    pub url: String,
    /// PEM CA file to trust for `wss` instead of the system store.
    pub ca_file: Option<std::path::PathBuf>,
    /// The ClientID; random when `None`.
    pub client_id: Option<ClientId>,
}

struct ClientIo {
    queue: Arc<SendQueue>,
}

impl SessionIo for ClientIo {
    fn transmit(&self, datagram: Bytes) -> bool {
        self.queue.push(datagram)
    }

    fn opened(&self, _stream: SmuxStream) {
        // The server never opens streams; dropping one sends FIN.
    }
}

/// One turbotunnel session to a server, carried by one WebSocket at a time.
pub struct TurbotunnelClient {
    session: SessionDriver,
    client_id: ClientId,
    settings: Args,
    connector: Arc<dyn Connector>,
    queue: Arc<SendQueue>,
    inbound: mpsc::Sender<Bytes>,
    carrier: Mutex<Option<JoinHandle<()>>>,
    driver: JoinHandle<()>,
    // Keeps the queue's map alive (its expiry is not used on the client).
    _map: Arc<ClientMap>,
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b
}

impl TurbotunnelClient {
    /// Starts a session and opens its first WebSocket.
    pub async fn connect(options: ClientOptions) -> io::Result<TurbotunnelClient> {
        let mut transport_opts = Args::new();
        if let Some(ca) = &options.ca_file {
            transport_opts.push("ca-file", ca.display().to_string());
        }
        let connector = WebSocketClient::new()
            .connector(&ClientConfig {
                options: transport_opts,
                state_dir: None,
                dialer: None,
            })
            .map_err(|e| io::Error::other(e.to_string()))?;
        let settings = Args::new().with("url", options.url.clone());
        let client_id = options
            .client_id
            .unwrap_or_else(|| ClientId(random_bytes()));
        let conv = u32::from_le_bytes(random_bytes());
        let config = SessionConfig {
            smux: SmuxConfig::client(),
            ..SessionConfig::default()
        };
        let driver = new_session(conv, Role::Client, &config);
        let map = Arc::new(ClientMap::new(4096, Duration::from_secs(3600)));
        let queue = map.queue(client_id);
        let (tx, rx) = mpsc::channel(4096);
        let io = Arc::new(ClientIo {
            queue: queue.clone(),
        });
        let runner = driver.clone();
        let driver_task = tokio::spawn(async move {
            let _ = runner.run(rx, io).await;
        });
        let client = TurbotunnelClient {
            session: driver,
            client_id,
            settings,
            connector,
            queue,
            inbound: tx,
            carrier: Mutex::new(None),
            driver: driver_task,
            _map: map,
        };
        client.switch_carrier().await?;
        Ok(client)
    }

    /// The session's ClientID.
    pub fn client_id(&self) -> ClientId {
        self.client_id
    }

    /// Opens a stream to the server (the server connects it to its upstream).
    pub fn open_stream(&self) -> io::Result<SmuxStream> {
        self.session.open_stream()
    }

    /// Drops the current WebSocket and opens a new one with the same ClientID, as a
    /// Snowflake client does when its proxy goes away.
    pub async fn switch_carrier(&self) -> io::Result<()> {
        if let Some(old) = self.carrier.lock().ok().and_then(|mut c| c.take()) {
            old.abort();
        }
        let ws = self
            .connector
            .connect(&self.settings, None)
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        let task = tokio::spawn(carry(
            ws,
            self.client_id,
            self.queue.clone(),
            self.inbound.clone(),
        ));
        if let Ok(mut c) = self.carrier.lock() {
            *c = Some(task);
        }
        Ok(())
    }

    /// Drops the WebSocket without opening another (packets queue until `switch_carrier`).
    pub fn drop_carrier(&self) {
        if let Some(old) = self.carrier.lock().ok().and_then(|mut c| c.take()) {
            old.abort();
        }
    }
}

impl Drop for TurbotunnelClient {
    fn drop(&mut self) {
        self.drop_carrier();
        self.driver.abort();
    }
}

/// Runs one WebSocket: preamble, then queue → WebSocket and WebSocket → session.
async fn carry(ws: Conn, id: ClientId, queue: Arc<SendQueue>, inbound: mpsc::Sender<Bytes>) {
    let (mut rd, mut wr) = tokio::io::split(ws);
    let writer = async {
        let mut pre = Vec::with_capacity(16);
        pre.extend_from_slice(&TOKEN);
        pre.extend_from_slice(&id.0);
        wr.write_all(&pre).await?;
        wr.flush().await?;
        let mut out = BytesMut::with_capacity(2048);
        while let Some(p) = queue.pop().await {
            out.clear();
            if encode_data(&p, &mut out).is_err() {
                continue;
            }
            while out.len() < 2048 {
                let Some(next) = queue.try_pop() else { break };
                let _ = encode_data(&next, &mut out);
            }
            wr.write_all(&out).await?;
            wr.flush().await?;
        }
        Ok::<(), io::Error>(())
    };
    let reader = async {
        let mut dec = Decoder::default();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut ok = true;
            if dec
                .push(&buf[..n], |p| {
                    if inbound.try_send(p).is_err() {
                        ok = ok && !inbound.is_closed();
                    }
                })
                .is_err()
                || !ok
            {
                return;
            }
        }
    };
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
    }
}
