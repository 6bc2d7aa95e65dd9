//! The KCP state machine: input, send, receive and timers. Flushing (building output
//! datagrams) is in `flush.rs`.
//!
//! Field names follow kcp-go (`kcp.go: type KCP`) so the two can be read side by side.

use std::collections::{BTreeMap, VecDeque};

use bytes::{Buf, Bytes, BytesMut};

use super::segment::{CMD_ACK, CMD_PUSH, CMD_WASK, CMD_WINS, HEADER_LEN, SegmentHeader};
use super::{KcpConfig, KcpError, KcpStats, MAX_PENDING_ACKS, RTO_DEFAULT, RTO_MAX, RTO_MIN};
use super::{RTO_NODELAY_MIN, segment::first_segment};

/// kcp-go `IKCP_WND_RCV`: the remote window assumed before the peer has said anything.
const INITIAL_RMT_WND: u32 = 32;
/// kcp-go `IKCP_THRESH_INIT`.
pub(super) const THRESH_INIT: u32 = 2;
/// kcp-go `IKCP_THRESH_MIN`.
pub(super) const THRESH_MIN: u32 = 2;
/// `probe` bit: send a window probe (WASK).
pub(super) const ASK_SEND: u32 = 1;
/// `probe` bit: announce our window (WINS).
pub(super) const ASK_TELL: u32 = 2;
/// Bookkeeping bytes charged per received segment against `max_recv_bytes`.
pub(super) const SEG_COST: usize = 32;
/// When nothing is pending, [`Kcp::check`] asks to be called again this much later.
const IDLE_CHECK_MS: u32 = 5_000;

/// Wrapping time/sequence difference, kcp-go `_itimediff`.
#[inline]
pub(super) fn diff(later: u32, earlier: u32) -> i32 {
    later.wrapping_sub(earlier) as i32
}

/// A segment in `snd_buf` (sent at least once, or about to be).
#[derive(Debug)]
pub(super) struct SendSeg {
    pub(super) sn: u32,
    pub(super) frg: u8,
    pub(super) ts: u32,
    pub(super) rto: u32,
    pub(super) resendts: u32,
    pub(super) xmit: u32,
    pub(super) fastack: u32,
    /// Selectively acknowledged; kept (without data) until `una` passes it, as kcp-go does.
    pub(super) acked: bool,
    pub(super) data: Bytes,
}

/// A KCP session: one conversation with one peer.
#[derive(Debug)]
pub struct Kcp {
    pub(super) conv: u32,
    pub(super) mtu: usize,
    pub(super) mss: usize,
    pub(super) dead: bool,
    pub(super) snd_una: u32,
    pub(super) snd_nxt: u32,
    /// `rcv_nxt` extended to 64 bits, so the out-of-order buffer can be an ordered map.
    pub(super) rcv_nxt_abs: u64,
    pub(super) ssthresh: u32,
    pub(super) rx_rttvar: i32,
    pub(super) rx_srtt: i32,
    pub(super) rx_rto: u32,
    pub(super) rx_minrto: u32,
    pub(super) snd_wnd: u32,
    pub(super) rcv_wnd: u32,
    pub(super) rmt_wnd: u32,
    pub(super) cwnd: u32,
    pub(super) incr: u32,
    pub(super) probe: u32,
    pub(super) interval: u32,
    pub(super) ts_flush: u32,
    pub(super) updated: bool,
    pub(super) nodelay: bool,
    pub(super) ts_probe: u32,
    pub(super) probe_wait: u32,
    pub(super) dead_link: u32,
    pub(super) fastresend: u32,
    pub(super) nocwnd: bool,
    pub(super) stream: bool,
    /// The window we last advertised (to reopen it with a WINS after it was 0).
    pub(super) last_adv_wnd: u16,

    /// Accepted by `send`, not yet given a sequence number. Each is at most `mss` bytes.
    pub(super) snd_queue: VecDeque<(u8, BytesMut)>,
    pub(super) snd_buf: VecDeque<SendSeg>,
    /// Data bytes in `snd_queue` and unacknowledged in `snd_buf`.
    pub(super) snd_bytes: usize,
    /// Out-of-order received segments, keyed by absolute sequence number.
    pub(super) rcv_buf: BTreeMap<u64, Bytes>,
    /// In-order data not yet read (empty segments are not kept).
    pub(super) rcv_queue: VecDeque<Bytes>,
    /// Charge (data + [`SEG_COST`] each) of `rcv_buf` and of `rcv_queue`.
    pub(super) rcv_buf_cost: usize,
    pub(super) rcv_queue_cost: usize,
    /// Data bytes in `rcv_queue`.
    pub(super) readable: usize,
    pub(super) acklist: Vec<(u32, u32)>,

    pub(super) output: VecDeque<Bytes>,
    pub(super) output_bytes: usize,
    pub(super) max_recv_bytes: usize,
    pub(super) max_send_bytes: usize,
    pub(super) stats: KcpStats,
}

/// What happened to a PUSH segment inside the receive window.
enum DataOutcome {
    Stored,
    Duplicate,
    NoRoom,
}

impl Kcp {
    /// A new session for conversation `conv`.
    pub fn new(conv: u32, config: KcpConfig) -> Kcp {
        let mtu = config.mtu.clamp(50, 65535);
        Kcp {
            conv,
            mtu,
            mss: mtu - HEADER_LEN,
            dead: false,
            snd_una: 0,
            snd_nxt: 0,
            rcv_nxt_abs: 0,
            ssthresh: THRESH_INIT,
            rx_rttvar: 0,
            rx_srtt: 0,
            rx_rto: RTO_DEFAULT,
            rx_minrto: if config.nodelay {
                RTO_NODELAY_MIN
            } else {
                RTO_MIN
            },
            snd_wnd: u32::from(config.send_window.max(1)),
            rcv_wnd: u32::from(config.recv_window.max(1)),
            rmt_wnd: INITIAL_RMT_WND,
            cwnd: 0,
            incr: 0,
            probe: 0,
            interval: config.interval_ms.clamp(10, 5000),
            ts_flush: 0,
            updated: false,
            nodelay: config.nodelay,
            ts_probe: 0,
            probe_wait: 0,
            dead_link: config.dead_link,
            fastresend: config.fast_resend,
            nocwnd: !config.congestion_control,
            stream: config.stream,
            last_adv_wnd: config.recv_window,
            snd_queue: VecDeque::new(),
            snd_buf: VecDeque::new(),
            snd_bytes: 0,
            rcv_buf: BTreeMap::new(),
            rcv_queue: VecDeque::new(),
            rcv_buf_cost: 0,
            rcv_queue_cost: 0,
            readable: 0,
            acklist: Vec::new(),
            output: VecDeque::new(),
            output_bytes: 0,
            max_recv_bytes: config.max_recv_bytes,
            max_send_bytes: config.max_send_bytes,
            stats: KcpStats::default(),
        }
    }

    /// This session's conversation id.
    pub fn conv(&self) -> u32 {
        self.conv
    }

    /// The next sequence number expected from the peer.
    pub(super) fn rcv_nxt(&self) -> u32 {
        self.rcv_nxt_abs as u32
    }

    /// Processes one datagram (one or more segments) received at `now_ms`.
    ///
    /// Mirrors `kcp.go: KCP.Input`: each segment updates the remote window, drops everything
    /// below its `una` from the send buffer, then ACK marks a segment acknowledged (and counts
    /// skips for fast/early retransmit), PUSH is buffered and acknowledged, WASK asks for a WINS.
    /// Fewer than 24 trailing bytes are ignored. On error, the segments before the bad one stay
    /// applied (see [`KcpError`]). When the peer's `una` freed send buffer, a flush runs at once,
    /// so drain [`Kcp::poll_transmit`] after every call.
    pub fn input(&mut self, datagram: &[u8], now_ms: u32) -> Result<(), KcpError> {
        self.stats.datagrams_received += 1;
        let result = self.input_inner(datagram, now_ms);
        if result.is_err() {
            self.stats.datagrams_rejected += 1;
        }
        result
    }

    fn input_inner(&mut self, datagram: &[u8], now: u32) -> Result<(), KcpError> {
        if datagram.len() < HEADER_LEN {
            return Err(KcpError::TooShort(datagram.len()));
        }
        let old_una = self.snd_una;
        let mut latest_ack_ts = None;
        let mut window_slides = false;
        let mut rest = datagram;
        while let Some(h) = first_segment(rest) {
            // Same check order as kcp-go: conv, then len, then cmd.
            if h.conv != self.conv {
                return Err(KcpError::WrongConv {
                    expected: self.conv,
                    got: h.conv,
                });
            }
            let body = rest.get(HEADER_LEN..).unwrap_or_default();
            let split = usize::try_from(h.len)
                .ok()
                .and_then(|len| body.split_at_checked(len));
            let Some((data, after)) = split else {
                return Err(KcpError::LenOverflow {
                    len: h.len,
                    remaining: body.len(),
                });
            };
            if !h.has_valid_cmd() {
                return Err(KcpError::BadCommand(h.cmd));
            }
            self.rmt_wnd = u32::from(h.wnd);
            if self.parse_una(h.una) > 0 {
                window_slides = true;
            }
            self.shrink_buf();
            match h.cmd {
                CMD_ACK => {
                    self.parse_ack(h.sn);
                    self.parse_fastack(h.sn, h.ts);
                    latest_ack_ts = Some(h.ts);
                }
                CMD_PUSH => self.input_push(&h, data),
                CMD_WASK => self.probe |= ASK_TELL,
                CMD_WINS => {}
                _ => return Err(KcpError::BadCommand(h.cmd)),
            }
            self.stats.segments_received += 1;
            rest = after;
        }

        if let Some(ts) = latest_ack_ts {
            let rtt = diff(now, ts);
            if rtt >= 0 {
                self.update_ack(rtt);
            }
        }
        if !self.nocwnd && diff(self.snd_una, old_una) > 0 {
            self.grow_cwnd();
        }
        if window_slides {
            self.flush(now, false);
        }
        Ok(())
    }

    fn input_push(&mut self, h: &SegmentHeader, data: &[u8]) {
        let rcv_nxt = self.rcv_nxt();
        if diff(h.sn, rcv_nxt.wrapping_add(self.rcv_wnd)) >= 0 {
            self.stats.out_of_window_segments += 1;
            return;
        }
        if diff(h.sn, rcv_nxt) < 0 {
            // Already delivered: the ACK was lost, acknowledge again.
            self.stats.duplicate_segments += 1;
            self.ack_push(h.sn, h.ts);
            return;
        }
        match self.parse_data(h.sn, data) {
            DataOutcome::Stored => self.ack_push(h.sn, h.ts),
            DataOutcome::Duplicate => {
                self.stats.duplicate_segments += 1;
                self.ack_push(h.sn, h.ts);
            }
            // Not acknowledged: the peer will send it again.
            DataOutcome::NoRoom => self.stats.no_room_segments += 1,
        }
    }

    /// `kcp.go: KCP.update_ack` (RFC 6298 smoothing, in kcp-go's integer arithmetic).
    fn update_ack(&mut self, rtt: i32) {
        if self.rx_srtt == 0 {
            self.rx_srtt = rtt;
            self.rx_rttvar = rtt >> 1;
        } else {
            let mut delta = rtt.wrapping_sub(self.rx_srtt);
            self.rx_srtt = self.rx_srtt.wrapping_add(delta >> 3);
            delta = delta.wrapping_abs();
            if rtt < self.rx_srtt.wrapping_sub(self.rx_rttvar) {
                self.rx_rttvar = self
                    .rx_rttvar
                    .wrapping_add(delta.wrapping_sub(self.rx_rttvar) >> 5);
            } else {
                self.rx_rttvar = self
                    .rx_rttvar
                    .wrapping_add(delta.wrapping_sub(self.rx_rttvar) >> 2);
            }
        }
        let rto = (self.rx_srtt as u32)
            .wrapping_add(self.interval.max((self.rx_rttvar as u32).wrapping_shl(2)));
        self.rx_rto = rto.max(self.rx_minrto).min(RTO_MAX);
    }

    /// `kcp.go: KCP.Input` congestion window growth (only with congestion control on).
    fn grow_cwnd(&mut self) {
        if self.cwnd >= self.rmt_wnd {
            return;
        }
        let mss = self.mss as u32;
        if self.cwnd < self.ssthresh {
            self.cwnd += 1;
            self.incr = self.incr.saturating_add(mss);
        } else {
            if self.incr < mss {
                self.incr = mss;
            }
            self.incr = self
                .incr
                .saturating_add((mss * mss) / self.incr.max(1) + mss / 16);
            if (self.cwnd.saturating_add(1)).saturating_mul(mss) <= self.incr {
                self.cwnd = self.incr.div_ceil(mss.max(1));
            }
        }
        if self.cwnd > self.rmt_wnd {
            self.cwnd = self.rmt_wnd;
            self.incr = self.rmt_wnd.saturating_mul(mss);
        }
    }

    pub(super) fn shrink_buf(&mut self) {
        self.snd_una = self.snd_buf.front().map_or(self.snd_nxt, |s| s.sn);
    }

    /// `kcp.go: KCP.parse_ack`. `snd_buf` holds consecutive sequence numbers, so the segment
    /// is found by offset instead of a scan.
    fn parse_ack(&mut self, sn: u32) {
        if diff(sn, self.snd_una) < 0 || diff(sn, self.snd_nxt) >= 0 {
            return;
        }
        let Some(first) = self.snd_buf.front().map(|s| s.sn) else {
            return;
        };
        let idx = sn.wrapping_sub(first) as usize;
        if let Some(seg) = self.snd_buf.get_mut(idx)
            && seg.sn == sn
            && !seg.acked
        {
            seg.acked = true;
            self.snd_bytes = self.snd_bytes.saturating_sub(seg.data.len());
            seg.data = Bytes::new();
        }
    }

    /// `kcp.go: KCP.parse_fastack`: every earlier segment sent no later than the ACKed one
    /// was skipped once more.
    fn parse_fastack(&mut self, sn: u32, ts: u32) {
        if diff(sn, self.snd_una) < 0 || diff(sn, self.snd_nxt) >= 0 {
            return;
        }
        for seg in self.snd_buf.iter_mut() {
            if diff(sn, seg.sn) < 0 {
                break;
            } else if sn != seg.sn && diff(seg.ts, ts) <= 0 {
                seg.fastack = seg.fastack.saturating_add(1);
            }
        }
    }

    /// `kcp.go: KCP.parse_una`: drop everything below `una`; returns how many were dropped.
    fn parse_una(&mut self, una: u32) -> usize {
        let mut count = 0;
        while let Some(seg) = self.snd_buf.front() {
            if diff(una, seg.sn) <= 0 {
                break;
            }
            if !seg.acked {
                self.snd_bytes = self.snd_bytes.saturating_sub(seg.data.len());
            }
            self.snd_buf.pop_front();
            count += 1;
        }
        count
    }

    fn ack_push(&mut self, sn: u32, ts: u32) {
        if self.acklist.len() < MAX_PENDING_ACKS {
            self.acklist.push((sn, ts));
        } else {
            self.stats.acks_dropped += 1;
        }
    }

    /// `kcp.go: KCP.parse_data` for `sn` in `[rcv_nxt, rcv_nxt + rcv_wnd)`, plus the memory
    /// bound: the next in-order segment must fit in `max_recv_bytes` (or nothing is queued at
    /// all, so progress is always possible); an out-of-order one must also leave room for one
    /// full in-order segment.
    fn parse_data(&mut self, sn: u32, data: &[u8]) -> DataOutcome {
        let offset = u64::from(sn.wrapping_sub(self.rcv_nxt()));
        let key = self.rcv_nxt_abs + offset;
        if self.rcv_buf.contains_key(&key) {
            return DataOutcome::Duplicate;
        }
        let cost = data.len() + SEG_COST;
        let used = self.recv_memory();
        let fits = if offset == 0 {
            used + cost <= self.max_recv_bytes || self.rcv_queue.is_empty()
        } else {
            used + cost + self.mss + SEG_COST <= self.max_recv_bytes
        };
        if !fits {
            return DataOutcome::NoRoom;
        }
        self.rcv_buf.insert(key, Bytes::copy_from_slice(data));
        self.rcv_buf_cost += cost;
        self.move_to_queue();
        DataOutcome::Stored
    }

    /// Moves in-order segments from `rcv_buf` to `rcv_queue` while the queue has room.
    fn move_to_queue(&mut self) {
        while self.rcv_queue.len() < self.rcv_wnd as usize {
            let Some(entry) = self.rcv_buf.first_entry() else {
                break;
            };
            if *entry.key() != self.rcv_nxt_abs {
                break;
            }
            let data = entry.remove();
            self.rcv_buf_cost -= data.len() + SEG_COST;
            self.rcv_nxt_abs += 1;
            if !data.is_empty() {
                self.rcv_queue_cost += data.len() + SEG_COST;
                self.readable += data.len();
                self.rcv_queue.push_back(data);
            }
        }
    }

    /// Free receive window to advertise: kcp-go's `rcv_wnd - len(rcv_queue)`, further limited
    /// by the bytes `max_recv_bytes` leaves for full segments.
    pub(super) fn wnd_unused(&self) -> u16 {
        let by_count = (self.rcv_wnd as usize).saturating_sub(self.rcv_queue.len());
        let by_bytes =
            self.max_recv_bytes.saturating_sub(self.rcv_queue_cost) / (self.mss + SEG_COST);
        by_count.min(by_bytes).min(usize::from(u16::MAX)) as u16
    }

    /// Queues bytes for sending and returns how many were taken (at most
    /// [`Kcp::send_capacity`]). Stream mode tops up the last queued segment, then cuts MSS-sized
    /// segments (`kcp.go: KCP.Send`). Call [`Kcp::update`] soon after: kcp-go flushes on every
    /// write. Message mode takes all of `data` or nothing (at most 255 segments).
    pub fn send(&mut self, data: &[u8]) -> usize {
        let take = data.len().min(self.send_capacity());
        if take == 0 {
            return 0;
        }
        let mut rest = data.get(..take).unwrap_or_default();
        if self.stream {
            if let Some((_, last)) = self.snd_queue.back_mut()
                && last.len() < self.mss
            {
                let n = (self.mss - last.len()).min(rest.len());
                let (head, tail) = rest.split_at(n);
                last.extend_from_slice(head);
                rest = tail;
            }
            for chunk in rest.chunks(self.mss) {
                let mut seg = BytesMut::with_capacity(self.mss);
                seg.extend_from_slice(chunk);
                self.snd_queue.push_back((0, seg));
            }
        } else {
            let count = take.div_ceil(self.mss).max(1);
            if take < data.len() || count > 255 {
                return 0;
            }
            for (i, chunk) in rest.chunks(self.mss).enumerate() {
                self.snd_queue
                    .push_back(((count - i - 1) as u8, BytesMut::from(chunk)));
            }
        }
        self.snd_bytes += take;
        take
    }

    /// How many bytes [`Kcp::send`] would take now: 0 while `waitsnd` has reached the send
    /// window or the peer's window (kcp-go `UDPSession.WriteBuffers` blocks then), else what
    /// `max_send_bytes` leaves.
    pub fn send_capacity(&self) -> usize {
        let waitsnd = self.waitsnd();
        if waitsnd >= self.snd_wnd as usize || waitsnd >= self.rmt_wnd as usize {
            return 0;
        }
        self.max_send_bytes.saturating_sub(self.snd_bytes)
    }

    /// Appends up to `max` in-order bytes to `out`; returns how many. Reading may reopen a
    /// closed window, in which case a WINS goes out on the next flush (`kcp.go: KCP.Recv`'s
    /// fast recover, and the same when our byte-limited window was 0).
    pub fn recv(&mut self, out: &mut Vec<u8>, max: usize) -> usize {
        let was_full = self.rcv_queue.len() >= self.rcv_wnd as usize;
        let mut n = 0;
        while n < max {
            let Some(front) = self.rcv_queue.front_mut() else {
                break;
            };
            let take = front.len().min(max - n);
            out.extend_from_slice(front.get(..take).unwrap_or_default());
            front.advance(take);
            n += take;
            self.rcv_queue_cost = self.rcv_queue_cost.saturating_sub(take);
            if front.is_empty() {
                self.rcv_queue.pop_front();
                self.rcv_queue_cost = self.rcv_queue_cost.saturating_sub(SEG_COST);
            }
        }
        self.readable -= n;
        self.move_to_queue();
        let unused = self.wnd_unused();
        if (was_full && self.rcv_queue.len() < self.rcv_wnd as usize)
            || (self.last_adv_wnd == 0 && unused > 0)
        {
            self.probe |= ASK_TELL;
        }
        n
    }

    /// Bytes [`Kcp::recv`] could return now.
    pub fn readable(&self) -> usize {
        self.readable
    }

    /// Segments waiting to be sent or acknowledged (`kcp.go: KCP.WaitSnd`).
    pub fn waitsnd(&self) -> usize {
        self.snd_buf.len() + self.snd_queue.len()
    }

    /// Whether a segment has been transmitted `dead_link` times (kcp-go sets `state` to
    /// `0xFFFFFFFF`). The session keeps working; the driver decides to close it. Note that
    /// kcp-go 5.6.1 itself never reads `state` (sess.go ignores it), so a Go peer does not
    /// close on a dead link; Snowflake relies on smux keepalive timeouts instead.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Counters of this session.
    pub fn stats(&self) -> KcpStats {
        self.stats
    }

    /// Current retransmission timeout (kcp-go `rx_rto`), in ms.
    pub fn rto(&self) -> u32 {
        self.rx_rto
    }

    /// Bytes charged against `max_recv_bytes` now.
    pub fn recv_memory(&self) -> usize {
        self.rcv_buf_cost + self.rcv_queue_cost
    }

    /// Bytes charged against `max_send_bytes` now.
    pub fn send_memory(&self) -> usize {
        self.snd_bytes
    }

    /// Bytes of datagrams waiting for [`Kcp::poll_transmit`].
    pub fn output_memory(&self) -> usize {
        self.output_bytes
    }

    /// The next datagram to send (at most `mtu` bytes, segments packed back to back).
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        let d = self.output.pop_front()?;
        self.output_bytes -= d.len();
        Some(d)
    }

    /// Runs kcp-go's periodic flush (`sess.go: UDPSession.update` → `kcp.go: KCP.flush`):
    /// pending ACKs, window probes, new data within the window, timeouts and early
    /// retransmits. Then drain [`Kcp::poll_transmit`]. Calling it early is harmless.
    pub fn update(&mut self, now_ms: u32) {
        self.updated = true;
        self.flush(now_ms, false);
        self.ts_flush = now_ms.wrapping_add(self.interval);
    }

    /// Emits the pending ACKs now (kcp-go `flush(true)`, used with `SetACKNoDelay`).
    pub fn flush_acks(&mut self, now_ms: u32) {
        self.flush(now_ms, true);
    }

    /// When [`Kcp::update`] must next run (absolute ms, never before `now_ms`). `now_ms` when
    /// new data may be sent or before the first update; the next tick (last update + interval)
    /// when ACKs, window announcements or early retransmits are pending; else the nearest
    /// retransmission or window-probe time. Re-check after every `input`, `send` and `recv`.
    pub fn check(&self, now_ms: u32) -> u32 {
        if !self.updated {
            return now_ms;
        }
        let tick = self.ts_flush;
        let mut due = now_ms.wrapping_add(IDLE_CHECK_MS);
        let mut consider = |t: u32| {
            if diff(t, due) < 0 {
                due = t;
            }
        };
        if !self.acklist.is_empty() || self.probe != 0 {
            consider(tick);
        }
        if !self.snd_queue.is_empty()
            && diff(self.snd_nxt, self.snd_una.wrapping_add(self.send_cwnd())) < 0
        {
            return now_ms;
        }
        if self.rmt_wnd == 0 {
            consider(if self.probe_wait == 0 {
                tick
            } else {
                self.ts_probe
            });
        }
        for seg in self.snd_buf.iter().filter(|s| !s.acked) {
            consider(if seg.fastack > 0 { tick } else { seg.resendts });
        }
        if diff(due, now_ms) < 0 { now_ms } else { due }
    }

    /// The usable send window in segments (`kcp.go: KCP.flush`'s `cwnd`).
    pub(super) fn send_cwnd(&self) -> u32 {
        let cwnd = self.snd_wnd.min(self.rmt_wnd);
        if self.nocwnd {
            cwnd
        } else {
            cwnd.min(self.cwnd)
        }
    }
}
