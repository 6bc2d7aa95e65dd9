//! The KCP segment header codec (spec §2.5).
//!
//! ```text
//! conv u32 | cmd u8 | frg u8 | wnd u16 | ts u32 | sn u32 | una u32 | len u32 | data[len]
//! ```
//!
//! All fields are little-endian. A datagram holds one or more segments back to back.

use bytes::BufMut;

/// Length of a segment header (kcp-go `IKCP_OVERHEAD`).
pub const HEADER_LEN: usize = 24;

/// `cmd` of a data segment.
pub const CMD_PUSH: u8 = 81;
/// `cmd` of an acknowledgement.
pub const CMD_ACK: u8 = 82;
/// `cmd` of a window probe ("ask").
pub const CMD_WASK: u8 = 83;
/// `cmd` of a window size announcement ("tell").
pub const CMD_WINS: u8 = 84;

/// The 24-byte header of one segment, as read from or written to the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentHeader {
    /// Conversation id; both ends of a session use the same one.
    pub conv: u32,
    /// Command: one of [`CMD_PUSH`], [`CMD_ACK`], [`CMD_WASK`], [`CMD_WINS`] on a valid segment.
    pub cmd: u8,
    /// Fragment countdown (always 0 in stream mode).
    pub frg: u8,
    /// Sender's free receive window, in segments.
    pub wnd: u16,
    /// Timestamp: send time for PUSH, the echoed PUSH timestamp for ACK.
    pub ts: u32,
    /// Sequence number (for ACK: the acknowledged sequence number).
    pub sn: u32,
    /// Sender's next expected sequence number (everything below is acknowledged).
    pub una: u32,
    /// Number of data bytes after the header (peer-controlled, not yet checked).
    pub len: u32,
}

impl SegmentHeader {
    /// Decodes the header at the start of `buf`; `None` when fewer than [`HEADER_LEN`] bytes.
    /// `len` is returned as sent: the caller checks it against what follows.
    pub fn decode(buf: &[u8]) -> Option<SegmentHeader> {
        let h: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        Some(SegmentHeader {
            conv: u32_at(0),
            cmd: h[4],
            frg: h[5],
            wnd: u16::from_le_bytes([h[6], h[7]]),
            ts: u32_at(8),
            sn: u32_at(12),
            una: u32_at(16),
            len: u32_at(20),
        })
    }

    /// Appends the 24 header bytes to `out`.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u32_le(self.conv);
        out.put_u8(self.cmd);
        out.put_u8(self.frg);
        out.put_u16_le(self.wnd);
        out.put_u32_le(self.ts);
        out.put_u32_le(self.sn);
        out.put_u32_le(self.una);
        out.put_u32_le(self.len);
    }

    /// Whether `cmd` is one of the four commands kcp-go accepts (81–84).
    pub fn has_valid_cmd(&self) -> bool {
        (CMD_PUSH..=CMD_WINS).contains(&self.cmd)
    }
}

/// Peeks at the first segment header of a datagram without a session.
///
/// This is what kcp-go's listener does (`sess.go: Listener.packetInput`): any datagram of at
/// least [`HEADER_LEN`] bytes yields its conv and sn, whatever its command or `len` field, so
/// the caller can decide on a new or replacement session. `None` for shorter datagrams.
pub fn first_segment(datagram: &[u8]) -> Option<SegmentHeader> {
    SegmentHeader::decode(datagram)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kcp_header_round_trip() {
        let h = SegmentHeader {
            conv: 0xeb06_3f3c,
            cmd: CMD_PUSH,
            frg: 0,
            wnd: 0xffff,
            ts: 1094,
            sn: 1,
            una: 0,
            len: 23,
        };
        let mut v = Vec::new();
        h.encode(&mut v);
        assert_eq!(v.len(), HEADER_LEN);
        assert_eq!(
            v,
            hex_literal::hex!("3c3f06eb 51 00 ffff 46040000 01000000 00000000 17000000")
        );
        assert_eq!(SegmentHeader::decode(&v), Some(h));
        assert_eq!(first_segment(&v[..23]), None);
    }
}
