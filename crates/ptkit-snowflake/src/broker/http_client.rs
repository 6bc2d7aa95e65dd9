//! A minimal HTTP/1.1 client for the broker's endpoints (plain HTTP, one keep-alive
//! connection), for tests, benchmarks and tools that play a proxy or a client.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::error::BrokerError;

/// Largest response body read.
pub const MAX_RESPONSE: usize = 1 << 20;

/// One HTTP/1.1 connection to a broker.
#[derive(Debug)]
pub struct BrokerConnection {
    sender: SendRequest<Full<Bytes>>,
}

/// A response: status, headers, body.
#[derive(Debug, Clone)]
pub struct BrokerReply {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl BrokerConnection {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<BrokerConnection, BrokerError> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| BrokerError::io(format!("connect {addr}"), e))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| BrokerError::io("HTTP handshake", std::io::Error::other(e)))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(BrokerConnection { sender })
    }

    /// Sends one request and reads the whole response.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<BrokerReply, BrokerError> {
        let err = |e: &dyn std::fmt::Display| {
            BrokerError::io("HTTP request", std::io::Error::other(e.to_string()))
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "broker");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.into())).map_err(|e| err(&e))?;
        self.sender.ready().await.map_err(|e| err(&e))?;
        let resp = self.sender.send_request(req).await.map_err(|e| err(&e))?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| err(&e))?
            .to_bytes();
        Ok(BrokerReply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// `POST path` with `body`.
    pub async fn post(
        &mut self,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<BrokerReply, BrokerError> {
        self.request(Method::POST, path, &[], body).await
    }
}

/// One request on a fresh connection.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<BrokerReply, BrokerError> {
    BrokerConnection::connect(addr)
        .await?
        .request(method, path, headers, body)
        .await
}
