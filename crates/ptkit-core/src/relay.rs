//! The one relay: copy bytes both ways between two streams, with half-close, fixed buffers and
//! live byte counters.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use std::any::Any;

use crate::stats::StatsCounter;
use crate::transport::Stream;

/// Default buffer per direction once a connection carries bulk data. Large enough that a
/// loopback relay is not syscall-bound.
pub const DEFAULT_RELAY_BUFFER: usize = 32 * 1024;

/// Buffer per direction until a read fills it: idle and interactive tunnels stay small
/// (thousands of idle tunnels are the common case on a bridge).
pub const INITIAL_RELAY_BUFFER: usize = 2 * 1024;

/// Relay knobs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Bytes of buffer per direction (allocated once per relay).
    pub buffer_size: usize,
    /// Move bytes between two plain TCP sockets with `splice(2)` (Linux), never copying them
    /// through user space.
    pub splice: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            buffer_size: DEFAULT_RELAY_BUFFER,
            splice: cfg!(target_os = "linux"),
        }
    }
}

/// Bytes moved by a finished relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayTotals {
    /// Application side → network side.
    pub up: u64,
    /// Network side → application side.
    pub down: u64,
}

struct Direction {
    buf: Box<[u8]>,
    max: usize,
    last_read_full: bool,
    pos: usize,
    cap: usize,
    read_done: bool,
    need_flush: bool,
    done: bool,
    total: u64,
}

impl Direction {
    fn new(size: usize) -> Self {
        let max = size.max(1);
        Direction {
            buf: vec![0; INITIAL_RELAY_BUFFER.min(max)].into_boxed_slice(),
            max,
            last_read_full: false,
            pos: 0,
            cap: 0,
            read_done: false,
            need_flush: false,
            done: false,
            total: 0,
        }
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
        count: &dyn Fn(u64),
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.pos == self.cap && !self.read_done {
                if self.last_read_full && self.buf.len() < self.max {
                    // Bulk data: switch to the full-size buffer once.
                    self.buf = vec![0; self.max].into_boxed_slice();
                }
                let mut rb = ReadBuf::new(&mut self.buf);
                match reader.as_mut().poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            self.read_done = true;
                        } else {
                            self.pos = 0;
                            self.cap = n;
                            self.last_read_full = n == self.buf.len();
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // Nothing more to read right now: push out what framing layers
                        // (TLS, WebSocket) may still hold before we sleep.
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.pos < self.cap {
                let n = ready!(
                    writer
                        .as_mut()
                        .poll_write(cx, &self.buf[self.pos..self.cap])
                )?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.total += n as u64;
                self.need_flush = true;
                count(n as u64);
            }
            if self.read_done {
                // Half-close: pass the EOF on and let the other direction continue.
                ready!(writer.as_mut().poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Copies `app` ⇄ `net` until both directions reached EOF, or either side fails.
///
/// An EOF from one side is passed on as a write shutdown of the other (half-close); the
/// opposite direction keeps flowing. Byte counts are added to `stats` as they move.
pub async fn relay<A, B>(
    app: &mut A,
    net: &mut B,
    config: &RelayConfig,
    stats: Option<&StatsCounter>,
) -> io::Result<RelayTotals>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut up = Direction::new(config.buffer_size);
    let mut down = Direction::new(config.buffer_size);
    let count_up = |n| {
        if let Some(s) = stats {
            s.add_up(n)
        }
    };
    let count_down = |n| {
        if let Some(s) = stats {
            s.add_down(n)
        }
    };
    poll_fn(|cx| {
        if !up.done
            && let Poll::Ready(Err(e)) =
                up.poll_copy(cx, Pin::new(&mut *app), Pin::new(&mut *net), &count_up)
        {
            return Poll::Ready(Err(e));
        }
        if !down.done
            && let Poll::Ready(Err(e)) =
                down.poll_copy(cx, Pin::new(&mut *net), Pin::new(&mut *app), &count_down)
        {
            return Poll::Ready(Err(e));
        }
        if up.done && down.done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await?;
    Ok(RelayTotals {
        up: up.total,
        down: down.total,
    })
}

/// The relay every driver calls: [`crate::splice::relay_tcp`] when both sides are plain TCP
/// sockets and splicing is enabled, else [`relay`].
pub async fn relay_streams(
    app: &mut dyn Stream,
    net: &mut dyn Stream,
    config: &RelayConfig,
    stats: Option<&StatsCounter>,
) -> io::Result<RelayTotals> {
    #[cfg(target_os = "linux")]
    if config.splice {
        let app_any: &mut (dyn Any + Send) = app;
        if let Some(a) = app_any.downcast_mut::<tokio::net::TcpStream>() {
            let net_any: &mut (dyn Any + Send) = net;
            if let Some(n) = net_any.downcast_mut::<tokio::net::TcpStream>() {
                return crate::splice::relay_tcp(a, n, stats).await;
            }
            return relay(a, net, config, stats).await;
        }
    }
    relay(app, net, config, stats).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn relays_both_ways_with_half_close_and_counts() {
        let (mut app_outer, mut app_inner) = duplex(1024);
        let (mut net_inner, mut net_outer) = duplex(1024);
        let stats = StatsCounter::new("t");
        let task = tokio::spawn(async move {
            let stats = stats;
            let totals = relay(
                &mut app_inner,
                &mut net_inner,
                &RelayConfig {
                    buffer_size: 7,
                    splice: false,
                },
                Some(&stats),
            )
            .await
            .unwrap();
            (totals, stats.snapshot())
        });
        let up: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let up2 = up.clone();
        let writer = tokio::spawn(async move {
            app_outer.write_all(&up2).await.unwrap();
            app_outer.shutdown().await.unwrap();
            let mut back = Vec::new();
            app_outer.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        net_outer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, up);
        // The up direction is closed; the down direction still works.
        net_outer
            .write_all(b"reply after half-close")
            .await
            .unwrap();
        net_outer.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"reply after half-close");
        let (totals, snap) = task.await.unwrap();
        assert_eq!(
            totals,
            RelayTotals {
                up: 100_000,
                down: 22
            }
        );
        assert_eq!((snap.bytes_up, snap.bytes_down), (100_000, 22));
    }

    #[tokio::test]
    async fn grows_from_the_small_buffer_without_losing_bytes() {
        let (mut app_outer, mut app_inner) = duplex(64 * 1024);
        let (mut net_inner, mut net_outer) = duplex(64 * 1024);
        let task = tokio::spawn(async move {
            relay(
                &mut app_inner,
                &mut net_inner,
                &RelayConfig::default(),
                None,
            )
            .await
            .unwrap()
        });
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i * 7 % 256) as u8).collect();
        let d2 = data.clone();
        tokio::spawn(async move {
            app_outer.write_all(&d2).await.unwrap();
            app_outer.shutdown().await.unwrap();
            let mut rest = Vec::new();
            app_outer.read_to_end(&mut rest).await.unwrap();
        });
        let mut got = Vec::new();
        net_outer.read_to_end(&mut got).await.unwrap();
        assert!(got == data);
        net_outer.shutdown().await.unwrap();
        assert_eq!(task.await.unwrap().up, 1_000_003);
    }
}
