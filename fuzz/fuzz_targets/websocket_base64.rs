//! base64-subprotocol message reassembly: chunked decoding must equal whole-message decoding
//! and respect the size limit (assertions live in `ptkit_websocket::proto::fuzz_base64`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ptkit_websocket::proto::fuzz_base64(data);
});
