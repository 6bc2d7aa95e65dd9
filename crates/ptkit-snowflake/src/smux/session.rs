//! The smux session state machine.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use super::frame::{self, Frame, FrameDecoder, INITIAL_PEER_WINDOW, MAX_PAYLOAD};
use super::{Event, ReadOutcome, Role, SmuxConfig, SmuxError, SmuxStats, StreamId};

/// Largest window we believe from a peer's UPD. Go computes windows as `int32`; clamping
/// keeps `written − consumed` comparisons exact in 32-bit wrapping arithmetic.
const MAX_PEER_WINDOW: u32 = i32::MAX as u32;

/// PSH payloads shorter than this are copied into a stream's `tail` instead of being kept as
/// chunks of their own, so a peer sending tiny frames cannot make per-chunk overhead dwarf
/// the window (1-byte frames would otherwise cost ~60 bytes of bookkeeping per byte).
const SMALL_CHUNK: usize = 4096;
/// `tail` is moved into the chunk queue once it holds this much.
const TAIL_FLUSH: usize = 16 * 1024;

/// One open stream.
#[derive(Debug)]
pub(super) struct Stream {
    // Receive side.
    /// Received, unread chunks (each at least `SMALL_CHUNK` bytes when queued, or a flushed
    /// `tail`), so at most about `window / SMALL_CHUNK` of them.
    pub(super) recv: VecDeque<Bytes>,
    /// Small payloads received after everything in `recv`.
    pub(super) tail: BytesMut,
    /// Sum of `recv` and `tail` lengths.
    pub(super) recv_len: usize,
    /// Total PSH payload bytes received.
    pub(super) received: u64,
    /// Total bytes read by the application.
    pub(super) num_read: u64,
    /// Bytes read since the last UPD we sent (Go `incr`).
    pub(super) incr: u64,
    /// Total bytes the peer may have sent: the largest `consumed + window` we ever granted
    /// (the peer may not have seen our latest UPD yet, so the largest grant counts).
    pub(super) recv_limit: u64,
    /// The peer sent FIN.
    pub(super) fin_received: bool,

    // Send side.
    /// Total PSH payload bytes queued (Go `numWritten`, here without wrapping).
    pub(super) written: u64,
    /// The peer's last `consumed` (wrapping 32-bit, compared with `written as u32`).
    pub(super) peer_consumed: u32,
    /// The peer's last window (clamped to `MAX_PEER_WINDOW`).
    pub(super) peer_window: u32,
    /// Set when the peer acknowledged more than we sent; all writes fail with it.
    pub(super) broken: Option<SmuxError>,
    /// A write was cut short (window or output space): send `Writable` when it reopens.
    pub(super) write_blocked: bool,

    // Event coalescing.
    pub(super) readable_queued: bool,
    pub(super) writable_queued: bool,
}

impl Stream {
    fn new() -> Self {
        Stream {
            recv: VecDeque::new(),
            tail: BytesMut::new(),
            recv_len: 0,
            received: 0,
            num_read: 0,
            incr: 0,
            recv_limit: u64::from(INITIAL_PEER_WINDOW),
            fin_received: false,
            written: 0,
            peer_consumed: 0,
            peer_window: INITIAL_PEER_WINDOW,
            broken: None,
            write_blocked: false,
            readable_queued: false,
            writable_queued: false,
        }
    }

    /// Appends received data (after the window check).
    fn push(&mut self, data: Bytes) {
        if data.len() < SMALL_CHUNK {
            self.tail.extend_from_slice(&data);
            if self.tail.len() >= TAIL_FLUSH {
                self.recv.push_back(self.tail.split().freeze());
            }
        } else {
            if !self.tail.is_empty() {
                self.recv.push_back(self.tail.split().freeze());
            }
            self.recv.push_back(data);
        }
    }

    /// Copies buffered data into `buf`, returning how much.
    fn pop(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() {
            let Some(chunk) = self.recv.front_mut() else {
                break;
            };
            let take = chunk.len().min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&chunk[..take]);
            chunk.advance(take);
            n += take;
            if chunk.is_empty() {
                self.recv.pop_front();
            }
        }
        if n < buf.len() && !self.tail.is_empty() {
            let take = self.tail.len().min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&self.tail[..take]);
            self.tail.advance(take);
            n += take;
            if self.tail.is_empty() && self.tail.capacity() > 2 * TAIL_FLUSH {
                self.tail = BytesMut::new();
            }
        }
        self.recv_len -= n;
        n
    }

    /// Bytes the peer's window still allows us to send.
    fn window_available(&self) -> usize {
        // Low 32 bits on purpose: the peer counts in wrapping u32 like Go smux.
        let inflight = (self.written as u32).wrapping_sub(self.peer_consumed);
        // `update` guarantees inflight <= i32::MAX here (a negative difference marks the
        // stream broken), and peer_window <= i32::MAX.
        let avail = self.peer_window.saturating_sub(inflight);
        usize::try_from(avail).unwrap_or(usize::MAX)
    }
}

/// An smux v2 session over one reliable byte stream. See the [module docs](super).
#[derive(Debug)]
pub struct Session {
    pub(super) role: Role,
    pub(super) config: SmuxConfig,
    pub(super) decoder: FrameDecoder,
    pub(super) streams: BTreeMap<StreamId, Stream>,
    pub(super) events: VecDeque<Event>,
    /// Frames without ordering constraints against data (SYN, UPD, NOP, FIN for a refused
    /// SYN); sent before `data` at frame boundaries.
    pub(super) control: VecDeque<Bytes>,
    pub(super) control_len: usize,
    /// PSH frames and FINs of local closes, in order.
    pub(super) data: VecDeque<Bytes>,
    pub(super) data_len: usize,
    /// The unsent rest of a frame that `poll_transmit` split.
    pub(super) current: Bytes,
    /// The last stream id handed out locally (Go `nextStreamID`).
    pub(super) last_local_id: u32,
    /// The local id space is used up (Go `goAway`).
    pub(super) go_away: bool,
    /// Some write was cut short by `max_pending_output`.
    pub(super) output_blocked: bool,
    /// When a frame was last received.
    pub(super) last_recv: Instant,
    /// When the next NOP is due.
    pub(super) next_nop: Option<Instant>,
    pub(super) closed: Option<SmuxError>,
    pub(super) stats: SmuxStats,
}

impl Session {
    /// A new session. `config` values out of range are clamped (see [`SmuxConfig`]).
    pub fn new(role: Role, mut config: SmuxConfig, now: Instant) -> Session {
        config.keepalive_interval = config.keepalive_interval.max(Duration::from_millis(1));
        config.max_frame_size = config.max_frame_size.clamp(1, MAX_PAYLOAD);
        config.max_stream_buffer = config.max_stream_buffer.clamp(1, MAX_PEER_WINDOW);
        config.max_pending_output = config.max_pending_output.max(1);
        let next_nop = now.checked_add(config.keepalive_interval);
        Session {
            role,
            config,
            decoder: FrameDecoder::new(),
            streams: BTreeMap::new(),
            events: VecDeque::new(),
            control: VecDeque::new(),
            control_len: 0,
            data: VecDeque::new(),
            data_len: 0,
            current: Bytes::new(),
            last_local_id: match role {
                Role::Client => 1,
                Role::Server => 0,
            },
            go_away: false,
            output_blocked: false,
            last_recv: now,
            next_nop,
            closed: None,
            stats: SmuxStats::default(),
        }
    }

    /// This session's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The effective (clamped) configuration.
    pub fn config(&self) -> &SmuxConfig {
        &self.config
    }

    /// Feeds bytes received from the underlying stream, in any chunking (a frame may be
    /// split across calls). On a protocol error the session is closed and the error returned
    /// (also kept as [`close_reason`](Self::close_reason)); after that every call fails with
    /// [`SmuxError::Closed`].
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) -> Result<(), SmuxError> {
        if self.closed.is_some() {
            return Err(SmuxError::Closed);
        }
        let mut input = bytes;
        loop {
            let frame = match self.decoder.decode(&mut input) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.kill(e.clone());
                    return Err(e);
                }
            };
            // Go sets `dataReady` for every header read, whatever it carries.
            self.last_recv = now;
            self.stats.frames_received += 1;
            if let Err(e) = self.handle_frame(frame) {
                self.kill(e.clone());
                return Err(e);
            }
        }
    }

    fn handle_frame(&mut self, frame: Frame) -> Result<(), SmuxError> {
        match frame {
            Frame::Nop { .. } => self.stats.nop_received += 1,
            Frame::Syn { sid } => {
                if self.streams.contains_key(&sid) {
                    self.stats.syn_duplicate += 1;
                } else if self.streams.len() >= self.config.max_streams {
                    self.stats.streams_rejected += 1;
                    if self.control_len < self.config.max_pending_output {
                        self.stats.fin_sent += 1;
                        self.queue_control(&Frame::Fin { sid })?;
                    } else {
                        self.stats.control_dropped += 1;
                    }
                } else {
                    self.streams.insert(sid, Stream::new());
                    self.stats.streams_accepted += 1;
                    self.events.push_back(Event::Opened(sid));
                }
            }
            Frame::Fin { sid } => match self.streams.get_mut(&sid) {
                Some(stream) => {
                    if !stream.fin_received {
                        stream.fin_received = true;
                        self.stats.fin_received += 1;
                        self.events.push_back(Event::Finished(sid));
                    }
                }
                None => self.stats.frames_unknown_stream += 1,
            },
            Frame::Psh { sid, data } => {
                if data.is_empty() {
                    // Go does not even look the stream up.
                    return Ok(());
                }
                let Some(stream) = self.streams.get_mut(&sid) else {
                    self.stats.frames_unknown_stream += 1;
                    self.stats.bytes_discarded += data.len() as u64;
                    return Ok(());
                };
                let received = stream.received + data.len() as u64;
                if received > stream.recv_limit {
                    return Err(SmuxError::WindowExceeded {
                        sid,
                        received,
                        allowed: stream.recv_limit,
                    });
                }
                stream.received = received;
                stream.recv_len += data.len();
                self.stats.bytes_received += data.len() as u64;
                stream.push(data);
                if !stream.readable_queued {
                    stream.readable_queued = true;
                    self.events.push_back(Event::Readable(sid));
                }
            }
            Frame::Upd {
                sid,
                consumed,
                window,
            } => {
                let room = self.payload_room();
                let Some(stream) = self.streams.get_mut(&sid) else {
                    self.stats.frames_unknown_stream += 1;
                    return Ok(());
                };
                self.stats.upd_received += 1;
                let written = stream.written as u32;
                // As Go's `writeV2`: int32(numWritten − peerConsumed) < 0 is ErrConsumed.
                if (written.wrapping_sub(consumed) as i32) < 0 {
                    self.stats.bad_upd += 1;
                    if stream.broken.is_none() {
                        stream.broken = Some(SmuxError::ConsumedMoreThanSent {
                            sid,
                            consumed,
                            written,
                        });
                    }
                } else {
                    stream.peer_consumed = consumed;
                    stream.peer_window = window.min(MAX_PEER_WINDOW);
                }
                let can_write = stream.broken.is_some() || stream.window_available() > 0;
                if stream.write_blocked && can_write {
                    if room > 0 || stream.broken.is_some() {
                        stream.write_blocked = false;
                        if !stream.writable_queued {
                            stream.writable_queued = true;
                            self.events.push_back(Event::Writable(sid));
                        }
                    } else {
                        self.output_blocked = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// The next stream event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front()?;
        if let Some(stream) = self.streams.get_mut(&event.sid()) {
            match event {
                Event::Readable(_) => stream.readable_queued = false,
                Event::Writable(_) => stream.writable_queued = false,
                Event::Opened(_) | Event::Finished(_) => {}
            }
        }
        Some(event)
    }

    /// Opens a stream (queues its SYN) and returns its id: odd ids from 3 for a client, even
    /// ids from 2 for a server, as Go smux.
    pub fn open_stream(&mut self) -> Result<StreamId, SmuxError> {
        if self.closed.is_some() {
            return Err(SmuxError::Closed);
        }
        if self.streams.len() >= self.config.max_streams {
            return Err(SmuxError::TooManyStreams {
                limit: self.config.max_streams,
            });
        }
        loop {
            if self.go_away {
                return Err(SmuxError::StreamIdsExhausted);
            }
            let sid = self.last_local_id.wrapping_add(2);
            self.last_local_id = sid;
            if sid <= 1 {
                // Wrapped around (Go: `sid == sid%2`).
                self.go_away = true;
                continue;
            }
            // Only a misbehaving peer SYNs ids of our parity; skip over any it took.
            if self.streams.contains_key(&sid) {
                continue;
            }
            self.queue_control(&Frame::Syn { sid })?;
            self.streams.insert(sid, Stream::new());
            self.stats.streams_opened += 1;
            return Ok(sid);
        }
    }

    /// Reads buffered data of stream `sid` into `buf`. After the first read and then every
    /// `max_stream_buffer / 2` bytes read, queues `UPD(consumed, max_stream_buffer)`.
    ///
    /// Buffered data stays readable after the peer's FIN ([`ReadOutcome::Eof`] comes after
    /// it) and after the session died (then [`SmuxError::Closed`] comes after it).
    pub fn read(&mut self, sid: StreamId, buf: &mut [u8]) -> Result<ReadOutcome, SmuxError> {
        let alive = self.closed.is_none();
        let Some(stream) = self.streams.get_mut(&sid) else {
            return Err(if alive {
                SmuxError::UnknownStream { sid }
            } else {
                SmuxError::Closed
            });
        };
        if buf.is_empty() {
            return Ok(ReadOutcome::Data(0));
        }
        let n = stream.pop(buf);
        if n == 0 {
            return if stream.fin_received {
                Ok(ReadOutcome::Eof)
            } else if !alive {
                Err(SmuxError::Closed)
            } else {
                Ok(ReadOutcome::WouldBlock)
            };
        }
        stream.num_read += n as u64;
        stream.incr += n as u64;
        let window = self.config.max_stream_buffer;
        // Go `tryReadv2`: `incr >= MaxStreamBuffer/2 || numRead == n` (the first read).
        if alive && (stream.incr >= u64::from(window / 2) || stream.num_read == n as u64) {
            stream.incr = 0;
            stream.recv_limit = stream.recv_limit.max(stream.num_read + u64::from(window));
            let consumed = stream.num_read as u32; // wrapping on the wire, as Go's uint32
            self.stats.upd_sent += 1;
            self.queue_control(&Frame::Upd {
                sid,
                consumed,
                window,
            })?;
        }
        Ok(ReadOutcome::Data(n))
    }

    /// Bytes buffered for reading on stream `sid` (0 for an unknown stream).
    pub fn readable(&self, sid: StreamId) -> usize {
        self.streams.get(&sid).map_or(0, |s| s.recv_len)
    }

    /// Queues PSH frames (at most `max_frame_size` payload each) for as much of `data` as the
    /// peer's window and `max_pending_output` allow, and returns how much was taken.
    /// `Ok(0)` for non-empty `data` means "would block": wait for [`Event::Writable`] (or
    /// [`Event::Finished`]).
    ///
    /// Fails if the session is closed, the stream is not open, the peer closed it
    /// ([`SmuxError::StreamFinished`]; the peer has forgotten it, so data would be dropped)
    /// or the peer acknowledged more than we sent ([`SmuxError::ConsumedMoreThanSent`]).
    pub fn write(&mut self, sid: StreamId, data: &[u8]) -> Result<usize, SmuxError> {
        if self.closed.is_some() {
            return Err(SmuxError::Closed);
        }
        let room = self.payload_room();
        let Some(stream) = self.streams.get_mut(&sid) else {
            return Err(SmuxError::UnknownStream { sid });
        };
        if let Some(e) = &stream.broken {
            return Err(e.clone());
        }
        if stream.fin_received {
            return Err(SmuxError::StreamFinished { sid });
        }
        if data.is_empty() {
            return Ok(0);
        }
        let window = stream.window_available();
        let n = data.len().min(window).min(room);
        if n < data.len() {
            stream.write_blocked = true;
            if room < data.len() && room <= window {
                self.output_blocked = true;
            }
        }
        stream.written += n as u64;
        for chunk in data[..n].chunks(self.config.max_frame_size) {
            let bytes = frame::encode_psh(sid, chunk)?;
            self.data_len += bytes.len();
            self.data.push_back(bytes);
            self.stats.frames_sent += 1;
        }
        self.stats.bytes_sent += n as u64;
        Ok(n)
    }

    /// How many bytes [`write`](Self::write) would accept on stream `sid` now.
    pub fn writable(&self, sid: StreamId) -> usize {
        if self.closed.is_some() {
            return 0;
        }
        match self.streams.get(&sid) {
            Some(s) if s.broken.is_none() && !s.fin_received => {
                s.window_available().min(self.payload_room())
            }
            _ => 0,
        }
    }

    /// Closes stream `sid`: queues one FIN (after the stream's queued data) and forgets the
    /// stream, dropping unread data and its queued events. Unknown ids are ignored.
    pub fn close(&mut self, sid: StreamId) {
        if self.streams.remove(&sid).is_none() {
            return;
        }
        self.events.retain(|e| e.sid() != sid);
        if self.closed.is_some() {
            return;
        }
        match (Frame::Fin { sid }).to_bytes() {
            Ok(bytes) => {
                self.data_len += bytes.len();
                self.data.push_back(bytes);
                self.stats.frames_sent += 1;
                self.stats.fin_sent += 1;
            }
            Err(e) => tracing::error!("smux: cannot encode FIN: {e}"),
        }
    }

    /// Closes the whole session locally: nothing more is sent (Go `Session.Close` does not
    /// flush either). Reads can still drain buffered data.
    pub fn close_session(&mut self) {
        self.kill(SmuxError::Closed);
    }

    /// The next bytes for the underlying stream, at most `max` (the caller's send capacity);
    /// frames may be split across calls. `None` when nothing is pending (or `max` is 0).
    pub fn poll_transmit(&mut self, max: usize) -> Option<Bytes> {
        if max == 0 || self.pending_output() == 0 {
            return None;
        }
        let mut out = BytesMut::new();
        let mut single: Option<Bytes> = None;
        while out.len() + single.as_ref().map_or(0, Bytes::len) < max {
            let mut next = if !self.current.is_empty() {
                std::mem::take(&mut self.current)
            } else if let Some(b) = self.control.pop_front() {
                self.control_len -= b.len();
                b
            } else if let Some(b) = self.data.pop_front() {
                self.data_len -= b.len();
                b
            } else {
                break;
            };
            let used = out.len() + single.as_ref().map_or(0, Bytes::len);
            let space = max - used;
            if next.len() > space {
                self.current = next.split_off(space);
            }
            // Avoid copying when one frame (or frame piece) makes up the whole output.
            if used == 0 {
                single = Some(next);
            } else {
                if let Some(first) = single.take() {
                    out.extend_from_slice(&first);
                }
                out.extend_from_slice(&next);
            }
        }
        self.wake_output_blocked();
        match single {
            Some(b) => Some(b),
            None if out.is_empty() => None,
            None => Some(out.freeze()),
        }
    }

    /// Sends `Writable` to writers that were stopped by `max_pending_output` once half of it
    /// is free again.
    fn wake_output_blocked(&mut self) {
        let queued = self.data_len + self.current.len();
        if !self.output_blocked || queued > self.config.max_pending_output / 2 {
            return;
        }
        self.output_blocked = false;
        for (&sid, stream) in self.streams.iter_mut() {
            if stream.write_blocked && (stream.window_available() > 0 || stream.broken.is_some()) {
                stream.write_blocked = false;
                if !stream.writable_queued {
                    stream.writable_queued = true;
                    self.events.push_back(Event::Writable(sid));
                }
            }
        }
    }

    /// Bytes waiting for [`poll_transmit`](Self::poll_transmit).
    pub fn pending_output(&self) -> usize {
        self.current.len() + self.control_len + self.data_len
    }

    /// False while unread data across all streams is at least `max_receive_buffer`: the
    /// driver should stop feeding input until the application reads (Go's token bucket).
    pub fn wants_input(&self) -> bool {
        self.buffered_input() < self.config.max_receive_buffer
    }

    /// Received but unread bytes across all streams, plus a partially received frame.
    pub fn buffered_input(&self) -> usize {
        self.decoder.buffered() + self.streams.values().map(|s| s.recv_len).sum::<usize>()
    }

    /// Advances time: queues a NOP every keepalive interval and closes the session with
    /// [`SmuxError::KeepaliveTimeout`] once nothing was received for the keepalive timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        if let Some(deadline) = self.last_recv.checked_add(self.config.keepalive_timeout)
            && now >= deadline
        {
            if self.wants_input() {
                self.kill(SmuxError::KeepaliveTimeout);
                return;
            }
            // Go: a receive loop blocked on a full buffer does not count as silence.
            self.last_recv = now;
        }
        if let Some(due) = self.next_nop
            && now >= due
        {
            if self.control_len < self.config.max_pending_output {
                self.stats.nop_sent += 1;
                if let Err(e) = self.queue_control(&Frame::Nop { sid: 0 }) {
                    tracing::error!("smux: cannot encode NOP: {e}");
                }
            } else {
                self.stats.control_dropped += 1;
            }
            let mut next = due.checked_add(self.config.keepalive_interval);
            if next.is_some_and(|n| n <= now) {
                // Far behind (the driver slept): no burst of NOPs, just resume the rhythm.
                next = now.checked_add(self.config.keepalive_interval);
            }
            self.next_nop = next;
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next (`None` once closed).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        let dead = self.last_recv.checked_add(self.config.keepalive_timeout);
        match (self.next_nop, dead) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// True once the session died (protocol error, keepalive timeout or local close).
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Why the session died.
    pub fn close_reason(&self) -> Option<&SmuxError> {
        self.closed.as_ref()
    }

    /// Streams currently open (including peer-finished ones not yet closed locally).
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Counters.
    pub fn stats(&self) -> SmuxStats {
        self.stats
    }

    /// Stream payload bytes that still fit in `max_pending_output` (frame headers and a
    /// partly sent frame count against it).
    fn payload_room(&self) -> usize {
        let room = self
            .config
            .max_pending_output
            .saturating_sub(self.data_len + self.current.len());
        let frame = self.config.max_frame_size + frame::HEADER_LEN;
        room.saturating_sub(frame::HEADER_LEN * room.div_ceil(frame))
    }

    fn queue_control(&mut self, frame: &Frame) -> Result<(), SmuxError> {
        let bytes = frame.to_bytes()?;
        self.control_len += bytes.len();
        self.control.push_back(bytes);
        self.stats.frames_sent += 1;
        Ok(())
    }

    fn kill(&mut self, reason: SmuxError) {
        if self.closed.is_some() {
            return;
        }
        tracing::debug!(kind = reason.kind(), "smux session closed: {reason}");
        self.closed = Some(reason);
        self.control.clear();
        self.control_len = 0;
        self.data.clear();
        self.data_len = 0;
        self.current = Bytes::new();
        self.next_nop = None;
    }
}

/// Fuzzing entry point: feeds `data` (after a control byte) to a session in pseudo-random
/// chunks while reading, writing, opening and closing streams and advancing a simulated
/// clock, and checks the session's memory bounds. Never panics unless an invariant breaks.
pub fn fuzz_frames(data: &[u8]) {
    let Some((&ctl, mut input)) = data.split_first() else {
        return;
    };
    let role = if ctl & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let config = SmuxConfig {
        max_streams: 8,
        max_pending_output: 4096,
        max_stream_buffer: 8192,
        max_frame_size: 1000,
        ..SmuxConfig::server()
    };
    let mut now = Instant::now();
    let mut session = Session::new(role, config, now);
    let mut rng = u32::from(ctl) | 0x9e37_0000;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        rng
    };
    let payload = [0x5au8; 3000];
    let mut buf = [0u8; 1500];
    let mut open: Vec<StreamId> = Vec::new();
    while !input.is_empty() && !session.is_closed() {
        let take = (1 + next() as usize % 200).min(input.len());
        let (chunk, rest) = input.split_at(take);
        input = rest;
        let _ = session.handle_input(chunk, now);
        while let Some(event) = session.poll_event() {
            let sid = event.sid();
            match event {
                Event::Opened(_) => open.push(sid),
                Event::Readable(_) | Event::Finished(_) => loop {
                    match session.read(sid, &mut buf[..1 + next() as usize % 1500]) {
                        Ok(ReadOutcome::Data(_)) => {}
                        Ok(ReadOutcome::Eof) => {
                            session.close(sid);
                            open.retain(|&s| s != sid);
                            break;
                        }
                        Ok(ReadOutcome::WouldBlock) | Err(_) => break,
                    }
                },
                Event::Writable(_) => {
                    let _ = session.write(sid, &payload[..next() as usize % 3000]);
                }
            }
        }
        match next() % 8 {
            0 => {
                if let Ok(sid) = session.open_stream() {
                    open.push(sid);
                }
            }
            1 => {
                if let Some(&sid) = open.first() {
                    let _ = session.write(sid, &payload[..next() as usize % 3000]);
                }
            }
            2 => {
                if let Some(sid) = open.pop() {
                    session.close(sid);
                }
            }
            _ => {}
        }
        let _ = session.poll_transmit(next() as usize % 5000);
        now += Duration::from_millis(u64::from(next() % 20_000));
        session.handle_timeout(now);

        let cfg = session.config();
        assert!(session.stream_count() <= cfg.max_streams);
        let fins = usize::try_from(session.stats.fin_sent).unwrap_or(usize::MAX);
        assert!(session.data_len <= (cfg.max_pending_output + 8).saturating_add(8 * fins));
        assert!(session.decoder.buffered() <= frame::HEADER_LEN + MAX_PAYLOAD);
        assert!(session.events.len() <= 4 * cfg.max_streams + 4);
        for s in session.streams.values() {
            let limit = u64::from(INITIAL_PEER_WINDOW.max(cfg.max_stream_buffer));
            assert!(s.recv_len as u64 <= limit);
            assert!(s.recv.len() as u64 <= limit / SMALL_CHUNK as u64 + 1);
        }
    }
}
