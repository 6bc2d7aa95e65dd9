//! STUN/TURN messages, ChannelData and the UDP stream framings (BE, shapeshifter LE, STUN),
//! then the TURN server state machine: untrusted bytes from local TURN clients and from the
//! transport. Entry point: `ptkit_udp::fuzz_stun_turn` (needs `ptkit-udp` in
//! fuzz/Cargo.toml and a `[[bin]] name = "stun_turn"`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ptkit_udp::fuzz_stun_turn(data);
});
