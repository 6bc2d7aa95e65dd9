//! Building output datagrams: kcp-go's `KCP.flush` (kcp.go).
//!
//! Order within one flush, as in kcp-go: pending ACKs (only those at or above `rcv_nxt`, plus
//! always the last one: kcp-go's filter for jitter from bufferbloat), a window probe (WASK)
//! and/or a window announcement (WINS), then data: new segments moved from the send queue
//! while `snd_nxt < snd_una + cwnd`, first transmissions, fast and early retransmits and
//! timeouts. Segments are packed back to back into datagrams of at most `mtu` bytes.

use bytes::{Bytes, BytesMut};

use super::engine::{ASK_SEND, ASK_TELL, Kcp, SendSeg, THRESH_MIN, diff};
use super::segment::{CMD_ACK, CMD_PUSH, CMD_WASK, CMD_WINS, HEADER_LEN, SegmentHeader};
use super::{MAX_OUTPUT_BYTES, PROBE_INIT_MS, PROBE_LIMIT_MS};

/// Packs segments into datagrams of at most `mtu` bytes.
struct Writer {
    mtu: usize,
    cur: BytesMut,
    done: Vec<Bytes>,
    segments: u64,
}

impl Writer {
    fn new(mtu: usize) -> Writer {
        Writer {
            mtu,
            cur: BytesMut::new(),
            done: Vec::new(),
            segments: 0,
        }
    }

    /// kcp-go's `makeSpace` then `encode`: start a new datagram when this segment would not fit.
    fn put(&mut self, h: &SegmentHeader, data: &[u8]) {
        let need = HEADER_LEN + data.len();
        if !self.cur.is_empty() && self.cur.len() + need > self.mtu {
            self.done.push(std::mem::take(&mut self.cur).freeze());
        }
        if self.cur.capacity() == 0 {
            self.cur.reserve(self.mtu);
        }
        h.encode(&mut self.cur);
        self.cur.extend_from_slice(data);
        self.segments += 1;
    }

    fn finish(mut self) -> (Vec<Bytes>, u64) {
        if !self.cur.is_empty() {
            self.done.push(self.cur.freeze());
        }
        (self.done, self.segments)
    }
}

#[derive(Default)]
struct Resends {
    lost: u64,
    fast: u64,
    early: u64,
}

impl Kcp {
    /// kcp-go `flush(ackOnly)`. Datagrams go to the output queue.
    pub(super) fn flush(&mut self, now: u32, ack_only: bool) {
        let wnd = self.wnd_unused();
        let rcv_nxt = self.rcv_nxt();
        let mut tmpl = SegmentHeader {
            conv: self.conv,
            cmd: CMD_ACK,
            frg: 0,
            wnd,
            ts: 0,
            sn: 0,
            una: rcv_nxt,
            len: 0,
        };
        let mut w = Writer::new(self.mtu);

        let last = self.acklist.len().wrapping_sub(1);
        for (i, &(sn, ts)) in self.acklist.iter().enumerate() {
            if diff(sn, rcv_nxt) >= 0 || i == last {
                // kcp-go leaves sn/ts of the last ACK in the template, so a WASK/WINS
                // in the same flush carries them too.
                tmpl.sn = sn;
                tmpl.ts = ts;
                w.put(&tmpl, &[]);
            }
        }
        self.acklist.clear();
        if self.acklist.capacity() > 4096 {
            self.acklist.shrink_to(1024);
        }

        if !ack_only {
            self.flush_probes(now, &mut tmpl, &mut w);
            self.flush_data(now, &tmpl, &mut w);
        }

        let (datagrams, segments) = w.finish();
        if segments > 0 {
            self.last_adv_wnd = wnd;
        }
        self.stats.segments_sent += segments;
        for d in datagrams {
            if self.output_bytes + d.len() > MAX_OUTPUT_BYTES {
                self.stats.datagrams_dropped += 1;
                continue;
            }
            self.output_bytes += d.len();
            self.stats.datagrams_sent += 1;
            self.output.push_back(d);
        }
    }

    /// Window probing: while the peer's window is 0, ask it (WASK) after 7 s, then 1.5× longer
    /// each time up to 120 s; answer a probe or a reopened window with WINS.
    fn flush_probes(&mut self, now: u32, tmpl: &mut SegmentHeader, w: &mut Writer) {
        if self.rmt_wnd == 0 {
            if self.probe_wait == 0 {
                self.probe_wait = PROBE_INIT_MS;
                self.ts_probe = now.wrapping_add(self.probe_wait);
            } else if diff(now, self.ts_probe) >= 0 {
                self.probe_wait = self.probe_wait.max(PROBE_INIT_MS);
                self.probe_wait += self.probe_wait / 2;
                self.probe_wait = self.probe_wait.min(PROBE_LIMIT_MS);
                self.ts_probe = now.wrapping_add(self.probe_wait);
                self.probe |= ASK_SEND;
            }
        } else {
            self.ts_probe = 0;
            self.probe_wait = 0;
        }
        if self.probe & ASK_SEND != 0 {
            tmpl.cmd = CMD_WASK;
            w.put(tmpl, &[]);
        }
        if self.probe & ASK_TELL != 0 {
            tmpl.cmd = CMD_WINS;
            w.put(tmpl, &[]);
        }
        self.probe = 0;
    }

    fn flush_data(&mut self, now: u32, tmpl: &SegmentHeader, w: &mut Writer) {
        let cwnd = self.send_cwnd();
        let mut new_segs = 0u32;
        while diff(self.snd_nxt, self.snd_una.wrapping_add(cwnd)) < 0 {
            let Some((frg, data)) = self.snd_queue.pop_front() else {
                break;
            };
            self.snd_buf.push_back(SendSeg {
                sn: self.snd_nxt,
                frg,
                ts: 0,
                rto: 0,
                resendts: 0,
                xmit: 0,
                fastack: 0,
                acked: false,
                data: data.freeze(),
            });
            self.snd_nxt = self.snd_nxt.wrapping_add(1);
            new_segs += 1;
        }

        let resent = if self.fastresend > 0 {
            self.fastresend
        } else {
            u32::MAX
        };
        let mut r = Resends::default();
        for seg in self.snd_buf.iter_mut() {
            if seg.acked {
                continue;
            }
            let send = if seg.xmit == 0 {
                seg.rto = self.rx_rto;
                true
            } else if seg.fastack >= resent {
                seg.rto = self.rx_rto;
                r.fast += 1;
                true
            } else if seg.fastack > 0 && new_segs == 0 {
                // kcp-go's early retransmit: active even with fast resend off.
                seg.rto = self.rx_rto;
                r.early += 1;
                true
            } else if diff(now, seg.resendts) >= 0 {
                // nodelay 0: the timeout grows by the current RTO each time (200, 400, 600 ...).
                let step = if self.nodelay {
                    self.rx_rto / 2
                } else {
                    self.rx_rto
                };
                seg.rto = seg.rto.saturating_add(step);
                r.lost += 1;
                true
            } else {
                false
            };
            if !send {
                continue;
            }
            seg.fastack = 0;
            seg.resendts = now.wrapping_add(seg.rto);
            seg.xmit = seg.xmit.saturating_add(1);
            seg.ts = now;
            let h = SegmentHeader {
                cmd: CMD_PUSH,
                frg: seg.frg,
                ts: now,
                sn: seg.sn,
                len: seg.data.len() as u32,
                ..*tmpl
            };
            w.put(&h, &seg.data);
            if seg.xmit >= self.dead_link {
                self.dead = true;
            }
        }

        self.stats.lost_segments += r.lost;
        self.stats.retransmitted_segments += r.lost + r.fast + r.early;
        if !self.nocwnd {
            self.adjust_cwnd(cwnd, resent, &r);
        }
    }

    /// kcp-go's congestion window update at the end of `flush` (only with congestion control).
    fn adjust_cwnd(&mut self, cwnd: u32, resent: u32, r: &Resends) {
        let mss = self.mss as u32;
        if r.fast + r.early > 0 {
            let inflight = self.snd_nxt.wrapping_sub(self.snd_una);
            self.ssthresh = (inflight / 2).max(THRESH_MIN);
            // Wraps like kcp-go's uint32 when fast resend is off (resent = 0xffffffff).
            self.cwnd = self.ssthresh.wrapping_add(resent);
            self.incr = self.cwnd.wrapping_mul(mss);
        }
        if r.lost > 0 {
            self.ssthresh = (cwnd / 2).max(THRESH_MIN);
            self.cwnd = 1;
            self.incr = mss;
        }
        if self.cwnd < 1 {
            self.cwnd = 1;
            self.incr = mss;
        }
    }
}
