//! The thin async layer over the sans-IO codecs: read exactly what a decoder asks for, and a
//! bidirectional QUIC stream as one `AsyncRead + AsyncWrite`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use quinn::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{Error, Result};
use crate::proto::{self, Decode, Reply, Route};

/// Reads one item with `decode`, reading exactly the bytes it asks for (never past the item).
/// `limit` bounds the whole item.
pub(crate) async fn read_decoded<T>(
    recv: &mut RecvStream,
    decode: impl Fn(&[u8]) -> Result<Decode<T>, proto::ProtoError>,
    limit: usize,
) -> Result<T> {
    let mut buf = Vec::with_capacity(16);
    loop {
        match decode(&buf)? {
            Decode::Done(v, _) => return Ok(v),
            Decode::Need(n) => {
                let start = buf.len();
                let end = start.saturating_add(n);
                if end > limit {
                    return Err(Error::Misbehaved(format!(
                        "message longer than {limit} bytes"
                    )));
                }
                buf.resize(end, 0);
                recv.read_exact(&mut buf[start..]).await?;
            }
        }
    }
}

/// Longest stream header on the wire.
pub(crate) const MAX_HEADER: usize = 4 + 1 + 1 + 1 + 1 + proto::MAX_NAME + 2;

/// Reads a stream header.
pub(crate) async fn read_header(recv: &mut RecvStream) -> Result<Route> {
    read_decoded(recv, proto::decode_header, MAX_HEADER).await
}

/// Reads a reply.
pub(crate) async fn read_reply(recv: &mut RecvStream) -> Result<Reply> {
    read_decoded(recv, proto::decode_reply, 3 + proto::MAX_REPLY_BODY).await
}

/// Writes a reply.
pub(crate) async fn write_reply(send: &mut SendStream, reply: &Reply) -> Result<()> {
    send.write_all(&proto::encode_reply(reply)).await?;
    Ok(())
}

/// One bidirectional QUIC stream as a byte stream. Shutting down the write half sends FIN;
/// dropping it resets nothing that was already written (quinn finishes gracefully).
#[derive(Debug)]
pub struct QuicStream {
    /// The sending half.
    pub send: SendStream,
    /// The receiving half.
    pub recv: RecvStream,
}

impl QuicStream {
    /// Joins the two halves.
    pub fn new(send: SendStream, recv: RecvStream) -> Self {
        QuicStream { send, recv }
    }
}

impl AsyncRead for QuicStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        AsyncRead::poll_read(Pin::new(&mut self.recv), cx, buf)
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.send), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(&mut self.send), cx)
    }
}

/// Opens a stream on `conn` for `route` and waits for the acceptor's reply. On success the
/// stream carries the route's payload; a refusal becomes [`Error::Refused`].
pub async fn open_route(conn: &quinn::Connection, route: &Route) -> Result<(QuicStream, Reply)> {
    let header = proto::encode_header(route)?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&header).await?;
    let reply = read_reply(&mut recv).await?;
    if let Reply::Refused(code, reason) = reply {
        return Err(Error::Refused { code, reason });
    }
    Ok((QuicStream::new(send, recv), reply))
}
