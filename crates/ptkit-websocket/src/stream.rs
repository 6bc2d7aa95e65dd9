//! [`WsStream`]: a WebSocket message stream as a byte stream (`AsyncRead + AsyncWrite`).
//!
//! Reading: each data message is judged by [`Inbound`] (binary passes, base64 text is decoded,
//! anything else closes the connection with the right code) and its bytes are handed out in
//! order; message boundaries carry no meaning. At most one message is buffered (the current
//! one, ≤ the limit). Pings are answered by tokio-websockets (one Pong each, queued and
//! flushed on the next read or write); after [`MAX_UNFLUSHED_PONGS`] Pings we stop reading
//! until the Pongs are written. A Close from the peer is answered and then reads return EOF.
//!
//! Writing: each `poll_write` sends at most one message of at most the message limit (decoded
//! bytes), as one frame. Backpressure is explicit: before a message is queued, the outgoing
//! queue is flushed to the socket when it holds more than the flush threshold, so at most
//! `flush threshold + one message` bytes wait in memory. `poll_flush` pushes everything queued
//! to the socket; the relay calls it whenever its reader is idle, so nothing sits in the queue
//! while the other side waits. `poll_shutdown` sends a Close (1000) and flushes it; WebSocket
//! has no half-close, so the peer answers with its own Close and reads end soon after (data
//! the peer sent before its Close is still delivered).
//!
//! Errors: a protocol violation ends the stream with an `io::Error` of kind `InvalidData`
//! whose inner error is a [`StreamError`] with the close code sent; before the error is
//! returned, the close frame is flushed and the socket shut down (bounded by
//! [`CLOSE_FLUSH_TIMEOUT`]).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tokio_websockets::proto::ProtocolError;
use tokio_websockets::{CloseCode, Error as WsError, Message, WebSocketStream};

use crate::proto::{CloseReason, DataKind, Framing, Inbound, Verdict, wire_limit};

/// Longest we wait to deliver a close frame after a protocol error before giving up.
pub const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Queued outgoing bytes above which a write first flushes (tokio-websockets' `flush_threshold`).
pub const FLUSH_THRESHOLD: usize = 16 * 1024;

/// Pings we answer before we insist that the Pongs reach the socket before reading on (a
/// peer that pings without reading cannot make queued Pongs grow without bound).
pub const MAX_UNFLUSHED_PONGS: usize = 8;

/// Why a [`WsStream`] ended abnormally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    /// The close code we sent (or would have sent), when there is one.
    pub code: Option<u16>,
    /// What happened.
    pub what: String,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "websocket closed with {code}: {}", self.what),
            None => write!(f, "websocket failed: {}", self.what),
        }
    }
}

impl std::error::Error for StreamError {}

impl StreamError {
    fn io(&self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self.clone())
    }
}

/// Tokio-websockets' config and limits for a connection with this framing and limit: the
/// receive cap (frame and reassembled message) is the wire limit; each message we send fits
/// one frame.
pub fn ws_settings(
    framing: Framing,
    limit: usize,
) -> (tokio_websockets::Config, tokio_websockets::Limits) {
    let wire = wire_limit(framing, limit);
    let config = tokio_websockets::Config::default()
        .frame_size(wire.max(1))
        .flush_threshold(FLUSH_THRESHOLD);
    let limits = tokio_websockets::Limits::default().max_payload_len(Some(wire));
    (config, limits)
}

enum ReadState {
    Open,
    /// Sending our close frame, then report the error.
    Failing(StreamError, Option<Pin<Box<Sleep>>>, bool),
    Failed(StreamError),
    Eof,
}

/// A WebSocket connection as a byte stream. See the module documentation.
pub struct WsStream<S> {
    ws: WebSocketStream<S>,
    inbound: Inbound,
    read_buf: Bytes,
    read_state: ReadState,
    close_sent: bool,
    /// Pings received since our queue was last seen flushed (each queued a Pong).
    unflushed_pongs: usize,
    peer_close: Option<(u16, String)>,
}

impl<S> fmt::Debug for WsStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsStream")
            .field("framing", &self.inbound.framing)
            .field("limit", &self.inbound.limit)
            .field("buffered", &self.read_buf.len())
            .finish_non_exhaustive()
    }
}

fn close_message(reason: CloseReason) -> Message {
    Message::close(CloseCode::try_from(reason.code).ok(), reason.reason)
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// Wraps an established WebSocket (built with [`ws_settings`] for the same framing and
    /// limit) whose handshake negotiated `framing`; `limit` is the message limit in decoded
    /// bytes, for both directions.
    pub fn new(ws: WebSocketStream<S>, framing: Framing, limit: usize) -> Self {
        WsStream {
            ws,
            inbound: Inbound::new(framing, limit),
            read_buf: Bytes::new(),
            read_state: ReadState::Open,
            close_sent: false,
            unflushed_pongs: 0,
            peer_close: None,
        }
    }

    /// The negotiated framing.
    pub fn framing(&self) -> Framing {
        self.inbound.framing
    }

    /// The close code and reason the peer sent, once its Close arrived.
    pub fn peer_close(&self) -> Option<(u16, &str)> {
        self.peer_close.as_ref().map(|(c, r)| (*c, r.as_str()))
    }

    /// The underlying transport.
    pub fn get_ref(&self) -> &S {
        self.ws.get_ref()
    }

    /// Starts failing: queue `reason` as our close frame (unless tokio-websockets already
    /// queued one, which it does for the errors it detects itself).
    fn fail(&mut self, reason: Option<CloseReason>, what: String, code: Option<u16>) {
        if let Some(reason) = reason {
            // Err(AlreadyClosed) means a close is already queued or sent: fine.
            let _ = Pin::new(&mut self.ws).start_send(close_message(reason));
        }
        self.close_sent = true;
        self.read_state = ReadState::Failing(StreamError { code, what }, None, false);
    }

    fn on_ws_error(&mut self, e: WsError) -> Option<io::Error> {
        match e {
            WsError::Io(e) => {
                self.read_state = ReadState::Failed(StreamError {
                    code: None,
                    what: e.to_string(),
                });
                Some(e)
            }
            WsError::AlreadyClosed => {
                self.read_state = ReadState::Eof;
                None
            }
            WsError::PayloadTooLong { len, max_len } => {
                // Per frame, tokio-websockets queued 1009 itself; for a reassembled message
                // it did not, and the close below is the one that goes out.
                self.fail(
                    Some(CloseReason::TOO_BIG),
                    format!("message of {len} bytes over the limit of {max_len}"),
                    Some(1009),
                );
                None
            }
            WsError::Protocol(p) => {
                // tokio-websockets queued 1007 (bad UTF-8) or 1002 (everything else).
                let code = if matches!(p, ProtocolError::InvalidUtf8) {
                    1007
                } else {
                    1002
                };
                self.fail(None, p.to_string(), Some(code));
                None
            }
            other => {
                self.fail(None, other.to_string(), None);
                None
            }
        }
    }

    /// Drives the close of a failing stream: flush our close frame, shut the socket down.
    fn poll_failing(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let ReadState::Failing(err, timer, flushed) = &mut self.read_state else {
            return Poll::Ready(io::Error::other("not failing"));
        };
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(CLOSE_FLUSH_TIMEOUT)));
        let timed_out = timer.as_mut().poll(cx).is_ready();
        let mut done = timed_out;
        if !done {
            if !*flushed {
                match Pin::new(&mut self.ws).poll_flush(cx) {
                    Poll::Ready(_) => *flushed = true,
                    Poll::Pending => return Poll::Pending,
                }
            }
            match Pin::new(self.ws.get_mut()).poll_shutdown(cx) {
                Poll::Ready(_) => done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        debug_assert!(done);
        let err = err.clone();
        let io = err.io();
        self.read_state = ReadState::Failed(err);
        Poll::Ready(io)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.read_buf.is_empty() {
                let n = this.read_buf.len().min(buf.remaining());
                buf.put_slice(&this.read_buf[..n]);
                this.read_buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            match &this.read_state {
                ReadState::Open => {}
                ReadState::Eof => return Poll::Ready(Ok(())),
                ReadState::Failed(e) => return Poll::Ready(Err(e.io())),
                ReadState::Failing(..) => {
                    let e = ready!(this.poll_failing(cx));
                    return Poll::Ready(Err(e));
                }
            }
            if this.unflushed_pongs >= MAX_UNFLUSHED_PONGS {
                // A peer that pings without reading our answers: stop reading until the
                // Pongs are on the wire, so they cannot pile up in memory.
                match ready!(Pin::new(&mut this.ws).poll_flush(cx)) {
                    Ok(()) | Err(WsError::AlreadyClosed) => this.unflushed_pongs = 0,
                    Err(e) => {
                        let e = ws_to_io(e);
                        this.read_state = ReadState::Failed(StreamError {
                            code: None,
                            what: e.to_string(),
                        });
                        return Poll::Ready(Err(e));
                    }
                }
            }
            let msg = match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None => {
                    this.read_state = ReadState::Eof;
                    continue;
                }
                Some(Err(e)) => {
                    if let Some(e) = this.on_ws_error(e) {
                        return Poll::Ready(Err(e));
                    }
                    continue;
                }
                Some(Ok(msg)) => msg,
            };
            let kind = if msg.is_binary() {
                DataKind::Binary
            } else if msg.is_text() {
                DataKind::Text
            } else {
                if msg.is_ping() {
                    this.unflushed_pongs += 1;
                } else if let Some((code, reason)) = msg.as_close() {
                    this.peer_close = Some((u16::from(code), reason.to_owned()));
                } else if msg.is_close() {
                    this.peer_close = Some((1005, String::new()));
                }
                // Ping (answered by tokio-websockets), Pong, Close (answered; EOF follows).
                continue;
            };
            match this.inbound.accept(kind, msg.as_payload()) {
                Ok(Verdict::Pass) => this.read_buf = Bytes::from(msg.into_payload()),
                Ok(Verdict::Decoded(bytes)) => this.read_buf = Bytes::from(bytes),
                Err(reason) => {
                    let what = reason.reason.to_owned();
                    this.fail(Some(reason), what, Some(reason.code));
                }
            }
        }
    }
}

fn ws_to_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::AlreadyClosed => io::Error::new(io::ErrorKind::BrokenPipe, "websocket closed"),
        other => io::Error::other(other.to_string()),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.close_sent {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "websocket closed",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(ws_to_io)?;
        let n = buf.len().min(this.inbound.limit);
        let msg = match this.inbound.framing {
            Framing::Binary | Framing::Lenient => {
                Message::binary(Bytes::copy_from_slice(&buf[..n]))
            }
            Framing::Base64 => Message::text(crate::proto::encode_base64(&buf[..n])),
        };
        Pin::new(&mut this.ws).start_send(msg).map_err(ws_to_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match ready!(Pin::new(&mut this.ws).poll_flush(cx)) {
            Ok(()) | Err(WsError::AlreadyClosed) => {
                this.unflushed_pongs = 0;
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(ws_to_io(e))),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            this.close_sent = true;
            // Err(AlreadyClosed): the peer closed first and its Close was answered.
            let _ = Pin::new(&mut this.ws).start_send(close_message(CloseReason::NORMAL));
        }
        match ready!(Pin::new(&mut this.ws).poll_flush(cx)) {
            Ok(()) | Err(WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(ws_to_io(e))),
        }
    }
}

/// The [`StreamError`] inside an `io::Error` returned by a [`WsStream`], if any.
pub fn stream_error(e: &io::Error) -> Option<&StreamError> {
    e.get_ref()?.downcast_ref::<StreamError>()
}

/// Entry point for a fuzz target over the server's frame and message path: `data[0]` picks
/// the framing, the rest is sent as raw client bytes (after the upgrade) into a server-side
/// [`WsStream`] with a 1500-byte limit over an in-memory pipe. Panics if the stream yields
/// more than the bytes it was sent, or ends with a close code outside RFC 6455's set for
/// these failures.
pub fn fuzz_server_frames(data: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some((&mode, frames)) = data.split_first() else {
        return;
    };
    let framing = if mode % 2 == 0 {
        Framing::Binary
    } else {
        Framing::Base64
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (config, limits) = ws_settings(framing, crate::proto::MIN_MESSAGE_LIMIT);
        let ws = tokio_websockets::ServerBuilder::new()
            .config(config)
            .limits(limits)
            .serve(server);
        let mut stream = WsStream::new(ws, framing, crate::proto::MIN_MESSAGE_LIMIT);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let input = frames.to_vec();
        let feeder = async move {
            let _ = client_write.write_all(&input).await;
            let _ = client_write.shutdown().await;
            // Keep our half open while the server answers.
            std::future::pending::<()>().await;
        };
        let drain = async move {
            let mut sink = [0u8; 4096];
            while matches!(client_read.read(&mut sink).await, Ok(n) if n > 0) {}
            std::future::pending::<()>().await;
        };
        let read_all = async {
            let mut got = 0usize;
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) => return (got, None),
                    Ok(n) => got += n,
                    Err(e) => return (got, stream_error(&e).and_then(|s| s.code)),
                }
            }
        };
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            tokio::select! {
                r = read_all => r,
                _ = feeder => unreachable!(),
                _ = drain => unreachable!(),
            }
        })
        .await;
        if let Ok((got, code)) = outcome {
            // Masking and base64 only ever shrink or keep the payload.
            assert!(
                got <= frames.len(),
                "read {got} bytes from {} input bytes",
                frames.len()
            );
            if let Some(code) = code {
                assert!(
                    matches!(code, 1000..=1003 | 1007..=1011),
                    "unexpected close code {code}"
                );
            }
        }
    });
}
