//! PT 2.x settings methods (`0x09`, `0x80`) running inside `ptkit_tor`'s SOCKS5 handshake
//! (spec §1.3.3), as byte vectors.
#![allow(clippy::unwrap_used)]

use hex_literal::hex;
use ptkit_core::Args;
use ptkit_ipc::socks_auth::{encode_block, methods, methods_with_limit};
use ptkit_tor::socks::server::{
    ErrorKind, Handshake, HandshakeError, Request, run_chunks, run_chunks_with,
};

const CONNECT: [u8; 10] = hex!("05 01 00 01 7f000001 235a");
const JSON: &[u8] = br#"{"k":"v"}"#;

fn ipc(chunks: &[&[u8]]) -> (Vec<u8>, Result<Option<Request>, HandshakeError>) {
    run_chunks_with(Handshake::with_methods(methods()), chunks)
}

fn kv() -> Args {
    Args::new().with("k", "v")
}

#[test]
fn method_preference_0x09_0x80_0x02_0x00() {
    let sel = |greeting: &[u8]| ipc(&[greeting]).0;
    assert_eq!(sel(&hex!("05 04 00 02 80 09")), hex!("05 09"));
    assert_eq!(sel(&hex!("05 03 00 80 02")), hex!("05 80"));
    assert_eq!(sel(&hex!("05 02 00 02")), hex!("05 02"));
    assert_eq!(sel(&hex!("05 01 00")), hex!("05 00"));
    assert_eq!(sel(&hex!("05 02 01 03")), hex!("05 ff"));
    assert_eq!(methods().methods(), vec![0x09, 0x80, 0x02, 0x00]);
}

#[test]
fn x09_block_then_connect_without_waiting() {
    let mut wire = encode_block(JSON).unwrap();
    assert_eq!(&wire[..4], hex!("00 00 00 09"));
    wire.extend_from_slice(&CONNECT);
    let (replies, res) = ipc(&[&hex!("05 01 09"), &wire]);
    assert_eq!(replies, hex!("05 09"));
    let req = res.unwrap().unwrap();
    assert_eq!(req.args, kv());
    assert_eq!(req.target.to_string(), "127.0.0.1:9050");
    // Any split of settings + CONNECT gives the same result.
    for cut in 0..=wire.len() {
        let (replies, res) = ipc(&[&hex!("05 01 09"), &wire[..cut], &wire[cut..]]);
        assert_eq!(replies, hex!("05 09"), "cut {cut}");
        assert_eq!(res.unwrap().unwrap().args, kv(), "cut {cut}");
    }
}

#[test]
fn x80_unframed_json_byte_by_byte() {
    let mut wire = b" {\"k\":\"v\",\"n\":{\"x\":\"}\"}}".to_vec();
    wire.extend_from_slice(&CONNECT);
    let mut chunks: Vec<&[u8]> = vec![&hex!("05 02 00 80")];
    chunks.extend(wire.chunks(1));
    let (replies, res) = ipc(&chunks);
    assert_eq!(replies, hex!("05 80"));
    let req = res.unwrap().unwrap();
    assert_eq!(req.args.get("k"), Some("v"));
    assert_eq!(req.args.get("n"), Some(r#"{"x":"}"}"#));
    assert_eq!(req.target.to_string(), "127.0.0.1:9050");
}

#[test]
fn x80_draft2_u32_be_length() {
    let mut wire = hex!("00 00 00 09").to_vec();
    wire.extend_from_slice(JSON);
    wire.extend_from_slice(&CONNECT);
    let (replies, res) = ipc(&[&hex!("05 01 80"), &wire]);
    assert_eq!(replies, hex!("05 80"));
    assert_eq!(res.unwrap().unwrap().args, kv());
}

#[test]
fn oversized_settings_get_rep_0x10() {
    let hs = || Handshake::with_methods(methods_with_limit(8));
    let (replies, res) = run_chunks_with(hs(), &[&hex!("05 01 09"), &hex!("00 00 00 09")]);
    assert_eq!(replies, hex!("05 09 05 10 00 01 00000000 0000"));
    let e = res.unwrap_err();
    assert_eq!(e.kind.label(), "settings_too_large");
    // Unframed 0x80: refused once more than the limit arrived.
    let (replies, _) = run_chunks_with(hs(), &[&hex!("05 01 80"), JSON]);
    assert_eq!(replies, hex!("05 80 05 10 00 01 00000000 0000"));
    // Within the default limit: fine.
    let (_, res) = ipc(&[&hex!("05 01 09"), &encode_block(JSON).unwrap(), &CONNECT]);
    assert!(res.unwrap().is_some());
}

#[test]
fn malformed_json_gets_rep_0x12_and_invalid_0x13() {
    let (replies, res) = ipc(&[&hex!("05 01 09"), &encode_block(b"{\"k\":}").unwrap()]);
    assert_eq!(replies, hex!("05 09 05 12 00 01 00000000 0000"));
    assert!(matches!(
        res,
        Err(HandshakeError {
            kind: ErrorKind::SubNegotiation {
                label: "settings_json",
                ..
            },
            ..
        })
    ));
    let (replies, _) = ipc(&[&hex!("05 01 80"), b"[1]"]);
    assert_eq!(replies, hex!("05 80 05 12 00 01 00000000 0000"));
    let (replies, res) = ipc(&[&hex!("05 01 09"), &encode_block(b"[1]").unwrap()]);
    assert_eq!(replies, hex!("05 09 05 13 00 01 00000000 0000"));
    assert_eq!(res.unwrap_err().kind.label(), "settings_invalid");
}

#[test]
fn only_0x02_offered_keeps_pt1_behaviour() {
    let auth = hex!("01096b65793d76616c75650100");
    let chunks: &[&[u8]] = &[&hex!("05 01 02"), &auth, &CONNECT];
    let (replies, res) = ipc(chunks);
    assert_eq!(replies, hex!("05 02 01 00"));
    assert_eq!(res.unwrap().unwrap().args.get("key"), Some("value"));
    assert_eq!(ipc(chunks), run_chunks(chunks));
    // SOCKS4 is unaffected.
    let v4 = b"\x04\x01\x12\x34\x01\x02\x03\x04k=v\x00";
    assert_eq!(ipc(&[v4]).1.unwrap().unwrap().args, kv());
}

#[test]
fn pipelining_rules() {
    // The greeting must still be answered before the settings arrive.
    let mut early = hex!("05 01 09").to_vec();
    early.extend(encode_block(JSON).unwrap());
    assert!(matches!(
        ipc(&[&early]).1,
        Err(HandshakeError {
            kind: ErrorKind::Pipelined,
            ..
        })
    ));
    // Bytes after the CONNECT that follows the settings are still refused.
    let mut late = encode_block(JSON).unwrap();
    late.extend_from_slice(&CONNECT);
    late.push(0);
    let (replies, res) = ipc(&[&hex!("05 01 09"), &late]);
    assert_eq!(replies, hex!("05 09 05 01 00 01 00000000 0000"));
    assert!(matches!(
        res,
        Err(HandshakeError {
            kind: ErrorKind::Pipelined,
            ..
        })
    ));
}

#[test]
fn timeout_during_settings_gets_rep_0x11() {
    let mut hs = Handshake::with_methods(methods());
    let a = hs.step(&hex!("05 01 09")).unwrap();
    assert_eq!(a.reply, hex!("05 09"));
    let a = hs.step(&hex!("00 00")).unwrap();
    assert_eq!((a.drain, a.finished), (2, None));
    assert_eq!(hs.timed_out(), hex!("05 11 00 01 00000000 0000"));
    // Outside a sub-negotiation there is nothing to send.
    assert!(Handshake::new().timed_out().is_empty());
}

mod end_to_end {
    //! `ptkit_tor::socks_front::serve` with the IPC methods and a recording connector.
    use super::*;
    use ptkit_core::shutdown::Shutdown;
    use ptkit_core::transport::{BoxFuture, Conn};
    use ptkit_core::{Connector, StatsCounter, Target, TransportError};
    use ptkit_tor::socks_front::{SocksLimits, serve};
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    type Calls = Mutex<Vec<(Args, Option<Target>)>>;

    struct Recorder(Calls);

    impl Connector for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }
        fn is_bound(&self) -> bool {
            false
        }
        fn connect(
            &self,
            settings: &Args,
            dest: Option<Target>,
        ) -> BoxFuture<'static, Result<Conn, TransportError>> {
            self.0.lock().unwrap().push((settings.clone(), dest));
            Box::pin(async {
                let (a, _b) = tokio::io::duplex(64);
                Ok(Box::new(a) as Conn)
            })
        }
    }

    async fn start() -> (std::net::SocketAddr, Arc<Recorder>, Shutdown) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
        let shutdown = Shutdown::new();
        let limits = SocksLimits {
            methods: Some(methods()),
            ..SocksLimits::default()
        };
        let stats = Arc::new(StatsCounter::new("recorder"));
        serve(listener, recorder.clone(), stats, shutdown.clone(), limits);
        (addr, recorder, shutdown)
    }

    #[tokio::test]
    async fn serve_passes_0x09_settings_to_the_connector() {
        let (addr, recorder, shutdown) = start().await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(&hex!("05 03 00 02 09")).await.unwrap();
        let mut sel = [0u8; 2];
        c.read_exact(&mut sel).await.unwrap();
        assert_eq!(sel, hex!("05 09"));
        let mut rest = encode_block(JSON).unwrap();
        rest.extend_from_slice(&CONNECT);
        c.write_all(&rest).await.unwrap();
        let mut reply = [0u8; 10];
        c.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, hex!("05 00 00 01 00000000 0000"));
        let calls = recorder.0.lock().unwrap().clone();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].0, kv());
        assert_eq!(
            calls[0].1.as_ref().map(ToString::to_string).as_deref(),
            Some("127.0.0.1:9050")
        );
        shutdown.abort();
    }

    #[tokio::test]
    async fn serve_sends_the_settings_error_reply_and_does_not_dial() {
        let (addr, recorder, shutdown) = start().await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(&hex!("05 01 80")).await.unwrap();
        let mut sel = [0u8; 2];
        c.read_exact(&mut sel).await.unwrap();
        assert_eq!(sel, hex!("05 80"));
        c.write_all(b"{\"k\" 1}").await.unwrap();
        let mut reply = Vec::new();
        c.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, hex!("05 12 00 01 00000000 0000"));
        assert!(recorder.0.lock().unwrap().is_empty());
        shutdown.abort();
    }
}
