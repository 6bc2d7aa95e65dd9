//! smux tests: spec vectors (`specs/snowflake.md` §5.2), flow control, keepalive, hostile
//! input, and a client↔server pair under arbitrary chunking.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use hex_literal::hex;
use proptest::prelude::*;

use super::frame::{Frame, FrameDecoder, INITIAL_PEER_WINDOW};
use super::*;

const SYN3: [u8; 8] = hex!("02 00 0000 03000000");
const NOP: [u8; 8] = hex!("02 03 0000 00000000");

fn psh(sid: StreamId, data: &[u8]) -> Vec<u8> {
    let frame = Frame::Psh {
        sid,
        data: Bytes::copy_from_slice(data),
    };
    frame.to_bytes().unwrap().to_vec()
}

fn upd(sid: StreamId, consumed: u32, window: u32) -> Vec<u8> {
    let frame = Frame::Upd {
        sid,
        consumed,
        window,
    };
    frame.to_bytes().unwrap().to_vec()
}

fn fin(sid: StreamId) -> Vec<u8> {
    (Frame::Fin { sid }).to_bytes().unwrap().to_vec()
}

fn syn(sid: StreamId) -> Vec<u8> {
    (Frame::Syn { sid }).to_bytes().unwrap().to_vec()
}

fn drain(s: &mut Session) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(b) = s.poll_transmit(usize::MAX) {
        out.extend_from_slice(&b);
    }
    out
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn decode_all(bytes: &[u8]) -> Vec<Frame> {
    let mut d = FrameDecoder::new();
    let mut input = bytes;
    let mut out = Vec::new();
    while let Some(f) = d.decode(&mut input).unwrap() {
        out.push(f);
    }
    assert!(input.is_empty());
    assert_eq!(d.buffered(), 0, "trailing partial frame");
    out
}

/// Server settings whose output limit never hides the peer's window.
fn big_output() -> SmuxConfig {
    SmuxConfig {
        max_pending_output: 8 << 20,
        ..SmuxConfig::server()
    }
}

/// A server session that has accepted stream 3.
fn server_with_stream3(config: SmuxConfig, now: Instant) -> Session {
    let mut s = Session::new(Role::Server, config, now);
    s.handle_input(&SYN3, now).unwrap();
    assert_eq!(events(&mut s), vec![Event::Opened(3)]);
    s
}

// ---------------------------------------------------------------------------------------
// 1. Spec §5.2 vectors

#[test]
fn spec_5_2_upstream_syn_opens_stream_3() {
    let now = Instant::now();
    let mut s = Session::new(Role::Server, SmuxConfig::server(), now);
    s.handle_input(&hex!("02 00 0000 03000000"), now).unwrap();
    assert_eq!(s.poll_event(), Some(Event::Opened(3)));
    assert_eq!(s.poll_event(), None);
    assert_eq!(s.stream_count(), 1);
    assert_eq!(s.pending_output(), 0, "accepting a stream sends nothing");
}

#[test]
fn spec_5_2_psh_read_then_upd_then_echo_psh() {
    let now = Instant::now();
    let mut s = server_with_stream3(SmuxConfig::server(), now);
    let psh = hex!("02 02 0f00 03000000 48454c4c4f2d534e4f57464c414b45");
    // Byte by byte: a frame may be split anywhere.
    for b in psh {
        s.handle_input(&[b], now).unwrap();
    }
    assert_eq!(events(&mut s), vec![Event::Readable(3)]);
    assert_eq!(s.readable(3), 15);
    let mut buf = [0u8; 100];
    assert_eq!(s.read(3, &mut buf).unwrap(), ReadOutcome::Data(15));
    assert_eq!(&buf[..15], b"HELLO-SNOWFLAKE");
    assert_eq!(s.read(3, &mut buf).unwrap(), ReadOutcome::WouldBlock);
    assert_eq!(
        drain(&mut s),
        hex!("02 04 0800 03000000 0f000000 00001000").to_vec(),
        "UPD(consumed=15, window=1 MiB) after the first read"
    );
    assert_eq!(s.write(3, b"ECHO:HELLO-SNOWFLAKE").unwrap(), 20);
    assert_eq!(
        drain(&mut s),
        hex!("02 02 1400 03000000 4543484f3a48454c4c4f2d534e4f57464c414b45").to_vec()
    );
}

#[test]
fn spec_5_2_client_upd_after_reading_20_bytes() {
    let now = Instant::now();
    let mut c = Session::new(Role::Client, SmuxConfig::client(), now);
    assert_eq!(c.open_stream().unwrap(), 3);
    assert_eq!(drain(&mut c), SYN3.to_vec());
    c.handle_input(&psh(3, b"ECHO:HELLO-SNOWFLAKE"), now)
        .unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(c.read(3, &mut buf).unwrap(), ReadOutcome::Data(20));
    assert_eq!(
        drain(&mut c),
        hex!("02 04 0800 03000000 14000000 00001000").to_vec()
    );
}

#[test]
fn spec_5_2_nop_every_10s() {
    let t0 = Instant::now();
    let mut s = Session::new(Role::Server, SmuxConfig::server(), t0);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    s.handle_timeout(t0 + Duration::from_secs(9));
    assert_eq!(s.pending_output(), 0);
    s.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(drain(&mut s), hex!("02 03 0000 00000000").to_vec());
}

#[test]
fn stream_ids_client_odd_from_3_server_even_from_2() {
    let now = Instant::now();
    let mut c = Session::new(Role::Client, SmuxConfig::client(), now);
    assert_eq!(c.open_stream().unwrap(), 3);
    assert_eq!(c.open_stream().unwrap(), 5);
    assert_eq!(c.open_stream().unwrap(), 7);
    assert_eq!(
        drain(&mut c),
        [syn(3), syn(5), syn(7)].concat(),
        "one SYN per opened stream"
    );
    let mut s = Session::new(Role::Server, SmuxConfig::server(), now);
    assert_eq!(s.open_stream().unwrap(), 2);
    assert_eq!(s.open_stream().unwrap(), 4);
}

#[test]
fn stream_ids_exhausted_like_go_away() {
    let now = Instant::now();
    let mut c = Session::new(Role::Client, SmuxConfig::client(), now);
    c.last_local_id = u32::MAX - 2;
    assert_eq!(c.open_stream().unwrap(), u32::MAX);
    assert_eq!(c.open_stream(), Err(SmuxError::StreamIdsExhausted));
    assert_eq!(c.open_stream(), Err(SmuxError::StreamIdsExhausted));
    let mut s = Session::new(Role::Server, SmuxConfig::server(), now);
    s.last_local_id = u32::MAX - 1;
    assert_eq!(s.open_stream(), Err(SmuxError::StreamIdsExhausted));
}

#[test]
fn open_stream_skips_ids_the_peer_took() {
    let now = Instant::now();
    let mut c = Session::new(Role::Client, SmuxConfig::client(), now);
    c.handle_input(&syn(3), now).unwrap();
    assert_eq!(c.open_stream().unwrap(), 5);
}

#[test]
fn frame_codec_round_trip_and_vectors() {
    let frames = vec![
        Frame::Syn { sid: 3 },
        Frame::Fin { sid: 3 },
        Frame::Psh {
            sid: 3,
            data: Bytes::from_static(b"HELLO-SNOWFLAKE"),
        },
        Frame::Nop { sid: 0 },
        Frame::Upd {
            sid: 3,
            consumed: 15,
            window: 1 << 20,
        },
        Frame::Psh {
            sid: 0xdead_beef,
            data: Bytes::from(vec![7u8; 65535]),
        },
    ];
    let mut wire = Vec::new();
    for f in &frames {
        wire.extend_from_slice(&f.to_bytes().unwrap());
    }
    assert_eq!(&wire[..8], &SYN3);
    assert_eq!(&wire[8..16], &hex!("02 01 0000 03000000"));
    assert_eq!(decode_all(&wire), frames);
    // Every split point.
    for split in [1, 7, 8, 9, 20, 31, 40, 47, 48, 100] {
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        for chunk in wire.chunks(split) {
            let mut input = chunk;
            while let Some(f) = d.decode(&mut input).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames, "chunk size {split}");
    }
    let too_long = Frame::Psh {
        sid: 1,
        data: Bytes::from(vec![0u8; 65536]),
    };
    assert_eq!(
        too_long.to_bytes(),
        Err(SmuxError::PayloadTooLong { len: 65536 })
    );
}

#[test]
fn writer_splits_into_max_frame_size() {
    let now = Instant::now();
    let mut s = server_with_stream3(SmuxConfig::server(), now);
    let data = vec![1u8; 100_000];
    assert_eq!(s.write(3, &data).unwrap(), 100_000);
    let frames = decode_all(&drain(&mut s));
    let lens: Vec<usize> = frames
        .iter()
        .map(|f| match f {
            Frame::Psh { sid: 3, data } => data.len(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(lens, vec![32768, 32768, 32768, 1696]);
}

// ---------------------------------------------------------------------------------------
// 2. Flow control

#[test]
fn writer_stops_at_initial_window_until_upd() {
    let now = Instant::now();
    let mut s = server_with_stream3(big_output(), now);
    let data = vec![9u8; 1 << 20];
    assert_eq!(s.writable(3), 262_144);
    assert_eq!(s.write(3, &data).unwrap(), 262_144);
    assert_eq!(s.write(3, &data).unwrap(), 0, "would block");
    assert_eq!(s.writable(3), 0);
    let wire = drain(&mut s);
    assert_eq!(wire.len(), 262_144 + 8 * 8);
    assert_eq!(events(&mut s), vec![]);

    // A partial acknowledgement reopens part of the window.
    s.handle_input(&upd(3, 100_000, 262_144), now).unwrap();
    assert_eq!(events(&mut s), vec![Event::Writable(3)]);
    assert_eq!(s.writable(3), 100_000);
    assert_eq!(s.write(3, &data).unwrap(), 100_000);
    assert_eq!(s.write(3, &data).unwrap(), 0);
    // The real client's UPD: everything consumed, window 1 MiB.
    s.handle_input(&upd(3, 362_144, 1 << 20), now).unwrap();
    assert_eq!(events(&mut s), vec![Event::Writable(3)]);
    assert_eq!(s.writable(3), 1 << 20);
    // An UPD without a blocked writer produces no event.
    s.handle_input(&upd(3, 362_144, 1 << 20), now).unwrap();
    assert_eq!(events(&mut s), vec![]);
}

#[test]
fn window_arithmetic_wraps_like_go() {
    let now = Instant::now();
    let mut s = server_with_stream3(big_output(), now);
    // Pretend 2^32 − 10 bytes were already written and acknowledged.
    let st = s.streams.get_mut(&3).unwrap();
    st.written = u64::from(u32::MAX) - 9;
    st.peer_consumed = u32::MAX - 9;
    assert_eq!(s.write(3, &[0u8; 100]).unwrap(), 100); // crosses the 2^32 boundary
    assert_eq!(s.writable(3), 262_144 - 100);
    // consumed wrapped to 90 = all 100 bytes acknowledged.
    s.handle_input(&upd(3, 90, 262_144), now).unwrap();
    assert_eq!(s.writable(3), 262_144);
}

#[test]
fn reader_sends_upd_after_first_read_then_every_half_buffer() {
    let now = Instant::now();
    let mut s = server_with_stream3(SmuxConfig::server(), now);
    let mut rng = 0x1234_5678u32;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        rng
    };
    let total: u64 = 5 << 20;
    let mut fed: u64 = 0;
    let mut read: u64 = 0;
    let mut since_upd: u64 = 0;
    let mut upds = Vec::new();
    let mut buf = vec![0u8; 70_000];
    while read < total {
        // Feed as much as the peer would be allowed: consumed + window we granted.
        let allowed = s.streams[&3].recv_limit;
        while fed < allowed.min(total) {
            let n = (allowed.min(total) - fed).min(32768) as usize;
            s.handle_input(&psh(3, &vec![0u8; n]), now).unwrap();
            fed += n as u64;
        }
        let want = 1 + next() as usize % buf.len();
        match s.read(3, &mut buf[..want]).unwrap() {
            ReadOutcome::Data(n) => {
                read += n as u64;
                since_upd += n as u64;
                let expect_upd = read == n as u64 || since_upd >= 524_288;
                let out = drain(&mut s);
                if expect_upd {
                    assert_eq!(
                        out,
                        upd(3, read as u32, 1 << 20),
                        "UPD after read at {read}"
                    );
                    upds.push(read);
                    since_upd = 0;
                } else {
                    assert!(out.is_empty(), "no UPD expected at {read}");
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(upds.len() >= 10, "{upds:?}");
    assert!(upds[0] <= 70_000);
    for w in upds.windows(2) {
        assert!(w[1] - w[0] >= 524_288 && w[1] - w[0] < 524_288 + 70_000);
    }
}

/// Client and server sessions joined in memory; the server echoes every byte back.
fn run_pair(total: usize, chunks: &[usize], reads: &[usize], writes: &[usize]) {
    let now = Instant::now();
    let mut client = Session::new(Role::Client, SmuxConfig::client(), now);
    let mut server = Session::new(Role::Server, SmuxConfig::server(), now);
    let src: Vec<u8> = (0..total)
        .map(|i| (i ^ (i >> 9) ^ (i >> 17)) as u8)
        .collect();
    let sid = client.open_stream().unwrap();

    let mut ci = 0usize; // index into the chunk/read/write size lists
    let mut pick = |list: &[usize]| {
        ci = ci.wrapping_add(1);
        list[ci % list.len()]
    };

    let mut sent = 0usize; // client → server
    let mut echoed = Vec::with_capacity(total); // client's received echo
    let mut server_sid = None;
    let mut server_buf: Vec<u8> = Vec::new(); // read by the server, not yet written back
    let mut server_received = 0usize;
    let (mut c_can_write, mut c_can_read) = (true, false);
    let (mut s_can_write, mut s_can_read) = (true, false);
    let mut s_eof = false;
    let mut buf = vec![0u8; 200_000];
    let mut idle = 0;

    while !(s_eof && server.stream_count() == 0) {
        let mut progress = false;
        // Wire, both directions, in arbitrary pieces.
        while let Some(b) = client.poll_transmit(pick(chunks)) {
            for piece in b.chunks(pick(chunks)) {
                server.handle_input(piece, now).unwrap();
            }
            progress = true;
        }
        while let Some(b) = server.poll_transmit(pick(chunks)) {
            for piece in b.chunks(pick(chunks)) {
                client.handle_input(piece, now).unwrap();
            }
            progress = true;
        }
        while let Some(e) = server.poll_event() {
            match e {
                Event::Opened(id) => server_sid = Some(id),
                Event::Readable(_) | Event::Finished(_) => s_can_read = true,
                Event::Writable(_) => s_can_write = true,
            }
        }
        while let Some(e) = client.poll_event() {
            match e {
                Event::Readable(_) | Event::Finished(_) => c_can_read = true,
                Event::Writable(_) => c_can_write = true,
                Event::Opened(id) => panic!("server opened {id}"),
            }
        }
        // Client writes.
        if c_can_write && sent < total {
            let end = (sent + pick(writes)).min(total);
            let want = end - sent;
            let n = client.write(sid, &src[sent..end]).unwrap();
            sent += n;
            if n < want {
                c_can_write = false;
            }
            progress |= n > 0;
        }
        // Server reads (with back-pressure from its own echo buffer) and echoes.
        if let Some(ssid) = server_sid {
            if s_can_read && server_buf.len() < 3 << 20 {
                let want = pick(reads);
                match server.read(ssid, &mut buf[..want]).unwrap() {
                    ReadOutcome::Data(n) => {
                        assert!(n > 0);
                        server_buf.extend_from_slice(&buf[..n]);
                        server_received += n;
                        progress = true;
                    }
                    ReadOutcome::WouldBlock => s_can_read = false,
                    ReadOutcome::Eof => {
                        s_eof = true;
                        s_can_read = false;
                    }
                }
            }
            if s_can_write && !server_buf.is_empty() {
                let end = pick(writes).min(server_buf.len());
                let n = server.write(ssid, &server_buf[..end]).unwrap();
                server_buf.drain(..n);
                if n < end {
                    s_can_write = false;
                }
                progress |= n > 0;
            }
            if s_eof && server_buf.is_empty() {
                server.close(ssid);
                server_sid = None;
            }
        }
        // Client reads the echo; closes when it has everything.
        if c_can_read && echoed.len() < total {
            let want = pick(reads);
            match client.read(sid, &mut buf[..want]).unwrap() {
                ReadOutcome::Data(n) => {
                    echoed.extend_from_slice(&buf[..n]);
                    progress = true;
                    if echoed.len() == total {
                        client.close(sid);
                    }
                }
                ReadOutcome::WouldBlock => c_can_read = false,
                ReadOutcome::Eof => panic!("early EOF at {}", echoed.len()),
            }
        }
        // Flow-control invariant: a receiver never buffers more than the window it granted.
        for s in [&client, &server] {
            for st in s.streams.values() {
                assert!(st.recv_len <= 1 << 20);
            }
        }
        if progress {
            idle = 0;
        } else {
            idle += 1;
            assert!(
                idle < 3,
                "stalled: sent {sent}, server got {server_received}, echoed {}",
                echoed.len()
            );
        }
    }
    assert_eq!(server_received, total);
    assert!(echoed == src, "echo differs");
    assert_eq!(client.stream_count(), 0);
    assert!(!client.is_closed() && !server.is_closed());
    assert!(client.stats().upd_received > 0 && server.stats().upd_received > 0);
}

#[test]
fn pair_small_transfer_tiny_chunks() {
    run_pair(
        300_000,
        &[1, 3, 8, 9, 17],
        &[1, 5, 100, 4096],
        &[1, 7, 33_000, 70_000],
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    #[test]
    fn pair_ten_mib_arbitrary_chunking(
        chunks in proptest::collection::vec(1usize..70_000, 1..8),
        reads in proptest::collection::vec(1usize..200_000, 1..8),
        writes in proptest::collection::vec(1usize..300_000, 1..8),
    ) {
        run_pair(10 << 20, &chunks, &reads, &writes);
    }
}

// ---------------------------------------------------------------------------------------
// 3. Keepalive on a simulated clock

#[test]
fn keepalive_nop_every_interval_and_timeout_after_4_min() {
    let t0 = Instant::now();
    let mut s = Session::new(Role::Server, SmuxConfig::server(), t0);
    let mut nops = 0;
    let mut t = t0;
    while !s.is_closed() {
        t = s.poll_timeout().unwrap();
        s.handle_timeout(t);
        let out = drain(&mut s);
        if !out.is_empty() {
            assert_eq!(out, NOP.to_vec());
            nops += 1;
        }
    }
    assert_eq!(t, t0 + Duration::from_secs(240));
    assert_eq!(s.close_reason(), Some(&SmuxError::KeepaliveTimeout));
    assert_eq!(s.close_reason().unwrap().kind(), "timeout");
    assert_eq!(
        nops, 23,
        "NOPs at 10 s .. 230 s (the 240 s one is preempted by the timeout)"
    );
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.handle_input(&NOP, t), Err(SmuxError::Closed));
    assert_eq!(s.poll_transmit(1000), None);
}

#[test]
fn keepalive_any_received_frame_resets_timeout() {
    let t0 = Instant::now();
    let sec = Duration::from_secs;
    let mut s = Session::new(Role::Server, SmuxConfig::server(), t0);
    s.handle_timeout(t0 + sec(239));
    assert!(!s.is_closed());
    // A frame for an unknown stream still counts as life.
    s.handle_input(&fin(77), t0 + sec(239)).unwrap();
    s.handle_timeout(t0 + sec(240));
    assert!(!s.is_closed());
    s.handle_timeout(t0 + sec(478));
    assert!(!s.is_closed());
    // Half a frame does not count (Go marks data only per complete header).
    s.handle_input(&NOP[..4], t0 + sec(470)).unwrap();
    s.handle_timeout(t0 + sec(479));
    assert!(s.is_closed());
}

#[test]
fn keepalive_client_timeout_is_10_min() {
    let t0 = Instant::now();
    let mut c = Session::new(Role::Client, SmuxConfig::client(), t0);
    c.handle_timeout(t0 + Duration::from_secs(599));
    assert!(!c.is_closed());
    c.handle_timeout(t0 + Duration::from_secs(600));
    assert_eq!(c.close_reason(), Some(&SmuxError::KeepaliveTimeout));
}

#[test]
fn keepalive_no_nop_burst_after_a_long_sleep() {
    let t0 = Instant::now();
    let mut s = Session::new(Role::Server, SmuxConfig::server(), t0);
    s.handle_input(&NOP, t0 + Duration::from_secs(95)).unwrap();
    s.handle_timeout(t0 + Duration::from_secs(95));
    assert_eq!(drain(&mut s), NOP.to_vec());
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(105)));
}

#[test]
fn keepalive_does_not_fire_while_receive_buffer_is_full() {
    let t0 = Instant::now();
    let config = SmuxConfig {
        max_receive_buffer: 100,
        ..SmuxConfig::server()
    };
    let mut s = server_with_stream3(config, t0);
    s.handle_input(&psh(3, &[0u8; 100]), t0).unwrap();
    assert!(!s.wants_input());
    s.handle_timeout(t0 + Duration::from_secs(300));
    assert!(!s.is_closed(), "a reader that does not read is not silence");
    let mut buf = [0u8; 10];
    assert_eq!(s.read(3, &mut buf).unwrap(), ReadOutcome::Data(10));
    assert!(s.wants_input());
    s.handle_timeout(t0 + Duration::from_secs(540));
    assert!(s.is_closed());
}

// ---------------------------------------------------------------------------------------
// 4. Hostile input

#[test]
fn hostile_bad_version_kills_session() {
    let now = Instant::now();
    let mut s = server_with_stream3(SmuxConfig::server(), now);
    s.write(3, b"x").unwrap();
    let err = s
        .handle_input(&hex!("01 00 0000 05000000"), now)
        .unwrap_err();
    assert_eq!(err, SmuxError::BadVersion { version: 1 });
    assert_eq!(err.kind(), "malformed");
    assert!(s.is_closed());
    assert_eq!(s.close_reason(), Some(&err));
    assert_eq!(s.pending_output(), 0, "nothing more is sent");
    assert_eq!(s.write(3, b"x"), Err(SmuxError::Closed));
    assert_eq!(s.open_stream(), Err(SmuxError::Closed));
    assert_eq!(s.handle_input(&SYN3, now), Err(SmuxError::Closed));
    // The version is checked before the command (as Go).
    let mut s = Session::new(Role::Server, SmuxConfig::server(), now);
    assert_eq!(
        s.handle_input(&hex!("03 09 0000 00000000"), now),
        Err(SmuxError::BadVersion { version: 3 })
    );
}

#[test]
fn hostile_unknown_command_kills_session() {
    let now = Instant::now();
    for cmd in [5u8, 6, 0x7f, 0xff] {
        let mut s = Session::new(Role::Server, SmuxConfig::server(), now);
        let mut frame = SYN3;
        frame[1] = cmd;
        let mut input = SYN3.to_vec();
        input.extend_from_slice(&frame);
        input.extend_from_slice(&syn(5));
        let err = s.handle_input(&input, now).unwrap_err();
        assert_eq!(err, SmuxError::UnknownCommand { cmd });
        assert_eq!(err.kind(), "malformed");
        // Frames before the bad one were processed, frames after it were not.
        assert_eq!(events(&mut s), vec![Event::Opened(3)]);
    }
}

#[test]
fn hostile_frames_for_unknown_ids_are_ignored() {
    let now = Instant::now();
    let mut s = server_with_stream3(SmuxConfig::server(), now);
    let input = [
        psh(9, b"discard me"),
        fin(9),
        upd(9, 5, 5),
        psh(9, &[1u8; 65535]),
    ]
    .concat();
    s.handle_input(&input, now).unwrap();
    assert_eq!(events(&mut s), vec![]);
    assert_eq!(s.pending_output(), 0);
    assert_eq!(s.stream_count(), 1);
    assert_eq!(s.stats().frames_unknown_stream, 4);
    assert_eq!(s.stats().bytes_discarded, 10 + 65535);
    assert_eq!(
        s.read(9, &mut [0u8; 4]),
        Err(SmuxError::UnknownStream { sid: 9 })
    );
    assert_eq!(s.write(9, b"x"), Err(SmuxError::UnknownStream { sid: 9 }));
    assert!(!s.is_closed());
}

#[test]
fn hostile_duplicate_syn_is_ignored() {
    let now = Instant::now();
    let mut s = server_with_stream3(SmuxConfig::server(), now);
    s.handle_input(&psh(3, b"abc"), now).unwrap();
    s.handle_input(&SYN3, now).unwrap();
    assert_eq!(events(&mut s), vec![Event::Readable(3)]);
    assert_eq!(s.readable(3), 3, "the existing stream is untouched");
    assert_eq!(s.stats().syn_duplicate, 1);
}

#[test]
fn hostile_length_field_of_syn_fin_nop_and_upd_follows_go() {
    let now = Instant::now();
    let mut s = Session::new(Role::Server, big_output(), now);
    // Go reads no payload for SYN/FIN/NOP whatever the length says, and exactly 8 bytes
    // for UPD: so the next header starts right after.
    let input = [
        hex!("02 03 ffff 00000000").to_vec(), // NOP claiming 65535 bytes
        hex!("02 00 0500 03000000").to_vec(), // SYN claiming 5 bytes
        hex!("02 04 0000 03000000 00000000 00000400").to_vec(), // UPD claiming 0 bytes
        hex!("02 04 ffff 03000000 00000000 00000400").to_vec(), // UPD claiming 65535
        psh(3, b"ok"),
    ]
    .concat();
    s.handle_input(&input, now).unwrap();
    assert_eq!(events(&mut s), vec![Event::Opened(3), Event::Readable(3)]);
    assert_eq!(s.readable(3), 2);
    assert_eq!(s.stats().upd_received, 2);
    assert_eq!(s.writable(3), 262_144);
    // PSH with length 0 is a no-op.
    s.handle_input(&hex!("02 02 0000 03000000"), now).unwrap();
    assert_eq!(events(&mut s), vec![]);
}

#[test]
fn hostile_oversize_frame_and_window_overrun() {
    let now = Instant::now();
    let mut s = server_with_stream3(SmuxConfig::server(), now);
    // The largest frame a length field allows is fine (receivers accept up to 65535).
    let big = psh(3, &[0xaa; 65535]);
    for _ in 0..4 {
        s.handle_input(&big, now).unwrap();
    }
    assert_eq!(s.readable(3), 262_140);
    // Four more bytes fit the initial 262 144 window, five do not.
    s.handle_input(&psh(3, &[0; 4]), now).unwrap();
    let err = s.handle_input(&psh(3, &[0; 1]), now).unwrap_err();
    assert_eq!(
        err,
        SmuxError::WindowExceeded {
            sid: 3,
            received: 262_145,
            allowed: 262_144
        }
    );
    assert_eq!(err.kind(), "misbehaving");
    assert!(s.is_closed());
    // Buffered data stays readable after the session died, then the error shows.
    let mut buf = vec![0u8; 300_000];
    assert_eq!(s.read(3, &mut buf).unwrap(), ReadOutcome::Data(262_144));
    assert_eq!(s.read(3, &mut buf), Err(SmuxError::Closed));
    assert_eq!(s.pending_output(), 0, "no UPD from a dead session");
}

#[test]
fn hostile_window_is_what_we_granted() {
    let now = Instant::now();
    let mut s = server_with_stream3(SmuxConfig::server(), now);
    s.handle_input(&psh(3, &[0; 1000]), now).unwrap();
    let mut buf = [0u8; 1000];
    assert_eq!(s.read(3, &mut buf).unwrap(), ReadOutcome::Data(1000));
    // Granted: consumed 1000 + window 1 MiB.
    assert_eq!(drain(&mut s), upd(3, 1000, 1 << 20));
    let mut fed = 1000u64;
    while fed < 1000 + (1 << 20) {
        let n = (1000 + (1u64 << 20) - fed).min(65535) as usize;
        s.handle_input(&psh(3, &vec![0; n]), now).unwrap();
        fed += n as u64;
    }
    assert_eq!(
        s.readable(3),
        1 << 20,
        "receive buffer bounded by the window"
    );
    assert!(matches!(
        s.handle_input(&psh(3, b"!"), now),
        Err(SmuxError::WindowExceeded { sid: 3, .. })
    ));
}

#[test]
fn small_stream_buffer_still_honours_the_initial_window() {
    // The peer may use the initial 256 KiB before it sees our first (smaller) UPD.
    let now = Instant::now();
    let config = SmuxConfig {
        max_stream_buffer: 65_536,
        ..SmuxConfig::server()
    };
    let mut s = server_with_stream3(config, now);
    s.handle_input(&psh(3, &[0; 10]), now).unwrap();
    assert_eq!(s.read(3, &mut [0u8; 10]).unwrap(), ReadOutcome::Data(10));
    assert_eq!(drain(&mut s), upd(3, 10, 65_536));
    for _ in 0..4 {
        s.handle_input(&psh(3, &[0; 65_533]), now).unwrap();
    }
    assert!(!s.is_closed());
}

#[test]
fn hostile_syn_flood_beyond_max_streams() {
    let now = Instant::now();
    let mut s = Session::new(Role::Server, SmuxConfig::server(), now);
    let input: Vec<u8> = (0..300u32).flat_map(|i| syn(2 * i + 3)).collect();
    s.handle_input(&input, now).unwrap();
    let ev = events(&mut s);
    assert_eq!(ev.len(), 256);
    assert_eq!(ev[255], Event::Opened(2 * 255 + 3));
    assert_eq!(s.stream_count(), 256);
    assert_eq!(s.stats().streams_rejected, 44);
    let expected: Vec<u8> = (256..300u32).flat_map(|i| fin(2 * i + 3)).collect();
    assert_eq!(
        drain(&mut s),
        expected,
        "each refused SYN is answered with FIN"
    );
    // Data for refused streams is discarded; the session lives.
    s.handle_input(&psh(2 * 299 + 3, b"x"), now).unwrap();
    assert!(!s.is_closed());
    assert_eq!(
        s.open_stream(),
        Err(SmuxError::TooManyStreams { limit: 256 })
    );
    // Closing one makes room for one more.
    s.close(3);
    s.handle_input(&syn(10_001), now).unwrap();
    assert_eq!(events(&mut s), vec![Event::Opened(10_001)]);
}

#[test]
fn hostile_syn_flood_fins_are_bounded_when_output_is_stuck() {
    let now = Instant::now();
    let config = SmuxConfig {
        max_streams: 0,
        max_pending_output: 800,
        ..SmuxConfig::server()
    };
    let mut s = Session::new(Role::Server, config, now);
    let input: Vec<u8> = (0..10_000u32).flat_map(|i| syn(2 * i + 1)).collect();
    s.handle_input(&input, now).unwrap();
    assert_eq!(s.pending_output(), 800);
    assert_eq!(s.stats().streams_rejected, 10_000);
    assert_eq!(s.stats().control_dropped, 10_000 - 100);
}

#[test]
fn hostile_upd_consuming_more_than_sent_breaks_only_that_stream() {
    let now = Instant::now();
    let mut s = server_with_stream3(SmuxConfig::server(), now);
    s.handle_input(&syn(5), now).unwrap();
    assert_eq!(s.write(3, &[0u8; 10]).unwrap(), 10);
    s.handle_input(&upd(3, 11, 1 << 20), now).unwrap();
    let err = s.write(3, b"x").unwrap_err();
    assert_eq!(
        err,
        SmuxError::ConsumedMoreThanSent {
            sid: 3,
            consumed: 11,
            written: 10
        }
    );
    assert_eq!(err.kind(), "misbehaving");
    assert_eq!(s.writable(3), 0);
    assert!(!s.is_closed());
    assert_eq!(s.write(5, b"fine").unwrap(), 4);
    assert_eq!(s.stats().bad_upd, 1);
}

#[test]
fn hostile_upd_wakes_a_blocked_writer_with_the_error() {
    let now = Instant::now();
    let mut s = server_with_stream3(SmuxConfig::server(), now);
    s.write(3, &vec![0u8; 300_000]).unwrap();
    events(&mut s);
    s.handle_input(&upd(3, 300_000, 1 << 20), now).unwrap();
    assert_eq!(events(&mut s), vec![Event::Writable(3)]);
    assert!(matches!(
        s.write(3, b"x"),
        Err(SmuxError::ConsumedMoreThanSent { .. })
    ));
}

#[test]
fn hostile_huge_peer_window_is_bounded_by_pending_output() {
    let now = Instant::now();
    let mut s = server_with_stream3(SmuxConfig::server(), now);
    s.handle_input(&upd(3, 0, u32::MAX), now).unwrap();
    let n = s.write(3, &vec![0u8; 10 << 20]).unwrap();
    assert!(n <= 256 * 1024);
    assert!(s.pending_output() <= 256 * 1024);
    assert_eq!(s.write(3, b"more").unwrap(), 0);
    // Draining half of the output wakes the writer.
    s.poll_transmit(200 * 1024).unwrap();
    assert_eq!(events(&mut s), vec![Event::Writable(3)]);
    assert!(s.writable(3) > 0);
}

#[test]
fn hostile_tiny_frames_do_not_multiply_memory() {
    let now = Instant::now();
    let mut s = server_with_stream3(SmuxConfig::server(), now);
    let input: Vec<u8> = (0..262_144u32).flat_map(|i| psh(3, &[i as u8])).collect();
    s.handle_input(&input, now).unwrap();
    assert_eq!(s.readable(3), 262_144);
    let st = &s.streams[&3];
    assert!(
        st.recv.len() <= 262_144 / 16_384,
        "{} chunks",
        st.recv.len()
    );
    // Order is preserved across chunks, tail and large frames.
    let mut out = vec![0u8; 300_000];
    let mut got = 0;
    while let ReadOutcome::Data(n) = s.read(3, &mut out[got..got + 1000]).unwrap() {
        got += n;
    }
    assert_eq!(got, 262_144);
    assert!(out[..got].iter().enumerate().all(|(i, &b)| b == i as u8));
    s.handle_input(
        &[psh(3, b"ab"), psh(3, &[b'c'; 5000]), psh(3, b"de")].concat(),
        now,
    )
    .unwrap();
    let mut buf = [0u8; 6000];
    assert_eq!(s.read(3, &mut buf).unwrap(), ReadOutcome::Data(5004));
    assert_eq!(&buf[..3], b"abc");
    assert_eq!(&buf[5001..5004], b"cde");
}

#[test]
fn hostile_truncated_frame_memory_is_bounded() {
    let now = Instant::now();
    let mut s = server_with_stream3(SmuxConfig::server(), now);
    let frame = psh(3, &[1u8; 65535]);
    s.handle_input(&frame[..frame.len() - 1], now).unwrap();
    assert_eq!(s.decoder.buffered(), 8 + 65534);
    assert_eq!(s.readable(3), 0);
    assert_eq!(events(&mut s), vec![]);
    s.handle_input(&frame[frame.len() - 1..], now).unwrap();
    assert_eq!(s.decoder.buffered(), 0);
    assert_eq!(s.readable(3), 65535);
}

// ---------------------------------------------------------------------------------------
// Stream lifecycle

#[test]
fn fin_drains_then_eof_and_writes_fail() {
    let now = Instant::now();
    let mut s = server_with_stream3(SmuxConfig::server(), now);
    s.handle_input(&[psh(3, b"tail"), fin(3), fin(3)].concat(), now)
        .unwrap();
    assert_eq!(
        events(&mut s),
        vec![Event::Readable(3), Event::Finished(3)],
        "one Finished for two FINs"
    );
    let mut buf = [0u8; 3];
    assert_eq!(s.read(3, &mut buf).unwrap(), ReadOutcome::Data(3));
    assert_eq!(s.read(3, &mut buf).unwrap(), ReadOutcome::Data(1));
    assert_eq!(s.read(3, &mut buf).unwrap(), ReadOutcome::Eof);
    assert_eq!(s.read(3, &mut buf).unwrap(), ReadOutcome::Eof);
    let err = s.write(3, b"x").unwrap_err();
    assert_eq!(err, SmuxError::StreamFinished { sid: 3 });
    assert_eq!(s.stream_count(), 1, "kept until closed locally");
    drain(&mut s);
    s.close(3);
    assert_eq!(drain(&mut s), fin(3));
    assert_eq!(s.stream_count(), 0);
    s.close(3);
    assert_eq!(s.pending_output(), 0, "FIN only once");
}

#[test]
fn close_sends_fin_after_queued_data_and_drops_events() {
    let now = Instant::now();
    let mut s = server_with_stream3(SmuxConfig::server(), now);
    s.handle_input(&psh(3, b"unread"), now).unwrap();
    s.write(3, b"bye").unwrap();
    s.close(3);
    assert_eq!(
        s.poll_event(),
        None,
        "queued events of a closed stream are dropped"
    );
    assert_eq!(drain(&mut s), [psh(3, b"bye"), fin(3)].concat());
    // The same id can be opened again by the peer (Go keeps no memory of closed ids).
    s.handle_input(&SYN3, now).unwrap();
    assert_eq!(events(&mut s), vec![Event::Opened(3)]);
    assert_eq!(s.readable(3), 0);
}

#[test]
fn control_frames_overtake_queued_data_at_frame_boundaries() {
    let now = Instant::now();
    let mut s = server_with_stream3(SmuxConfig::server(), now);
    s.write(3, &[7u8; 40_000]).unwrap(); // two PSH frames: 32768 + 7232
    let first = s.poll_transmit(100).unwrap();
    assert_eq!(first.len(), 100);
    s.handle_input(&psh(3, b"hi"), now).unwrap();
    s.read(3, &mut [0u8; 2]).unwrap(); // queues UPD
    let rest = drain(&mut s);
    let wire = [first.to_vec(), rest].concat();
    let frames = decode_all(&wire);
    assert_eq!(frames.len(), 3);
    assert!(matches!(&frames[0], Frame::Psh { data, .. } if data.len() == 32768));
    assert_eq!(
        frames[1],
        Frame::Upd {
            sid: 3,
            consumed: 2,
            window: 1 << 20
        }
    );
    assert!(matches!(&frames[2], Frame::Psh { data, .. } if data.len() == 7232));
}

#[test]
fn poll_transmit_respects_max_and_coalesces() {
    let now = Instant::now();
    let mut c = Session::new(Role::Client, SmuxConfig::client(), now);
    c.open_stream().unwrap();
    c.open_stream().unwrap();
    assert_eq!(c.poll_transmit(0), None);
    assert_eq!(c.pending_output(), 16);
    let a = c.poll_transmit(5).unwrap();
    let b = c.poll_transmit(1000).unwrap();
    assert_eq!((a.len(), b.len()), (5, 11));
    assert_eq!([a, b].concat(), [syn(3), syn(5)].concat());
    assert_eq!(c.poll_transmit(1000), None);
}

#[test]
fn local_session_close() {
    let now = Instant::now();
    let mut s = server_with_stream3(SmuxConfig::server(), now);
    s.handle_input(&fin(3), now).unwrap();
    s.close_session();
    assert_eq!(s.close_reason(), Some(&SmuxError::Closed));
    assert_eq!(s.read(3, &mut [0u8; 4]).unwrap(), ReadOutcome::Eof);
    assert_eq!(s.read(5, &mut [0u8; 4]), Err(SmuxError::Closed));
}

#[test]
fn config_is_clamped() {
    let now = Instant::now();
    let config = SmuxConfig {
        keepalive_interval: Duration::ZERO,
        max_frame_size: 1 << 20,
        max_stream_buffer: u32::MAX,
        max_pending_output: 0,
        ..SmuxConfig::server()
    };
    let s = Session::new(Role::Server, config, now);
    assert_eq!(s.config().max_frame_size, 65535);
    assert_eq!(s.config().max_stream_buffer, i32::MAX as u32);
    assert_eq!(s.config().max_pending_output, 1);
    assert!(s.config().keepalive_interval > Duration::ZERO);
    assert_eq!(
        SmuxConfig::client().keepalive_timeout,
        Duration::from_secs(600)
    );
    assert_eq!(
        SmuxConfig::server().keepalive_timeout,
        Duration::from_secs(240)
    );
    assert_eq!(SmuxConfig::server().max_stream_buffer, 1_048_576);
    assert_eq!(INITIAL_PEER_WINDOW, 262_144);
}

// ---------------------------------------------------------------------------------------
// Fuzz entry point smoke

#[test]
fn fuzz_frames_smoke() {
    fuzz_frames(&[]);
    fuzz_frames(&[0]);
    let valid = [
        vec![0u8],
        SYN3.to_vec(),
        psh(3, &[1u8; 5000]),
        upd(3, 0, 1 << 20),
        NOP.to_vec(),
        fin(3),
        syn(5),
        psh(5, &[2u8; 60_000]),
        psh(5, &[3u8; 60_000]),
        psh(5, &[4u8; 60_000]),
    ]
    .concat();
    fuzz_frames(&valid);
    let mut b = valid.clone();
    b[0] = 1;
    fuzz_frames(&b);
}

proptest! {
    #[test]
    fn fuzz_frames_never_panics(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        fuzz_frames(&data);
    }

    #[test]
    fn fuzz_frames_valid_headers_never_panic(
        frames in proptest::collection::vec(
            (0u8..6, 0u32..12, proptest::collection::vec(any::<u8>(), 0..2000), any::<u32>(), any::<u32>()),
            0..60,
        ),
        ctl in any::<u8>(),
    ) {
        let mut data = vec![ctl];
        for (cmd, sid, payload, a, b) in frames {
            match cmd {
                0 => data.extend(syn(sid)),
                1 => data.extend(fin(sid)),
                2 => data.extend(psh(sid, &payload)),
                3 => data.extend(NOP),
                4 => data.extend(upd(sid, a % 5000, b)),
                _ => data.extend(hex!("02 05 0000 00000000")),
            }
        }
        fuzz_frames(&data);
    }
}
