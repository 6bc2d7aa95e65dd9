//! The client address a websocket server reports (client_ip, Forwarded, X-Forwarded-For);
//! assertions live in `ptkit_websocket::addr::fuzz_client_addr`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ptkit_websocket::addr::fuzz_client_addr(data);
});
