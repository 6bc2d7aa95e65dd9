//! One turbotunnel session: a KCP connection carrying an smux session, driven by one task.
//!
//! The sans-IO [`Kcp`] and [`Smux`] state sit behind one mutex, shared by the driver task
//! (packets in, timers, packets out) and by the [`SmuxStream`]s handed to the server loop,
//! which read and write the smux state directly and wake the driver to flush — the shape
//! quinn uses for its connections. Each stream is an ordinary `AsyncRead + AsyncWrite`, so
//! the one relay of `ptkit-core` moves its bytes to tor.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, mpsc};

use crate::kcp::{Kcp, KcpConfig};
use crate::smux::{Event, ReadOutcome, Role, Session as Smux, SmuxConfig, StreamId};

/// Bytes moved from KCP to smux per call: the session's scratch buffer never grows past it,
/// so it is allocated once and stays small while idle.
const RECV_CHUNK: usize = 4 * 1024;

/// smux bytes waiting for KCP above which stream writers wait (bounds memory per session).
pub const SMUX_OUTPUT_HIGH_WATER: usize = 256 * 1024;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// KCP gave up retransmitting (dead link).
    DeadLink,
    /// smux closed: keepalive timeout or a protocol error.
    Smux(&'static str),
    /// Replaced by a new session for the same ClientID, or the server stopped.
    Replaced,
}

impl SessionEnd {
    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SessionEnd::DeadLink => "dead_link",
            SessionEnd::Smux(k) => k,
            SessionEnd::Replaced => "replaced",
        }
    }
}

#[derive(Default)]
struct Wakers {
    read: Option<Waker>,
    write: Option<Waker>,
}

pub(crate) struct State {
    kcp: Kcp,
    smux: Smux,
    epoch: Instant,
    wakers: HashMap<StreamId, Wakers>,
    /// Writers waiting for smux output to drain below the high-water mark.
    output_waiters: Vec<Waker>,
    ended: Option<SessionEnd>,
    recv_buf: Vec<u8>,
}

impl State {
    fn now_ms(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.epoch).as_millis() as u32
    }

    fn wake_all(&mut self) {
        for (_, w) in self.wakers.iter_mut() {
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
}

/// What the driver and the streams share.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the driver (a stream wrote, read or closed).
    notify: Notify,
}

impl Shared {
    fn lock(&self) -> io::Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| io::Error::other("snowflake session state poisoned"))
    }
}

/// Counters a session reports when it ends and while it runs.
#[derive(Debug, Default, Clone, Copy)]
pub struct SessionCounters {
    /// KCP segments retransmitted.
    pub retransmissions: u64,
}

/// A handle on a session: run it (once) in a task, open streams from another handle.
#[derive(Clone)]
pub struct SessionDriver {
    shared: Arc<Shared>,
}

/// Settings for one session (default: Snowflake's KCP settings, smux server role).
#[derive(Debug, Clone, Default)]
pub struct SessionConfig {
    /// KCP settings (Snowflake's by default).
    pub kcp: KcpConfig,
    /// smux settings (server role by default).
    pub smux: SmuxConfig,
}

/// A new session and its driver: call [`SessionDriver::run`] in a task.
pub fn new_session(conv: u32, role: Role, config: &SessionConfig) -> SessionDriver {
    let now = Instant::now();
    let state = State {
        kcp: Kcp::new(conv, config.kcp.clone()),
        smux: Smux::new(role, config.smux.clone(), now),
        epoch: now,
        wakers: HashMap::new(),
        output_waiters: Vec::new(),
        ended: None,
        recv_buf: Vec::new(),
    };
    SessionDriver {
        shared: Arc::new(Shared {
            state: Mutex::new(state),
            notify: Notify::new(),
        }),
    }
}

/// Where the driver sends output and new streams.
pub trait SessionIo: Send + Sync {
    /// Hands one KCP datagram to the transport (a per-ClientID queue); false if dropped.
    fn transmit(&self, datagram: Bytes) -> bool;
    /// A stream the peer opened.
    fn opened(&self, stream: SmuxStream);
}

impl SessionDriver {
    /// Opens a stream (client role).
    pub fn open_stream(&self) -> io::Result<SmuxStream> {
        let mut st = self.shared.lock()?;
        if let Some(end) = st.ended {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("session ended: {}", end.label()),
            ));
        }
        let sid = st
            .smux
            .open_stream()
            .map_err(|e| io::Error::other(e.to_string()))?;
        st.wakers.insert(sid, Wakers::default());
        drop(st);
        self.shared.notify.notify_one();
        Ok(SmuxStream {
            shared: self.shared.clone(),
            sid,
            closed: false,
        })
    }

    /// Runs the session until it ends: `inbound` carries KCP datagrams from the client (the
    /// engine closes it when a new session replaces this one or the server stops).
    pub async fn run(
        self,
        mut inbound: mpsc::Receiver<Bytes>,
        io: Arc<dyn SessionIo>,
    ) -> (SessionEnd, SessionCounters) {
        let shared = self.shared;
        let mut batch: Vec<Bytes> = Vec::new();
        loop {
            let deadline = match shared.lock() {
                Ok(st) => next_deadline(&st),
                Err(_) => break,
            };
            let mut replaced = false;
            tokio::select! {
                biased;
                p = inbound.recv() => match p {
                    Some(p) => {
                        batch.push(p);
                        while batch.len() < 64 {
                            match inbound.try_recv() {
                                Ok(p) => batch.push(p),
                                Err(_) => break,
                            }
                        }
                    }
                    None => replaced = true,
                },
                _ = shared.notify.notified() => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            let Ok(mut st) = shared.lock() else { break };
            if replaced {
                st.ended = Some(SessionEnd::Replaced);
            }
            let now = Instant::now();
            let opened = step(&mut st, &mut batch, now, io.as_ref());
            let ended = st.ended;
            if ended.is_some() {
                st.wake_all();
            }
            let counters = SessionCounters {
                retransmissions: st.kcp.stats().retransmitted_segments,
            };
            drop(st);
            for sid in opened {
                io.opened(SmuxStream {
                    shared: shared.clone(),
                    sid,
                    closed: false,
                });
            }
            if let Some(end) = ended {
                return (end, counters);
            }
        }
        (SessionEnd::Replaced, SessionCounters::default())
    }
}

fn next_deadline(st: &State) -> Instant {
    let now = Instant::now();
    let now_ms = st.now_ms(now);
    let kcp_at = st.kcp.check(now_ms);
    let wait = Duration::from_millis(u64::from(kcp_at.wrapping_sub(now_ms)).min(60_000));
    let mut at = now + wait;
    if let Some(t) = st.smux.poll_timeout() {
        at = at.min(t);
    }
    at
}

/// One turn of the driver: input, timers, events, output. Returns streams the peer opened.
fn step(st: &mut State, batch: &mut Vec<Bytes>, now: Instant, io: &dyn SessionIo) -> Vec<StreamId> {
    let now_ms = st.now_ms(now);
    for p in batch.drain(..) {
        // A bad datagram is dropped; KCP keeps the session.
        let _ = st.kcp.input(&p, now_ms);
    }
    // KCP → smux.
    loop {
        st.recv_buf.clear();
        let n = st.kcp.recv(&mut st.recv_buf, RECV_CHUNK);
        if n == 0 {
            break;
        }
        let State { smux, recv_buf, .. } = st;
        if smux.handle_input(recv_buf, now).is_err() {
            break;
        }
    }
    st.smux.handle_timeout(now);
    let mut opened = Vec::new();
    while let Some(ev) = st.smux.poll_event() {
        match ev {
            Event::Opened(sid) => {
                st.wakers.insert(sid, Wakers::default());
                opened.push(sid);
            }
            Event::Readable(sid) | Event::Finished(sid) => {
                if let Some(w) = st.wakers.get_mut(&sid).and_then(|w| w.read.take()) {
                    w.wake();
                }
            }
            Event::Writable(sid) => {
                if let Some(w) = st.wakers.get_mut(&sid).and_then(|w| w.write.take()) {
                    w.wake();
                }
            }
        }
    }
    // smux → KCP, as far as KCP's send buffer allows.
    let mut sent = false;
    loop {
        let room = st.kcp.send_capacity();
        if room == 0 {
            break;
        }
        let Some(frame) = st.smux.poll_transmit(room) else {
            break;
        };
        st.kcp.send(&frame);
        sent = true;
    }
    if st.smux.pending_output() < SMUX_OUTPUT_HIGH_WATER / 2 {
        for w in st.output_waiters.drain(..) {
            w.wake();
        }
    }
    // kcp-go flushes on every write and otherwise at its interval (ACKs wait for it).
    if sent || (st.kcp.check(now_ms).wrapping_sub(now_ms) as i32) <= 0 {
        st.kcp.update(now_ms);
    }
    while let Some(d) = st.kcp.poll_transmit() {
        io.transmit(d);
    }
    if st.ended.is_none() {
        if st.kcp.is_dead() {
            st.ended = Some(SessionEnd::DeadLink);
        } else if st.smux.is_closed() {
            let kind = st.smux.close_reason().map(|e| e.kind()).unwrap_or("closed");
            st.ended = Some(SessionEnd::Smux(kind));
        }
    }
    opened
}

/// One smux stream: a byte stream to and from the client.
pub struct SmuxStream {
    shared: Arc<Shared>,
    sid: StreamId,
    closed: bool,
}

impl std::fmt::Debug for SmuxStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmuxStream")
            .field("sid", &self.sid)
            .finish()
    }
}

impl SmuxStream {
    /// The smux stream id.
    pub fn id(&self) -> StreamId {
        self.sid
    }

    fn ended(st: &State) -> Option<io::Error> {
        st.ended.map(|e| {
            io::Error::new(
                io::ErrorKind::ConnectionReset,
                format!("snowflake session ended: {}", e.label()),
            )
        })
    }
}

impl AsyncRead for SmuxStream {
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
                // A read may have queued a window update.
                let flush = st.smux.pending_output() > 0;
                drop(st);
                if flush {
                    this.shared.notify.notify_one();
                }
                Poll::Ready(Ok(()))
            }
            Ok(ReadOutcome::Eof) => Poll::Ready(Ok(())),
            Ok(ReadOutcome::WouldBlock) => {
                if let Some(e) = Self::ended(&st) {
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

impl AsyncWrite for SmuxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "smux stream closed",
            )));
        }
        let mut st = this.shared.lock()?;
        if let Some(e) = Self::ended(&st) {
            return Poll::Ready(Err(e));
        }
        if st.smux.pending_output() >= SMUX_OUTPUT_HIGH_WATER {
            st.output_waiters.push(cx.waker().clone());
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
        let this = self.get_mut();
        this.close();
        Poll::Ready(Ok(()))
    }
}

impl SmuxStream {
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
    }
}

impl Drop for SmuxStream {
    fn drop(&mut self) {
        self.close();
    }
}
