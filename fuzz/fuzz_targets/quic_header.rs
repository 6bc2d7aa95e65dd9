//! The QUIC tunnel's parsers of untrusted bytes: the per-stream header, its reply and the
//! authentication messages (see `ptkit_quic::proto::fuzz_decoders`, which also checks that
//! what decodes re-encodes to the same bytes and that prefixes ask for more).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ptkit_quic::proto::fuzz_decoders(data);
});
