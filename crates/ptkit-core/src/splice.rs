//! Zero-copy relaying between two TCP sockets with `splice(2)` through a pipe, so bytes of a
//! TCP-to-TCP hop (the `plain` transport, ExtORPort upstreams) never enter user space.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::stats::StatsCounter;

/// Pipe capacity requested per direction (the kernel may round it; 64 KiB is its default).
pub const PIPE_SIZE: usize = 256 * 1024;

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    size: usize,
}

impl Pipe {
    fn new(size: usize) -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A larger pipe means fewer wake-ups; failure (a low pipe-max-size) just keeps 64 KiB.
        // SAFETY: F_SETPIPE_SZ on a pipe descriptor we own takes an int argument.
        let got =
            unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) };
        let size = if got > 0 { got as usize } else { 64 * 1024 };
        Ok(Pipe { read, write, size })
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call; null offsets mean
    // "current position", as required for sockets and pipes.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One direction: `from` → pipe → `to`, then a write shutdown of `to` at EOF (half-close).
async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    count: &(dyn Fn(u64) + Sync),
) -> io::Result<u64> {
    let pipe = Pipe::new(PIPE_SIZE)?;
    let mut total = 0u64;
    loop {
        let n = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || {
                splice(from.as_raw_fd(), pipe.write.as_raw_fd(), pipe.size)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write)?;
            return Ok(total);
        }
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(pipe.read.as_raw_fd(), to.as_raw_fd(), left)
            }) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(m) => {
                    left -= m;
                    total += m as u64;
                    count(m as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Relays `app` ⇄ `net` with splice; same contract as [`crate::relay::relay`].
pub async fn relay_tcp(
    app: &TcpStream,
    net: &TcpStream,
    stats: Option<&StatsCounter>,
) -> io::Result<crate::relay::RelayTotals> {
    let up = |n| {
        if let Some(s) = stats {
            s.add_up(n)
        }
    };
    let down = |n| {
        if let Some(s) = stats {
            s.add_down(n)
        }
    };
    let (up, down) = tokio::try_join!(one_way(app, net, &up), one_way(net, app, &down))?;
    Ok(crate::relay::RelayTotals { up, down })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn splices_both_ways_with_half_close_and_counts() {
        let (mut app_outer, app_inner) = pair().await;
        let (net_inner, mut net_outer) = pair().await;
        let stats = std::sync::Arc::new(StatsCounter::new("t"));
        let s2 = stats.clone();
        let task =
            tokio::spawn(
                async move { relay_tcp(&app_inner, &net_inner, Some(&s2)).await.unwrap() },
            );
        let up: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
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
        assert!(got == up, "spliced bytes differ");
        net_outer
            .write_all(b"reply after half-close")
            .await
            .unwrap();
        net_outer.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"reply after half-close");
        let totals = task.await.unwrap();
        assert_eq!((totals.up, totals.down), (3_000_000, 22));
        let snap = stats.snapshot();
        assert_eq!((snap.bytes_up, snap.bytes_down), (3_000_000, 22));
    }

    #[tokio::test]
    async fn relay_streams_picks_splice_only_for_two_tcp_sockets() {
        use crate::relay::{RelayConfig, relay_streams};
        let (mut a_outer, a_inner) = pair().await;
        let (b_inner, mut b_outer) = pair().await;
        let mut a: crate::Conn = Box::new(a_inner);
        let mut b: crate::Conn = Box::new(b_inner);
        let t = tokio::spawn(async move {
            relay_streams(&mut *a, &mut *b, &RelayConfig::default(), None)
                .await
                .unwrap()
        });
        a_outer.write_all(b"ping").await.unwrap();
        a_outer.shutdown().await.unwrap();
        let mut got = Vec::new();
        b_outer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping");
        b_outer.shutdown().await.unwrap();
        assert_eq!(t.await.unwrap().up, 4);
    }
}
