//! The server-side acceptor: ALPN handling for normal clients and for `acme-tls/1`.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use ptkit_tls::{ACME_TLS_ALPN, Acceptor, ClientRoots, HotResolver, client_config, self_signed};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

/// Serves one connection per call; returns what `accept` said (Some: a TLS stream).
async fn handshake(
    acceptor: &Acceptor,
    alpn: &[&[u8]],
    cert_pem: &str,
) -> (bool, std::io::Result<Option<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = (*client_config(
        ClientRoots::empty().with_der(CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()),
    )
    .unwrap())
    .clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let client = async move {
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("ws.example.com").unwrap(), tcp)
            .await?;
        let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        tls.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        Ok(negotiated)
    };
    let server = async {
        let (tcp, _) = listener.accept().await.unwrap();
        match acceptor.accept(tcp).await {
            Ok(Some(mut tls)) => {
                let mut buf = [0u8; 4];
                if tls.read_exact(&mut buf).await.is_ok() {
                    let _ = tls.write_all(&buf).await;
                }
                true
            }
            _ => false,
        }
    };
    let (accepted, client) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(server, client)
    })
    .await
    .unwrap();
    (accepted, client)
}

#[tokio::test]
async fn normal_clients_negotiate_and_acme_alpn_is_answered_separately() {
    let (key, cert_pem, _) = self_signed(&["ws.example.com".into()]).unwrap();
    let resolver = Arc::new(HotResolver::new());
    resolver.set("ws.example.com", key);
    let acceptor = Acceptor::new(resolver.clone(), &[b"http/1.1"]).unwrap();

    // A browser-like offer and a client without ALPN both work.
    let (accepted, negotiated) = handshake(&acceptor, &[b"h2", b"http/1.1"], &cert_pem).await;
    assert!(accepted);
    assert_eq!(negotiated.unwrap(), Some(b"http/1.1".to_vec()));
    let (accepted, negotiated) = handshake(&acceptor, &[], &cert_pem).await;
    assert!(accepted);
    assert_eq!(negotiated.unwrap(), None);

    // acme-tls/1 without a pending challenge: no certificate, the handshake fails, and the
    // normal certificate is never handed to a validation connection.
    let (accepted, result) = handshake(&acceptor, &[ACME_TLS_ALPN], &cert_pem).await;
    assert!(!accepted);
    assert!(result.is_err());
}
