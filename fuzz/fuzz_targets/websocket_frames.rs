//! Raw client frames into the server's WebSocket stream (see
//! `ptkit_websocket::stream::fuzz_server_frames`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ptkit_websocket::stream::fuzz_server_frames(data);
});
