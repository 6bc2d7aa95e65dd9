//! The async driver of one smux v2 session over any transport connection.
//!
//! The sans-IO [`Smux`] state sits behind one mutex shared by two driver tasks and by the
//! [`MuxStream`]s (the shape of `ptkit_snowflake::session`, without KCP): the *reader* feeds
//! bytes from the connection into the session and hands out streams the peer opened; the
//! *writer* sends what the session queued and runs its timers. Streams read and write the
//! state directly and wake the writer. Two tasks, so a connection whose send buffer is full
//! never stops us from reading (the two peers cannot deadlock on full buffers).
//!
//! smux has no half-close: shutting a stream down sends FIN and forgets it, so the peer's
//! later bytes on it are dropped (as in Go smux and every smux-based tunnel).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use ptkit_core::Conn;
use ptkit_snowflake::smux::{Event, ReadOutcome, Role, Session as Smux, SmuxConfig, StreamId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{Notify, mpsc};

/// Queued smux output above which stream writers wait (bounds memory per session).
pub const OUTPUT_HIGH_WATER: usize = 256 * 1024;
/// Bytes read from the connection at once.
pub const READ_CHUNK: usize = 64 * 1024;
/// Bytes the writer takes from the session per connection write.
pub const WRITE_CHUNK: usize = 64 * 1024;
/// Streams the peer opened that wait for the application to take them; more are refused.
pub const ACCEPT_BACKLOG: usize = 1024;

/// smux settings for a mux session: Snowflake's, with room for 1,024 streams.
pub fn default_smux_config() -> SmuxConfig {
    SmuxConfig {
        max_streams: 1024,
        ..SmuxConfig::server()
    }
}

#[derive(Default)]
struct Wakers {
    read: Option<Waker>,
    write: Option<Waker>,
}

struct State {
    smux: Smux,
    wakers: HashMap<StreamId, Wakers>,
    output_waiters: Vec<Waker>,
    ended: Option<String>,
}

impl State {
    fn wake_all(&mut self) {
        for w in self.wakers.values_mut() {
            if let Some(w) = w.read.take() {
                w.wake();
            }
            if let Some(w) = w.write.take() {
                w.wake();
            }
        }
        for w in self.output_waiters.drain(..) {
            w.wake();
        }
    }

    /// Routes queued events to wakers; returns streams the peer opened.
    fn dispatch(&mut self) -> Vec<StreamId> {
        let mut opened = Vec::new();
        while let Some(ev) = self.smux.poll_event() {
            match ev {
                Event::Opened(sid) => {
                    self.wakers.insert(sid, Wakers::default());
                    opened.push(sid);
                }
                Event::Readable(sid) => {
                    if let Some(w) = self.wakers.get_mut(&sid).and_then(|w| w.read.take()) {
                        w.wake();
                    }
                }
                Event::Finished(sid) => {
                    if let Some(w) = self.wakers.get_mut(&sid) {
                        if let Some(r) = w.read.take() {
                            r.wake();
                        }
                        if let Some(wr) = w.write.take() {
                            wr.wake();
                        }
                    }
                }
                Event::Writable(sid) => {
                    if let Some(w) = self.wakers.get_mut(&sid).and_then(|w| w.write.take()) {
                        w.wake();
                    }
                }
            }
        }
        if self.ended.is_none() && self.smux.is_closed() {
            let why = self
                .smux
                .close_reason()
                .map_or("closed", |e| e.kind())
                .to_owned();
            self.ended = Some(why);
        }
        if self.ended.is_some() {
            self.wake_all();
        }
        opened
    }
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer (a stream wrote, read or closed; input queued control frames).
    notify: Notify,
    /// Wakes the reader when the session wants input again.
    room: Notify,
}

impl Shared {
    fn lock(&self) -> io::Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| io::Error::other("mux session state poisoned"))
    }

    fn end(&self, why: String) {
        if let Ok(mut st) = self.lock() {
            if st.ended.is_none() {
                st.ended = Some(why);
            }
            st.smux.close_session();
            st.wake_all();
        }
        self.notify.notify_one();
        self.room.notify_one();
    }
}

/// A running session: open streams on it, see whether it is still alive. Cloning shares it.
#[derive(Clone)]
pub struct MuxSession {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MuxSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxSession")
            .field("ended", &self.ended())
            .finish()
    }
}

impl MuxSession {
    /// Starts driving `conn` as `role`; the driver tasks run until the connection or the
    /// session ends. The receiver yields streams the peer opens (at most
    /// [`ACCEPT_BACKLOG`] waiting; more are closed at once).
    pub fn start(
        conn: Conn,
        role: Role,
        config: SmuxConfig,
    ) -> (MuxSession, mpsc::Receiver<MuxStream>) {
        let state = State {
            smux: Smux::new(role, config, Instant::now()),
            wakers: HashMap::new(),
            output_waiters: Vec::new(),
            ended: None,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            notify: Notify::new(),
            room: Notify::new(),
        });
        let (tx, rx) = mpsc::channel(ACCEPT_BACKLOG);
        let (rd, wr) = tokio::io::split(conn);
        tokio::spawn(reader(shared.clone(), rd, tx));
        tokio::spawn(writer(shared.clone(), wr));
        (MuxSession { shared }, rx)
    }

    /// Why the session ended, or `None` while it runs.
    pub fn ended(&self) -> Option<String> {
        self.shared.lock().ok().and_then(|s| s.ended.clone())
    }

    /// Streams open now.
    pub fn stream_count(&self) -> usize {
        self.shared.lock().map_or(0, |s| s.smux.stream_count())
    }

    /// Opens a stream (sends SYN).
    pub fn open_stream(&self) -> io::Result<MuxStream> {
        let mut st = self.shared.lock()?;
        if let Some(why) = &st.ended {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("mux session ended: {why}"),
            ));
        }
        let sid = st
            .smux
            .open_stream()
            .map_err(|e| io::Error::other(e.to_string()))?;
        st.wakers.insert(sid, Wakers::default());
        drop(st);
        self.shared.notify.notify_one();
        Ok(MuxStream {
            shared: self.shared.clone(),
            sid,
            closed: false,
        })
    }

    /// Ends the session and every stream on it.
    pub fn close(&self) {
        self.shared.end("closed locally".into());
    }
}

async fn reader(
    shared: Arc<Shared>,
    mut rd: tokio::io::ReadHalf<Conn>,
    opened_tx: mpsc::Sender<MuxStream>,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        // Back-pressure: stop reading while the streams' unread data is over the limit.
        loop {
            let room = shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match shared.lock() {
                Ok(st) if st.ended.is_some() => return,
                Ok(st) if st.smux.wants_input() => break,
                Ok(_) => {}
                Err(_) => return,
            }
            room.await;
        }
        let n = match rd.read(&mut buf).await {
            Ok(0) => {
                shared.end("connection closed".into());
                return;
            }
            Ok(n) => n,
            Err(e) => {
                shared.end(format!("connection failed: {e}"));
                return;
            }
        };
        let opened = {
            let Ok(mut st) = shared.lock() else { return };
            if let Err(e) = st.smux.handle_input(&buf[..n], Instant::now()) {
                tracing::debug!("mux session protocol error: {e}");
            }
            st.dispatch()
        };
        shared.notify.notify_one();
        for sid in opened {
            let stream = MuxStream {
                shared: shared.clone(),
                sid,
                closed: false,
            };
            // A full backlog refuses the stream (dropping it sends FIN).
            if let Err(mpsc::error::TrySendError::Full(s) | mpsc::error::TrySendError::Closed(s)) =
                opened_tx.try_send(stream)
            {
                tracing::debug!(sid = s.id(), "mux accept backlog full; stream refused");
            }
        }
    }
}

async fn writer(shared: Arc<Shared>, mut wr: tokio::io::WriteHalf<Conn>) {
    let mut frames: Vec<Bytes> = Vec::new();
    loop {
        let notified = shared.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (deadline, ended) = {
            let Ok(mut st) = shared.lock() else { return };
            st.smux.handle_timeout(Instant::now());
            let _ = st.dispatch();
            let mut total = 0;
            while total < WRITE_CHUNK * 4 {
                let Some(f) = st.smux.poll_transmit(WRITE_CHUNK) else {
                    break;
                };
                total += f.len();
                frames.push(f);
            }
            if st.smux.pending_output() < OUTPUT_HIGH_WATER / 2 {
                for w in st.output_waiters.drain(..) {
                    w.wake();
                }
            }
            (st.smux.poll_timeout(), st.ended.is_some())
        };
        if !frames.is_empty() {
            for f in frames.drain(..) {
                if let Err(e) = wr.write_all(&f).await {
                    shared.end(format!("connection write failed: {e}"));
                    return;
                }
            }
            if let Err(e) = wr.flush().await {
                shared.end(format!("connection flush failed: {e}"));
                return;
            }
            continue;
        }
        if ended {
            let _ = wr.shutdown().await;
            return;
        }
        match deadline {
            Some(at) => {
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep_until(at.into()) => {}
                }
            }
            None => notified.await,
        }
    }
}

/// One mux stream: `AsyncRead + AsyncWrite`. Dropping or shutting it down sends FIN.
pub struct MuxStream {
    shared: Arc<Shared>,
    sid: StreamId,
    closed: bool,
}

impl std::fmt::Debug for MuxStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxStream").field("sid", &self.sid).finish()
    }
}

fn ended_error(st: &State) -> Option<io::Error> {
    st.ended.as_ref().map(|why| {
        io::Error::new(
            io::ErrorKind::ConnectionReset,
            format!("mux session ended: {why}"),
        )
    })
}

impl MuxStream {
    /// The smux stream id.
    pub fn id(&self) -> StreamId {
        self.sid
    }

    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        if let Ok(mut st) = self.shared.lock() {
            st.smux.close(self.sid);
            st.wakers.remove(&self.sid);
        }
        self.shared.notify.notify_one();
        self.shared.room.notify_one();
    }
}

impl AsyncRead for MuxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Ok(()));
        }
        let mut st = this.shared.lock()?;
        let out = buf.initialize_unfilled();
        match st.smux.read(this.sid, out) {
            Ok(ReadOutcome::Data(n)) => {
                buf.advance(n);
                let flush = st.smux.pending_output() > 0;
                let room = st.smux.wants_input();
                drop(st);
                if flush {
                    this.shared.notify.notify_one();
                }
                if room {
                    this.shared.room.notify_one();
                }
                Poll::Ready(Ok(()))
            }
            Ok(ReadOutcome::Eof) => Poll::Ready(Ok(())),
            Ok(ReadOutcome::WouldBlock) => {
                if let Some(e) = ended_error(&st) {
                    return Poll::Ready(Err(e));
                }
                if let Some(w) = st.wakers.get_mut(&this.sid) {
                    w.read = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                e.to_string(),
            ))),
        }
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "mux stream closed",
            )));
        }
        let mut st = this.shared.lock()?;
        if let Some(e) = ended_error(&st) {
            return Poll::Ready(Err(e));
        }
        if st.smux.pending_output() >= OUTPUT_HIGH_WATER {
            st.output_waiters.push(cx.waker().clone());
            drop(st);
            this.shared.notify.notify_one();
            return Poll::Pending;
        }
        match st.smux.write(this.sid, buf) {
            Ok(0) if !buf.is_empty() => {
                if let Some(w) = st.wakers.get_mut(&this.sid) {
                    w.write = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Ok(n) => {
                drop(st);
                this.shared.notify.notify_one();
                Poll::Ready(Ok(n))
            }
            Err(e) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                e.to_string(),
            ))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// smux has no half-close: shutting down sends FIN and forgets the stream.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().close();
        Poll::Ready(Ok(()))
    }
}

impl Drop for MuxStream {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn streams_both_ways_over_a_duplex() {
        let (a, b) = tokio::io::duplex(4096);
        let (client, _) = MuxSession::start(Box::new(a), Role::Client, default_smux_config());
        let (_server, mut accepted) =
            MuxSession::start(Box::new(b), Role::Server, default_smux_config());
        let mut tasks = Vec::new();
        for i in 0..20u8 {
            let mut s = client.open_stream().unwrap();
            tasks.push(tokio::spawn(async move {
                let data: Vec<u8> = (0..200_000u32).map(|x| (x as u8) ^ i).collect();
                s.write_all(&data).await.unwrap();
                let mut back = vec![0; data.len()];
                s.read_exact(&mut back).await.unwrap();
                assert_eq!(back, data);
            }));
        }
        tokio::spawn(async move {
            while let Some(mut s) = accepted.recv().await {
                tokio::spawn(async move {
                    let mut buf = vec![0; 8192];
                    loop {
                        let n = s.read(&mut buf).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        s.write_all(&buf[..n]).await.unwrap();
                    }
                });
            }
        });
        for t in tasks {
            tokio::time::timeout(std::time::Duration::from_secs(20), t)
                .await
                .unwrap()
                .unwrap();
        }
    }

    #[tokio::test]
    async fn connection_loss_ends_every_stream() {
        let (a, b) = tokio::io::duplex(4096);
        let (client, _) = MuxSession::start(Box::new(a), Role::Client, default_smux_config());
        let mut s = client.open_stream().unwrap();
        drop(b);
        let mut buf = [0u8; 4];
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap();
        assert!(r.is_err());
        assert!(client.ended().is_some());
        assert!(client.open_stream().is_err());
    }
}
