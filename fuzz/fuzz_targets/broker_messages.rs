//! The Snowflake broker's parsers of untrusted input: client polls (1.0 and legacy), proxy
//! polls, answers, AMP paths and armor, bridge lists, relay patterns, geoip lines (see
//! `ptkit_snowflake::broker::fuzz_messages`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ptkit_snowflake::broker::fuzz_messages(data);
});
