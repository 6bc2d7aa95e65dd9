//! smux frame codec (protocol version 2).
//!
//! ```text
//! ver u8 | cmd u8 | length u16 LE | stream id u32 LE | payload
//! cmd: 0 SYN, 1 FIN, 2 PSH, 3 NOP, 4 UPD (payload: consumed u32 LE | window u32 LE)
//! ```
//!
//! Decoding follows what the Go receiver (smux 1.5.16 `Session.recvLoop`) actually consumes,
//! so both sides agree on where every frame starts:
//!
//! * the version byte is checked first, then the command; either being wrong is fatal;
//! * SYN, FIN and NOP consume only the 8-byte header: their length field is ignored;
//! * PSH consumes `length` payload bytes (0 to 65535);
//! * UPD always consumes exactly 8 payload bytes, whatever its length field says.

use bytes::{BufMut, Bytes, BytesMut};

use super::{SmuxError, StreamId};

/// The only protocol version spoken here (version 2 adds UPD and per-stream windows).
pub const VERSION: u8 = 2;
/// Length of a frame header.
pub const HEADER_LEN: usize = 8;
/// Length of a UPD payload (consumed u32 + window u32).
pub const UPD_LEN: usize = 8;
/// The largest payload a length field can describe; receivers accept all of it.
pub const MAX_PAYLOAD: usize = 65535;
/// The window a sender assumes before the first UPD (smux `initialPeerWindow`).
pub const INITIAL_PEER_WINDOW: u32 = 262_144;

/// Command byte: open a stream.
pub const CMD_SYN: u8 = 0;
/// Command byte: close a stream.
pub const CMD_FIN: u8 = 1;
/// Command byte: stream data.
pub const CMD_PSH: u8 = 2;
/// Command byte: keepalive (stream id 0).
pub const CMD_NOP: u8 = 3;
/// Command byte: window update (version 2 only).
pub const CMD_UPD: u8 = 4;

/// One decoded (or to-be-encoded) smux frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Open stream `sid`.
    Syn {
        /// Stream id.
        sid: StreamId,
    },
    /// Close stream `sid` (no half-close).
    Fin {
        /// Stream id.
        sid: StreamId,
    },
    /// Data for stream `sid` (at most 65535 bytes).
    Psh {
        /// Stream id.
        sid: StreamId,
        /// Payload.
        data: Bytes,
    },
    /// Keepalive. Senders use stream id 0; receivers ignore the id.
    Nop {
        /// Stream id (0 from well-behaved peers).
        sid: StreamId,
    },
    /// Window update: the sender of this frame has read `consumed` bytes of stream `sid`
    /// (a wrapping 32-bit counter) and accepts `window` bytes beyond that.
    Upd {
        /// Stream id.
        sid: StreamId,
        /// Total bytes read so far (wrapping).
        consumed: u32,
        /// Receive window.
        window: u32,
    },
}

impl Frame {
    /// The frame's stream id.
    pub fn sid(&self) -> StreamId {
        match self {
            Frame::Syn { sid }
            | Frame::Fin { sid }
            | Frame::Psh { sid, .. }
            | Frame::Nop { sid }
            | Frame::Upd { sid, .. } => *sid,
        }
    }

    /// The frame's command byte.
    pub fn cmd(&self) -> u8 {
        match self {
            Frame::Syn { .. } => CMD_SYN,
            Frame::Fin { .. } => CMD_FIN,
            Frame::Psh { .. } => CMD_PSH,
            Frame::Nop { .. } => CMD_NOP,
            Frame::Upd { .. } => CMD_UPD,
        }
    }

    /// Bytes this frame occupies on the wire.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Frame::Psh { data, .. } => data.len(),
                Frame::Upd { .. } => UPD_LEN,
                _ => 0,
            }
    }

    /// Appends the wire form of this frame to `out`.
    ///
    /// Fails only for a PSH payload longer than 65535 bytes.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), SmuxError> {
        let payload_len = self.encoded_len() - HEADER_LEN;
        let len = u16::try_from(payload_len)
            .map_err(|_| SmuxError::PayloadTooLong { len: payload_len })?;
        out.reserve(HEADER_LEN + payload_len);
        out.put_u8(VERSION);
        out.put_u8(self.cmd());
        out.put_u16_le(len);
        out.put_u32_le(self.sid());
        match self {
            Frame::Psh { data, .. } => out.put_slice(data),
            Frame::Upd {
                consumed, window, ..
            } => {
                out.put_u32_le(*consumed);
                out.put_u32_le(*window);
            }
            _ => {}
        }
        Ok(())
    }

    /// The wire form of this frame as one buffer.
    pub fn to_bytes(&self) -> Result<Bytes, SmuxError> {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out.freeze())
    }
}

/// Encodes a PSH frame straight from a slice (no intermediate `Bytes`).
pub fn encode_psh(sid: StreamId, data: &[u8]) -> Result<Bytes, SmuxError> {
    let len =
        u16::try_from(data.len()).map_err(|_| SmuxError::PayloadTooLong { len: data.len() })?;
    let mut out = BytesMut::with_capacity(HEADER_LEN + data.len());
    out.put_u8(VERSION);
    out.put_u8(CMD_PSH);
    out.put_u16_le(len);
    out.put_u32_le(sid);
    out.put_slice(data);
    Ok(out.freeze())
}

/// What the decoder is in the middle of.
#[derive(Debug)]
enum State {
    /// Collecting a header.
    Header { buf: [u8; HEADER_LEN], have: usize },
    /// Collecting a PSH payload of `want` bytes.
    Psh {
        sid: StreamId,
        want: usize,
        buf: BytesMut,
    },
    /// Collecting the 8 bytes of a UPD payload.
    Upd {
        sid: StreamId,
        buf: [u8; UPD_LEN],
        have: usize,
    },
}

/// Incremental decoder: accepts the byte stream in any chunking and yields whole frames.
///
/// Memory held between calls is bounded by one header plus one payload
/// ([`HEADER_LEN`] + [`MAX_PAYLOAD`] bytes).
#[derive(Debug)]
pub struct FrameDecoder {
    state: State,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder waiting for the first header.
    pub fn new() -> Self {
        FrameDecoder {
            state: State::Header {
                buf: [0; HEADER_LEN],
                have: 0,
            },
        }
    }

    /// Bytes of an incomplete frame held by the decoder.
    pub fn buffered(&self) -> usize {
        match &self.state {
            State::Header { have, .. } => *have,
            State::Psh { buf, .. } => HEADER_LEN + buf.len(),
            State::Upd { have, .. } => HEADER_LEN + *have,
        }
    }

    /// Decodes the next frame, consuming bytes from the front of `input`.
    ///
    /// Returns `Ok(None)` when `input` is exhausted before a frame is complete (the partial
    /// frame is kept). An error (bad version, unknown command) is fatal to the byte stream:
    /// the decoder must not be used afterwards.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Frame>, SmuxError> {
        loop {
            match &mut self.state {
                State::Header { buf, have } => {
                    let take = (HEADER_LEN - *have).min(input.len());
                    buf[*have..*have + take].copy_from_slice(&input[..take]);
                    *have += take;
                    *input = &input[take..];
                    if *have < HEADER_LEN {
                        return Ok(None);
                    }
                    let h = *buf;
                    *have = 0;
                    let version = h[0];
                    let cmd = h[1];
                    let length = usize::from(u16::from_le_bytes([h[2], h[3]]));
                    let sid = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
                    if version != VERSION {
                        return Err(SmuxError::BadVersion { version });
                    }
                    match cmd {
                        CMD_SYN => return Ok(Some(Frame::Syn { sid })),
                        CMD_FIN => return Ok(Some(Frame::Fin { sid })),
                        CMD_NOP => return Ok(Some(Frame::Nop { sid })),
                        CMD_PSH => {
                            if length == 0 {
                                return Ok(Some(Frame::Psh {
                                    sid,
                                    data: Bytes::new(),
                                }));
                            }
                            if input.len() >= length {
                                // Whole payload present: one copy, no staging buffer.
                                let data = Bytes::copy_from_slice(&input[..length]);
                                *input = &input[length..];
                                return Ok(Some(Frame::Psh { sid, data }));
                            }
                            self.state = State::Psh {
                                sid,
                                want: length,
                                buf: BytesMut::with_capacity(length),
                            };
                        }
                        CMD_UPD => {
                            self.state = State::Upd {
                                sid,
                                buf: [0; UPD_LEN],
                                have: 0,
                            };
                        }
                        other => return Err(SmuxError::UnknownCommand { cmd: other }),
                    }
                }
                State::Psh { sid, want, buf } => {
                    let take = (*want - buf.len()).min(input.len());
                    buf.extend_from_slice(&input[..take]);
                    *input = &input[take..];
                    if buf.len() < *want {
                        return Ok(None);
                    }
                    let frame = Frame::Psh {
                        sid: *sid,
                        data: std::mem::take(buf).freeze(),
                    };
                    self.state = State::Header {
                        buf: [0; HEADER_LEN],
                        have: 0,
                    };
                    return Ok(Some(frame));
                }
                State::Upd { sid, buf, have } => {
                    let take = (UPD_LEN - *have).min(input.len());
                    buf[*have..*have + take].copy_from_slice(&input[..take]);
                    *have += take;
                    *input = &input[take..];
                    if *have < UPD_LEN {
                        return Ok(None);
                    }
                    let b = *buf;
                    let frame = Frame::Upd {
                        sid: *sid,
                        consumed: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                        window: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
                    };
                    self.state = State::Header {
                        buf: [0; HEADER_LEN],
                        have: 0,
                    };
                    return Ok(Some(frame));
                }
            }
        }
    }
}
